//! Kernel arguments on the host: buffers, scalars, and conversions to and from `f64` for tests
//! and references.

use super::value::{Data, Float, Int, Kind};
use crate::DType;
use half::{bf16, f16};
use std::fmt;

/// A host buffer bound to a buffer parameter.
#[derive(Clone, Debug, PartialEq)]
pub enum HostBuffer {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    Bool(Vec<bool>),
}

/// A scalar bound to a scalar parameter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    F32(f32),
    F16(f16),
    BF16(bf16),
    I32(i32),
    U32(u32),
    I8(i8),
    U8(u8),
    Bool(bool),
}

/// One kernel argument, in parameter order.
#[derive(Clone, Debug, PartialEq)]
pub enum Arg {
    Buffer(HostBuffer),
    Scalar(Scalar),
}

/// Whether a parameter or argument is a buffer or a scalar (for argument errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgForm {
    Buffer,
    Scalar,
}

impl fmt::Display for ArgForm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ArgForm::Buffer => "buffer",
            ArgForm::Scalar => "scalar",
        })
    }
}

impl HostBuffer {
    pub fn dtype(&self) -> DType {
        match self {
            HostBuffer::F32(_) => DType::F32,
            HostBuffer::F16(_) => DType::F16,
            HostBuffer::BF16(_) => DType::BF16,
            HostBuffer::I32(_) => DType::I32,
            HostBuffer::U32(_) => DType::U32,
            HostBuffer::I8(_) => DType::I8,
            HostBuffer::U8(_) => DType::U8,
            HostBuffer::Bool(_) => DType::Bool,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            HostBuffer::F32(v) => v.len(),
            HostBuffer::F16(v) => v.len(),
            HostBuffer::BF16(v) => v.len(),
            HostBuffer::I32(v) => v.len(),
            HostBuffer::U32(v) => v.len(),
            HostBuffer::I8(v) => v.len(),
            HostBuffer::U8(v) => v.len(),
            HostBuffer::Bool(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `n` zeros of `dtype` (`false` for `bool`).
    pub fn zeros(dtype: DType, n: usize) -> HostBuffer {
        HostBuffer::from_data(&Kind::of(dtype).zeros(n))
    }

    /// `n` copies of `x`, converted as [`HostBuffer::from_f64`] converts.
    pub fn filled(dtype: DType, n: usize, x: f64) -> HostBuffer {
        HostBuffer::from_f64(dtype, &vec![x; n])
    }

    /// A buffer of `dtype` holding `xs` converted as `cast` converts: rounded to nearest even
    /// for floats, truncated toward zero and saturated (NaN to 0) for integers, `x != 0` for
    /// `bool`.
    pub fn from_f64(dtype: DType, xs: &[f64]) -> HostBuffer {
        HostBuffer::from_data(&Kind::of(dtype).convert_f64s(xs))
    }

    /// The elements as `f64` (exact; `bool` as 0 or 1).
    pub fn to_f64(&self) -> Vec<f64> {
        match self.to_data() {
            Data::F(_, v) => v,
            Data::I(_, v) => v.into_iter().map(|x| x as f64).collect(),
            Data::B(v) => v.into_iter().map(|x| f64::from(u8::from(x))).collect(),
        }
    }

    /// Every element, as the interpreter holds it.
    pub(crate) fn to_data(&self) -> Data {
        match self {
            // Through the bits, so that NaN payloads (signaling ones included) survive.
            HostBuffer::F32(v) => Data::F(Float::F32, v.iter().map(|x| Float::F32.decode(x.to_bits())).collect()),
            HostBuffer::F16(v) => {
                Data::F(Float::F16, v.iter().map(|x| Float::F16.decode(x.to_bits().into())).collect())
            }
            HostBuffer::BF16(v) => {
                Data::F(Float::BF16, v.iter().map(|x| Float::BF16.decode(x.to_bits().into())).collect())
            }
            HostBuffer::I32(v) => Data::I(Int::I32, v.iter().map(|&x| x.into()).collect()),
            HostBuffer::U32(v) => Data::I(Int::U32, v.iter().map(|&x| x.into()).collect()),
            HostBuffer::I8(v) => Data::I(Int::I8, v.iter().map(|&x| x.into()).collect()),
            HostBuffer::U8(v) => Data::I(Int::U8, v.iter().map(|&x| x.into()).collect()),
            HostBuffer::Bool(v) => Data::B(v.clone()),
        }
    }

    /// A buffer holding `data` (whose values are already rounded / wrapped to its kind).
    pub(crate) fn from_data(data: &Data) -> HostBuffer {
        match data {
            Data::F(f, v) => {
                let bits = v.iter().map(|&x| f.encode(x));
                match f {
                    Float::F32 => HostBuffer::F32(bits.map(f32::from_bits).collect()),
                    Float::F16 => HostBuffer::F16(bits.map(|b| f16::from_bits(b as u16)).collect()),
                    Float::BF16 => HostBuffer::BF16(bits.map(|b| bf16::from_bits(b as u16)).collect()),
                }
            }
            Data::I(t, v) => match t {
                Int::I32 => HostBuffer::I32(v.iter().map(|&x| x as i32).collect()),
                Int::U32 => HostBuffer::U32(v.iter().map(|&x| x as u32).collect()),
                Int::I8 => HostBuffer::I8(v.iter().map(|&x| x as i8).collect()),
                Int::U8 => HostBuffer::U8(v.iter().map(|&x| x as u8).collect()),
            },
            Data::B(v) => HostBuffer::Bool(v.clone()),
        }
    }
}

impl Scalar {
    pub fn dtype(&self) -> DType {
        match self {
            Scalar::F32(_) => DType::F32,
            Scalar::F16(_) => DType::F16,
            Scalar::BF16(_) => DType::BF16,
            Scalar::I32(_) => DType::I32,
            Scalar::U32(_) => DType::U32,
            Scalar::I8(_) => DType::I8,
            Scalar::U8(_) => DType::U8,
            Scalar::Bool(_) => DType::Bool,
        }
    }

    /// `x` converted to `dtype` as [`HostBuffer::from_f64`] converts.
    pub fn from_f64(dtype: DType, x: f64) -> Scalar {
        let float = |f: Float| f.encode(f.round(x));
        match dtype {
            DType::F32 => Scalar::F32(f32::from_bits(float(Float::F32))),
            DType::F16 => Scalar::F16(f16::from_bits(float(Float::F16) as u16)),
            DType::BF16 => Scalar::BF16(bf16::from_bits(float(Float::BF16) as u16)),
            DType::I32 => Scalar::I32(Int::I32.saturate(x) as i32),
            DType::U32 => Scalar::U32(Int::U32.saturate(x) as u32),
            DType::I8 => Scalar::I8(Int::I8.saturate(x) as i8),
            DType::U8 => Scalar::U8(Int::U8.saturate(x) as u8),
            DType::Bool => Scalar::Bool(x != 0.0),
        }
    }

    /// The value as `f64` (exact; `bool` as 0 or 1).
    pub fn to_f64(&self) -> f64 {
        match self {
            Scalar::F32(x) => f64::from(*x),
            Scalar::F16(x) => x.to_f64(),
            Scalar::BF16(x) => x.to_f64(),
            Scalar::I32(x) => f64::from(*x),
            Scalar::U32(x) => f64::from(*x),
            Scalar::I8(x) => f64::from(*x),
            Scalar::U8(x) => f64::from(*x),
            Scalar::Bool(x) => f64::from(u8::from(*x)),
        }
    }

    /// The value as the interpreter holds it, a one-element [`Data`].
    pub(crate) fn to_data(self) -> Data {
        match self {
            Scalar::F32(x) => Data::F(Float::F32, vec![Float::F32.decode(x.to_bits())]),
            Scalar::F16(x) => Data::F(Float::F16, vec![Float::F16.decode(x.to_bits().into())]),
            Scalar::BF16(x) => Data::F(Float::BF16, vec![Float::BF16.decode(x.to_bits().into())]),
            Scalar::I32(x) => Data::I(Int::I32, vec![x.into()]),
            Scalar::U32(x) => Data::I(Int::U32, vec![x.into()]),
            Scalar::I8(x) => Data::I(Int::I8, vec![x.into()]),
            Scalar::U8(x) => Data::I(Int::U8, vec![x.into()]),
            Scalar::Bool(x) => Data::B(vec![x]),
        }
    }
}

impl Arg {
    pub fn form(&self) -> ArgForm {
        match self {
            Arg::Buffer(_) => ArgForm::Buffer,
            Arg::Scalar(_) => ArgForm::Scalar,
        }
    }

    pub fn dtype(&self) -> DType {
        match self {
            Arg::Buffer(b) => b.dtype(),
            Arg::Scalar(s) => s.dtype(),
        }
    }

    /// The buffer, if this is one.
    pub fn buffer(&self) -> Option<&HostBuffer> {
        match self {
            Arg::Buffer(b) => Some(b),
            Arg::Scalar(_) => None,
        }
    }

    pub fn buffer_mut(&mut self) -> Option<&mut HostBuffer> {
        match self {
            Arg::Buffer(b) => Some(b),
            Arg::Scalar(_) => None,
        }
    }
}

impl From<HostBuffer> for Arg {
    fn from(b: HostBuffer) -> Arg {
        Arg::Buffer(b)
    }
}

impl From<Scalar> for Arg {
    fn from(s: Scalar) -> Arg {
        Arg::Scalar(s)
    }
}
