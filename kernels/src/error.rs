//! Typed errors of the kernel library: every message names the kernel and the broken constraint.

use crate::args::ArgsKind;
use kiln_ir::DType;

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    #[error("cannot parse `{text}`: {why}")]
    BadArgs { text: String, why: String },
    #[error("{kernel}: {kind} key `{key}` is missing")]
    MissingKey { kernel: &'static str, kind: ArgsKind, key: &'static str },
    #[error("{kernel}: unknown {kind} key `{key}` (known: {known})")]
    UnknownKey { kernel: &'static str, kind: ArgsKind, key: String, known: String },
    #[error("{kernel}: {kind} key `{key}` = `{value}` is not a valid {expected}")]
    BadValue { kernel: &'static str, kind: ArgsKind, key: &'static str, value: String, expected: &'static str },
    /// The problem or config breaks a constraint of the kernel (`heads % kv_heads == 0`, ...).
    #[error("{kernel}: {constraint}")]
    Constraint { kernel: &'static str, constraint: String },
    #[error("unknown kernel `{name}` (known: {known})")]
    UnknownKernel { name: String, known: String },
    /// The builder or verifier rejected the generated IR: a bug in the kernel, reported as data.
    #[error("{kernel}: building the IR failed: {source}")]
    Build { kernel: &'static str, source: kiln_ir::BuildError },
    /// A buffer given to a plan does not match its declaration.
    #[error("{kernel}: buffer `{buffer}` should be {expected_len} × {expected_dtype}, got {got_len} × {got_dtype}")]
    BufferMismatch {
        kernel: &'static str,
        buffer: String,
        expected_dtype: DType,
        expected_len: usize,
        got_dtype: DType,
        got_len: usize,
    },
    #[error("{kernel}: buffer `{buffer}` is missing")]
    MissingBuffer { kernel: &'static str, buffer: String },
    /// Running a launch failed (in the interpreter or a backend).
    #[error("{kernel}: launch {launch} (`{ir_name}`) failed: {message}")]
    Launch { kernel: &'static str, launch: usize, ir_name: String, message: String },
}

/// Shorthand for a constraint check: `ensure(kernel, cond, || "why")`.
pub fn ensure(kernel: &'static str, cond: bool, constraint: impl FnOnce() -> String) -> Result<(), KernelError> {
    if cond {
        Ok(())
    } else {
        Err(KernelError::Constraint { kernel, constraint: constraint() })
    }
}
