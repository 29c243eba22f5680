//! `rmsnorm`: `out[t, :] = h[t, :] / sqrt(mean(h[t, :]²) + eps) · w[:]`, where `h = x` or, fused
//! with the residual add (`fused=1`), `h = x + residual`, which is also written back to
//! `residual`.
//!
//! With `deinterleave=1` the norm also writes `out` in the layout the one-token row-loop GEMV of
//! `dequant_gemm_w4` reads (its first launch's `xd` and `xs`, see `dequant_gemm_w4/rowloop.rs`):
//! per block of 32 columns, the 16 even columns then the 16 odd ones as f32 in `xd`
//! `[tokens, dim]`, and their sum in `xs` `[tokens, dim / 32]`. A model step then hands the
//! GEMV its x ready, without a launch of its own for it. The values are `out`'s, rounded to
//! `dtype` and widened back, and the sums are taken in the GEMV launch's order, so the GEMV
//! computes the same bits either way.
//!
//! Layouts (row-major, all of the activation dtype `dtype`): `x` `[tokens, dim]` (Input), `w`
//! `[dim]` (Input), `out` `[tokens, dim]` (Output) and, when fused, `residual` `[tokens, dim]`
//! (InOut: read as the residual stream, left holding `x + residual` rounded to `dtype`).
//!
//! One program per token. Everything is computed in f32; `h` is rounded to `dtype` only where it
//! is stored into `residual`, and `out` once at its store. When `block >= dim` the row is held in
//! one tile and read once; otherwise a first loop over `block`-wide pieces sums `h²` and a second
//! recomputes `h` from the inputs and writes. The second loop recomputes `x + residual` rather
//! than reading back the `residual` it would have written, so no program ever reads its own
//! stores (which a GPU would need a barrier for), and residual is written in that second loop only.

use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::{default_tolerance, Config, Knob, Problem, SpaceLimits, TargetKind, TileKernel};
use crate::plan::{buf, f32_arg, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::tiles::{blocks_for, covering, tile_fn};
use crate::transformer::row_loop_x::{self, Blocks, XD_BLOCK};
use crate::{ensure, KernelError};
use kiln_ir::{DType, KernelBuilder, Tile};

const NAME: &str = "rmsnorm";

#[derive(Clone, Debug, PartialEq)]
pub struct RmsnormProblem {
    pub tokens: u32,
    pub dim: u32,
    /// Dtype of `x`, `w`, `residual` and `out`: f32, f16 or bf16.
    pub dtype: DType,
    pub eps: f64,
    /// Whether the residual add is fused in (`h = x + residual`, written back to `residual`).
    pub fused: bool,
    /// Whether `out` is also written de-interleaved, to `xd` and `xs` (see the module doc).
    pub deinterleave: bool,
}

impl Problem for RmsnormProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let tokens = r.get("tokens")?;
        let dim = r.get("dim")?;
        let dtype: String = r.get_or("dtype", "f32".to_string())?;
        let eps = r.get_or("eps", 1e-5)?;
        let fused: u32 = r.get_or("fused", 0)?;
        let deinterleave: u32 = r.get_or("deinterleave", 0)?;
        r.finish()?;
        let dtype = parse_dtype(NAME, "dtype", &dtype, &[DType::F32, DType::F16, DType::BF16])?;
        ensure(NAME, fused <= 1, || format!("fused = {fused} is not 0 or 1"))?;
        ensure(NAME, deinterleave <= 1, || format!("deinterleave = {deinterleave} is not 0 or 1"))?;
        ensure(NAME, deinterleave == 0 || dim % XD_BLOCK as u32 == 0, || {
            format!("deinterleave = 1 needs dim to be a multiple of {XD_BLOCK}, not {dim}")
        })?;
        let p = RmsnormProblem { tokens, dim, dtype, eps, fused: fused == 1, deinterleave: deinterleave == 1 };
        ensure(NAME, p.tokens >= 1 && p.dim >= 1, || "tokens and dim must be at least 1".into())?;
        ensure(NAME, p.eps.is_finite() && p.eps >= 0.0, || format!("eps = {} must be finite and >= 0", p.eps))?;
        ensure(NAME, u64::from(p.tokens) * u64::from(p.dim) <= i32::MAX as u64, || {
            format!("tokens · dim = {} exceeds the i32 offset range", u64::from(p.tokens) * u64::from(p.dim))
        })?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        let args = Args::new()
            .with("tokens", self.tokens)
            .with("dim", self.dim)
            .with("dtype", self.dtype)
            .with("eps", self.eps)
            .with("fused", u32::from(self.fused));
        // Written only when set, so the keys (and tuning buckets) of plain norms stay as they were.
        if self.deinterleave {
            args.with("deinterleave", 1)
        } else {
            args
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct RmsnormConfig {
    /// Columns per piece of the row.
    pub block: u32,
}

impl Config for RmsnormConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = RmsnormConfig { block: r.one_of("block", &BLOCKS)? };
        r.finish()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("block", self.block)
    }
}

const BLOCKS: [u32; 6] = [64, 128, 256, 512, 1024, 2048];

pub struct Rmsnorm;

impl TileKernel for Rmsnorm {
    type Problem = RmsnormProblem;
    type Config = RmsnormConfig;

    fn id(&self) -> KernelId {
        KernelId::Rmsnorm
    }

    fn example_problem(&self) -> Args {
        Args::new().with("tokens", 3).with("dim", 576).with("dtype", "f32")
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob { name: "block", values: BLOCKS.map(i64::from).to_vec(), help: "columns per piece of the row" }]
    }

    fn default_config(&self, p: &RmsnormProblem) -> RmsnormConfig {
        // One tile for the whole row up to 1024 columns (a single read of the row).
        RmsnormConfig { block: covering(&BLOCKS, p.dim.min(1024)) }
    }

    fn target_default(&self, p: &RmsnormProblem, target: TargetKind) -> RmsnormConfig {
        match target {
            // A CPU walks the row in 64-column pieces (four AVX-512 vectors, in registers) twice
            // rather than holding a whole-row tile on the stack: at dim = 576, one token, 2 Zen 5
            // threads, ~0.9 µs a launch against ~3.4 µs for the one 1024-column tile.
            TargetKind::Cpu => RmsnormConfig { block: BLOCKS[0] },
            TargetKind::Gpu => self.default_config(p),
        }
    }

    fn space(&self, p: &RmsnormProblem, limits: &SpaceLimits) -> Vec<RmsnormConfig> {
        let mut space: Vec<RmsnormConfig> = blocks_for(&BLOCKS, p.dim, limits.max_tile_elements)
            .into_iter()
            .map(|block| RmsnormConfig { block })
            .collect();
        for target in [TargetKind::Cpu, TargetKind::Gpu] {
            let default = self.target_default(p, target);
            if !space.contains(&default) {
                space.push(default);
            }
        }
        space
    }

    fn plan(&self, p: &RmsnormProblem, c: &RmsnormConfig) -> Result<Plan, KernelError> {
        ensure(NAME, BLOCKS.contains(&c.block), || format!("block = {} is not one of {BLOCKS:?}", c.block))?;
        let kernel = build(p, c).map_err(|source| KernelError::Build { kernel: NAME, source })?;
        let len = p.tokens as usize * p.dim as usize;
        let spec = |name: &str, len, role| BufferSpec { name: name.into(), dtype: p.dtype, len, role };
        let mut buffers =
            vec![spec("x", len, Role::Input), spec("w", p.dim as usize, Role::Input), spec("out", len, Role::Output)];
        let mut args = vec![buf("x"), buf("w"), buf("out")];
        if p.fused {
            buffers.push(spec("residual", len, Role::InOut));
            args.push(buf("residual"));
        }
        if p.deinterleave {
            row_loop_x::push_outputs(len, &mut buffers, &mut args);
        }
        args.extend([i32_arg(p.dim.into()), f32_arg(p.eps)]);
        Ok(Plan { buffers, launches: vec![Launch { kernel, grid: [p.tokens, 1, 1], args }] })
    }

    fn inputs(&self, p: &RmsnormProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let len = p.tokens as usize * p.dim as usize;
        let mut b = Buffers::from([
            ("x".to_string(), random::uniform(&mut rng, p.dtype, len, -2.0, 2.0)),
            // Norm weights sit around 1 in trained models; keep them away from 0.
            ("w".to_string(), random::uniform(&mut rng, p.dtype, p.dim as usize, 0.25, 1.75)),
        ]);
        if p.fused {
            b.insert("residual".to_string(), random::uniform(&mut rng, p.dtype, len, -3.0, 3.0));
        }
        b
    }

    fn tolerance(&self, p: &RmsnormProblem, dtype: DType) -> f64 {
        // `xd` and `xs` are f32 but hold `out`'s values, rounded to the problem's dtype.
        default_tolerance(dtype).max(default_tolerance(p.dtype))
    }

    fn reference(&self, p: &RmsnormProblem, inputs: &Buffers) -> Reference {
        let x = inputs["x"].to_f64();
        let w = inputs["w"].to_f64();
        let residual = inputs.get("residual").map(|r| r.to_f64());
        let dim = p.dim as usize;
        let mut h_all = Vec::with_capacity(x.len());
        let mut out = Vec::with_capacity(x.len());
        for t in 0..p.tokens as usize {
            let h: Vec<f64> =
                (0..dim).map(|i| x[t * dim + i] + residual.as_ref().map_or(0.0, |r| r[t * dim + i])).collect();
            let mean_sq = h.iter().map(|v| v * v).sum::<f64>() / dim as f64;
            let scale = 1.0 / (mean_sq + p.eps).sqrt();
            out.extend(h.iter().zip(&w).map(|(v, w)| v * scale * w));
            h_all.extend(h);
        }
        let mut r = Reference::new();
        if p.deinterleave {
            row_loop_x::insert_reference(&out, &mut r);
        }
        r.insert("out".to_string(), out);
        if p.fused {
            r.insert("residual".to_string(), h_all);
        }
        r
    }
}

/// Pins a two-tile closure's tile lifetime to the builder's, as [`tile_fn`] does for one.
fn tiles_fn<'b, F: Fn(Tile<'b>, Tile<'b>)>(f: F) -> F {
    f
}

/// Builds the kernel: one program per token (grid x).
fn build(p: &RmsnormProblem, c: &RmsnormConfig) -> Result<kiln_ir::Kernel, kiln_ir::BuildError> {
    use DType::F32;
    let b = KernelBuilder::new(NAME);
    let (x, w, out) = (b.buffer("x", p.dtype), b.buffer("w", p.dtype), b.buffer("out", p.dtype));
    let residual = p.fused.then(|| b.buffer("residual", p.dtype));
    let deinterleaved = p.deinterleave.then(|| row_loop_x::buffers(&b));
    let (dim, eps) = (b.scalar("dim", DType::I32), b.scalar("eps", F32));
    let row = b.program_id(0) * dim;
    let block = c.block as i32;

    // h for the columns `cols` (masked past dim), in f32.
    let load_h = tile_fn(|cols| {
        let mask = cols.lt(dim);
        let xv = b.load_masked(x, row + cols, mask, 0.0).cast(F32);
        match residual {
            Some(res) => xv + b.load_masked(res, row + cols, mask, 0.0).cast(F32),
            None => xv,
        }
    });
    // Rounds h to the stored dtype and writes it back to the residual stream.
    let store_h = |cols: Tile, h: Tile| {
        if let Some(res) = residual {
            b.store_masked(res, row + cols, h.cast(p.dtype), cols.lt(dim));
        }
    };
    let normalized = |cols: Tile, h: Tile, scale: Tile| {
        let mask = cols.lt(dim);
        let wv = b.load_masked(w, cols, mask, 0.0).cast(F32);
        b.store_masked(out, row + cols, (h * scale * wv).cast(p.dtype), mask);
    };
    let scale_of = tile_fn(|sum_sq| (sum_sq / dim.cast(F32) + eps).rsqrt());
    // The columns from `j` on of this piece, de-interleaved into `xd` and summed into `xs`. It
    // loads its own `h` (in `[blocks, parity, 16]` order, the tile the GEMV's launch loads) before
    // the piece's `residual` store, so no program reads what it wrote.
    let store_deinterleaved = tiles_fn(|j, scale| {
        let Some(outputs) = deinterleaved else { return };
        let blk = b.arange(0, block / XD_BLOCK);
        let tile = Blocks::new(&b, j + blk * XD_BLOCK, dim);
        let at = tile.at(row);
        let xv = b.load_masked(x, at, tile.ok, 0.0).cast(F32);
        let h = match residual {
            Some(res) => xv + b.load_masked(res, at, tile.ok, 0.0).cast(F32),
            None => xv,
        };
        let wv = b.load_masked(w, tile.cols(), tile.ok, 0.0).cast(F32);
        let y = (h * scale * wv).cast(p.dtype).cast(F32);
        tile.store(&b, outputs, b.program_id(0), row, j / XD_BLOCK + blk, dim, y);
    });

    if c.block >= p.dim {
        // The whole row in one tile: read once, normalize from registers.
        let cols = b.arange(0, block);
        let h = load_h(cols);
        let scale = scale_of((h * h).sum(0));
        store_deinterleaved(b.constant(0, DType::I32), scale);
        store_h(cols, h);
        normalized(cols, h, scale);
    } else {
        // Per-lane partial sums of h², reduced once after the loop.
        let [acc] = b.for_range(0, dim, block, [b.zeros(&[c.block], F32)], |j, [acc]| {
            let h = load_h(j + b.arange(0, block));
            [acc + h * h]
        });
        let scale = scale_of(acc.sum(0));
        b.for_range(0, dim, block, [], |j, []| {
            let cols = j + b.arange(0, block);
            store_deinterleaved(j, scale);
            let h = load_h(cols);
            store_h(cols, h);
            normalized(cols, h, scale);
            []
        });
    }
    b.finish()
}
