//! Element types of the tile IR and their properties.

use std::fmt;

/// The element type of a scalar or a tile.
///
/// Floating values are always held rounded to their dtype (so an `f16` add rounds its result to
/// `f16`); integer values always wrap to their width.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    F32,
    F16,
    BF16,
    I32,
    U32,
    I8,
    U8,
    Bool,
}

impl DType {
    /// Every dtype, in a fixed order (useful for tests and generators).
    pub const ALL: [DType; 8] =
        [DType::F32, DType::F16, DType::BF16, DType::I32, DType::U32, DType::I8, DType::U8, DType::Bool];

    /// The name used in the text form.
    pub fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
            DType::I32 => "i32",
            DType::U32 => "u32",
            DType::I8 => "i8",
            DType::U8 => "u8",
            DType::Bool => "bool",
        }
    }

    /// Parses a dtype name of the text form.
    pub fn from_name(name: &str) -> Option<DType> {
        DType::ALL.into_iter().find(|d| d.name() == name)
    }

    /// Storage size of one element in bytes (`bool` is stored as one byte).
    pub fn size_bytes(self) -> usize {
        match self {
            DType::F32 | DType::I32 | DType::U32 => 4,
            DType::F16 | DType::BF16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// Width in bits of the value (1 for `bool`).
    pub fn bits(self) -> u32 {
        match self {
            DType::Bool => 1,
            other => other.size_bytes() as u32 * 8,
        }
    }

    pub fn is_float(self) -> bool {
        match self {
            DType::F32 | DType::F16 | DType::BF16 => true,
            DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => false,
        }
    }

    pub fn is_int(self) -> bool {
        match self {
            DType::I32 | DType::U32 | DType::I8 | DType::U8 => true,
            DType::F32 | DType::F16 | DType::BF16 | DType::Bool => false,
        }
    }

    pub fn is_signed_int(self) -> bool {
        match self {
            DType::I32 | DType::I8 => true,
            DType::U32 | DType::U8 | DType::F32 | DType::F16 | DType::BF16 | DType::Bool => false,
        }
    }

    pub fn is_bool(self) -> bool {
        self == DType::Bool
    }

    /// Integer range `[min, max]` of an integer dtype, `None` otherwise.
    pub fn int_range(self) -> Option<(i64, i64)> {
        match self {
            DType::I32 => Some((i32::MIN as i64, i32::MAX as i64)),
            DType::U32 => Some((0, u32::MAX as i64)),
            DType::I8 => Some((i8::MIN as i64, i8::MAX as i64)),
            DType::U8 => Some((0, u8::MAX as i64)),
            DType::F32 | DType::F16 | DType::BF16 | DType::Bool => None,
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}
