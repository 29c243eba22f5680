//! kiln's autotuner: legal config spaces, search strategies, correctness-gated measurement and a
//! TOML tuning database per target.
//!
//! - [`space`]: a kernel's knobs → the legal configs for a problem and target, pruned before
//!   compiling, each with the [`model`]'s roofline estimate;
//! - [`strategy`]: exhaustive and guided search over a space;
//! - [`measure`]: the [`Measure`](measure::Measure) trait the runtime implements per device, and
//!   failures as data;
//! - [`database`]: the TOML tuning database, its key, atomic writes and lookup;
//! - [`lookup`]: the [`lookup::ConfigProvider`] seam through which the runtime asks for configs;
//! - [`tuner`]: one tuning run: space → strategy → parallel compile → one-at-a-time measure →
//!   records;
//! - [`shapes`]: the shape sets (`smollm2`, `llama-8b`, a TOML file);
//! - [`target`]: target names and fingerprints.
//!
//! ```no_run
//! use kiln_autotune::{database, lookup::ConfigProvider};
//! use kiln_kernels::{Args, KernelId};
//! // The database `autotune --db cpu.toml` wrote on this machine, for a 2-thread CPU device.
//! let provider = database::open_host_cpu(std::path::Path::new("cpu.toml"), 2)?;
//! let problem = Args::parse("m=1,n=576,k=576,group=32,act=f32,quant=asym")?;
//! let choice = provider.choose(KernelId::DequantGemmW4, &problem)?;
//! println!("{} ({:?})", choice.config, choice.source);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Architecture Invariant: the tuner measures through a `Measure` trait the runtime implements;
//! it touches no device itself.

pub mod database;
pub mod lookup;
pub mod measure;
pub mod model;
pub mod shapes;
pub mod space;
pub mod strategy;
pub mod target;
pub mod tuner;
