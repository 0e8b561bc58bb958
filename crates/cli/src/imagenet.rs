//! ImageNet inputs for `rquant classify` / `rquant quantize`: JPEG/PNG
//! decoding, torchvision's evaluation preprocessing, and the class names.
//!
//! The preprocessing is torchvision's `ImageClassification(crop_size,
//! resize_size)` preset (what every `IMAGENET1K_*` weight's `transforms()`
//! returns) applied to a **uint8 tensor** image, as `torchvision.io.decode_image`
//! gives it:
//! 1. `F.resize(img, [resize], bilinear, antialias=True)`: the shorter side
//!    becomes `resize`, the longer `int(resize * long / short)`. On a uint8
//!    tensor torchvision casts to float32, calls `interpolate(…, "bilinear",
//!    align_corners=False, antialias=True)` (ATen's separable
//!    `_upsample_bilinear2d_aa`: a triangle filter whose support is widened by
//!    the down-scale factor, weights normalised per output pixel, width
//!    pass then height pass, float32 accumulation with fused multiply-adds,
//!    as the AVX2 build of that kernel compiles it) and rounds half to even
//!    back to uint8. [`resize_aa`] does exactly that arithmetic: on PNGs the
//!    batch equals torchvision 0.29's value for value (checked with
//!    tools/vision/preprocess_check.py at 224 and 299, down- and up-scaling).
//! 2. `F.center_crop`: top = `round((H - crop) / 2)`, Python's half-to-even.
//! 3. `convert_image_dtype(float)`: `x / 255`, then `normalize`:
//!    `(x - mean) / std` in float32 with ImageNet's mean and std.
//!
//! PIL differs slightly: given a PIL image, torchvision resizes with
//! Pillow's own antialiased bilinear, which uses fixed-point weights and
//! rounds differently, so pixels may differ by one level from the tensor
//! path implemented here. JPEG decoders differ too (the `image` crate's
//! decoder versus libjpeg-turbo: IDCT and chroma up-sampling moved a third
//! of the values by up to 3 levels on test photos); PNG decoding is exact. Compare with PyTorch exactly
//! through `--input-tensors` (already preprocessed batches).

use std::io::Read;
use std::path::Path;

/// torchvision's `_IMAGENET_CATEGORIES` (torchvision/models/_meta.py), one
/// per line in class order; copied by tools/vision/imagenet_classes.py.
const CLASSES: &str = include_str!("../data/imagenet_classes.txt");

/// The name of ImageNet class `i` ("class i" beyond the 1000 names, for
/// models trained with more outputs).
pub fn class_name(i: usize) -> String {
    CLASSES
        .lines()
        .nth(i)
        .map_or_else(|| format!("class {i}"), str::to_string)
}

/// ImageNet's per-channel mean and std (torchvision's `ImageClassification`).
const MEAN: [f32; 3] = [0.485, 0.456, 0.406];
const STD: [f32; 3] = [0.229, 0.224, 0.225];

/// The largest image file read (a photo is a few MB; this refuses a device
/// or a multi-GB file before reading it).
const MAX_FILE_BYTES: u64 = 256 << 20;
/// The largest decoded side accepted (bounds memory: 3 × 16384² bytes).
const MAX_SIDE: u32 = 16384;

/// A decoded image: RGB, 8 bits per channel, row-major H × W × 3.
pub struct Rgb {
    pub height: usize,
    pub width: usize,
    pub data: Vec<u8>,
}

/// Read a regular file of at most `cap` bytes (errors name the file).
pub fn read_file(path: &Path, cap: u64) -> Result<Vec<u8>, String> {
    let shown = path.display();
    let f = std::fs::File::open(path).map_err(|e| format!("{shown}: {e}"))?;
    let md = f.metadata().map_err(|e| format!("{shown}: {e}"))?;
    if !md.is_file() {
        return Err(format!("{shown}: not a regular file"));
    }
    if md.len() > cap {
        return Err(format!("{shown}: {} bytes, more than {cap}", md.len()));
    }
    let mut b = Vec::with_capacity(md.len() as usize);
    f.take(cap + 1)
        .read_to_end(&mut b)
        .map_err(|e| format!("{shown}: {e}"))?;
    Ok(b)
}

/// Decode a JPEG or PNG file to 8-bit RGB: grey is replicated, alpha dropped
/// (torchvision's `ImageReadMode.RGB`), 16-bit PNGs scaled to 8 bits.
pub fn decode(path: &Path) -> Result<Rgb, String> {
    let bytes = read_file(path, MAX_FILE_BYTES)?;
    decode_bytes(&bytes, &path.display().to_string())
}

/// [`decode`] of bytes in memory (`shown` names them in errors).
pub fn decode_bytes(bytes: &[u8], shown: &str) -> Result<Rgb, String> {
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| matches!(f, image::ImageFormat::Jpeg | image::ImageFormat::Png))
        .ok_or_else(|| format!("{shown}: not a JPEG or PNG image"))?;
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_SIDE);
    limits.max_image_height = Some(MAX_SIDE);
    reader.limits(limits);
    let img = reader
        .decode()
        .map_err(|e| format!("{shown}: cannot decode the {format:?} image: {e}"))?;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    if w == 0 || h == 0 {
        return Err(format!("{shown}: empty image ({w}x{h})"));
    }
    Ok(Rgb {
        height: h as usize,
        width: w as usize,
        data: rgb.into_raw(),
    })
}

/// Per-output-pixel taps of ATen's antialiased bilinear resampling along one
/// axis: (first input index, weights). The float32 / float64 mix follows
/// `_compute_weights_aa` in ATen's UpSampleKernel.cpp for float32 inputs.
fn aa_taps(in_size: usize, out_size: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = in_size as f32 / out_size as f32;
    // support = (interp_size / 2) * scale when down-sampling (interp_size 2).
    let support: f32 = if scale >= 1.0 { scale } else { 1.0 };
    let max_taps = (support.ceil() as usize) * 2 + 1;
    let invscale: f32 = if scale >= 1.0 {
        (1.0 / scale as f64) as f32
    } else {
        1.0
    };
    (0..out_size)
        .map(|i| {
            let center = (scale as f64 * (i as f64 + 0.5)) as f32;
            // C++ casts to int64 truncate toward zero, then clamp at 0.
            let xmin = (((center - support) as f64 + 0.5) as i64).max(0);
            let xmax = (((center + support) as f64 + 0.5) as i64).min(in_size as i64);
            let xsize = (xmax - xmin).clamp(0, max_taps as i64) as usize;
            let mut w: Vec<f32> = (0..xsize)
                .map(|j| {
                    let x = ((((j as i64 + xmin) as f32 - center) as f64 + 0.5) * invscale as f64)
                        as f32;
                    let x = x.abs();
                    if x < 1.0 {
                        1.0 - x
                    } else {
                        0.0
                    }
                })
                .collect();
            let total: f32 = w.iter().sum();
            if total != 0.0 {
                w.iter_mut().for_each(|v| *v /= total);
            }
            (xmin as usize, w)
        })
        .collect()
}

/// One resampling pass along an axis: for each of `lines` lines, output
/// sample `o` is the taps' weighted sum of `get(line, index)`, stored with
/// `put(line, o, v)`. ATen's `interpolate_aa_single_dim` starts from
/// `src[0] * w[0]` and accumulates `output += t * w` in float32, which the
/// compiler contracts to an FMA in the AVX2/AVX-512 kernels PyTorch runs on
/// x86; plain multiply-adds differ from it in the last place and moved a few
/// pixels by one level after rounding, the FMA matches.
fn pass(
    taps: &[(usize, Vec<f32>)],
    lines: usize,
    get: impl Fn(usize, usize) -> f32,
    mut put: impl FnMut(usize, usize, f32),
) {
    for l in 0..lines {
        for (o, (start, w)) in taps.iter().enumerate() {
            let mut acc = get(l, *start) * w[0];
            for (j, &wj) in w.iter().enumerate().skip(1) {
                acc = get(l, start + j).mul_add(wj, acc);
            }
            put(l, o, acc);
        }
    }
}

/// torchvision's `F.resize(uint8 tensor, [oh, ow], bilinear, antialias=True)`
/// of a planar 3 × h × w image: float32 resampling (width, then height), then
/// `round` (half to even) back to uint8.
pub fn resize_aa(src: &[f32], h: usize, w: usize, oh: usize, ow: usize) -> Vec<f32> {
    let tw = aa_taps(w, ow);
    let th = aa_taps(h, oh);
    let mut mid = vec![0f32; 3 * h * ow];
    // Width pass: lines are (channel, row).
    pass(
        &tw,
        3 * h,
        |l, x| src[l * w + x],
        |l, o, v| mid[l * ow + o] = v,
    );
    let mut out = vec![0f32; 3 * oh * ow];
    // Height pass: lines are (channel, column).
    pass(
        &th,
        3 * ow,
        |l, y| mid[(l / ow) * h * ow + y * ow + l % ow],
        |l, o, v| out[(l / ow) * oh * ow + o * ow + l % ow] = v,
    );
    out.iter_mut()
        .for_each(|v| *v = v.round_ties_even().clamp(0.0, 255.0));
    out
}

/// The sizes torchvision's preset uses for a model: (resize, crop).
pub fn sizes(input_size: usize) -> (usize, usize) {
    if input_size == 299 {
        (342, 299) // Inception-v3's IMAGENET1K_V1 transforms
    } else {
        (256, 224)
    }
}

/// Python's `round(x)` for x = n / 2: half to even.
fn round_half_even(n2: usize) -> usize {
    let (q, r) = (n2 / 2, n2 % 2);
    if r == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// torchvision's ImageClassification preset: resize the shorter side to
/// `resize`, center-crop `crop`², scale to [0, 1], normalise: a planar
/// 3 × crop × crop float32 image.
pub fn preprocess(img: &Rgb, resize: usize, crop: usize) -> Vec<f32> {
    let (h, w) = (img.height, img.width);
    let (short, long) = if w <= h { (w, h) } else { (h, w) };
    // int(resize * long / short): a float64 division, truncated.
    let new_long = (resize as f64 * long as f64 / short as f64) as usize;
    let (oh, ow) = if w <= h {
        (new_long, resize)
    } else {
        (resize, new_long)
    };
    let mut planar = vec![0f32; 3 * h * w];
    for (i, px) in img.data.chunks_exact(3).enumerate() {
        for c in 0..3 {
            planar[c * h * w + i] = f32::from(px[c]);
        }
    }
    // torchvision returns the image unchanged when the size already matches.
    let resized = if (oh, ow) == (h, w) {
        planar
    } else {
        resize_aa(&planar, h, w, oh, ow)
    };
    // Every resized side is ≥ resize ≥ crop here (resize ≥ crop in both
    // presets), so torchvision's zero padding never applies.
    let top = round_half_even(oh - crop);
    let left = round_half_even(ow - crop);
    let mut out = Vec::with_capacity(3 * crop * crop);
    for c in 0..3 {
        for y in 0..crop {
            let row = &resized[c * oh * ow + (top + y) * ow + left..][..crop];
            out.extend(row.iter().map(|&v| (v / 255.0 - MEAN[c]) / STD[c]));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_names_are_torchvisions() {
        assert_eq!(CLASSES.lines().count(), 1000);
        assert_eq!(class_name(0), "tench");
        assert_eq!(class_name(999), "toilet tissue");
        assert_eq!(class_name(1000), "class 1000");
    }

    #[test]
    fn taps_sum_to_one_and_identity_at_scale_one() {
        for (i, o) in [(500, 256), (256, 256), (100, 256), (1000, 342)] {
            for (s, w) in aa_taps(i, o) {
                let sum: f32 = w.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{i}->{o}: {sum}");
                assert!(s + w.len() <= i);
            }
        }
        let src: Vec<f32> = (0..3 * 4 * 5).map(|v| (v % 256) as f32).collect();
        assert_eq!(resize_aa(&src, 4, 5, 4, 5), src);
    }

    /// torchvision 0.29's `ImageClassification` on synthetic uint8 images
    /// (tools/vision/preprocess_check.py --pins): the FNV-1a 64 of the
    /// float32 output, which must be rquant's bit for bit (224 and 299
    /// presets, landscape, portrait, up-scaling). Plain multiply-adds instead
    /// of the FMA in `pass` fail the first one.
    #[test]
    fn torchvision_pins() {
        let pins: [(usize, usize, usize, usize, u64); 4] = [
            (375, 500, 256, 224, 0xffdab469ca6cae01),
            (600, 341, 256, 224, 0x73c99cc2574c8deb),
            (200, 180, 256, 224, 0x75cc744f9c250538),
            (257, 1000, 342, 299, 0x3bec40b834267105),
        ];
        for (h, w, resize, crop, want) in pins {
            let mut data = Vec::with_capacity(h * w * 3);
            for y in 0..h {
                for x in 0..w {
                    for c in 0..3 {
                        data.push(((7 * x + 13 * y + 101 * c + 9 * ((x * y) % 17)) % 256) as u8);
                    }
                }
            }
            let img = Rgb {
                height: h,
                width: w,
                data,
            };
            let out = preprocess(&img, resize, crop);
            assert_eq!(out.len(), 3 * crop * crop);
            let got = out.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, v| {
                v.to_le_bytes().iter().fold(h, |h, &b| {
                    (h ^ b as u64).wrapping_mul(0x0000_0100_0000_01b3)
                })
            });
            assert_eq!(got, want, "{h}x{w} -> {resize}/{crop}");
        }
    }

    #[test]
    fn python_round_of_halves() {
        assert_eq!(round_half_even(117), 58); // round(58.5) == 58
        assert_eq!(round_half_even(119), 60); // round(59.5) == 60
        assert_eq!(round_half_even(32), 16);
    }
}
