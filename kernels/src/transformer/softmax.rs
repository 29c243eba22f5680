//! `softmax` with temperature: `out[r, :] = softmax(x[r, :] / T)` for a runtime scalar `T > 0`.
//!
//! Layouts (row-major): `x` `[rows, vocab]` of `dtype` (f32 or f16, Input), `out` `[rows, vocab]`
//! f32 (Output; probabilities feed sampling, where f16 would flush small ones to zero). `T` is
//! the f32 scalar parameter `temperature`.
//!
//! One program per row (grid x), online softmax as in `examples/online_softmax.rs`: a first loop
//! over `block`-wide pieces keeps the running maximum `m` of `x / T` and the running sum `l` of
//! `exp(x / T - m)`, rescaling `l` when `m` grows; a second loop writes `exp(x / T - m) / l`.
//! Everything is f32; `x / T` is a true division (not a multiplication by a rounded `1 / T`),
//! so `T = 1` is exactly plain softmax.

use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::{Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, f32_arg, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::tiles::{blocks_for, covering, tile_fn};
use crate::{ensure, KernelError};
use kiln_ir::{DType, KernelBuilder};

const NAME: &str = "softmax";

#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxProblem {
    pub rows: u32,
    pub vocab: u32,
    /// Dtype of `x`: f32 or f16 (`out` is always f32).
    pub dtype: DType,
    /// `T > 0`; the kernel gets it rounded to f32.
    pub temperature: f64,
}

impl Problem for SoftmaxProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let rows = r.get("rows")?;
        let vocab = r.get("vocab")?;
        let dtype: String = r.get_or("dtype", "f32".to_string())?;
        let temperature: f64 = r.get_or("temperature", 1.0)?;
        r.finish()?;
        let dtype = parse_dtype(NAME, "dtype", &dtype, &[DType::F32, DType::F16])?;
        let p = SoftmaxProblem { rows, vocab, dtype, temperature };
        ensure(NAME, p.rows >= 1 && p.vocab >= 1, || "rows and vocab must be at least 1".into())?;
        // Rounded to f32 (what the kernel sees), T must stay a positive finite number.
        let t32 = p.temperature as f32;
        ensure(NAME, t32 > 0.0 && t32.is_finite(), || {
            format!("temperature = {} must be > 0 and finite (as an f32)", p.temperature)
        })?;
        ensure(NAME, u64::from(p.rows) * u64::from(p.vocab) <= i32::MAX as u64, || {
            format!("rows · vocab = {} exceeds the i32 offset range", u64::from(p.rows) * u64::from(p.vocab))
        })?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        Args::new()
            .with("rows", self.rows)
            .with("vocab", self.vocab)
            .with("dtype", self.dtype)
            .with("temperature", self.temperature)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SoftmaxConfig {
    /// Columns per piece of the row.
    pub block: u32,
}

impl Config for SoftmaxConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = SoftmaxConfig { block: r.one_of("block", &BLOCKS)? };
        r.finish()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("block", self.block)
    }
}

const BLOCKS: [u32; 7] = [64, 128, 256, 512, 1024, 2048, 4096];

pub struct Softmax;

impl TileKernel for Softmax {
    type Problem = SoftmaxProblem;
    type Config = SoftmaxConfig;

    fn id(&self) -> KernelId {
        KernelId::Softmax
    }

    fn example_problem(&self) -> Args {
        Args::new().with("rows", 2).with("vocab", 1000).with("dtype", "f32").with("temperature", 0.7)
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob { name: "block", values: BLOCKS.map(i64::from).to_vec(), help: "columns per piece of the row" }]
    }

    fn default_config(&self, p: &SoftmaxProblem) -> SoftmaxConfig {
        SoftmaxConfig { block: covering(&BLOCKS, p.vocab.min(1024)) }
    }

    fn space(&self, p: &SoftmaxProblem, limits: &SpaceLimits) -> Vec<SoftmaxConfig> {
        let mut space: Vec<SoftmaxConfig> = blocks_for(&BLOCKS, p.vocab, limits.max_tile_elements)
            .into_iter()
            .map(|block| SoftmaxConfig { block })
            .collect();
        let default = self.default_config(p);
        if !space.contains(&default) {
            space.push(default);
        }
        space
    }

    fn plan(&self, p: &SoftmaxProblem, c: &SoftmaxConfig) -> Result<Plan, KernelError> {
        ensure(NAME, BLOCKS.contains(&c.block), || format!("block = {} is not one of {BLOCKS:?}", c.block))?;
        let kernel = build(p, c).map_err(|source| KernelError::Build { kernel: NAME, source })?;
        let len = p.rows as usize * p.vocab as usize;
        Ok(Plan {
            buffers: vec![
                BufferSpec { name: "x".into(), dtype: p.dtype, len, role: Role::Input },
                BufferSpec { name: "out".into(), dtype: DType::F32, len, role: Role::Output },
            ],
            launches: vec![Launch {
                kernel,
                grid: [p.rows, 1, 1],
                args: vec![buf("x"), buf("out"), i32_arg(p.vocab.into()), f32_arg(p.temperature)],
            }],
        })
    }

    fn inputs(&self, p: &SoftmaxProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        // Logit-like spread: wide enough that the maximum matters and exp underflows nowhere.
        let x = random::uniform(&mut rng, p.dtype, p.rows as usize * p.vocab as usize, -8.0, 8.0);
        Buffers::from([("x".to_string(), x)])
    }

    fn reference(&self, p: &SoftmaxProblem, inputs: &Buffers) -> Reference {
        let x = inputs["x"].to_f64();
        // The temperature the kernel sees.
        let t = f64::from(p.temperature as f32);
        let mut out = Vec::with_capacity(x.len());
        for row in x.chunks(p.vocab as usize) {
            let m = row.iter().map(|v| v / t).fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = row.iter().map(|v| (v / t - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            out.extend(e.iter().map(|v| v / sum));
        }
        Reference::from([("out".to_string(), out)])
    }
}

/// Builds the kernel: one program per row (grid x).
fn build(p: &SoftmaxProblem, c: &SoftmaxConfig) -> Result<kiln_ir::Kernel, kiln_ir::BuildError> {
    use DType::F32;
    let b = KernelBuilder::new(NAME);
    let (x, out) = (b.buffer("x", p.dtype), b.buffer("out", F32));
    let (vocab, temperature) = (b.scalar("vocab", DType::I32), b.scalar("temperature", F32));
    let row = b.program_id(0) * vocab;
    let block = c.block as i32;
    // Masked lanes read -inf, which scales to -inf and adds exp(-inf) = 0 to the sum.
    let scaled =
        tile_fn(|cols| b.load_masked(x, row + cols, cols.lt(vocab), f32::NEG_INFINITY).cast(F32) / temperature);

    let init = [b.constant(f32::NEG_INFINITY, F32).named("m0"), b.constant(0.0, F32).named("l0")];
    let [m, l] = b.for_range(0, vocab, block, init, |j, [m, l]| {
        let v = scaled(j + b.arange(0, block));
        let m_new = m.maximum(v.max(0));
        [m_new, l * (m - m_new).exp() + (v - m_new).exp().sum(0)]
    });
    let inv_l = l.recip();
    b.for_range(0, vocab, block, [], |j, []| {
        let cols = j + b.arange(0, block);
        b.store_masked(out, row + cols, (scaled(cols) - m).exp() * inv_l, cols.lt(vocab));
        []
    });
    b.finish()
}
