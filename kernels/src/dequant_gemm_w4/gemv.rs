//! The GEMV path of `dequant_gemm_w4` (`gemv = 1`): the weight tile is read as it lies in
//! memory, `[block_n, block_k / 2]` whole byte rows seen as `[block_n, tile_groups, per_group /
//! 2]`, and never transposed or unpacked into k order: the low nibbles multiply the even columns
//! of x and the high nibbles the odd ones, in f32.
//!
//! - `block_m = 1`: one token per program row of the grid, no masks on m. Each step adds
//!   `scale · (lo·x_even + hi·x_odd)` into a per-lane accumulator of the tile's shape.
//! - `block_m = R > 1` (multi-row, for speculative verification and small batches): a program
//!   handles `R` tokens. Each weight tile is read and dequantized ONCE per step (`lo · scale`,
//!   `hi · scale`, `[block_n, tile_groups, per_group / 2]` in f32) and multiplied with the x of
//!   every row into a per-lane accumulator `[R, block_n, tile_groups, per_group / 2]`; rows past
//!   `m` read row `m − 1` and their outputs are not stored. So the weights
//!   stream from memory once for `R` tokens instead of `R` times, where the `dot` path would
//!   transpose and unpack every tile.
//!
//! Either way the mins, which multiply Σ x of a group, go into a per-column accumulator of their
//! own — Σ (q·s + min)·x = Σ s·q·x + min·Σ x (asym), Σ (q − 8)·s·x = Σ s·q·x − 8·s·Σ x (sym) — and
//! both accumulators are summed once, after the loop, so a step is elementwise work over the
//! bytes as they lie with no horizontal sums. The weights are never rounded to f16; the sums are
//! f32, so the result differs from dequantize-then-multiply only by f32 rounding order.

use super::to_dtype;
use kiln_ir::{Buf, DType, KernelBuilder, Tile};

/// What the GEMV body needs from launch 1's prologue (`build_gemm` in the module root).
pub(super) struct GemvParts<'b> {
    pub b: &'b KernelBuilder,
    pub x: Buf,
    pub w: Buf,
    pub scales: Buf,
    /// `None` for `quant = sym`.
    pub mins: Option<Buf>,
    pub out: Buf,
    /// The dtype `y` (or the split-K partials) is stored in.
    pub out_dtype: DType,
    pub m: Tile<'b>,
    pub n: Tile<'b>,
    pub k: Tile<'b>,
    /// This program's k range (one split of split-K, or all of k).
    pub k_lo: Tile<'b>,
    pub k_hi: Tile<'b>,
    /// Offset of this split's output (0 without split-K).
    pub out_base: Tile<'b>,
    /// This program's output columns (`[block_n]`) and which of them exist.
    pub cols: Tile<'b>,
    pub col_ok: Tile<'b>,
    /// Bytes per row of `w` and groups per row of `scales`.
    pub half_k: Tile<'b>,
    pub groups: Tile<'b>,
    pub group: i32,
    pub block_m: i32,
    pub block_n: i32,
    pub block_k: i32,
}

/// Emits the GEMV body of launch 1 into `parts.b`.
pub(super) fn emit(parts: &GemvParts<'_>) {
    if parts.block_m == 1 {
        emit_one_row(parts);
    } else {
        emit_rows(parts);
    }
}

/// The tile's geometry: groups per k tile and bytes per group, and the byte index `j` of each
/// element of a `[tile_groups, per_group / 2]` view: byte `j` of the tile holds k columns
/// `k0 + 2j` (low nibble) and `k0 + 2j + 1` (high nibble).
struct Geometry<'b> {
    tile_groups: i32,
    half_pg: i32,
    tg: Tile<'b>,
    j: Tile<'b>,
}

fn geometry<'b>(parts: &GemvParts<'b>) -> Geometry<'b> {
    let b = parts.b;
    let per_group = parts.block_k.min(parts.group);
    let tile_groups = parts.block_k / per_group;
    let half_pg = per_group / 2;
    let tg = b.arange(0, tile_groups);
    let j = (tg.col() * half_pg + b.arange(0, half_pg).row()).named("j");
    Geometry { tile_groups, half_pg, tg, j }
}

impl<'b> GemvParts<'b> {
    /// The `[block_n, tile_groups / 2, per_group / 2]` bytes of the k tile at `k0`, as they lie.
    fn bytes(&self, geo: &Geometry<'b>, k0: Tile<'b>) -> Tile<'b> {
        // (`expand_dims`, not `reshape`: the offsets stay affine in the row, so the backends
        // compute each row's start instead of reading it from a tile.)
        let offs = (self.cols * self.half_k).col().expand_dims(2) + (k0 / 2 + geo.j).expand_dims(0);
        self.b.load_masked(self.w, offs, self.col_ok.col().expand_dims(2), 0u8)
    }

    /// A group parameter (scale or min) of the k tile at `k0` as f32 `[block_n, tile_groups]`;
    /// with one group per tile, as one strided column (a single bounds check) rather than rows of
    /// one element.
    fn group_values(&self, geo: &Geometry<'b>, buffer: Buf, k0: Tile<'b>) -> Tile<'b> {
        let (b, cols, col_ok, groups, group) = (self.b, self.cols, self.col_ok, self.groups, self.group);
        if geo.tile_groups == 1 {
            b.load_masked(buffer, cols * groups + k0 / group, col_ok, 0.0).cast(DType::F32).col()
        } else {
            let g = (cols * groups).col() + (k0 / group + geo.tg).row();
            b.load_masked(buffer, g, col_ok.col(), 0.0).cast(DType::F32)
        }
    }

    /// The per-group offset term for a group sum of x `sx` broadcastable against `scale`:
    /// `min · Σ x` (asym) or `−8 · scale · Σ x` (sym).
    fn offset(&self, geo: &Geometry<'b>, k0: Tile<'b>, scale: Tile<'b>, sx: Tile<'b>) -> Tile<'b> {
        match self.mins {
            Some(mins) => self.group_values(geo, mins, k0) * sx,
            None => scale * sx * -8.0,
        }
    }
}

/// One token per program row of the grid (decode).
fn emit_one_row(parts: &GemvParts<'_>) {
    use DType::F32;
    let (b, x, k) = (parts.b, parts.x, parts.k);
    let (bn, row) = (parts.block_n as u32, b.program_id(1));
    let geo = geometry(parts);
    let j = geo.j;
    let shape3 = [bn, geo.tile_groups as u32, geo.half_pg as u32];
    let acc_init = [b.zeros(&shape3, F32).named("acc_qx"), b.zeros(&[bn, geo.tile_groups as u32], F32).named("acc_x")];
    let [acc_qx, acc_x] = b.for_range(parts.k_lo, parts.k_hi, parts.block_k, acc_init, |k0, [acc_qx, acc_x]| {
        let x_even = to_dtype(b.load(x, row * k + k0 + j * 2), F32);
        let x_odd = to_dtype(b.load(x, row * k + k0 + j * 2 + 1), F32);
        let bytes = parts.bytes(&geo, k0);
        let lo = (bytes & 0xFu8).cast(F32);
        let hi = (bytes >> 4u8).cast(F32);
        let scale = parts.group_values(&geo, parts.scales, k0);
        // Σ x per group of the tile, `[1, tile_groups]`.
        let sx = (x_even + x_odd).sum(1).row();
        let offset = parts.offset(&geo, k0, scale, sx);
        let products = (lo * x_even.expand_dims(0) + hi * x_odd.expand_dims(0)) * scale.expand_dims(2);
        [acc_qx + products, acc_x + offset]
    });
    let acc = acc_qx.sum(2).sum(1) + acc_x.sum(1);
    let offs = parts.out_base + row * parts.n + parts.cols;
    b.store_masked(parts.out, offs, to_dtype(acc, parts.out_dtype), parts.col_ok);
}

/// `block_m` tokens per program: each weight tile dequantized once for all of them.
fn emit_rows(parts: &GemvParts<'_>) {
    use DType::F32;
    let (b, x, k) = (parts.b, parts.x, parts.k);
    let (bm, bn) = (parts.block_m, parts.block_n as u32);
    let geo = geometry(parts);
    let j = geo.j;
    let rows = (b.program_id(1) * bm + b.arange(0, bm)).named("rows");
    let row_ok = rows.lt(parts.m);
    // `[R, 1, 1]`, broadcast over a row's `[tile_groups, per_group / 2]` x values. Rows past m
    // read row m − 1 (their results are never stored), so the x loads need no mask and stay
    // whole strided rows for the backends.
    let row_base = (rows.minimum(parts.m - 1) * k).col().expand_dims(2);
    let (tgs, hpg) = (geo.tile_groups as u32, geo.half_pg as u32);
    let acc_init =
        [b.zeros(&[bm as u32, bn, tgs, hpg], F32).named("acc_qx"), b.zeros(&[bm as u32, bn, tgs], F32).named("acc_x")];
    let [acc_qx, acc_x] = b.for_range(parts.k_lo, parts.k_hi, parts.block_k, acc_init, |k0, [acc_qx, acc_x]| {
        // `[R, tile_groups, per_group / 2]`: the even and odd k columns of every row.
        let x_even = to_dtype(b.load(x, row_base + (k0 + j * 2).expand_dims(0)), F32);
        let x_odd = to_dtype(b.load(x, row_base + (k0 + j * 2 + 1).expand_dims(0)), F32);
        let bytes = parts.bytes(&geo, k0);
        let scale = parts.group_values(&geo, parts.scales, k0);
        // The tile dequantized once for all rows, `[block_n, tile_groups, per_group / 2]`.
        let w_lo = (bytes & 0xFu8).cast(F32) * scale.expand_dims(2);
        let w_hi = (bytes >> 4u8).cast(F32) * scale.expand_dims(2);
        let products = w_lo.expand_dims(0) * x_even.expand_dims(1) + w_hi.expand_dims(0) * x_odd.expand_dims(1);
        // Σ x per row and group, `[R, 1, tile_groups]`, against `[1, block_n, tile_groups]`.
        let sx = (x_even + x_odd).sum(2).expand_dims(1);
        let offset = parts.offset(&geo, k0, scale.expand_dims(0), sx);
        [acc_qx + products, acc_x + offset]
    });
    let acc = acc_qx.sum(3).sum(2) + acc_x.sum(2);
    let offs = parts.out_base + rows.col() * parts.n + parts.cols.row();
    let mask = row_ok.col() & parts.col_ok.row();
    b.store_masked(parts.out, offs, to_dtype(acc, parts.out_dtype), mask);
}
