//! kiln's runtime: devices (CPU now; CUDA through cudarc with dynamic loading later), the kernel
//! cache, model loading and the Llama forward pass, the paged KV cache and speculative decoding.
//!
//! - [`cpu`]: the CPU device — render to C, compile (cached), load, run the grid on rayon;
//! - [`bench`]: benchmarks with rotated inputs and the roofline measured in the same run;
//! - [`measure`]: the CPU device as the autotuner's `Measure` (checked, rotated, timed candidates);
//! - [`model`]: model files, the Llama configuration, tokenizer and forward pass;
//! - [`generate`]: the generation loop (prefill, sample, decode) with its timings;
//! - [`speculative`]: speculative decoding — draft sources, batched verification, acceptance
//!   rules, adaptive `k`, the loop and its benchmark;
//! - [`simt`]: the PTX backend's SIMT simulator as an executor for the conformance suite.
//!
//! Architecture Invariant: only `runtime` touches devices.

pub mod bench;
pub mod cpu;
pub mod generate;
pub mod measure;
pub mod model;
pub mod speculative;
pub mod simt;
