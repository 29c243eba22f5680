//! `embedding`: `out[t, :] = dequant(table[ids[t], :])` from a Q8_0 table.
//!
//! Layouts (row-major): `ids` i32 `[tokens]` (Input); the table as `qs` i8 `[vocab, dim]` and
//! `scales` f16 `[vocab, dim / 32]` (Input, see [`crate::q8`]); `out` `[tokens, dim]` of `dtype`
//! (f32 or f16, Output).
//!
//! Grid: `[tokens, ceil(dim / block)]`; program `(t, y)` writes columns `y · block ..` of token
//! `t`'s row. `q · d` is exact in f32, so an f32 output is exact and an f16 one is rounded once.
//! An id outside `0..vocab` is routed to row -1, whose every offset is negative: it always fails
//! as an out-of-bounds load in the interpreter, instead of the i32 offset `id · dim` wrapping
//! around into some valid row.

use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::{Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::q8::{dequant, Q8_BLOCK};
use crate::random;
use crate::registry::KernelId;
use crate::tiles::{blocks_for, covering};
use crate::{ensure, KernelError};
use kiln_ir::{DType, KernelBuilder};

const NAME: &str = "embedding";

#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingProblem {
    pub tokens: u32,
    /// Rows of the table.
    pub vocab: u32,
    /// Columns of the table, a multiple of 32.
    pub dim: u32,
    /// Dtype of `out`: f32 or f16.
    pub dtype: DType,
}

impl Problem for EmbeddingProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let tokens = r.get("tokens")?;
        let vocab = r.get("vocab")?;
        let dim = r.get("dim")?;
        let dtype: String = r.get_or("dtype", "f32".to_string())?;
        r.finish()?;
        let dtype = parse_dtype(NAME, "dtype", &dtype, &[DType::F32, DType::F16])?;
        let p = EmbeddingProblem { tokens, vocab, dim, dtype };
        ensure(NAME, p.tokens >= 1 && p.vocab >= 1 && p.dim >= 1, || {
            "tokens, vocab and dim must be at least 1".into()
        })?;
        ensure(NAME, p.dim.is_multiple_of(Q8_BLOCK as u32), || {
            format!("dim = {} is not a multiple of the Q8_0 block 32", p.dim)
        })?;
        let biggest = u64::from(p.vocab.max(p.tokens)) * u64::from(p.dim);
        ensure(NAME, biggest <= i32::MAX as u64, || {
            format!("a buffer of {biggest} elements exceeds the i32 offset range")
        })?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        Args::new()
            .with("tokens", self.tokens)
            .with("vocab", self.vocab)
            .with("dim", self.dim)
            .with("dtype", self.dtype)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct EmbeddingConfig {
    /// Columns per program, a multiple of 32.
    pub block: u32,
}

impl Config for EmbeddingConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = EmbeddingConfig { block: r.one_of("block", &BLOCKS)? };
        r.finish()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("block", self.block)
    }
}

/// Multiples of the Q8_0 block, so a program holds whole blocks.
const BLOCKS: [u32; 6] = [32, 64, 128, 256, 512, 1024];

pub struct Embedding;

impl TileKernel for Embedding {
    type Problem = EmbeddingProblem;
    type Config = EmbeddingConfig;

    fn id(&self) -> KernelId {
        KernelId::Embedding
    }

    fn example_problem(&self) -> Args {
        Args::new().with("tokens", 4).with("vocab", 1000).with("dim", 576).with("dtype", "f32")
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob { name: "block", values: BLOCKS.map(i64::from).to_vec(), help: "columns per program" }]
    }

    fn default_config(&self, p: &EmbeddingProblem) -> EmbeddingConfig {
        EmbeddingConfig { block: covering(&BLOCKS, p.dim.min(1024)) }
    }

    fn space(&self, p: &EmbeddingProblem, limits: &SpaceLimits) -> Vec<EmbeddingConfig> {
        let mut space: Vec<EmbeddingConfig> = blocks_for(&BLOCKS, p.dim, limits.max_tile_elements)
            .into_iter()
            .filter(|&block| p.dim.div_ceil(block) <= 65_535)
            .map(|block| EmbeddingConfig { block })
            .collect();
        let default = self.default_config(p);
        if !space.contains(&default) {
            space.push(default);
        }
        space
    }

    fn plan(&self, p: &EmbeddingProblem, c: &EmbeddingConfig) -> Result<Plan, KernelError> {
        ensure(NAME, BLOCKS.contains(&c.block), || format!("block = {} is not one of {BLOCKS:?}", c.block))?;
        let grid_y = p.dim.div_ceil(c.block);
        ensure(NAME, grid_y <= 65_535, || format!("{grid_y} column blocks exceed the grid limit 65535 (raise block)"))?;
        let kernel = build(p, c).map_err(|source| KernelError::Build { kernel: NAME, source })?;
        let (tokens, vocab, dim) = (p.tokens as usize, p.vocab as usize, p.dim as usize);
        let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
        Ok(Plan {
            buffers: vec![
                spec("ids", DType::I32, tokens, Role::Input),
                spec("qs", DType::I8, vocab * dim, Role::Input),
                spec("scales", DType::F16, vocab * (dim / Q8_BLOCK), Role::Input),
                spec("out", p.dtype, tokens * dim, Role::Output),
            ],
            launches: vec![Launch {
                kernel,
                grid: [p.tokens, grid_y, 1],
                args: vec![
                    buf("ids"),
                    buf("qs"),
                    buf("scales"),
                    buf("out"),
                    i32_arg(p.vocab.into()),
                    i32_arg(p.dim.into()),
                ],
            }],
        })
    }

    fn inputs(&self, p: &EmbeddingProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let (tokens, vocab, dim) = (p.tokens as usize, p.vocab as usize, p.dim as usize);
        Buffers::from([
            ("ids".to_string(), random::integers(&mut rng, DType::I32, tokens, 0, i64::from(p.vocab))),
            ("qs".to_string(), random::integers(&mut rng, DType::I8, vocab * dim, -128, 128)),
            ("scales".to_string(), random::uniform(&mut rng, DType::F16, vocab * (dim / Q8_BLOCK), 0.002, 0.02)),
        ])
    }

    fn reference(&self, p: &EmbeddingProblem, inputs: &Buffers) -> Reference {
        let (ids, qs, scales) = (inputs["ids"].to_f64(), inputs["qs"].to_f64(), inputs["scales"].to_f64());
        let dim = p.dim as usize;
        let mut out = Vec::with_capacity(ids.len() * dim);
        for &id in &ids {
            // An id outside the table has no embedding (the kernel faults on it).
            let valid = (0.0..f64::from(p.vocab)).contains(&id);
            out.extend((0..dim).map(|c| if valid { dequant(&qs, &scales, dim, id as usize, c) } else { f64::NAN }));
        }
        Reference::from([("out".to_string(), out)])
    }
}

/// Builds the kernel: program `(t, y)` writes columns `y · block ..` of token `t`.
fn build(p: &EmbeddingProblem, c: &EmbeddingConfig) -> Result<kiln_ir::Kernel, kiln_ir::BuildError> {
    use DType::{F16, F32, I32, I8};
    let b = KernelBuilder::new(NAME);
    let (ids, qs, scales, out) =
        (b.buffer("ids", I32), b.buffer("qs", I8), b.buffer("scales", F16), b.buffer("out", p.dtype));
    let (vocab, dim) = (b.scalar("vocab", I32), b.scalar("dim", I32));
    let (t, block) = (b.program_id(0), c.block as i32);
    let q8 = Q8_BLOCK as i32;

    let id = b.load(ids, t);
    let row = b.select(id.ge(0) & id.lt(vocab), id, -1).named("row");
    let col0 = b.program_id(1) * block;
    let cols = col0 + b.arange(0, block);
    let col_ok = cols.lt(dim);
    let q = b.load_masked(qs, row * dim + cols, col_ok, 0i8).cast(F32);
    // One scale per 32 columns, broadcast over its block.
    let blocks = col0 / q8 + b.arange(0, block / q8);
    let d = b.load_masked(scales, row * (dim / q8) + blocks, blocks.lt(dim / q8), 0.0).cast(F32);
    let values = (q.reshape(&[c.block / 32, 32]) * d.col()).reshape(&[c.block]);
    b.store_masked(out, t * dim + cols, values.cast(p.dtype), col_ok);
    b.finish()
}
