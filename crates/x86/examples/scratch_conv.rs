use rquant_core::{quantize_per_channel, Conv2dParams, MemoryFormat, QParams, QTensor, Tensor};
use std::time::Instant;
#[repr(C)]
struct Ts {
    s: i64,
    ns: i64,
}
extern "C" {
    fn clock_gettime(c: i32, t: *mut Ts) -> i32;
}
fn cpu_ns() -> u64 {
    let mut t = Ts { s: 0, ns: 0 };
    // SAFETY: a valid out-pointer; CLOCK_THREAD_CPUTIME_ID = 3.
    unsafe { clock_gettime(3, &mut t) };
    (t.s * 1_000_000_000 + t.ns) as u64
}
fn main() {
    rquant_core::registry::set_num_threads(1);
    let e = rquant_x86::all_paths().into_iter().next().unwrap();
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let (batch, c, o, hw, k, s, pad) = (
        args[0], args[1], args[2], args[3], args[4], args[5], args[6],
    );
    let x: Vec<u8> = (0..batch * c * hw * hw)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let x = QTensor::from_int_repr(vec![batch, c, hw, hw], x, QParams::per_tensor(0.02, 3))
        .unwrap()
        .into_format(MemoryFormat::ChannelsLast);
    let w = Tensor::new(
        [o, c, k, k],
        (0..o * c * k * k)
            .map(|i| ((i * 13 % 200) as f32 - 100.0) / 100.0)
            .collect(),
    )
    .unwrap();
    let wq = quantize_per_channel::<i8>(&w, &vec![1.0 / 127.0; o], &vec![0; o], 0).unwrap();
    let p = Conv2dParams {
        stride: [s, s],
        padding: [pad, pad],
        ..Default::default()
    };
    let packed = e.pack_conv2d(wq, None, p).unwrap();
    let oh = (hw + 2 * pad - k) / s + 1;
    let macs = (batch * o * oh * oh * c * k * k) as f64;
    let mut t = Vec::new();
    let mut w = Vec::new();
    for _ in 0..31 {
        let c0 = cpu_ns();
        let st = Instant::now();
        std::hint::black_box(e.conv2d(&x, &packed, 0.05, 0, true).unwrap());
        w.push(st.elapsed().as_secs_f64());
        t.push((cpu_ns() - c0) as f64 * 1e-9);
    }
    t.sort_by(f64::total_cmp);
    w.sort_by(f64::total_cmp);
    println!(
        "{:?} out {oh}: cpu {:.3} ms {:.0} GOP/s (wall {:.3} ms)",
        args,
        t[15] * 1e3,
        2.0 * macs / t[15] / 1e9,
        w[15] * 1e3
    );
}
