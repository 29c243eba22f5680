//! Hugging Face Llama checkpoints: `*.safetensors` weights (f16, bf16 or f32) with the
//! `config.json` beside them, handed out under GGUF names.
//!
//! The forward pass reads every model the GGUF way (see [`super::tensor`]), so this module
//! renames (`model.layers.3.self_attn.q_proj.weight` → `blk.3.attn_q.weight`), reverses shapes
//! (Hugging Face's `[out, in]` is GGUF's `[in, out]`; the bytes are the same row-major matrix), and
//! permutes the rows of the Q and K projections. Hugging Face applies RoPE to the two halves of
//! each head (`rotate_half`), GGUF to adjacent pairs; llama.cpp's converter reorders the rows so
//! that the same model works with the adjacent-pair rotation:
//! `w.reshape(n_head, 2, head_dim / 2, in).swapaxes(1, 2).reshape(out, in)`, i.e. row
//! `h·head_dim + 2j + s` of the result is row `h·head_dim + s·head_dim/2 + j` of the checkpoint.
//!
//! A single file (`model.safetensors` or any `*.safetensors` path) and sharded checkpoints
//! (`model.safetensors.index.json`) both load. The head is tied when `tie_word_embeddings` is
//! set or there is no `lm_head.weight`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use ::safetensors::tensor::{Dtype, TensorInfo};
use ::safetensors::SafeTensors;
use half::{bf16, f16};
use serde::Deserialize;

use super::tensor::{LlamaConfig, LoadError, RawTensor, TensorData, TensorSource};

/// The fields of a Hugging Face `config.json` that a Llama forward pass depends on.
#[derive(Clone, Debug, Deserialize)]
pub struct HfLlamaConfig {
    #[serde(default)]
    pub model_type: Option<String>,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub head_dim: Option<usize>,
    #[serde(default)]
    pub rope_scaling: Option<serde_json::Value>,
    #[serde(default)]
    pub hidden_act: Option<String>,
    #[serde(default)]
    pub attention_bias: bool,
    #[serde(default)]
    pub mlp_bias: bool,
}

/// Hugging Face's `LlamaConfig` defaults.
fn default_rope_theta() -> f64 {
    10000.0
}

fn default_rms_norm_eps() -> f64 {
    1e-6
}

/// One tensor of the checkpoint: which file, and where in it.
struct Entry {
    file: usize,
    info: TensorInfo,
}

/// A safetensors Llama checkpoint read into memory; see the module doc.
pub struct SafetensorsModel {
    dir: PathBuf,
    hf_config: HfLlamaConfig,
    config: LlamaConfig,
    /// Each file's bytes and where its data section starts.
    files: Vec<(PathBuf, Vec<u8>, usize)>,
    entries: HashMap<String, Entry>,
}

impl std::fmt::Debug for SafetensorsModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SafetensorsModel")
            .field("dir", &self.dir)
            .field("config", &self.config)
            .field("n_files", &self.files.len())
            .field("n_tensors", &self.entries.len())
            .finish()
    }
}

fn file_err(path: &Path, message: impl Into<String>) -> LoadError {
    LoadError::File { path: path.to_path_buf(), message: message.into() }
}

impl SafetensorsModel {
    /// Opens a checkpoint: a directory (with `model.safetensors` or
    /// `model.safetensors.index.json`, and `config.json`) or one `.safetensors` file with
    /// `config.json` in the same directory.
    pub fn open(path: impl AsRef<Path>) -> Result<SafetensorsModel, LoadError> {
        let path = path.as_ref();
        let (dir, weight_files) = if path.is_dir() {
            let index = path.join("model.safetensors.index.json");
            if index.is_file() {
                (path.to_path_buf(), shards(&index)?)
            } else {
                (path.to_path_buf(), vec![path.join("model.safetensors")])
            }
        } else {
            let dir = path.parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
            (dir, vec![path.to_path_buf()])
        };
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| {
            file_err(&config_path, format!("cannot read the model's config.json ({e}); it belongs next to the weights"))
        })?;
        let hf_config: HfLlamaConfig =
            serde_json::from_str(&text).map_err(|e| file_err(&config_path, format!("not a Llama config.json: {e}")))?;

        let mut files = Vec::new();
        let mut entries = HashMap::new();
        for weights in weight_files {
            let bytes = std::fs::read(&weights).map_err(|e| file_err(&weights, format!("cannot read: {e}")))?;
            let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| {
                file_err(&weights, format!("not a valid safetensors file ({e}); download or export it again"))
            })?;
            for (name, info) in metadata.tensors() {
                if entries.contains_key(&name) {
                    return Err(file_err(&weights, format!("tensor `{name}` is in two files of the checkpoint")));
                }
                entries.insert(name, Entry { file: files.len(), info: info.clone() });
            }
            files.push((weights, bytes, 8 + header_len));
        }
        let config = llama_config(&hf_config, &entries, &config_path)?;
        Ok(SafetensorsModel { dir, hf_config, config, files, entries })
    }

    pub fn hf_config(&self) -> &HfLlamaConfig {
        &self.hf_config
    }

    /// The checkpoint's own tensor names.
    pub fn hf_names(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The dtype and GGUF shape of tensor `name` (GGUF naming), without reading its data.
    pub fn tensor_kind(&self, name: &str) -> Result<(String, Vec<usize>), LoadError> {
        let (hf_name, _) = self.hf_name(name)?;
        let entry = self.entries.get(&hf_name).ok_or_else(|| LoadError::MissingTensor { name: hf_name.clone() })?;
        Ok((entry.info.dtype.to_string(), entry.info.shape.iter().rev().copied().collect()))
    }

    /// The GGUF names of the tensors the forward pass reads, in model order.
    pub fn gguf_names(&self) -> Vec<String> {
        let mut names = vec!["token_embd.weight".to_string()];
        for i in 0..self.config.n_layers {
            for t in
                ["attn_norm", "attn_q", "attn_k", "attn_v", "attn_output", "ffn_norm", "ffn_gate", "ffn_up", "ffn_down"]
            {
                names.push(format!("blk.{i}.{t}.weight"));
            }
        }
        names.push("output_norm.weight".to_string());
        if !self.config.tied_head {
            names.push("output.weight".to_string());
        }
        names
    }

    /// The Hugging Face name of GGUF tensor `name`, and the head count to permute its rows by
    /// (for Q and K).
    fn hf_name(&self, name: &str) -> Result<(String, Option<usize>), LoadError> {
        let missing = || LoadError::MissingTensor { name: name.to_string() };
        let c = &self.config;
        Ok(match name {
            "token_embd.weight" => ("model.embed_tokens.weight".into(), None),
            "output_norm.weight" => ("model.norm.weight".into(), None),
            "output.weight" if c.tied_head => return Err(missing()),
            "output.weight" => ("lm_head.weight".into(), None),
            _ => {
                let rest = name.strip_prefix("blk.").ok_or_else(missing)?;
                let (layer, tensor) = rest.split_once('.').ok_or_else(missing)?;
                let layer: usize = layer.parse().map_err(|_| missing())?;
                if layer >= c.n_layers {
                    return Err(missing());
                }
                let (hf, permute) = match tensor {
                    "attn_q.weight" => ("self_attn.q_proj.weight", Some(c.n_heads)),
                    "attn_k.weight" => ("self_attn.k_proj.weight", Some(c.n_kv_heads)),
                    "attn_v.weight" => ("self_attn.v_proj.weight", None),
                    "attn_output.weight" => ("self_attn.o_proj.weight", None),
                    "ffn_gate.weight" => ("mlp.gate_proj.weight", None),
                    "ffn_up.weight" => ("mlp.up_proj.weight", None),
                    "ffn_down.weight" => ("mlp.down_proj.weight", None),
                    "attn_norm.weight" => ("input_layernorm.weight", None),
                    "ffn_norm.weight" => ("post_attention_layernorm.weight", None),
                    _ => return Err(missing()),
                };
                (format!("model.layers.{layer}.{hf}"), permute)
            }
        })
    }
}

impl TensorSource for SafetensorsModel {
    fn config(&self) -> Result<LlamaConfig, LoadError> {
        Ok(self.config.clone())
    }

    fn tensor(&self, name: &str) -> Result<RawTensor, LoadError> {
        let (hf_name, permute_heads) = self.hf_name(name)?;
        let bad = |message: String| LoadError::BadTensor { name: format!("{name} ({hf_name})"), message };
        let entry = self.entries.get(&hf_name).ok_or_else(|| LoadError::MissingTensor { name: hf_name.clone() })?;
        let (_, bytes, data_start) = &self.files[entry.file];
        let (start, end) = entry.info.data_offsets;
        let data = &bytes[data_start + start..data_start + end];
        let elem = match entry.info.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            other => {
                return Err(bad(format!(
                    "dtype {other} is not supported; kiln reads f16, bf16 and f32 checkpoints (convert it, \
                     e.g. `model.to(torch.bfloat16).save_pretrained(...)`)"
                )))
            }
        };
        let mut data = data.to_vec();
        if let Some(n_heads) = permute_heads {
            let [rows, cols] = entry.info.shape[..] else {
                return Err(bad(format!("shape {:?} is not a matrix", entry.info.shape)));
            };
            if n_heads == 0 || rows % (2 * n_heads) != 0 {
                return Err(bad(format!("{rows} rows do not split into {n_heads} heads of an even size")));
            }
            data = rotate_half_to_adjacent_pairs(&data, rows, cols * elem, rows / n_heads);
        }
        let shape: Vec<usize> = entry.info.shape.iter().rev().copied().collect();
        let data = match entry.info.dtype {
            Dtype::F32 => {
                TensorData::F32(data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
            }
            Dtype::F16 => TensorData::F16(data.chunks_exact(2).map(|c| f16::from_le_bytes([c[0], c[1]])).collect()),
            _ => TensorData::BF16(data.chunks_exact(2).map(|c| bf16::from_le_bytes([c[0], c[1]])).collect()),
        };
        Ok(RawTensor { name: name.to_string(), shape, data })
    }
}

/// Reorders the rows of a Q or K projection from Hugging Face's half-split head layout to the
/// adjacent-pair layout (see the module doc). `row_bytes` is the size of one row.
fn rotate_half_to_adjacent_pairs(data: &[u8], rows: usize, row_bytes: usize, head_dim: usize) -> Vec<u8> {
    let mut out = vec![0u8; data.len()];
    let half = head_dim / 2;
    for row in 0..rows {
        let (head, within) = (row / head_dim, row % head_dim);
        let (j, s) = (within / 2, within % 2);
        let from = head * head_dim + s * half + j;
        out[row * row_bytes..(row + 1) * row_bytes].copy_from_slice(&data[from * row_bytes..(from + 1) * row_bytes]);
    }
    out
}

/// The weight files named by a sharded checkpoint's index, in a stable order.
fn shards(index: &Path) -> Result<Vec<PathBuf>, LoadError> {
    #[derive(Deserialize)]
    struct Index {
        weight_map: HashMap<String, String>,
    }
    let text = std::fs::read_to_string(index).map_err(|e| file_err(index, format!("cannot read: {e}")))?;
    let parsed: Index =
        serde_json::from_str(&text).map_err(|e| file_err(index, format!("not a safetensors index: {e}")))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<&String> = parsed.weight_map.values().collect();
    files.sort();
    files.dedup();
    Ok(files.into_iter().map(|f| dir.join(f)).collect())
}

/// The [`LlamaConfig`] of `hf`, checked for what kiln's forward pass cannot do and against the
/// embedding's shape.
fn llama_config(
    hf: &HfLlamaConfig,
    entries: &HashMap<String, Entry>,
    config_path: &Path,
) -> Result<LlamaConfig, LoadError> {
    let err = |message: String| LoadError::Config(format!("{}: {message}", config_path.display()));
    if let Some(model_type) = hf.model_type.as_deref().filter(|&t| t != "llama") {
        return Err(err(format!(
            "model_type `{model_type}` is not supported; kiln runs Llama-architecture models (model_type \"llama\")"
        )));
    }
    if hf.rope_scaling.as_ref().is_some_and(|v| !v.is_null()) {
        return Err(err("rope_scaling is not supported: kiln's RoPE is unscaled; use a model without it".into()));
    }
    if let Some(act) = hf.hidden_act.as_deref().filter(|&a| a != "silu") {
        return Err(err(format!("hidden_act `{act}` is not supported; kiln's MLP is SwiGLU (silu)")));
    }
    if hf.attention_bias || hf.mlp_bias {
        return Err(err("attention_bias / mlp_bias are not supported; kiln's projections have no bias".into()));
    }
    let n_heads = hf.num_attention_heads;
    let n_kv_heads = hf.num_key_value_heads.unwrap_or(n_heads);
    let dim = hf.hidden_size;
    for (key, v) in [
        ("hidden_size", dim),
        ("intermediate_size", hf.intermediate_size),
        ("num_hidden_layers", hf.num_hidden_layers),
        ("num_attention_heads", n_heads),
        ("num_key_value_heads", n_kv_heads),
        ("vocab_size", hf.vocab_size),
        ("max_position_embeddings", hf.max_position_embeddings),
    ] {
        if v == 0 {
            return Err(err(format!("{key} is 0")));
        }
    }
    if !dim.is_multiple_of(n_heads) || !n_heads.is_multiple_of(n_kv_heads) {
        return Err(err(format!(
            "hidden_size {dim}, num_attention_heads {n_heads} and num_key_value_heads {n_kv_heads} do not divide"
        )));
    }
    let head_dim = dim / n_heads;
    if hf.head_dim.is_some_and(|h| h != head_dim) || !head_dim.is_multiple_of(2) {
        return Err(err(format!(
            "head_dim {:?} must be hidden_size / num_attention_heads = {head_dim}, and even",
            hf.head_dim
        )));
    }
    match entries.get("model.embed_tokens.weight") {
        None => return Err(LoadError::MissingTensor { name: "model.embed_tokens.weight".into() }),
        Some(e) if e.info.shape != [hf.vocab_size, dim] => {
            return Err(err(format!(
                "model.embed_tokens.weight has shape {:?}, expected [vocab_size {}, hidden_size {dim}]",
                e.info.shape, hf.vocab_size
            )))
        }
        Some(_) => {}
    }
    Ok(LlamaConfig {
        n_layers: hf.num_hidden_layers,
        dim,
        ffn_dim: hf.intermediate_size,
        n_heads,
        n_kv_heads,
        head_dim,
        vocab_size: hf.vocab_size,
        context_length: hf.max_position_embeddings,
        rope_base: hf.rope_theta,
        rms_eps: hf.rms_norm_eps,
        tied_head: hf.tie_word_embeddings || !entries.contains_key("lm_head.weight"),
    })
}
