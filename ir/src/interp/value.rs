//! Runtime values of the interpreter and the per-element conversions every op builds on.
//!
//! A value is a flat row-major [`Data`] vector; its shape is the static type the kernel gives it.
//! Floats are held as `f64` already rounded to their dtype (so converting back is exact), integers
//! as `i64` already wrapped to their width, `bool`s as `bool`. The element kind travels with the
//! data ([`Float`], [`Int`]), so rounding and wrapping never need to look the dtype up again.

use crate::op::Literal;
use crate::DType;
use half::{bf16, f16};

/// A float dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Float {
    F32,
    F16,
    BF16,
}

/// An integer dtype.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Int {
    I32,
    U32,
    I8,
    U8,
}

/// A dtype split by how its elements are held.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Float(Float),
    Int(Int),
    Bool,
}

/// The elements of one value, row-major.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Data {
    F(Float, Vec<f64>),
    I(Int, Vec<i64>),
    B(Vec<bool>),
}

impl Kind {
    pub(crate) fn of(dtype: DType) -> Kind {
        match dtype {
            DType::F32 => Kind::Float(Float::F32),
            DType::F16 => Kind::Float(Float::F16),
            DType::BF16 => Kind::Float(Float::BF16),
            DType::I32 => Kind::Int(Int::I32),
            DType::U32 => Kind::Int(Int::U32),
            DType::I8 => Kind::Int(Int::I8),
            DType::U8 => Kind::Int(Int::U8),
            DType::Bool => Kind::Bool,
        }
    }

    /// The elements `x` stands for, converted to this kind as `cast` converts (an exact real
    /// number rounded, truncated and saturated, or compared with zero).
    pub(crate) fn from_f64s(self, xs: &[f64]) -> Data {
        match self {
            Kind::Float(f) => Data::F(f, xs.iter().map(|&x| f.round(x)).collect()),
            Kind::Int(t) => Data::I(t, xs.iter().map(|&x| t.saturate(x)).collect()),
            Kind::Bool => Data::B(xs.iter().map(|&x| x != 0.0).collect()),
        }
    }

    /// `n` copies of a literal, converted to this kind with the rules of `cast`.
    pub(crate) fn splat_literal(self, lit: Literal, n: usize) -> Data {
        match self {
            Kind::Float(f) => {
                let x = match lit {
                    Literal::Float(x) => x,
                    Literal::Int(i) => i as f64,
                    Literal::Bool(b) => f64::from(u8::from(b)),
                };
                Data::F(f, vec![f.round(x); n])
            }
            Kind::Int(t) => {
                let x = match lit {
                    Literal::Float(x) => t.saturate(x),
                    Literal::Int(i) => t.wrap(i),
                    Literal::Bool(b) => i64::from(b),
                };
                Data::I(t, vec![x; n])
            }
            Kind::Bool => {
                let x = match lit {
                    Literal::Float(x) => x != 0.0,
                    Literal::Int(i) => i != 0,
                    Literal::Bool(b) => b,
                };
                Data::B(vec![x; n])
            }
        }
    }

    /// `n` zeros (`false` for `bool`).
    pub(crate) fn zeros(self, n: usize) -> Data {
        match self {
            Kind::Float(f) => Data::F(f, vec![0.0; n]),
            Kind::Int(t) => Data::I(t, vec![0; n]),
            Kind::Bool => Data::B(vec![false; n]),
        }
    }
}

impl Float {
    fn mantissa_bits(self) -> u32 {
        match self {
            Float::F32 => 23,
            Float::F16 => 10,
            Float::BF16 => 7,
        }
    }

    fn exponent_bits(self) -> u32 {
        match self {
            Float::F32 | Float::BF16 => 8,
            Float::F16 => 5,
        }
    }

    pub(crate) fn width(self) -> u32 {
        1 + self.exponent_bits() + self.mantissa_bits()
    }

    /// The value of a bit pattern, exactly. A NaN keeps its sign and payload, placed in the top
    /// mantissa bits of the `f64` so that [`Float::to_bits`] gives the same pattern back.
    pub(crate) fn from_bits(self, bits: u32) -> f64 {
        let (p, e) = (self.mantissa_bits(), self.exponent_bits());
        let exp = (bits >> p) & ((1 << e) - 1);
        let man = bits & ((1 << p) - 1);
        if exp == (1 << e) - 1 && man != 0 {
            let sign = u64::from((bits >> (p + e)) & 1);
            return f64::from_bits(sign << 63 | 0x7ff << 52 | u64::from(man) << (52 - p));
        }
        match self {
            Float::F32 => f64::from(f32::from_bits(bits)),
            Float::F16 => f16::from_bits(bits as u16).to_f64(),
            Float::BF16 => bf16::from_bits(bits as u16).to_f64(),
        }
    }

    /// The bit pattern of a value held for this dtype (exact; the inverse of `from_bits`).
    pub(crate) fn to_bits(self, x: f64) -> u32 {
        let (p, e) = (self.mantissa_bits(), self.exponent_bits());
        if x.is_nan() {
            let b = x.to_bits();
            let sign = (b >> 63) as u32;
            let mut man = ((b & ((1 << 52) - 1)) >> (52 - p)) as u32;
            if man == 0 {
                // The payload lived only in bits this dtype does not have: keep it a NaN.
                man = 1 << (p - 1);
            }
            return sign << (p + e) | ((1 << e) - 1) << p | man;
        }
        // `x` is representable, so these conversions are exact (half's own f64 conversion drops
        // low bits before rounding, which is harmless only for representable values).
        match self {
            Float::F32 => (x as f32).to_bits(),
            Float::F16 => u32::from(f16::from_f64(x).to_bits()),
            Float::BF16 => u32::from(bf16::from_f64(x).to_bits()),
        }
    }

    /// Rounds an exact `f64` to this dtype, to nearest with ties to even; overflow gives ±inf.
    /// A NaN becomes a quiet NaN of this dtype that keeps the sign and the top payload bits.
    pub(crate) fn round(self, x: f64) -> f64 {
        if x.is_nan() {
            let quiet = 1 << (self.mantissa_bits() - 1);
            return self.from_bits(self.to_bits(x) | quiet);
        }
        match self {
            // Rust's `as` rounds to nearest even, which is what IEEE conversion does.
            Float::F32 => f64::from(x as f32),
            Float::F16 => round_to_format(x, 10, -14, 15),
            Float::BF16 => round_to_format(x, 7, -126, 127),
        }
    }
}

/// Rounds `x` to a binary format with `p` explicit mantissa bits and normal exponents
/// `emin..=emax` (subnormals included), to nearest with ties to even, in one step.
///
/// `half::f16::from_f64` is not used for this: it truncates the low 32 bits of the `f64` before
/// rounding (and on x86 with F16C rounds through `f32` first), so values just above a tie round
/// down. Here every step is exact: dividing by a power of two, rounding to an integer, and
/// multiplying back.
fn round_to_format(x: f64, p: i32, emin: i32, emax: i32) -> f64 {
    if !x.is_finite() || x == 0.0 {
        return x;
    }
    let a = x.abs();
    // For f64 subnormals the biased exponent is 0; any exponent below `emin` behaves the same.
    let e = ((a.to_bits() >> 52) as i32) - 1023;
    let quantum = pow2(e.max(emin) - p);
    let rounded = (a / quantum).round_ties_even() * quantum;
    let max_finite = (2.0 - pow2(-p)) * pow2(emax);
    let rounded = if rounded > max_finite { f64::INFINITY } else { rounded };
    rounded.copysign(x)
}

/// `2^e` for `e` in the normal range of `f64`.
fn pow2(e: i32) -> f64 {
    f64::from_bits(((e + 1023) as u64) << 52)
}

impl Int {
    pub(crate) fn width(self) -> u32 {
        match self {
            Int::I32 | Int::U32 => 32,
            Int::I8 | Int::U8 => 8,
        }
    }

    /// `[min, max]` of the dtype.
    pub(crate) fn range(self) -> (i64, i64) {
        match self {
            Int::I32 => (i32::MIN.into(), i32::MAX.into()),
            Int::U32 => (0, u32::MAX.into()),
            Int::I8 => (i8::MIN.into(), i8::MAX.into()),
            Int::U8 => (0, u8::MAX.into()),
        }
    }

    /// Two's complement truncation to the width, read back signed or unsigned.
    pub(crate) fn wrap(self, x: i64) -> i64 {
        match self {
            Int::I32 => i64::from(x as i32),
            Int::U32 => i64::from(x as u32),
            Int::I8 => i64::from(x as i8),
            Int::U8 => i64::from(x as u8),
        }
    }

    /// Float to integer: truncation toward zero, saturating to the range; NaN gives 0.
    pub(crate) fn saturate(self, x: f64) -> i64 {
        let (lo, hi) = self.range();
        // `as` truncates toward zero, saturates at the i64 range and maps NaN to 0.
        (x as i64).clamp(lo, hi)
    }

    /// The bit pattern, in the low `width` bits.
    pub(crate) fn to_bits(self, x: i64) -> u32 {
        let bits = x as u32;
        match self {
            Int::I32 | Int::U32 => bits,
            Int::I8 | Int::U8 => bits & 0xff,
        }
    }

    pub(crate) fn from_bits(self, bits: u32) -> i64 {
        self.wrap(i64::from(bits))
    }
}

impl Data {
    pub(crate) fn len(&self) -> usize {
        match self {
            Data::F(_, v) => v.len(),
            Data::I(_, v) => v.len(),
            Data::B(v) => v.len(),
        }
    }

    /// The elements at `indices`, in that order.
    pub(crate) fn gather(&self, indices: &[usize]) -> Data {
        match self {
            Data::F(f, v) => Data::F(*f, indices.iter().map(|&i| v[i]).collect()),
            Data::I(t, v) => Data::I(*t, indices.iter().map(|&i| v[i]).collect()),
            Data::B(v) => Data::B(indices.iter().map(|&i| v[i]).collect()),
        }
    }

    /// A short name of the element kind, for internal error messages.
    pub(crate) fn kind_name(&self) -> &'static str {
        match self {
            Data::F(..) => "float",
            Data::I(..) => "integer",
            Data::B(_) => "bool",
        }
    }
}
