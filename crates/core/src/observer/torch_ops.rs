//! Scalar re-implementations of the few ATen CPU kernels the observers and
//! LSQ gradients depend on, in the exact operation order of torch 2.15's
//! x86 build: the cascade float sum (`SumKernel.cpp`, 8 float lanes),
//! `linspace`, `histc`, floor division and `cumsum`.

#![allow(clippy::needless_range_loop)] // index loops mirror the C++ kernels

/// Lanes of `Vectorized<float>` used by torch 2.15's CPU sum kernel on the
/// reference machine: 8 (measured: `torch.sum` matches the 8-lane cascade for
/// every length 1..300 even though the reported capability is AVX512).
/// Summation order of `torch.sum` depends on it.
pub const VEC_LANES: usize = 8;

fn ceil_log2(x: usize) -> usize {
    if x <= 2 {
        return if x == 2 { 1 } else { 0 };
    }
    (usize::BITS - (x - 1).leading_zeros()) as usize
}

/// `multi_row_sum` with `N` independent accumulator rows: `load(i, k)` is
/// element k of step i. Returns the N partial sums.
fn multi_row_sum<const N: usize>(size: usize, load: impl Fn(usize, usize) -> f32) -> [f32; N] {
    const LEVELS: usize = 4;
    let level_power = 4usize.max(ceil_log2(size) / LEVELS);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[0.0f32; N]; LEVELS];
    let mut i = 0usize;
    while i + level_step <= size {
        for _ in 0..level_step {
            for (k, a) in acc[0].iter_mut().enumerate() {
                *a += load(i, k);
            }
            i += 1;
        }
        for j in 1..LEVELS {
            for k in 0..N {
                acc[j][k] += acc[j - 1][k];
                acc[j - 1][k] = 0.0;
            }
            let mask = level_mask << (j * level_power);
            if i & mask != 0 {
                break;
            }
        }
    }
    while i < size {
        for (k, a) in acc[0].iter_mut().enumerate() {
            *a += load(i, k);
        }
        i += 1;
    }
    for j in 1..LEVELS {
        for k in 0..N {
            acc[0][k] += acc[j][k];
        }
    }
    acc[0]
}

/// `row_sum`: the row read as (-1, 4) for four partial sums, then combined.
/// `load(i)` is element i of the row; elements are `L`-lane vectors.
fn row_sum<const L: usize>(size: usize, load: impl Fn(usize) -> [f32; L]) -> [f32; L] {
    const ILP: usize = 4;
    let size_ilp = size / ILP;
    // Each lane is independent: run the multi-row sum per lane.
    let mut out = [0.0f32; L];
    for (lane, o) in out.iter_mut().enumerate() {
        let mut p = multi_row_sum::<ILP>(size_ilp, |i, k| load(i * ILP + k)[lane]);
        for i in size_ilp * ILP..size {
            p[0] += load(i)[lane];
        }
        for k in 1..ILP {
            p[0] += p[k];
        }
        *o = p[0];
    }
    out
}

/// Scalar `row_sum` over `n` strided values.
pub(crate) fn row_sum_scalar(n: usize, load: impl Fn(usize) -> f32) -> f32 {
    row_sum::<1>(n, |i| [load(i)])[0]
}

/// torch's float sum of a contiguous run of values (the `vectorized_inner_sum`
/// path when `len >= 16`, `row_sum` otherwise), not yet added to the output.
pub(crate) fn inner_sum(x: &[f32]) -> f32 {
    let n = x.len();
    if n < VEC_LANES {
        return row_sum_scalar(n, |i| x[i]);
    }
    let vec_size = n / VEC_LANES;
    let vacc = row_sum::<VEC_LANES>(vec_size, |i| {
        let mut v = [0.0f32; VEC_LANES];
        v.copy_from_slice(&x[i * VEC_LANES..(i + 1) * VEC_LANES]);
        v
    });
    let mut fin = 0.0f32;
    for &v in &x[vec_size * VEC_LANES..] {
        fin += v;
    }
    for p in vacc {
        fin += p;
    }
    fin
}

/// `torch.sum(x)` of a contiguous float32 tensor (single-threaded, i.e.
/// fewer than 32768 elements or one thread): `0 + inner_sum`.
pub fn torch_sum(x: &[f32]) -> f32 {
    0.0f32 + inner_sum(x)
}

/// `x.sum(dims except axis)` for a contiguous float32 tensor of `shape`:
/// the order torch's TensorIterator gives (reduced dims first, inner run
/// summed contiguously, outer runs accumulated into the output).
pub fn torch_sum_per_channel(x: &[f32], shape: &[usize], axis: usize) -> Vec<f32> {
    let c = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    if c == 1 {
        return vec![torch_sum(x)];
    }
    let mut out = vec![0.0f32; c];
    if x.is_empty() {
        return out;
    }
    if inner > 1 {
        for (ch, o) in out.iter_mut().enumerate() {
            for j in 0..outer {
                let base = (j * c + ch) * inner;
                *o += inner_sum(&x[base..base + inner]);
            }
        }
        return out;
    }
    // Channel axis is innermost: an "outer" reduction over `outer` rows.
    let col = |ch: usize| move |i: usize| x[i * c + ch];
    let mut j = 0usize;
    if c >= VEC_LANES {
        while j + 4 * VEC_LANES <= c {
            for ch in j..j + 4 * VEC_LANES {
                out[ch] += multi_row_sum::<1>(outer, |i, _| col(ch)(i))[0];
            }
            j += 4 * VEC_LANES;
        }
        while j + VEC_LANES <= c {
            for ch in j..j + VEC_LANES {
                out[ch] += row_sum_scalar(outer, col(ch));
            }
            j += VEC_LANES;
        }
    } else {
        while j + 3 < c {
            for ch in j..j + 4 {
                out[ch] += multi_row_sum::<1>(outer, |i, _| col(ch)(i))[0];
            }
            j += 4;
        }
    }
    for (ch, o) in out.iter_mut().enumerate().skip(j) {
        *o += row_sum_scalar(outer, col(ch));
    }
    out
}

/// `torch.cumsum` of a float32 vector: accumulated in f64, each output rounded to f32.
pub fn torch_cumsum(x: &[f32]) -> Vec<f32> {
    let mut acc = 0.0f64;
    x.iter()
        .map(|&v| {
            acc += v as f64;
            acc as f32
        })
        .collect()
}

/// `torch.linspace(start, end, steps)` in float32.
pub fn torch_linspace(start: f64, end: f64, steps: usize) -> Vec<f32> {
    let start = start as f32;
    let end = end as f32;
    if steps == 1 {
        return vec![start];
    }
    let step = (end - start) / (steps - 1) as f32;
    let halfway = steps / 2;
    (0..steps)
        .map(|idx| {
            if idx < halfway {
                start + step * idx as f32
            } else {
                end - step * (steps - idx - 1) as f32
            }
        })
        .collect()
}

/// `c10::div_floor_floating(a, b)`, the float floor division of `torch.div(..., rounding_mode="floor")`.
pub fn div_floor_f32(a: f32, b: f32) -> f32 {
    if b == 0.0 {
        return a / b;
    }
    let m = a % b;
    let mut div = (a - m) / b;
    if m != 0.0 && (b < 0.0) != (m < 0.0) {
        div -= 1.0;
    }
    if div != 0.0 {
        let mut f = div.floor();
        if div - f > 0.5 {
            f += 1.0;
        }
        f
    } else {
        0.0f32.copysign(a / b)
    }
}

/// `torch.histc(x, bins, min, max)` on the CPU: bin edges chosen in f64
/// (widened by ±1 when min == max), then `pos = (int)((x - lo) * bins / (hi - lo))`
/// in f32 with `lo = f32(min)`, `hi = f32(max)`. Values outside or NaN are skipped.
pub fn torch_histc(x: &[f32], bins: usize, min: f64, max: f64) -> Vec<f32> {
    let (mut lo, mut hi) = (min, max);
    if lo == hi && !x.is_empty() {
        let (a, b) = aminmax(x);
        lo = a as f64;
        hi = b as f64;
    }
    if lo == hi {
        lo -= 1.0;
        hi += 1.0;
    }
    let edges_lo = lo as f32;
    let edges_hi = hi as f32;
    let mut hist = vec![0.0f32; bins];
    for &e in x {
        if !(e >= edges_lo && e <= edges_hi) {
            continue;
        }
        let mut pos = ((e - edges_lo) * bins as f32 / (edges_hi - edges_lo)) as i64;
        if pos == bins as i64 {
            pos -= 1;
        }
        hist[pos as usize] += 1.0;
    }
    hist
}

/// `torch.aminmax` of a non-empty slice (NaN propagates).
pub fn aminmax(x: &[f32]) -> (f32, f32) {
    let mut lo = x[0];
    let mut hi = x[0];
    for &v in &x[1..] {
        if v.is_nan() || lo.is_nan() {
            lo = f32::NAN;
        } else if v < lo {
            lo = v;
        }
        if v.is_nan() || hi.is_nan() {
            hi = f32::NAN;
        } else if v > hi {
            hi = v;
        }
    }
    (lo, hi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_log2_values() {
        assert_eq!(ceil_log2(1), 0);
        assert_eq!(ceil_log2(2), 1);
        assert_eq!(ceil_log2(3), 2);
        assert_eq!(ceil_log2(16), 4);
        assert_eq!(ceil_log2(17), 5);
    }

    #[test]
    fn div_floor_matches_python() {
        assert_eq!(div_floor_f32(7.0, 2.0), 3.0);
        assert_eq!(div_floor_f32(-7.0, 2.0), -4.0);
        assert_eq!(div_floor_f32(-0.5, 2.0), -1.0);
        assert!(div_floor_f32(0.0, -2.0).is_sign_negative());
    }

    #[test]
    fn linspace_ends_exact() {
        let v = torch_linspace(-1.3, 2.7, 11);
        assert_eq!(v[0], -1.3f32);
        assert_eq!(v[10], 2.7f32);
    }
}
