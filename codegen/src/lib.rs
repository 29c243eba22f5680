//! kiln's code generators: the tile IR lowered to CPU SIMD C (built by the system C compiler)
//! and to CUDA PTX (loaded by the driver).
//!
//! - [`cpu`]: the C renderer and the CPU target description. Compiling the C and loading it is
//!   the runtime's job, so this crate runs no compiler.
//! - [`ptx`]: the PTX backend: tile IR → thread-level IR → PTX text, and the `ptxas` check.
//!
//! Architecture Invariant: `codegen` knows no kernels; it lowers whatever verified IR it is given.

pub mod cpu;
pub mod ptx;
