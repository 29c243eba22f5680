//! `dequant_gemm_w4`: `y[m, n] = x[m, k] · dequant(W)ᵀ` with int4 weights `W [n, k]` quantized in
//! groups of `group` (32, 64 or 128) along k, for decode and speculative-verify shapes (m = 1..64)
//! and prefill (m up to thousands) alike.
//!
//! # Shapes and dtypes
//!
//! Shape keys `m`, `n`, `k`, `group`, plus `act` (`f16` default, or `f32`: the dtype of `x` and of
//! `y`), `quant` (`asym` default, or `sym`) and `xq` (`f32` default, or `i8` / `i8x2`: activations
//! quantized to int8 per 32 columns and integer products, the path of [`int8`], which needs
//! `block_m = 1` and `block_k ≥ 32`). Constraints: `m, n, k ≥ 1`, `m ≤ 65535` (one grid
//! row per token when `block_m = 1`), `group ∈ {32, 64, 128}`, `k % group == 0`, and every
//! buffer offset fits an `i32`.
//!
//! # kiln's int4 layout (buffers, all row-major)
//!
//! - `x`: `[m, k]` of `act`.
//! - `w`: `[n, k / 2]` `u8`: row `r` is output `r`; byte `j` of a row holds the code of column
//!   `2j` in its low nibble (bits 0..4) and of column `2j + 1` in its high nibble. So a row is
//!   `k / 2` contiguous bytes in k order (16-byte aligned row starts whenever `k % 32 == 0`,
//!   which every legal `k` is), loadable as bytes or u32 words (little-endian word `i` of a row
//!   holds columns `8i..8i+8`, nibble `c` = column `8i + c`) on GPU and CPU alike.
//! - `scales`: `[n, k / group]` `f16`, the scale of group `g` of row `r` at `r · k/group + g`.
//! - `mins` (only for `quant=asym`): `[n, k / group]` `f16`, same indexing.
//! - `y`: `[m, n]` of `act` (f32 accumulation, rounded once to `act` at the end).
//! - `partials` (scratch, only for `split_k > 1`): `[split_k, m, n]` `f32`.
//!
//! Weights: `sym` is `w = (q − 8) · scale` (GGUF Q4_0), `asym` is `w = q · scale + min` (GGUF
//! Q4_1; GPTQ / AWQ zero points become `min = −scale · zero`). [`layout`] holds the converters from
//! GGUF Q4_0 / Q4_1, GPTQ and AWQ, and the f64 dequantizer the reference uses.
//!
//! Packing details confirmed against public sources (not guessed): ggml's
//! `dequantize_row_q4_0/q4_1` (`y[j] = qs[j] & 0xF`, `y[j + 16] = qs[j] >> 4`, `d` then `m`
//! first in the block); AutoGPTQ (`qweight` packed 8 rows per int32 along k at bits `4i`,
//! `qzeros` along n, and legacy checkpoints storing `zero − 1`, undone by `zeros + 1` in its
//! dequantizers); AutoAWQ (`pack` with `order_map = [0, 2, 4, 6, 1, 3, 5, 7]`, unpacked with
//! `AWQ_REVERSE_ORDER = [0, 4, 1, 5, 2, 6, 3, 7]`, for both `qweight` and `qzeros`).
//!
//! # Programs
//!
//! Launch 1 has grid `[⌈n / block_n⌉, ⌈m / block_m⌉, split_k]`: program `(i, j, s)` computes
//! the `block_m × block_n` tile of outputs at rows `j·block_m..`, columns `i·block_n..` over its
//! share of k, `block_k` columns at a time.
//! - `gemv = 0` (the `dot` path, `block_m ≥ 16`): each k tile of the weights is unpacked with
//!   shifts and masks, dequantized in f32, rounded to the activation dtype and multiplied with
//!   `b.dot` (f16 · f16 or f32 · f32 with an f32 accumulator), the tensor-core-shaped path;
//!   - with `weights_lhs = 1` (`block_k` a multiple of 32, in `weights_lhs.rs`): x is
//!     de-interleaved and transposed by a first launch and each program computes a `yᵀ` tile, its weight
//!     tiles read as they lie (`[block_n, block_k / 2]` byte rows) times transposed x tiles,
//!     in f32, stored transposed: the CPU's prefill path, where reading weight bytes one by one
//!     into a transposed tile cost more than the multiply-adds;
//! - `gemv = 1` (the GEMV path, `block_m ∈ {1, 2, 4, 8, 16}`, `block_n` from 8 where the `dot`
//!   path starts at 16, in `gemv.rs`): the weight tile is read
//!   as it lies, `[block_n, block_k / 2]` byte rows; low nibbles multiply the even columns of x
//!   and high nibbles the odd ones, in f32, into per-lane accumulators summed after the loop. With
//!   `block_m > 1` each tile is dequantized once and multiplied with the x of all `block_m` rows,
//!   so the weights stream once for several tokens (speculative verification, small batches).
//!   The weights are never rounded to f16; the sums are f32, so the result differs from
//!   dequantize-then-multiply only by f32 rounding order, far inside the tolerances.
//!
//! - `row_loop = R` (with `gemv = 1`, `block_m = 1`, f32 products; in `rowloop.rs`): the
//!   one-token GEMV with the loop order turned around: x de-interleaved once by a first launch,
//!   then each program's rows R at a time, each group of rows over its whole k range with an
//!   accumulator of `[R, block_k / 32, 16]` lanes. With int8 products (`xq=i8|i8x2`, in
//!   `int8.rs`) the same loop order after the quantize launch, `128 / block_k` rows to a vector
//!   of 16 i32 lanes.
//!
//! The default takes the GEMV path up to m = 16 (one token on a CPU: the row loop, f32 or int8
//! products; on a GPU and for more tokens: up to 8 tokens per program) and the `dot` path for
//! prefill (on a CPU with `weights_lhs = 1`). In `key=value` form `gemv` may be left out: it is
//! then 1 below `block_m = 16` and 0 from there (callers that overlay the default config inherit
//! its `gemv`; `row_loop` and `weights_lhs` likewise default to 0). Each problem's m falls in a regime (`TileKernel::regime`: 1, 2..16, more) that the
//! tuning database's nearest-bucket lookup does not cross.
//!
//! `block_k` must divide `k`. When `block_k ≤ group` (both powers of two, so `block_k` divides
//! `group`) a k tile never straddles groups and one row of scales (and mins) serves the tile;
//! otherwise the scales are gathered per column of the tile.
//!
//! With `split_k = 1` launch 1 writes `y` directly. With `split_k > 1`, split `s` covers the k
//! tiles `s·t..(s+1)·t` (`t = ⌈(k / block_k) / split_k⌉`; the last split may be short or empty and
//! then writes zeros) and writes its f32 partial to `partials[s]`; launch 2 sums the partials in
//! split order (deterministic, no atomics) and rounds to `act`.

mod gemv;
pub mod int8;
pub mod layout;
mod rowloop;
mod weights_lhs;

use crate::args::{Args, ArgsKind, Reader};
use crate::kernel::Cost;
use crate::kernel::{default_tolerance, Config, Knob, Problem, SpaceLimits, TargetKind, TileKernel};
use crate::plan::{buf, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::{ensure, KernelError};
use int8::ActQuant;
use kiln_ir::{Buf, DType, Kernel, KernelBuilder, Tile};
use layout::{Quant, GROUPS};

const NAME: &str = "dequant_gemm_w4";

#[derive(Clone, Debug, PartialEq)]
pub struct DequantGemmW4Problem {
    /// Rows of `x` and `y` (tokens).
    pub m: u32,
    /// Outputs: rows of `W`, columns of `y`.
    pub n: u32,
    /// Inputs: columns of `x` and `W`.
    pub k: u32,
    /// Weights per scale along k: 32, 64 or 128.
    pub group: u32,
    /// Dtype of `x` and `y`: f16 or f32.
    pub act: DType,
    pub quant: Quant,
    /// How `x` enters the products: f32 (default) or int8 per block of 32 (see [`int8`]).
    pub xq: ActQuant,
}

impl DequantGemmW4Problem {
    fn groups(&self) -> usize {
        (self.k / self.group) as usize
    }
}

impl Problem for DequantGemmW4Problem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let (m, n, k, group) = (r.get("m")?, r.get("n")?, r.get("k")?, r.get("group")?);
        let act_name: String = r.get_or("act", "f16".to_string())?;
        let quant_name: String = r.get_or("quant", "asym".to_string())?;
        let xq_name: String = r.get_or("xq", "f32".to_string())?;
        r.finish()?;
        let act = match act_name.as_str() {
            "f16" => DType::F16,
            "f32" => DType::F32,
            other => return Err(constraint(format!("act `{other}` is not one of f16, f32"))),
        };
        let quant = match quant_name.as_str() {
            "sym" => Quant::Sym,
            "asym" => Quant::Asym,
            other => return Err(constraint(format!("quant `{other}` is not one of sym, asym"))),
        };
        let xq = match xq_name.as_str() {
            "f32" => ActQuant::F32,
            "i8" => ActQuant::I8,
            "i8x2" => ActQuant::I8x2,
            other => return Err(constraint(format!("xq `{other}` is not one of f32, i8, i8x2"))),
        };
        let p = DequantGemmW4Problem { m, n, k, group, act, quant, xq };
        ensure(NAME, m >= 1 && n >= 1 && k >= 1, || format!("m = {m}, n = {n}, k = {k} must be at least 1"))?;
        ensure(NAME, m <= 65_535, || format!("m = {m} exceeds 65535 (the grid limit with block_m = 1)"))?;
        ensure(NAME, GROUPS.contains(&(group as usize)), || format!("group = {group} is not one of {GROUPS:?}"))?;
        ensure(NAME, k % group == 0, || format!("k = {k} is not a multiple of group = {group}"))?;
        let fits = |elements: u64| elements <= i32::MAX as u64;
        ensure(NAME, fits(m as u64 * k as u64) && fits(n as u64 * k as u64) && fits(m as u64 * n as u64), || {
            format!("m·k, n·k and m·n must fit i32 offsets (m = {m}, n = {n}, k = {k})")
        })?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        let args = Args::new()
            .with("m", self.m)
            .with("n", self.n)
            .with("k", self.k)
            .with("group", self.group)
            .with("act", self.act)
            .with("quant", self.quant);
        // Only when not the default, so existing shape keys (and database records) stay as they were.
        match self.xq {
            ActQuant::F32 => args,
            ActQuant::I8 | ActQuant::I8x2 => args.with("xq", self.xq),
        }
    }
}

fn constraint(constraint: String) -> KernelError {
    KernelError::Constraint { kernel: NAME, constraint }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DequantGemmW4Config {
    /// Rows of `y` (tokens) per program.
    pub block_m: u32,
    /// 1: the GEMV path (weights read as they lie, no `dot`; `block_m ≤ 16`), 0: the `dot` path
    /// (`block_m ≥ 16`). Optional in `key=value` form: absent means 1 below `block_m = 16`.
    pub gemv: u32,
    /// Columns of `y` per program.
    pub block_n: u32,
    /// k columns per loop step; divides `k`.
    pub block_k: u32,
    /// Programs sharing one output tile's k range; > 1 adds a reduce launch.
    pub split_k: u32,
    /// 0: the GEMV's `block_n` rows side by side at every k step (`gemv.rs`); R > 0 (one token
    /// per program row only): the rows R at a time, each over its whole k range (`rowloop.rs`).
    /// Optional in `key=value` form: absent means 0 (callers that overlay the default config
    /// inherit its `row_loop`, as with `gemv`).
    pub row_loop: u32,
    /// 0: the `dot` path multiplies x tiles by transposed weight tiles; 1 (with `gemv = 0`,
    /// `block_k` a multiple of 32): weight tiles read as they lie times transposed x tiles,
    /// `yᵀ` tiles (`weights_lhs.rs`). Optional in `key=value` form: absent means 0.
    pub weights_lhs: u32,
}

const BLOCK_MS: [u32; 8] = [1, 2, 4, 8, 16, 32, 64, 128];
/// The GEMV path's `block_m`: one token, or up to 16 sharing each weight tile.
const GEMV_BLOCK_MS: [u32; 5] = [1, 2, 4, 8, 16];
/// Largest per-lane accumulator of the multi-row GEMV in the space (elements): its sum after the
/// loop goes through shared memory on GPUs, whose static limit is 48 KiB.
const MAX_GEMV_ACC: u64 = 8192;
/// The `dot` path's `block_m`: the smallest is one 16-row tile.
const DOT_MIN_BLOCK_M: u32 = 16;
/// `block_n`; 8 only on the GEMV path (the dot path's smallest tile is 16 columns).
const BLOCK_NS: [u32; 5] = [8, 16, 32, 64, 128];
/// The `dot` path's smallest `block_n`.
const DOT_MIN_BLOCK_N: u32 = 16;
const BLOCK_KS: [u32; 4] = [16, 32, 64, 128];
const SPLITS: [u32; 5] = [1, 2, 4, 8, 16];
/// Elements per program of the split-K reduce launch.
const REDUCE_BLOCK: u32 = 256;

impl Config for DequantGemmW4Config {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let block_m = r.get("block_m")?;
        let c = DequantGemmW4Config {
            block_m,
            gemv: r.get_or("gemv", u32::from(block_m < DOT_MIN_BLOCK_M))?,
            block_n: r.get("block_n")?,
            block_k: r.get("block_k")?,
            split_k: r.get("split_k")?,
            row_loop: r.get_or("row_loop", 0)?,
            weights_lhs: r.get_or("weights_lhs", 0)?,
        };
        r.finish()?;
        let one_of = |key: &str, v: u32, set: &[u32]| {
            ensure(NAME, set.contains(&v), || format!("{key} = {v} is not one of {set:?}"))
        };
        one_of("block_m", c.block_m, &BLOCK_MS)?;
        one_of("block_n", c.block_n, &BLOCK_NS)?;
        one_of("block_k", c.block_k, &BLOCK_KS)?;
        one_of("split_k", c.split_k, &SPLITS)?;
        one_of("gemv", c.gemv, &[0, 1])?;
        one_of("row_loop", c.row_loop, &rowloop::ROW_LOOPS)?;
        one_of("weights_lhs", c.weights_lhs, &[0, 1])?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        // `row_loop` always, so that a config read back over the default (whose `row_loop`
        // may differ) is this config. (The knob is part of the database's IR hash, so records
        // written before it existed are not read as row-loop configs.)
        Args::new()
            .with("block_m", self.block_m)
            .with("gemv", self.gemv)
            .with("block_n", self.block_n)
            .with("block_k", self.block_k)
            .with("split_k", self.split_k)
            .with("row_loop", self.row_loop)
            .with("weights_lhs", self.weights_lhs)
    }
}

/// Whether `c` fits `p`; the constraints `plan` reports and `space` filters by.
fn check_config(p: &DequantGemmW4Problem, c: &DequantGemmW4Config) -> Result<(), KernelError> {
    if c.gemv == 1 {
        ensure(NAME, GEMV_BLOCK_MS.contains(&c.block_m), || {
            format!("block_m = {} is not one of {GEMV_BLOCK_MS:?} (gemv = 1)", c.block_m)
        })?;
    } else {
        ensure(NAME, c.block_m >= DOT_MIN_BLOCK_M, || {
            format!("block_m = {} is below {DOT_MIN_BLOCK_M}, the smallest dot tile (gemv = 0)", c.block_m)
        })?;
        ensure(NAME, c.block_n >= DOT_MIN_BLOCK_N, || {
            format!("block_n = {} is below {DOT_MIN_BLOCK_N}, the smallest dot tile (gemv = 0)", c.block_n)
        })?;
    }
    ensure(NAME, p.k.is_multiple_of(c.block_k), || format!("block_k = {} does not divide k = {}", c.block_k, p.k))?;
    let k_tiles = p.k / c.block_k;
    ensure(NAME, c.split_k <= k_tiles, || {
        format!("split_k = {} exceeds the {k_tiles} k tiles of block_k = {}", c.split_k, c.block_k)
    })?;
    let partials = c.split_k as u64 * p.m as u64 * p.n as u64;
    ensure(NAME, partials <= i32::MAX as u64, || format!("split_k·m·n = {partials} does not fit i32 offsets"))?;
    if p.xq.is_integer() {
        int8::check_config(c).map_err(constraint)?;
        ensure(NAME, c.weights_lhs == 0, || "weights_lhs = 1 needs xq = f32".into())?;
    }
    rowloop::check_config(c).map_err(constraint)?;
    weights_lhs::check_config(c).map_err(constraint)?;
    Ok(())
}

pub struct DequantGemmW4;

impl TileKernel for DequantGemmW4 {
    type Problem = DequantGemmW4Problem;
    type Config = DequantGemmW4Config;

    fn id(&self) -> KernelId {
        KernelId::DequantGemmW4
    }

    fn example_problem(&self) -> Args {
        Args::new().with("m", 4).with("n", 96).with("k", 256).with("group", 64).with("act", "f16").with("quant", "asym")
    }

    fn knobs(&self) -> Vec<Knob> {
        let values = |set: &[u32]| set.iter().map(|&v| i64::from(v)).collect();
        vec![
            Knob { name: "block_m", values: values(&BLOCK_MS), help: "rows of y (tokens) per program" },
            Knob {
                name: "gemv",
                values: vec![0, 1],
                help: "1: GEMV path, weights read as they lie, block_m <= 16; 0: dot path, block_m >= 16",
            },
            Knob { name: "block_n", values: values(&BLOCK_NS), help: "columns of y per program" },
            Knob { name: "block_k", values: values(&BLOCK_KS), help: "k columns per loop step (divides k)" },
            Knob {
                name: "split_k",
                values: values(&SPLITS),
                help: "k splits; > 1 reduces f32 partials in a 2nd launch",
            },
            Knob {
                name: "row_loop",
                values: values(&rowloop::ROW_LOOPS),
                help: "0: block_n rows side by side per k step; R: one-token GEMV over R rows at a time, k inner (xq=i8|i8x2: R a multiple of 128 / block_k)",
            },
            Knob {
                name: "weights_lhs",
                values: vec![0, 1],
                help: "dot path: 1 multiplies weight tiles as they lie by transposed x tiles (y^T tiles); 0: x by transposed weights",
            },
        ]
    }

    fn default_config(&self, p: &DequantGemmW4Problem) -> DequantGemmW4Config {
        // Up to 16 tokens (decode, speculative verification) take the GEMV path: the weights
        // stream from memory once per program row, as they lie, and each tile is dequantized once
        // for every row of the program. The dot path reads its weight tile transposed and
        // unpacked, which costs ~7x at m = 5..16 on the CPU; it pays off for prefill only.
        if p.xq.is_integer() {
            // The int8 path is a one-row GEMV (a grid row per token). It runs through its bytes
            // several times faster than the f32 one, so fewer DRAM row streams keep it fed, and
            // the CPU backend prefetches the next program's rows while it works on these (see
            // the renderer's `prefetch_ahead`). At k = 4096, n = 14336 (2 Zen 5 threads, weights
            // from DRAM), group 128: 8 rows ~1.7 ms against ~2.5 ms for 16 and ~2.9 ms for 32;
            // group 32, whose four scales and mins per row and step cost more per row: 16 rows
            // ~2.9 ms against ~3.4 ms for 8 and ~3.8 ms for 32.
            let block_k = [128, 64, 32].into_iter().find(|&b| p.k.is_multiple_of(b)).unwrap_or(32);
            let block_n = if p.group >= 64 { 8 } else { 16 };
            return DequantGemmW4Config {
                block_m: 1,
                gemv: 1,
                block_n,
                block_k,
                split_k: 1,
                row_loop: 0,
                weights_lhs: 0,
            };
        }
        if p.m == 1 {
            // One token, f32 products, portable: the lanes GEMV over 32 rows with a cache line
            // of each row per step where k allows (128 columns), byte tiles the PTX backend loads
            // with vector accesses (`tests/ptx_vector.rs`). A CPU takes the row loop instead
            // (`target_default`).
            let block_k = [128, 64, 32].into_iter().find(|&b| p.k.is_multiple_of(b)).unwrap_or(32);
            return DequantGemmW4Config {
                block_m: 1,
                gemv: 1,
                block_n: 32,
                block_k,
                split_k: 1,
                row_loop: 0,
                weights_lhs: 0,
            };
        }
        if p.m <= 16 {
            return gemv_default(p);
        }
        let block_m = match p.m {
            17..=32 => 32,
            _ => 64,
        };
        let block_n = p.n.next_power_of_two().clamp(16, 64);
        let block_k = if p.k.is_multiple_of(64) { 64 } else { 32 };
        DequantGemmW4Config { block_m, gemv: 0, block_n, block_k, split_k: 1, row_loop: 0, weights_lhs: 0 }
    }

    fn target_default(&self, p: &DequantGemmW4Problem, target: TargetKind) -> DequantGemmW4Config {
        if target == TargetKind::Cpu && p.m == 1 && p.xq == ActQuant::F32 {
            // One token, f32 products: the row loop with a 16-vector accumulator (`[R, block_k /
            // 32, 16]`, what the CPU renderer keeps in AVX-512 registers): 4 rows of 128-column
            // steps where k allows (a cache line of each row per step), else 8 rows of 64 (or
            // 32). Measured on 2 Zen 5 cores: k = 4096, n = 14336, group 128, weights from DRAM,
            // ~1.1-2.1 ms against ~2.8-2.9 ms for 8 rows of 64 columns and ~2.7-3.3 ms for the
            // lanes GEMV (`row_loop = 0`), interleaved on a busy machine; single-threaded with
            // the weights hot (k = 576, n = 1536, group 32): ~34 µs for 8 rows of 64 against
            // ~49 µs for the lanes GEMV, ~41 µs for 4 rows and ~85 µs for 1.
            let block_k = [128, 64, 32].into_iter().find(|&b| p.k.is_multiple_of(b)).unwrap_or(32);
            let row_loop = (16 * rowloop::BLOCK as u32 / block_k).min(8);
            return DequantGemmW4Config {
                block_m: 1,
                gemv: 1,
                block_n: 32,
                block_k,
                split_k: 1,
                row_loop,
                weights_lhs: 0,
            };
        }
        if target == TargetKind::Cpu && p.m == 1 && p.xq.is_integer() && p.k.is_multiple_of(64) {
            // One token, int8 products: the row loop, 8 rows at a time, a vector of i32 lanes
            // per row (block_k = 128) or per 2 rows (64). Hot, one Zen 5 thread, group 32:
            // k = 576, n = 3072 ~45 µs against ~50 µs for the lanes GEMV; k = 1536 ~84 against
            // ~130 µs. Steps of 32 columns (4 rows a vector) measured slower than the lanes
            // GEMV, which keeps such shapes.
            let block_k = if p.k.is_multiple_of(128) { 128 } else { 64 };
            return DequantGemmW4Config {
                block_m: 1,
                gemv: 1,
                block_n: 16,
                block_k,
                split_k: 1,
                row_loop: 8,
                weights_lhs: 0,
            };
        }
        if target == TargetKind::Cpu && p.m > 16 && p.xq == ActQuant::F32 {
            // Prefill: the weights-left dot path, one 32-column block per k step, 64 outputs by
            // 64 tokens a program (32 tokens up to m = 48, where a second 64-row tile would be
            // mostly masked). On 2 Zen 5 cores, k = 576, n = 1536, group 32, f32: m = 512
            // 2.70 ms (0.63 of the FMA roofline) against 4.30 ms (0.39) for the plain dot
            // path's 64 × 64 × 64 tiles; m = 40 455 µs against 612 µs; m = 24 333 µs against
            // 423 µs (32-row tiles both). A k step of 64 took 3.9 ms at m = 512: its scales come
            // two to a row, gathered lane by lane.
            let block_m = if p.m <= 48 { 32 } else { 64 };
            let block_n = p.n.next_power_of_two().clamp(16, 64);
            return DequantGemmW4Config {
                block_m,
                gemv: 0,
                block_n,
                block_k: 32,
                split_k: 1,
                row_loop: 0,
                weights_lhs: 1,
            };
        }
        // A GPU takes the lanes GEMV of the portable default: the row loop's `[R, block_k / 32,
        // 16]` steps are shaped for a CPU's vector registers and have fewer elements than a few
        // warps have threads.
        self.default_config(p)
    }

    fn space(&self, p: &DequantGemmW4Problem, limits: &SpaceLimits) -> Vec<DequantGemmW4Config> {
        // Tiles much larger than the problem only mask work away: cap block_m and block_n at the
        // problem rounded up to a power of two (16 at least for the dot path, its smallest tile).
        let m_cover = p.m.next_power_of_two();
        let max_n = p.n.next_power_of_two().max(16);
        let fits = |elements: u64| elements <= limits.max_tile_elements;
        let mut space = Vec::new();
        for (gemv, block_m) in GEMV_BLOCK_MS
            .into_iter()
            .filter(|&v| v <= m_cover)
            .map(|v| (1, v))
            .chain(BLOCK_MS.into_iter().filter(|&v| v >= DOT_MIN_BLOCK_M && v <= m_cover.max(16)).map(|v| (0, v)))
        {
            for block_n in BLOCK_NS.into_iter().filter(|&v| v <= max_n) {
                for block_k in BLOCK_KS {
                    for split_k in SPLITS {
                        let c = DequantGemmW4Config {
                            block_m,
                            gemv,
                            block_n,
                            block_k,
                            split_k,
                            row_loop: 0,
                            weights_lhs: 0,
                        };
                        let (m, n, k) = (u64::from(block_m), u64::from(block_n), u64::from(block_k));
                        // The GEMV's largest tile is its per-lane accumulator, `[block_m,
                        // block_n, block_k / 2]`; the dot path's are its three 2-D tiles.
                        let tiles_fit = if gemv == 1 {
                            fits(m * n * k / 2) && (m == 1 || m * n * k / 2 <= MAX_GEMV_ACC)
                        } else {
                            fits(m * k) && fits(k * n) && fits(m * n)
                        };
                        if tiles_fit && check_config(p, &c).is_ok() {
                            space.push(c.clone());
                        }
                        // The weights-left dot path: tiles `[block_n, block_k]`, `[block_k,
                        // block_m]` and `[block_n, block_m]`, as the plain dot path's.
                        let c_wl = DequantGemmW4Config { weights_lhs: 1, ..c.clone() };
                        if gemv == 0 && tiles_fit && check_config(p, &c_wl).is_ok() {
                            space.push(c_wl);
                        }
                        // The row loop's tiles are `[row_loop, block_k / 32, 16]`, far below any limit.
                        for row_loop in rowloop::ROW_LOOPS.into_iter().filter(|&r| r > 0) {
                            let c = DequantGemmW4Config { row_loop, ..c.clone() };
                            if check_config(p, &c).is_ok() {
                                space.push(c);
                            }
                        }
                    }
                }
            }
        }
        for target in [TargetKind::Cpu, TargetKind::Gpu] {
            let default = self.target_default(p, target);
            if !space.contains(&default) {
                space.push(default);
            }
        }
        space
    }

    fn plan(&self, p: &DequantGemmW4Problem, c: &DequantGemmW4Config) -> Result<Plan, KernelError> {
        check_config(p, c)?;
        let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
        let groups = p.groups();
        let k_tiles = p.k / c.block_k;
        let k_per_split = k_tiles.div_ceil(c.split_k) * c.block_k;
        let split = c.split_k > 1;
        if p.xq.is_integer() {
            let (mut buffers, mut launches) = int8::plan(p, c)?;
            if split {
                push_split_reduce(p, c, &mut buffers, &mut launches)?;
            }
            return Ok(Plan { buffers, launches });
        }

        let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
        if c.row_loop > 0 {
            let blocks = k / rowloop::BLOCK as usize;
            let mut buffers = vec![
                spec("x", p.act, m * k, Role::Input),
                spec("w", DType::U8, n * k / 2, Role::Input),
                spec("scales", DType::F16, n * groups, Role::Input),
            ];
            let mut args = vec![buf("xd"), buf("xs"), buf("w"), buf("scales")];
            if p.quant == Quant::Asym {
                buffers.push(spec("mins", DType::F16, n * groups, Role::Input));
                args.push(buf("mins"));
            }
            buffers.push(spec("y", p.act, m * n, Role::Output));
            buffers.push(spec("xd", DType::F32, m * blocks * rowloop::BLOCK_VALUES as usize, Role::Scratch));
            buffers.push(spec("xs", DType::F32, m * blocks, Role::Scratch));
            args.push(buf(if split { "partials" } else { "y" }));
            args.extend([i32_arg(n as i64), i32_arg(k as i64), i32_arg(k_per_split as i64)]);
            let mut launches = vec![
                Launch {
                    kernel: rowloop::build_deinterleave(p.act)?,
                    grid: [(blocks as u32).div_ceil(rowloop::DEINTERLEAVE_BLOCKS), p.m, 1],
                    args: vec![buf("x"), buf("xd"), buf("xs"), i32_arg(k as i64), i32_arg(blocks as i64)],
                },
                Launch { kernel: rowloop::build_gemv(p, c)?, grid: [p.n.div_ceil(c.block_n), p.m, c.split_k], args },
            ];
            if split {
                push_split_reduce(p, c, &mut buffers, &mut launches)?;
            }
            return Ok(Plan { buffers, launches });
        }

        // The dot path: x (or, weights-left, its transposed copy), the weights, y.
        let mut buffers = vec![
            spec("x", p.act, m * k, Role::Input),
            spec("w", DType::U8, n * k / 2, Role::Input),
            spec("scales", DType::F16, n * groups, Role::Input),
        ];
        let mut args = vec![buf(if c.weights_lhs == 1 { "xt" } else { "x" }), buf("w"), buf("scales")];
        if p.quant == Quant::Asym {
            buffers.push(spec("mins", DType::F16, n * groups, Role::Input));
            args.push(buf("mins"));
        }
        buffers.push(spec("y", p.act, m * n, Role::Output));
        args.push(buf(if split { "partials" } else { "y" }));
        args.extend([i32_arg(m as i64), i32_arg(n as i64), i32_arg(k as i64), i32_arg(k_per_split as i64)]);
        let grid = [p.n.div_ceil(c.block_n), p.m.div_ceil(c.block_m), c.split_k];
        let mut launches = if c.weights_lhs == 1 {
            buffers.push(spec("xt", DType::F32, m * k, Role::Scratch));
            vec![
                Launch {
                    kernel: weights_lhs::build_transpose(p.act)?,
                    grid: [p.k / rowloop::BLOCK as u32, p.m.div_ceil(weights_lhs::XT_ROWS), 1],
                    args: vec![buf("x"), buf("xt"), i32_arg(m as i64), i32_arg(k as i64)],
                },
                Launch { kernel: weights_lhs::build(p, c)?, grid, args },
            ]
        } else {
            vec![Launch { kernel: build_gemm(p, c)?, grid, args }]
        };
        if split {
            push_split_reduce(p, c, &mut buffers, &mut launches)?;
        }
        Ok(Plan { buffers, launches })
    }

    fn inputs(&self, p: &DequantGemmW4Problem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
        let groups = p.groups();
        let mut inputs = Buffers::from([
            ("x".to_string(), random::uniform(&mut rng, p.act, m * k, -1.0, 1.0)),
            ("w".to_string(), random::bytes(&mut rng, n * k / 2)),
            // Positive scales of the size real checkpoints have, so weights stay O(0.1).
            ("scales".to_string(), random::uniform(&mut rng, DType::F16, n * groups, 0.005, 0.03)),
        ]);
        if p.quant == Quant::Asym {
            // Around −8·scale, as an asymmetric quantizer of a zero-mean row gives.
            inputs.insert("mins".to_string(), random::uniform(&mut rng, DType::F16, n * groups, -0.3, 0.05));
        }
        inputs
    }

    fn reference(&self, p: &DequantGemmW4Problem, inputs: &Buffers) -> Reference {
        let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
        let x = inputs["x"].to_f64();
        let packed: Vec<u8> = inputs["w"].to_f64().iter().map(|&v| v as u8).collect();
        let scales = inputs["scales"].to_f64();
        let mins = inputs.get("mins").map(|b| b.to_f64());
        let mins = match p.quant {
            Quant::Sym => None,
            Quant::Asym => mins.as_deref(),
        };
        let w = layout::dequantize(n, k, p.group as usize, &packed, &scales, mins);
        Reference::from([("y".to_string(), matmul_nt(&x, &w, m, n, k))])
    }

    fn tolerance(&self, p: &DequantGemmW4Problem, dtype: DType) -> f64 {
        if p.xq.is_integer() {
            // Activation quantization dominates every other error; derived in `int8`.
            let quantization = if p.xq == ActQuant::I8 { int8::TOLERANCE } else { int8::TOLERANCE_I8X2 };
            return quantization.max(default_tolerance(dtype));
        }
        // f32: the dequantized weights are exact in f32 up to one rounding of `q·s + min`, and f32
        // accumulation of O(k) terms stays far inside 1e-5. f16: weights rounded to f16 for the
        // dot (2⁻¹² relative) plus the output rounding (2⁻¹²) stay well inside 2e-3.
        default_tolerance(dtype)
    }

    fn cost(&self, p: &DequantGemmW4Problem, plan: &Plan, _inputs: &Buffers) -> Cost {
        // Every weight, scale, min, activation and output byte once (split-K partials are
        // scratch and not counted); one multiply-add per weight and row of x.
        Cost { flops: 2 * p.m as u64 * p.n as u64 * p.k as u64, ..Cost::from_buffers(plan) }
    }

    fn regime(&self, p: &DequantGemmW4Problem) -> u32 {
        // The default's three kinds of config: one-token GEMV, multi-row GEMV, dot tiles.
        match p.m {
            1 => 0,
            2..=16 => 1,
            _ => 2,
        }
    }
}

/// The GEMV path's default for `2 ≤ m ≤ 16`: up to 8 rows per program (`block_m` = m rounded up to a
/// power of two), so each weight byte is read once or twice per launch.
fn gemv_default(p: &DequantGemmW4Problem) -> DequantGemmW4Config {
    let block_m = p.m.next_power_of_two();
    // Several rows: 16 outputs and one 32-column k step (a group of the smallest size, so one
    // scale per row of the tile) per program step, at most 8 rows: the per-lane accumulator
    // `[block_m, 16, 16]` f32 stays at 8 KiB. Measured at k = 576, n = 1536 (f32, group 32) on
    // 2 AVX-512 cores: m = 5 ~0.40 ms with 8 rows against ~0.42-0.90 ms for wider tiles or
    // 64-column steps; m = 16 ~0.79 ms with 2 programs of 8 rows against ~0.92 ms with 16.
    let block_m = block_m.min(8);
    DequantGemmW4Config { block_m, gemv: 1, block_n: 16, block_k: 32, split_k: 1, row_loop: 0, weights_lhs: 0 }
}

/// `y[i, j] = Σ_t x[i, t] · w[j, t]` in f64 (`x [m, k]`, `w [n, k]`).
pub fn matmul_nt(x: &[f64], w: &[f64], m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(m * n);
    for i in 0..m {
        for j in 0..n {
            y.push((0..k).map(|t| x[i * k + t] * w[j * k + t]).sum());
        }
    }
    y
}

/// `t` in `dtype`, without a no-op cast.
fn to_dtype(t: Tile<'_>, dtype: DType) -> Tile<'_> {
    if t.dtype() == dtype {
        t
    } else {
        t.cast(dtype)
    }
}

/// Launch 1: the tile GEMM (or GEMV for `block_m = 1`) over one k split.
fn build_gemm(p: &DequantGemmW4Problem, c: &DequantGemmW4Config) -> Result<Kernel, KernelError> {
    use DType::{F32, I32, U8};
    let (bm, bn, bk, group) = (c.block_m as i32, c.block_n as i32, c.block_k as i32, p.group as i32);
    let split = c.split_k > 1;
    let b = KernelBuilder::new(if split { "dequant_gemm_w4_partial" } else { NAME });
    let x = b.buffer("x", p.act);
    let w = b.buffer("w", U8);
    let scales = b.buffer("scales", DType::F16);
    let mins = match p.quant {
        Quant::Sym => None,
        Quant::Asym => Some(b.buffer("mins", DType::F16)),
    };
    let out = if split { b.buffer("partials", F32) } else { b.buffer("y", p.act) };
    let (m, n, k) = (b.scalar("m", I32), b.scalar("n", I32), b.scalar("k", I32));
    let k_per_split = b.scalar("k_per_split", I32);

    let cols = (b.program_id(0) * bn + b.arange(0, bn)).named("cols");
    let col_ok = cols.lt(n);
    let k_lo = (b.program_id(2) * k_per_split).named("k_lo");
    let k_hi = (k_lo + k_per_split).minimum(k).named("k_hi");
    let half_k = k / 2;
    let groups = k / group;
    // Split s writes its partial at partials[s]; without split-K the base is 0.
    let out_base = if split { b.program_id(2) * m * n } else { b.constant(0, I32) };

    if c.gemv == 1 {
        gemv::emit(&gemv::GemvParts {
            b: &b,
            x,
            w,
            scales,
            mins,
            out,
            out_dtype: out_dtype(p, c),
            m,
            n,
            k,
            k_lo,
            k_hi,
            out_base,
            cols,
            col_ok,
            half_k,
            groups,
            group,
            block_m: bm,
            block_n: bn,
            block_k: bk,
        });
    } else {
        let rows = (b.program_id(1) * bm + b.arange(0, bm)).named("rows");
        let row_ok = rows.lt(m);
        let weights = WeightTiles { b: &b, w, scales, mins, cols, col_ok, half_k, groups, group, block_k: bk };
        let acc0 = b.zeros(&[bm as u32, bn as u32], F32).named("acc0");
        let [acc] = b.for_range(k_lo, k_hi, bk, [acc0], |k0, [acc]| {
            let ks = k0 + b.arange(0, bk);
            let xt = b.load_masked(x, rows.col() * k + ks.row(), row_ok.col(), 0.0);
            [b.dot(xt, to_dtype(weights.dequant(k0, ks), p.act), acc)]
        });
        let offs = out_base + rows.col() * n + cols.row();
        b.store_masked(out, offs, to_dtype(acc, out_dtype(p, c)), row_ok.col() & col_ok.row());
    }
    b.finish().map_err(|source| KernelError::Build { kernel: NAME, source })
}

/// The weight side of launch 1: what a program needs to dequantize its `[block_k, block_n]` tiles.
struct WeightTiles<'b> {
    b: &'b KernelBuilder,
    w: Buf,
    scales: Buf,
    mins: Option<Buf>,
    /// This program's output columns (`[block_n]`) and which of them exist.
    cols: Tile<'b>,
    col_ok: Tile<'b>,
    /// Bytes per row of `w` and groups per row of `scales`.
    half_k: Tile<'b>,
    groups: Tile<'b>,
    group: i32,
    block_k: i32,
}

impl<'b> WeightTiles<'b> {
    /// The dequantized weights `W[cols, ks]ᵀ` as a `[block_k, block_n]` f32 tile (zeros past n),
    /// for the k columns `ks = k0 + 0..block_k`.
    fn dequant(&self, k0: Tile<'b>, ks: Tile<'b>) -> Tile<'b> {
        let (b, cols) = (self.b, self.cols);
        let bytes = b.load_masked(self.w, cols.row() * self.half_k + (ks / 2).col(), self.col_ok.row(), 0u8);
        let q = ((bytes >> ((ks % 2) * 4).cast(DType::U8).col()) & 0xFu8).cast(DType::F32);
        let scale = self.group_values(self.scales, k0, ks);
        match self.mins {
            None => (q - 8.0) * scale,
            Some(mins) => q * scale + self.group_values(mins, k0, ks),
        }
    }

    /// One group parameter (scale or min) per weight of the tile, as f32: a single `[1, block_n]`
    /// row when the tile lies within one group (`block_k ≤ group`), else gathered per k column.
    fn group_values(&self, buffer: Buf, k0: Tile<'b>, ks: Tile<'b>) -> Tile<'b> {
        let (b, cols, col_ok, group) = (self.b, self.cols, self.col_ok, self.group);
        if self.block_k <= group {
            b.load_masked(buffer, cols * self.groups + k0 / group, col_ok, 0.0).cast(DType::F32).row()
        } else {
            let offs = cols.row() * self.groups + (ks / group).col();
            b.load_masked(buffer, offs, col_ok.row(), 0.0).cast(DType::F32)
        }
    }
}

/// Launch 1 writes `y` in the activation dtype, or f32 partials under split-K.
fn out_dtype(p: &DequantGemmW4Problem, c: &DequantGemmW4Config) -> DType {
    if c.split_k > 1 {
        DType::F32
    } else {
        p.act
    }
}

/// Appends split-K's partials buffer and its reduce launch (`y[i] = Σ_s partials[s, i]`).
fn push_split_reduce(
    p: &DequantGemmW4Problem,
    c: &DequantGemmW4Config,
    buffers: &mut Vec<BufferSpec>,
    launches: &mut Vec<Launch>,
) -> Result<(), KernelError> {
    let mn = p.m as usize * p.n as usize;
    buffers.push(BufferSpec {
        name: "partials".into(),
        dtype: DType::F32,
        len: c.split_k as usize * mn,
        role: Role::Scratch,
    });
    launches.push(Launch {
        kernel: build_reduce(p.act, c.split_k)?,
        grid: [mn.div_ceil(REDUCE_BLOCK as usize) as u32, 1, 1],
        args: vec![buf("partials"), buf("y"), i32_arg(mn as i64)],
    });
    Ok(())
}

/// Launch 2 of split-K: `y[i] = Σ_s partials[s, i]` in split order, rounded to `act`.
fn build_reduce(act: DType, split_k: u32) -> Result<Kernel, KernelError> {
    let b = KernelBuilder::new("dequant_gemm_w4_split_reduce");
    let (partials, y) = (b.buffer("partials", DType::F32), b.buffer("y", act));
    let total = b.scalar("total", DType::I32);
    let offs = b.program_id(0) * REDUCE_BLOCK as i32 + b.arange(0, REDUCE_BLOCK as i32);
    let mask = offs.lt(total);
    let acc0 = b.zeros(&[REDUCE_BLOCK], DType::F32);
    let [acc] = b.for_range(0, split_k as i32, 1, [acc0], |s, [acc]| {
        [acc + b.load_masked(partials, s * total + offs, mask, 0.0)]
    });
    b.store_masked(y, offs, to_dtype(acc, act), mask);
    b.finish().map_err(|source| KernelError::Build { kernel: NAME, source })
}
