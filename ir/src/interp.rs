//! The interpreter: runs a kernel over a grid on host buffers. It is the definition of every op.
//!
//! (Semantics section to be written with the implementation.)

use crate::{DType, Kernel, VerifyErrors};
use half::{bf16, f16};

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

/// Why a run failed. Every variant names what went wrong; none is a panic.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error(transparent)]
    Invalid(#[from] VerifyErrors),
    #[error("kernel `{kernel}` takes {expected} arguments, got {got}")]
    ArgCount { kernel: String, expected: usize, got: usize },
}

/// Runs `kernel` once per program of `grid` (x fastest), reading and writing `args`.
pub fn run(kernel: &Kernel, grid: [u32; 3], args: &mut [Arg]) -> Result<(), InterpError> {
    crate::verify(kernel)?;
    let _ = (grid, DType::F32);
    Err(InterpError::ArgCount { kernel: kernel.name.clone(), expected: kernel.params.len(), got: args.len() })
}
