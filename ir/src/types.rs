//! Value types: a dtype and a static shape. Rank 0 is a scalar.

use crate::DType;
use std::fmt;

/// A static tile shape. The empty shape is a scalar.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Shape(pub Vec<u32>);

impl Shape {
    pub fn scalar() -> Shape {
        Shape(Vec::new())
    }

    pub fn new(dims: impl Into<Vec<u32>>) -> Shape {
        Shape(dims.into())
    }

    pub fn dims(&self) -> &[u32] {
        &self.0
    }

    pub fn rank(&self) -> usize {
        self.0.len()
    }

    pub fn is_scalar(&self) -> bool {
        self.0.is_empty()
    }

    /// Number of elements (1 for a scalar). Saturates instead of overflowing, so an absurd shape
    /// is reported by the verifier rather than wrapping.
    pub fn numel(&self) -> u64 {
        self.0.iter().fold(1u64, |acc, &d| acc.saturating_mul(d as u64))
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<usize> {
        let mut strides = vec![1usize; self.0.len()];
        for i in (0..self.0.len().saturating_sub(1)).rev() {
            strides[i] = strides[i + 1] * self.0[i + 1] as usize;
        }
        strides
    }

    /// Whether `self` broadcasts to `target` under numpy rules: dims are aligned from the right,
    /// each source dim equals the target dim or is 1, and missing leading dims are added.
    pub fn broadcasts_to(&self, target: &Shape) -> bool {
        if self.rank() > target.rank() {
            return false;
        }
        let offset = target.rank() - self.rank();
        self.0.iter().enumerate().all(|(i, &d)| d == 1 || d == target.0[i + offset])
    }

    /// The common shape two operands broadcast to, if any.
    pub fn broadcast_with(&self, other: &Shape) -> Option<Shape> {
        let rank = self.rank().max(other.rank());
        let mut dims = Vec::with_capacity(rank);
        for i in 0..rank {
            let a = dim_from_right(self, rank - 1 - i);
            let b = dim_from_right(other, rank - 1 - i);
            dims.push(match (a, b) {
                (x, y) if x == y => x,
                (1, y) => y,
                (x, 1) => x,
                _ => return None,
            });
        }
        Some(Shape(dims))
    }
}

/// The dim `k` places from the right of `shape`, or 1 where the shape has fewer dims.
fn dim_from_right(shape: &Shape, k: usize) -> u32 {
    if k < shape.rank() {
        shape.0[shape.rank() - 1 - k]
    } else {
        1
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "{d}")?;
        }
        f.write_str("]")
    }
}

/// The type of a value: scalar (`f32`) or tile (`f32[64, 128]`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Type {
    pub dtype: DType,
    pub shape: Shape,
}

impl Type {
    pub fn scalar(dtype: DType) -> Type {
        Type { dtype, shape: Shape::scalar() }
    }

    pub fn tile(dtype: DType, dims: impl Into<Vec<u32>>) -> Type {
        Type { dtype, shape: Shape::new(dims) }
    }

    pub fn is_scalar(&self) -> bool {
        self.shape.is_scalar()
    }

    /// Same shape, another dtype.
    pub fn with_dtype(&self, dtype: DType) -> Type {
        Type { dtype, shape: self.shape.clone() }
    }
}

impl fmt::Display for Type {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.shape.is_scalar() {
            write!(f, "{}", self.dtype)
        } else {
            write!(f, "{}{}", self.dtype, self.shape)
        }
    }
}
