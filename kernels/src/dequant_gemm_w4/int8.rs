//! The int8-activation GEMVs of `dequant_gemm_w4` (shape key `xq=i8`, or `xq=i8x2` for two
//! digits): activations quantized to int8 per block of 32 columns, int4 × int8 products summed in
//! integers, one conversion to f32 per 8 products (the GGUF Q4 × Q8 scheme).
//!
//! # Launches
//!
//! 1. **Quantize x** (grid `[1, m, 1]`, a program per row, 8 blocks of 32 columns per step): per
//!    block, `s_x = max |x| / 127`, `x_q = round(x / s_x)` (half away from zero, `|x_q| ≤ 127`;
//!    an all-zero block gets `s_x = 0`, `x_q = 0`), stored **de-interleaved**: the 16 even
//!    columns of the block, then the 16 odd ones, so the low nibbles of a weight byte row pair
//!    with the first half and the high nibbles with the second half without shuffles. Also
//!    `xsums = s_x · Σ x_q` per block (f32). With `i8x2` a second digit
//!    `x_r = round((x / s − x_q) · 254)` (`|x_r| ≤ 127`, buffer `xr`, same layout) makes the
//!    block's value `x_v = 254 · x_q + x_r` with scale `s_x = s / 254` (as `q8_gemv`'s `i8x2`),
//!    and `xsums = s_x · Σ x_v`.
//! 2. **GEMV** (grid `[⌈n / block_n⌉, m, split_k]`), in one of two loop orders:
//!    - `row_loop = 0`: per k step, the weight tile `[block_n, block_k / 32, 4, 4]` bytes as
//!      they lie; `Σ_t lo·x_even + hi·x_odd` over the trailing axis of 4 bytes (`reduce_sum` of
//!      `cast(u8 → i32) · cast(i8 → i32)`, the shape of one VNNI `vpdpbusd` lane, which the CPU
//!      renderer emits as such; other backends run it as written) gives i32 lanes of 8
//!      products each, converted once and scaled by `s_w · s_x` into a per-lane f32
//!      accumulator.
//!    - `row_loop = R` (one token per grid row, the CPU's default for one token when 64
//!      divides k): the program walks its rows R at a time with the whole k loop inside, as the
//!      f32 row loop does (`rowloop.rs`), so its accumulator stays in registers. The lanes of
//!      `g = 128 / block_k` rows make one vector of 16 (`[R / g, 16]` i32 per step: a row of
//!      128 columns, or two rows of 64): the weight bytes of those rows as one 64-byte
//!      `vpdpbusd` operand, the step's activations loaded `g` times over as the other, the
//!      step's `s_w` and `min` (read once per row and group) and its per-block `s_x` spread over
//!      their lanes. Hot, one Zen 5 thread, group 32: 46 µs at k = 576, n = 3072 (f32 row loop
//!      ~65, lanes ~50 µs), 19 µs at k = 1536, n = 576; `i8x2` 53 and 25 µs. From DRAM, 2
//!      threads, k = 4096, n = 14336: 0.90 ms at group 128 (f32 row loop 0.85), 0.95-1.25 ms at
//!      group 32 (f32 1.03).
//!
//!    With `i8x2`, each digit is its own byte dot (over nibbles of its own, so both stay in
//!    registers) and the lanes are `254 · lanes_q + lanes_r`, exact in f32 (below 2²⁴). The
//!    asym `min` term is `min · s_x · Σ x_v` per block, the sym offset
//!    `−8 · s_w · s_x · Σ x_v`: using the quantized sums (not the exact `Σ x`) makes the error
//!    of each term that of the dequantized weight `w = q·s + min`, which is centred, rather
//!    than that of `q·s` alone.
//! 3. With `split_k > 1`, the f32 partials are summed by the shared reduce launch.
//!
//! # Numerics and tolerance
//!
//! The quantization error of an activation is at most `s_x / 2 = max|x| / 254` and, for
//! activations spread over their block's range, uniform with standard deviation
//! `s_x / √12`. Output `j` then errs by `Σ_i w_ji · e_i`, against `y_j = Σ_i w_ji · x_i`: the
//! relative error norm is about `(max|x| / (127 · √12)) / rms(x)`. For the library's inputs
//! (uniform on [−1, 1]: `max|x| ≈ 1`, `rms = 1/√3`) that is `0.0039`; [`TOLERANCE`] allows 2.5×
//! that, and a scale off by 2% (an error of 0.02) fails it (the kernel tests show both). The second
//! digit of `i8x2` divides the step by 254: `1.5e-5`, and [`TOLERANCE_I8X2`] allows 2.5× that
//! plus the f32 rounding of the sums. On SmolLM2 a decode step's logits err by 1.5e-2 to 4.1e-2
//! with `i8` and 5.8e-5 with `i8x2` (`runtime/tests/smollm2.rs`).
//!
//! # Who picks it
//!
//! `xq` is a shape key, not a tuning knob: it changes the numerics, and the autotuner only
//! chooses among configs of a given problem, so it can never switch activations to int8 on its
//! own; a caller (the bench, a runtime flag) asks for the `xq=i8` problem explicitly.

use super::layout::Quant;
use super::{out_dtype, to_dtype, DequantGemmW4Config, DequantGemmW4Problem, NAME};
use crate::plan::{buf, i32_arg, BufferSpec, Launch, Role};
use crate::KernelError;
use kiln_ir::{Buf, DType, Kernel, KernelBuilder, Tile};
use std::fmt;

/// How `x` enters the products.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ActQuant {
    /// `x` as given, f32 products (exact up to f32 rounding).
    F32,
    /// `x` quantized to int8 per block of [`XQ_BLOCK`] columns, integer products.
    I8,
    /// `x` quantized to two int8 digits (`254 · x_q + x_r`, about 16 bits) per element,
    /// integer products for each digit.
    I8x2,
}

impl ActQuant {
    /// Whether the activations enter as integers (`i8` or `i8x2`).
    pub fn is_integer(self) -> bool {
        self != ActQuant::F32
    }
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

/// i32 lanes per vector of the row-loop GEMV (`row_loop > 0`): one AVX-512 register.
const ROW_LANES: u32 = 16;

/// Columns of `x` per int8 scale.
pub const XQ_BLOCK: u32 = 32;
/// Blocks of 32 columns per step of the quantize launch, whose program walks a whole row: a
/// decoding step's row (576 or 1536 columns for SmolLM2) is one program, which the CPU backend
/// runs on the launching worker, where a program per 8 blocks split a 576-column row into three
/// programs handed across threads for ~1 µs of work, and a step of 8 blocks keeps whole steps
/// unmasked, where one 2048-column tile masked most of a short row (and took twice as long at
/// k = 1536). Quantize and GEMV together, hot, 2 threads: 10.6 against 12.2 µs at k = 576,
/// n = 576; 23.3 against 21.4 µs at k = 1536, n = 576 (within the host's noise).
const QUANTIZE_BLOCKS: u32 = 8;
/// The relative error norm allowed with `xq=i8` (see the module doc for the derivation).
pub const TOLERANCE: f64 = 1e-2;
/// The relative error norm allowed with `xq=i8x2`: the second digit divides the quantization
/// step by 254 (`1.5e-5` for the library's inputs); 2.5× that plus the f32 rounding of the sums.
pub const TOLERANCE_I8X2: f64 = 5e-5;

/// Why a config does not fit the int8 path, if it does not.
pub(super) fn check_config(c: &DequantGemmW4Config) -> Result<(), String> {
    if c.block_m != 1 {
        return Err(format!("xq=i8 is a GEMV path and needs block_m = 1, not {}", c.block_m));
    }
    if !c.block_k.is_multiple_of(XQ_BLOCK) {
        return Err(format!("xq=i8 needs block_k to be a multiple of {XQ_BLOCK}, not {}", c.block_k));
    }
    if c.row_loop > 0 {
        // A vector of i32 lanes holds `128 / block_k` whole rows.
        let lanes_per_row = c.block_k / XQ_BLOCK * 4;
        if lanes_per_row > ROW_LANES || !c.row_loop.is_multiple_of(ROW_LANES / lanes_per_row) {
            return Err(format!(
                "the int8 row loop (row_loop = {}) needs block_k in 32, 64, 128 and row_loop a multiple of 128 / block_k (block_k = {})",
                c.row_loop, c.block_k
            ));
        }
    }
    Ok(())
}

/// The buffers and launches of the int8 path (`check_config` already passed).
pub(super) fn plan(
    p: &DequantGemmW4Problem,
    c: &DequantGemmW4Config,
) -> Result<(Vec<BufferSpec>, Vec<Launch>), KernelError> {
    let (m, n, k) = (p.m as usize, p.n as usize, p.k as usize);
    let blocks = k / XQ_BLOCK as usize;
    let groups = (p.k / p.group) as usize;
    let k_tiles = p.k / c.block_k;
    let k_per_split = k_tiles.div_ceil(c.split_k) * c.block_k;
    let split = c.split_k > 1;
    let spec = |name: &str, dtype, len, role| BufferSpec { name: name.into(), dtype, len, role };
    let mut buffers = vec![
        spec("x", p.act, m * k, Role::Input),
        spec("w", DType::U8, n * k / 2, Role::Input),
        spec("scales", DType::F16, n * groups, Role::Input),
    ];
    if p.quant == Quant::Asym {
        buffers.push(spec("mins", DType::F16, n * groups, Role::Input));
    }
    buffers.push(spec("y", p.act, m * n, Role::Output));
    let two = p.xq == ActQuant::I8x2;
    buffers.push(spec("xq", DType::I8, m * k, Role::Scratch));
    if two {
        buffers.push(spec("xr", DType::I8, m * k, Role::Scratch));
    }
    buffers.push(spec("xs", DType::F32, m * blocks, Role::Scratch));
    buffers.push(spec("xsums", DType::F32, m * blocks, Role::Scratch));

    let digits: Vec<_> = if two { vec![buf("xq"), buf("xr")] } else { vec![buf("xq")] };
    let mut args = vec![buf("x")];
    args.extend(digits.iter().cloned());
    args.extend([buf("xs"), buf("xsums"), i32_arg(k as i64), i32_arg(blocks as i64)]);
    let quantize = Launch { kernel: build_quantize(p.act, two)?, grid: [1, p.m, 1], args };
    let mut args = digits;
    args.extend([buf("xs"), buf("xsums"), buf("w"), buf("scales")]);
    if p.quant == Quant::Asym {
        args.push(buf("mins"));
    }
    args.push(buf(if split { "partials" } else { "y" }));
    args.extend([i32_arg(n as i64), i32_arg(k as i64), i32_arg(k_per_split as i64)]);
    let gemv = Launch { kernel: build_gemv(p, c)?, grid: [p.n.div_ceil(c.block_n), p.m, c.split_k], args };
    Ok((buffers, vec![quantize, gemv]))
}

fn build_error(source: kiln_ir::BuildError) -> KernelError {
    KernelError::Build { kernel: NAME, source }
}

/// Launch 1: `x` → de-interleaved int8 blocks (one digit, or two with `two`), their scales and
/// their scaled sums.
fn build_quantize(act: DType, two: bool) -> Result<Kernel, KernelError> {
    use DType::{F32, I32, I8};
    let b = KernelBuilder::new(if two { "dequant_gemm_w4_quantize_x2" } else { "dequant_gemm_w4_quantize_x" });
    let (x, xq) = (b.buffer("x", act), b.buffer("xq", I8));
    let xr = two.then(|| b.buffer("xr", I8));
    let (xs, xsums) = (b.buffer("xs", F32), b.buffer("xsums", F32));
    let (k, blocks) = (b.scalar("k", I32), b.scalar("blocks", I32));
    let qb = QUANTIZE_BLOCKS as i32;
    let row = b.program_id(1);
    b.for_range(0, blocks, qb, [], |b0, []| {
        let blk = (b0 + b.arange(0, qb)).named("blk");
        let ok = blk.lt(blocks);
        let ok3 = ok.expand_dims(1).expand_dims(2);
        // `[blocks, parity, 16]`: element (i, h, p) is column 32·i + 2p + h of the row, so the
        // tile is the de-interleaved block as loaded.
        let base = (row * k + blk * XQ_BLOCK as i32).expand_dims(1).expand_dims(2);
        let parity = b.arange(0, 2).expand_dims(0).expand_dims(2);
        let pair = b.arange(0, 16).expand_dims(0).expand_dims(1);
        let xv = to_dtype(b.load_masked(x, base + pair * 2 + parity, ok3, 0.0), F32);
        let amax = xv.abs().max(2).max(1).named("amax");
        let scale = (amax / 127.0).named("scale");
        let inv = b.select(amax.gt(0.0), (amax.maximum(1e-30).recip() * 127.0).named("inv_nonzero"), 0.0);
        let t = xv * inv.expand_dims(1).expand_dims(2);
        let half = b.select(t.ge(0.0), b.full(&[QUANTIZE_BLOCKS, 2, 16], 0.5, F32), -0.5);
        // |t| ≤ 127 (up to one rounding), so the truncated `t ± 0.5` is within ±127.
        let q = (t + half).cast(I8).named("q");
        b.store_masked(xq, base + parity * 16 + pair, q, ok3);
        // The block's Σ x_v in f32: its terms and partial sums are integers below 2²⁴ (32 values
        // of at most 254 · 127 + 127), so it is exact, and a backend sums it in vectors.
        let (value, s_x) = match xr {
            None => (q.cast(F32), scale),
            Some(xr) => {
                // The residual `t − q` (|·| ≤ ½ up to rounding) in steps of 1/254: |r| ≤ 127.
                let u = (t - q.cast(F32)) * 254.0;
                let half_r = b.select(u.ge(0.0), b.full(&[QUANTIZE_BLOCKS, 2, 16], 0.5, F32), -0.5);
                let r = (u + half_r).cast(I8).named("r");
                b.store_masked(xr, base + parity * 16 + pair, r, ok3);
                (q.cast(F32) * 254.0 + r.cast(F32), (scale / 254.0).named("scale2"))
            }
        };
        let qsum = value.sum(2).sum(1) * s_x;
        let at = row * blocks + blk;
        b.store_masked(xs, at, s_x, ok);
        b.store_masked(xsums, at, qsum, ok);
        []
    });
    b.finish().map_err(build_error)
}

/// Launch 2: the integer GEMV over one k split (see the module doc), in the loop order of
/// `row_loop`.
fn build_gemv(p: &DequantGemmW4Problem, c: &DequantGemmW4Config) -> Result<Kernel, KernelError> {
    use DType::{F32, I32, I8, U8};
    let (bk, group) = (c.block_k as i32, p.group as i32);
    let split = c.split_k > 1;
    let b = KernelBuilder::new(if split { "dequant_gemm_w4_i8_partial" } else { "dequant_gemm_w4_i8" });
    let xq = b.buffer("xq", I8);
    let xr = (p.xq == ActQuant::I8x2).then(|| b.buffer("xr", I8));
    let (xs, xsums) = (b.buffer("xs", F32), b.buffer("xsums", F32));
    let w = b.buffer("w", U8);
    let scales = b.buffer("scales", DType::F16);
    let mins = match p.quant {
        Quant::Sym => None,
        Quant::Asym => Some(b.buffer("mins", DType::F16)),
    };
    let out = if split { b.buffer("partials", F32) } else { b.buffer("y", p.act) };
    let (n, k, k_per_split) = (b.scalar("n", I32), b.scalar("k", I32), b.scalar("k_per_split", I32));
    let k_lo = (b.program_id(2) * k_per_split).named("k_lo");
    let nb = bk / XQ_BLOCK as i32;
    let blk = b.arange(0, nb);
    let g = Gemv {
        b: &b,
        xq,
        xr,
        xs,
        xsums,
        w,
        scales,
        mins,
        out,
        out_dtype: out_dtype(p, c),
        n,
        k,
        row: b.program_id(1),
        k_lo,
        k_hi: (k_lo + k_per_split).minimum(k).named("k_hi"),
        half_k: k / 2,
        groups: k / group,
        blocks: k / XQ_BLOCK as i32,
        out_base: if split { b.program_id(2) * b.num_programs(1) * n } else { b.constant(0, I32) },
        blk,
        // The 16 even (then odd) columns of each block of the tile, `[nb, 16]`.
        x_cols: (blk * XQ_BLOCK as i32).col() + b.arange(0, 16).row(),
        bn: c.block_n as i32,
        bk,
        group,
        nb,
    };
    if c.row_loop == 0 {
        g.lanes();
    } else {
        g.row_loop(c.row_loop as i32);
    }
    b.finish().map_err(build_error)
}

/// What launch 2 reads, and the values both its loop orders share.
struct Gemv<'b> {
    b: &'b KernelBuilder,
    xq: Buf,
    xr: Option<Buf>,
    xs: Buf,
    xsums: Buf,
    w: Buf,
    scales: Buf,
    mins: Option<Buf>,
    out: Buf,
    out_dtype: DType,
    n: Tile<'b>,
    k: Tile<'b>,
    row: Tile<'b>,
    k_lo: Tile<'b>,
    k_hi: Tile<'b>,
    half_k: Tile<'b>,
    groups: Tile<'b>,
    blocks: Tile<'b>,
    out_base: Tile<'b>,
    blk: Tile<'b>,
    x_cols: Tile<'b>,
    bn: i32,
    bk: i32,
    group: i32,
    nb: i32,
}

impl<'b> Gemv<'b> {
    /// The lanes GEMV (`row_loop = 0`): the program's block_n rows side by side.
    fn lanes(&self) {
        use DType::F32;
        let Gemv { b, xq, xr, xs, xsums, w, scales, mins, out, n, k, row, k_lo, k_hi, .. } = *self;
        let Gemv { half_k, groups, blocks, out_base, blk, x_cols, bn, bk, group, nb, .. } = *self;
        // The lanes GEMV: the program's block_n rows side by side.
        let cols = (b.program_id(0) * bn + b.arange(0, bn)).named("cols");
        let col_ok = cols.lt(n);
        let rows = bn as u32;
        let shape4 = [rows, nb as u32, 4, 4];
        let row_bytes = (cols * half_k).col();
        let tile_bytes = b.arange(0, bk / 2).row();
        let shape = kiln_ir::Shape::new(shape4);
        let acc_init = [b.zeros(&[rows, nb as u32, 4], F32).named("acc_qx"), b.zeros(&[rows, nb as u32], F32)];
        let [acc_qx, acc_x] = b.for_range(k_lo, k_hi, bk, acc_init, |k0, [acc_qx, acc_x]| {
            // Whole rows of `block_k / 2` bytes as they lie, then seen as `[rows, nb, 4, 4]`:
            // byte (i, l, t) of a row is byte t of VNNI lane l of block i.
            let bytes = b.load_masked(w, row_bytes + k0 / 2 + tile_bytes, col_ok.col(), 0u8).reshape(&shape4);
            // Block i of the tile holds its 16 even columns at 32·i.. and the odd ones 16 later.
            let x_at = row * k + k0 + x_cols;
            let lanes_of_digit = |digits: Buf| {
                let x_even = b.load(digits, x_at).reshape(&shape4[1..]).expand_dims(0).broadcast_to(&shape);
                let x_odd = b.load(digits, x_at + 16).reshape(&shape4[1..]).expand_dims(0).broadcast_to(&shape);
                nibble_dot(bytes, x_even, x_odd)
            };
            let lanes = match xr {
                None => lanes_of_digit(xq),
                Some(xr) => lanes_of_digit(xq) * 254 + lanes_of_digit(xr),
            }
            .named("lanes");
            // Per block of the tile: `s_w · s_x`; one group's scale serves the tile when
            // block_k ≤ group, else one per block.
            let block_values = |buffer| {
                if bk <= group {
                    b.load_masked(buffer, cols * groups + k0 / group, col_ok, 0.0).cast(F32).col()
                } else {
                    // The tile's groups, `[rows, tile_groups]` (contiguous in each row), then one
                    // value per block of 32 columns: a group of g columns spans g / 32 blocks.
                    let tile_groups = (bk / group) as u32;
                    let g = (cols * groups).col() + (k0 / group + b.arange(0, tile_groups as i32)).row();
                    let per_group = b.load_masked(buffer, g, col_ok.col(), 0.0).cast(F32);
                    if group == XQ_BLOCK as i32 {
                        per_group
                    } else {
                        let repeat = (group / XQ_BLOCK as i32) as u32;
                        let wide = kiln_ir::Shape::new([rows, tile_groups, repeat]);
                        (per_group.expand_dims(2).broadcast_to(&wide) + 0.0).reshape(&[rows, nb as u32])
                    }
                }
            };
            let blocks_at = row * blocks + k0 / XQ_BLOCK as i32 + blk;
            let s_x = b.load(xs, blocks_at);
            let sums = b.load(xsums, blocks_at).row();
            let s_w = block_values(scales);
            // `s_x` per i32 lane, `[nb, 4]` with storage of its own (the sum with zeros is not a
            // view), so that a row of lanes is one contiguous vector for the multiply below.
            let s_x_lanes = (s_x.col() + b.zeros(&[nb as u32, 4], F32)).named("s_x_lanes");
            let weighted = if bk <= group {
                // One weight scale per row: uniform along the row's lanes.
                lanes.cast(F32) * s_x_lanes.expand_dims(0) * s_w.expand_dims(2)
            } else {
                let factor = (s_w.expand_dims(2) * s_x_lanes.expand_dims(0)).named("factor");
                lanes.cast(F32) * factor
            };
            let offset = match mins {
                None => s_w * sums * -8.0,
                Some(mins) => block_values(mins) * sums,
            };
            [acc_qx + weighted, acc_x + offset]
        });
        let y = acc_qx.sum(2).sum(1) + acc_x.sum(1);
        b.store_masked(out, out_base + row * n + cols, to_dtype(y, self.out_dtype), col_ok);
    }

    /// The row loop (`row_loop = rows`): the program's rows `rows` at a time, k inner.
    fn row_loop(&self, rows: i32) {
        use DType::F32;
        let Gemv { b, xq, xr, xs, xsums, w, scales, mins, out, n, k, row, k_lo, k_hi, .. } = *self;
        let Gemv { half_k, groups, blocks, out_base, blk, x_cols, bn, bk, group, nb, .. } = *self;
        // `g = 128 / block_k` rows' i32 lanes (`[g, nb, 4]`) make 16, one vector.
        let nbu = nb as u32;
        let g = ROW_LANES / (nbu * 4);
        let (vecs, ru) = (rows as u32 / g, rows as u32);
        let shape = |d: &[u32]| kiln_ir::Shape::new(d.to_vec());
        let col0 = (b.program_id(0) * bn).named("col0");
        b.for_range(0, bn, rows, [], |r, []| {
            let cols = (col0 + r + b.arange(0, rows)).named("cols");
            let col_ok = cols.lt(n);
            let row_bytes = (cols * half_k).col();
            let tile_bytes = b.arange(0, bk / 2).row();
            let acc0 = b.zeros(&[vecs, ROW_LANES], F32).named("acc");
            let [acc] = b.for_range(k_lo, k_hi, bk, [acc0], |k0, [acc]| {
                let bytes =
                    b.load_masked(w, row_bytes + k0 / 2 + tile_bytes, col_ok.col(), 0u8).reshape(&[vecs, ROW_LANES, 4]);
                let x_at = row * k + k0 + x_cols;
                // The step's activations once per row of a vector: `[1, 16, 4]`, then shared by
                // every vector of rows.
                let x_lanes = |digits: Buf, at: Tile<'b>| {
                    // Loaded `g` times over (offsets repeated along a new lead dim), not copied
                    // after: a backend then assembles the vector from the rows as it loads.
                    let at = at.expand_dims(0).broadcast_to(&shape(&[g, nbu, 16]));
                    b.load(digits, at).reshape(&[1, ROW_LANES, 4]).broadcast_to(&shape(&[vecs, ROW_LANES, 4]))
                };
                let lanes_of_digit = |digits: Buf| nibble_dot(bytes, x_lanes(digits, x_at), x_lanes(digits, x_at + 16));
                // `254 · Σ q·x_q + Σ q·x_r` is below 2²⁴ in magnitude (8 products of at most
                // 15 · 32 385 per lane), so each part and the sum are exact in f32, where they
                // join the multiply-adds below instead of an i32 pass of their own.
                let lanes = match xr {
                    None => lanes_of_digit(xq).cast(F32),
                    Some(xr) => lanes_of_digit(xq).cast(F32) * 254.0 + lanes_of_digit(xr).cast(F32),
                };
                // Per-block values `[rows, nb]` as lanes `[vecs, 16]` (each repeated 4 times).
                // The step's groups per row, `tv` (one when the step lies within a group), each
                // read once from its row (contiguous) and spread over its `16 / (g · tv)` lanes:
                // indexing a value per block instead repeats offsets, which a backend reads
                // lane by lane (the int8 row loop at group 128 took 1.43 ms that way at k = 4096,
                // n = 14336, 2 threads, against 0.85 ms for the f32 row loop).
                let tv = (bk / group).max(1);
                let per_value = ROW_LANES / (g * tv as u32);
                let spread = |v: Tile<'b>| -> Tile<'b> {
                    let wide = shape(&[vecs, g * tv as u32, per_value]);
                    (v.reshape(&[vecs, g * tv as u32, 1]).broadcast_to(&wide) + 0.0).reshape(&[vecs, ROW_LANES])
                };
                // Per-block values of the step `[nb]` as the lanes of one vector `[1, 16]`.
                let step_lanes = |v: Tile<'b>| -> Tile<'b> {
                    (v.reshape(&[1, nbu, 1]).broadcast_to(&shape(&[g, nbu, 4])) + 0.0).reshape(&[1, ROW_LANES])
                };
                let gi = (cols * groups).col() + (k0 / group + b.arange(0, tv)).row();
                let s_w = spread(b.load_masked(scales, gi, col_ok.col(), 0.0).cast(F32));
                let blocks_at = row * blocks + k0 / XQ_BLOCK as i32 + blk;
                let s_x = step_lanes(b.load(xs, blocks_at));
                // Each block's offset term spread over its 4 lanes.
                let sums = step_lanes(b.load(xsums, blocks_at) * 0.25);
                let offset = match mins {
                    None => s_w * sums * -8.0,
                    Some(mins) => spread(b.load_masked(mins, gi, col_ok.col(), 0.0).cast(F32)) * sums,
                };
                [acc + lanes * (s_w * s_x) + offset]
            });
            let y = acc.reshape(&[vecs, g, nbu * 4]).sum(2).reshape(&[ru]);
            b.store_masked(out, out_base + row * n + cols, to_dtype(y, self.out_dtype), col_ok);
            []
        });
    }
}

/// `Σ lo · x_even + hi · x_odd` over the last axis (4 bytes, a VNNI lane): the i32 lanes of the
/// byte dot of the weight `bytes` (low and high nibbles) with one digit of the activations.
/// Each call takes nibbles of its own: a byte dot inlines the operands read by it alone, which a
/// backend then computes in registers where the dot reads them (two digits share `bytes`, not
/// the nibbles).
fn nibble_dot<'b>(bytes: Tile<'b>, x_even: Tile<'b>, x_odd: Tile<'b>) -> Tile<'b> {
    use DType::I32;
    let (lo, hi) = (bytes & 0xFu8, bytes >> 4u8);
    let last = bytes.shape().rank() as u32 - 1;
    (lo.cast(I32) * x_even.cast(I32) + hi.cast(I32) * x_odd.cast(I32)).sum(last)
}
