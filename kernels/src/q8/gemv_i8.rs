//! The int8-activation path of `q8_gemv` (shape key `xq=i8`): activations quantized to int8 per
//! block of 32 columns, Q8_0 × int8 products summed in integers four at a time (one x86 VNNI
//! `vpdpbusd` lane), one conversion to f32 per 4 products.
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
//!    `s_x = max |x| / 127`, `x_q = round(x / s_x)` (half away from zero, `|x_q| ≤ 127`; an
//!    all-zero block gets `s_x = 0`, `x_q = 0`); also `xcorr = 128 · Σ x_q` per run of 4
//!    columns (i32), the offset of one VNNI lane.
//! 2. **GEMV** (grid `[⌈n / block_n⌉, m, 1]`): per k step the weight tile `[block_n, block_k]`
//!    as it lies, seen as `[block_n, block_k / 32, 8, 4]`; `Σ_t cast(qs)·cast(x_q)` over the
//!    trailing 4 (the renderer emits a `vpdpbusd` per 64 bytes of a row) gives the i32 lanes,
//!    `lanes − xcorr` is exactly `Σ q·x_q` over the lane's 4 columns, converted once to f32 and
//!    scaled by `s_w · s_x` into a per-lane f32 accumulator summed after the loop.
//!
//! # Numerics and tolerance
//!
//! Every integer sum is exact; the error is the activations' quantization. As for
//! `dequant_gemm_w4`'s `xq=i8` (whose module doc derives it), the relative error norm is about
//! `(max|x| / (127 · √12)) / rms(x)` per block: `0.0039` for the library's inputs (uniform on
//! [−1, 1]); [`TOLERANCE`] allows 2.5× that, and scales 2% off fail it (the kernel tests show
//! both). SmolLM2's final-norm activations have heavier tails (a few large channels), so their
//! per-block error is larger; the runtime decides whether to use this path with the model's own
//! logits test (see `runtime/src/model/llama.rs`).

use super::gemv::{Q8GemvConfig, Q8GemvProblem, NAME};
use crate::plan::{buf, i32_arg, BufferSpec, Launch, Role};
use crate::q8::Q8_BLOCK;
use crate::KernelError;
use kiln_ir::{DType, Kernel, KernelBuilder};

/// Columns of `x` per int8 scale (one Q8_0 block).
pub const XQ_BLOCK: u32 = Q8_BLOCK as u32;
/// Blocks of 32 columns per program of the quantize launch.
const QUANTIZE_BLOCKS: u32 = 8;
/// Columns per VNNI lane: `vpdpbusd` sums 4 byte products into each i32.
const LANE: u32 = 4;
/// The relative error norm allowed with `xq=i8` (see the module doc).
pub const TOLERANCE: f64 = 1e-2;

/// The buffers and launches of the int8 path.
pub(super) fn plan(p: &Q8GemvProblem, c: &Q8GemvConfig) -> Result<(Vec<BufferSpec>, Vec<Launch>), KernelError> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let blocks = k / XQ_BLOCK as usize;
    let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
    let buffers = vec![
        spec("x", p.act, m * k, Role::Input),
        spec("qs", DType::U8, n * k, Role::Input),
        spec("scales", DType::F16, n * blocks, Role::Input),
        spec("y", p.out, m * n, Role::Output),
        spec("xq", DType::I8, m * k, Role::Scratch),
        spec("xs", DType::F32, m * blocks, Role::Scratch),
        spec("xcorr", DType::I32, m * k / LANE as usize, Role::Scratch),
    ];
    let quantize = Launch {
        kernel: build_quantize(p.act)?,
        grid: [(blocks as u32).div_ceil(QUANTIZE_BLOCKS), p.m, 1],
        args: vec![buf("x"), buf("xq"), buf("xs"), buf("xcorr"), i32_arg(k as i64), i32_arg(blocks as i64)],
    };
    let gemv = Launch {
        kernel: build_gemv(p, c)?,
        grid: [p.n.div_ceil(c.block_n), p.m, 1],
        args: vec![
            buf("xq"),
            buf("xs"),
            buf("xcorr"),
            buf("qs"),
            buf("scales"),
            buf("y"),
            i32_arg(n as i64),
            i32_arg(k as i64),
        ],
    };
    Ok((buffers, vec![quantize, gemv]))
}

fn build_error(source: kiln_ir::BuildError) -> KernelError {
    KernelError::Build { kernel: NAME, source }
}

/// Launch 1: `x` → int8 blocks, their scales and the per-lane offsets `128 · Σ x_q`.
fn build_quantize(act: DType) -> Result<Kernel, KernelError> {
    use DType::{F32, I32, I8};
    let b = KernelBuilder::new("q8_gemv_quantize_x");
    let (x, xq, xs, xcorr) = (b.buffer("x", act), b.buffer("xq", I8), b.buffer("xs", F32), b.buffer("xcorr", I32));
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
    let half = b.select(t.ge(0.0), b.full(&[QUANTIZE_BLOCKS, XQ_BLOCK], 0.5, F32), -0.5);
    // |t| ≤ 127 (up to one rounding), so the truncated `t ± 0.5` is within ±127.
    let q = (t + half).cast(I8).named("q");
    b.store_masked(xq, at, q, ok.col());
    b.store_masked(xs, row * blocks + blk, scale, ok);
    let lane_sums = q.reshape(&[QUANTIZE_BLOCKS, lanes as u32, LANE]).cast(I32).sum(2) * 128;
    let lane_at = (row * (k / LANE as i32) + blk * lanes).col() + b.arange(0, lanes).row();
    b.store_masked(xcorr, lane_at, lane_sums, ok.col());
    b.finish().map_err(build_error)
}

/// Launch 2: the integer GEMV (see the module doc).
fn build_gemv(p: &Q8GemvProblem, c: &Q8GemvConfig) -> Result<Kernel, KernelError> {
    use DType::{F32, I32, I8, U8};
    let (bn, bk) = (c.block_n as i32, c.block_k as i32);
    let b = KernelBuilder::new("q8_gemv_i8");
    let (xq, xs, xcorr) = (b.buffer("xq", I8), b.buffer("xs", F32), b.buffer("xcorr", I32));
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
    let shape = kiln_ir::Shape::new(shape4);
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
        let (bytes, x, corr, s_x, s_w) = if whole_steps && whole_cols {
            (
                b.load(qs, w_at),
                b.load(xq, x_at),
                b.load(xcorr, lane_at),
                b.load(xs, row * blocks + blk_at),
                b.load(scales, s_w_at),
            )
        } else {
            let k_ok = ks.lt(k);
            let lane_ok = (k0 / lane + b.arange(0, bk / lane)).lt(k / lane);
            let blk_ok = blk_at.lt(blocks);
            (
                b.load_masked(qs, w_at, col_ok.col() & k_ok.row(), 0u8),
                b.load_masked(xq, x_at, k_ok, 0i8),
                b.load_masked(xcorr, lane_at, lane_ok, 0),
                b.load_masked(xs, row * blocks + blk_at, blk_ok, 0.0),
                b.load_masked(scales, s_w_at, col_ok.col() & blk_ok.row(), 0.0),
            )
        };
        let bytes = bytes.reshape(&shape4);
        let x = x.reshape(&shape4[1..]).expand_dims(0).broadcast_to(&shape);
        let sums = (bytes.cast(I32) * x.cast(I32)).sum(3).named("lanes");
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
