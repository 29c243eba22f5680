//! kiln: a tile-IR kernel compiler and autotuner for LLM inference.
//!
//! This facade re-exports the member crates under short names; the binaries `kiln` and
//! `autotune` live in this package because they wire everything together.

pub use kiln_autotune as autotune;
pub use kiln_codegen as codegen;
pub use kiln_ir as ir;
pub use kiln_kernels as kernels;
pub use kiln_runtime as runtime;

pub mod cli;
