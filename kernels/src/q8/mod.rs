//! Q8_0 kernels, `q8_gemv` and `embedding`, and kiln's Q8_0 weight layout with its converter
//! from GGUF.
//!
//! Q8_0 quantizes each run of [`Q8_BLOCK`] = 32 consecutive values along a row to int8 with one
//! f16 scale: `w[r, c] = qs[r, c] · d[r, c / 32]`. GGUF stores a `[rows, cols]` Q8_0 tensor as
//! row-major blocks of 34 bytes (the scale `d` as little-endian f16, then 32 int8 values).
//!
//! kiln splits the blocks into two planes, so a tile of weights is one strided load of int8 and
//! a tile of scales another (no 34-byte stride, no f16 read at unaligned byte offsets):
//! - `qs`: i8 `[rows, cols]` row-major, the quantized values;
//! - `scales`: f16 `[rows, cols / 32]` row-major, the scale of each block.
//!
//! `q8_gemv` multiplies by such a matrix (`[n, k]`), `embedding` gathers its rows (`[vocab,
//! dim]`); SmolLM2 ties them: its token embedding is also its output head.

pub mod embedding;
pub mod gemv;
pub mod gemv_i8;

use half::f16;
use kiln_ir::interp::HostBuffer;

/// Values per Q8_0 block (and per scale).
pub const Q8_BLOCK: usize = 32;
/// Bytes of one GGUF Q8_0 block: an f16 scale and 32 int8 values.
pub const GGUF_Q8_0_BLOCK_BYTES: usize = 2 + Q8_BLOCK;

/// Why GGUF Q8_0 bytes could not be converted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Q8FormatError {
    #[error("Q8_0 rows of {cols} values are not whole blocks of 32")]
    RaggedRow { cols: usize },
    #[error("a [{rows}, {cols}] Q8_0 tensor does not fit in memory")]
    TooLarge { rows: usize, cols: usize },
    #[error("a [{rows}, {cols}] Q8_0 tensor is {expected} bytes of GGUF blocks, got {got}")]
    Size { rows: usize, cols: usize, expected: usize, got: usize },
}

/// A Q8_0 matrix in kiln's layout (see the module doc).
#[derive(Clone, Debug, PartialEq)]
pub struct Q8Matrix {
    pub rows: usize,
    pub cols: usize,
    /// `[rows, cols]` row-major.
    pub qs: Vec<i8>,
    /// `[rows, cols / 32]` row-major.
    pub scales: Vec<f16>,
}

impl Q8Matrix {
    /// Converts the GGUF data of a Q8_0 tensor of `rows` rows of `cols` values (GGUF's `ne[1]`
    /// and `ne[0]`). The size must match exactly.
    pub fn from_gguf(bytes: &[u8], rows: usize, cols: usize) -> Result<Q8Matrix, Q8FormatError> {
        if !cols.is_multiple_of(Q8_BLOCK) {
            return Err(Q8FormatError::RaggedRow { cols });
        }
        let expected = rows
            .checked_mul(cols / Q8_BLOCK)
            .and_then(|blocks| blocks.checked_mul(GGUF_Q8_0_BLOCK_BYTES))
            .ok_or(Q8FormatError::TooLarge { rows, cols })?;
        if bytes.len() != expected {
            return Err(Q8FormatError::Size { rows, cols, expected, got: bytes.len() });
        }
        let n_blocks = expected / GGUF_Q8_0_BLOCK_BYTES;
        let mut qs = Vec::with_capacity(n_blocks * Q8_BLOCK);
        let mut scales = Vec::with_capacity(n_blocks);
        // Blocks are row-major over (row, block of the row), exactly the order of both planes.
        for block in bytes.chunks_exact(GGUF_Q8_0_BLOCK_BYTES) {
            scales.push(f16::from_le_bytes([block[0], block[1]]));
            qs.extend(block[2..].iter().map(|&b| b as i8));
        }
        Ok(Q8Matrix { rows, cols, qs, scales })
    }

    /// The `qs` plane offset by 128 to u8 (`q + 128`, the top bit of each byte flipped), the
    /// weight layout of `q8_gemv`'s `xq=i8` path.
    pub fn offset_qs(&self) -> Vec<u8> {
        offset_qs(&self.qs)
    }

    /// The `qs` (i8) and `scales` (f16) planes as host buffers for a plan.
    pub fn host_buffers(&self) -> (HostBuffer, HostBuffer) {
        (HostBuffer::I8(self.qs.clone()), HostBuffer::F16(self.scales.clone()))
    }
}

/// `q + 128` as u8 for every value of a Q8_0 `qs` plane (see [`Q8Matrix::offset_qs`]).
pub fn offset_qs(qs: &[i8]) -> Vec<u8> {
    qs.iter().map(|&q| (q as u8) ^ 0x80).collect()
}

/// `qs[r, c] · scales[r, c / 32]` in f64, from the two planes as f64 (a reference helper).
pub(crate) fn dequant(qs: &[f64], scales: &[f64], cols: usize, r: usize, c: usize) -> f64 {
    qs[r * cols + c] * scales[r * (cols / Q8_BLOCK) + c / Q8_BLOCK]
}
