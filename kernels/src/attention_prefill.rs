//! `attention_prefill`: causal flash attention over a batch of prompts of different lengths, with
//! an online softmax over K/V tiles and grouped-query attention (GQA).
//!
//! # Layout
//!
//! Tokens are packed as in FlashAttention's varlen API: the sequences of the batch lie one after
//! another, with no padding, and `cu_seqlens` says where each starts.
//!
//! | buffer       | dtype          | shape                              | role   |
//! |--------------|----------------|------------------------------------|--------|
//! | `q`          | `dtype`        | `[total_tokens, heads, head_dim]`    | input  |
//! | `k`          | `dtype`        | `[total_tokens, kv_heads, head_dim]` | input  |
//! | `v`          | `dtype`        | `[total_tokens, kv_heads, head_dim]` | input  |
//! | `cu_seqlens` | `i32`          | `[batch + 1]`, prefix sums of the lengths, `cu_seqlens[0] = 0` | input |
//! | `o`          | `dtype`        | `[total_tokens, heads, head_dim]`    | output |
//!
//! All row-major; `dtype` is f16 (default) or f32. Token `t` of a sequence (its `t`-th token,
//! counting from 0) attends to tokens `0..=t` of the same sequence, with scale `1/sqrt(head_dim)`;
//! query head `h` reads KV head `h / (heads / kv_heads)`.
//!
//! # Sequence lengths
//!
//! Buffer sizes are fixed when planning, so the problem derives the lengths from its shape keys:
//! sequence `b` has length `seq − ⌊b · seq / (2 · batch)⌋`. Sequence 0 is the longest (`seq`), the
//! others shrink evenly down to just over `seq / 2`, so every length is at least 1 and a batch
//! mixes lengths. The kernel itself reads the lengths from `cu_seqlens` at run time: the IR does
//! not depend on them, only the grid (through `seq`) and the buffer sizes do.
//!
//! # Program
//!
//! Grid `(⌈seq / block_m⌉, heads, batch)`. Program `(i, h, b)` owns query rows
//! `i·block_m .. (i+1)·block_m` of sequence `b`, head `h`; a program whose rows start at or past
//! the sequence's length runs no loop iteration and stores nothing. It loads its q tile
//! `[block_m, head_dim]` once and walks K/V tiles of `block_n` keys from key 0 up to the causal
//! limit of its block, `min(len, (i+1)·block_m)`, so tiles entirely above the diagonal are never
//! loaded. Per tile: the kᵀ tile `[head_dim, block_n]` is loaded directly with transposed offsets;
//! `s = q·kᵀ` in f32 times `log2(e)/sqrt(head_dim)` (so `exp2` gives the softmax's `e^x`); keys
//! past the query (causal) or past the sequence are set to −inf; the running row maximum `m`, sum
//! `l` and accumulator `acc` are rescaled by `exp2(m_old − m_new)`. At the end `o = acc / l`.
//!
//! Key 0 is never masked for any row, so after the first tile every row's maximum is finite and
//! no `−inf − (−inf)` NaN can arise.
//!
//! # Numerics
//!
//! Scores, `m`, `l` and `acc` are f32 (dots accumulate in f32). As flash attention does, the
//! probabilities `p` are rounded to V's dtype for the `p·V` dot (f16 for an f16 problem; for f32
//! they stay f32), while `l` sums the unrounded f32 `p`. The output is rounded once to `dtype`.

use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::Cost;
use crate::kernel::{default_tolerance, Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::{ensure, KernelError};
use kiln_ir::interp::HostBuffer;
use kiln_ir::{DType, KernelBuilder};

const NAME: &str = "attention_prefill";

/// Head dims the kernel supports (the q/k/v tiles are `head_dim` wide, a static shape).
const HEAD_DIMS: [u32; 2] = [64, 128];

/// Values of both block knobs.
const BLOCKS: [u32; 3] = [16, 32, 64];

/// Grid y and z (heads, batch) must stay within CUDA's limit.
const MAX_GRID_YZ: u32 = 65_535;

#[derive(Clone, Debug, PartialEq)]
pub struct AttentionPrefillProblem {
    /// Number of sequences.
    pub batch: u32,
    /// Length of the longest sequence (sequence 0); see the module doc for the others.
    pub seq: u32,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads; `heads` is a multiple of it.
    pub kv_heads: u32,
    /// 64 or 128.
    pub head_dim: u32,
    /// Dtype of q, k, v and o: f16 (default) or f32.
    pub dtype: DType,
}

impl AttentionPrefillProblem {
    /// The length of each sequence: `seq − ⌊b · seq / (2 · batch)⌋` for sequence `b`.
    pub fn seq_lens(&self) -> Vec<u32> {
        let (seq, batch) = (u64::from(self.seq), u64::from(self.batch));
        (0..batch).map(|b| (seq - b * seq / (2 * batch)) as u32).collect()
    }

    /// `cu_seqlens`: `[0, len0, len0 + len1, ...]`.
    pub fn cu_seqlens(&self) -> Vec<u64> {
        let mut cu = vec![0u64];
        for len in self.seq_lens() {
            cu.push(cu.last().copied().unwrap_or(0) + u64::from(len));
        }
        cu
    }

    pub fn total_tokens(&self) -> u64 {
        self.cu_seqlens().last().copied().unwrap_or(0)
    }

    /// Heads sharing one KV head.
    fn group(&self) -> u32 {
        self.heads / self.kv_heads
    }
}

impl Problem for AttentionPrefillProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let p = AttentionPrefillProblem {
            batch: r.get("batch")?,
            seq: r.get("seq")?,
            heads: r.get("heads")?,
            kv_heads: r.get("kv_heads")?,
            head_dim: r.get("head_dim")?,
            dtype: parse_dtype(NAME, "dtype", &r.get_or("dtype", "f16".to_string())?, &[DType::F16, DType::F32])?,
        };
        r.finish()?;
        ensure(NAME, matches!(p.dtype, DType::F16 | DType::F32), || {
            format!("dtype `{}` is not one of f16, f32", p.dtype)
        })?;
        ensure(NAME, p.batch >= 1, || "batch must be at least 1".into())?;
        ensure(NAME, p.seq >= 1, || "seq must be at least 1".into())?;
        ensure(NAME, p.heads >= 1 && p.kv_heads >= 1, || "heads and kv_heads must be at least 1".into())?;
        ensure(NAME, p.heads.is_multiple_of(p.kv_heads), || {
            format!("heads = {} is not a multiple of kv_heads = {}", p.heads, p.kv_heads)
        })?;
        ensure(NAME, HEAD_DIMS.contains(&p.head_dim), || {
            format!("head_dim = {} is not one of {HEAD_DIMS:?}", p.head_dim)
        })?;
        ensure(NAME, p.heads <= MAX_GRID_YZ, || format!("heads = {} exceeds the grid limit {MAX_GRID_YZ}", p.heads))?;
        ensure(NAME, p.batch <= MAX_GRID_YZ, || format!("batch = {} exceeds the grid limit {MAX_GRID_YZ}", p.batch))?;
        // Offsets are i32 element indices into q and o, the largest buffers.
        let elements = p.total_tokens() * u64::from(p.heads) * u64::from(p.head_dim);
        ensure(NAME, elements <= i32::MAX as u64, || {
            format!("q holds {elements} elements, more than i32 offsets reach ({})", i32::MAX)
        })?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        Args::new()
            .with("batch", self.batch)
            .with("seq", self.seq)
            .with("heads", self.heads)
            .with("kv_heads", self.kv_heads)
            .with("head_dim", self.head_dim)
            .with("dtype", self.dtype)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttentionPrefillConfig {
    /// Query rows per program.
    pub block_m: u32,
    /// Keys per K/V tile of the inner loop.
    pub block_n: u32,
}

impl Config for AttentionPrefillConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c =
            AttentionPrefillConfig { block_m: r.one_of("block_m", &BLOCKS)?, block_n: r.one_of("block_n", &BLOCKS)? };
        r.finish()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("block_m", self.block_m).with("block_n", self.block_n)
    }
}

/// The smallest block covering `seq` rows (the largest block if none does): blocks beyond it
/// only mask work away.
fn covering_block(seq: u32) -> u32 {
    BLOCKS.into_iter().find(|&b| b >= seq).unwrap_or(BLOCKS[BLOCKS.len() - 1])
}

/// The largest tile a program holds: q `[block_m, head_dim]`, kᵀ / v `[head_dim, block_n]`, or
/// the scores `[block_m, block_n]`.
fn largest_tile(p: &AttentionPrefillProblem, c: &AttentionPrefillConfig) -> u64 {
    let (m, n, d) = (u64::from(c.block_m), u64::from(c.block_n), u64::from(p.head_dim));
    (m * d).max(n * d).max(m * n)
}

pub struct AttentionPrefill;

impl TileKernel for AttentionPrefill {
    type Problem = AttentionPrefillProblem;
    type Config = AttentionPrefillConfig;

    fn id(&self) -> KernelId {
        KernelId::AttentionPrefill
    }

    fn example_problem(&self) -> Args {
        // SmolLM2-135M's attention: 9 query heads over 3 KV heads of 64.
        Args::new()
            .with("batch", 2)
            .with("seq", 40)
            .with("heads", 9)
            .with("kv_heads", 3)
            .with("head_dim", 64)
            .with("dtype", "f16")
    }

    fn knobs(&self) -> Vec<Knob> {
        let values = BLOCKS.map(i64::from).to_vec();
        vec![
            Knob { name: "block_m", values: values.clone(), help: "query rows per program" },
            Knob { name: "block_n", values, help: "keys per K/V tile of the inner loop" },
        ]
    }

    fn default_config(&self, p: &AttentionPrefillProblem) -> AttentionPrefillConfig {
        let cover = covering_block(p.seq);
        AttentionPrefillConfig { block_m: cover.min(64), block_n: cover.min(32) }
    }

    fn space(&self, p: &AttentionPrefillProblem, limits: &SpaceLimits) -> Vec<AttentionPrefillConfig> {
        let cover = covering_block(p.seq);
        let mut space = Vec::new();
        for block_m in BLOCKS.into_iter().filter(|&b| b <= cover) {
            for block_n in BLOCKS.into_iter().filter(|&b| b <= cover) {
                let c = AttentionPrefillConfig { block_m, block_n };
                if largest_tile(p, &c) <= limits.max_tile_elements {
                    space.push(c);
                }
            }
        }
        let default = self.default_config(p);
        if !space.contains(&default) {
            space.push(default);
        }
        space
    }

    fn plan(&self, p: &AttentionPrefillProblem, c: &AttentionPrefillConfig) -> Result<Plan, KernelError> {
        let limit = SpaceLimits::default().max_tile_elements;
        ensure(NAME, largest_tile(p, c) <= limit, || {
            format!(
                "block_m = {}, block_n = {} give a tile of {} elements, over {limit}",
                c.block_m,
                c.block_n,
                largest_tile(p, c)
            )
        })?;
        let grid_x = p.seq.div_ceil(c.block_m);
        let kernel = build(p, c)?;

        let total = p.total_tokens() as usize;
        let (heads, kv_heads, d) = (p.heads as usize, p.kv_heads as usize, p.head_dim as usize);
        let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
        Ok(Plan {
            buffers: vec![
                spec("q", p.dtype, total * heads * d, Role::Input),
                spec("k", p.dtype, total * kv_heads * d, Role::Input),
                spec("v", p.dtype, total * kv_heads * d, Role::Input),
                spec("cu_seqlens", DType::I32, p.batch as usize + 1, Role::Input),
                spec("o", p.dtype, total * heads * d, Role::Output),
            ],
            launches: vec![Launch {
                kernel,
                grid: [grid_x, p.heads, p.batch],
                args: vec![buf("q"), buf("k"), buf("v"), buf("cu_seqlens"), buf("o")],
            }],
        })
    }

    fn inputs(&self, p: &AttentionPrefillProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let total = p.total_tokens() as usize;
        let (q_len, kv_len) = (total * (p.heads * p.head_dim) as usize, total * (p.kv_heads * p.head_dim) as usize);
        let cu: Vec<f64> = p.cu_seqlens().into_iter().map(|x| x as f64).collect();
        // q is wider than k so that scores spread over a few units and the softmax is neither
        // flat nor one-hot: the running maximum then changes between tiles.
        Buffers::from([
            ("q".to_string(), random::uniform(&mut rng, p.dtype, q_len, -3.0, 3.0)),
            ("k".to_string(), random::uniform(&mut rng, p.dtype, kv_len, -1.0, 1.0)),
            ("v".to_string(), random::uniform(&mut rng, p.dtype, kv_len, -1.0, 1.0)),
            ("cu_seqlens".to_string(), HostBuffer::from_f64(DType::I32, &cu)),
        ])
    }

    fn reference(&self, p: &AttentionPrefillProblem, inputs: &Buffers) -> Reference {
        let (q, k, v) = (inputs["q"].to_f64(), inputs["k"].to_f64(), inputs["v"].to_f64());
        let cu: Vec<usize> = inputs["cu_seqlens"].to_f64().into_iter().map(|x| x as usize).collect();
        let (heads, kv_heads, d) = (p.heads as usize, p.kv_heads as usize, p.head_dim as usize);
        let group = heads / kv_heads;
        let scale = 1.0 / (d as f64).sqrt();
        let mut o = vec![0.0; q.len()];
        for seq in cu.windows(2) {
            let (start, end) = (seq[0], seq[1]);
            for h in 0..heads {
                let kvh = h / group;
                for t in start..end {
                    let qrow = &q[(t * heads + h) * d..][..d];
                    // Scores against keys start..=t of this sequence, then a max-shifted softmax.
                    let scores: Vec<f64> = (start..=t)
                        .map(|j| {
                            let krow = &k[(j * kv_heads + kvh) * d..][..d];
                            qrow.iter().zip(krow).map(|(a, b)| a * b).sum::<f64>() * scale
                        })
                        .collect();
                    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    let out = &mut o[(t * heads + h) * d..][..d];
                    for (j, w) in (start..=t).zip(&weights) {
                        let vrow = &v[(j * kv_heads + kvh) * d..][..d];
                        for (x, y) in out.iter_mut().zip(vrow) {
                            *x += w / total * y;
                        }
                    }
                }
            }
        }
        Reference::from([("o".to_string(), o)])
    }

    fn tolerance(&self, _p: &AttentionPrefillProblem, dtype: DType) -> f64 {
        match dtype {
            // Each of p (rounded to f16 for the p·V dot) and o (rounded to f16 once) carries a
            // relative error of at most 2^-11 ≈ 4.9e-4, about 2.8e-4 RMS for random values; the
            // two add to ~4e-4 in the norm (measured 2.3e-4 at seq 70), so 2e-3 leaves a 5x
            // margin and still catches any wrong weight, mask or head (errors of order 1e-1).
            DType::F16 => 2e-3,
            // Everything in f32: a few dozen f32 roundings per output (scores, exp2, rescales, the
            // dots' single rounding), each at most 6e-8 relative, give ~1e-7 in the norm
            // (measured 6e-8 at seq 70); 1e-5 leaves a wide margin.
            DType::F32 => 1e-5,
            DType::BF16 | DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => default_tolerance(dtype),
        }
    }

    fn cost(&self, p: &AttentionPrefillProblem, plan: &Plan, _inputs: &Buffers) -> Cost {
        // Causal: token t of a sequence sees t + 1 keys; two multiply-adds per key, head and
        // head dimension (q·k and p·v).
        let pairs: u64 = p.seq_lens().iter().map(|&l| l as u64 * (l as u64 + 1) / 2).sum();
        Cost { flops: 4 * pairs * p.heads as u64 * p.head_dim as u64, ..Cost::from_buffers(plan) }
    }
}

/// Builds the IR for one problem and config (see the module doc for the program).
fn build(p: &AttentionPrefillProblem, c: &AttentionPrefillConfig) -> Result<kiln_ir::Kernel, KernelError> {
    use DType::{F32, I32};
    let (bm, bn, d) = (c.block_m as i32, c.block_n as i32, p.head_dim as i32);
    let (q_stride, kv_stride) = ((p.heads * p.head_dim) as i32, (p.kv_heads * p.head_dim) as i32);
    // Softmax scale with log2(e) folded in, so that exp2(s - m) = e^{(q·k - max) / sqrt(d)}.
    let qk_scale = std::f64::consts::LOG2_E / f64::from(p.head_dim).sqrt();

    let b = KernelBuilder::new(NAME);
    let (q, k, v) = (b.buffer("q", p.dtype), b.buffer("k", p.dtype), b.buffer("v", p.dtype));
    let cu_seqlens = b.buffer("cu_seqlens", I32);
    let o = b.buffer("o", p.dtype);

    let (block, head, seq_idx) = (b.program_id(0), b.program_id(1), b.program_id(2));
    let start = b.load(cu_seqlens, seq_idx).named("start");
    let len = (b.load(cu_seqlens, seq_idx + 1) - start).named("len");
    let kv_head = head / p.group() as i32;

    let row0 = block * bm;
    let rows = (row0 + b.arange(0, bm)).named("rows"); // positions within the sequence
    let dims = b.arange(0, d);
    let row_mask = rows.lt(len);
    let q_offs = (start + rows).col() * q_stride + (head * d + dims).row();
    let q_tile = b.load_masked(q, q_offs, row_mask.col(), 0.0).named("q_tile");

    // Keys past the block's last row are above the diagonal for every row: stop there. A block
    // starting past the sequence runs no iteration.
    let causal_end = len.minimum(row0 + bm);
    let kv_end = b.select(row0.lt(len), causal_end, 0).named("kv_end");

    let init = [
        b.full(&[c.block_m], f32::NEG_INFINITY, F32).named("m0"),
        b.zeros(&[c.block_m], F32).named("l0"),
        b.zeros(&[c.block_m, p.head_dim], F32).named("acc0"),
    ];
    let [_, l, acc] = b.for_range(0, kv_end, bn, init, |n0, [m, l, acc]| {
        let keys = n0 + b.arange(0, bn);
        let key_mask = keys.lt(len);
        let key_pos = (start + keys) * kv_stride + kv_head * d;
        // kᵀ [head_dim, block_n], loaded transposed by its offsets.
        let kt = b.load_masked(k, key_pos.row() + dims.col(), key_mask.row(), 0.0);
        let s = b.dot(q_tile, kt, b.zeros(&[c.block_m, c.block_n], F32)) * qk_scale;
        let visible = rows.col().ge(keys.row()) & key_mask.row();
        let s = b.select(visible, s, f32::NEG_INFINITY);
        let m_new = m.maximum(s.max(1));
        let prob = (s - m_new.col()).exp2();
        let alpha = (m - m_new).exp2();
        let l = l * alpha + prob.sum(1);
        let v_tile = b.load_masked(v, key_pos.col() + dims.row(), key_mask.col(), 0.0);
        let prob_v = match p.dtype {
            DType::F32 => prob,
            DType::F16 | DType::BF16 | DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => {
                prob.cast(p.dtype)
            }
        };
        let acc = b.dot(prob_v, v_tile, acc * alpha.col());
        [m_new, l, acc]
    });
    let out = (acc / l.col()).cast(p.dtype);
    b.store_masked(o, q_offs, out, row_mask.col());
    b.finish().map_err(|source| KernelError::Build { kernel: NAME, source })
}
