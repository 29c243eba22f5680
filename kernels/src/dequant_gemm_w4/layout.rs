//! kiln's int4 weight layout (see the [module doc of `dequant_gemm_w4`](super) for the exact
//! byte order), its f64 dequantizer, and host converters into it from GGUF Q4_0 / Q4_1, GPTQ and
//! AWQ packings.
//!
//! Every converter checks its input sizes and returns a [`LayoutError`] naming the format and the
//! offending array; none panics. GGUF conversions are exact. GPTQ and AWQ store `w = s·(q − z)`
//! with an integer zero point `z`; kiln stores `w = q·s + min`, so the converter writes
//! `min = f16(−s·z)`. `s·z` needs up to 16 significant bits and f16 has 11, so `min` carries a
//! rounding error of at most half an f16 ulp of `s·z` (relative 2⁻¹¹). When every zero point of a
//! tensor is 8 (what GPTQ and AWQ store for symmetric quantization) the converter emits kiln's
//! symmetric form instead, which is exact.

use crate::plan::Buffers;
use half::f16;
use kiln_ir::interp::HostBuffer;

/// How the int4 codes become weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Quant {
    /// `w = (q − 8) · scale` (GGUF Q4_0 style); no mins.
    Sym,
    /// `w = q · scale + min` (GGUF Q4_1 style; GPTQ / AWQ zero points become `min = −scale·zero`).
    Asym,
}

impl Quant {
    pub fn name(self) -> &'static str {
        match self {
            Quant::Sym => "sym",
            Quant::Asym => "asym",
        }
    }
}

impl std::fmt::Display for Quant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Group sizes kiln's layout supports.
pub const GROUPS: [usize; 3] = [32, 64, 128];

/// Why a weight tensor could not be converted.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    /// An input array has the wrong number of elements for the stated shape.
    #[error("{format}: `{array}` has {got} elements, expected {expected} for n = {n}, k = {k}")]
    Size { format: &'static str, array: &'static str, got: usize, expected: usize, n: usize, k: usize },
    /// The stated shape itself is not representable (`k % group != 0`, an unsupported group, ...).
    #[error("{format}: {constraint}")]
    Shape { format: &'static str, constraint: String },
}

/// How GPTQ's `qzeros` relate to the zero points.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GptqZeros {
    /// Classic AutoGPTQ checkpoints (`checkpoint_format = "gptq"`, what most published GPTQ models
    /// use): `pack()` stores `zero − 1` and the kernels add the one back, so the effective zero is
    /// `stored + 1` (a symmetric model stores 7, i.e. `0x77777777` words).
    StoredMinusOne,
    /// `gptq_v2` checkpoints (GPTQModel, AutoRound): `qzeros` hold the zero points themselves.
    Exact,
}

/// An int4 weight matrix `W [n, k]` in kiln's layout.
#[derive(Clone, Debug, PartialEq)]
pub struct W4Weights {
    pub n: usize,
    pub k: usize,
    pub group: usize,
    /// `[n, k / 2]` bytes: byte `j` of row `r` holds column `2j` in its low nibble and `2j + 1` in
    /// its high nibble.
    pub packed: Vec<u8>,
    /// `[n, k / group]`, row-major.
    pub scales: Vec<f16>,
    /// `[n, k / group]` for [`Quant::Asym`]; `None` for [`Quant::Sym`].
    pub mins: Option<Vec<f16>>,
}

impl W4Weights {
    pub fn quant(&self) -> Quant {
        match self.mins {
            Some(_) => Quant::Asym,
            None => Quant::Sym,
        }
    }

    /// The code of `W[row, col]`.
    pub fn code(&self, row: usize, col: usize) -> u8 {
        nibble(&self.packed, self.k, row, col)
    }

    /// The buffers `w`, `scales` and (asymmetric only) `mins` of a `dequant_gemm_w4` plan.
    pub fn buffers(&self) -> Buffers {
        let mut buffers = Buffers::from([
            ("w".to_string(), HostBuffer::U8(self.packed.clone())),
            ("scales".to_string(), HostBuffer::F16(self.scales.clone())),
        ]);
        if let Some(mins) = &self.mins {
            buffers.insert("mins".to_string(), HostBuffer::F16(mins.clone()));
        }
        buffers
    }

    /// `W` in f64, `[n, k]` row-major.
    pub fn dequantize(&self) -> Vec<f64> {
        let scales: Vec<f64> = self.scales.iter().map(|s| s.to_f64()).collect();
        let mins: Option<Vec<f64>> = self.mins.as_ref().map(|m| m.iter().map(|v| v.to_f64()).collect());
        dequantize(self.n, self.k, self.group, &self.packed, &scales, mins.as_deref())
    }
}

fn nibble(packed: &[u8], k: usize, row: usize, col: usize) -> u8 {
    (packed[row * (k / 2) + col / 2] >> (4 * (col % 2))) & 0xF
}

/// Dequantizes kiln's layout to f64 `W [n, k]`, row-major: `(q − 8)·s` without mins, `q·s + min`
/// with. The arrays must have the sizes the layout gives (`packed`: `n·k/2`, the others
/// `n·k/group`); this is the host reference, so it indexes them directly.
pub fn dequantize(n: usize, k: usize, group: usize, packed: &[u8], scales: &[f64], mins: Option<&[f64]>) -> Vec<f64> {
    let groups = k / group;
    let mut w = Vec::with_capacity(n * k);
    for row in 0..n {
        for col in 0..k {
            let q = f64::from(nibble(packed, k, row, col));
            let g = row * groups + col / group;
            w.push(match mins {
                None => (q - 8.0) * scales[g],
                Some(mins) => q * scales[g] + mins[g],
            });
        }
    }
    w
}

/// Packs codes `code(row, col)` (each `< 16`) into kiln's byte layout.
fn pack(n: usize, k: usize, code: impl Fn(usize, usize) -> u8) -> Vec<u8> {
    let mut packed = vec![0u8; n * k / 2];
    for row in 0..n {
        for col in 0..k {
            packed[row * (k / 2) + col / 2] |= (code(row, col) & 0xF) << (4 * (col % 2));
        }
    }
    packed
}

fn check_len(
    format: &'static str,
    array: &'static str,
    got: usize,
    expected: usize,
    n: usize,
    k: usize,
) -> Result<(), LayoutError> {
    if got == expected {
        Ok(())
    } else {
        Err(LayoutError::Size { format, array, got, expected, n, k })
    }
}

fn check_shape(format: &'static str, n: usize, k: usize, group: usize) -> Result<(), LayoutError> {
    let fail = |constraint: String| Err(LayoutError::Shape { format, constraint });
    if n == 0 || k == 0 {
        return fail(format!("n = {n} and k = {k} must be at least 1"));
    }
    if !GROUPS.contains(&group) {
        return fail(format!("group = {group} is not one of {GROUPS:?}"));
    }
    if !k.is_multiple_of(group) {
        return fail(format!("k = {k} is not a multiple of group = {group}"));
    }
    Ok(())
}

/// Bytes of one GGUF Q4_0 block: f16 `d`, then 16 bytes of codes.
pub const Q4_0_BLOCK_BYTES: usize = 18;
/// Bytes of one GGUF Q4_1 block: f16 `d`, f16 `m`, then 16 bytes of codes.
pub const Q4_1_BLOCK_BYTES: usize = 20;

/// Code `j` (0..32) of a GGUF 4-bit block's 16 code bytes: the low nibbles hold elements 0..16,
/// the high nibbles 16..32 (ggml's `dequantize_row_q4_0`: `y[j] = qs[j] & 0xF`,
/// `y[j + 16] = qs[j] >> 4`).
fn gguf_code(qs: &[u8], j: usize) -> u8 {
    if j < 16 {
        qs[j] & 0xF
    } else {
        qs[j - 16] >> 4
    }
}

fn f16_at(bytes: &[u8], at: usize) -> f16 {
    f16::from_le_bytes([bytes[at], bytes[at + 1]])
}

/// Converts a GGUF Q4_0 tensor of `n` rows of `k` elements (ggml `ne = [k, n]`: `n · k / 32`
/// blocks of 18 bytes, row after row) into kiln's symmetric layout with group 32. Exact.
pub fn from_gguf_q4_0(data: &[u8], n: usize, k: usize) -> Result<W4Weights, LayoutError> {
    from_gguf("GGUF Q4_0", data, n, k, Q4_0_BLOCK_BYTES)
}

/// Converts a GGUF Q4_1 tensor (`n · k / 32` blocks of 20 bytes, `w = q·d + m`) into kiln's
/// asymmetric layout with group 32. Exact.
pub fn from_gguf_q4_1(data: &[u8], n: usize, k: usize) -> Result<W4Weights, LayoutError> {
    from_gguf("GGUF Q4_1", data, n, k, Q4_1_BLOCK_BYTES)
}

fn from_gguf(
    format: &'static str,
    data: &[u8],
    n: usize,
    k: usize,
    block_bytes: usize,
) -> Result<W4Weights, LayoutError> {
    check_shape(format, n, k, 32)?;
    let blocks = n * k / 32;
    check_len(format, "data (bytes)", data.len(), blocks * block_bytes, n, k)?;
    let asym = block_bytes == Q4_1_BLOCK_BYTES;
    // The codes follow `d` (and `m` for Q4_1).
    let qs_at = if asym { 4 } else { 2 };
    let block = |row: usize, col: usize| &data[(row * (k / 32) + col / 32) * block_bytes..][..block_bytes];
    let packed = pack(n, k, |row, col| gguf_code(&block(row, col)[qs_at..], col % 32));
    let scales = (0..blocks).map(|b| f16_at(data, b * block_bytes)).collect();
    let mins = asym.then(|| (0..blocks).map(|b| f16_at(data, b * block_bytes + 2)).collect());
    Ok(W4Weights { n, k, group: 32, packed, scales, mins })
}

/// Nibble `i` (bits `4i..4i+4`) of a packed int32 word.
fn word_nibble(word: i32, i: usize) -> u8 {
    ((word as u32 >> (4 * i)) & 0xF) as u8
}

/// AWQ's packing order along n: nibble `i` of a word holds column `8c + AWQ_ORDER[i]`
/// (AutoAWQ `pack`: `order_map = [0, 2, 4, 6, 1, 3, 5, 7]`).
pub const AWQ_ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
/// The inverse: column `8c + j` lies in nibble `AWQ_REVERSE_ORDER[j]`.
pub const AWQ_REVERSE_ORDER: [usize; 8] = [0, 4, 1, 5, 2, 6, 3, 7];

/// Converts a GPTQ int4 linear layer with `k` inputs and `n` outputs:
/// - `qweight [k/8, n]` int32: nibble `i` of `qweight[r, col]` is the code of input row `8r + i`;
/// - `qzeros [k/group, n/8]` int32: nibble `j` of `qzeros[g, c]` is the zero of column `8c + j`
///   (read as `zeros` says);
/// - `scales [k/group, n]` f16; `w[col, row] = scale · (q − zero)`.
///
/// Assumes the trivial `g_idx` (input row `r` in group `r / group`): act-order (`desc_act`)
/// checkpoints must have their input rows permuted to that order first.
pub fn from_gptq(
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[f16],
    n: usize,
    k: usize,
    group: usize,
    zeros: GptqZeros,
) -> Result<W4Weights, LayoutError> {
    const FORMAT: &str = "GPTQ";
    check_shape(FORMAT, n, k, group)?;
    check_packable(FORMAT, n)?;
    let groups = k / group;
    check_len(FORMAT, "qweight", qweight.len(), k / 8 * n, n, k)?;
    check_len(FORMAT, "qzeros", qzeros.len(), groups * n / 8, n, k)?;
    check_len(FORMAT, "scales", scales.len(), groups * n, n, k)?;
    let add = match zeros {
        GptqZeros::StoredMinusOne => 1,
        GptqZeros::Exact => 0,
    };
    Ok(from_zero_points(
        n,
        k,
        group,
        |col, row| word_nibble(qweight[(row / 8) * n + col], row % 8),
        |col, g| word_nibble(qzeros[g * (n / 8) + col / 8], col % 8) + add,
        |col, g| scales[g * n + col],
    ))
}

/// Converts an AWQ (AutoAWQ GEMM) int4 linear layer with `k` inputs and `n` outputs:
/// - `qweight [k, n/8]` int32: nibble `i` of `qweight[row, c]` is the code of column
///   `8c + AWQ_ORDER[i]`;
/// - `qzeros [k/group, n/8]` int32, packed the same way;
/// - `scales [k/group, n]` f16; `w[col, row] = scale · (q − zero)`.
pub fn from_awq(
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[f16],
    n: usize,
    k: usize,
    group: usize,
) -> Result<W4Weights, LayoutError> {
    const FORMAT: &str = "AWQ";
    check_shape(FORMAT, n, k, group)?;
    check_packable(FORMAT, n)?;
    let groups = k / group;
    check_len(FORMAT, "qweight", qweight.len(), k * n / 8, n, k)?;
    check_len(FORMAT, "qzeros", qzeros.len(), groups * n / 8, n, k)?;
    check_len(FORMAT, "scales", scales.len(), groups * n, n, k)?;
    let awq =
        |words: &[i32], r: usize, col: usize| word_nibble(words[r * (n / 8) + col / 8], AWQ_REVERSE_ORDER[col % 8]);
    Ok(from_zero_points(
        n,
        k,
        group,
        |col, row| awq(qweight, row, col),
        |col, g| awq(qzeros, g, col),
        |col, g| scales[g * n + col],
    ))
}

/// Zero points are packed eight columns to a word, so n must be a multiple of 8.
fn check_packable(format: &'static str, n: usize) -> Result<(), LayoutError> {
    if n.is_multiple_of(8) {
        Ok(())
    } else {
        Err(LayoutError::Shape {
            format,
            constraint: format!("n = {n} is not a multiple of 8 (eight columns per int32)"),
        })
    }
}

/// Builds kiln's layout from `w[col, row] = scale(col, g) · (code(col, row) − zero(col, g))`,
/// indexed by output column `col < n`, input row `row < k` and group `g`. Symmetric when every
/// zero is 8 (exact); otherwise asymmetric with `min = f16(−scale·zero)`.
fn from_zero_points(
    n: usize,
    k: usize,
    group: usize,
    code: impl Fn(usize, usize) -> u8,
    zero: impl Fn(usize, usize) -> u8,
    scale: impl Fn(usize, usize) -> f16,
) -> W4Weights {
    let groups = k / group;
    let packed = pack(n, k, code);
    let scales: Vec<f16> =
        (0..n).flat_map(|col| (0..groups).map(move |g| (col, g))).map(|(col, g)| scale(col, g)).collect();
    let all_eight = (0..n).all(|col| (0..groups).all(|g| zero(col, g) == 8));
    let mins = (!all_eight).then(|| {
        (0..n)
            .flat_map(|col| (0..groups).map(move |g| (col, g)))
            .map(|(col, g)| f16::from_f64(-scale(col, g).to_f64() * f64::from(zero(col, g))))
            .collect()
    });
    W4Weights { n, k, group, packed, scales, mins }
}
