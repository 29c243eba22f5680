//! kiln's code generators: the tile IR lowered to CPU SIMD C (built by the system C compiler)
//! and to CUDA PTX (loaded by the driver).
//!
//! Nothing is here yet: the CPU backend and the PTX backend are issues of their own. This crate
//! already sits in its place in the layering (`ir` ← `codegen`) so that dependents compile against
//! the final structure.
//!
//! Architecture Invariant: `codegen` knows no kernels; it lowers whatever verified IR it is given.
