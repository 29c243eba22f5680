//! kiln's runtime: devices (CPU, CUDA through cudarc with dynamic loading), the kernel cache,
//! model loading and the Llama forward pass, the paged KV cache and speculative decoding.
//!
//! Empty until the runtime issue.
//!
//! Architecture Invariant: only `runtime` touches devices.
