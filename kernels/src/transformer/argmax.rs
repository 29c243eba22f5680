//! `argmax`: per row of `logits`, the i32 index of the maximum. **Ties go to the smallest index**
//! (as `torch.argmax` and llama.cpp's greedy sampler do), so greedy decoding is deterministic
//! whatever the block size.
//!
//! Layouts (row-major): `logits` `[rows, vocab]` of `dtype` (f32 or f16, Input), `out` `[rows]`
//! i32 (Output).
//!
//! One program per row (grid x). A loop over `block`-wide pieces carries the best value so far
//! and its index. Each piece finds its maximum and the smallest index holding it (a reduce-min
//! written as `-max(-i)`), and replaces the carried pair only if its maximum is strictly
//! greater: an equal maximum in a later piece lies at a larger index, so the earlier one stays.
//! Comparisons are exact (f16 widens to f32 exactly). NaNs are skipped (`max` is maxNum and
//! `NaN == m` is false); a row with no value above -inf gives index 0.

use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::{Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::tiles::{blocks_for, covering};
use crate::{ensure, KernelError};
use kiln_ir::interp::HostBuffer;
use kiln_ir::{DType, KernelBuilder};
use rand::Rng;

const NAME: &str = "argmax";

#[derive(Clone, Debug, PartialEq)]
pub struct ArgmaxProblem {
    pub rows: u32,
    pub vocab: u32,
    /// Dtype of `logits`: f32 or f16.
    pub dtype: DType,
}

impl Problem for ArgmaxProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let rows = r.get("rows")?;
        let vocab = r.get("vocab")?;
        let dtype: String = r.get_or("dtype", "f32".to_string())?;
        r.finish()?;
        let dtype = parse_dtype(NAME, "dtype", &dtype, &[DType::F32, DType::F16])?;
        let p = ArgmaxProblem { rows, vocab, dtype };
        ensure(NAME, p.rows >= 1 && p.vocab >= 1, || "rows and vocab must be at least 1".into())?;
        ensure(NAME, u64::from(p.rows) * u64::from(p.vocab) <= i32::MAX as u64, || {
            format!("rows · vocab = {} exceeds the i32 offset range", u64::from(p.rows) * u64::from(p.vocab))
        })?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        Args::new().with("rows", self.rows).with("vocab", self.vocab).with("dtype", self.dtype)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct ArgmaxConfig {
    /// Columns per piece of the row.
    pub block: u32,
}

impl Config for ArgmaxConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = ArgmaxConfig { block: r.one_of("block", &BLOCKS)? };
        r.finish()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("block", self.block)
    }
}

const BLOCKS: [u32; 7] = [64, 128, 256, 512, 1024, 2048, 4096];

pub struct Argmax;

impl TileKernel for Argmax {
    type Problem = ArgmaxProblem;
    type Config = ArgmaxConfig;

    fn id(&self) -> KernelId {
        KernelId::Argmax
    }

    fn example_problem(&self) -> Args {
        Args::new().with("rows", 2).with("vocab", 1000).with("dtype", "f32")
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob { name: "block", values: BLOCKS.map(i64::from).to_vec(), help: "columns per piece of the row" }]
    }

    fn default_config(&self, p: &ArgmaxProblem) -> ArgmaxConfig {
        ArgmaxConfig { block: covering(&BLOCKS, p.vocab.min(1024)) }
    }

    fn space(&self, p: &ArgmaxProblem, limits: &SpaceLimits) -> Vec<ArgmaxConfig> {
        let mut space: Vec<ArgmaxConfig> = blocks_for(&BLOCKS, p.vocab, limits.max_tile_elements)
            .into_iter()
            .map(|block| ArgmaxConfig { block })
            .collect();
        let default = self.default_config(p);
        if !space.contains(&default) {
            space.push(default);
        }
        space
    }

    fn plan(&self, p: &ArgmaxProblem, c: &ArgmaxConfig) -> Result<Plan, KernelError> {
        ensure(NAME, BLOCKS.contains(&c.block), || format!("block = {} is not one of {BLOCKS:?}", c.block))?;
        let kernel = build(p, c).map_err(|source| KernelError::Build { kernel: NAME, source })?;
        Ok(Plan {
            buffers: vec![
                BufferSpec {
                    name: "logits".into(),
                    dtype: p.dtype,
                    len: p.rows as usize * p.vocab as usize,
                    role: Role::Input,
                },
                BufferSpec { name: "out".into(), dtype: DType::I32, len: p.rows as usize, role: Role::Output },
            ],
            launches: vec![Launch {
                kernel,
                grid: [p.rows, 1, 1],
                args: vec![buf("logits"), buf("out"), i32_arg(p.vocab.into())],
            }],
        })
    }

    /// Uniform logits, then in about half of the rows the maximum is copied to one to three more
    /// random places, so exact ties at the maximum (before and after the first one, in the same
    /// piece or another) test the tie rule.
    fn inputs(&self, p: &ArgmaxProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let vocab = p.vocab as usize;
        let mut x = random::uniform(&mut rng, p.dtype, p.rows as usize * vocab, -8.0, 8.0).to_f64();
        for row in x.chunks_mut(vocab) {
            if rng.random_bool(0.5) {
                let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                for _ in 0..rng.random_range(1..=3) {
                    row[rng.random_range(0..vocab)] = m;
                }
            }
        }
        // The values came from the rounded buffer, so they convert back exactly.
        Buffers::from([("logits".to_string(), HostBuffer::from_f64(p.dtype, &x))])
    }

    fn reference(&self, p: &ArgmaxProblem, inputs: &Buffers) -> Reference {
        let x = inputs["logits"].to_f64();
        let out = x
            .chunks(p.vocab as usize)
            .map(|row| {
                // Strictly greater: the first of equal maxima wins.
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                best as f64
            })
            .collect();
        Reference::from([("out".to_string(), out)])
    }
}

/// Builds the kernel: one program per row (grid x).
fn build(p: &ArgmaxProblem, c: &ArgmaxConfig) -> Result<kiln_ir::Kernel, kiln_ir::BuildError> {
    use DType::{F32, I32};
    let b = KernelBuilder::new(NAME);
    let (logits, out) = (b.buffer("logits", p.dtype), b.buffer("out", I32));
    let vocab = b.scalar("vocab", I32);
    let row = b.program_id(0);
    let block = c.block as i32;

    let init = [b.constant(f32::NEG_INFINITY, F32).named("best0"), b.constant(0, I32).named("best_idx0")];
    let [_, best_idx] = b.for_range(0, vocab, block, init, |j, [best, best_idx]| {
        let cols = j + b.arange(0, block);
        // Masked lanes read -inf: never strictly above the carried best, and beaten to the
        // piece's minimum index by any real lane holding -inf too.
        let v = b.load_masked(logits, row * vocab + cols, cols.lt(vocab), f32::NEG_INFINITY).cast(F32);
        let piece_max = v.max(0);
        let piece_idx = -(-b.select(v.eq(piece_max), cols, i32::MAX)).max(0);
        let better = piece_max.gt(best);
        [b.select(better, piece_max, best), b.select(better, piece_idx, best_idx)]
    });
    b.store(out, row, best_idx);
    b.finish()
}
