//! The seam between model files and the forward pass.
//!
//! A [`TensorSource`] (a GGUF file, a safetensors checkpoint, a model built in memory by a test)
//! hands out tensors as they are stored — quantized blocks stay quantized — and the forward pass
//! repacks them into the kernels' layouts. Tensors are named the GGUF way whatever the file
//! (`token_embd.weight`, `blk.{i}.attn_q.weight`, `blk.{i}.attn_k.weight`, `blk.{i}.attn_v.weight`,
//! `blk.{i}.attn_output.weight`, `blk.{i}.ffn_gate.weight`, `blk.{i}.ffn_up.weight`,
//! `blk.{i}.ffn_down.weight`, `blk.{i}.attn_norm.weight`, `blk.{i}.ffn_norm.weight`,
//! `output_norm.weight`, and `output.weight` when the head is not tied), and Q/K projection rows
//! are in the order adjacent-pair RoPE expects (as GGUF stores them; a safetensors reader permutes
//! Hugging Face's rotate-half order on load).

use half::{bf16, f16};

/// Shape convention: `shape[0]` is the fastest-varying dimension (GGUF's `ne`). A weight matrix of
/// a linear layer `y = W x` with `W: [out, in]` row-major has `shape == [in, out]`.
#[derive(Clone, Debug, PartialEq)]
pub struct RawTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: TensorData,
}

/// Tensor contents as stored. Quantized variants hold GGUF's block bytes unchanged
/// (Q4_0: 18 bytes per 32 values, Q4_1: 20, Q8_0: 34), blocks running along `shape[0]`.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    F32(Vec<f32>),
    F16(Vec<f16>),
    BF16(Vec<bf16>),
    Q4_0(Vec<u8>),
    Q4_1(Vec<u8>),
    Q8_0(Vec<u8>),
}

impl TensorData {
    pub fn kind(&self) -> &'static str {
        match self {
            TensorData::F32(_) => "F32",
            TensorData::F16(_) => "F16",
            TensorData::BF16(_) => "BF16",
            TensorData::Q4_0(_) => "Q4_0",
            TensorData::Q4_1(_) => "Q4_1",
            TensorData::Q8_0(_) => "Q8_0",
        }
    }
}

/// The Llama-architecture hyperparameters the forward pass needs.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    pub n_layers: usize,
    /// Model width (`embedding_length`).
    pub dim: usize,
    /// SwiGLU hidden width (`feed_forward_length`).
    pub ffn_dim: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    /// `dim / n_heads`.
    pub head_dim: usize,
    pub vocab_size: usize,
    /// Longest sequence the model was trained for.
    pub context_length: usize,
    pub rope_base: f64,
    pub rms_eps: f64,
    /// The output head reuses `token_embd.weight`.
    pub tied_head: bool,
}

/// Why a tensor or the configuration could not be had from a source.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the model has no tensor `{name}`")]
    MissingTensor { name: String },
    #[error("tensor `{name}`: {message}")]
    BadTensor { name: String, message: String },
    #[error("model configuration: {0}")]
    Config(String),
    #[error("{path}: {message}")]
    File { path: std::path::PathBuf, message: String },
    /// A GGUF file that is not readable as one (see [`super::gguf::GgufError`]).
    #[error("{path}: {source}")]
    Gguf {
        path: std::path::PathBuf,
        #[source]
        source: super::gguf::GgufError,
    },
}

/// Where the forward pass gets its weights from.
pub trait TensorSource {
    fn config(&self) -> Result<LlamaConfig, LoadError>;
    /// The tensor `name` (GGUF naming, see the module doc), as stored.
    fn tensor(&self, name: &str) -> Result<RawTensor, LoadError>;
}
