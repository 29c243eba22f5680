//! `attention_decode_paged`: attention of a few new query tokens per sequence (1 for decode, up to
//! 16 for speculative verification) over the paged KV cache, with grouped-query attention and
//! split-KV.
//!
//! # Buffers
//!
//! Cache layout, block tables and context lengths as in [`crate::paged`].
//! - `q`: `[batch, q_len, heads, head_dim]` in `q_dtype` (f16 or f32, default: the cache dtype);
//! - `k_cache`, `v_cache`: `[n_blocks, kv_heads, block, head_dim]` in `dtype` (f16 or f32), with
//!   `n_blocks = batch · ceil(ctx / block) + SPARE_BLOCKS`;
//! - `block_tables`: i32 `[batch, ceil(ctx / block)]`; `context_lens`: i32 `[batch]`, each `L_s`
//!   in `q_len..=ctx`. **The caches already hold the q_len new tokens** at positions
//!   `L_s − q_len .. L_s` (the append ran first);
//! - `out`: `[batch, q_len, heads, head_dim]` in `q_dtype`;
//! - with more than one split, Scratch buffers of f32 partials per (sequence, query, head, split):
//!   `m_part`, `l_part` `[batch, q_len, heads, n_splits]` and `o_part`
//!   `[batch, q_len, heads, n_splits, head_dim]`.
//!
//! # Math
//!
//! Query `i` (0-based among the new tokens) of sequence `s` attends to key positions
//! `0 ..= L_s − q_len + i`: the whole prefix, and causally among the new tokens. Query head `h`
//! uses KV head `h / (heads / kv_heads)`. Scores are `q·k · scale` with `scale = 1/sqrt(head_dim)`
//! unless the `scale` key overrides it.
//!
//! # Program
//!
//! Launch 1 runs a program per (KV head, sequence, split), grid `[kv_heads, batch, n_splits]`.
//! The `group · q_len` query rows that share a KV head (rows ordered head-major, padded to a power
//! of two) form one q tile `[rows, head_dim]`, so each K/V tile is loaded once per group. The
//! program walks its split's keys in tiles of `block_n`, looking each key's slot up in the block
//! table; the transposed K tile `[head_dim, block_n]` is loaded directly with transposed offsets,
//! `scores = dot(q, kᵀ)`, and an online softmax (base 2, with `log2(e)` folded into the scale)
//! keeps a running max `m`, sum `l` and unnormalized output `acc`. The running max starts at the
//! finite −1e30 rather than −inf, so a row with no visible key in a tile (causal masking, or a
//! split past the sequence's end) gives `p = 0` and no `−inf − (−inf)` NaN.
//!
//! **Look-ahead.** With `prefetch = 1` (the default) each tile also looks up the next tile's
//! block-table entries and prefetches its K rows (before the scores) and V rows (after them), so
//! the next tile's rows arrive while this one computes. Within a page a KV head's rows are one
//! contiguous run, but the next page is wherever the block table says, which no hardware
//! prefetcher follows.
//!
//! **Several KV heads per program.** With `heads_per_program = hp` (a divisor of `kv_heads`,
//! default 1) a program takes `hp` neighbouring KV heads, grid `[kv_heads / hp, batch, n_splits]`:
//! one block-table lookup per tile serves them all, and since a page holds its KV heads' runs one
//! after another, a tile within one page reads the `hp` runs back to back. Each head keeps
//! its own q tile, `m`, `l` and `acc` (three loop-carried tiles per head) and its look-ahead is
//! issued with its own scores, so the prefetches spread over the tile. The CPU default is 2 where
//! `kv_heads` is even (see [`TileKernel::target_default`]), else 1: SmolLM2's prefill lanes
//! (q_len 16, 3 KV heads) ran 2.6 ms at `hp = 3` against 2.4 ms at 1. The portable (GPU) default
//! stays 1: a GPU wants the programs. The tuner's space offers 1, 2 and the largest legal value.
//!
//! **Split-KV.** The `splits` knob cuts the `ctx` keys into `n_splits` ranges of
//! `split_size = round_up(ceil(ctx / splits), block_n)` keys (`n_splits = ceil(ctx / split_size)`,
//! which can be below `splits` for short contexts; [`TileKernel::space`] offers only configs
//! where the two agree). Splits are per problem, so a sequence shorter than `ctx` may have empty
//! splits; they write `m = −1e30, l = 0, acc = 0`, which the combine weights by 0. Launch 2 (grid
//! `[heads, q_len, batch]`) combines the partials: `M = max_i m_i`, `w_i = 2^(m_i − M)`,
//! `out = Σ w_i acc_i / Σ w_i l_i`. **With one split the combine is skipped**: launch 1 divides by
//! `l` and writes `out` itself, with no Scratch buffers.
//!
//! # Numerics
//!
//! Scores, softmax statistics and accumulators are f32. `q·kᵀ` runs in f16 when q and the cache
//! are f16, else in f32 (the f16 side is cast up exactly). As flash attention does, **P is cast to
//! the V dtype** for the `P·V` dot (f16 for an f16 cache). Tolerances of the relative error norm:
//! - f16 output: 2e-3 (the output's own rounding is ~2.8e-4 rms relative, P's ~2.8e-4 more);
//! - f32 output over an f16 cache: 1e-3, from P rounded to f16 (relative 2^-11 at most);
//! - f32 output over an f32 cache: the f32 default 1e-5 (f32 roundings of scores, `exp2` and
//!   sums; measured ~2e-7 at 2000 keys).
//!
//! Measured errors sit 6-8x below these (f16 output ~2.5e-4, f32 over f16 ~1.5e-4), and
//! attending one key too few already exceeds them on the test shapes.

use super::{
    ensure_i32_indexable, i32_buffer, max_blocks, pool_blocks, random_block_tables, random_context_lens, row_start,
    slot_of, PageShape,
};
use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::Cost;
use crate::kernel::{Config, Knob, Problem, SpaceLimits, TargetKind, TileKernel};
use crate::plan::{buf, f32_arg, i32_arg, Binding, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::{ensure, KernelError};
use kiln_ir::{DType, Kernel, KernelBuilder, Tile};

const NAME: &str = "attention_decode_paged";

/// Largest number of new query tokens per sequence.
pub const MAX_Q_LEN: u32 = 16;

/// The running max's start: finite, so fully masked rows never compute `−inf − (−inf)`.
const M_INIT: f64 = -1e30;

#[derive(Clone, Debug, PartialEq)]
pub struct AttentionDecodePagedProblem {
    pub batch: u32,
    /// New query tokens per sequence, 1..=16.
    pub q_len: u32,
    /// The longest context length (new tokens included).
    pub ctx: u32,
    pub heads: u32,
    pub kv_heads: u32,
    /// 64 or 128.
    pub head_dim: u32,
    /// Tokens per cache block (the page size).
    pub block: u32,
    /// Cache dtype: f16 or f32.
    pub dtype: DType,
    /// Query and output dtype: f16 or f32.
    pub q_dtype: DType,
    /// Score scale override (default `1/sqrt(head_dim)`).
    pub scale: Option<f64>,
}

impl AttentionDecodePagedProblem {
    fn group(&self) -> u32 {
        self.heads / self.kv_heads
    }

    /// Query rows per program: the heads of a KV group times the new tokens.
    fn rows(&self) -> u32 {
        self.group() * self.q_len
    }

    /// The q tile's height: `rows` padded to a power of two.
    fn rows_pad(&self) -> u32 {
        self.rows().next_power_of_two()
    }

    fn scale(&self) -> f64 {
        self.scale.unwrap_or(1.0 / (self.head_dim as f64).sqrt())
    }

    fn max_blocks(&self) -> u32 {
        max_blocks(self.ctx, self.block)
    }

    fn n_blocks(&self) -> u32 {
        pool_blocks(self.batch, self.max_blocks())
    }

    fn cache_len(&self) -> u64 {
        self.n_blocks() as u64 * self.block as u64 * self.kv_heads as u64 * self.head_dim as u64
    }

    fn q_len_elems(&self) -> u64 {
        self.batch as u64 * self.q_len as u64 * self.heads as u64 * self.head_dim as u64
    }

    /// The dtype of the `q·kᵀ` dot: f16 only when both sides are f16.
    fn qk_dtype(&self) -> DType {
        if self.q_dtype == DType::F16 && self.dtype == DType::F16 {
            DType::F16
        } else {
            DType::F32
        }
    }
}

impl Problem for AttentionDecodePagedProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let batch = r.get("batch")?;
        let q_len = r.get("q_len")?;
        let ctx = r.get("ctx")?;
        let heads = r.get("heads")?;
        let kv_heads = r.get("kv_heads")?;
        let head_dim = r.get("head_dim")?;
        let block = r.get("block")?;
        let dtype = parse_dtype(NAME, "dtype", &r.get_or("dtype", "f16".to_string())?, &[DType::F16, DType::F32])?;
        let q_dtype = match r.get_or("q_dtype", String::new())? {
            name if name.is_empty() => dtype,
            name => parse_dtype(NAME, "q_dtype", &name, &[DType::F16, DType::F32])?,
        };
        let scale: Option<f64> = match r.get_or("scale", String::new())? {
            s if s.is_empty() => None,
            s => Some(s.parse().map_err(|_| KernelError::Constraint {
                kernel: NAME,
                constraint: format!("scale `{s}` is not a number"),
            })?),
        };
        r.finish()?;
        let p =
            AttentionDecodePagedProblem { batch, q_len, ctx, heads, kv_heads, head_dim, block, dtype, q_dtype, scale };
        ensure(NAME, p.batch >= 1 && p.heads >= 1 && p.kv_heads >= 1 && p.block >= 1, || {
            "batch, heads, kv_heads and block must be at least 1".into()
        })?;
        ensure(NAME, (1..=MAX_Q_LEN).contains(&p.q_len), || format!("q_len = {} is not in 1..={MAX_Q_LEN}", p.q_len))?;
        ensure(NAME, p.heads.is_multiple_of(p.kv_heads), || {
            format!("heads = {} is not a multiple of kv_heads = {}", p.heads, p.kv_heads)
        })?;
        ensure(NAME, matches!(p.head_dim, 64 | 128), || format!("head_dim = {} is not 64 or 128", p.head_dim))?;
        ensure(NAME, p.ctx >= p.q_len, || format!("ctx = {} is shorter than q_len = {}", p.ctx, p.q_len))?;
        ensure(NAME, p.batch <= 65_535, || format!("batch = {} exceeds the grid limit 65535", p.batch))?;
        ensure(NAME, p.scale.is_none_or(|s| s.is_finite() && s > 0.0), || "scale must be finite and positive".into())?;
        // The whole group's query rows are one tile.
        ensure(NAME, p.rows_pad() as u64 * p.head_dim as u64 <= kiln_ir::infer::MAX_TILE_ELEMENTS, || {
            format!("heads / kv_heads · q_len = {} query rows do not fit one tile", p.rows())
        })?;
        ensure_i32_indexable(
            NAME,
            "the block pool",
            p.batch as u64 * p.max_blocks() as u64 + super::SPARE_BLOCKS as u64,
        )?;
        ensure_i32_indexable(NAME, "the cache", p.cache_len())?;
        ensure_i32_indexable(NAME, "the split partials", p.q_len_elems() * *SPLITS.last().unwrap_or(&1) as u64)?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        let args = Args::new()
            .with("batch", self.batch)
            .with("q_len", self.q_len)
            .with("ctx", self.ctx)
            .with("heads", self.heads)
            .with("kv_heads", self.kv_heads)
            .with("head_dim", self.head_dim)
            .with("block", self.block)
            .with("dtype", self.dtype)
            .with("q_dtype", self.q_dtype);
        match self.scale {
            Some(s) => args.with("scale", s),
            None => args,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct AttentionDecodePagedConfig {
    /// Keys per tile.
    pub block_n: u32,
    /// Requested number of KV splits (see the module doc for the effective count).
    pub splits: u32,
    /// 1: prefetch the next tile's K and V rows while computing on this one; 0: no hint.
    pub prefetch: u32,
    /// KV heads per program, a divisor of `kv_heads`: neighbouring heads' runs are adjacent in
    /// each page, so a program of several reads longer contiguous runs.
    pub heads_per_program: u32,
}

const BLOCK_N: [u32; 4] = [16, 32, 64, 128];
const SPLITS: [u32; 6] = [1, 2, 4, 8, 16, 32];
/// Programs a CPU grid should have before the default splits the keys further: a few per thread
/// of a many-core host.
const CPU_PROGRAMS: u64 = 32;

/// The default split count: doubled (up to 32) while each split keeps at least 256 keys, the
/// split layout has exactly that many splits, and `more(programs, next)` says the grid of
/// `programs` sequence × KV-head programs should go to `next` splits.
fn default_splits(p: &AttentionDecodePagedProblem, block_n: u32, more: impl Fn(u64, u32) -> bool) -> u32 {
    let programs = p.batch as u64 * p.kv_heads as u64;
    let mut splits = 1;
    while splits < 32 {
        let next = splits * 2;
        if p.ctx / next < 256 || !more(programs, next) || split_layout(p.ctx, block_n, next).1 != next {
            break;
        }
        splits = next;
    }
    splits
}
const PREFETCH: [u32; 2] = [0, 1];
const HEADS_PER_PROGRAM: [u32; 5] = [1, 2, 3, 4, 8];

impl Config for AttentionDecodePagedConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = AttentionDecodePagedConfig {
            block_n: r.one_of("block_n", &BLOCK_N)?,
            splits: r.one_of("splits", &SPLITS)?,
            // Optional, so that configs tuned before the knob existed still read.
            prefetch: r.get_or("prefetch", 1)?,
            heads_per_program: r.get_or("heads_per_program", 1)?,
        };
        r.finish()?;
        ensure(NAME, PREFETCH.contains(&c.prefetch), || {
            format!("prefetch = {} is not one of {PREFETCH:?}", c.prefetch)
        })?;
        ensure(NAME, HEADS_PER_PROGRAM.contains(&c.heads_per_program), || {
            format!("heads_per_program = {} is not one of {HEADS_PER_PROGRAM:?}", c.heads_per_program)
        })?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new()
            .with("block_n", self.block_n)
            .with("splits", self.splits)
            .with("prefetch", self.prefetch)
            .with("heads_per_program", self.heads_per_program)
    }
}

/// `(split_size, n_splits)`: keys per split (a multiple of `block_n`) and the splits that cover
/// `ctx`.
fn split_layout(ctx: u32, block_n: u32, splits: u32) -> (u32, u32) {
    let split_size = ctx.div_ceil(splits).div_ceil(block_n) * block_n;
    (split_size, ctx.div_ceil(split_size))
}

pub struct AttentionDecodePaged;

impl TileKernel for AttentionDecodePaged {
    type Problem = AttentionDecodePagedProblem;
    type Config = AttentionDecodePagedConfig;

    fn id(&self) -> KernelId {
        KernelId::AttentionDecodePaged
    }

    fn example_problem(&self) -> Args {
        // SmolLM2's attention shape (9 heads over 3 KV heads of 64), verifying 4 draft tokens.
        Args::new()
            .with("batch", 2)
            .with("q_len", 4)
            .with("ctx", 100)
            .with("heads", 9)
            .with("kv_heads", 3)
            .with("head_dim", 64)
            .with("block", 16)
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![
            Knob { name: "block_n", values: BLOCK_N.map(i64::from).to_vec(), help: "keys per tile" },
            Knob {
                name: "splits",
                values: SPLITS.map(i64::from).to_vec(),
                help: "KV splits (split-KV); 1 skips the combine",
            },
            Knob {
                name: "prefetch",
                values: PREFETCH.map(i64::from).to_vec(),
                help: "1 prefetches the next tile's K/V rows during this tile's work",
            },
            Knob {
                name: "heads_per_program",
                values: HEADS_PER_PROGRAM.map(i64::from).to_vec(),
                help: "KV heads per program (a divisor of kv_heads): longer contiguous reads",
            },
        ]
    }

    fn default_config(&self, p: &AttentionDecodePagedProblem) -> AttentionDecodePagedConfig {
        // 32 keys a tile: on the CPU the tile's K (kept as its rows, which the dot reads in
        // place) and V (16 KiB each in f32 at head_dim 128) stay in L1 next to the prefetched
        // next tile. Batch 16 over 2048 keys on 2 Zen 5 cores, when K still went through a
        // transpose: 3.8 ms at 32, 4.0-4.2 ms at 16, 4.6 ms at 64; 4.5 ms at 32 without the
        // look-ahead. Without the transpose and with the polynomial exp2: 3.1 ms at 32. With V
        // read in place by the P·V dot, the score mask on vector lanes and the accumulator
        // rescaled in place: 2.5-2.8 ms (0.52-0.61 of the same run's read roofline) against
        // 2.9-3.0 ms (0.44-0.53). What was left then was the misses one core keeps in flight
        // for 256-byte rows scattered over slot-major pages: one thread streamed 13 GB/s of K/V
        // where the same code hot in L3 reached 19.5 GB/s; looking 2 or 3 tiles ahead, 8 KV
        // heads a program or block_n 64 measured slower, block_n 16 within 2%; kᵀ's columns read
        // in place by the score dot too (as V is) ran 3-6% faster hot in cache and 0-5% slower
        // streamed, so K is still converted into a column-major copy. Pages that hold each KV
        // head's rows as one run (the layout now) took the CPU default from 2.3-2.4 ms to
        // 2.05-2.26 ms (two heads a program, see `target_default`).
        let block_n = BLOCK_N.into_iter().find(|&b| b >= p.ctx).unwrap_or(32).min(32);
        // Split while the grid stays within about two programs per SM of a large GPU; a decode
        // step of few sequences is otherwise a handful of programs streaming the whole context
        // each.
        let splits = default_splits(p, block_n, |programs, next| programs * next as u64 <= 264);
        AttentionDecodePagedConfig { block_n, splits, prefetch: 1, heads_per_program: 1 }
    }

    fn target_default(&self, p: &AttentionDecodePagedProblem, target: TargetKind) -> AttentionDecodePagedConfig {
        match target {
            // A CPU wants enough programs to balance a few threads, not a GPU's SMs: split only
            // while the grid has fewer than [`CPU_PROGRAMS`] (each split keeping 256 keys), and
            // walk the keys 16 at a time. Batch 16, ctx 2048, 32 / 8 heads of 128, 2 Zen 5
            // threads, 8 interleaved runs each: 2267 µs median (every run faster) against
            // 2407 µs for the portable default's 32 keys and 2 splits; `block_n = 16` alone 2311,
            // one split alone 2352. With 16 query rows or more (prefill lanes, speculative
            // verification) 32 keys a tile: the score dot then broadcasts its rows against two
            // vectors of keys, not one. SmolLM2's prefill lanes (batch 32 × 16 tokens, ctx 512,
            // 9 / 3 heads of 64): 1690-1705 µs against 1967-2844 µs at 16; batch 4 × 8 tokens,
            // ctx 1024: 240 µs against 254-257.
            //
            // Two KV heads a program where the count is even: their runs of a page are adjacent,
            // so each tile reads 2 · block_n · head_dim contiguous elements. Batch 16, ctx 2048,
            // 32 / 8 heads of 128, interleaved runs: 2048-2302 µs against 2244-2326 µs at one
            // head (4 heads 2237-2339, 8 heads 2331-2494).
            TargetKind::Cpu => {
                let keys = if p.rows_pad() >= 16 { 32 } else { 16 };
                let block_n = BLOCK_N.into_iter().find(|&b| b >= p.ctx).unwrap_or(keys).min(keys);
                let splits = default_splits(p, block_n, |programs, next| programs * (next as u64 / 2) < CPU_PROGRAMS);
                let heads_per_program = if p.kv_heads.is_multiple_of(2) { 2 } else { 1 };
                AttentionDecodePagedConfig { block_n, splits, prefetch: 1, heads_per_program }
            }
            TargetKind::Gpu => self.default_config(p),
        }
    }

    fn space(&self, p: &AttentionDecodePagedProblem, limits: &SpaceLimits) -> Vec<AttentionDecodePagedConfig> {
        let cover = BLOCK_N.into_iter().find(|&b| b >= p.ctx).unwrap_or(128);
        let rows = p.rows_pad() as u64;
        let q_fits = rows * p.head_dim as u64 <= limits.max_tile_elements;
        // One KV head a program, two (the CPU default), or the most the problem allows.
        let mut heads_per_program: Vec<u32> =
            HEADS_PER_PROGRAM.into_iter().filter(|&h| p.kv_heads.is_multiple_of(h)).collect();
        let most_heads = heads_per_program.last().copied().unwrap_or(1);
        heads_per_program.retain(|&h| h <= 2 || h == most_heads);
        let mut space = Vec::new();
        for &block_n in BLOCK_N.iter().filter(|&&b| b <= cover) {
            let n = block_n as u64;
            if !(q_fits && rows * n <= limits.max_tile_elements && p.head_dim as u64 * n <= limits.max_tile_elements) {
                continue;
            }
            // Only split counts that are what they say: more would leave empty splits behind.
            for &splits in SPLITS.iter().filter(|&&s| split_layout(p.ctx, block_n, s).1 == s) {
                for &prefetch in &PREFETCH {
                    for &heads_per_program in &heads_per_program {
                        space.push(AttentionDecodePagedConfig { block_n, splits, prefetch, heads_per_program });
                    }
                }
            }
        }
        let default = self.default_config(p);
        if !space.contains(&default) {
            space.push(default);
        }
        space
    }

    fn plan(&self, p: &AttentionDecodePagedProblem, c: &AttentionDecodePagedConfig) -> Result<Plan, KernelError> {
        ensure(NAME, p.kv_heads.is_multiple_of(c.heads_per_program), || {
            format!("heads_per_program = {} does not divide kv_heads = {}", c.heads_per_program, p.kv_heads)
        })?;
        let (split_size, n_splits) = split_layout(p.ctx, c.block_n, c.splits);
        let split = n_splits > 1;
        let out_len = p.q_len_elems() as usize;
        let stats_len = out_len / p.head_dim as usize * n_splits as usize;
        let mut buffers = vec![
            BufferSpec { name: "q".into(), dtype: p.q_dtype, len: out_len, role: Role::Input },
            BufferSpec { name: "k_cache".into(), dtype: p.dtype, len: p.cache_len() as usize, role: Role::Input },
            BufferSpec { name: "v_cache".into(), dtype: p.dtype, len: p.cache_len() as usize, role: Role::Input },
            BufferSpec {
                name: "block_tables".into(),
                dtype: DType::I32,
                len: (p.batch * p.max_blocks()) as usize,
                role: Role::Input,
            },
            BufferSpec { name: "context_lens".into(), dtype: DType::I32, len: p.batch as usize, role: Role::Input },
            BufferSpec { name: "out".into(), dtype: p.q_dtype, len: out_len, role: Role::Output },
        ];
        let sizes = vec![
            i32_arg(p.heads as i64),
            i32_arg(p.kv_heads as i64),
            i32_arg(p.block as i64),
            i32_arg(p.max_blocks() as i64),
            i32_arg(split_size as i64),
            i32_arg(n_splits as i64),
            f32_arg(p.scale() * std::f64::consts::LOG2_E),
        ];
        let inputs = ["q", "k_cache", "v_cache", "block_tables", "context_lens"].map(buf);
        let outputs: Vec<Binding> =
            if split { ["m_part", "l_part", "o_part"].map(buf).to_vec() } else { vec![buf("out")] };
        let mut launches = vec![Launch {
            kernel: build_split_kernel(p, c)?,
            grid: [p.kv_heads / c.heads_per_program, p.batch, n_splits],
            args: inputs.into_iter().chain(outputs).chain(sizes).collect(),
        }];
        if split {
            for (name, len) in
                [("m_part", stats_len), ("l_part", stats_len), ("o_part", stats_len * p.head_dim as usize)]
            {
                buffers.push(BufferSpec { name: name.into(), dtype: DType::F32, len, role: Role::Scratch });
            }
            launches.push(Launch {
                kernel: build_combine_kernel(p, n_splits)?,
                grid: [p.heads, p.q_len, p.batch],
                args: vec![
                    buf("m_part"),
                    buf("l_part"),
                    buf("o_part"),
                    buf("out"),
                    i32_arg(p.heads as i64),
                    i32_arg(n_splits as i64),
                ],
            });
        }
        Ok(Plan { buffers, launches })
    }

    fn inputs(&self, p: &AttentionDecodePagedProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let lens = random_context_lens(&mut rng, p.batch, p.ctx, p.q_len);
        let tables = random_block_tables(&mut rng, &lens, p.block, p.max_blocks(), p.n_blocks());
        let cache_len = p.cache_len() as usize;
        // Scores q·k/sqrt(d) of about unit spread: the softmax is neither flat nor one-hot.
        Buffers::from([
            ("q".to_string(), random::uniform(&mut rng, p.q_dtype, p.q_len_elems() as usize, -2.0, 2.0)),
            ("k_cache".to_string(), random::uniform(&mut rng, p.dtype, cache_len, -2.0, 2.0)),
            ("v_cache".to_string(), random::uniform(&mut rng, p.dtype, cache_len, -2.0, 2.0)),
            ("block_tables".to_string(), i32_buffer(tables)),
            ("context_lens".to_string(), i32_buffer(lens)),
        ])
    }

    fn reference(&self, p: &AttentionDecodePagedProblem, inputs: &Buffers) -> Reference {
        let (q_len, heads, kv_heads, d) =
            (p.q_len as usize, p.heads as usize, p.kv_heads as usize, p.head_dim as usize);
        let (block, max_blocks, group) = (p.block as usize, p.max_blocks() as usize, p.group() as usize);
        let shape = PageShape { block, kv_heads, head_dim: d };
        let q = inputs["q"].to_f64();
        let k = inputs["k_cache"].to_f64();
        let v = inputs["v_cache"].to_f64();
        let tables = inputs["block_tables"].to_f64();
        let lens = inputs["context_lens"].to_f64();
        let mut out = vec![0.0; q.len()];
        for (s, &len) in lens.iter().enumerate() {
            let len = len as usize;
            let table = &tables[s * max_blocks..(s + 1) * max_blocks];
            for i in 0..q_len {
                let visible = len - q_len + i + 1;
                for h in 0..heads {
                    let kvh = h / group;
                    let q_row = &q[((s * q_len + i) * heads + h) * d..][..d];
                    let kv_row = |cache: &[f64], pos: usize| {
                        let start = row_start(shape, slot_of(table, block, pos), kvh);
                        cache[start..start + d].to_vec()
                    };
                    let scores: Vec<f64> = (0..visible)
                        .map(|pos| kv_row(&k, pos).iter().zip(q_row).map(|(a, b)| a * b).sum::<f64>() * p.scale())
                        .collect();
                    let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let weights: Vec<f64> = scores.iter().map(|x| (x - max).exp()).collect();
                    let total: f64 = weights.iter().sum();
                    let o = &mut out[((s * q_len + i) * heads + h) * d..][..d];
                    for (pos, w) in weights.iter().enumerate() {
                        for (o, x) in o.iter_mut().zip(kv_row(&v, pos)) {
                            *o += w / total * x;
                        }
                    }
                }
            }
        }
        Reference::from([("out".to_string(), out)])
    }

    fn tolerance(&self, p: &AttentionDecodePagedProblem, dtype: DType) -> f64 {
        // Reasons in the module doc: f32 output is only as exact as the P·V dot's operands.
        if dtype == DType::F32 && p.dtype == DType::F16 {
            1e-3
        } else {
            crate::kernel::default_tolerance(dtype)
        }
    }

    fn cost(&self, p: &AttentionDecodePagedProblem, _plan: &Plan, inputs: &Buffers) -> Cost {
        // The K/V bytes of each sequence's context (what attention must read; unused pages and
        // positions past a sequence's end are not work), plus q and the output. Two
        // multiply-adds (q·k and p·v) per key, query row and head dimension.
        let keys: u64 = inputs.get("context_lens").map_or(0, |l| l.to_f64().iter().map(|&x| x as u64).sum());
        let kv = 2 * keys * p.kv_heads as u64 * p.head_dim as u64 * p.dtype.size_bytes() as u64;
        let q_out = 2 * (p.batch * p.q_len * p.heads * p.head_dim) as u64 * p.q_dtype.size_bytes() as u64;
        let flops = 4 * keys * p.q_len as u64 * p.heads as u64 * p.head_dim as u64;
        Cost { bytes: kv + q_out, flops }
    }
}

/// Launch 1: the attention of one KV group over one split. Writes `out` directly when there is
/// one split, else the split's partials.
fn build_split_kernel(p: &AttentionDecodePagedProblem, c: &AttentionDecodePagedConfig) -> Result<Kernel, KernelError> {
    let (rows_pad, d, bn) = (p.rows_pad() as i32, p.head_dim as i32, c.block_n as i32);
    let (q_len, group) = (p.q_len as i32, p.group() as i32);
    let (page, n_kv) = (p.block as i32, p.kv_heads as i32);
    let split = split_layout(p.ctx, c.block_n, c.splits).1 > 1;
    let qk_dtype = p.qk_dtype();
    let b = KernelBuilder::new(if split { "attention_decode_paged_split" } else { NAME });
    let q_buf = b.buffer("q", p.q_dtype);
    let k_cache = b.buffer("k_cache", p.dtype);
    let v_cache = b.buffer("v_cache", p.dtype);
    let block_tables = b.buffer("block_tables", DType::I32);
    let context_lens = b.buffer("context_lens", DType::I32);
    let outputs = if split {
        vec![b.buffer("m_part", DType::F32), b.buffer("l_part", DType::F32), b.buffer("o_part", DType::F32)]
    } else {
        vec![b.buffer("out", p.q_dtype)]
    };
    let heads = b.scalar("heads", DType::I32);
    // Bound for the plan's argument list; the program uses the problem's constants instead.
    let _kv_heads = b.scalar("kv_heads", DType::I32);
    let _block = b.scalar("block", DType::I32);
    let max_blocks = b.scalar("max_blocks", DType::I32);
    let split_size = b.scalar("split_size", DType::I32);
    let n_splits = b.scalar("n_splits", DType::I32);
    let qk_scale = b.scalar("qk_scale", DType::F32);

    let (hp, seq, split_idx) = (c.heads_per_program as i32, b.program_id(1), b.program_id(2));
    let first_kvh = b.program_id(0) * hp;
    let len = b.load(context_lens, seq);

    // Row r is query i = r % q_len of head h = r / q_len of the group; rows past the group pad the
    // tile to a power of two and are never stored.
    let r = b.arange(0, rows_pad);
    let (h, i) = (r / q_len, r % q_len);
    let row_ok = r.lt(group * q_len);
    let dims = b.arange(0, d);
    // Per KV head of the program: its query rows' places in q and out, and its q tile.
    let heads_of = |j: i32| {
        let out_row = (seq * q_len + i) * heads + (first_kvh + j) * group + h;
        let q = cast_to(b.load_masked(q_buf, (out_row * d).col() + dims.row(), row_ok.col(), 0.0), qk_dtype);
        (out_row, q)
    };
    let per_head: Vec<_> = (0..hp).map(heads_of).collect();
    // The last key each row may see: its own position.
    let last_key = (len - q_len + i).col();

    let table_row = seq * max_blocks;
    let start = split_idx * split_size;
    let end = (start + split_size).minimum(len);
    let mut init = Vec::new();
    for _ in 0..hp {
        init.push(b.full(&[rows_pad as u32], M_INIT, DType::F32));
        init.push(b.zeros(&[rows_pad as u32], DType::F32));
        init.push(b.zeros(&[rows_pad as u32, d as u32], DType::F32));
    }
    let state = for_range_vec(&b, start, end, bn, init, |t, state| {
        let keys = t + b.arange(0, bn);
        let key_ok = keys.lt(end);
        // The page size and KV head count are problem constants: `keys / page` becomes a shift
        // instead of a division per key, and the row offsets' coefficients are known.
        let block_id = b.load_masked(block_tables, table_row + keys / page, key_ok, 0i32);
        // Each key's row of the program's first KV head; the next heads' rows follow a page's
        // `block · head_dim` elements apart.
        let head_stride = page * d;
        let slot_base = ((block_id * n_kv + first_kvh) * page + keys % page) * d;
        // Look one tile ahead: the next tile's rows are found through the block table, which no
        // hardware prefetcher follows, so ask for them now and compute on this tile meanwhile.
        // K first, V after the first head's scores, so that the requests spread over the work.
        let next = (c.prefetch == 1).then(|| {
            let next = keys + bn;
            let next_ok = next.lt(end);
            let next_block = b.load_masked(block_tables, table_row + next / page, next_ok, 0i32);
            let next_base = ((next_block * n_kv + first_kvh) * page + next % page) * d;
            (next_base, next_ok)
        });
        let visible = keys.row().le(last_key) & key_ok.row();
        let mut out = Vec::new();
        for (j, (_, q)) in per_head.iter().enumerate() {
            let [m, l, acc] = [state[3 * j], state[3 * j + 1], state[3 * j + 2]];
            let base = slot_base + j as i32 * head_stride;
            // kᵀ [head_dim, block_n] straight from memory: transposed offsets, no transpose op.
            let k_t = cast_to(b.load_masked(k_cache, dims.col() + base.row(), key_ok.row(), 0.0), qk_dtype);
            let v = b.load_masked(v_cache, base.col() + dims.row(), key_ok.col(), 0.0);
            // One head's rows at a time, K before its scores and V after, so that the requests
            // spread over the tile's work rather than fill the miss queues at once.
            if let Some((next_base, next_ok)) = next {
                b.prefetch(k_cache, next_base + j as i32 * head_stride, Some(next_ok), d as u32);
            }
            let scores = b.dot(*q, k_t, b.zeros(&[rows_pad as u32, bn as u32], DType::F32)) * qk_scale;
            if let Some((next_base, next_ok)) = next {
                b.prefetch(v_cache, next_base + j as i32 * head_stride, Some(next_ok), d as u32);
            }
            let scores = b.select(visible, scores, f32::NEG_INFINITY);
            let m_new = m.maximum(scores.max(1));
            let alpha = (m - m_new).exp2();
            let probs = (scores - m_new.col()).exp2();
            let l_new = l * alpha + probs.sum(1);
            let acc_new = b.dot(cast_to(probs, p.dtype), v, acc * alpha.col());
            out.extend([m_new, l_new, acc_new]);
        }
        out
    });

    for (j, (out_row, _)) in per_head.iter().enumerate() {
        let [m, l, acc] = [state[3 * j], state[3 * j + 1], state[3 * j + 2]];
        if split {
            let part = *out_row * n_splits + split_idx;
            b.store_masked(outputs[0], part, m, row_ok);
            b.store_masked(outputs[1], part, l, row_ok);
            b.store_masked(outputs[2], (part * d).col() + dims.row(), acc, row_ok.col());
        } else {
            let o = (acc / l.col()).cast(p.q_dtype);
            b.store_masked(outputs[0], (*out_row * d).col() + dims.row(), o, row_ok.col());
        }
    }
    b.finish().map_err(|source| KernelError::Build { kernel: NAME, source })
}

/// [`KernelBuilder::for_range`] over a number of carried tiles known only at run time (three per
/// KV head of the program): the builder's arrays are sized at compile time, so each legal count
/// is one instantiation.
fn for_range_vec<'s>(
    b: &'s KernelBuilder,
    start: Tile<'s>,
    end: Tile<'s>,
    step: i32,
    init: Vec<Tile<'s>>,
    body: impl FnOnce(Tile<'s>, Vec<Tile<'s>>) -> Vec<Tile<'s>>,
) -> Vec<Tile<'s>> {
    fn run<'s, const N: usize>(
        b: &'s KernelBuilder,
        (start, end, step): (Tile<'s>, Tile<'s>, i32),
        init: Vec<Tile<'s>>,
        body: impl FnOnce(Tile<'s>, Vec<Tile<'s>>) -> Vec<Tile<'s>>,
    ) -> Vec<Tile<'s>> {
        let init: [Tile<'s>; N] = init.try_into().unwrap_or_else(|_| unreachable!("three tiles per head"));
        let out = b.for_range(start, end, step, init, |t, state| {
            body(t, state.to_vec()).try_into().unwrap_or_else(|_| unreachable!("three tiles per head"))
        });
        out.to_vec()
    }
    let range = (start, end, step);
    match init.len() {
        3 => run::<3>(b, range, init, body),
        6 => run::<6>(b, range, init, body),
        9 => run::<9>(b, range, init, body),
        12 => run::<12>(b, range, init, body),
        _ => run::<24>(b, range, init, body),
    }
}

/// `t` in `dtype`, without a no-op cast when it already is.
fn cast_to(t: Tile<'_>, dtype: DType) -> Tile<'_> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

/// Launch 2: one program per (head, query, sequence) merges the `n_splits` partials.
fn build_combine_kernel(p: &AttentionDecodePagedProblem, n_splits: u32) -> Result<Kernel, KernelError> {
    let (d, splits_pad) = (p.head_dim as i32, n_splits.next_power_of_two() as i32);
    let b = KernelBuilder::new("attention_decode_paged_combine");
    let m_part = b.buffer("m_part", DType::F32);
    let l_part = b.buffer("l_part", DType::F32);
    let o_part = b.buffer("o_part", DType::F32);
    let out = b.buffer("out", p.q_dtype);
    let heads = b.scalar("heads", DType::I32);
    let n_splits = b.scalar("n_splits", DType::I32);

    let out_row = (b.program_id(2) * p.q_len as i32 + b.program_id(1)) * heads + b.program_id(0);
    let sp = b.arange(0, splits_pad);
    let sp_ok = sp.lt(n_splits);
    let part = out_row * n_splits + sp;
    let m = b.load_masked(m_part, part, sp_ok, f32::NEG_INFINITY);
    let l = b.load_masked(l_part, part, sp_ok, 0.0);
    let dims = b.arange(0, d);
    let o = b.load_masked(o_part, (part * d).col() + dims.row(), sp_ok.col(), 0.0);
    // Split 0 always holds key 0, which every query sees, so the max is a real score's.
    let w = (m - m.max(0)).exp2();
    let total = (l * w).sum(0);
    let merged = (o * w.col()).sum(0) / total;
    b.store(out, out_row * d + dims, merged.cast(p.q_dtype));
    b.finish().map_err(|source| KernelError::Build { kernel: NAME, source })
}
