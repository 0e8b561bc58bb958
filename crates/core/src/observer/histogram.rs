//! `HistogramObserver`: a running histogram over [min, max], merged on range
//! growth by upsampling (rate 16) and re-binning, and an L2-error search for
//! the clipping range (`_non_linear_param_search`).

use super::qparams::{fmax, fmin, ObserverQParams, QParamRule};
use super::torch_ops::{
    aminmax, div_floor_f32, torch_cumsum, torch_histc, torch_linspace, torch_sum,
};
use super::{check_no_nan, Observer, ObserverConfig, ObserverDType, ObserverKind, ObserverState};
use crate::error::{QuantError, Result};
use crate::tensor::{QScheme, Tensor};

/// torch 2.15's internal upsample rate for merging histograms.
const UPSAMPLE_RATE: usize = 16;

#[derive(Debug, Clone, PartialEq)]
pub struct HistogramObserver {
    rule: QParamRule,
    bins: usize,
    histogram: Vec<f32>,
    min: [f32; 1],
    max: [f32; 1],
    /// `2 ** iinfo(dtype).bits`: 256 for 8-bit dtypes even with reduce_range.
    dst_nbins: u64,
    reduce_range: bool,
}

impl HistogramObserver {
    pub fn new(cfg: ObserverConfig) -> Result<Self> {
        const OP: &str = "HistogramObserver";
        if cfg.qscheme.is_per_channel() {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: format!(
                    "qscheme {} is not supported; use per_tensor_affine or per_tensor_symmetric",
                    cfg.qscheme.name()
                ),
            });
        }
        if cfg.is_dynamic {
            return Err(QuantError::Unsupported {
                op: OP,
                detail: "HistogramObserver does not support dynamic quantization".into(),
            });
        }
        if cfg.bins == 0 {
            return Err(QuantError::invalid(OP, "bins must be positive"));
        }
        let rule = cfg.rule(OP)?;
        Ok(HistogramObserver {
            rule,
            bins: cfg.bins,
            histogram: vec![0.0; cfg.bins],
            min: [f32::INFINITY],
            max: [f32::NEG_INFINITY],
            dst_nbins: 1u64 << cfg.dtype.bits(),
            reduce_range: cfg.reduce_range,
        })
    }

    /// The current histogram (`bins` counts over `[min_val, max_val]`).
    pub fn histogram(&self) -> &[f32] {
        &self.histogram
    }
    pub fn bins(&self) -> usize {
        self.bins
    }
    pub fn rule(&self) -> &QParamRule {
        &self.rule
    }

    fn upscale_histogram(
        &self,
        hist: &[f32],
        orig_min: f32,
        orig_max: f32,
        update_min: f32,
        update_max: f32,
    ) -> Vec<f32> {
        let bins = self.bins;
        let n = bins * UPSAMPLE_RATE;
        let rate = UPSAMPLE_RATE as f32;
        let bin_size = (orig_max - orig_min) / n as f32;
        let half = 0.5f32 * bin_size;
        let mids = torch_linspace(orig_min as f64, orig_max as f64, n + 1);
        let bounds = torch_linspace(update_min as f64, update_max as f64, bins + 1);
        let mut out = vec![0.0f32; bins];
        for (i, &m) in mids[..n].iter().enumerate() {
            let mid = m + half;
            // bucketize(right=True) - 1: count of boundaries <= mid, minus one.
            let idx = bounds.partition_point(|&b| b <= mid) as i64 - 1;
            let idx = idx.clamp(0, bins as i64 - 1) as usize;
            out[idx] += hist[i / UPSAMPLE_RATE] / rate;
        }
        out
    }

    fn combine_histograms(
        &self,
        orig_hist: &[f32],
        orig_min: f32,
        orig_max: f32,
        update_hist: &[f32],
        update_min: f32,
        update_max: f32,
    ) -> Vec<f32> {
        if update_min == orig_min && update_max == orig_max {
            return orig_hist
                .iter()
                .zip(update_hist)
                .map(|(a, b)| a + b)
                .collect();
        }
        if orig_min == orig_max {
            let bin_value = torch_sum(orig_hist);
            let t = torch_histc(&[orig_min], self.bins, update_min as f64, update_max as f64);
            return t
                .iter()
                .zip(update_hist)
                .map(|(a, b)| a * bin_value + b)
                .collect();
        }
        let t = self.upscale_histogram(orig_hist, orig_min, orig_max, update_min, update_max);
        update_hist.iter().zip(&t).map(|(a, b)| a + b).collect()
    }

    fn get_norm(delta_begin: f32, delta_end: f32, density: f32) -> f32 {
        let norm =
            (delta_end * delta_end * delta_end - delta_begin * delta_begin * delta_begin) / 3.0f32;
        density * norm
    }

    /// `_compute_quantization_error(next_start_bin, next_end_bin)` (returns the
    /// Python float).
    fn compute_quantization_error(&self, next_start_bin: usize, next_end_bin: usize) -> f64 {
        let bins = self.bins;
        let bin_width = (self.max[0] as f64 - self.min[0] as f64) / bins as f64;
        let dst_bin_width =
            bin_width * (next_end_bin - next_start_bin + 1) as f64 / self.dst_nbins as f64;
        if dst_bin_width == 0.0 {
            return 0.0;
        }
        let bw = bin_width as f32;
        let dbw = dst_bin_width as f32;
        let half_dbw = (dst_bin_width / 2.0) as f32;
        let neg_half_dbw = (-dst_bin_width / 2.0) as f32;
        let top = (self.dst_nbins - 1) as f32;
        let mid_norm_unit = (half_dbw, neg_half_dbw);
        let mut norm = vec![0.0f32; bins];
        for (i, nv) in norm.iter_mut().enumerate() {
            let src_begin = (i as i64 - next_start_bin as i64) as f32 * bw;
            let src_end = src_begin + bw;
            let dst_of_begin = div_floor_f32(src_begin, dbw).clamp(0.0, top);
            let dst_of_begin_center = (dst_of_begin + 0.5f32) * dbw;
            let dst_of_end = div_floor_f32(src_end, dbw).clamp(0.0, top);
            let density = self.histogram[i] / bw;
            let delta_begin = src_begin - dst_of_begin_center;
            *nv += Self::get_norm(delta_begin, half_dbw, density);
            *nv += (dst_of_end - dst_of_begin - 1.0f32)
                * Self::get_norm(mid_norm_unit.1, mid_norm_unit.0, density);
            let dst_of_end_center = dst_of_end * dbw + half_dbw;
            let delta_end = src_end - dst_of_end_center;
            *nv += Self::get_norm(neg_half_dbw, delta_end, density);
        }
        torch_sum(&norm) as f64
    }

    /// `_non_linear_param_search`: the clipped (min, max).
    pub fn non_linear_param_search(&self) -> (f32, f32) {
        let bins = self.bins;
        let bin_width = (self.max[0] - self.min[0]) / bins as f32;
        let total = torch_sum(&self.histogram) as f64;
        let csum = torch_cumsum(&self.histogram);
        let stepsize = 1e-5f64;
        let mut alpha = 0.0f64;
        let mut beta = 1.0f64;
        let mut start_bin = 0usize;
        let mut end_bin = bins - 1;
        let mut norm_min = f64::INFINITY;
        while alpha < beta {
            let next_alpha = alpha + stepsize;
            let next_beta = beta - stepsize;
            let mut l = start_bin;
            let mut r = end_bin;
            // tensor-vs-Python-float comparisons run in float32
            let lo_thr = (next_alpha * total) as f32;
            let hi_thr = (next_beta * total) as f32;
            while l < end_bin && csum[l] < lo_thr {
                l += 1;
            }
            while r > start_bin && csum[r] > hi_thr {
                r -= 1;
            }
            let mut next_start_bin = start_bin;
            let mut next_end_bin = end_bin;
            if (l - start_bin) as i64 > (end_bin - r) as i64 {
                next_start_bin = l;
                alpha = next_alpha;
            } else {
                next_end_bin = r;
                beta = next_beta;
            }
            if next_start_bin == start_bin && next_end_bin == end_bin {
                continue;
            }
            let norm = self.compute_quantization_error(next_start_bin, next_end_bin);
            if norm > norm_min {
                break;
            }
            norm_min = norm;
            start_bin = next_start_bin;
            end_bin = next_end_bin;
        }
        let new_min = self.min[0] + bin_width * start_bin as f32;
        let new_max = self.min[0] + bin_width * (end_bin + 1) as f32;
        (new_min, new_max)
    }
}

impl Observer for HistogramObserver {
    fn kind(&self) -> ObserverKind {
        ObserverKind::Histogram
    }

    fn observe(&mut self, x: &Tensor) -> Result<()> {
        const OP: &str = "HistogramObserver::observe";
        if x.numel() == 0 {
            return Ok(());
        }
        check_no_nan(OP, x)?;
        // ±inf values are dropped (torch warns and filters them).
        let filtered: Vec<f32>;
        let mut data = x.data();
        let (mut x_min, mut x_max) = aminmax(data);
        if x_min == f32::NEG_INFINITY || x_max == f32::INFINITY {
            filtered = data.iter().copied().filter(|v| v.is_finite()).collect();
            if filtered.is_empty() {
                return Ok(());
            }
            data = &filtered;
            (x_min, x_max) = aminmax(data);
        }
        let (cur_min, cur_max) = (self.min[0], self.max[0]);
        if cur_min == f32::INFINITY || cur_max == f32::NEG_INFINITY {
            self.min[0] = x_min;
            self.max[0] = x_max;
            self.histogram = torch_histc(data, self.bins, x_min as f64, x_max as f64);
            return Ok(());
        }
        let new_min = fmin(cur_min, x_min);
        let new_max = fmax(cur_max, x_max);
        let update = torch_histc(data, self.bins, new_min as f64, new_max as f64);
        if new_min == cur_min && new_max == cur_max {
            for (h, u) in self.histogram.iter_mut().zip(&update) {
                *h += u;
            }
        } else {
            self.histogram = self.combine_histograms(
                &self.histogram,
                cur_min,
                cur_max,
                &update,
                new_min,
                new_max,
            );
            self.min[0] = new_min;
            self.max[0] = new_max;
        }
        Ok(())
    }

    fn calculate_qparams(&self) -> Result<ObserverQParams> {
        if self.min[0] == f32::INFINITY && self.max[0] == f32::NEG_INFINITY {
            return Ok(ObserverQParams::uninitialized());
        }
        let (lo, hi) = self.non_linear_param_search();
        self.rule.calculate(&[lo], &[hi])
    }
    fn min_val(&self) -> &[f32] {
        &self.min
    }
    fn max_val(&self) -> &[f32] {
        &self.max
    }
    fn dtype(&self) -> ObserverDType {
        ObserverDType::Quantized(self.rule.dtype)
    }
    fn qscheme(&self) -> QScheme {
        self.rule.qscheme
    }
    fn quant_range(&self) -> Option<(i64, i64)> {
        Some((self.rule.quant_min, self.rule.quant_max))
    }
    fn reduce_range(&self) -> bool {
        self.reduce_range
    }
    fn reset(&mut self) {
        self.min = [f32::INFINITY];
        self.max = [f32::NEG_INFINITY];
        self.histogram = vec![0.0; self.bins];
    }
    fn state(&self) -> ObserverState {
        ObserverState {
            min: self.min.to_vec(),
            max: self.max.to_vec(),
            histogram: self.histogram.clone(),
        }
    }
    fn set_state(&mut self, st: &ObserverState) -> Result<()> {
        if st.min.len() != 1 || st.max.len() != 1 || st.histogram.len() != self.bins {
            return Err(QuantError::invalid(
                "Observer::set_state",
                format!(
                    "HistogramObserver keeps one min, one max and {} bins, the saved state has {}, {} and {}",
                    self.bins,
                    st.min.len(),
                    st.max.len(),
                    st.histogram.len()
                ),
            ));
        }
        self.min = [st.min[0]];
        self.max = [st.max[0]];
        self.histogram = st.histogram.clone();
        Ok(())
    }
    fn box_clone(&self) -> Box<dyn Observer> {
        Box::new(self.clone())
    }
}
