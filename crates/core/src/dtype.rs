//! Quantized dtypes: quint8, qint8, qint32, and the Rust storage types behind them.

use std::fmt;

/// A quantized integer dtype, as `torch.quint8`, `torch.qint8`, `torch.qint32`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QDType {
    QUInt8,
    QInt8,
    QInt32,
}

impl QDType {
    /// Smallest value of the dtype.
    pub const fn min(self) -> i64 {
        match self {
            QDType::QUInt8 => 0,
            QDType::QInt8 => -128,
            QDType::QInt32 => i32::MIN as i64,
        }
    }
    /// Largest value of the dtype.
    pub const fn max(self) -> i64 {
        match self {
            QDType::QUInt8 => 255,
            QDType::QInt8 => 127,
            QDType::QInt32 => i32::MAX as i64,
        }
    }
    /// PyTorch's name, e.g. `quint8`.
    pub const fn name(self) -> &'static str {
        match self {
            QDType::QUInt8 => "quint8",
            QDType::QInt8 => "qint8",
            QDType::QInt32 => "qint32",
        }
    }
    /// Number of bits (`torch.iinfo(dtype).bits`).
    pub const fn bits(self) -> u32 {
        match self {
            QDType::QUInt8 | QDType::QInt8 => 8,
            QDType::QInt32 => 32,
        }
    }
    pub fn from_name(s: &str) -> Option<Self> {
        match s {
            "quint8" | "torch.quint8" => Some(QDType::QUInt8),
            "qint8" | "torch.qint8" => Some(QDType::QInt8),
            "qint32" | "torch.qint32" => Some(QDType::QInt32),
            _ => None,
        }
    }
}

impl fmt::Display for QDType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Storage type of a quantized dtype: `u8` for quint8, `i8` for qint8, `i32` for qint32.
pub trait QType:
    Copy + Send + Sync + PartialEq + Eq + fmt::Debug + bytemuck::Pod + 'static
{
    const DTYPE: QDType;
    /// The value clamped into the dtype's range.
    fn saturate(v: i64) -> Self;
    fn to_i64(self) -> i64;
    /// `v as Self`: for values the caller has already put in range.
    fn from_i32_in_range(v: i32) -> Self;
}

impl QType for u8 {
    #[inline(always)]
    fn from_i32_in_range(v: i32) -> Self {
        v as u8
    }
    const DTYPE: QDType = QDType::QUInt8;
    #[inline(always)]
    fn saturate(v: i64) -> Self {
        v.clamp(0, 255) as u8
    }
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
}
impl QType for i8 {
    #[inline(always)]
    fn from_i32_in_range(v: i32) -> Self {
        v as i8
    }
    const DTYPE: QDType = QDType::QInt8;
    #[inline(always)]
    fn saturate(v: i64) -> Self {
        v.clamp(-128, 127) as i8
    }
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
}
impl QType for i32 {
    #[inline(always)]
    fn from_i32_in_range(v: i32) -> Self {
        v
    }
    const DTYPE: QDType = QDType::QInt32;
    #[inline(always)]
    fn saturate(v: i64) -> Self {
        v.clamp(i32::MIN as i64, i32::MAX as i64) as i32
    }
    #[inline(always)]
    fn to_i64(self) -> i64 {
        self as i64
    }
}

/// f32 → f16 with round-to-nearest-even (subnormals kept), as `torch.half`.
pub fn f32_to_f16(x: f32) -> half::f16 {
    half::f16::from_f32(x)
}
/// f32 → bf16 with round-to-nearest-even, as `torch.bfloat16`.
pub fn f32_to_bf16(x: f32) -> half::bf16 {
    half::bf16::from_f32(x)
}
