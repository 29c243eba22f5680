//! `paged_kv_append`: writes the K and V rows of new tokens into their paged-cache slots.
//!
//! Buffers (layout of the caches in [`crate::paged`]):
//! - `k_new`, `v_new`: `[tokens, kv_heads, head_dim]` in the cache dtype (inputs);
//! - `slot_mapping`: i32 `[tokens]`, the slot each token goes to; **−1 marks a padding token that
//!   is skipped** (the vLLM convention). Valid slots are distinct (two tokens writing one slot would
//!   race on a GPU);
//! - `k_cache`, `v_cache`: `[n_blocks, kv_heads, block, head_dim]`, updated in place (`InOut`):
//!   every slot not named by `slot_mapping` keeps its old contents.
//!
//! A token's KV head rows are contiguous in `k_new` but `block · head_dim` elements apart in its
//! page. Program `(c, t)` of the grid `[ceil(head_dim / block_cols), ceil(tokens /
//! tokens_per_program)]` copies a `[tokens_per_program, kv_heads, block_cols]` tile of K and of V,
//! columns `c · block_cols ..` of every head: it loads the tokens' slots, and masks off padding
//! tokens, tokens past the end and columns past the head. It is a pure copy, so the result must
//! match the reference exactly (tolerance 0).

use super::{ensure_i32_indexable, i32_buffer, row_start, PageShape};
use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::{Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::{ensure, KernelError};
use kiln_ir::{DType, KernelBuilder};
use rand::seq::index;
use rand::Rng;

const NAME: &str = "paged_kv_append";

#[derive(Clone, Debug, PartialEq)]
pub struct PagedKvAppendProblem {
    /// New tokens (padding tokens included).
    pub tokens: u32,
    pub kv_heads: u32,
    pub head_dim: u32,
    /// Tokens per cache block (the page size).
    pub block: u32,
    /// Blocks in the cache pool.
    pub n_blocks: u32,
    /// Cache dtype (and of `k_new` / `v_new`): f16 or f32.
    pub dtype: DType,
}

impl PagedKvAppendProblem {
    /// Elements of one token's row: `kv_heads · head_dim`.
    fn row(&self) -> u64 {
        self.kv_heads as u64 * self.head_dim as u64
    }

    fn cache_len(&self) -> u64 {
        self.n_blocks as u64 * self.block as u64 * self.row()
    }
}

impl Problem for PagedKvAppendProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let p = PagedKvAppendProblem {
            tokens: r.get("tokens")?,
            kv_heads: r.get("kv_heads")?,
            head_dim: r.get("head_dim")?,
            block: r.get("block")?,
            n_blocks: r.get("n_blocks")?,
            dtype: parse_dtype(NAME, "dtype", &r.get_or("dtype", "f16".to_string())?, &[DType::F16, DType::F32])?,
        };
        r.finish()?;
        ensure(NAME, p.tokens >= 1 && p.kv_heads >= 1 && p.head_dim >= 1 && p.block >= 1 && p.n_blocks >= 1, || {
            "tokens, kv_heads, head_dim, block and n_blocks must be at least 1".into()
        })?;
        ensure(NAME, p.tokens as u64 <= p.n_blocks as u64 * p.block as u64, || {
            format!(
                "tokens = {} exceeds the cache's n_blocks · block = {} slots",
                p.tokens,
                p.n_blocks as u64 * p.block as u64
            )
        })?;
        ensure_i32_indexable(NAME, "the cache", p.cache_len())?;
        ensure_i32_indexable(NAME, "k_new", p.tokens as u64 * p.row())?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        Args::new()
            .with("tokens", self.tokens)
            .with("kv_heads", self.kv_heads)
            .with("head_dim", self.head_dim)
            .with("block", self.block)
            .with("n_blocks", self.n_blocks)
            .with("dtype", self.dtype)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PagedKvAppendConfig {
    /// Tokens per program.
    pub tokens_per_program: u32,
    /// Elements of one KV head's row per program.
    pub block_cols: u32,
}

const TOKENS_PER_PROGRAM: [u32; 5] = [1, 2, 4, 8, 16];
const BLOCK_COLS: [u32; 5] = [64, 128, 256, 512, 1024];

impl Config for PagedKvAppendConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = PagedKvAppendConfig {
            tokens_per_program: r.one_of("tokens_per_program", &TOKENS_PER_PROGRAM)?,
            block_cols: r.one_of("block_cols", &BLOCK_COLS)?,
        };
        r.finish()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("tokens_per_program", self.tokens_per_program).with("block_cols", self.block_cols)
    }
}

pub struct PagedKvAppend;

impl TileKernel for PagedKvAppend {
    type Problem = PagedKvAppendProblem;
    type Config = PagedKvAppendConfig;

    fn id(&self) -> KernelId {
        KernelId::PagedKvAppend
    }

    fn example_problem(&self) -> Args {
        // One decode token for each of 4 sequences of SmolLM2's KV shape (3 KV heads of 64).
        Args::new().with("tokens", 4).with("kv_heads", 3).with("head_dim", 64).with("block", 16).with("n_blocks", 32)
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![
            Knob {
                name: "tokens_per_program",
                values: TOKENS_PER_PROGRAM.map(i64::from).to_vec(),
                help: "tokens copied per program",
            },
            Knob {
                name: "block_cols",
                values: BLOCK_COLS.map(i64::from).to_vec(),
                help: "elements of one KV head's row per program",
            },
        ]
    }

    fn default_config(&self, p: &PagedKvAppendProblem) -> PagedKvAppendConfig {
        // A whole head row per program when it fits in 1024 elements; tokens grouped so that a
        // program moves about 2048 elements, but never more tokens than there are.
        let block_cols = BLOCK_COLS.into_iter().find(|&b| b >= p.head_dim).unwrap_or(1024);
        let want = (2048 / (block_cols * p.kv_heads)).min(p.tokens.next_power_of_two());
        let tokens_per_program = TOKENS_PER_PROGRAM.into_iter().rev().find(|&t| t <= want).unwrap_or(1);
        PagedKvAppendConfig { tokens_per_program, block_cols }
    }

    fn space(&self, p: &PagedKvAppendProblem, limits: &SpaceLimits) -> Vec<PagedKvAppendConfig> {
        // Tiles wider than the row or taller than the token count only mask work away; keep the
        // smallest that covers each.
        let cover_cols = BLOCK_COLS.into_iter().find(|&b| b >= p.head_dim).unwrap_or(1024);
        let cover_tokens = TOKENS_PER_PROGRAM.into_iter().find(|&t| t >= p.tokens).unwrap_or(16);
        let mut space = Vec::new();
        for &tokens_per_program in TOKENS_PER_PROGRAM.iter().filter(|&&t| t <= cover_tokens) {
            for &block_cols in BLOCK_COLS.iter().filter(|&&b| b <= cover_cols) {
                if tokens_per_program as u64 * p.kv_heads as u64 * block_cols as u64 <= limits.max_tile_elements {
                    space.push(PagedKvAppendConfig { tokens_per_program, block_cols });
                }
            }
        }
        let default = self.default_config(p);
        if !space.contains(&default) {
            space.push(default);
        }
        space
    }

    fn plan(&self, p: &PagedKvAppendProblem, c: &PagedKvAppendConfig) -> Result<Plan, KernelError> {
        let grid = [p.head_dim.div_ceil(c.block_cols), p.tokens.div_ceil(c.tokens_per_program), 1];
        ensure(NAME, grid[1] <= 65_535, || {
            format!("tokens / tokens_per_program = {} programs exceeds the grid limit 65535", grid[1])
        })?;
        let (block, d, n_kv) = (p.block as i32, p.head_dim as i32, p.kv_heads as i32);

        let b = KernelBuilder::new(NAME);
        let k_new = b.buffer("k_new", p.dtype);
        let v_new = b.buffer("v_new", p.dtype);
        let slot_mapping = b.buffer("slot_mapping", DType::I32);
        let k_cache = b.buffer("k_cache", p.dtype);
        let v_cache = b.buffer("v_cache", p.dtype);
        let tokens = b.scalar("tokens", DType::I32);
        let row = b.scalar("row", DType::I32);

        let t = b.program_id(1) * c.tokens_per_program as i32 + b.arange(0, c.tokens_per_program as i32);
        let in_range = t.lt(tokens);
        // Tokens past the end read as padding, so one mask covers both.
        let slot = b.load_masked(slot_mapping, t, in_range, -1i32);
        let dims =
            (b.program_id(0) * c.block_cols as i32 + b.arange(0, c.block_cols as i32)).expand_dims(0).expand_dims(0);
        let heads = b.arange(0, n_kv).expand_dims(0).expand_dims(2);
        let mask = slot.ge(0).expand_dims(1).expand_dims(2) & dims.lt(d);
        let src = (t * row).expand_dims(1).expand_dims(2) + heads * d + dims;
        // The slot's row of head h: `((block_id · kv_heads + h) · block + offset) · d`.
        let page_row = (slot / block * (n_kv * block) + slot % block) * d;
        let dst = page_row.expand_dims(1).expand_dims(2) + heads * (block * d) + dims;
        b.store_masked(k_cache, dst, b.load_masked(k_new, src, mask, 0.0), mask);
        b.store_masked(v_cache, dst, b.load_masked(v_new, src, mask, 0.0), mask);
        let kernel = b.finish().map_err(|source| KernelError::Build { kernel: NAME, source })?;

        let new_len = p.tokens as usize * p.row() as usize;
        let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
        Ok(Plan {
            buffers: vec![
                spec("k_new", p.dtype, new_len, Role::Input),
                spec("v_new", p.dtype, new_len, Role::Input),
                spec("slot_mapping", DType::I32, p.tokens as usize, Role::Input),
                spec("k_cache", p.dtype, p.cache_len() as usize, Role::InOut),
                spec("v_cache", p.dtype, p.cache_len() as usize, Role::InOut),
            ],
            launches: vec![Launch {
                kernel,
                grid,
                args: vec![
                    buf("k_new"),
                    buf("v_new"),
                    buf("slot_mapping"),
                    buf("k_cache"),
                    buf("v_cache"),
                    i32_arg(p.tokens as i64),
                    i32_arg(p.row() as i64),
                ],
            }],
        })
    }

    fn inputs(&self, p: &PagedKvAppendProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let new_len = p.tokens as usize * p.row() as usize;
        let cache_len = p.cache_len() as usize;
        // Distinct slots scattered over the pool; about one token in five is padding (−1), and
        // with two or more tokens at least one is.
        let n_slots = p.n_blocks as usize * p.block as usize;
        let mut slots: Vec<i32> =
            index::sample(&mut rng, n_slots, p.tokens as usize).into_iter().map(|s| s as i32).collect();
        for s in slots.iter_mut() {
            if rng.random_range(0..5) == 0 {
                *s = -1;
            }
        }
        if p.tokens >= 2 && !slots.contains(&-1) {
            let t = rng.random_range(0..slots.len());
            slots[t] = -1;
        }
        Buffers::from([
            ("k_new".to_string(), random::uniform(&mut rng, p.dtype, new_len, -2.0, 2.0)),
            ("v_new".to_string(), random::uniform(&mut rng, p.dtype, new_len, -2.0, 2.0)),
            ("slot_mapping".to_string(), i32_buffer(slots)),
            ("k_cache".to_string(), random::uniform(&mut rng, p.dtype, cache_len, -1.0, 1.0)),
            ("v_cache".to_string(), random::uniform(&mut rng, p.dtype, cache_len, -1.0, 1.0)),
        ])
    }

    fn reference(&self, p: &PagedKvAppendProblem, inputs: &Buffers) -> Reference {
        let (row, d) = (p.row() as usize, p.head_dim as usize);
        let shape = PageShape { block: p.block as usize, kv_heads: p.kv_heads as usize, head_dim: d };
        let slots = inputs["slot_mapping"].to_f64();
        let mut out = Reference::new();
        for (new, cache) in [("k_new", "k_cache"), ("v_new", "v_cache")] {
            let new = inputs[new].to_f64();
            let mut expected = inputs[cache].to_f64();
            for (t, &slot) in slots.iter().enumerate() {
                if slot < 0.0 {
                    continue;
                }
                for h in 0..shape.kv_heads {
                    let dst = row_start(shape, slot as usize, h);
                    expected[dst..dst + d].copy_from_slice(&new[t * row + h * d..t * row + (h + 1) * d]);
                }
            }
            out.insert(cache.to_string(), expected);
        }
        out
    }

    fn tolerance(&self, _p: &PagedKvAppendProblem, _dtype: DType) -> f64 {
        // A copy: every element must be exact.
        0.0
    }
}
