//! `q8_gemv`: activations times a Q8_0 matrix, `y[m, n] = Σ_k x[m, k] · qs[n, k] · d[n, k / 32]`
//! (a linear layer `x · Wᵀ` with `W` in kiln's Q8_0 layout; SmolLM2's tied output head is one,
//! `[49152, 576]`).
//!
//! Layouts (row-major): `x` `[m, k]` of `act` (f32 or f16, Input); `qs` i8 `[n, k]` and `scales`
//! f16 `[n, k / 32]` (Input, see [`crate::q8`]); `y` `[m, n]` of `out` (f32 by default, or f16;
//! Output).
//!
//! Grid: `[ceil(n / block_n), 1, 1]`; each program computes `block_n` outputs for all `m` rows,
//! walking `k` in `block_k`-wide steps (masked past `k`, which is a multiple of 32 but need not be
//! one of `block_k`). With `m = 1` (a GEMV) the weight tile is read as it lies, `[block_n,
//! block_k]` contiguous int8 rows; `q · x` is summed per Q8_0 block along the row and each block's
//! sum is scaled once, `Σ_k q·d·x = Σ_blocks d · Σ q·x` (2.4× faster on the CPU than a transposed
//! `[block_k, block_n]` tile of dequantized weights: 3.5 ms instead of 8.6 ms for SmolLM2's head
//! on 2 AVX-512 cores). With `2 ≤ m ≤ 16` (speculative verification) the tile is read the same
//! way, dequantized once per step and multiplied with every row's x into a per-lane
//! `[m, block_n, block_k]` accumulator summed after the loop, so the weights stream once
//! for all rows. With `m > 16` the weights are dequantized to f32 in the tile (`q · d` is
//! exact in f32: 8 bits times an 11-bit significand) and a step is a `dot` of `[pow2(m), block_k]
//! · [block_k, block_n]` into an f32 accumulator, so each weight tile is read once for every row
//! of `x`. Either way every rounding is an f32 product or sum and the final store.
//!
//! Shape key `xq` (`f32` default, `i8` or `i8x2`): with `i8` the activations are quantized to
//! int8 per block of 32 (`i8x2`: two int8 digits, about 16 bits) and the products are summed in
//! integers (VNNI `vpdpbusd` on AVX-512 hosts), with the weights offset to u8; see
//! [`super::gemv_i8`] for the layout, launches and tolerance.

use super::gemv_i8;
use crate::args::parse_dtype;
use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::{default_tolerance, Cost};
use crate::kernel::{Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::q8::{dequant, Q8_BLOCK};
use crate::random;
use crate::registry::KernelId;
use crate::tiles::{covering, tile_fn};
use crate::{ensure, KernelError};
use gemv_i8::ActQuant;
use kiln_ir::{DType, KernelBuilder};

pub(super) const NAME: &str = "q8_gemv";
const MAX_M: u32 = 64;
/// Up to this many rows take the multi-row GEMV path; more take the `dot` path.
const MAX_GEMV_ROWS: u32 = 16;
/// Largest per-lane accumulator of the multi-row GEMV in the space (elements): its sum after the
/// loop goes through shared memory on GPUs, whose static limit is 48 KiB.
const MAX_GEMV_ACC: u64 = 8192;

#[derive(Clone, Debug, PartialEq)]
pub struct Q8GemvProblem {
    /// Rows of activations (tokens), 1 to 64.
    pub m: u32,
    /// Output features: rows of the weight matrix.
    pub n: u32,
    /// Input features, a multiple of 32.
    pub k: u32,
    /// Dtype of `x`: f32 or f16.
    pub act: DType,
    /// Dtype of `y`: f32 or f16.
    pub out: DType,
    /// How `x` enters the products: as given (f32 products), or quantized per 32 to one or two
    /// int8 digits (integer products; `qs` is then u8 offset by 128, see [`super::gemv_i8`]).
    pub xq: ActQuant,
}

impl Q8GemvProblem {
    /// Rows of the `x` tile: `m` rounded up to a power of two.
    fn m_tile(&self) -> u32 {
        self.m.next_power_of_two()
    }
}

impl Problem for Q8GemvProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let m = r.get_or("m", 1)?;
        let n = r.get("n")?;
        let k = r.get("k")?;
        let act: String = r.get_or("act", "f32".to_string())?;
        let out: String = r.get_or("out", "f32".to_string())?;
        let xq: String = r.get_or("xq", "f32".to_string())?;
        r.finish()?;
        let act = parse_dtype(NAME, "act", &act, &[DType::F32, DType::F16])?;
        let out = parse_dtype(NAME, "out", &out, &[DType::F32, DType::F16])?;
        let xq = match xq.as_str() {
            "f32" => ActQuant::F32,
            "i8" => ActQuant::I8,
            "i8x2" => ActQuant::I8x2,
            other => {
                return Err(KernelError::Constraint {
                    kernel: NAME,
                    constraint: format!("xq `{other}` is not one of f32, i8, i8x2"),
                })
            }
        };
        let p = Q8GemvProblem { m, n, k, act, out, xq };
        ensure(NAME, (1..=MAX_M).contains(&p.m), || format!("m = {} is not in 1..={MAX_M}", p.m))?;
        ensure(NAME, p.n >= 1 && p.k >= 1, || "n and k must be at least 1".into())?;
        ensure(NAME, p.k.is_multiple_of(Q8_BLOCK as u32), || {
            format!("k = {} is not a multiple of the Q8_0 block 32", p.k)
        })?;
        let biggest = (u64::from(p.n) * u64::from(p.k)).max(u64::from(p.m) * u64::from(p.n.max(p.k)));
        ensure(NAME, biggest <= i32::MAX as u64, || {
            format!("a buffer of {biggest} elements exceeds the i32 offset range")
        })?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        let args = Args::new()
            .with("m", self.m)
            .with("n", self.n)
            .with("k", self.k)
            .with("act", self.act)
            .with("out", self.out);
        match self.xq {
            ActQuant::F32 => args,
            ActQuant::I8 | ActQuant::I8x2 => args.with("xq", self.xq),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Q8GemvConfig {
    /// Outputs (weight rows) per program.
    pub block_n: u32,
    /// Step along `k`, a multiple of 32.
    pub block_k: u32,
}

impl Config for Q8GemvConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = Q8GemvConfig { block_n: r.get("block_n")?, block_k: r.get("block_k")? };
        r.finish()?;
        c.validate()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("block_n", self.block_n).with("block_k", self.block_k)
    }
}

impl Q8GemvConfig {
    fn validate(&self) -> Result<(), KernelError> {
        ensure(NAME, BLOCK_N.contains(&self.block_n), || {
            format!("block_n = {} is not one of {BLOCK_N:?}", self.block_n)
        })?;
        ensure(NAME, BLOCK_K.contains(&self.block_k), || {
            format!("block_k = {} is not one of {BLOCK_K:?}", self.block_k)
        })
    }

    /// The largest tile a program holds for `p`.
    fn max_tile(&self, p: &Q8GemvProblem) -> u64 {
        let (mt, bn, bk) = (u64::from(p.m_tile()), u64::from(self.block_n), u64::from(self.block_k));
        if p.xq != ActQuant::F32 {
            // The per-lane accumulator `[block_n, block_k / 4]` and the step's bytes.
            return bn * bk;
        }
        if (2..=MAX_GEMV_ROWS).contains(&p.m) {
            // The multi-row GEMV's per-lane accumulator, `[m, block_n, block_k]`.
            return u64::from(p.m) * bn * bk;
        }
        (bk * bn).max(mt * bk).max(mt * bn)
    }
}

const BLOCK_N: [u32; 5] = [16, 32, 64, 128, 256];
/// Multiples of the Q8_0 block, so a step holds whole blocks.
const BLOCK_K: [u32; 5] = [32, 64, 128, 256, 512];

pub struct Q8Gemv;

impl TileKernel for Q8Gemv {
    type Problem = Q8GemvProblem;
    type Config = Q8GemvConfig;

    fn id(&self) -> KernelId {
        KernelId::Q8Gemv
    }

    fn example_problem(&self) -> Args {
        Args::new().with("m", 1).with("n", 1000).with("k", 576).with("act", "f32")
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![
            Knob {
                name: "block_n",
                values: BLOCK_N.map(i64::from).to_vec(),
                help: "outputs (weight rows) per program",
            },
            Knob { name: "block_k", values: BLOCK_K.map(i64::from).to_vec(), help: "step along k, whole Q8_0 blocks" },
        ]
    }

    fn default_config(&self, p: &Q8GemvProblem) -> Q8GemvConfig {
        if p.xq != ActQuant::F32 {
            // Small steps: each step's tiles (weights, i32 lanes, f32 factors) stay in L1 and in
            // registers (SmolLM2's head, n = 49152, k = 576, on 2 AVX-512 cores: 16 × 64 took
            // 1.7-2.6 ms, 16 × 576 2.7-3.7 ms and 32 × 64 3.0-4.4 ms in the same noisy runs).
            return Q8GemvConfig { block_n: 16, block_k: if p.k.is_multiple_of(64) { 64 } else { 32 } };
        }
        if (2..=MAX_GEMV_ROWS).contains(&p.m) {
            // The multi-row GEMV: 16 outputs per program and 64-wide steps when they divide k and
            // the per-lane accumulator `[m, 16, block_k]` stays within `MAX_GEMV_ACC`.
            let wide = p.k.is_multiple_of(64) && u64::from(p.m) * 16 * 64 <= MAX_GEMV_ACC;
            return Q8GemvConfig { block_n: 16, block_k: if wide { 64 } else { 32 } };
        }
        // The widest step up to 256 that divides k, so no step is masked (576 = 9 · 64).
        let block_k = BLOCK_K.into_iter().rev().find(|&b| b <= 256 && p.k.is_multiple_of(b)).unwrap_or(32);
        Q8GemvConfig { block_n: covering(&BLOCK_N, p.n.min(64)), block_k }
    }

    fn space(&self, p: &Q8GemvProblem, limits: &SpaceLimits) -> Vec<Q8GemvConfig> {
        let (cover_n, cover_k) = (covering(&BLOCK_N, p.n), covering(&BLOCK_K, p.k));
        let mut space = Vec::new();
        for block_n in BLOCK_N.into_iter().filter(|&b| b <= cover_n) {
            for block_k in BLOCK_K.into_iter().filter(|&b| b <= cover_k) {
                let c = Q8GemvConfig { block_n, block_k };
                let multi_row = (2..=MAX_GEMV_ROWS).contains(&p.m) && p.xq == ActQuant::F32;
                let acc_fits = !multi_row || c.max_tile(p) <= MAX_GEMV_ACC;
                if acc_fits && c.max_tile(p) <= limits.max_tile_elements {
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

    fn plan(&self, p: &Q8GemvProblem, c: &Q8GemvConfig) -> Result<Plan, KernelError> {
        c.validate()?;
        if p.xq != ActQuant::F32 {
            let (buffers, launches) = gemv_i8::plan(p, c)?;
            return Ok(Plan { buffers, launches });
        }
        let kernel = build(p, c).map_err(|source| KernelError::Build { kernel: NAME, source })?;
        let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
        let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
        Ok(Plan {
            buffers: vec![
                spec("x", p.act, m * k, Role::Input),
                spec("qs", DType::I8, n * k, Role::Input),
                spec("scales", DType::F16, n * (k / Q8_BLOCK), Role::Input),
                spec("y", p.out, m * n, Role::Output),
            ],
            launches: vec![Launch {
                kernel,
                grid: [p.n.div_ceil(c.block_n), 1, 1],
                args: vec![
                    buf("x"),
                    buf("qs"),
                    buf("scales"),
                    buf("y"),
                    i32_arg(p.m.into()),
                    i32_arg(p.n.into()),
                    i32_arg(p.k.into()),
                ],
            }],
        })
    }

    fn inputs(&self, p: &Q8GemvProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
        // With `xq=i8` the weights are offset to u8 (`q + 128`), the same values of q.
        let qs = match p.xq {
            ActQuant::F32 => random::integers(&mut rng, DType::I8, n * k, -128, 128),
            ActQuant::I8 | ActQuant::I8x2 => random::integers(&mut rng, DType::U8, n * k, 0, 256),
        };
        Buffers::from([
            ("x".to_string(), random::uniform(&mut rng, p.act, m * k, -1.0, 1.0)),
            ("qs".to_string(), qs),
            // Positive like llama.cpp's `amax / 127` scales, of a trained layer's magnitude.
            ("scales".to_string(), random::uniform(&mut rng, DType::F16, n * (k / Q8_BLOCK), 0.002, 0.02)),
        ])
    }

    fn reference(&self, p: &Q8GemvProblem, inputs: &Buffers) -> Reference {
        let (x, mut qs, scales) = (inputs["x"].to_f64(), inputs["qs"].to_f64(), inputs["scales"].to_f64());
        if p.xq != ActQuant::F32 {
            qs.iter_mut().for_each(|q| *q -= 128.0);
        }
        let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
        let mut y = vec![0.0; m * n];
        for row in 0..m {
            for col in 0..n {
                y[row * n + col] = (0..k).map(|i| x[row * k + i] * dequant(&qs, &scales, k, col, i)).sum();
            }
        }
        Reference::from([("y".to_string(), y)])
    }

    fn tolerance(&self, p: &Q8GemvProblem, dtype: DType) -> f64 {
        // Activation quantization dominates every other error; derived in `gemv_i8`.
        gemv_i8::tolerance(p.xq).max(default_tolerance(dtype))
    }

    fn cost(&self, p: &Q8GemvProblem, plan: &Plan, _inputs: &Buffers) -> Cost {
        Cost { flops: 2 * p.m as u64 * p.n as u64 * p.k as u64, ..Cost::from_buffers(plan) }
    }

    fn regime(&self, p: &Q8GemvProblem) -> u32 {
        // The three code paths: one-row GEMV, multi-row GEMV, dot; the int8 path is one-row
        // GEMVs for every m.
        if p.xq != ActQuant::F32 {
            return 0;
        }
        match p.m {
            1 => 0,
            2..=MAX_GEMV_ROWS => 1,
            _ => 2,
        }
    }
}

/// Builds the kernel: program `x` computes outputs `x · block_n ..` for every row of `x`.
fn build(p: &Q8GemvProblem, c: &Q8GemvConfig) -> Result<kiln_ir::Kernel, kiln_ir::BuildError> {
    use DType::{F16, F32, I32, I8};
    let b = KernelBuilder::new(NAME);
    let (x, qs, scales, y) = (b.buffer("x", p.act), b.buffer("qs", I8), b.buffer("scales", F16), b.buffer("y", p.out));
    let (m, n, k) = (b.scalar("m", I32), b.scalar("n", I32), b.scalar("k", I32));
    let (block_n, block_k) = (c.block_n as i32, c.block_k as i32);
    let q8 = Q8_BLOCK as i32;
    let cols = (b.program_id(0) * block_n + b.arange(0, block_n)).named("cols");
    let col_ok = cols.lt(n);

    // Weights `w[kk, col]` for the step at `k0`, dequantized to f32: [block_k, block_n]. Each
    // block's scale is loaded once and broadcast over its 32 values.
    let weights = tile_fn(|k0| {
        let ks = k0 + b.arange(0, block_k);
        let q = b.load_masked(qs, cols.row() * k + ks.col(), ks.lt(k).col() & col_ok.row(), 0i8).cast(F32);
        let blocks = k0 / q8 + b.arange(0, block_k / q8);
        let d =
            b.load_masked(scales, cols.row() * (k / q8) + blocks.col(), blocks.lt(k / q8).col() & col_ok.row(), 0.0);
        let q = q.reshape(&[c.block_k / 32, 32, c.block_n]);
        (q * d.cast(F32).expand_dims(1)).reshape(&[c.block_k, c.block_n])
    });

    if p.m == 1 {
        // GEMV: the weight tile is read as it lies, `[block_n, block_k]` contiguous int8 rows,
        // multiplied by x along the row and summed per Q8_0 block, and each block's sum is scaled
        // once: Σ_k q·d·x = Σ_blocks d · Σ_{k ∈ block} q·x. No transposed loads, one multiply by
        // a scale per 32 weights.
        let per_step = c.block_k / 32;
        let blocks = b.arange(0, per_step as i32);
        let [acc] = b.for_range(0, k, block_k, [b.zeros(&[c.block_n], F32).named("acc0")], |k0, [acc]| {
            let ks = k0 + b.arange(0, block_k);
            let k_ok = ks.lt(k);
            let xk = b.load_masked(x, ks, k_ok, 0.0).cast(F32);
            let q = b.load_masked(qs, cols.col() * k + ks.row(), col_ok.col() & k_ok.row(), 0i8).cast(F32);
            let sums = (q * xk.row()).reshape(&[c.block_n, per_step, 32]).sum(2);
            let blk = k0 / q8 + blocks;
            let blk_ok = blk.lt(k / q8);
            let d = b.load_masked(scales, cols.col() * (k / q8) + blk.row(), col_ok.col() & blk_ok.row(), 0.0);
            [acc + (sums * d.cast(F32)).sum(1)]
        });
        b.store_masked(y, cols, acc.cast(p.out), col_ok);
    } else if p.m <= MAX_GEMV_ROWS {
        // Several rows (speculative verification, small batches): the weight tile is read as it
        // lies, `[block_n, block_k]`, dequantized once (`q · d`, exact in f32) and multiplied with
        // the x of every row into a per-lane accumulator `[m, block_n, block_k]`, summed
        // once after the loop: the weights stream once for all rows, with no transposed loads
        // and no horizontal sums in the loop.
        // The kernel is built for its m, so the rows are exactly `0..m`: no padding, no row masks.
        let mt = p.m;
        let rows = b.arange(0, mt as i32).named("rows");
        let per_step = c.block_k / 32;
        let blocks = b.arange(0, per_step as i32);
        // When the steps divide k no column mask is needed: the loads stay unmasked whole rows the
        // backends can read in place, instead of a mask test per element.
        let x_rows = rows;
        let whole_steps = p.k.is_multiple_of(c.block_k);
        let acc0 = b.zeros(&[mt, c.block_n, c.block_k], F32).named("acc0");
        let [acc] = b.for_range(0, k, block_k, [acc0], |k0, [acc]| {
            let ks = k0 + b.arange(0, block_k);
            let (xt, q) = if whole_steps {
                let xt = b.load(x, x_rows.col() * k + ks.row());
                (xt, b.load_masked(qs, cols.col() * k + ks.row(), col_ok.col(), 0i8))
            } else {
                let k_ok = ks.lt(k);
                let xt = b.load_masked(x, x_rows.col() * k + ks.row(), k_ok.row(), 0.0);
                (xt, b.load_masked(qs, cols.col() * k + ks.row(), col_ok.col() & k_ok.row(), 0i8))
            };
            let (xt, q) = (xt.cast(F32), q.cast(F32));
            let blk = k0 / q8 + blocks;
            let blk_ok = blk.lt(k / q8);
            let d = b.load_masked(scales, cols.col() * (k / q8) + blk.row(), col_ok.col() & blk_ok.row(), 0.0);
            let w =
                (q.reshape(&[c.block_n, per_step, 32]) * d.cast(F32).expand_dims(2)).reshape(&[c.block_n, c.block_k]);
            [acc + w.expand_dims(0) * xt.expand_dims(1)]
        });
        b.store_masked(y, rows.col() * n + cols.row(), acc.sum(2).cast(p.out), col_ok.row());
    } else {
        // Many rows: a `dot` per step over dequantized, transposed weight tiles.
        let rows = b.arange(0, p.m_tile() as i32).named("rows");
        let row_ok = rows.lt(m);
        let acc0 = b.zeros(&[p.m_tile(), c.block_n], F32).named("acc0");
        let [acc] = b.for_range(0, k, block_k, [acc0], |k0, [acc]| {
            let ks = k0 + b.arange(0, block_k);
            let xt = b.load_masked(x, rows.col() * k + ks.row(), row_ok.col() & ks.lt(k).row(), 0.0).cast(F32);
            [b.dot(xt, weights(k0), acc)]
        });
        b.store_masked(y, rows.col() * n + cols.row(), acc.cast(p.out), row_ok.col() & col_ok.row());
    }
    b.finish()
}
