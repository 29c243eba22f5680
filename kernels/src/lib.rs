//! kiln's kernel library: each kernel as a `Problem`, tunable knobs with a legal config space,
//! `plan(problem, config)` giving the IR launches and grids, a naive f64 reference written without
//! the IR, and a random input generator.
//!
//! - [`kernel`]: the [`TileKernel`] contract and its object-safe face [`DynKernel`];
//! - [`registry`]: every kernel by [`KernelId`];
//! - [`plan`]: named buffers and launches; [`check`]: running a plan on an [`check::Executor`]
//!   (the interpreter first) against the reference;
//! - [`args`]: `key=value` shapes and configs; [`random`]: input generation;
//! - one module per kernel family.
//!
//! Architecture Invariant: `kernels` know no backends; they produce IR and references only.

pub mod args;
pub mod attention_prefill;
pub mod check;
pub mod dequant_gemm_w4;
pub mod error;
pub mod kernel;
pub mod paged;
pub mod plan;
pub mod q8;
pub mod random;
pub mod registry;
pub mod roofline;
pub mod tiles;
pub mod transformer;

pub use args::{Args, ArgsKind, Reader};
pub use error::{ensure, KernelError};
pub use kernel::{Config, Cost, DynKernel, Knob, Problem, SpaceLimits, TargetKind, TileKernel};
pub use plan::{Binding, BufferSpec, Buffers, Launch, Plan, Reference, Role};
pub use registry::{lookup, KernelId};
