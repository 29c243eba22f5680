//! The CPU backend's code generator: tile IR → C11 with GCC / Clang vector types, one
//! translation unit per kernel, built into a shared object by the system C compiler.
//!
//! - [`target`]: the CPU description ([`CpuTarget`]) that sizes vector types, picks intrinsics
//!   and gives the compiler flags and the cache fingerprint;
//! - [`render()`]: a verified kernel → [`CSource`], whose code starts with the ABI header
//!   ([`ABI_HEADER`], `abi.h`) and exports `kiln_NAME`.
//!
//! The generated code reproduces the interpreter's semantics (see `kiln_ir::interp`), with the
//! allowances the backend is given: f32 math in `float` (so `exp2` / `log2` / `rsqrt` may differ
//! by ulps and `reduce_sum` / `dot` accumulate in f32, possibly in another order). It must be
//! compiled without `-ffast-math`. The kiln build (`compile.rs`) allows `-ffp-contract=fast`, so
//! `a * b + c` may be one fused multiply-add (one rounding); the bit-exact tests build with
//! `-ffp-contract=off`.

mod render;
pub mod target;

pub mod compile;
pub use render::{render, CSource, RenderError, ABI_HEADER};
pub use target::{CpuIsa, CpuTarget};
