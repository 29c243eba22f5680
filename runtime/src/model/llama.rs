//! The Llama forward pass, built only from the library's kernels, over a batch of sequences of
//! different lengths in one step (prefill chunks and decode tokens together).
//!
//! # Weights
//!
//! [`LlamaModel::load`] repacks what a [`TensorSource`] stores without going through a dense f32
//! model: GGUF Q4_1 / Q4_0 linear layers become kiln's int4 layout (exact, `quant=asym` / `sym`,
//! group 32), the Q8_0 token embedding becomes the `q8` layout and doubles as the tied output
//! head. Float linear weights (safetensors f16 / bf16, GGUF F16 / F32) and Q8_0 linear weights are
//! quantized to int4 asym, group 32, at load (the runtime's one weight format for projections, as
//! DESIGN.md §6 says); float embeddings are quantized to Q8_0 (relative error ≤ 2⁻⁸ per block).
//!
//! # A step
//!
//! [`LlamaModel::step`] takes, per sequence, the new tokens to run. Tokens are laid out in *lanes*
//! of `q_len` tokens (`q_len` = the step's longest input, at most [`MAX_Q_LEN`]): a sequence with
//! more new tokens than `q_len` takes several lanes, and a lane with fewer real tokens is padded
//! at its front. Every lane is one "sequence" of `attention_decode_paged`, whose context length is
//! the position after the lane's last token, and whose block-table row is its sequence's: since
//! the cache already holds every new token of the step (the append runs first in each layer) and
//! the kernel attends causally among a lane's queries, lane `j` of a long prompt sees exactly the
//! prefix it should. Padding tokens have slot −1 (the append skips them), position 0 and token 0;
//! their rows are computed and ignored (a padding row with no visible key may hold NaN, which
//! stays in its own row through every row-wise kernel).
//!
//! Per step and layer: `rmsnorm` (fused with the residual add from the second norm on),
//! `dequant_gemm_w4` for Q, K, V, `rope` (adjacent pairs, Q and K in one launch),
//! `paged_kv_append`, `attention_decode_paged`, `dequant_gemm_w4` for the output projection, the
//! fused `rmsnorm`, gate and up projections, `silu_mul`, the down projection; then the final fused
//! `rmsnorm` and
//! `q8_gemv` with the tied head for the rows whose logits were asked for (one row with
//! activations as two int8 digits, `xq=i8x2`, against a u8-offset copy of the head's weights, by
//! default: see [`ModelOptions::head_activations`]).
//!
//! # Fused projections
//!
//! The store holds a layer's Q, K and V weights as one int4 matrix (`attn_qkv`, rows of Q, then
//! K, then V) and gate and up as another (`ffn_gate_up`). A one-token step runs one GEMV over
//! each (n = 960 and 3072 for SmolLM2) instead of five, 90 fewer launches per SmolLM2 token. At
//! m = 1 the GEMV's time follows its weights (it is bound by its inner loop, not by memory), so
//! fusing removes only the fixed costs of a launch: the hand-over to the second worker, the last
//! programs of a grid running on one thread, the 3-program grids of K and V (measured in the
//! profile of `kiln bench-generate`: Q/K/V 27-35 µs fused against ~46 µs as three launches;
//! gate/up within the noise of two launches). Its output row is Q, K and V one
//! after the other, and the kernels after it bind those pieces as [`View`]s of the one buffer
//! (`CpuDevice::run_views`), so RoPE, the append, attention and `silu_mul` are unchanged.
//!
//! A step of more tokens runs one GEMM per projection over row views of the same fused weights
//! (no second copy), each writing a dense `[m, n]` block of the fused activation buffer: a fused
//! GEMM's `[m, 960]` output would hold each projection as a column slice with a row stride,
//! which neither attention nor the append take, and at m > 1 a GEMM already amortises its launch
//! over the rows it reads each weight tile for. Either way a projection's output is the block at
//! `m · (first row)` of the buffer (see `Projection`), so the consumers' bindings do not depend
//! on which path produced it. Every projection goes through `LlamaModel::gemm`, the one place
//! that builds a GEMM problem (activation dtype included).
//!
//! # x handed to the GEMV ready
//!
//! The one-token row-loop GEMV (the CPU's default at m = 1) reads its x de-interleaved (per 32
//! columns the even ones, then the odd ones, and their sum), which its plan makes in a first
//! launch. When the GEMV's x is the output of a norm (Q/K/V and gate/up), the norm writes that
//! layout too (`rmsnorm` with `deinterleave=1`, into the store's `xn.xd` and `xn.xs`) and the
//! GEMV's plan runs from its second launch on; likewise `silu_mul` for the down projection
//! (`act.xd`, `act.xs`): 90 fewer launches per SmolLM2 token, the same bits (both layouts are
//! tested against the GEMV's own launch).
//!
//! # Plans and buffers
//!
//! Every (kernel, problem) gets its config from the [`ConfigProvider`] once; its plan is built and
//! its modules loaded once and cached. A step shape (lanes, `q_len`) is resolved once into a list
//! of launches whose arguments are indices into the model's buffer store (weights, the KV pool,
//! activations sized for [`ModelOptions::max_step_tokens`], the step's metadata), so running a
//! step does no plan lookup, IR building or buffer allocation per launch: it fills the metadata
//! (token ids, positions, slots, block tables, context lengths) and runs the launches, all inside
//! the device's thread pool, where a one-program launch costs about 0.4 µs (`kiln
//! bench-generate`). Kernels whose problem has a maximum (attention's `ctx`, the cache's
//! `n_blocks`) are planned for the cache's capacity; the actual lengths travel in `context_lens`
//! and the block tables.
//!
//! # Devices
//!
//! The store's buffers are host buffers; on a GPU each has a device copy, and a launch's views
//! become addresses in it ([`super::device`]). The host writes a step's metadata into the host
//! copies, which are uploaded before the launches, and reads back the logits (and, when the
//! head's rows are not the first of the pass, `xn`); the CPU device runs on the host buffers.
//!
//! Activations and the KV cache are f32 on every device, so the forward pass matches an f64 reference
//! to a few 1e-6 (see `runtime/tests/forward.rs`).

use super::device::{check_resolved, DeviceError, DeviceMemory, ModelDevice, Module};
use super::kv_cache::{KvCache, KvError, SeqId};
use super::tensor::{LlamaConfig, LoadError, RawTensor, TensorData, TensorSource};
use crate::cpu::{CpuError, View, ViewArg};
use kiln_autotune::lookup::{ConfigProvider, ConfigSource};
use kiln_ir::interp::HostBuffer;
/// `dequant_gemm_w4`'s `xq`: how the int4 GEMVs take their activations.
pub use kiln_kernels::dequant_gemm_w4::int8::ActQuant as GemvActivations;
use kiln_kernels::dequant_gemm_w4::layout::{self, LayoutError, W4Weights};
use kiln_kernels::q8::gemv_i8::ActQuant;
use kiln_kernels::q8::{Q8FormatError, Q8Matrix, GGUF_Q8_0_BLOCK_BYTES, Q8_BLOCK};
use kiln_kernels::{Args, Binding, KernelError, KernelId, Plan, Role};
use std::collections::HashMap;
use std::sync::Arc;

/// Most new tokens of one sequence in one attention lane (`attention_decode_paged`'s `q_len`).
pub use kiln_kernels::paged::decode_attention::MAX_Q_LEN;

/// Most rows one output-head launch computes (`q8_gemv`'s `m`).
const HEAD_ROWS: usize = 64;

/// Why the model could not be built or a step not run.
#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("tensor `{name}`: {source}")]
    Layout { name: String, source: LayoutError },
    #[error("tensor `{name}`: {source}")]
    Q8 { name: String, source: Q8FormatError },
    #[error("tensor `{name}` is {kind}, which kiln cannot use there: {fix}")]
    Unsupported { name: String, kind: &'static str, fix: String },
    #[error("tensor `{name}` has shape {got:?}, expected {expected:?} from the model configuration")]
    Shape { name: String, got: Vec<usize>, expected: Vec<usize> },
    #[error("model configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Device(#[from] CpuError),
    #[error(transparent)]
    Backend(#[from] DeviceError),
    #[error(transparent)]
    Kv(#[from] KvError),
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    BadToken { id: u32, vocab: usize },
    #[error("{seq}: a step input needs at least one token")]
    EmptyInput { seq: SeqId },
    #[error("{seq} appears twice in one step; give all its new tokens in one input")]
    DuplicateSequence { seq: SeqId },
    /// A broken invariant of the runtime itself, reported instead of panicking.
    #[error("internal error in the forward pass: {0}")]
    Internal(String),
}

/// Sizes the model's runtime state is built for.
#[derive(Clone, Debug, PartialEq)]
pub struct ModelOptions {
    /// Longest sequence (prompt and generated tokens); at most the model's context length.
    pub max_seq_len: usize,
    /// Tokens per KV-cache block.
    pub block_size: usize,
    /// Blocks in the KV pool (`None`: enough for 4 sequences of `max_seq_len`).
    pub kv_blocks: Option<usize>,
    /// Most tokens (padding included) one pass of a step computes; longer steps run in passes.
    pub max_step_tokens: usize,
    /// How the int4 linear layers take their activations in steps of at most
    /// [`INT8_ACTIVATION_MAX_TOKENS`] tokens (decoding): `F32` as they are, or `I8`, quantized
    /// per 32 (`dequant_gemm_w4` with `xq=i8`, integer dot products; relative error ≈ 4e-3 per
    /// product), once per activation vector for all the GEMVs that read it (see
    /// [`LlamaModel::gemv_activations`]). Longer steps (prefill) keep f32 activations.
    pub gemv_activations: GemvActivations,
    /// How the output head takes its activations (`q8_gemv`'s `xq`): `F32`, or quantized per 32
    /// to one (`I8`) or two (`I8x2`) int8 digits for integer products against the Q8_0 weights,
    /// which are then held offset to u8 (a second copy of the tied embedding's `qs` plane,
    /// 28 MiB for SmolLM2). The default is `I8x2`: 2-5× faster than `F32` on AVX-512 VNNI hosts
    /// (SmolLM2's head), logits within 1e-4 of the f64 reference (`runtime/tests/smollm2.rs`);
    /// `I8` is faster still but errs by 1.1e-2 on SmolLM2's logits. Only one-row head launches
    /// (a decode token, a prompt's last logits) take it; more rows keep f32 activations.
    pub head_activations: ActQuant,
    /// Run Q/K/V and gate/up as one GEMV each in one-token steps (the default); off, every
    /// projection is its own GEMV over its rows of the fused weights, as longer steps run them
    /// (for comparisons: both give the same logits up to f32 rounding).
    pub fused_projections: bool,
}

/// The most tokens a step may have for its linear layers to use int8 activations: the int8 path
/// is a GEMV reading the weights once per token.
pub const INT8_ACTIVATION_MAX_TOKENS: usize = 4;

impl Default for ModelOptions {
    fn default() -> ModelOptions {
        ModelOptions {
            max_seq_len: 2048,
            block_size: 16,
            kv_blocks: None,
            max_step_tokens: 512,
            gemv_activations: GemvActivations::F32,
            head_activations: ActQuant::I8x2,
            fused_projections: true,
        }
    }
}

/// Which logits a step returns for an input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// The row of the input's last token (sampling the next token).
    Last,
    /// A row per input token (scoring draft tokens, tests).
    All,
}

/// New tokens of one sequence for a step.
#[derive(Clone, Debug)]
pub struct SeqInput<'a> {
    pub seq: SeqId,
    pub tokens: &'a [u32],
    pub logits: Logits,
}

/// A buffer store: persistent host buffers by index (names resolve once, when a launch list is
/// built), and their copies on a GPU (see [`super::device`]).
#[derive(Default)]
struct Store {
    bufs: Vec<HostBuffer>,
    names: HashMap<String, usize>,
    memory: DeviceMemory,
}

impl Store {
    fn add(&mut self, name: &str, buf: HostBuffer) -> usize {
        let i = match self.names.get(name) {
            Some(&i) => {
                self.bufs[i] = buf;
                i
            }
            None => {
                self.bufs.push(buf);
                self.names.insert(name.to_string(), self.bufs.len() - 1);
                self.bufs.len() - 1
            }
        };
        self.memory.touch(i);
        i
    }

    fn index(&self, name: &str) -> Result<usize, ModelError> {
        self.names.get(name).copied().ok_or_else(|| ModelError::Internal(format!("no buffer `{name}`")))
    }

    /// Buffer `i` to write on the host (marked for upload before the next launch).
    fn i32_mut(&mut self, i: usize) -> Result<&mut Vec<i32>, ModelError> {
        self.memory.touch(i);
        match &mut self.bufs[i] {
            HostBuffer::I32(v) => Ok(v),
            other => Err(ModelError::Internal(format!("buffer {i} is {}, not i32", other.dtype()))),
        }
    }

    /// Buffer `i` as the host holds it (see [`Store::fetch`]).
    fn f32(&self, i: usize) -> Result<&[f32], ModelError> {
        match &self.bufs[i] {
            HostBuffer::F32(v) => Ok(v),
            other => Err(ModelError::Internal(format!("buffer {i} is {}, not f32", other.dtype()))),
        }
    }

    /// Reads buffer `i` back from the device into its host copy (a no-op on the CPU, whose host
    /// buffers are the memory).
    fn fetch(&mut self, device: &ModelDevice, i: usize) -> Result<(), ModelError> {
        let Store { bufs, memory, .. } = self;
        Ok(memory.download(device, i, &mut bufs[i])?)
    }

    /// Buffer `i` to write on the host (marked for upload before the next launch).
    fn f32_mut(&mut self, i: usize) -> Result<&mut Vec<f32>, ModelError> {
        self.memory.touch(i);
        match &mut self.bufs[i] {
            HostBuffer::F32(v) => Ok(v),
            other => Err(ModelError::Internal(format!("buffer {i} is {}, not f32", other.dtype()))),
        }
    }
}

/// A plan with its loaded modules and its scratch buffers in the store.
struct Built {
    plan: Plan,
    modules: Vec<Arc<Module>>,
    /// Plan buffer name → store index, for the plan's Scratch buffers.
    scratch: HashMap<String, usize>,
}

/// One launch, resolved against the store: its buffer arguments are views of store buffers.
struct Resolved {
    module: Arc<Module>,
    grid: [u32; 3],
    args: Vec<ViewArg>,
}

/// What a plan buffer is bound to: a store buffer, whole or the window of `len` elements at
/// `offset` (a projection's rows in a fused weight matrix, one projection's block of a fused
/// activation buffer).
#[derive(Clone, Copy, Debug)]
struct Region<'a> {
    name: &'a str,
    offset: usize,
    len: Option<usize>,
}

fn whole(name: &str) -> Region<'_> {
    Region { name, offset: 0, len: None }
}

fn part(name: &str, offset: usize, len: usize) -> Region<'_> {
    Region { name, offset, len: Some(len) }
}

/// Where a profiled pass's time went, per IR kernel and grid size ([`LlamaModel::profile`]): the
/// fused Q/K/V GEMV and the output projection are the same IR kernel with grids of different
/// sizes, and their cost per launch differs.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelProfile {
    pub kernel: String,
    /// Programs per launch.
    pub programs: u64,
    pub launches: usize,
    /// Total seconds of the kernel's launches, each timed on the device's leader.
    pub seconds: f64,
    /// Weight bytes the launches read (projections, norms, the head; activations and the KV
    /// cache not counted; a weight bound by several launches counts for the last), so
    /// `weight_bytes / seconds` is the bandwidth the kernel reached.
    pub weight_bytes: u64,
}

/// A config the provider chose, for reports.
#[derive(Clone, Debug, PartialEq)]
pub struct ChosenConfig {
    pub kernel: KernelId,
    pub problem: Args,
    pub config: Args,
    pub source: ConfigSource,
}

/// Store indices of the buffers a step writes or reads on the host.
struct Meta {
    ids: usize,
    positions: usize,
    slots: usize,
    block_tables: usize,
    context_lens: usize,
    xn: usize,
    head_x: usize,
    logits: usize,
}

/// A layer's weight matrices as the store holds them: Q, K and V concatenated along n into
/// `attn_qkv`, gate and up into `ffn_gate_up`, so that a one-token step runs one GEMV for each
/// (see [`Projection`]). The int4 format of each (its GEMM problem depends on it).
#[derive(Clone, Copy, Debug, PartialEq)]
struct LayerQuant {
    qkv: layout::Quant,
    output: layout::Quant,
    gate_up: layout::Quant,
    down: layout::Quant,
}

/// A linear layer's rows in one of a layer's weight matrices, and the activation block it reads
/// and writes. The fused activation buffers `qkv` and `gate_up` hold, for a pass of `m` tokens,
/// the `[m, n]` block of each projection one after the other (`q` at 0, `k` at `m·q_dim`, `v` at
/// `m·(q_dim + kv_dim)`): for one token that is exactly the row a fused GEMV writes, and for more
/// tokens every block is a dense `[m, n]` matrix, which the consumers (RoPE, the paged append,
/// attention, `silu_mul`) read as they would a buffer of their own.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Projection {
    Q,
    K,
    V,
    /// Q, K and V in one GEMV (one token).
    Qkv,
    Output,
    Gate,
    Up,
    /// Gate and up in one GEMV (one token).
    GateUp,
    Down,
}

/// A Llama model on a device (the CPU, a CUDA GPU, the SIMT simulator), with its KV cache.
pub struct LlamaModel {
    pub config: LlamaConfig,
    pub options: ModelOptions,
    device: ModelDevice,
    provider: Arc<dyn ConfigProvider + Send + Sync>,
    store: Store,
    cache: KvCache,
    meta: Meta,
    /// Per layer: the int4 format of its weight matrices.
    layers: Vec<LayerQuant>,
    plans: HashMap<(KernelId, Args), Arc<Built>>,
    /// Launch lists by (lanes, q_len, layers run).
    steps: HashMap<(usize, usize, usize), Arc<Vec<Resolved>>>,
    heads: HashMap<(usize, bool), Arc<Vec<Resolved>>>,
    chosen: Vec<ChosenConfig>,
    /// While a launch list is built: the activation buffer last quantized to int8 into
    /// [`X_I8`] and the list's length right after the GEMV that did it.
    quantized: Option<(String, usize)>,
    /// Likewise the activation buffer last transposed into [`X_T`] by a weights-left GEMM.
    transposed: Option<(String, usize)>,
}

/// The store buffer a weights-left GEMM's first launch (`dequant_gemm_w4` with `weights_lhs =
/// 1`, the CPU's prefill path) writes x into, de-interleaved and transposed, and its second
/// launch reads: shared like [`X_I8`], so Q's serves K and V and gate's serves up.
const X_T: (&str, &str) = ("xt", "x_t");

/// The store buffers an int8-activation GEMV's quantize launch writes and its GEMV reads
/// (`dequant_gemm_w4`'s `xq`, `xs` and `xsums`, and `xr`, the second digit, with `xq=i8x2`),
/// shared by every such GEMV: launches run in order, so each quantized vector is read by its
/// GEMVs before the next one overwrites it.
const X_I8: [(&str, &str); 4] = [("xq", "x_i8"), ("xr", "x_i8.r"), ("xs", "x_i8.scales"), ("xsums", "x_i8.sums")];

/// The de-interleaved x of the one-token row-loop GEMV as the kernel before it writes it
/// (`rmsnorm`'s and `silu_mul`'s `deinterleave=1`), per activation buffer the GEMV reads: the
/// GEMV plan's buffer names and the store's.
const XN_DEINTERLEAVED: [(&str, &str); 2] = [("xd", "xn.xd"), ("xs", "xn.xs")];
const ACT_DEINTERLEAVED: [(&str, &str); 2] = [("xd", "act.xd"), ("xs", "act.xs")];

/// The store buffers holding activation buffer `x` de-interleaved, if any kernel writes them.
fn deinterleaved(x: &str) -> Option<[(&'static str, &'static str); 2]> {
    match x {
        "xn" => Some(XN_DEINTERLEAVED),
        "act" => Some(ACT_DEINTERLEAVED),
        _ => None,
    }
}
/// Columns per block of the de-interleaved layout.
const XD_BLOCK: usize = 32;
/// Columns per quantization group of the int4 weights.
const GROUP: usize = 32;

/// The store's weight matrices of a layer (`blk.{l}.{name}.weight.{w,scales,mins}`) and the
/// GGUF tensors concatenated along n into each.
const MATRICES: [(&str, &[&str]); 4] = [
    ("attn_qkv", &["attn_q", "attn_k", "attn_v"]),
    ("attn_output", &["attn_output"]),
    ("ffn_gate_up", &["ffn_gate", "ffn_up"]),
    ("ffn_down", &["ffn_down"]),
];

impl LlamaModel {
    /// Loads the weights of `source`, sizes the KV cache and activations by `options`, for
    /// `device` (an `Arc<CpuDevice>`, an `Arc<CudaDevice>` or a [`ModelDevice`]); the weights
    /// reach a GPU with the first step.
    pub fn load(
        source: &dyn TensorSource,
        device: impl Into<ModelDevice>,
        provider: Arc<dyn ConfigProvider + Send + Sync>,
        options: ModelOptions,
    ) -> Result<LlamaModel, ModelError> {
        let device = device.into();
        let config = source.config()?;
        check_config(&config)?;
        let (dim, ffn, vocab) = (config.dim, config.ffn_dim, config.vocab_size);
        let (q_dim, kv_dim) = (config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim);
        let mut options = options;
        options.max_seq_len = options.max_seq_len.min(config.context_length).max(1);
        options.block_size = options.block_size.max(1);
        options.max_step_tokens = options.max_step_tokens.max(MAX_Q_LEN as usize);
        let max_blocks = options.max_seq_len.div_ceil(options.block_size);
        let n_blocks = options.kv_blocks.unwrap_or(4 * max_blocks).max(1);

        let mut store = Store::default();
        let embd = q8_matrix(&source.tensor("token_embd.weight")?, vocab, dim)?;
        let int8_head = options.head_activations != ActQuant::F32;
        if int8_head && config.tied_head {
            store.add("token_embd.qs_u8", HostBuffer::U8(embd.offset_qs()));
        }
        store.add("token_embd.qs", HostBuffer::I8(embd.qs));
        store.add("token_embd.scales", HostBuffer::F16(embd.scales));
        if !config.tied_head {
            let head = q8_matrix(&source.tensor("output.weight")?, vocab, dim)?;
            if int8_head {
                store.add("output.qs_u8", HostBuffer::U8(head.offset_qs()));
            }
            store.add("output.qs", HostBuffer::I8(head.qs));
            store.add("output.scales", HostBuffer::F16(head.scales));
        }
        store.add("output_norm.weight", HostBuffer::F32(vector(&source.tensor("output_norm.weight")?, dim)?));
        let mut layers = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            for norm in ["attn_norm", "ffn_norm"] {
                let name = format!("blk.{l}.{norm}.weight");
                store.add(&name, HostBuffer::F32(vector(&source.tensor(&name)?, dim)?));
            }
            let shape = |tensor: &str| match tensor {
                "attn_q" => (q_dim, dim),
                "attn_k" | "attn_v" => (kv_dim, dim),
                "attn_output" => (dim, q_dim),
                "ffn_down" => (dim, ffn),
                _ => (ffn, dim),
            };
            let mut quants = [layout::Quant::Asym; 4];
            for (quant, (matrix, tensors)) in quants.iter_mut().zip(MATRICES) {
                let mut parts = Vec::with_capacity(tensors.len());
                for tensor in tensors {
                    let name = format!("blk.{l}.{tensor}.weight");
                    let (n, k) = shape(tensor);
                    parts.push((name.clone(), w4_weights(&source.tensor(&name)?, n, k)?));
                }
                let w = concat_rows(parts)?;
                *quant = w.quant();
                let name = format!("blk.{l}.{matrix}.weight");
                store.add(&format!("{name}.w"), HostBuffer::U8(w.packed));
                store.add(&format!("{name}.scales"), HostBuffer::F16(w.scales));
                if let Some(mins) = w.mins {
                    store.add(&format!("{name}.mins"), HostBuffer::F16(mins));
                }
            }
            let [qkv, output, gate_up, down] = quants;
            layers.push(LayerQuant { qkv, output, gate_up, down });
            let cache_len = n_blocks * options.block_size * kv_dim;
            store.add(&format!("blk.{l}.k_cache"), HostBuffer::F32(vec![0.0; cache_len]));
            store.add(&format!("blk.{l}.v_cache"), HostBuffer::F32(vec![0.0; cache_len]));
        }
        let (cos, sin) = kiln_kernels::transformer::rope::rope_cache(
            config.rope_base,
            options.max_seq_len as u32,
            config.head_dim as u32,
        );
        store.add("rope.cos", HostBuffer::F32(cos));
        store.add("rope.sin", HostBuffer::F32(sin));

        let t = options.max_step_tokens;
        for (name, width) in [
            ("resid", dim),
            ("xn", dim),
            ("xn.xd", dim),
            ("act.xd", ffn),
            ("qkv", q_dim + 2 * kv_dim),
            ("attn", q_dim),
            ("o", dim),
            ("gate_up", 2 * ffn),
            ("act", ffn),
            ("ffn_out", dim),
        ] {
            store.add(name, HostBuffer::F32(vec![0.0; t * width]));
        }
        store.add("xn.xs", HostBuffer::F32(vec![0.0; t * dim.div_ceil(XD_BLOCK)]));
        store.add("act.xs", HostBuffer::F32(vec![0.0; t * ffn.div_ceil(XD_BLOCK)]));
        store.add(X_T.1, HostBuffer::F32(vec![0.0; t * dim.max(ffn).max(q_dim)]));
        let widest = dim.max(ffn).max(q_dim) * INT8_ACTIVATION_MAX_TOKENS;
        store.add(X_I8[0].1, HostBuffer::I8(vec![0; widest]));
        store.add(X_I8[1].1, HostBuffer::I8(vec![0; widest]));
        for (_, name) in &X_I8[2..] {
            store.add(name, HostBuffer::F32(vec![0.0; widest.div_ceil(32)]));
        }
        let meta = Meta {
            ids: store.add("ids", HostBuffer::I32(vec![0; t])),
            positions: store.add("positions", HostBuffer::I32(vec![0; t])),
            slots: store.add("slots", HostBuffer::I32(vec![-1; t])),
            block_tables: store.add("block_tables", HostBuffer::I32(vec![-1; t * max_blocks])),
            context_lens: store.add("context_lens", HostBuffer::I32(vec![1; t])),
            xn: store.index("xn")?,
            head_x: store.add("head_x", HostBuffer::F32(vec![0.0; HEAD_ROWS * dim])),
            logits: store.add("logits", HostBuffer::F32(vec![0.0; HEAD_ROWS * vocab])),
        };
        let cache = KvCache::new(n_blocks, options.block_size, options.max_seq_len);
        Ok(LlamaModel {
            config,
            options,
            device,
            provider,
            store,
            cache,
            meta,
            layers,
            plans: HashMap::new(),
            steps: HashMap::new(),
            heads: HashMap::new(),
            chosen: Vec::new(),
            quantized: None,
            transposed: None,
        })
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// A new, empty sequence in the KV cache.
    pub fn add_sequence(&mut self) -> SeqId {
        self.cache.add_sequence()
    }

    /// Drops a sequence and returns its blocks.
    pub fn free_sequence(&mut self, seq: SeqId) -> Result<(), ModelError> {
        Ok(self.cache.free(seq)?)
    }

    /// Rolls back the last `n` tokens of `seq` (rejected speculative tokens).
    pub fn truncate(&mut self, seq: SeqId, n: usize) -> Result<(), ModelError> {
        Ok(self.cache.truncate(seq, n)?)
    }

    /// The device the model runs on (a draft model can share it).
    pub fn device(&self) -> ModelDevice {
        self.device.clone()
    }

    /// Where the model's kernel configs come from (a draft model can share it).
    pub fn provider(&self) -> Arc<dyn ConfigProvider + Send + Sync> {
        self.provider.clone()
    }

    /// Worker threads of the device (1 on a GPU).
    pub fn threads(&self) -> usize {
        self.device.threads()
    }

    /// Launches of a pass of `lanes` lanes of `q_len` tokens plus one output-head launch list
    /// (0 when that shape was never prepared).
    pub fn launch_count(&self, lanes: usize, q_len: usize) -> usize {
        let head = self.heads.get(&(lanes.min(HEAD_ROWS), true)).map_or(0, |h| h.len());
        self.steps.get(&(lanes, q_len, self.config.n_layers)).map_or(0, |s| s.len() + head)
    }

    /// Seconds per launch of a tiny kernel (`silu_mul` on 32 elements a token) run 200 times back
    /// to back through the path a step's launches take, with `programs` programs (one token
    /// each): the per-launch cost no kernel can avoid. One program runs on the leader alone; more
    /// go through the worker pool, and then the figure includes the hand-off to the workers and
    /// back (on a host whose two vCPUs sit on different core complexes, a few hundred
    /// nanoseconds each way).
    pub fn launch_overhead(&mut self, programs: usize) -> Result<f64, ModelError> {
        let programs = programs.clamp(1, self.options.max_step_tokens.max(1));
        let len = 32 * programs;
        let problem = Args::new().with("tokens", programs).with("dim", 32).with("dtype", "f32");
        let mut launches = Vec::new();
        let bind = [("gate", part("gate_up", 0, len)), ("up", part("gate_up", len, len)), ("out", whole("act"))];
        self.emit_regions(&mut launches, KernelId::SiluMul, problem, &bind)?;
        // 200 back-to-back launches in one list, as a step runs them; the median of 11 lists.
        let Some(one) = launches.pop() else {
            return Err(ModelError::Internal("silu_mul planned no launch".into()));
        };
        let list: Vec<Resolved> =
            (0..200).map(|_| Resolved { module: one.module.clone(), grid: one.grid, args: one.args.clone() }).collect();
        let mut times = Vec::with_capacity(11);
        for _ in 0..11 {
            let t = std::time::Instant::now();
            self.run(&list)?;
            self.device.synchronize()?;
            times.push(t.elapsed().as_secs_f64() / list.len() as f64);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    }

    /// Runs the launches of a decode step (1 lane of 1 token) and its output head one at a time on
    /// the metadata of the last step and returns, per IR kernel and slowest first, the launches,
    /// their total seconds and the weight bytes they read: where a decode step's time goes, and
    /// how close each kernel comes to the read bandwidth. It recomputes the last decode step, so
    /// the cache is rewritten with the values it holds.
    pub fn profile_decode(&mut self) -> Result<Vec<KernelProfile>, ModelError> {
        self.profile(1, 1)
    }

    /// [`LlamaModel::profile_decode`] for a pass of `lanes` lanes of `q_len` tokens (prepared).
    pub fn profile(&mut self, lanes: usize, q_len: usize) -> Result<Vec<KernelProfile>, ModelError> {
        let step = self.step_launches(lanes, q_len, self.config.n_layers)?;
        let head = self.head_launches(lanes.min(HEAD_ROWS), q_len == 1)?;
        let all: Vec<&Resolved> = step.iter().chain(head.iter()).collect();
        // Every launch timed on the device's leader, as a step runs them: a hand-off to the
        // leader per launch would otherwise dominate the small kernels' figures.
        // On a GPU each launch is waited for (a launch is only enqueued).
        let device = self.device.clone();
        self.upload()?;
        let times = device.install(|| {
            let mut times = Vec::with_capacity(all.len());
            for launch in &all {
                let t = std::time::Instant::now();
                self.run_here(std::slice::from_ref(*launch))?;
                self.device.synchronize()?;
                times.push(t.elapsed().as_secs_f64());
            }
            Ok::<_, ModelError>(times)
        })?;
        let mut weight = vec![false; self.store.bufs.len()];
        for (name, &i) in &self.store.names {
            weight[i] = self.is_weight(name);
        }
        // A weight view counts once, for the last launch that binds it: the head reads the whole
        // tied embedding, the embedding lookup before it only a row per token. Views of one
        // fused matrix at different rows (a pass of several tokens runs Q, K and V apart) each
        // count.
        let mut last_use: HashMap<View, usize> = HashMap::new();
        for (at, launch) in all.iter().enumerate() {
            for arg in &launch.args {
                if let ViewArg::Buffer(v) = *arg {
                    last_use.insert(v, at);
                }
            }
        }
        let mut by_name: Vec<KernelProfile> = Vec::new();
        for (at, (launch, seconds)) in all.iter().zip(times).enumerate() {
            let kernel = launch.module.kernel().name.as_str();
            let bytes: u64 = launch
                .args
                .iter()
                .filter_map(|arg| match *arg {
                    ViewArg::Buffer(v) if weight[v.buffer] && last_use.get(&v) == Some(&at) => {
                        Some((v.len * self.store.bufs[v.buffer].dtype().size_bytes()) as u64)
                    }
                    _ => None,
                })
                .sum();
            let programs = launch.grid.iter().map(|&g| u64::from(g)).product::<u64>();
            match by_name.iter_mut().find(|e| e.kernel == kernel && e.programs == programs) {
                Some(e) => {
                    e.launches += 1;
                    e.seconds += seconds;
                    e.weight_bytes += bytes;
                }
                None => by_name.push(KernelProfile {
                    kernel: kernel.to_string(),
                    programs,
                    launches: 1,
                    seconds,
                    weight_bytes: bytes,
                }),
            }
        }
        by_name.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        Ok(by_name)
    }

    /// Every kernel loaded so far (each launch of each plan built by a step or
    /// [`LlamaModel::prepare`]), in no particular order: on a PTX device, the lowered kernels a
    /// test can assemble with `ptxas`.
    pub fn loaded_modules(&self) -> Vec<Arc<Module>> {
        self.plans.values().flat_map(|b| b.modules.iter().cloned()).collect()
    }

    /// The configs the provider chose so far, one per (kernel, problem).
    pub fn chosen_configs(&self) -> &[ChosenConfig] {
        &self.chosen
    }

    /// Bytes of weights one decode token reads (every projection, norm and the output head once).
    pub fn weight_bytes(&self) -> u64 {
        let mut total = 0u64;
        for (name, &i) in &self.store.names {
            if self.is_weight(name) {
                let b = &self.store.bufs[i];
                total += (b.len() * b.dtype().size_bytes()) as u64;
            }
        }
        total
    }

    /// Whether the store buffer `name` is a weight a decode token reads once (projections, norms,
    /// the output head; not the KV cache, nor the embedding unless it doubles as the head; with
    /// the integer head, its offset `qs_u8` copy and not the `i8` plane).
    fn is_weight(&self, name: &str) -> bool {
        let head_reads = match name {
            "token_embd.qs" | "output.qs" => self.options.head_activations == ActQuant::F32,
            _ => true,
        };
        head_reads
            && (name.starts_with("blk.") && !name.ends_with("_cache")
                || name.starts_with("token_embd.") && self.config.tied_head
                || name.starts_with("output"))
    }

    /// Bytes of K and V one token of context adds (all layers), as the attention reads them.
    pub fn kv_bytes_per_token(&self) -> u64 {
        (2 * self.config.n_layers * self.config.n_kv_heads * self.config.head_dim * 4) as u64
    }

    /// Runs one step: appends every input's tokens to its sequence and returns, per input, the
    /// logits it asked for (`[rows, vocab]` row-major). All or nothing for the cache: when a
    /// sequence cannot take its tokens, no sequence changes.
    pub fn step(&mut self, inputs: &[SeqInput<'_>]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.step_layers(inputs, self.config.n_layers)
    }

    /// [`LlamaModel::step`] through the first `layers` layers only, then the final norm and the
    /// head: the self-speculative draft. It writes the K/V of those layers for the new tokens;
    /// the deeper layers' slots stay stale until a full step rewrites the same positions, so roll
    /// the tokens back ([`LlamaModel::truncate`]) before running them through the whole model.
    pub fn step_layers(&mut self, inputs: &[SeqInput<'_>], layers: usize) -> Result<Vec<Vec<f32>>, ModelError> {
        if layers == 0 || layers > self.config.n_layers {
            return Err(ModelError::Config(format!(
                "a step through {layers} layers: the model has {} (choose 1..={0})",
                self.config.n_layers
            )));
        }
        let vocab = self.config.vocab_size;
        for (i, input) in inputs.iter().enumerate() {
            if input.tokens.is_empty() {
                return Err(ModelError::EmptyInput { seq: input.seq });
            }
            if inputs[..i].iter().any(|o| o.seq == input.seq) {
                return Err(ModelError::DuplicateSequence { seq: input.seq });
            }
            if let Some(&id) = input.tokens.iter().find(|&&t| t as usize >= vocab) {
                return Err(ModelError::BadToken { id, vocab });
            }
        }
        // Reserve the slots of every input first; undo the ones done when one fails.
        let mut starts = Vec::with_capacity(inputs.len());
        for input in inputs {
            match self.cache.append(input.seq, input.tokens.len()) {
                Ok(range) => starts.push(range.start),
                Err(e) => {
                    for (done, _) in inputs.iter().zip(&starts) {
                        self.cache.truncate(done.seq, done.tokens.len())?;
                    }
                    return Err(e.into());
                }
            }
        }
        let result = self.run_step(inputs, &starts, layers);
        if result.is_err() {
            for input in inputs {
                self.cache.truncate(input.seq, input.tokens.len())?;
            }
        }
        result
    }

    /// The step's `q_len` and its lanes `(input, first token, tokens)`, in input order with a
    /// sequence's chunks in order, for inputs of `lens` new tokens.
    fn lanes(lens: &[usize]) -> (usize, Vec<(usize, usize, usize)>) {
        let q_len = lens.iter().copied().max().unwrap_or(1).clamp(1, MAX_Q_LEN as usize);
        let mut lanes = Vec::new();
        for (i, &n) in lens.iter().enumerate() {
            let mut at = 0;
            while at < n {
                let take = (n - at).min(q_len);
                lanes.push((i, at, take));
                at += take;
            }
        }
        (q_len, lanes)
    }

    /// Builds (and compiles) everything a step with inputs of `lens` new tokens runs, without
    /// running it, so that timing a step measures the step alone.
    pub fn prepare(&mut self, lens: &[usize]) -> Result<(), ModelError> {
        self.prepare_layers(lens, self.config.n_layers)
    }

    /// [`LlamaModel::prepare`] for [`LlamaModel::step_layers`].
    pub fn prepare_layers(&mut self, lens: &[usize], layers: usize) -> Result<(), ModelError> {
        let (q_len, lanes) = Self::lanes(lens);
        let per_pass = (self.options.max_step_tokens / q_len).max(1);
        for pass in lanes.chunks(per_pass) {
            self.step_launches(pass.len(), q_len, layers.clamp(1, self.config.n_layers))?;
            let rows = pass.len().min(HEAD_ROWS);
            self.head_launches(rows, true)?;
            self.head_launches(rows, false)?;
        }
        Ok(())
    }

    fn run_step(
        &mut self,
        inputs: &[SeqInput<'_>],
        starts: &[usize],
        layers: usize,
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let vocab = self.config.vocab_size;
        let lens: Vec<usize> = inputs.iter().map(|i| i.tokens.len()).collect();
        let (q_len, lanes) = Self::lanes(&lens);
        let mut out: Vec<Vec<f32>> = inputs
            .iter()
            .map(|i| Vec::with_capacity(vocab * if i.logits == Logits::All { i.tokens.len() } else { 1 }))
            .collect();
        let per_pass = (self.options.max_step_tokens / q_len).max(1);
        for pass in lanes.chunks(per_pass) {
            // Host metadata of the pass.
            let max_blocks = self.cache.max_blocks_per_seq();
            let mut rows: Vec<(usize, usize)> = Vec::new(); // (input, row of the pass)
            {
                let m = &self.meta;
                let (ids_i, pos_i, slots_i, bt_i, cl_i) = (m.ids, m.positions, m.slots, m.block_tables, m.context_lens);
                for (lane, &(i, at, take)) in pass.iter().enumerate() {
                    let input = &inputs[i];
                    let pad = q_len - take;
                    let base = lane * q_len;
                    for r in 0..q_len {
                        let (id, pos, slot) = if r < pad {
                            (0, 0, -1)
                        } else {
                            let t = at + r - pad;
                            let pos = starts[i] + t;
                            let slot = self.cache.slot(input.seq, pos)?.ok_or_else(|| {
                                ModelError::Internal(format!("{} has no slot for position {pos}", input.seq))
                            })?;
                            if input.logits == Logits::All || t + 1 == input.tokens.len() {
                                rows.push((i, base + r));
                            }
                            (input.tokens[t] as i32, pos as i32, slot as i32)
                        };
                        self.store.i32_mut(ids_i)?[base + r] = id;
                        self.store.i32_mut(pos_i)?[base + r] = pos;
                        self.store.i32_mut(slots_i)?[base + r] = slot;
                    }
                    let table = self.cache.block_table(input.seq)?;
                    let row = &mut self.store.i32_mut(bt_i)?[lane * max_blocks..(lane + 1) * max_blocks];
                    row.fill(-1);
                    for (dst, &b) in row.iter_mut().zip(table) {
                        *dst = b as i32;
                    }
                    self.store.i32_mut(cl_i)?[lane] = (starts[i] + at + take) as i32;
                }
            }
            let launches = self.step_launches(pass.len(), q_len, layers)?;
            self.run(&launches)?;
            // The output head, HEAD_ROWS rows at a time.
            for chunk in rows.chunks(HEAD_ROWS) {
                let contiguous = chunk.iter().enumerate().all(|(j, &(_, r))| r == j);
                if !contiguous {
                    let dim = self.config.dim;
                    let (xn, head_x) = (self.meta.xn, self.meta.head_x);
                    self.store.fetch(&self.device, xn)?;
                    for (j, &(_, r)) in chunk.iter().enumerate() {
                        let row: Vec<f32> = self.store.f32(xn)?[r * dim..(r + 1) * dim].to_vec();
                        self.store.f32_mut(head_x)?[j * dim..(j + 1) * dim].copy_from_slice(&row);
                    }
                }
                let head = self.head_launches(chunk.len(), contiguous)?;
                self.run(&head)?;
                self.store.fetch(&self.device, self.meta.logits)?;
                let logits = self.store.f32(self.meta.logits)?;
                for (j, &(i, _)) in chunk.iter().enumerate() {
                    out[i].extend_from_slice(&logits[j * vocab..(j + 1) * vocab]);
                }
            }
        }
        Ok(out)
    }

    /// Runs resolved launches on the device (on the CPU device's leader), after writing the
    /// buffers the host changed to a GPU.
    fn run(&mut self, launches: &[Resolved]) -> Result<(), ModelError> {
        self.upload()?;
        let device = self.device.clone();
        device.install(|| self.run_here(launches))
    }

    /// Writes the store buffers the host changed since the last launch to a GPU (nothing on the
    /// CPU).
    fn upload(&mut self) -> Result<(), ModelError> {
        let Store { bufs, memory, .. } = &mut self.store;
        Ok(memory.upload_dirty(&self.device, bufs)?)
    }

    fn run_here(&mut self, launches: &[Resolved]) -> Result<(), ModelError> {
        let Store { bufs, memory, .. } = &mut self.store;
        for launch in launches {
            memory.launch(&self.device, &launch.module, launch.grid, bufs, &launch.args)?;
        }
        Ok(())
    }

    /// The plan of (kernel, problem) with the provider's config, built and loaded once.
    fn built(&mut self, kernel: KernelId, problem: Args) -> Result<Arc<Built>, ModelError> {
        let key = (kernel, problem);
        if let Some(b) = self.plans.get(&key) {
            return Ok(b.clone());
        }
        let problem = &key.1;
        let choice = self.provider.choose(kernel, problem)?;
        let (config, num_warps) = self.device.split_config(&choice.config)?;
        let plan = kernel.kernel().plan(problem, &config)?;
        let modules = plan
            .launches
            .iter()
            .map(|l| self.device.load(l, num_warps).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let mut scratch = HashMap::new();
        for spec in plan.buffers.iter().filter(|b| b.role == Role::Scratch) {
            let name = format!("scratch:{kernel}:{problem}:{}", spec.name);
            scratch.insert(spec.name.clone(), self.store.add(&name, HostBuffer::zeros(spec.dtype, spec.len)));
        }
        self.chosen.push(ChosenConfig {
            kernel,
            problem: problem.clone(),
            config: choice.config.clone(),
            source: choice.source,
        });
        let built = Arc::new(Built { plan, modules, scratch });
        self.plans.insert(key, built.clone());
        Ok(built)
    }

    /// [`LlamaModel::emit_regions`] with every plan buffer bound to a whole store buffer.
    fn emit(
        &mut self,
        out: &mut Vec<Resolved>,
        kernel: KernelId,
        problem: Args,
        bind: &[(&str, &str)],
    ) -> Result<(), ModelError> {
        let bind: Vec<(&str, Region<'_>)> = bind.iter().map(|&(p, name)| (p, whole(name))).collect();
        self.emit_regions(out, kernel, problem, &bind)
    }

    /// Resolves every launch of (kernel, problem) with plan buffers bound to store regions by
    /// `bind` (plan name → region), and appends them to `out`. Checks dtypes and sizes
    /// (`CpuDevice::run_views` checks at each launch that no two views overlap). A scratch
    /// buffer that `bind` names is bound like any other (shared with the launches of other plans).
    fn emit_regions(
        &mut self,
        out: &mut Vec<Resolved>,
        kernel: KernelId,
        problem: Args,
        bind: &[(&str, Region<'_>)],
    ) -> Result<(), ModelError> {
        self.emit_regions_from(out, kernel, problem, bind, 0)
    }

    /// [`Self::emit_regions`] of the plan's launches from `first` on.
    fn emit_regions_from(
        &mut self,
        out: &mut Vec<Resolved>,
        kernel: KernelId,
        problem: Args,
        bind: &[(&str, Region<'_>)],
        first: usize,
    ) -> Result<(), ModelError> {
        let built = self.built(kernel, problem)?;
        for (launch, module) in built.plan.launches.iter().zip(&built.modules).skip(first) {
            let mut args = Vec::with_capacity(launch.args.len());
            for b in &launch.args {
                args.push(match b {
                    Binding::Scalar(s) => ViewArg::Scalar(*s),
                    Binding::Buffer(name) => {
                        let (index, region) = match (bind.iter().find(|(p, _)| p == name), built.scratch.get(name)) {
                            (Some(&(_, region)), _) => (self.store.index(region.name)?, region),
                            (None, Some(&i)) => (i, whole(name)),
                            (None, None) => {
                                return Err(ModelError::Internal(format!(
                                    "{kernel}: plan buffer `{name}` is not bound"
                                )))
                            }
                        };
                        let spec = built.plan.buffer(name).ok_or_else(|| {
                            ModelError::Internal(format!("{kernel}: launch binds undeclared buffer `{name}`"))
                        })?;
                        let have = &self.store.bufs[index];
                        // Caches and attention inputs are planned for capacity; the store's cache
                        // pool may differ from the attention problem's implied pool, whose blocks
                        // are addressed through the block tables only. Any other buffer bound
                        // whole is seen as the plan declares it (activations are sized for the
                        // longest step), so the kernel's bounds checks are the plan's.
                        let pool = name.ends_with("_cache");
                        let len = match region.len {
                            Some(len) => len,
                            None if pool => have.len(),
                            None => spec.len.min(have.len()),
                        };
                        if region.offset + len > have.len() {
                            return Err(ModelError::Internal(format!(
                                "{kernel}: `{name}` binds {len} elements at {} of `{}`, which has {}",
                                region.offset,
                                region.name,
                                have.len()
                            )));
                        }
                        if have.dtype() != spec.dtype || (!pool && len < spec.len) {
                            return Err(ModelError::Internal(format!(
                                "{kernel}: `{name}` needs {} × {}, the store has {} × {}",
                                spec.len,
                                spec.dtype,
                                len,
                                have.dtype()
                            )));
                        }
                        ViewArg::Buffer(View { buffer: index, offset: region.offset, len })
                    }
                });
            }
            check_resolved(module, launch.grid, &self.store.bufs, &args)?;
            out.push(Resolved { module: module.clone(), grid: launch.grid, args });
        }
        Ok(())
    }

    /// The rows of `projection` in its layer's weight matrix: (matrix, first row, rows, k) for
    /// this model's sizes.
    fn rows(&self, projection: Projection) -> (&'static str, usize, usize, usize) {
        let c = &self.config;
        let (dim, ffn, q_dim, kv_dim) = (c.dim, c.ffn_dim, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
        match projection {
            Projection::Q => ("attn_qkv", 0, q_dim, dim),
            Projection::K => ("attn_qkv", q_dim, kv_dim, dim),
            Projection::V => ("attn_qkv", q_dim + kv_dim, kv_dim, dim),
            Projection::Qkv => ("attn_qkv", 0, q_dim + 2 * kv_dim, dim),
            Projection::Output => ("attn_output", 0, dim, q_dim),
            Projection::Gate => ("ffn_gate_up", 0, ffn, dim),
            Projection::Up => ("ffn_gate_up", ffn, ffn, dim),
            Projection::GateUp => ("ffn_gate_up", 0, 2 * ffn, dim),
            Projection::Down => ("ffn_down", 0, dim, ffn),
        }
    }

    /// The activation region of `projection`'s output (and of Q / K / V, gate / up as inputs of
    /// the kernels after them) in a pass of `m` tokens: its `[m, n]` block of the fused buffer.
    fn output(&self, projection: Projection, m: usize) -> Region<'static> {
        let (matrix, row, n, _) = self.rows(projection);
        let buffer = match matrix {
            "attn_qkv" => "qkv",
            "ffn_gate_up" => "gate_up",
            "attn_output" => "o",
            _ => "ffn_out",
        };
        part(buffer, m * row, m * n)
    }

    /// The one place a linear layer becomes a launch: `dequant_gemm_w4` over `projection`'s rows
    /// of its layer's int4 matrix (a view of the fused weights), reading `x` and writing the
    /// projection's output region. The activation dtype of the GEMV is chosen here.
    ///
    /// With `x_ready`, the kernel just before has written `x` de-interleaved into the store's
    /// buffers of [`deinterleaved`] (see [`Self::takes_deinterleaved_x`]) and the GEMV runs
    /// without its own de-interleave launch.
    fn gemm(
        &mut self,
        out: &mut Vec<Resolved>,
        m: usize,
        layer: usize,
        projection: Projection,
        x: &str,
        x_ready: bool,
    ) -> Result<(), ModelError> {
        let (matrix, row, n, k) = self.rows(projection);
        let (problem, quant) = self.gemm_problem(m, layer, projection);
        let activations = self.gemv_activations(m);
        let name = format!("blk.{layer}.{matrix}.weight");
        let (w, scales, mins) = (format!("{name}.w"), format!("{name}.scales"), format!("{name}.mins"));
        let groups = k / GROUP;
        let mut bind = vec![
            ("x", whole(x)),
            ("w", part(&w, row * k / 2, n * k / 2)),
            ("scales", part(&scales, row * groups, n * groups)),
            ("y", self.output(projection, m)),
        ];
        if quant == layout::Quant::Asym {
            bind.push(("mins", part(&mins, row * groups, n * groups)));
        }
        if x_ready {
            let ready = deinterleaved(x)
                .ok_or_else(|| ModelError::Internal(format!("no kernel writes `{x}` de-interleaved")))?;
            bind.extend(ready.iter().map(|&(p, name)| (p, whole(name))));
            return self.emit_regions_from(out, KernelId::DequantGemmW4, problem, &bind, 1);
        }
        if activations == GemvActivations::F32 {
            let weights_lhs =
                self.provider.choose(KernelId::DequantGemmW4, &problem)?.config.get("weights_lhs") == Some("1");
            if !weights_lhs {
                return self.emit_regions(out, KernelId::DequantGemmW4, problem, &bind);
            }
            // As with the int8 buffers below: the launch just before is the GEMM that
            // transposed this same `x` (K and V after Q, up after gate), so only the GEMM runs.
            bind.push((X_T.0, whole(X_T.1)));
            let first = usize::from(self.transposed.as_ref() == Some(&(x.to_string(), out.len())));
            self.emit_regions_from(out, KernelId::DequantGemmW4, problem, &bind, first)?;
            self.transposed = Some((x.to_string(), out.len()));
            return Ok(());
        }
        // The plan's first launch quantizes `x` into the shared `X_I8` buffers; when the launch
        // just before is the GEMV that quantized this same `x` (K and V after Q, up after gate),
        // nothing can have changed it since, and only the GEMV launch is needed.
        let two = activations == GemvActivations::I8x2;
        bind.extend(X_I8.iter().filter(|&&(p, _)| two || p != "xr").map(|&(p, name)| (p, whole(name))));
        let first = usize::from(self.quantized.as_ref() == Some(&(x.to_string(), out.len())));
        self.emit_regions_from(out, KernelId::DequantGemmW4, problem, &bind, first)?;
        self.quantized = Some((x.to_string(), out.len()));
        Ok(())
    }

    /// The `dequant_gemm_w4` problem of `projection` in `layer` for `m` tokens, and the
    /// quantization of its weights.
    fn gemm_problem(&self, m: usize, layer: usize, projection: Projection) -> (Args, layout::Quant) {
        let (matrix, _, n, k) = self.rows(projection);
        let quants = self.layers[layer];
        let quant = match matrix {
            "attn_qkv" => quants.qkv,
            "attn_output" => quants.output,
            "ffn_gate_up" => quants.gate_up,
            _ => quants.down,
        };
        let mut problem = Args::new()
            .with("m", m)
            .with("n", n)
            .with("k", k)
            .with("group", GROUP)
            .with("act", "f32")
            .with("quant", quant);
        let activations = self.gemv_activations(m);
        if activations != GemvActivations::F32 {
            problem = problem.with("xq", activations);
        }
        (problem, quant)
    }

    /// Whether `projection`'s GEMV for `m` tokens is the one-token row loop, whose plan begins
    /// with a launch de-interleaving x (f32 activations, `row_loop > 0` in the provider's
    /// config), so that a norm writing x can write it de-interleaved instead.
    fn takes_deinterleaved_x(&self, m: usize, layer: usize, projection: Projection) -> Result<bool, ModelError> {
        let (_, _, _, k) = self.rows(projection);
        if m != 1 || self.gemv_activations(m) != GemvActivations::F32 || !k.is_multiple_of(XD_BLOCK) {
            return Ok(false);
        }
        let (problem, _) = self.gemm_problem(m, layer, projection);
        let choice = self.provider.choose(KernelId::DequantGemmW4, &problem)?;
        Ok(choice.config.get("row_loop").is_some_and(|r| r != "0"))
    }

    /// How the int4 GEMVs of a step of `m` tokens take their activations: the model's
    /// [`ModelOptions::gemv_activations`] for decoding steps (at most
    /// [`INT8_ACTIVATION_MAX_TOKENS`] tokens, where the int8 path's one-row GEMV reads the
    /// weights once per token), f32 otherwise.
    pub fn gemv_activations(&self, m: usize) -> GemvActivations {
        if m <= INT8_ACTIVATION_MAX_TOKENS {
            self.options.gemv_activations
        } else {
            GemvActivations::F32
        }
    }

    /// The norm of `x` (plus the residual stream when `fused`) into `xn`, and with
    /// `deinterleave` also into [`XN_DEINTERLEAVED`].
    fn rmsnorm(
        &mut self,
        out: &mut Vec<Resolved>,
        m: usize,
        x: &str,
        w: &str,
        fused: bool,
        deinterleave: bool,
    ) -> Result<(), ModelError> {
        let mut problem = Args::new()
            .with("tokens", m)
            .with("dim", self.config.dim)
            .with("dtype", "f32")
            .with("eps", eps_key(self.config.rms_eps))
            .with("fused", u32::from(fused));
        let mut bind = vec![("x", x), ("w", w), ("out", "xn")];
        if fused {
            bind.push(("residual", "resid"));
        }
        if deinterleave {
            problem = problem.with("deinterleave", 1);
            bind.extend(XN_DEINTERLEAVED);
        }
        self.emit(out, KernelId::Rmsnorm, problem, &bind)
    }

    /// The launches of a pass of `lanes` lanes of `q_len` tokens through the first `layers`
    /// layers, resolved once per shape.
    fn step_launches(&mut self, lanes: usize, q_len: usize, layers: usize) -> Result<Arc<Vec<Resolved>>, ModelError> {
        if let Some(l) = self.steps.get(&(lanes, q_len, layers)) {
            return Ok(l.clone());
        }
        let c = self.config.clone();
        let m = lanes * q_len;
        let mut out = Vec::new();
        self.quantized = None;
        self.transposed = None;
        let embedding =
            Args::new().with("tokens", m).with("vocab", c.vocab_size).with("dim", c.dim).with("dtype", "f32");
        let bind = [("ids", "ids"), ("qs", "token_embd.qs"), ("scales", "token_embd.scales"), ("out", "resid")];
        self.emit(&mut out, KernelId::Embedding, embedding, &bind)?;
        for l in 0..layers.min(c.n_layers) {
            let attn_norm = format!("blk.{l}.attn_norm.weight");
            let one_gemv = m == 1 && self.options.fused_projections;
            let qkv_ready = one_gemv && self.takes_deinterleaved_x(m, l, Projection::Qkv)?;
            if l == 0 {
                self.rmsnorm(&mut out, m, "resid", &attn_norm, false, qkv_ready)?;
            } else {
                self.rmsnorm(&mut out, m, "ffn_out", &attn_norm, true, qkv_ready)?;
            }
            // One token: Q, K and V in one GEMV (its output row is the three blocks). More
            // tokens: three GEMMs over row views of the fused weights, each writing its dense
            // `[m, n]` block, which is what RoPE, the append and attention read.
            if one_gemv {
                self.gemm(&mut out, m, l, Projection::Qkv, "xn", qkv_ready)?;
            } else {
                for projection in [Projection::Q, Projection::K, Projection::V] {
                    self.gemm(&mut out, m, l, projection, "xn", false)?;
                }
            }
            let (q, k, v) =
                (self.output(Projection::Q, m), self.output(Projection::K, m), self.output(Projection::V, m));
            let rope = Args::new()
                .with("tokens", m)
                .with("heads", c.n_heads)
                .with("kv_heads", c.n_kv_heads)
                .with("head_dim", c.head_dim)
                .with("max_pos", self.options.max_seq_len)
                .with("base", c.rope_base)
                .with("variant", "adjacent")
                .with("dtype", "f32");
            let bind = [
                ("q", q),
                ("k", k),
                ("positions", whole("positions")),
                ("cos", whole("rope.cos")),
                ("sin", whole("rope.sin")),
            ];
            self.emit_regions(&mut out, KernelId::Rope, rope, &bind)?;
            let (k_cache, v_cache) = (format!("blk.{l}.k_cache"), format!("blk.{l}.v_cache"));
            let append = Args::new()
                .with("tokens", m)
                .with("kv_heads", c.n_kv_heads)
                .with("head_dim", c.head_dim)
                .with("block", self.options.block_size)
                .with("n_blocks", self.cache.n_blocks())
                .with("dtype", "f32");
            let bind = [
                ("k_new", k),
                ("v_new", v),
                ("slot_mapping", whole("slots")),
                ("k_cache", whole(&k_cache)),
                ("v_cache", whole(&v_cache)),
            ];
            self.emit_regions(&mut out, KernelId::PagedKvAppend, append, &bind)?;
            let attention = Args::new()
                .with("batch", lanes)
                .with("q_len", q_len)
                .with("ctx", self.options.max_seq_len.max(q_len))
                .with("heads", c.n_heads)
                .with("kv_heads", c.n_kv_heads)
                .with("head_dim", c.head_dim)
                .with("block", self.options.block_size)
                .with("dtype", "f32")
                .with("q_dtype", "f32");
            let bind = [
                ("q", q),
                ("k_cache", whole(&k_cache)),
                ("v_cache", whole(&v_cache)),
                ("block_tables", whole("block_tables")),
                ("context_lens", whole("context_lens")),
                ("out", whole("attn")),
            ];
            self.emit_regions(&mut out, KernelId::AttentionDecodePaged, attention, &bind)?;
            self.gemm(&mut out, m, l, Projection::Output, "attn", false)?;
            let gate_up_ready = one_gemv && self.takes_deinterleaved_x(m, l, Projection::GateUp)?;
            self.rmsnorm(&mut out, m, "o", &format!("blk.{l}.ffn_norm.weight"), true, gate_up_ready)?;
            if one_gemv {
                self.gemm(&mut out, m, l, Projection::GateUp, "xn", gate_up_ready)?;
            } else {
                self.gemm(&mut out, m, l, Projection::Gate, "xn", false)?;
                self.gemm(&mut out, m, l, Projection::Up, "xn", false)?;
            }
            let down_ready = self.takes_deinterleaved_x(m, l, Projection::Down)?;
            let mut silu = Args::new().with("tokens", m).with("dim", c.ffn_dim).with("dtype", "f32");
            let mut bind = vec![
                ("gate", self.output(Projection::Gate, m)),
                ("up", self.output(Projection::Up, m)),
                ("out", whole("act")),
            ];
            if down_ready {
                silu = silu.with("deinterleave", 1);
                bind.extend(ACT_DEINTERLEAVED.iter().map(|&(p, name)| (p, whole(name))));
            }
            self.emit_regions(&mut out, KernelId::SiluMul, silu, &bind)?;
            self.gemm(&mut out, m, l, Projection::Down, "act", down_ready)?;
        }
        if c.n_layers == 0 {
            return Err(ModelError::Config("the model has no layers".into()));
        }
        self.rmsnorm(&mut out, m, "ffn_out", "output_norm.weight", true, false)?;
        let launches = Arc::new(out);
        self.steps.insert((lanes, q_len, layers), launches.clone());
        Ok(launches)
    }

    /// The output head over `rows` rows, read from `xn` directly or from the gathered `head_x`.
    fn head_launches(&mut self, rows: usize, from_xn: bool) -> Result<Arc<Vec<Resolved>>, ModelError> {
        if let Some(l) = self.heads.get(&(rows, from_xn)) {
            return Ok(l.clone());
        }
        let c = &self.config;
        let mut problem =
            Args::new().with("m", rows).with("n", c.vocab_size).with("k", c.dim).with("act", "f32").with("out", "f32");
        let prefix = if c.tied_head { "token_embd" } else { "output" };
        // The integer path reads the weights once per row (a GEMV per row), the f32 path once
        // for up to 16 rows: only one row (a decode token) takes the integer path.
        let qs = if self.options.head_activations != ActQuant::F32 && rows == 1 {
            problem = problem.with("xq", self.options.head_activations);
            format!("{prefix}.qs_u8")
        } else {
            format!("{prefix}.qs")
        };
        let (qs, scales) = (qs.as_str(), format!("{prefix}.scales"));
        let scales = scales.as_str();
        let x = if from_xn { "xn" } else { "head_x" };
        let mut out = Vec::new();
        self.emit(&mut out, KernelId::Q8Gemv, problem, &[("x", x), ("qs", qs), ("scales", scales), ("y", "logits")])?;
        let launches = Arc::new(out);
        self.heads.insert((rows, from_xn), launches.clone());
        Ok(launches)
    }
}

/// The norm's epsilon as its problem key: the kernel takes it as an f32, so the key is the
/// shortest decimal of that f32. GGUF stores 1e-5 as the nearest f32, which widens to
/// 9.999999747378752e-6 and would never match a tuning record of `eps=0.00001`; both are the
/// same f32, so the kernel computes the same either way.
fn eps_key(eps: f64) -> f64 {
    let narrow = eps as f32;
    narrow.to_string().parse().unwrap_or(eps)
}

fn check_config(c: &LlamaConfig) -> Result<(), ModelError> {
    let bad = |m: String| Err(ModelError::Config(m));
    if c.n_layers == 0 || c.dim == 0 || c.n_heads == 0 || c.n_kv_heads == 0 || c.vocab_size == 0 {
        return bad(format!("layers, width, heads, KV heads and vocabulary must be non-zero: {c:?}"));
    }
    if c.n_heads * c.head_dim != c.dim {
        return bad(format!("heads {} × head_dim {} is not the width {}", c.n_heads, c.head_dim, c.dim));
    }
    if !c.n_heads.is_multiple_of(c.n_kv_heads) {
        return bad(format!("heads {} is not a multiple of KV heads {}", c.n_heads, c.n_kv_heads));
    }
    if !matches!(c.head_dim, 64 | 128) {
        return bad(format!("head_dim {} is not 64 or 128, the head sizes the attention kernels support", c.head_dim));
    }
    if !c.dim.is_multiple_of(32) || !c.ffn_dim.is_multiple_of(32) {
        return bad(format!(
            "width {} and FFN width {} must be multiples of 32 (the quantization group)",
            c.dim, c.ffn_dim
        ));
    }
    Ok(())
}

fn shape_err(t: &RawTensor, expected: Vec<usize>) -> ModelError {
    ModelError::Shape { name: t.name.clone(), got: t.shape.clone(), expected }
}

/// A `[len]` vector of f32 (norm weights).
fn vector(t: &RawTensor, len: usize) -> Result<Vec<f32>, ModelError> {
    if t.shape.iter().product::<usize>() != len || t.shape.first() != Some(&len) {
        return Err(shape_err(t, vec![len]));
    }
    float_values(t).ok_or_else(|| ModelError::Unsupported {
        name: t.name.clone(),
        kind: t.data.kind(),
        fix: "norm weights must be F32, F16 or BF16; re-export the model with float norms".into(),
    })
}

fn float_values(t: &RawTensor) -> Option<Vec<f32>> {
    match &t.data {
        TensorData::F32(v) => Some(v.clone()),
        TensorData::F16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
        TensorData::BF16(v) => Some(v.iter().map(|x| x.to_f32()).collect()),
        TensorData::Q4_0(_) | TensorData::Q4_1(_) | TensorData::Q8_0(_) => None,
    }
}

fn check_matrix(t: &RawTensor, rows: usize, cols: usize) -> Result<(), ModelError> {
    if t.shape != [cols, rows] {
        return Err(shape_err(t, vec![cols, rows]));
    }
    Ok(())
}

/// A `[rows, cols]` matrix (GGUF shape `[cols, rows]`) in kiln's Q8_0 layout.
fn q8_matrix(t: &RawTensor, rows: usize, cols: usize) -> Result<Q8Matrix, ModelError> {
    check_matrix(t, rows, cols)?;
    let q8 = |bytes: &[u8]| {
        Q8Matrix::from_gguf(bytes, rows, cols).map_err(|source| ModelError::Q8 { name: t.name.clone(), source })
    };
    match &t.data {
        TensorData::Q8_0(bytes) => q8(bytes),
        TensorData::Q4_0(_) | TensorData::Q4_1(_) => Err(ModelError::Unsupported {
            name: t.name.clone(),
            kind: t.data.kind(),
            fix: "the embedding and output head must be Q8_0 or float; re-quantize with a Q8_0 token embedding \
                  (llama.cpp's default for Q4 files)"
                .into(),
        }),
        _ => {
            let values = float_values(t).ok_or_else(|| ModelError::Internal("float tensor without values".into()))?;
            if !cols.is_multiple_of(Q8_BLOCK) {
                return Err(ModelError::Q8 { name: t.name.clone(), source: Q8FormatError::RaggedRow { cols } });
            }
            q8(&quantize_q8_0(&values))
        }
    }
}

/// GGUF Q8_0 blocks of `values` (whole blocks of 32): `d = amax / 127`, `q = round(x / d)`.
pub fn quantize_q8_0(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / Q8_BLOCK * GGUF_Q8_0_BLOCK_BYTES);
    for block in values.chunks(Q8_BLOCK) {
        let amax = block.iter().fold(0.0f32, |a, x| a.max(x.abs()));
        let d = half::f16::from_f32(amax / 127.0);
        let inv = if d.to_f32() > 0.0 { 1.0 / d.to_f32() } else { 0.0 };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend(block.iter().map(|&x| (x * inv).round().clamp(-127.0, 127.0) as i8 as u8));
    }
    out
}

/// GGUF Q4_1 blocks of `values` (whole blocks of 32): `d = (max − min) / 15`, `m = min`,
/// `q = round((x − m) / d)`.
pub fn quantize_q4_1(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() / 32 * 20);
    for block in values.chunks(32) {
        let min = block.iter().copied().fold(f32::INFINITY, f32::min);
        let max = block.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let d = half::f16::from_f32((max - min) / 15.0);
        let m = half::f16::from_f32(min);
        let inv = if d.to_f32() > 0.0 { 1.0 / d.to_f32() } else { 0.0 };
        out.extend_from_slice(&d.to_le_bytes());
        out.extend_from_slice(&m.to_le_bytes());
        let q: Vec<u8> = block.iter().map(|&x| ((x - m.to_f32()) * inv).round().clamp(0.0, 15.0) as u8).collect();
        // ggml order: byte j holds element j (low nibble) and element j + 16 (high nibble).
        out.extend((0..16).map(|j| q[j] | (q[j + 16] << 4)));
    }
    out
}

/// Weight matrices with the same `k` and group stacked along n (the rows of the first, then the
/// second's, ...), as one matrix: the fused Q/K/V and gate/up projections. When the parts differ
/// in format, the symmetric ones become asymmetric, exactly: `(q − 8)·s = q·s + min` with
/// `min = −8·s`, a power-of-two multiple that f16 holds exactly unless it overflows.
fn concat_rows(parts: Vec<(String, W4Weights)>) -> Result<W4Weights, ModelError> {
    let mut parts = parts;
    if parts.len() == 1 {
        if let Some((_, w)) = parts.pop() {
            return Ok(w);
        }
    }
    let Some((_, first)) = parts.first() else {
        return Err(ModelError::Internal("a fused matrix of no tensors".into()));
    };
    let (k, group) = (first.k, first.group);
    let asym = parts.iter().any(|(_, w)| w.mins.is_some());
    let n: usize = parts.iter().map(|(_, w)| w.n).sum();
    let mut out = W4Weights {
        n,
        k,
        group,
        packed: Vec::with_capacity(n * k / 2),
        scales: Vec::with_capacity(n * k / group),
        mins: asym.then(|| Vec::with_capacity(n * k / group)),
    };
    for (name, w) in parts {
        if w.k != k || w.group != group {
            return Err(ModelError::Internal(format!(
                "`{name}` (k = {}, group {}) cannot be fused with a matrix of k = {k}, group {group}",
                w.k, w.group
            )));
        }
        if let Some(mins) = &mut out.mins {
            match &w.mins {
                Some(m) => mins.extend_from_slice(m),
                None => {
                    for &s in &w.scales {
                        let min = half::f16::from_f32(-8.0 * s.to_f32());
                        if !min.is_finite() {
                            return Err(ModelError::Unsupported {
                                name,
                                kind: "Q4_0",
                                fix: format!(
                                    "a scale of {s} overflows f16 as the asymmetric minimum −8·scale that fusing \
                                     with Q4_1 projections needs; quantize Q, K and V (gate and up) alike"
                                ),
                            });
                        }
                        mins.push(min);
                    }
                }
            }
        }
        out.packed.extend_from_slice(&w.packed);
        out.scales.extend_from_slice(&w.scales);
    }
    Ok(out)
}

/// A linear layer `W [n, k]` (GGUF shape `[k, n]`) in kiln's int4 layout.
fn w4_weights(t: &RawTensor, n: usize, k: usize) -> Result<W4Weights, ModelError> {
    check_matrix(t, n, k)?;
    let layout_err = |source| ModelError::Layout { name: t.name.clone(), source };
    match &t.data {
        TensorData::Q4_1(bytes) => layout::from_gguf_q4_1(bytes, n, k).map_err(layout_err),
        TensorData::Q4_0(bytes) => layout::from_gguf_q4_0(bytes, n, k).map_err(layout_err),
        TensorData::Q8_0(bytes) => {
            let q =
                Q8Matrix::from_gguf(bytes, n, k).map_err(|source| ModelError::Q8 { name: t.name.clone(), source })?;
            let values: Vec<f32> =
                q.qs.iter().enumerate().map(|(i, &v)| f32::from(v) * q.scales[i / Q8_BLOCK].to_f32()).collect();
            layout::from_gguf_q4_1(&quantize_q4_1(&values), n, k).map_err(layout_err)
        }
        TensorData::F32(_) | TensorData::F16(_) | TensorData::BF16(_) => {
            if !k.is_multiple_of(32) {
                return Err(shape_err(t, vec![k.next_multiple_of(32), n]));
            }
            let values = float_values(t).ok_or_else(|| ModelError::Internal("float tensor without values".into()))?;
            layout::from_gguf_q4_1(&quantize_q4_1(&values), n, k).map_err(layout_err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::eps_key;

    #[test]
    fn eps_keys_are_the_shortest_decimal_of_the_f32() {
        assert_eq!(eps_key(f64::from(1e-5f32)), 1e-5);
        assert_eq!(eps_key(f64::from(1e-6f32)), 1e-6);
        assert_eq!(eps_key(1e-5), 1e-5);
        // The kernel sees the same f32 either way.
        for eps in [1e-5f32, 1e-6, 3.3e-7, 0.01] {
            assert_eq!(eps_key(f64::from(eps)) as f32, eps);
        }
    }
}
