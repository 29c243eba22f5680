//! The interpreter: runs a kernel over a grid on host buffers. It is the definition of every op.
//!
//! [`run`] verifies the kernel, checks the grid and the arguments against the signature, then
//! runs one program instance per grid point, sequentially, in the order z, y, x (x fastest).
//! Every failure is an [`InterpError`]; no input makes it panic.
//!
//! # Semantics
//!
//! **Values.** A value is a scalar or a row-major tile of its static type. Floating values are
//! always held rounded to their dtype; integer values always wrapped to their width.
//!
//! **Floats.** Every float op computes in `f64` from its (exact) operands and rounds the result
//! once to the value's dtype, to nearest with ties to even; overflow gives ±inf. So `add`, `sub`,
//! `mul`, `div`, `sqrt` and `rem` are correctly rounded for each dtype; `exp2`, `log2`, `rsqrt`
//! (`1 / sqrt(x)`) and `recip` are the `f64` results rounded. `rem` is `fmod` (sign of the
//! dividend; `x rem 0` is NaN); division by zero follows IEEE (±inf or NaN). `neg` and `abs` only
//! change the sign bit. `min` / `max` are IEEE minNum / maxNum: a NaN operand is ignored unless
//! both are NaN (then NaN), and `-0 < +0`. Comparisons are IEEE: with a NaN operand everything is
//! false except `ne`.
//!
//! **NaN bits.** Loads, stores, bitcasts, `select`, shape ops, `neg` and `abs` move NaN bit
//! patterns unchanged (signaling ones included). A NaN produced by arithmetic, `min` / `max`, a
//! reduction or a cast is quiet and keeps its sign and the top bits of its payload.
//!
//! **Integers** (`i32`, `u32`, `i8`, `u8`) wrap to their width after every op. `div` truncates
//! toward zero and `rem` has the dividend's sign; a zero divisor is
//! [`InterpError::DivisionByZero`]; `MIN / -1` wraps to `MIN` and `MIN % -1` is 0. `neg` of an
//! unsigned value wraps; `abs` of an unsigned value is the identity and of signed `MIN` is `MIN`.
//! `not` is bitwise. Shifts take the rhs's bit pattern read as unsigned as the amount; `shl` by at
//! least the width gives 0; `shr` is arithmetic for signed and logical for unsigned types, and an
//! amount of at least the width gives the sign fill (0 or -1 for signed, 0 for unsigned).
//!
//! **Bool.** `not`, `and`, `or`, `xor` are logical; `eq` / `ne` compare.
//!
//! **Cast.** float→float rounds to nearest even; float→int truncates toward zero and saturates
//! to the target's range, NaN giving 0; int→float rounds to nearest even; int→int wraps (two's
//! complement truncation after sign- or zero-extension by the source's signedness); bool→number
//! is 0 or 1; number→bool is `x != 0` (NaN is true, -0 is false). **Bitcast** reinterprets the
//! bits between dtypes of one width (`f32`/`i32`/`u32`, `f16`/`bf16`, `i8`/`u8`).
//!
//! **Creation.** `constant` splats its literal (converted as `cast` converts, which for a
//! verified kernel only rounds float literals to the dtype); `arange` is `start..end`;
//! `program_id` / `num_programs` are this instance's grid index and the grid size along an axis.
//!
//! **Shapes.** `broadcast` follows numpy (right-aligned, size-1 dims repeat); `reshape` keeps the
//! row-major element order; `expand_dims` inserts a dim of size 1.
//!
//! **Reductions.** `reduce_sum` of floats adds in `f64` in index order along the axis and rounds
//! once to the dtype; of integers it wraps. `reduce_max` uses the float `max` above (all-NaN gives
//! NaN); integers compare ordinarily. An empty axis gives 0 for `sum`, and `-inf` (floats) or the
//! dtype's minimum (integers) for `max`.
//!
//! **Dot.** `out[m, n] = acc[m, n] + Σ_k lhs[m, k] · rhs[k, n]`: each product is exact in `f64`
//! (`i64` for `i8` / `u8` operands), the sum starts from `acc` and adds them in `k` order, and the
//! result is rounded once to `f32` (wrapped to `i32` for integer dot).
//!
//! **Memory.** Offsets are element indices (`i32` read signed, `u32` unsigned). A lane is active
//! where the mask is true, or always without a mask. Every active lane's index must lie in
//! `[0, len)`, else the op fails with [`InterpError::OutOfBounds`] (checked for all lanes before
//! memory is touched); inactive lanes never touch memory. `load` gives `other` (splatted if
//! scalar) or zero on inactive lanes. `store` writes active lanes in row-major lane order, so a
//! later lane wins on a repeated index. `atomic_add` adds active lanes in row-major order,
//! rounding `f32` after each add and wrapping integers. `prefetch` is a hint for backends and does
//! nothing here: it reads no memory, so its offsets may lie anywhere.
//!
//! **Loops.** `for` evaluates `start`, `end`, `step`; a `step <= 0` is [`InterpError::BadStep`].
//! It runs the body for `i = start; i < end; i += step` (in `i64`, so it cannot overflow), binding
//! the induction variable and the carried values; `yield` gives the next carried values, and the
//! results are the last carried values (`init` if the body never ran).
//!
//! **Programs** share memory and run one after another, so a later program sees every write of
//! an earlier one.

mod elementwise;
mod exec;
mod host;
mod memory;
mod shape;
mod value;

pub use host::{Arg, ArgForm, HostBuffer, Scalar};

use crate::kernel::ParamKind;
use crate::{DType, Kernel, VerifyErrors};

/// Why a run failed. Every variant names what went wrong; none is a panic.
///
/// Errors raised by an instruction name it as the verifier does (`%5 = load (inst3)`) and say
/// which program instance (`[x, y, z]`) hit it.
#[derive(Debug, thiserror::Error)]
pub enum InterpError {
    #[error(transparent)]
    Invalid(#[from] VerifyErrors),
    #[error("kernel `{kernel}` takes {expected} arguments, got {got}")]
    ArgCount { kernel: String, expected: usize, got: usize },
    #[error("argument `{param}`: expected a {expected}, got a {got}")]
    ArgKind { param: String, expected: ArgForm, got: ArgForm },
    #[error("argument `{param}`: expected a {form} of {expected}, got one of {got}")]
    ArgDType { param: String, form: ArgForm, expected: DType, got: DType },
    #[error("grid {grid:?}: every dimension must be in 1..=2147483647")]
    BadGrid { grid: [u32; 3] },
    #[error("{inst} in program {program:?}: index {index} out of bounds for buffer `{buffer}` of {len} elements")]
    OutOfBounds { inst: String, buffer: String, index: i64, len: usize, program: [u32; 3] },
    #[error("{inst} in program {program:?}: integer division by zero")]
    DivisionByZero { inst: String, program: [u32; 3] },
    #[error("{inst} in program {program:?}: loop step must be positive, got {step}")]
    BadStep { inst: String, step: i64, program: [u32; 3] },
    /// The kernel passed verification but could not be run: a bug in the verifier or here.
    #[error("{inst}: internal interpreter error: {message}")]
    Internal { inst: String, message: String },
}

/// Internal failures of one op, turned into an [`InterpError`] naming the instruction.
#[derive(Debug)]
pub(crate) enum Fault {
    DivisionByZero,
    OutOfBounds { index: i64, len: usize },
    Internal(String),
}

/// Runs `kernel` once per program of `grid` (x fastest), reading and writing `args`.
///
/// `args` match `kernel.params` in count and order: a buffer parameter takes an [`Arg::Buffer`]
/// of exactly its dtype, a scalar parameter an [`Arg::Scalar`] of exactly its dtype.
pub fn run(kernel: &Kernel, grid: [u32; 3], args: &mut [Arg]) -> Result<(), InterpError> {
    crate::verify(kernel)?;
    check_launch(kernel, grid, args)?;
    let mut machine = exec::Machine::new(kernel, grid, args);
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                machine.run_program([x, y, z])?;
            }
        }
    }
    Ok(())
}

/// The launch rules every executor shares: at least one program per grid axis and no more than
/// `program_id` (an i32) can count, and `args` matching the signature in count, kind and dtype.
pub fn check_launch(kernel: &Kernel, grid: [u32; 3], args: &[Arg]) -> Result<(), InterpError> {
    if grid.iter().any(|&d| d == 0 || d > i32::MAX as u32) {
        return Err(InterpError::BadGrid { grid });
    }
    if args.len() != kernel.params.len() {
        return Err(InterpError::ArgCount {
            kernel: kernel.name.clone(),
            expected: kernel.params.len(),
            got: args.len(),
        });
    }
    for (param, arg) in kernel.params.iter().zip(args) {
        let (form, dtype) = match &param.kind {
            ParamKind::Buffer { dtype } => (ArgForm::Buffer, *dtype),
            ParamKind::Scalar { value } => (ArgForm::Scalar, kernel.ty(*value).dtype),
        };
        if arg.form() != form {
            return Err(InterpError::ArgKind { param: param.name.clone(), expected: form, got: arg.form() });
        }
        if arg.dtype() != dtype {
            return Err(InterpError::ArgDType { param: param.name.clone(), form, expected: dtype, got: arg.dtype() });
        }
    }
    Ok(())
}
