//! The integer-activation paths of `q8_gemv` (shape key `xq=i8` or `xq=i8x2`): activations
//! quantized per block of 32 columns to one int8 digit (`i8`) or two (`i8x2`, about 16 bits),
//! Q8_0 × int8 products summed in integers four at a time (one x86 VNNI `vpdpbusd` lane), one
//! conversion to f32 per 4 columns.
//!
//! # Weight layout
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, so the weights enter **offset by 128**:
//! `qs` is u8 `[n, k]` holding `q + 128` (the Q8_0 value's bits with the top bit flipped,
//! [`crate::q8::Q8Matrix::offset_qs`]); scales are the usual f16 `[n, k / 32]`. Then
//! `Σ q·x = Σ (q + 128)·x − 128·Σ x`, and the last term depends on the activations only.
//!
//! # Launches
//!
//! 1. **Quantize x** (grid `[⌈k / 32 / 8⌉, m, 1]`, 8 blocks per program): per block,
//!    `s = max |x| / 127`, `t = x / s`, `x_q = round(t)` (half away from zero, `|x_q| ≤ 127`;
//!    an all-zero block gets `s = 0`, `x_q = 0`). With `i8x2` a second digit
//!    `x_r = round((t − x_q) · 254)` (`|t − x_q| ≤ ½`, so `|x_r| ≤ 127`) and the block's value
//!    is `x_v = 254 · x_q + x_r`, with scale `s_x = s / 254`; with `i8`, `x_v = x_q`, `s_x = s`.
//!    Also `xcorr = 128 · Σ x_v` per run of 4 columns (i32), the offset of one VNNI lane.
//! 2. **GEMV** (grid `[⌈n / block_n⌉, m, 1]`): per k step the weight tile `[block_n, block_k]`
//!    as it lies, seen as `[block_n, block_k / 32, 8, 4]`; `Σ_t cast(qs)·cast(digit)` over the
//!    trailing 4 (the renderer emits a `vpdpbusd` per 64 bytes of a row and digit) gives the i32
//!    lanes, `254 · lanes_q + lanes_r − xcorr` is exactly `Σ q · x_v` over the lane's 4 columns
//!    (at most `4 · 128 · 127 · 255 < 2²⁴` in magnitude, so its conversion to f32 is exact),
//!    converted once and scaled by `s_w · s_x` into a per-lane f32 accumulator summed after the
//!    loop.
//!
//! # Numerics and tolerance
//!
//! Every integer sum is exact; the error is the activations' quantization. With one digit, as for
//! `dequant_gemm_w4`'s `xq=i8` (whose module doc derives it), the relative error norm is about
//! `(max|x| / (127 · √12)) / rms(x)`: `0.0039` for the library's inputs (uniform on [−1, 1]);
//! [`TOLERANCE`] allows 2.5× that. The second digit divides the step by 254: `1.5e-5`, and
//! [`TOLERANCE_I8X2`] allows 2.5× that plus the f32 rounding of the sums. Scales 2% off fail
//! either (the kernel tests show both). SmolLM2's final-norm activations have heavier tails (a
//! few large channels), so their error is larger: 1.1e-2 of the logits with `i8`, too much for
//! the runtime's default (see `runtime/src/model/llama.rs`), which takes `i8x2`.

use super::gemv::{Q8GemvConfig, Q8GemvProblem, NAME};
use crate::plan::{buf, i32_arg, BufferSpec, Launch, Role};
use crate::q8::Q8_BLOCK;
use crate::KernelError;
use kiln_ir::{DType, Kernel, KernelBuilder, Tile};
use std::fmt;

/// How `x` enters the products of `q8_gemv`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActQuant {
    /// `x` as given, f32 products (exact up to f32 rounding).
    F32,
    /// `x` quantized to one int8 digit per element, one scale per [`XQ_BLOCK`] columns.
    I8,
    /// `x` quantized to two int8 digits (`254 · x_q + x_r`, about 16 bits) per element.
    I8x2,
}

impl fmt::Display for ActQuant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ActQuant::F32 => "f32",
            ActQuant::I8 => "i8",
            ActQuant::I8x2 => "i8x2",
        })
    }
}

/// Columns of `x` per int8 scale (one Q8_0 block).
pub const XQ_BLOCK: u32 = Q8_BLOCK as u32;
/// Blocks of 32 columns per program of the quantize launch.
const QUANTIZE_BLOCKS: u32 = 8;
/// Columns per VNNI lane: `vpdpbusd` sums 4 byte products into each i32.
const LANE: u32 = 4;
/// The relative error norm allowed with `xq=i8` (see the module doc).
pub const TOLERANCE: f64 = 1e-2;
/// The relative error norm allowed with `xq=i8x2` (see the module doc).
pub const TOLERANCE_I8X2: f64 = 5e-5;
/// The weight of the first digit with `xq=i8x2`: the second quantizes `t − x_q ∈ [−½, ½]` to
/// `[−127, 127]`.
const DIGIT: i32 = 254;

/// The relative error norm allowed for `xq` (0 for f32, which keeps the default).
pub fn tolerance(xq: ActQuant) -> f64 {
    match xq {
        ActQuant::F32 => 0.0,
        ActQuant::I8 => TOLERANCE,
        ActQuant::I8x2 => TOLERANCE_I8X2,
    }
}

/// The buffers and launches of the int8 path.
pub(super) fn plan(p: &Q8GemvProblem, c: &Q8GemvConfig) -> Result<(Vec<BufferSpec>, Vec<Launch>), KernelError> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let blocks = k / XQ_BLOCK as usize;
    let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
    let two = p.xq == ActQuant::I8x2;
    let mut buffers = vec![
        spec("x", p.act, m * k, Role::Input),
        spec("qs", DType::U8, n * k, Role::Input),
        spec("scales", DType::F16, n * blocks, Role::Input),
        spec("y", p.out, m * n, Role::Output),
        spec("xq", DType::I8, m * k, Role::Scratch),
        spec("xs", DType::F32, m * blocks, Role::Scratch),
        spec("xcorr", DType::I32, m * k / LANE as usize, Role::Scratch),
    ];
    let mut digits = vec![buf("xq")];
    if two {
        buffers.push(spec("xr", DType::I8, m * k, Role::Scratch));
        digits.push(buf("xr"));
    }
    let mut args = digits.clone();
    args.extend([buf("xs"), buf("xcorr"), i32_arg(k as i64), i32_arg(blocks as i64)]);
    let quantize = Launch {
        kernel: build_quantize(p.act, two)?,
        grid: [(blocks as u32).div_ceil(QUANTIZE_BLOCKS), p.m, 1],
        args: std::iter::once(buf("x")).chain(args).collect(),
    };
    let mut args = digits;
    args.extend([buf("xs"), buf("xcorr"), buf("qs"), buf("scales"), buf("y"), i32_arg(n as i64), i32_arg(k as i64)]);
    let gemv = Launch { kernel: build_gemv(p, c, two)?, grid: [p.n.div_ceil(c.block_n), p.m, 1], args };
    Ok((buffers, vec![quantize, gemv]))
}

fn build_error(source: kiln_ir::BuildError) -> KernelError {
    KernelError::Build { kernel: NAME, source }
}

/// Launch 1: `x` → int8 digits, their scales and the per-lane offsets `128 · Σ x_v`.
fn build_quantize(act: DType, two: bool) -> Result<Kernel, KernelError> {
    use DType::{F32, I32, I8};
    let b = KernelBuilder::new(if two { "q8_gemv_quantize_x2" } else { "q8_gemv_quantize_x" });
    let x = b.buffer("x", act);
    let xq = b.buffer("xq", I8);
    let xr = two.then(|| b.buffer("xr", I8));
    let (xs, xcorr) = (b.buffer("xs", F32), b.buffer("xcorr", I32));
    let (k, blocks) = (b.scalar("k", I32), b.scalar("blocks", I32));
    let (qb, xb) = (QUANTIZE_BLOCKS as i32, XQ_BLOCK as i32);
    let lanes = (XQ_BLOCK / LANE) as i32;
    let row = b.program_id(1);
    let blk = (b.program_id(0) * qb + b.arange(0, qb)).named("blk");
    let ok = blk.lt(blocks);
    let at = (row * k + blk * xb).col() + b.arange(0, xb).row();
    let xv = b.load_masked(x, at, ok.col(), 0.0).cast(F32);
    let amax = xv.abs().max(1).named("amax");
    let scale = (amax / 127.0).named("scale");
    let inv = b.select(amax.gt(0.0), (amax.maximum(1e-30).recip() * 127.0).named("inv_nonzero"), 0.0);
    let t = xv * inv.col();
    let q = round_i8(&b, t).named("q");
    b.store_masked(xq, at, q, ok.col());
    let value = match xr {
        None => {
            b.store_masked(xs, row * blocks + blk, scale, ok);
            q.cast(I32)
        }
        Some(xr) => {
            // `t − q` is within ±½ and exact in f32 (both within 128 and close), so the second
            // digit is within ±127.
            let r = round_i8(&b, (t - q.cast(F32)) * DIGIT as f64).named("r");
            b.store_masked(xr, at, r, ok.col());
            b.store_masked(xs, row * blocks + blk, scale / DIGIT as f64, ok);
            q.cast(I32) * DIGIT + r.cast(I32)
        }
    };
    let lane_sums = value.reshape(&[QUANTIZE_BLOCKS, lanes as u32, LANE]).sum(2) * 128;
    let lane_at = (row * (k / LANE as i32) + blk * lanes).col() + b.arange(0, lanes).row();
    b.store_masked(xcorr, lane_at, lane_sums, ok.col());
    b.finish().map_err(build_error)
}

/// Launch 2: the integer GEMV (see the module doc).
fn build_gemv(p: &Q8GemvProblem, c: &Q8GemvConfig, two: bool) -> Result<Kernel, KernelError> {
    use DType::{F32, I32, I8, U8};
    let (bn, bk) = (c.block_n as i32, c.block_k as i32);
    let b = KernelBuilder::new(if two { "q8_gemv_i8x2" } else { "q8_gemv_i8" });
    let xq = b.buffer("xq", I8);
    let xr = two.then(|| b.buffer("xr", I8));
    let (xs, xcorr) = (b.buffer("xs", F32), b.buffer("xcorr", I32));
    let (qs, scales) = (b.buffer("qs", U8), b.buffer("scales", DType::F16));
    let y = b.buffer("y", p.out);
    let (n, k) = (b.scalar("n", I32), b.scalar("k", I32));

    let row = b.program_id(1);
    let cols = (b.program_id(0) * bn + b.arange(0, bn)).named("cols");
    let col_ok = cols.lt(n);
    let (xb, lane) = (XQ_BLOCK as i32, LANE as i32);
    let nb = bk / xb;
    let lanes = xb / lane;
    let shape4 = [bn as u32, nb as u32, lanes as u32, LANE];
    let blocks = k / xb;
    let blk = b.arange(0, nb);
    // When the steps divide k and the programs divide n no mask is needed: the loads stay
    // unmasked whole rows the backends read in place, with no mask test per element or row.
    let whole_steps = p.k.is_multiple_of(c.block_k);
    let whole_cols = p.n.is_multiple_of(c.block_n);
    let acc0 = b.zeros(&[bn as u32, nb as u32, lanes as u32], F32).named("acc");
    let [acc] = b.for_range(0, k, bk, [acc0], |k0, [acc]| {
        let ks = k0 + b.arange(0, bk);
        let x_at = row * k + ks;
        let lane_at = row * (k / lane) + k0 / lane + b.arange(0, bk / lane);
        let blk_at = k0 / xb + blk;
        let w_at = cols.col() * k + ks.row();
        let s_w_at = cols.col() * blocks + blk_at.row();
        let unmasked = whole_steps && whole_cols;
        let k_ok = ks.lt(k);
        let digit = |buffer| if unmasked { b.load(buffer, x_at) } else { b.load_masked(buffer, x_at, k_ok, 0i8) };
        let (bytes, corr, s_x, s_w) = if unmasked {
            (b.load(qs, w_at), b.load(xcorr, lane_at), b.load(xs, row * blocks + blk_at), b.load(scales, s_w_at))
        } else {
            let lane_ok = (k0 / lane + b.arange(0, bk / lane)).lt(k / lane);
            let blk_ok = blk_at.lt(blocks);
            (
                b.load_masked(qs, w_at, col_ok.col() & k_ok.row(), 0u8),
                b.load_masked(xcorr, lane_at, lane_ok, 0),
                b.load_masked(xs, row * blocks + blk_at, blk_ok, 0.0),
                b.load_masked(scales, s_w_at, col_ok.col() & blk_ok.row(), 0.0),
            )
        };
        let bytes = bytes.reshape(&shape4);
        let sums = byte_lanes(bytes, digit(xq), &shape4).named("lanes");
        let sums = match xr {
            None => sums,
            Some(xr) => (sums * DIGIT + byte_lanes(bytes, digit(xr), &shape4).named("lanes_r")).named("lanes_v"),
        };
        let exact = sums - corr.reshape(&shape4[1..3]).expand_dims(0);
        let s_w = s_w.cast(F32);
        // `s_x` per lane with storage of its own (the sum with zeros is not a view), so that a
        // row of lanes is one contiguous vector for the multiply below.
        let s_x_lanes = (s_x.col() + b.zeros(&[nb as u32, lanes as u32], F32)).named("s_x_lanes");
        let factor = (s_w.expand_dims(2) * s_x_lanes.expand_dims(0)).named("factor");
        [acc + exact.cast(F32) * factor]
    });
    let out = acc.sum(2).sum(1);
    b.store_masked(y, row * n + cols, out.cast(p.out), col_ok);
    b.finish().map_err(build_error)
}

/// `v` rounded half away from zero to int8 (`|v| ≤ 127` up to one rounding, so the truncated
/// `v ± ½` is within ±127).
fn round_i8<'a>(b: &'a KernelBuilder, v: Tile<'a>) -> Tile<'a> {
    let half = b.select(v.ge(0.0), b.full(&[QUANTIZE_BLOCKS, XQ_BLOCK], 0.5, DType::F32), -0.5);
    (v + half).cast(DType::I8)
}

/// The i32 VNNI lanes `Σ_t bytes[.., t] · digit[.., t]` of a weight tile `[block_n, nb, 8, 4]`
/// and one digit of x `[block_k]`, broadcast over the rows.
fn byte_lanes<'a>(bytes: Tile<'a>, digit: Tile<'a>, shape4: &[u32; 4]) -> Tile<'a> {
    let digit = digit.reshape(&shape4[1..]).expand_dims(0).broadcast_to(&kiln_ir::Shape::new(*shape4));
    (bytes.cast(DType::I32) * digit.cast(DType::I32)).sum(3)
}
