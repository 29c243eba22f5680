//! Models: reading weights from model files, the Llama configuration, the tokenizer, and the
//! forward pass built from the library's kernels.
//!
//! - [`tensor`]: the seam between file formats and the forward pass — [`tensor::TensorSource`]
//!   hands out tensors as they are stored ([`tensor::RawTensor`]), named the GGUF way, and the
//!   model's [`tensor::LlamaConfig`].

pub mod tensor;
