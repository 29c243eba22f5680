//! The row-loop GEMV of `dequant_gemm_w4` (`row_loop = R > 0`, one token per program row):
//! a program walks its `block_n` weight rows `R` at a time and runs the whole k loop for those
//! rows before moving on, so each row's accumulators are a few vectors that stay in registers
//! for the length of the row, and the row's scales and mins are read in k order next to its
//! bytes. The lanes layout of `gemv.rs` (`row_loop = 0`) keeps `[block_n, tile_groups, 16]`
//! accumulators, which a CPU holds in memory and loads and stores at every step; with the loop
//! order turned around, a step is the weight bytes, a few multiply-adds and nothing else.
//!
//! # Launches
//!
//! 1. **De-interleave x** (grid `[⌈k / 32 / 8⌉, m, 1]`): per block of 32 columns of `x`, 32 f32
//!    values in the scratch buffer `xd` (the 16 even columns, then the 16 odd ones) and their
//!    sum in `xs`. A weight byte row of 16 bytes holds the block's codes with column `2p` in the
//!    low nibble of byte `p` and `2p + 1` in the high one, so the low nibbles pair with the
//!    first 16 values and the high nibbles with the next 16 without shuffles. `x` is read once
//!    per token here instead of at stride 2 by every row of every program.
//! 2. **GEMV** (grid `[⌈n / block_n⌉, m, split_k]`): for each `R` rows (masked past `n`), over
//!    the program's k range in steps of `block_k`: `acc += (lo · x_even + hi · x_odd) · scale`
//!    per lane (`[R, blocks, 16]`, blocks of 32 columns), and the offset term per row and block,
//!    `acc_offset += min · Σ x` (asym) or `−8 · scale · Σ x` (sym), one product per 32 weights.
//!    At group 32 (asym, several groups a step) the mins are not read in the weights' loop at
//!    all: after it, `Σ_g min · Σx` runs over `[R, 16]` tiles of mins (each row's 16 groups one
//!    contiguous run), then `[R, 2]` ones for the last groups (`RowGroup::min_offsets`).
//!    Against the term inside the loop: hot on one thread at k = 576, n = 3072, 59.6-61.1
//!    against 63.2-64.6 µs; from DRAM at k = 4096, n = 14336, 875-1040 against 1042-1766 µs;
//!    SmolLM2's decode 3.13-3.41 against 3.35-3.84 ms per token (four interleaved pairs, each
//!    faster).
//!    After the row's k loop, one horizontal sum per row.
//! 3. With `split_k > 1`, the f32 partials are summed by the shared reduce launch.
//!
//! On the CPU, `R = 8` rows of 64-column steps make a 16-vector accumulator that the renderer
//! keeps in AVX-512 registers; the step's x values are read where they lie in `xd` (L1).
//!
//! The numerics are those of the lanes GEMV: exact weights `q · s + min` in f32 (never rounded
//! to f16), f32 sums, so the result differs from dequantize-then-multiply only by rounding order.

use super::layout::Quant;
use super::{out_dtype, to_dtype, DequantGemmW4Config, DequantGemmW4Problem, NAME};
use crate::KernelError;
use kiln_ir::{Buf, DType, Kernel, KernelBuilder, Tile};

/// Columns of `x` per de-interleaved block: the smallest group, one 16-byte weight row segment.
pub(super) const BLOCK: i32 = 32;
/// f32 values of `xd` per block: 16 even columns, then 16 odd ones.
pub(super) const BLOCK_VALUES: i32 = 32;
/// Groups of 32 columns per step of the mins' tail loop: the smallest step of several groups
/// (`block_k = 64`), so every k range of a split holds a whole number of them.
const BLOCK_PAIR: i32 = 2;
/// Blocks per program of the de-interleave launch.
pub(super) const DEINTERLEAVE_BLOCKS: u32 = 8;
/// The legal `row_loop` values: 0 (the lanes GEMV) or rows per step of the row loop.
pub(super) const ROW_LOOPS: [u32; 5] = [0, 1, 2, 4, 8];

pub(super) fn build_error(source: kiln_ir::BuildError) -> KernelError {
    KernelError::Build { kernel: NAME, source }
}

/// Why a config with `row_loop > 0` does not fit, if it does not.
pub(super) fn check_config(c: &DequantGemmW4Config) -> Result<(), String> {
    if c.row_loop == 0 {
        return Ok(());
    }
    if c.gemv != 1 || c.block_m != 1 {
        return Err(format!(
            "row_loop = {} is a one-token GEMV and needs gemv = 1, block_m = 1 (not gemv = {}, block_m = {})",
            c.row_loop, c.gemv, c.block_m
        ));
    }
    if !c.block_k.is_multiple_of(BLOCK as u32) {
        return Err(format!("row_loop needs block_k to be a multiple of {BLOCK}, not {}", c.block_k));
    }
    if c.row_loop > c.block_n {
        return Err(format!("row_loop = {} exceeds block_n = {}", c.row_loop, c.block_n));
    }
    Ok(())
}

/// Launch 1: `x` (`[m, k]` of `act`) → `xd` (`[m, k / 32, 32]` f32) and `xs` (`[m, k / 32]`
/// f32), see the module doc.
pub(super) fn build_deinterleave(act: DType) -> Result<Kernel, KernelError> {
    use DType::{F32, I32};
    let b = KernelBuilder::new("dequant_gemm_w4_deinterleave_x");
    let (x, xd, xs) = (b.buffer("x", act), b.buffer("xd", F32), b.buffer("xs", F32));
    let (k, blocks) = (b.scalar("k", I32), b.scalar("blocks", I32));
    let db = DEINTERLEAVE_BLOCKS as i32;
    let row = b.program_id(1);
    let blk = (b.program_id(0) * db + b.arange(0, db)).named("blk");
    let ok = blk.lt(blocks);
    let ok3 = ok.expand_dims(1).expand_dims(2);
    // `[blocks, parity, 16]`: element (i, h, p) is column 32·i + 2p + h of the row, so the tile
    // is the de-interleaved block as loaded.
    let base = (row * k + blk * BLOCK).expand_dims(1).expand_dims(2);
    let parity = b.arange(0, 2).expand_dims(0).expand_dims(2);
    let pair = b.arange(0, 16).expand_dims(0).expand_dims(1);
    let xv = to_dtype(b.load_masked(x, base + pair * 2 + parity, ok3, 0.0), F32);
    b.store_masked(xd, base + parity * 16 + pair, xv, ok3);
    b.store_masked(xs, row * blocks + blk, xv.sum(2).sum(1), ok);
    b.finish().map_err(build_error)
}

/// What launch 2 reads and writes.
struct Buffers {
    xd: Buf,
    xs: Buf,
    w: Buf,
    scales: Buf,
    mins: Option<Buf>,
    out: Buf,
}

/// Launch 2: the row-loop GEMV over one k split (see the module doc).
pub(super) fn build_gemv(p: &DequantGemmW4Problem, c: &DequantGemmW4Config) -> Result<Kernel, KernelError> {
    use DType::{F32, I32, U8};
    let split = c.split_k > 1;
    let b = KernelBuilder::new(if split { "dequant_gemm_w4_rows_partial" } else { "dequant_gemm_w4_rows" });
    let bufs = Buffers {
        xd: b.buffer("xd", F32),
        xs: b.buffer("xs", F32),
        w: b.buffer("w", U8),
        scales: b.buffer("scales", DType::F16),
        mins: match p.quant {
            Quant::Sym => None,
            Quant::Asym => Some(b.buffer("mins", DType::F16)),
        },
        out: if split { b.buffer("partials", F32) } else { b.buffer("y", p.act) },
    };
    let (n, k, k_per_split) = (b.scalar("n", I32), b.scalar("k", I32), b.scalar("k_per_split", I32));
    let (bn, bk, group, rows) = (c.block_n as i32, c.block_k as i32, p.group as i32, c.row_loop as i32);
    let token = b.program_id(1);
    let col0 = (b.program_id(0) * bn).named("col0");
    let k_lo = (b.program_id(2) * k_per_split).named("k_lo");
    let k_hi = (k_lo + k_per_split).minimum(k).named("k_hi");
    let (half_k, groups) = (k / 2, k / group);
    let out_base = if split { b.program_id(2) * b.num_programs(1) * n } else { b.constant(0, I32) };
    let nb = bk / BLOCK;
    let shape = [rows as u32, nb as u32, 16];
    // Block i of the k tile: its 16 bytes at 16·i of the row's tile, its x values at 48·i of the
    // token's de-interleaved row.
    let blk = b.arange(0, nb).col();
    let lane = b.arange(0, 16).row();
    let byte_at = (blk * 16 + lane).expand_dims(0);
    let x_at = blk * BLOCK_VALUES + lane;
    let x_row = token * (k / BLOCK) * BLOCK_VALUES;

    b.for_range(0, bn, rows, [], |r, []| {
        let cols = (col0 + r + b.arange(0, rows)).named("cols");
        let col_ok = cols.lt(n);
        let ok3 = col_ok.expand_dims(1).expand_dims(2);
        let rows_of = RowGroup { b: &b, cols, col_ok, groups, group, bk };
        // The offset term (`min · Σ x`, or `−8 · scale · Σ x`) when the step lies within a
        // group: one value per row, `[R, 1]`, from the step's Σ x (summed first, shared by the
        // rows). A step over several groups adds it to `acc` instead (see below) and leaves
        // this one at zero.
        let init = [b.zeros(&shape, F32).named("acc"), b.zeros(&[rows as u32, 1], F32).named("acc_offset")];
        let [acc, acc_offset] = b.for_range(k_lo, k_hi, bk, init, |k0, [acc, acc_offset]| {
            // Masked (not clamped) rows: the row starts stay affine, so a backend can read the
            // bytes where they lie whenever every row of the step exists.
            let bytes =
                b.load_masked(bufs.w, (cols * half_k + k0 / 2).expand_dims(1).expand_dims(2) + byte_at, ok3, 0u8);
            let lo = (bytes & 0xFu8).cast(F32);
            let hi = (bytes >> 4u8).cast(F32);
            // `[1, blocks, 16]` offsets (not a load expanded after): the loads are then read by
            // the multiply-adds alone, which a backend may do where the values lie.
            let xd_at = (x_row + k0 / BLOCK * BLOCK_VALUES + x_at).expand_dims(0);
            let x_even = b.load(bufs.xd, xd_at);
            let x_odd = b.load(bufs.xd, xd_at + 16);
            let scale = rows_of.group_values(bufs.scales, k0);
            let dot = lo * x_even + hi * x_odd;
            if bk <= group {
                // Σ x over the step, `[1, 1]`: one product per row and step.
                let x_sum = b.load(bufs.xs, (token * (k / BLOCK) + k0 / BLOCK + b.arange(0, nb)).row()).sum(1).col();
                let offset = match bufs.mins {
                    Some(mins) => rows_of.group_values(mins, k0) * x_sum,
                    None => scale * x_sum * -8.0,
                };
                [acc + dot * scale.expand_dims(2), acc_offset + offset]
            } else {
                // Several groups per step: per row and block, `[R, blocks]` parameters. The
                // offset term rides in `acc` as `min · (x_even + x_odd)` per lane (its lanes sum
                // to `min · Σ x` of the block), one more multiply-add per 32 weights, instead of
                // an `[R, blocks]` accumulator beside it: a CPU then keeps every parameter a
                // broadcast scalar and never reads a tile of them as a vector right after
                // writing it row by row.
                let x_pair = x_even + x_odd;
                let acc = match bufs.mins {
                    // Group 32: the mins' term has loops of their own (below).
                    Some(_) if group == BLOCK => acc + dot * scale.expand_dims(2),
                    Some(mins) => {
                        acc + dot * scale.expand_dims(2) + rows_of.group_values(mins, k0).expand_dims(2) * x_pair
                    }
                    None => acc + (dot + x_pair * -8.0) * scale.expand_dims(2),
                };
                [acc, acc_offset]
            }
        });
        let offset = match bufs.mins {
            Some(mins) if bk > group && group == BLOCK => {
                rows_of.min_offsets(mins, bufs.xs, token * (k / BLOCK), k_lo / BLOCK, k_hi / BLOCK)
            }
            _ => acc_offset.sum(1),
        };
        let y = acc.sum(2).sum(1) + offset;
        let out_at = out_base + token * n + cols;
        b.store_masked(bufs.out, out_at, to_dtype(y, out_dtype(p, c)), col_ok);
        []
    });
    b.finish().map_err(build_error)
}

/// The rows a step of the row loop works on, and how their group parameters are laid out.
struct RowGroup<'b> {
    b: &'b KernelBuilder,
    cols: Tile<'b>,
    col_ok: Tile<'b>,
    groups: Tile<'b>,
    group: i32,
    bk: i32,
}

/// Groups of 32 columns per step of the mins' main loop ([`RowGroup::min_offsets`]).
const OFFSET_GROUPS: i32 = 16;

impl<'b> RowGroup<'b> {
    /// At group 32 with several groups per step, the asym offset term of each row,
    /// `Σ_g min[row, g] · Σx[g]` over the groups `g_lo..g_hi` (`[R]`), after the weights' loop:
    /// `[R, 16]` tiles of mins (16 consecutive groups of a row, one contiguous run, converted
    /// 16 at a time) against 16 block sums of x, then the last groups (fewer than 16, a whole
    /// number of steps of 2) in `[R, 2]` tiles. Both loops mask rows only, which a backend
    /// checks once a row. Inside the weights' loop the term cost a multiply-add per lane and
    /// 32 weights (`min · (x_even + x_odd)`) and a tile of mins per step.
    fn min_offsets(&self, mins: Buf, xs: Buf, xs_row: Tile<'b>, g_lo: Tile<'b>, g_hi: Tile<'b>) -> Tile<'b> {
        let (b, cols, col_ok, groups) = (self.b, self.cols, self.col_ok, self.groups);
        let rows = cols.shape().dims()[0];
        let g_mid = g_lo + (g_hi - g_lo) / OFFSET_GROUPS * OFFSET_GROUPS;
        let chunk = |g0: Tile<'b>, width: i32| {
            let g = g0 + b.arange(0, width);
            let m = b.load_masked(mins, (cols * groups).col() + g.row(), col_ok.col(), 0.0);
            m.cast(DType::F32) * b.load(xs, xs_row + g).row()
        };
        let init = [b.zeros(&[rows, OFFSET_GROUPS as u32], DType::F32)];
        let [wide] = b.for_range(g_lo, g_mid, OFFSET_GROUPS, init, |g0, [acc]| [acc + chunk(g0, OFFSET_GROUPS)]);
        let init = [b.zeros(&[rows, BLOCK_PAIR as u32], DType::F32)];
        let [narrow] = b.for_range(g_mid, g_hi, BLOCK_PAIR, init, |g0, [acc]| [acc + chunk(g0, BLOCK_PAIR)]);
        wide.sum(1) + narrow.sum(1)
    }

    /// A group parameter (scale or min) of the k tile at `k0` for these rows, as f32
    /// broadcastable against `[R, blocks]`: one per row when the tile lies within a group, else
    /// one per block of 32 columns (a group of g columns spans g / 32 blocks).
    fn group_values(&self, buffer: Buf, k0: Tile<'b>) -> Tile<'b> {
        let (b, cols, col_ok, groups, group) = (self.b, self.cols, self.col_ok, self.groups, self.group);
        if self.bk <= group {
            b.load_masked(buffer, cols * groups + k0 / group, col_ok, 0.0).cast(DType::F32).col()
        } else {
            let nb = self.bk / BLOCK;
            // Block i of the tile is in group i / (group / 32) of the tile: consecutive groups
            // (an affine row the backends load as one) when each group is one block.
            let per_block = if group == BLOCK { b.arange(0, nb) } else { b.arange(0, nb) / (group / BLOCK) };
            let g = (cols * groups + k0 / group).col() + per_block.row();
            b.load_masked(buffer, g, col_ok.col(), 0.0).cast(DType::F32)
        }
    }
}
