//! The x the one-token row-loop GEMV of `dequant_gemm_w4` reads (its first launch's `xd` and
//! `xs`, see `dequant_gemm_w4/rowloop.rs`), written by the kernel before it instead (`rmsnorm`
//! and `silu_mul` with `deinterleave=1`): per block of [`XD_BLOCK`] columns, the 16 even columns
//! then the 16 odd ones as f32 in `xd` `[tokens, dim]`, and their sum in `xs`
//! `[tokens, dim / 32]`. One place for the layout, its buffers, its stores and its reference.

use crate::plan::{buf, Binding, BufferSpec, Reference, Role};
use kiln_ir::{Buf, DType, KernelBuilder, Tile};

/// Columns per de-interleaved block: those of the row-loop GEMV.
pub(crate) const XD_BLOCK: i32 = 32;

/// The `xd` and `xs` outputs of a producer of `len` values: appended to its buffers and args.
pub(crate) fn push_outputs(len: usize, buffers: &mut Vec<BufferSpec>, args: &mut Vec<Binding>) {
    let f32_spec = |name: &str, len| BufferSpec { name: name.into(), dtype: DType::F32, len, role: Role::Output };
    buffers.extend([f32_spec("xd", len), f32_spec("xs", len / XD_BLOCK as usize)]);
    args.extend([buf("xd"), buf("xs")]);
}

/// The `xd` and `xs` buffers of a producer's kernel.
pub(crate) fn buffers(b: &KernelBuilder) -> (Buf, Buf) {
    (b.buffer("xd", DType::F32), b.buffer("xs", DType::F32))
}

/// A tile of whole blocks in `[blocks, parity, 16]` order: element (i, h, q) is column
/// `first_i + 2q + h`, the tile the GEMV's launch loads.
pub(crate) struct Blocks<'b> {
    /// The blocks' first columns, `[blocks, 1, 1]`.
    first: Tile<'b>,
    parity: Tile<'b>,
    pair: Tile<'b>,
    /// Which blocks lie in the row: dim is a multiple of 32, so a block is in the row entirely
    /// or not at all, and one mask per block (not per element) keeps each load a tile of
    /// evenly strided rows.
    pub ok: Tile<'b>,
}

impl<'b> Blocks<'b> {
    /// The blocks starting at columns `first` (`[blocks]`) of rows `dim` long.
    pub(crate) fn new(b: &'b KernelBuilder, first: Tile<'b>, dim: Tile<'b>) -> Self {
        let first = first.expand_dims(1).expand_dims(2);
        let parity = b.arange(0, 2).expand_dims(0).expand_dims(2);
        let pair = b.arange(0, 16).expand_dims(0).expand_dims(1);
        Blocks { first, parity, pair, ok: first.lt(dim) }
    }

    /// The tile's columns.
    pub(crate) fn cols(&self) -> Tile<'b> {
        self.first + self.pair * 2 + self.parity
    }

    /// The tile's offsets in a row starting at `row`.
    pub(crate) fn at(&self, row: Tile<'b>) -> Tile<'b> {
        (row + self.first) + self.pair * 2 + self.parity
    }

    /// Stores `y` (the producer's output on this tile, rounded to its dtype, as f32) de-interleaved
    /// into `xd` and its block sums into `xs`, for row `token` of a row starting at `row`; `blk`
    /// (`[blocks]`) numbers the blocks in the row.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn store(
        &self,
        b: &'b KernelBuilder,
        (xd, xs): (Buf, Buf),
        token: Tile<'b>,
        row: Tile<'b>,
        blk: Tile<'b>,
        dim: Tile<'b>,
        y: Tile<'b>,
    ) {
        b.store_masked(xd, (row + self.first) + self.parity * 16 + self.pair, y, self.ok);
        let n_blocks = dim / XD_BLOCK;
        b.store_masked(xs, token * n_blocks + blk, y.sum(2).sum(1), blk.lt(n_blocks));
    }
}

/// The reference `xd` and `xs` of a producer's `out`, inserted into `r`.
pub(crate) fn insert_reference(out: &[f64], r: &mut Reference) {
    let block = XD_BLOCK as usize;
    let xd = out
        .chunks(block)
        .flat_map(|c| (0..block).map(move |i| if i < block / 2 { c[2 * i] } else { c[2 * (i - block / 2) + 1] }))
        .collect();
    r.insert("xd".to_string(), xd);
    r.insert("xs".to_string(), out.chunks(block).map(|c| c.iter().sum()).collect());
}
