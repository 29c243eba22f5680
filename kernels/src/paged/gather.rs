//! `paged_kv_gather`: copies each sequence's K and V out of the paged cache into contiguous
//! tensors, for consumers that want a dense KV (prefill attention over a cached prefix, debugging).
//!
//! Buffers (the cache layout, block tables and context lengths are described in [`crate::paged`]):
//! - `k_cache`, `v_cache`: `[n_blocks, kv_heads, block, head_dim]` with
//!   `n_blocks = batch · ceil(ctx / block) + SPARE_BLOCKS` (inputs);
//! - `block_tables`: i32 `[batch, ceil(ctx / block)]`; `context_lens`: i32 `[batch]`, in `1..=ctx`;
//! - `k_out`, `v_out`: `[batch, ctx, kv_heads, head_dim]` (outputs). `ctx` is the longest context;
//!   **positions at or past a sequence's length are written as zeros**, so the outputs are fully
//!   defined and hold nothing from the cache's unused slots.
//!
//! Program `(c, t, s)` of the grid `[ceil(head_dim / block_cols), ceil(ctx / tokens_per_program),
//! batch]` copies a `[tokens_per_program, kv_heads, block_cols]` tile of sequence `s`, columns
//! `c · block_cols ..` of every KV head: it looks the positions' blocks up in the block table
//! (masked to the sequence's length, so table entries past it are never read), loads each head's
//! rows from its run of the page and stores them, zeros where the position is past the length.
//! The output rows are written whole; the reads interleave the page's `kv_heads` runs, which the
//! IR cannot reorder without a transpose (reading run after run and storing 256-byte pieces of
//! the rows measured no faster). A pure copy: the tolerance is 0. With `prefetch = 1` (a knob;
//! the default is 0) it first looks up the positions of program `(c, t + 1, s)` and prefetches
//! their rows: pages are scattered, so the hardware prefetcher stops at every page's end, and the
//! next program's rows are then on their way while this one copies.

use super::{
    ensure_i32_indexable, i32_buffer, max_blocks, pool_blocks, random_block_tables, random_context_lens, row_start,
    slot_of, PageShape,
};
use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::Cost;
use crate::kernel::{Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::{ensure, KernelError};
use kiln_ir::{DType, KernelBuilder};

const NAME: &str = "paged_kv_gather";

#[derive(Clone, Debug, PartialEq)]
pub struct PagedKvGatherProblem {
    pub batch: u32,
    /// The longest context length: the outputs' sequence dimension.
    pub ctx: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Tokens per cache block (the page size).
    pub block: u32,
    /// Cache and output dtype: f16 or f32.
    pub dtype: DType,
}

impl PagedKvGatherProblem {
    fn row(&self) -> u64 {
        self.kv_heads as u64 * self.head_dim as u64
    }

    fn max_blocks(&self) -> u32 {
        max_blocks(self.ctx, self.block)
    }

    fn n_blocks(&self) -> u32 {
        pool_blocks(self.batch, self.max_blocks())
    }

    fn cache_len(&self) -> u64 {
        self.n_blocks() as u64 * self.block as u64 * self.row()
    }

    fn out_len(&self) -> u64 {
        self.batch as u64 * self.ctx as u64 * self.row()
    }
}

impl Problem for PagedKvGatherProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let p = PagedKvGatherProblem {
            batch: r.get("batch")?,
            ctx: r.get("ctx")?,
            kv_heads: r.get("kv_heads")?,
            head_dim: r.get("head_dim")?,
            block: r.get("block")?,
            dtype: parse_dtype(NAME, "dtype", &r.get_or("dtype", "f16".to_string())?, &[DType::F16, DType::F32])?,
        };
        r.finish()?;
        ensure(NAME, p.batch >= 1 && p.ctx >= 1 && p.kv_heads >= 1 && p.head_dim >= 1 && p.block >= 1, || {
            "batch, ctx, kv_heads, head_dim and block must be at least 1".into()
        })?;
        ensure(NAME, p.batch <= 65_535, || format!("batch = {} exceeds the grid limit 65535", p.batch))?;
        // The pool size is computed in u32; keep it (and every index) well inside i32.
        ensure_i32_indexable(
            NAME,
            "the block pool",
            p.batch as u64 * p.max_blocks() as u64 + super::SPARE_BLOCKS as u64,
        )?;
        ensure_i32_indexable(NAME, "the cache", p.cache_len())?;
        ensure_i32_indexable(NAME, "k_out", p.out_len())?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        Args::new()
            .with("batch", self.batch)
            .with("ctx", self.ctx)
            .with("kv_heads", self.kv_heads)
            .with("head_dim", self.head_dim)
            .with("block", self.block)
            .with("dtype", self.dtype)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PagedKvGatherConfig {
    /// Positions per program.
    pub tokens_per_program: u32,
    /// Elements of one KV head's row per program.
    pub block_cols: u32,
    /// 1: prefetch the rows the next program copies (the next positions of the sequence, found
    /// through the block table) before copying this program's; 0: no hint.
    pub prefetch: u32,
}

const TOKENS_PER_PROGRAM: [u32; 6] = [1, 2, 4, 8, 16, 32];
const BLOCK_COLS: [u32; 5] = [64, 128, 256, 512, 1024];
const PREFETCH: [u32; 2] = [0, 1];

impl Config for PagedKvGatherConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = PagedKvGatherConfig {
            tokens_per_program: r.one_of("tokens_per_program", &TOKENS_PER_PROGRAM)?,
            block_cols: r.one_of("block_cols", &BLOCK_COLS)?,
            // Optional, so that configs tuned before the knob existed still read.
            prefetch: r.get_or("prefetch", 0)?,
        };
        r.finish()?;
        ensure(NAME, PREFETCH.contains(&c.prefetch), || {
            format!("prefetch = {} is not one of {PREFETCH:?}", c.prefetch)
        })?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new()
            .with("tokens_per_program", self.tokens_per_program)
            .with("block_cols", self.block_cols)
            .with("prefetch", self.prefetch)
    }
}

pub struct PagedKvGather;

impl TileKernel for PagedKvGather {
    type Problem = PagedKvGatherProblem;
    type Config = PagedKvGatherConfig;

    fn id(&self) -> KernelId {
        KernelId::PagedKvGather
    }

    fn example_problem(&self) -> Args {
        Args::new().with("batch", 2).with("ctx", 40).with("kv_heads", 3).with("head_dim", 64).with("block", 16)
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![
            Knob {
                name: "tokens_per_program",
                values: TOKENS_PER_PROGRAM.map(i64::from).to_vec(),
                help: "positions copied per program",
            },
            Knob {
                name: "block_cols",
                values: BLOCK_COLS.map(i64::from).to_vec(),
                help: "elements of one KV head's row per program",
            },
            Knob {
                name: "prefetch",
                values: PREFETCH.map(i64::from).to_vec(),
                help: "1 prefetches the next program's rows before copying this program's",
            },
        ]
    }

    fn default_config(&self, p: &PagedKvGatherProblem) -> PagedKvGatherConfig {
        // A whole head row per program when it fits in 1024 elements, and about 4096 elements a
        // program.
        let block_cols = BLOCK_COLS.into_iter().find(|&b| b >= p.head_dim).unwrap_or(1024);
        let want = (4096 / (block_cols * p.kv_heads)).min(p.ctx.next_power_of_two());
        let tokens_per_program = TOKENS_PER_PROGRAM.into_iter().rev().find(|&t| t <= want).unwrap_or(1);
        // The look-ahead measured no gain on the CPU with slot-major pages (32 KiB of contiguous
        // rows, which the hardware prefetcher streams); it stays a knob for the tuner.
        PagedKvGatherConfig { tokens_per_program, block_cols, prefetch: 0 }
    }

    fn space(&self, p: &PagedKvGatherProblem, limits: &SpaceLimits) -> Vec<PagedKvGatherConfig> {
        let cover_cols = BLOCK_COLS.into_iter().find(|&b| b >= p.head_dim).unwrap_or(1024);
        let cover_tokens = TOKENS_PER_PROGRAM.into_iter().find(|&t| t >= p.ctx).unwrap_or(32);
        let mut space = Vec::new();
        for &tokens_per_program in TOKENS_PER_PROGRAM.iter().filter(|&&t| t <= cover_tokens) {
            for &block_cols in BLOCK_COLS.iter().filter(|&&b| b <= cover_cols) {
                let elements = tokens_per_program as u64 * p.kv_heads as u64 * block_cols as u64;
                let fits = elements <= limits.max_tile_elements;
                // Grid y must stay within 65535 programs.
                if fits && p.ctx.div_ceil(tokens_per_program) <= 65_535 {
                    for &prefetch in &PREFETCH {
                        space.push(PagedKvGatherConfig { tokens_per_program, block_cols, prefetch });
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

    fn plan(&self, p: &PagedKvGatherProblem, c: &PagedKvGatherConfig) -> Result<Plan, KernelError> {
        let chunks = p.head_dim.div_ceil(c.block_cols);
        let grid = [chunks, p.ctx.div_ceil(c.tokens_per_program), p.batch];
        ensure(NAME, grid[1] <= 65_535, || {
            format!("ctx / tokens_per_program = {} programs exceeds the grid limit 65535", grid[1])
        })?;

        let b = KernelBuilder::new(NAME);
        let k_cache = b.buffer("k_cache", p.dtype);
        let v_cache = b.buffer("v_cache", p.dtype);
        let block_tables = b.buffer("block_tables", DType::I32);
        let context_lens = b.buffer("context_lens", DType::I32);
        let k_out = b.buffer("k_out", p.dtype);
        let v_out = b.buffer("v_out", p.dtype);
        let ctx = b.scalar("ctx", DType::I32);
        let row = b.scalar("row", DType::I32);
        let block = b.scalar("block", DType::I32);
        let max_blocks = b.scalar("max_blocks", DType::I32);

        let seq = b.program_id(2);
        let len = b.load(context_lens, seq);
        let pos = b.program_id(1) * c.tokens_per_program as i32 + b.arange(0, c.tokens_per_program as i32);
        let (d, n_kv) = (p.head_dim as i32, p.kv_heads as i32);
        let first_dim = b.program_id(0) * c.block_cols as i32;
        let dims = first_dim + b.arange(0, c.block_cols as i32);
        // Each position's row of KV head 0: `(block_id · kv_heads · block + offset) · head_dim`;
        // head h's row is `h · block · head_dim` further.
        let page_row = |block_id, pos| (block_id * n_kv * block + pos % block) * d;
        let head_stride = block * d;
        let live = pos.lt(len);
        // Only live positions look their block up, so table entries past the length are never read.
        let block_id = b.load_masked(block_tables, seq * max_blocks + pos / block, live, 0i32);
        let ahead = (c.prefetch == 1).then(|| {
            // The next program along the grid's y axis copies the next positions of this
            // sequence, usually from another page: no hardware prefetcher follows the block table
            // there, so ask for its rows (head by head, below) before this program's copies wait
            // on their own.
            let ahead = pos + c.tokens_per_program as i32;
            let ahead_live = ahead.lt(len);
            let ahead_block = b.load_masked(block_tables, seq * max_blocks + ahead / block, ahead_live, 0i32);
            (page_row(ahead_block, ahead) + first_dim, ahead_live)
        });
        // A `[tokens, kv_heads, block_cols]` tile: every KV head of these positions in one
        // program, so that the output rows are written whole.
        let heads = b.arange(0, n_kv).expand_dims(0).expand_dims(2);
        let dims3 = dims.expand_dims(0).expand_dims(0);
        let src = page_row(block_id, pos).expand_dims(1).expand_dims(2) + heads * head_stride + dims3;
        let dst = ((seq * ctx + pos) * row).expand_dims(1).expand_dims(2) + heads * d + dims3;
        let col_ok = dims3.lt(d);
        let load_mask = live.expand_dims(1).expand_dims(2) & col_ok;
        let store_mask = pos.lt(ctx).expand_dims(1).expand_dims(2) & col_ok;
        if let Some((ahead_src, ahead_live)) = ahead {
            // One hint per position and head; the hint is `block_cols` elements long.
            let hints = [c.tokens_per_program * p.kv_heads];
            let ahead_src = (ahead_src.col() + (b.arange(0, n_kv) * head_stride).row()).reshape(&hints);
            let ahead_live = (ahead_live.col() & b.arange(0, n_kv).ge(0).row()).reshape(&hints);
            b.prefetch(k_cache, ahead_src, Some(ahead_live), c.block_cols);
            b.prefetch(v_cache, ahead_src, Some(ahead_live), c.block_cols);
        }
        // Positions past the length load the `other` value 0, which is what they must hold.
        b.store_masked(k_out, dst, b.load_masked(k_cache, src, load_mask, 0.0), store_mask);
        b.store_masked(v_out, dst, b.load_masked(v_cache, src, load_mask, 0.0), store_mask);
        let kernel = b.finish().map_err(|source| KernelError::Build { kernel: NAME, source })?;

        let spec = |name: &str, dtype, len: u64, role| BufferSpec { name: name.into(), dtype, len: len as usize, role };
        Ok(Plan {
            buffers: vec![
                spec("k_cache", p.dtype, p.cache_len(), Role::Input),
                spec("v_cache", p.dtype, p.cache_len(), Role::Input),
                spec("block_tables", DType::I32, p.batch as u64 * p.max_blocks() as u64, Role::Input),
                spec("context_lens", DType::I32, p.batch as u64, Role::Input),
                spec("k_out", p.dtype, p.out_len(), Role::Output),
                spec("v_out", p.dtype, p.out_len(), Role::Output),
            ],
            launches: vec![Launch {
                kernel,
                grid,
                args: vec![
                    buf("k_cache"),
                    buf("v_cache"),
                    buf("block_tables"),
                    buf("context_lens"),
                    buf("k_out"),
                    buf("v_out"),
                    i32_arg(p.ctx as i64),
                    i32_arg(p.row() as i64),
                    i32_arg(p.block as i64),
                    i32_arg(p.max_blocks() as i64),
                ],
            }],
        })
    }

    fn inputs(&self, p: &PagedKvGatherProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let lens = random_context_lens(&mut rng, p.batch, p.ctx, 1);
        let tables = random_block_tables(&mut rng, &lens, p.block, p.max_blocks(), p.n_blocks());
        let cache_len = p.cache_len() as usize;
        Buffers::from([
            ("k_cache".to_string(), random::uniform(&mut rng, p.dtype, cache_len, -2.0, 2.0)),
            ("v_cache".to_string(), random::uniform(&mut rng, p.dtype, cache_len, -2.0, 2.0)),
            ("block_tables".to_string(), i32_buffer(tables)),
            ("context_lens".to_string(), i32_buffer(lens)),
        ])
    }

    fn reference(&self, p: &PagedKvGatherProblem, inputs: &Buffers) -> Reference {
        let (row, block, ctx, d) = (p.row() as usize, p.block as usize, p.ctx as usize, p.head_dim as usize);
        let shape = PageShape { block, kv_heads: p.kv_heads as usize, head_dim: d };
        let max_blocks = p.max_blocks() as usize;
        let lens = inputs["context_lens"].to_f64();
        let tables = inputs["block_tables"].to_f64();
        let mut out = Reference::new();
        for (cache, name) in [("k_cache", "k_out"), ("v_cache", "v_out")] {
            let cache = inputs[cache].to_f64();
            let mut dense = vec![0.0; p.out_len() as usize];
            for (s, &len) in lens.iter().enumerate() {
                let table = &tables[s * max_blocks..(s + 1) * max_blocks];
                for pos in 0..len as usize {
                    let slot = slot_of(table, block, pos);
                    for h in 0..shape.kv_heads {
                        let (src, dst) = (row_start(shape, slot, h), (s * ctx + pos) * row + h * d);
                        dense[dst..dst + d].copy_from_slice(&cache[src..src + d]);
                    }
                }
            }
            out.insert(name.to_string(), dense);
        }
        out
    }

    fn tolerance(&self, _p: &PagedKvGatherProblem, _dtype: DType) -> f64 {
        // A copy: every element must be exact.
        0.0
    }

    fn cost(&self, p: &PagedKvGatherProblem, plan: &Plan, inputs: &Buffers) -> Cost {
        // K and V of each sequence's context read once and both outputs written once; pages no
        // sequence uses are not work.
        let keys: u64 = inputs.get("context_lens").map_or(0, |l| l.to_f64().iter().map(|&x| x as u64).sum());
        let row = p.kv_heads as u64 * p.head_dim as u64 * p.dtype.size_bytes() as u64;
        let written: u64 = plan
            .buffers
            .iter()
            .filter(|b| b.role == Role::Output)
            .map(|b| b.len as u64 * b.dtype.size_bytes() as u64)
            .sum();
        Cost { bytes: 2 * keys * row + written, flops: 0 }
    }
}
