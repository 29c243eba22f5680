//! kiln's runtime: devices (CPU; CUDA through cudarc with dynamic loading), the kernel
//! cache, model loading and the Llama forward pass, the paged KV cache and speculative decoding.
//!
//! - [`cpu`]: the CPU device — render to C, compile (cached), load, run the grid on its
//!   pool of spinning workers;
//! - [`bench`]: benchmarks with rotated inputs and the roofline measured in the same run;
//! - [`measure`]: the CPU device as the autotuner's `Measure` (checked, rotated, timed candidates);
//! - [`model`]: model files, the Llama configuration, tokenizer and forward pass;
//! - [`generate`]: the generation loop (prefill, sample, decode) with its timings;
//! - [`speculative`]: speculative decoding — draft sources, batched verification, acceptance
//!   rules, adaptive `k`, the loop and its benchmark;
//! - [`simt`]: the PTX backend's SIMT simulator as an executor for the conformance suite;
//! - [`cuda`]: the CUDA device (cudarc, driver API loaded at run time) and its executor;
//! - [`cuda_bench`]: `kiln bench --target cuda:N` and `kiln gpu-check`;
//! - [`host_mem`]: large host buffers on transparent huge pages (the binaries' global allocator);
//! - [`ptx_abi`]: launch arguments → PTX parameters, shared by `simt` and `cuda`.
//!
//! Architecture Invariant: only `runtime` touches devices.

pub mod bench;
pub mod cpu;
pub mod cuda;
pub mod cuda_bench;
pub mod generate;
pub mod host_mem;
pub mod measure;
pub mod model;
pub mod ptx_abi;
pub mod simt;
pub mod speculative;
