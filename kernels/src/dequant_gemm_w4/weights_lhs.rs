//! The `dot` path with the weights as the left operand (`weights_lhs = 1`, prefill shapes): each
//! program computes a `yᵀ` tile, `[block_n, block_m]`, as `dequant(W tile) · xᵀ tile`.
//!
//! The plain `dot` path (`weights_lhs = 0`) multiplies an x tile by a `[block_k, block_n]` tile
//! of the weights that it loads transposed: each of its bytes is read on its own (a row of `W`
//! is a row of the tile's *columns*) and every byte twice (two nibbles). A CPU then spends more
//! time gathering bytes and scales than multiplying: 0.40 of its FMA peak at m = 512 on 2 Zen 5
//! cores. Here the weight tile is read as it lies, `[block_n, block_k / 2]` byte rows, and the
//! transposed side is x, whose rows are f32 (or f16) runs that a transposing load reads whole.
//!
//! # Launches
//!
//! 1. **x de-interleaved and transposed** ([`build_transpose`], grid `[k / 32, ⌈m / 64⌉]`): per
//!    block of 32 columns of `x`, the 16 even columns then the 16 odd ones, each as a row of `m`
//!    f32 values, into the scratch `xt` `[k, m]`. A byte row of 16 bytes holds a block's codes
//!    with column `2p` in the low nibble of byte `p` and `2p + 1` in the high one, so the low
//!    nibbles meet the block's first 16 rows of `xt` and the high ones the next 16. Written
//!    once, so that no program of launch 2 transposes its x tiles itself (each x tile is read
//!    by every program of its row of the grid): at k = 576, n = 1536 that made m = 24 258 µs
//!    against 335 µs, m = 512 2.56-2.69 ms against 2.70-2.71.
//! 2. **yᵀ tiles** (grid `[⌈n / block_n⌉, ⌈m / block_m⌉, split_k]`): per step of `block_k`
//!    columns (a multiple of 32, so every 32-column block lies in one group of every legal size):
//!    - the weight bytes `[block_n, block_k / 2]`, masked past n;
//!    - viewed as `[block_n, block_k / 32, 1, 16]` and shifted by 0 and 4 bits into
//!      `[block_n, block_k / 32, 2, 16]` codes: element `(r, i, h, p)` is column
//!      `k0 + 32·i + 2·p + h` of row `r`, the order of `xt`'s rows;
//!    - dequantized in f32 with one scale (and min) per row and block, `(q − 8)·s` or `q·s + min`,
//!      and seen as `[block_n, block_k]`;
//!    - `xᵀ` `[block_k, block_m]`: rows `k0 ..` of `xt`, the program's tokens (masked past m);
//!    - `acc += w · xᵀ` (f32).
//!
//!    At the end `acc` (`[block_n, block_m]`) is stored transposed into `y` (or the split's
//!    partial), rounded once to `act`.
//! 3. With `split_k > 1`, the shared reduce launch.
//!
//! Numerics: the weights are exact `q·s + min` in f32, never rounded to f16 (unlike the plain
//! `dot` path, shaped for f16 tensor cores), x is exact in f32, sums are f32: the result differs
//! from the reference only by f32 rounding order.

use super::layout::Quant;
use super::rowloop::{build_error, BLOCK};
use super::{out_dtype, to_dtype, DequantGemmW4Config, DequantGemmW4Problem};
use crate::KernelError;
use kiln_ir::{DType, Kernel, KernelBuilder};

/// Why a config with `weights_lhs = 1` does not fit, if it does not.
pub(super) fn check_config(c: &DequantGemmW4Config) -> Result<(), String> {
    if c.weights_lhs == 0 {
        return Ok(());
    }
    if c.gemv != 0 || c.row_loop != 0 {
        return Err(format!(
            "weights_lhs = 1 is a dot-path layout and needs gemv = 0, row_loop = 0 (not gemv = {}, row_loop = {})",
            c.gemv, c.row_loop
        ));
    }
    if !c.block_k.is_multiple_of(BLOCK as u32) {
        return Err(format!("weights_lhs = 1 needs block_k to be a multiple of {BLOCK}, not {}", c.block_k));
    }
    Ok(())
}

/// Tokens per program of launch 1.
pub(super) const XT_ROWS: u32 = 64;

/// Launch 1: `x` (`[m, k]` of `act`) → `xt` (`[k, m]` f32): per 32-column block of `x`, its 16
/// even columns then its 16 odd ones, each as a row of `m` values (see the module doc). Grid
/// `[k / 32, ⌈m / XT_ROWS⌉]`: a program reads a `[32, XT_ROWS]` tile of `x` transposed (its
/// columns are rows of `x`) and writes each of the 32 rows whole.
pub(super) fn build_transpose(act: DType) -> Result<Kernel, KernelError> {
    use DType::{F32, I32};
    let b = KernelBuilder::new("dequant_gemm_w4_xt");
    let (x, xt) = (b.buffer("x", act), b.buffer("xt", F32));
    let (m, k) = (b.scalar("m", I32), b.scalar("k", I32));
    let rows = (b.program_id(1) * XT_ROWS as i32 + b.arange(0, XT_ROWS as i32)).named("rows");
    let row_ok = rows.lt(m);
    let block = b.program_id(0) * BLOCK;
    let j = b.arange(0, BLOCK);
    let tile = b.load_masked(x, rows.row() * k + (block + j).col(), row_ok.row(), 0.0);
    // Column 2p + h of the block goes to row 16h + p.
    let to = (block + (j % 2) * 16 + j / 2).col() * m + rows.row();
    b.store_masked(xt, to, to_dtype(tile, F32), row_ok.row());
    b.finish().map_err(build_error)
}

/// Launch 2: the `yᵀ` tiles over one k split (see the module doc).
pub(super) fn build(p: &DequantGemmW4Problem, c: &DequantGemmW4Config) -> Result<Kernel, KernelError> {
    use DType::{F16, F32, I32, U8};
    let (bm, bn, bk, group) = (c.block_m as i32, c.block_n as i32, c.block_k as i32, p.group as i32);
    let blocks = c.block_k / BLOCK as u32;
    let split = c.split_k > 1;
    let b = KernelBuilder::new(if split { "dequant_gemm_w4_wlhs_partial" } else { "dequant_gemm_w4_wlhs" });
    let xt_buf = b.buffer("xt", F32);
    let w = b.buffer("w", U8);
    let scales = b.buffer("scales", F16);
    let mins = match p.quant {
        Quant::Sym => None,
        Quant::Asym => Some(b.buffer("mins", F16)),
    };
    let out = if split { b.buffer("partials", F32) } else { b.buffer("y", p.act) };
    let (m, n, k) = (b.scalar("m", I32), b.scalar("n", I32), b.scalar("k", I32));
    let k_per_split = b.scalar("k_per_split", I32);

    let cols = (b.program_id(0) * bn + b.arange(0, bn)).named("cols");
    let col_ok = cols.lt(n);
    let rows = (b.program_id(1) * bm + b.arange(0, bm)).named("rows");
    let row_ok = rows.lt(m);
    let k_lo = (b.program_id(2) * k_per_split).named("k_lo");
    let k_hi = (k_lo + k_per_split).minimum(k).named("k_hi");
    let (half_k, groups) = (k / 2, k / group);
    let out_base = if split { b.program_id(2) * m * n } else { b.constant(0, I32) };
    // Bits to shift a byte by for its low (h = 0) and high (h = 1) code, as `[1, 1, 2, 1]`.
    let shift = (b.arange(0, 2) * 4).cast(U8).reshape(&[1, 1, 2, 1]);

    let acc0 = b.zeros(&[bn as u32, bm as u32], F32).named("acc0");
    let [acc] = b.for_range(k_lo, k_hi, bk, [acc0], |k0, [acc]| {
        let bytes = b.load_masked(w, cols.col() * half_k + (k0 / 2 + b.arange(0, bk / 2)).row(), col_ok.col(), 0u8);
        let codes = ((bytes.reshape(&[bn as u32, blocks, 1, 16]) >> shift) & 0xFu8).cast(F32);
        // One scale (and min) per row and 32-column block: a block never straddles a group.
        let group_of_block = (k0 + b.arange(0, blocks as i32) * BLOCK) / group;
        let per_block = |buffer| {
            b.load_masked(buffer, cols.col() * groups + group_of_block.row(), col_ok.col(), 0.0)
                .cast(F32)
                .reshape(&[bn as u32, blocks, 1, 1])
        };
        let weights = match mins {
            None => (codes - 8.0) * per_block(scales),
            Some(mins) => codes * per_block(scales) + per_block(mins),
        };
        let weights = weights.reshape(&[bn as u32, c.block_k]);
        let xt = b.load_masked(xt_buf, (k0 + b.arange(0, bk)).col() * m + rows.row(), row_ok.row(), 0.0);
        [b.dot(weights, xt, acc)]
    });
    let offs = out_base + rows.row() * n + cols.col();
    b.store_masked(out, offs, to_dtype(acc, out_dtype(p, c)), col_ok.col() & row_ok.row());
    b.finish().map_err(build_error)
}
