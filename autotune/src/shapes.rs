//! Shape sets: the (kernel, problem) pairs a tuning run covers.
//!
//! - `smollm2`: SmolLM2-135M on the CPU runtime (f32 activations and KV cache; Q4_1 weights, i.e.
//!   `quant=asym,group=32`): the seven projections' (n, k) pairs, the tied head, attention
//!   decode, the residual-fused `rmsnorm` and `silu_mul`, for m = 1 (decode), 5 and 9
//!   (speculative verify of k = 4 and 8 draft tokens: m = batch × (k + 1)) and 128 (prefill); and
//!   at m = 1 the fused Q/K/V and gate/up projections the runtime runs for one token.
//! - `llama-8b`: the same roles at Llama-3-8B's sizes, fewer m values (one shape takes seconds per
//!   candidate on a small CPU).
//! - a TOML file of `[[shape]]` tables with `kernel = "NAME"` and `shape = "k=v,..."`.

use kiln_kernels::{Args, KernelError, KernelId};
use serde::Deserialize;
use std::path::{Path, PathBuf};

/// The named sets.
pub const SETS: [&str; 2] = ["smollm2", "llama-8b"];

/// One shape to tune.
#[derive(Clone, Debug, PartialEq)]
pub struct TuneShape {
    pub kernel: KernelId,
    /// The problem in canonical form.
    pub shape: Args,
}

#[derive(Debug, thiserror::Error)]
pub enum ShapesError {
    #[error("unknown shape set `{0}` (valid: smollm2, llama-8b, or the path of a TOML file of [[shape]] tables)")]
    UnknownSet(String),
    #[error("cannot read shapes file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("shapes file {path}, line {line}: {message}")]
    Parse { path: PathBuf, line: usize, message: String },
    #[error("shapes file {path}, shape {index} (`{field}` field): {source}")]
    Field { path: PathBuf, index: usize, field: &'static str, source: Box<KernelError> },
    #[error("shape set `{set}` has no shapes for kernel(s) {kernels}")]
    Empty { set: String, kernels: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    shape: Vec<FileShape>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileShape {
    kernel: String,
    shape: String,
}

/// The named set `name`, or the shapes of the TOML file at that path.
pub fn load(name: &str) -> Result<Vec<TuneShape>, ShapesError> {
    match name {
        "smollm2" => Ok(smollm2()),
        "llama-8b" => Ok(llama_8b()),
        path if Path::new(path).is_file() => from_file(Path::new(path)),
        other => Err(ShapesError::UnknownSet(other.to_string())),
    }
}

/// Reads a shapes file; every problem is validated by its kernel.
pub fn from_file(path: &Path) -> Result<Vec<TuneShape>, ShapesError> {
    let text = std::fs::read_to_string(path).map_err(|source| ShapesError::Read { path: path.into(), source })?;
    let file: File = toml::from_str(&text).map_err(|e| ShapesError::Parse {
        path: path.into(),
        line: e.span().map_or(1, |s| text[..s.start.min(text.len())].matches('\n').count() + 1),
        message: e.message().to_string(),
    })?;
    file.shape
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let field =
                |field, source| ShapesError::Field { path: path.into(), index: i + 1, field, source: Box::new(source) };
            let kernel = KernelId::from_name(&s.kernel).map_err(|e| field("kernel", e))?;
            let k = kernel.kernel();
            let args = Args::parse(&s.shape).map_err(|e| field("shape", e))?;
            let shape = k.problem(&args).map_err(|e| field("shape", e))?;
            Ok(TuneShape { kernel, shape })
        })
        .collect()
}

fn shape(kernel: KernelId, text: &str) -> TuneShape {
    // The sets below are fixed text checked by `autotune/tests/shapes.rs`; a broken entry is a bug
    // in this file, so it falls back to the raw text and the tuner reports the kernel's error.
    let args = Args::parse(text).unwrap_or_default();
    let shape = kernel.kernel().problem(&args).unwrap_or(args);
    TuneShape { kernel, shape }
}

/// `projections` are the (n, k) of q and o, k and v, gate and up, down, in that order.
fn model_set(
    dim: u32,
    projections: [(u32, u32); 4],
    head: (u32, u32),
    attention: (u32, u32, u32),
    group: u32,
    ms: &[u32],
    ctxs: &[u32],
) -> Vec<TuneShape> {
    let mut out = Vec::new();
    for &m in ms {
        for &(n, k) in &projections {
            out.push(shape(KernelId::DequantGemmW4, &format!("m={m},n={n},k={k},group={group},act=f32,quant=asym")));
        }
    }
    // The runtime runs Q/K/V and gate/up as one GEMV each for a one-token step.
    let [(q, k), (kv, _), (ffn, _), _] = projections;
    for (n, k) in [(q + 2 * kv, k), (2 * ffn, k)] {
        out.push(shape(KernelId::DequantGemmW4, &format!("m=1,n={n},k={k},group={group},act=f32,quant=asym")));
    }
    for &m in ms.iter().filter(|&&m| m < 16) {
        out.push(shape(KernelId::Q8Gemv, &format!("m={m},n={},k={},act=f32", head.0, head.1)));
    }
    let (heads, kv_heads, head_dim) = attention;
    for &q_len in ms.iter().filter(|&&m| m < 16) {
        for &ctx in ctxs {
            out.push(shape(
                KernelId::AttentionDecodePaged,
                &format!(
                    "batch=1,q_len={q_len},ctx={ctx},heads={heads},kv_heads={kv_heads},head_dim={head_dim},block=16,dtype=f32"
                ),
            ));
        }
    }
    // Every norm but the first is fused with the residual add in the runtime.
    for &m in ms {
        out.push(shape(KernelId::Rmsnorm, &format!("tokens={m},dim={dim},dtype=f32,fused=1")));
        out.push(shape(KernelId::SiluMul, &format!("tokens={m},dim={ffn},dtype=f32")));
    }
    out
}

/// SmolLM2-135M.
pub fn smollm2() -> Vec<TuneShape> {
    // q and o 576×576, k and v 192×576, gate and up 1536×576, down 576×1536 (n × k); fused
    // q/k/v 960×576 and gate/up 3072×576.
    let projections = [(576, 576), (192, 576), (1536, 576), (576, 1536)];
    model_set(576, projections, (49152, 576), (9, 3, 64), 32, &[1, 5, 9, 128], &[256, 1024])
}

/// Llama-3-8B.
pub fn llama_8b() -> Vec<TuneShape> {
    let projections = [(4096, 4096), (1024, 4096), (14336, 4096), (4096, 14336)];
    model_set(4096, projections, (128256, 4096), (32, 8, 128), 128, &[1, 5], &[1024, 4096])
}

/// `shapes` restricted to `kernels` (all when empty).
pub fn select(set: &str, shapes: Vec<TuneShape>, kernels: &[KernelId]) -> Result<Vec<TuneShape>, ShapesError> {
    if kernels.is_empty() {
        return Ok(shapes);
    }
    let out: Vec<TuneShape> = shapes.into_iter().filter(|s| kernels.contains(&s.kernel)).collect();
    if out.is_empty() {
        return Err(ShapesError::Empty {
            set: set.to_string(),
            kernels: kernels.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        });
    }
    Ok(out)
}
