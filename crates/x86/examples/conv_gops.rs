//! Quick timing of the x86 engine's conv2d on ResNet / MobileNet layers (GOP/s medians, 1 thread).

use std::time::Instant;

use rquant_core::{quantize_per_channel, quantize_per_tensor, Conv2dParams, Tensor};

fn data(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn median(mut f: impl FnMut()) -> f64 {
    f();
    let mut t = Vec::new();
    let start = Instant::now();
    while t.len() < 5 || (start.elapsed().as_secs_f64() < 0.5 && t.len() < 1000) {
        let s = Instant::now();
        f();
        t.push(s.elapsed().as_secs_f64());
    }
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

fn main() {
    if std::env::var_os("RQUANT_NUM_THREADS").is_none() {
        rquant_core::registry::set_num_threads(1);
    }
    let mut shapes = vec![
        (64, 64, 56, 3, 1),
        (128, 128, 28, 3, 1),
        (256, 256, 14, 3, 1),
        (256, 1024, 14, 1, 1),
        (144, 144, 56, 3, 144),
    ];
    // BATCH=N images (default 1); SHAPES="C,O,HW,K,G;..." replaces the
    // list (experiments).
    let batch: usize = std::env::var("BATCH").map_or(1, |b| b.parse().expect("BATCH: a count"));
    if let Ok(list) = std::env::var("SHAPES") {
        shapes = list
            .split(';')
            .map(|t| {
                let v: Vec<usize> = t
                    .split(',')
                    .map(|x| x.trim().parse().expect("SHAPES: C,O,HW,K,G"))
                    .collect();
                assert_eq!(v.len(), 5, "SHAPES: C,O,HW,K,G");
                (v[0], v[1], v[2], v[3], v[4])
            })
            .collect();
    }
    let filter = std::env::args().nth(1).unwrap_or_default();
    for e in rquant_x86::all_paths() {
        if (e.isa() == "scalar") != (filter == "scalar")
            || ((filter == "best" || filter == "first")
                && e.isa() != rquant_x86::Isa::best().name())
        {
            continue;
        }
        for &(c, o, hw, k, groups) in &shapes {
            if filter == "dw" && groups == 1 {
                continue;
            }
            if filter == "first" && c != 64 {
                continue;
            }
            let x = Tensor::new(
                [batch, c, hw, hw],
                data(batch * c * hw * hw, 4)
                    .iter()
                    .map(|v| v.abs())
                    .collect(),
            )
            .unwrap();
            let xq = quantize_per_tensor::<u8>(&x, 1.0 / 255.0, 0).unwrap();
            let cg = c / groups;
            let w = Tensor::new([o, cg, k, k], data(o * cg * k * k, 5)).unwrap();
            let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; o], &vec![0; o], 0).unwrap();
            let p = Conv2dParams {
                padding: [k / 2, k / 2],
                groups,
                ..Default::default()
            };
            let packed = e.pack_conv2d(wq, None, p).unwrap();
            let t = median(|| {
                std::hint::black_box(e.conv2d(&xq, &packed, 0.05, 0, true).unwrap());
            });
            // The same conv on channels-last input (what the models run).
            let xl = xq
                .clone()
                .into_format(rquant_core::MemoryFormat::ChannelsLast);
            let tl = median(|| {
                std::hint::black_box(e.conv2d(&xl, &packed, 0.05, 0, true).unwrap());
            });
            let ops = 2.0 * (batch * o * hw * hw * cg * k * k) as f64;
            println!(
                "{:<12} {c}->{o}@{hw} k{k} g{groups}: NCHW {:7.1} GOP/s  NHWC {:7.1} GOP/s",
                e.isa(),
                ops / t / 1e9,
                ops / tl / 1e9
            );
        }
    }
}
