//! `load`, `store` and `atomic_add`: bounds checks, masks, and contiguous rows.
//!
//! Every active lane (mask true, or no mask) is checked against the buffer length before the op
//! touches memory, and the first failing lane in row-major order is reported, as the
//! interpreter does. Two code shapes:
//!
//! - **rows**: when the analysis proves each row of the offsets is `start, start + 1, ...`
//!   ([`super::analysis::Form::contiguous_rows`]), a row is checked with one comparison and
//!   moved with `memcpy` or a vector conversion loop; only a row that is not wholly in bounds
//!   (a ragged edge) falls back to per-lane checks, with lane offsets wrapped exactly as the
//!   IR's `i32` / `u32` arithmetic wraps. A load may read masked-off lanes of an in-bounds row
//!   and then select `other` (reading is invisible); a store never writes a masked-off lane.
//!   A row of a masked store whose lanes are all active is written whole, and rows of at least
//!   `STREAM_MIN_ROW_BYTES` into a buffer larger than `KILN_STREAM_MIN_BYTES` (prelude) use
//!   non-temporal stores. A masked load row with no active lane takes `other` without reading.
//! - **columns**: a rank-2 float load whose *columns* are contiguous (a transposed tile such as
//!   attention's `kᵀ`) reads each column as a row into a scratch tile and transposes it through
//!   registers, or, when the analysis gives the tile column-major storage (read only by `dot`s),
//!   reads the columns straight into it; if any column is not wholly in bounds, every lane goes
//!   on its own, in row-major order.
//! - **in place**: a row load the analysis marks `direct` checks the whole tile (affine row
//!   starts: the corner rows bound all others) and the mask once, and then only points the
//!   tile at the buffer, with runtime row strides its readers index by; otherwise it copies.
//! - **strided rows**: a load whose rows are evenly spaced lanes (`s, s + d, ...`: the even
//!   elements of x, a column of per-row scales) checks a row by its first and last lane.
//! - **lanes**: otherwise each lane is checked and moved on its own (a gather or scatter).
//!
//! Loads check and read row by row (reading has no effect, so a failure in a later row leaves
//! nothing behind); stores and atomics check every lane first, then write.

use super::analysis::{row_major, Form, Gather, Repr, Sym};
use super::ops::{from_storage, storage_type, to_storage};
use super::tile::{collapsed_nest, sum_expr};
use super::Emitter;
use kiln_ir::{DType, Inst, Param, Value};

/// How far ahead of a row read inside a loop its software prefetch reaches, at most.
const PREFETCH_BYTES: usize = 1024;

/// How far ahead of the whole tile, in bytes of tile, row prefetches aim: about what two cores
/// stream during one DRAM latency, with margin.
const PREFETCH_LEAD_BYTES: usize = 8192;

/// [`PREFETCH_LEAD_BYTES`] for kernels with a byte dot (`vpdpbusd`): a step of such a loop costs
/// a few instructions per 64 bytes, so it runs through its tile several times faster than a
/// loop converting bytes to floats and must ask further ahead to cover the same latency
/// (measured on the int8 GEMV of `dequant_gemm_w4`; a float GEMV asking this far ahead slows
/// down, its far lines evicted before use).
const PREFETCH_LEAD_BYTES_BYTE_DOT: usize = 32768;

/// Contiguous stores of rows at least this long may use non-temporal stores (a few cache lines,
/// so that the unaligned head and tail stay small beside the streamed part).
const STREAM_MIN_ROW_BYTES: usize = 256;

/// Whether a load from a buffer of `dtype` with contiguous columns is read column by column and
/// transposed (`emit_load_transposed`) rather than lane by lane.
pub(crate) fn transposes(dtype: DType) -> bool {
    matches!(dtype, DType::F16 | DType::F32)
}

/// The pieces of a memory op the emitters share.
pub(crate) struct Access {
    pub inst: Inst,
    pub buffer: Param,
    pub offsets: Value,
    pub mask: Option<Value>,
}

/// Whether the op reads into a tile, writes a value, or adds one atomically.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write {
    Store,
    AtomicAdd,
}

impl Emitter<'_> {
    fn buf(&self, p: Param) -> (String, String, DType) {
        let dtype = self.k.buffer_dtype(p).expect("memory ops name buffer parameters");
        (format!("b{}", p.0), format!("n{}", p.0), dtype)
    }

    fn oob(&self, acc: &Access, index: &str) -> String {
        let (_, len, _) = self.buf(acc.buffer);
        format!("return kiln_fail(err, KILN_OUT_OF_BOUNDS, {}, {}, {index}, {len}, program);", acc.inst.0, acc.buffer.0)
    }

    /// C of a symbolic scalar, as `uint64_t`.
    fn sym(&self, s: &Sym) -> String {
        match s {
            Sym::Const(c) => format!("0x{:x}ull", *c as u64),
            Sym::Val(v) => match self.k.ty(*v).dtype {
                DType::U32 => format!("(uint64_t){}", self.scalar(*v)),
                _ => format!("(uint64_t)(int64_t){}", self.scalar(*v)),
            },
            Sym::Add(a, b) => format!("({} + {})", self.sym(a), self.sym(b)),
            Sym::Mul(a, b) => format!("({} * {})", self.sym(a), self.sym(b)),
        }
    }

    /// C of a gathered term of an offset form at element `index` of its tile, as `uint64_t`:
    /// `scale · root[index]`, the root sign-extended (`i32`) or zero-extended (`u32`).
    fn gather_term(&self, g: &Gather, index: &str) -> String {
        let e = self.access(&g.repr, index);
        let e = match g.dtype {
            DType::U32 => format!("(uint64_t){e}"),
            _ => format!("(uint64_t)(int64_t){e}"),
        };
        format!("{} * {e}", self.sym(&g.scale))
    }

    /// The offsets' own wrap: the lane value of an `i32` offsets tile read signed, of `u32`
    /// unsigned, from any representative modulo 2^32.
    fn wrap(&self, offsets: Value, x: &str) -> String {
        match self.k.ty(offsets).dtype {
            DType::U32 => format!("(int64_t)(uint32_t)({x})"),
            _ => format!("(int64_t)(int32_t)(uint32_t)({x})"),
        }
    }

    fn max_offset(&self, offsets: Value) -> &'static str {
        match self.k.ty(offsets).dtype {
            DType::U32 => "4294967295",
            _ => "2147483647",
        }
    }

    /// Opens one loop per leading dim (coordinates `r0, r1, ...`, kept unmerged because the
    /// offset form needs them) and declares the row's first offset `s`. Returns the loops to
    /// close and the per-dim coordinate names.
    fn open_rows(&mut self, form: &Form, acc: &Access) -> (usize, Vec<String>) {
        let dims = self.k.ty(acc.offsets).shape.dims().to_vec();
        let lead = dims.len() - 1;
        let mut coords = Vec::with_capacity(lead);
        // A block of its own, so that each pass over the rows has its own `s`.
        self.open("");
        let mut opened = 1;
        for (d, &n) in dims[..lead].iter().enumerate() {
            if n == 1 {
                coords.push("0".to_string());
            } else {
                let v = format!("r{d}");
                self.open(&format!("for (int {v} = 0; {v} < {n}; {v}++)"));
                coords.push(v);
                opened += 1;
            }
        }
        let mut start = self.sym(&form.uniform);
        for (c, coord) in form.coefs[..lead].iter().zip(&coords) {
            if *c != Sym::Const(0) && coord != "0" {
                start = format!("{start} + {} * (uint64_t){coord}", self.sym(c));
            }
        }
        for g in &form.gathers {
            let index = sum_expr(g.repr.strides[..lead].iter().copied().zip(coords.iter().map(String::as_str)));
            start = format!("{start} + {}", self.gather_term(g, &index));
        }
        let s = self.wrap(acc.offsets, &start);
        self.line(&format!("const int64_t s = {s};"));
        (opened, coords)
    }

    /// Index of lane `j` of the current row in a tile seen through `repr`.
    fn lane(&self, repr: &Repr, coords: &[String], j: &str) -> String {
        let lead = coords.len();
        let mut terms: Vec<(i64, &str)> =
            repr.strides[..lead].iter().copied().zip(coords.iter().map(String::as_str)).collect();
        terms.push((repr.strides[lead], j));
        sum_expr(terms.into_iter())
    }

    /// Prefetches the `bytes` bytes from `&b[s]` (a hint: it never faults, even past the buffer).
    fn prefetch_row(&mut self, b: &str, bytes: usize) {
        self.line(&format!("kiln_prefetch_bytes((uintptr_t)&{b}[s], {bytes});"));
    }

    fn row_in_bounds(&self, acc: &Access, len: u32) -> String {
        let (_, n, _) = self.buf(acc.buffer);
        format!("s >= 0 && s + {len} <= {n} && s + {} <= {}", len - 1, self.max_offset(acc.offsets))
    }

    pub(crate) fn emit_load(&mut self, acc: &Access, other: Option<Value>, out: Value) {
        if self.a.rows_in_place[out.index()] {
            return self.emit_load_row_pointers(acc, out);
        }
        if self.a.columns_in_place[out.index()] {
            return self.emit_load_column_pointers(acc, out);
        }
        let keep = self.a.needed[out.index()];
        let direct = self.a.direct[out.index()];
        if direct {
            self.emit_load_direct(acc, out);
        } else if keep {
            self.declare(out);
        }
        let (b, n, dtype) = self.buf(acc.buffer);
        let out_repr = self.a.repr(out).clone();
        let mask = acc.mask.map(|m| self.a.repr(m).clone());
        // A scalar `other` is splatted: give it zero strides over the offsets' shape.
        let rank = self.k.ty(acc.offsets).shape.rank();
        let other = other.map(|o| {
            let mut r = self.a.repr(o).clone();
            r.strides.resize(rank, 0);
            r
        });
        // A raw tile holds the buffer's 16-bit patterns (`Analysis::compute_raw_copies`); its
        // `other` is zero, whose pattern is 0.
        let raw = self.a.raw[out.index()];
        let zero = if dtype.is_float() && !raw { "0.0f" } else { "0" };
        let read = |e: &str| if raw { e.to_string() } else { from_storage(dtype, e) };
        self.open("");
        // The analysis reads these offsets through their form (its `transposes` agrees).
        let transposed = self.a.transposed_form(self.k, acc.offsets).cloned().filter(|_| transposes(dtype));
        if let Some(form) = transposed {
            let out = keep.then_some(out);
            self.emit_load_transposed(acc, &form, out, mask.as_ref(), other.as_ref(), zero);
        } else if let Some(form) = self.a.contiguous_form(self.k, acc.offsets).cloned() {
            let len = *self.k.ty(acc.offsets).shape.dims().last().unwrap_or(&1);
            let tile_copy = keep && !direct && Self::affine_rows(&form);
            if tile_copy {
                self.open_tile_copy(acc, &form, out);
            }
            let gathered = !Self::affine_rows(&form);
            if keep && gathered && self.loop_depth > 0 {
                // Rows at gathered starts (pages of a paged cache) do not continue anywhere
                // predictable; ask for all of the tile's rows first, so their misses overlap
                // instead of each row waiting for its own.
                let (opened, _) = self.open_rows(&form, acc);
                self.prefetch_row(&b, len as usize * dtype.size_bytes());
                self.close_n(opened);
            }
            let (opened, coords) = self.open_rows(&form, acc);
            let o_at = |e: &Self, j: &str| e.access(&out_repr, &e.lane(&out_repr, &coords, j));
            let m_at = |e: &Self, j: &str| mask.as_ref().map(|m| e.access(m, &e.lane(m, &coords, j)));
            let other_at =
                |e: &Self, j: &str| other.as_ref().map_or(zero.to_string(), |o| e.access(o, &e.lane(o, &coords, j)));
            if keep && !gathered && self.loop_depth > 0 {
                // Rows read inside a loop usually continue where this one ends on the next
                // iterations (a stream along k, or the next tokens of a block); the hardware
                // prefetcher does not run far enough ahead of a compute-heavy loop, so ask for
                // a line a few iterations ahead (a hint: it never faults, even past the buffer).
                self.prefetch_continuation(&b, len as usize * dtype.size_bytes(), acc.offsets);
            }
            // A row with no active lane (positions past a sequence's length, the far side of a
            // ragged edge) takes `other` without touching memory.
            let lane_mask = mask.as_ref().is_some_and(|m| m.strides[coords.len()] != 0);
            if keep && lane_mask {
                // `all`: a row with every lane active (the common case away from the problem's
                // edges) keeps what it read without a select over its lanes.
                let cond = m_at(self, "j").unwrap_or_default();
                self.line("uint8_t any = 0, all = 1;");
                self.open(&format!("for (int j = 0; j < {len}; j++)"));
                self.line(&format!("const uint8_t on = (uint8_t)(({cond}) != 0);"));
                self.line("any |= on;");
                self.line("all &= on;");
                self.close();
                self.open("if (!any)");
                self.open(&format!("for (int j = 0; j < {len}; j++)"));
                let (o, x) = (o_at(self, "j"), other_at(self, "j"));
                self.line(&format!("{o} = {x};"));
                self.close();
                self.close_else();
            }
            if keep {
                self.open(&format!("if ({})", self.row_in_bounds(acc, len)));
                let row = o_at(self, "0");
                let copy = match dtype {
                    _ if raw => Some(format!("memcpy(&{row}, &{b}[s], {len} * sizeof({b}[0]));")),
                    DType::F16 => Some(format!("kiln_f16_load_n(&{row}, &{b}[s], {len});")),
                    DType::BF16 => Some(format!("kiln_bf16_load_n(&{row}, &{b}[s], {len});")),
                    DType::Bool => None,
                    DType::F32 | DType::I32 | DType::U32 | DType::I8 | DType::U8 => {
                        Some(format!("memcpy(&{row}, &{b}[s], {len} * sizeof({b}[0]));"))
                    }
                };
                let copy_line = |e: &mut Self| match &copy {
                    Some(c) => e.line(c),
                    None => {
                        e.open(&format!("for (int j = 0; j < {len}; j++)"));
                        let o = o_at(e, "j");
                        e.line(&format!("{o} = {};", read(&format!("{b}[s + j]"))));
                        e.close();
                    }
                };
                copy_line(self);
                if let Some(m) = &mask {
                    // Lanes the mask turns off take `other`; the row was in bounds, so reading
                    // them first had no effect.
                    let row_uniform = m.strides[coords.len()] == 0;
                    let cond = if row_uniform { m_at(self, "0") } else { m_at(self, "j") }.unwrap_or_default();
                    if row_uniform {
                        self.open(&format!("if (!{cond})"));
                        self.open(&format!("for (int j = 0; j < {len}; j++)"));
                        let (o, x) = (o_at(self, "j"), other_at(self, "j"));
                        self.line(&format!("{o} = {x};"));
                        self.close();
                        self.close();
                    } else {
                        self.open(&format!("if (!all) for (int j = 0; j < {len}; j++)"));
                        let (o, x) = (o_at(self, "j"), other_at(self, "j"));
                        self.line(&format!("{o} = {cond} ? {o} : {x};"));
                        self.close();
                    }
                }
                self.close_else();
            } else {
                self.open(&format!("if (!({}))", self.row_in_bounds(acc, len)));
            }
            // A row that is not wholly in bounds: lane by lane, with exact wrapped offsets.
            self.open(&format!("for (int j = 0; j < {len}; j++)"));
            let active = m_at(self, "j");
            let o_lane = self.wrap(acc.offsets, "s + j");
            let fail = self.oob(acc, "o");
            let assign = keep.then(|| (o_at(self, "j"), other_at(self, "j")));
            self.open(&format!("if ({})", active.unwrap_or_else(|| "1".into())));
            self.line(&format!("const int64_t o = {o_lane};"));
            self.line(&format!("if (o < 0 || o >= {n}) {fail}"));
            if let Some((o, _)) = &assign {
                self.line(&format!("{o} = {};", read(&format!("{b}[o]"))));
            }
            match &assign {
                Some((o, x)) => {
                    self.close_else();
                    self.line(&format!("{o} = {x};"));
                    self.close();
                }
                None => self.close(),
            }
            self.close();
            self.close();
            if keep && lane_mask {
                self.close();
            }
            self.close_n(opened);
            if tile_copy {
                self.close_n(2);
            }
        } else if let Some(form) = self.a.strided_form(self.k, acc.offsets).cloned() {
            self.emit_load_strided(acc, &form, keep.then_some(out), mask.as_ref(), other.as_ref(), zero);
        } else {
            let dims = self.k.ty(acc.offsets).shape.dims().to_vec();
            let off_repr = self.a.repr(acc.offsets).clone();
            let mut strides = vec![row_major(&dims), off_repr.strides.clone()];
            strides.push(mask.as_ref().map_or(vec![0; dims.len()], |m| m.strides.clone()));
            strides.push(other.as_ref().map_or(vec![0; dims.len()], |o| o.strides.clone()));
            let nest = collapsed_nest(&dims, &strides, "i");
            let opened = self.open_nest(&nest);
            let off = self.access(&off_repr, &nest.index[1]);
            let active = mask.as_ref().map_or("1".to_string(), |m| self.access(m, &nest.index[2]));
            let target = self.access(&out_repr, &nest.index[0]);
            let x = other.as_ref().map_or(zero.to_string(), |o| self.access(o, &nest.index[3]));
            let fail = self.oob(acc, "o");
            self.open(&format!("if ({active})"));
            self.line(&format!("const int64_t o = (int64_t){off};"));
            self.line(&format!("if ((uint64_t)o >= (uint64_t){n}) {fail}"));
            if keep {
                self.line(&format!("{target} = {};", from_storage(dtype, &format!("{b}[o]"))));
                self.close_else();
                self.line(&format!("{target} = {x};"));
            }
            self.close();
            self.close_n(opened);
        }
        self.close();
        if direct {
            // The `else` branch and the block `emit_load_direct` opened.
            self.close_n(2);
        }
    }

    /// The start of a load read in place (see [`super::analysis::Analysis::compute_direct`]):
    /// declares the fallback tile, the pointer the readers index (`vN`) and its row strides
    /// (`vN_sD`); when every row is in bounds and every lane active, points them at the buffer
    /// (prefetching the rows' continuation inside a loop), and opens the `else` branch in which
    /// the caller copies the tile as usual. The caller closes it.
    /// A load the analysis reads in place by rows (`Analysis::compute_rows_in_place`): the table
    /// `NAME_rows` of one pointer per row, into the buffer where the row is active, at a row
    /// of zeros where the mask turns it off (`other` is zero). An active row not wholly in
    /// bounds is checked lane by lane with exact wrapped offsets, as a copy would be, and fails
    /// at its first lane out of bounds; one in bounds only through the offsets' wrap is copied
    /// into `NAME_spill`. Rows gathered inside a loop are prefetched first, all of them, so that
    /// their misses overlap.
    fn emit_load_row_pointers(&mut self, acc: &Access, out: Value) {
        let (b, _, dtype) = self.buf(acc.buffer);
        let form = self.a.contiguous_form(self.k, acc.offsets).cloned().expect("rows in place have a contiguous form");
        let dims = self.k.ty(out).shape.dims().to_vec();
        let (rows, len) = (dims[0], dims[1]);
        let name = self.declare_pointer_table(out, dtype, rows, len);
        let mask = acc.mask.map(|m| self.a.repr(m).clone());
        self.open("");
        if self.loop_depth > 0 && !Self::affine_rows(&form) {
            let (opened, _) = self.open_rows(&form, acc);
            self.prefetch_row(&b, len as usize * dtype.size_bytes());
            self.close_n(opened);
        }
        let (opened, coords) = self.open_rows(&form, acc);
        let row = coords.first().cloned().unwrap_or_else(|| "0".into());
        let active = mask.as_ref().map_or("1".to_string(), |m| self.access(m, &self.lane(m, &coords, "0")));
        self.emit_pointer_entry(acc, &name, &row, &active, len);
        self.close_n(opened);
        self.close();
    }

    /// A transposed load the analysis reads in place by columns
    /// (`Analysis::compute_columns_in_place`): the table `NAME_rows` of one pointer per column
    /// (a contiguous run of the buffer), into the buffer where the column is active, at a run
    /// of zeros where the mask turns it off. The column dot (`Emitter::emit_dot`) reads
    /// `NAME_rows[j][kk]`, converting f16 as it loads. A column not wholly in bounds is checked
    /// lane by lane with exact wrapped offsets, as the copy would be, and copied into
    /// `NAME_spill`. Inside a loop every column is prefetched first, so that their misses
    /// overlap.
    fn emit_load_column_pointers(&mut self, acc: &Access, out: Value) {
        let (b, _, dtype) = self.buf(acc.buffer);
        let form = self.a.transposed_form(self.k, acc.offsets).cloned().expect("columns in place are transposed");
        let dims = self.k.ty(out).shape.dims().to_vec();
        let (len, cols) = (dims[0], dims[1]);
        let name = self.declare_pointer_table(out, dtype, cols, len);
        let mask = acc.mask.map(|m| self.a.repr(m).clone());
        self.open("");
        self.open_column_starts(acc, &form, len, cols);
        self.line("(void)ok;");
        if self.loop_depth > 0 {
            self.prefetch_row(&b, len as usize * dtype.size_bytes());
        }
        self.close();
        self.open(&format!("for (int c = 0; c < {cols}; c++)"));
        self.line("const int64_t s = cs[c];");
        let active =
            mask.as_ref().map_or("1".to_string(), |m| self.access(m, &sum_expr([(m.strides[1], "c")].into_iter())));
        self.emit_pointer_entry(acc, &name, "c", &active, len);
        self.close();
        self.close();
    }

    /// Entry `entry` of the pointer table `NAME_rows` (see `declare_pointer_table`), for the run
    /// of `len` elements at `s`: the zeros where `active` is false, the buffer where the run is
    /// in bounds, else a lane-by-lane copy into `NAME_spill` with exact wrapped offsets, failing
    /// at the first lane out of bounds, as a copy of the tile would.
    fn emit_pointer_entry(&mut self, acc: &Access, name: &str, entry: &str, active: &str, len: u32) {
        let (b, n, _) = self.buf(acc.buffer);
        self.open(&format!("if (!({active}))"));
        self.line(&format!("{name}_rows[{entry}] = {name}_zero;"));
        self.close();
        self.open(&format!("else if ({})", self.row_in_bounds(acc, len)));
        self.line(&format!("{name}_rows[{entry}] = &{b}[s];"));
        self.close_else();
        self.open(&format!("for (int j = 0; j < {len}; j++)"));
        let o_lane = self.wrap(acc.offsets, "s + j");
        let fail = self.oob(acc, "o");
        self.line(&format!("const int64_t o = {o_lane};"));
        self.line(&format!("if (o < 0 || o >= {n}) {fail}"));
        self.line(&format!("{name}_spill[{entry}][j] = {b}[o];"));
        self.close();
        self.line(&format!("{name}_rows[{entry}] = {name}_spill[{entry}];"));
        self.close();
    }

    /// Declares the pointer table of a load read in place (`NAME_rows[count]`, one pointer per
    /// run of `len` elements), the run of zeros masked-off runs point at (`NAME_zero`) and the
    /// copies of runs in bounds only through the offsets' wrap (`NAME_spill`); returns `NAME`.
    fn declare_pointer_table(&mut self, out: Value, dtype: DType, count: u32, len: u32) -> String {
        let name = self.name(out);
        let storage = storage_type(dtype);
        self.line(&format!("static const {storage} {name}_zero[{len}] __attribute__((aligned(64)));"));
        self.line(&format!("const {storage} *{name}_rows[{count}];"));
        self.line(&format!("{storage} {name}_spill[{count}][{len}] __attribute__((aligned(64)));"));
        name
    }

    fn emit_load_direct(&mut self, acc: &Access, out: Value) {
        let (b, _, dtype) = self.buf(acc.buffer);
        let form = self.a.contiguous_form(self.k, acc.offsets).expect("direct loads have contiguous rows").clone();
        let dims = self.k.ty(out).shape.dims().to_vec();
        let lead = dims.len() - 1;
        let len = dims[lead];
        let name = self.name(out);
        let t = super::ops::held_type(dtype);
        let numel: u64 = dims.iter().map(|&d| u64::from(d)).product();
        let fixed = row_major(&dims);
        let strides = self.runtime_strides(out);
        self.line(&format!("{t} {name}_tile[{numel}] __attribute__((aligned(64)));"));
        self.line(&format!("{t} *{name} = {name}_tile;"));
        for (stride, fixed) in strides.iter().zip(&fixed).take(lead) {
            self.line(&format!("int64_t {} KILN_UNUSED = {fixed};", stride.as_deref().unwrap_or_default()));
        }
        self.open("");
        self.emit_tile_check(acc, &form, &dims);
        self.open("if (dk_ok)");
        self.line(&format!("{name} = &{b}[dk_s];"));
        for (d, stride) in strides.iter().enumerate().take(lead) {
            self.line(&format!("{} = dk_c{d};", stride.as_deref().unwrap_or_default()));
        }
        // A tile read only through broadcasts is the small operand every row of a larger one
        // meets (a GEMV's activations beside its weight rows): every program reads it again,
        // so it stays in L1 and a prefetch per row and step would only take load slots.
        if self.loop_depth > 0 && !self.a.shared[out.index()] {
            // As for copied rows (see `emit_load`): the rows usually continue on the next
            // iterations, further than the hardware prefetcher runs ahead.
            // Rows that continue one another along the last lead dim (`dk_c` of exactly one
            // row, a weight row read as blocks of 16 bytes) share their cache lines: one hint
            // per line of the run, not one per row (the rest name lines already asked for).
            let row_bytes = len as usize * dtype.size_bytes();
            let contiguous = lead > 0 && form.coefs[lead - 1] == Sym::Const(i64::from(len));
            let step = if contiguous && row_bytes < 64 && 64 % row_bytes == 0 { 64 / row_bytes } else { 1 };
            let coords: Vec<String> = (0..lead).map(|d| format!("r{d}")).collect();
            let mut opened = 0;
            for (d, &extent) in dims[..lead].iter().enumerate() {
                let step = if d + 1 == lead { step } else { 1 };
                let inc = if step == 1 { format!("r{d}++") } else { format!("r{d} += {step}") };
                self.open(&format!("for (int64_t r{d} = 0; r{d} < {extent}; {inc})"));
                opened += 1;
            }
            let row = coords.iter().enumerate().map(|(d, r)| format!(" + {r} * dk_c{d}")).collect::<String>();
            self.line(&format!("const int64_t s = dk_s{row};"));
            let continued = step > 1;
            self.prefetch_ahead(&b, row_bytes, acc.offsets, (lead > 0).then(|| dims[0]), continued);
            self.close_n(opened);
        }
        self.close_else();
    }

    /// Declares `dk_s` (the offset of the first row), `dk_c0, ...` (the step per lead dim) and
    /// `dk_ok`: whether every lane of a tile of whole rows at affine row starts is in bounds
    /// (the corner rows bound the others, none wraps) and active. Inside a loop version whose
    /// check before the loop proved it for every iteration (`versioning.rs`), `dk_ok` is the
    /// constant 1 and the C compiler drops the checks and the slow path.
    fn emit_tile_check(&mut self, acc: &Access, form: &Form, dims: &[u32]) {
        // Gathered terms do not vary over the tile (see `affine_rows`): element 0 of each.
        let mut start = self.sym(&form.uniform);
        for g in &form.gathers {
            start = format!("{start} + {}", self.gather_term(g, "0"));
        }
        self.line(&format!("const int64_t dk_s = {};", self.wrap(acc.offsets, &start)));
        self.emit_tile_strides(form, dims, "dk_c");
        if self.proven.contains(&acc.offsets) {
            self.line("const int dk_ok = 1;");
            return;
        }
        self.line("int dk_ok = 1;");
        self.emit_tile_bounds(acc, dims, ("dk_s", "dk_c"), "dk_ok");
    }

    /// `const int64_t {prefix}0, ...`: the step per lead dim of a tile of rows at affine starts.
    pub(crate) fn emit_tile_strides(&mut self, form: &Form, dims: &[u32], prefix: &str) {
        for d in 0..dims.len() - 1 {
            self.line(&format!("const int64_t {prefix}{d} KILN_UNUSED = (int64_t)({});", self.sym(&form.coefs[d])));
        }
    }

    /// `ok &= ...`: every lane of the tile whose first row starts at `start` and whose lead
    /// dims step by `{strides}0, ...` is in bounds (the corner rows bound the others, none wraps)
    /// and active.
    pub(crate) fn emit_tile_bounds(&mut self, acc: &Access, dims: &[u32], (start, strides): (&str, &str), ok: &str) {
        let (_, n, _) = self.buf(acc.buffer);
        let lead = dims.len() - 1;
        let len = dims[lead];
        self.open("");
        self.line(&format!("int64_t lo_ = {start}, hi_ = {start};"));
        for (d, &extent) in dims[..lead].iter().enumerate() {
            let c = format!("{strides}{d}");
            self.line(&format!("{ok} &= {c} >= -2147483648LL && {c} <= 2147483647LL;"));
            if extent > 1 {
                self.line(&format!("if ({c} < 0) lo_ += {c} * {}; else hi_ += {c} * {};", extent - 1, extent - 1));
            }
        }
        self.line(&format!(
            "{ok} &= lo_ >= 0 && hi_ + {} < {n} && hi_ + {} <= {};",
            len - 1,
            len - 1,
            self.max_offset(acc.offsets)
        ));
        if let Some(m) = acc.mask {
            // Every lane active: walk only the dims along which the mask changes.
            let repr = self.a.repr(m).clone();
            let (mdims, mstrides): (Vec<u32>, Vec<i64>) =
                dims.iter().zip(&repr.strides).filter(|(_, &s)| s != 0).map(|(&d, &s)| (d, s)).unzip();
            let repr = Repr { strides: mstrides, ..repr };
            let nest = collapsed_nest(&mdims, std::slice::from_ref(&repr.strides), "i");
            let opened = self.open_nest(&nest);
            let m = self.access(&repr, &nest.index[0]);
            self.line(&format!("{ok} &= ({m}) != 0;"));
            self.close_n(opened);
        }
        self.close();
    }

    /// Whether a contiguous-row form has row starts affine in the row coordinates.
    fn affine_rows(form: &Form) -> bool {
        form.gathers.iter().all(|g| g.repr.strides.iter().all(|&s| s == 0))
    }

    /// The fast path of a row load whose rows start at affine offsets: when the whole tile is
    /// in bounds and active (one check), every row is copied without checks; opens the `else`
    /// branch for the row-by-row path, which the caller closes with two `close`s.
    fn open_tile_copy(&mut self, acc: &Access, form: &Form, out: Value) {
        let (b, _, dtype) = self.buf(acc.buffer);
        let dims = self.k.ty(acc.offsets).shape.dims().to_vec();
        let lead = dims.len() - 1;
        let len = dims[lead];
        let out_repr = self.a.repr(out).clone();
        self.open("");
        self.emit_tile_check(acc, form, &dims);
        self.open("if (dk_ok)");
        // A raw tile (`Analysis::compute_raw_copies`) takes the rows' bytes as they are.
        let raw = self.a.raw[out.index()];
        if !raw && self.emit_row_pack(acc, form, &dims, &out_repr) {
            self.close_else();
            return;
        }
        let gathered = !raw && self.open_pair_gather(acc, &dims, &out_repr);
        let mut coords = Vec::with_capacity(lead);
        let mut opened = 0;
        for (d, &extent) in dims[..lead].iter().enumerate() {
            if extent == 1 {
                coords.push("0".to_string());
            } else {
                self.open(&format!("for (int r{d} = 0; r{d} < {extent}; r{d}++)"));
                coords.push(format!("r{d}"));
                opened += 1;
            }
        }
        let row: String = coords
            .iter()
            .enumerate()
            .filter(|(_, c)| *c != "0")
            .map(|(d, c)| format!(" + (int64_t){c} * dk_c{d}"))
            .collect();
        self.line(&format!("const int64_t s = dk_s{row};"));
        if self.loop_depth > 0 {
            self.prefetch_ahead(&b, len as usize * dtype.size_bytes(), acc.offsets, (lead > 0).then(|| dims[0]), false);
        }
        let dst = self.access(&out_repr, &self.lane(&out_repr, &coords, "0"));
        match dtype {
            _ if raw => self.line(&format!("memcpy(&{dst}, &{b}[s], {len} * sizeof({b}[0]));")),
            DType::F16 => self.line(&format!("kiln_f16_load_n(&{dst}, &{b}[s], {len});")),
            DType::BF16 => self.line(&format!("kiln_bf16_load_n(&{dst}, &{b}[s], {len});")),
            DType::Bool => {
                self.open(&format!("for (int j = 0; j < {len}; j++)"));
                let o = self.access(&out_repr, &self.lane(&out_repr, &coords, "j"));
                self.line(&format!("{o} = {};", from_storage(dtype, &format!("{b}[s + j]"))));
                self.close();
            }
            DType::F32 | DType::I32 | DType::U32 | DType::I8 | DType::U8 => {
                self.line(&format!("memcpy(&{dst}, &{b}[s], {len} * sizeof({b}[0]));"))
            }
        }
        self.close_n(opened + usize::from(gathered));
        self.close_else();
    }

    /// Inside `if (dk_ok)` of a tile copy: a tile of 16·j rows of two f16 each at evenly spaced
    /// starts (a GEMV's per-group scales, `[block_n, 2]` per step), on an AVX-512 target, is
    /// gathered 32 bits a row and converted 16 lanes at a time (`kiln_f16_gather_pairs`) when the
    /// rows ascend and their byte offsets fit the gather's i32 index; opens the `else` for the
    /// row-by-row copy and returns true (the caller closes one more brace), or emits nothing.
    /// Row by row, each row is two scalar conversions with their stores and a prefetch test:
    /// at k = 576, n = 1536, group 32 the int8 GEMV's scales and mins took 1/6 of its time.
    fn open_pair_gather(&mut self, acc: &Access, dims: &[u32], out_repr: &Repr) -> bool {
        let (b, _, dtype) = self.buf(acc.buffer);
        let fits = self.target.isa == crate::cpu::target::CpuIsa::Avx512
            && dtype == DType::F16
            && dims.len() == 2
            && dims[1] == 2
            && dims[0].is_multiple_of(16)
            && out_repr.is_contiguous(dims);
        if !fits {
            return false;
        }
        let rows = dims[0];
        self.open(&format!("if (dk_c0 > 0 && dk_c0 <= 2147483647LL / {})", 2 * (rows - 1)));
        if self.loop_depth > 0 {
            // Every line of the rows' span, as far ahead as the row-by-row path asks for each
            // row. Hot in L2 this costs the int8 GEMV above ~5%; from DRAM, leaving it out was
            // no faster in a noisy comparison (medians 41 vs 42 µs at k = 576, n = 1536).
            let distance = self.continuation_distance(4, acc.offsets);
            self.line(&format!(
                "kiln_prefetch_bytes((uintptr_t)&{b}[dk_s] + {distance}, (dk_c0 * {} + 2) * 2);",
                rows - 1
            ));
        }
        let dst = self.access(out_repr, "0");
        self.line(&format!("kiln_f16_gather_pairs(&{dst}, &{b}[dk_s], (int32_t)(dk_c0 * 2), {rows});"));
        self.close_else();
        true
    }

    /// Inside `if (dk_ok)` of a tile copy, in a kernel with a byte dot on an AVX-512 target: a
    /// small tile of short rows (1-byte lanes in rows of 4 to 32 bytes, or f16 in rows of 2 or
    /// 4; one or two lead dims) is assembled in a vector register and stored whole
    /// (`kiln_pack_rows`, `kiln_f16_pack_rows`, converting 16 halves at once); returns true when
    /// it emitted the copy, false (and nothing) otherwise. Row by row, the tile is a store per
    /// row (and a conversion per row for f16), and the 64-byte loads of the byte dot and its
    /// vector maps that read it next span several of those stores, which the store buffer
    /// cannot forward: each such load waits for the stores to reach L1. Measured on the int8
    /// GEMVs of `dequant_gemm_w4` (see `int8.rs`): the row loop, whose step reads 2 × 16
    /// activation bytes and `[8, 2]` f16 scales and mins; the lanes GEMV's `[16, 2]` scales
    /// packed rather than gathered (`open_pair_gather`), 51-53 against 58-62 µs hot at k = 576,
    /// n = 3072. The f32 GEMV reads its scales a lane at a time, which forwards from narrow
    /// stores, and packing them there measured slower (hot 66.6-69.8 against 64.5-65.4 µs).
    fn emit_row_pack(&mut self, acc: &Access, form: &Form, dims: &[u32], out_repr: &Repr) -> bool {
        let (b, _, dtype) = self.buf(acc.buffer);
        if self.target.isa != crate::cpu::target::CpuIsa::Avx512
            || !self.a.has_byte_dot()
            || !(2..=3).contains(&dims.len())
            || !out_repr.is_contiguous(dims)
        {
            return false;
        }
        let len = dims[dims.len() - 1];
        let rows: u32 = dims[..dims.len() - 1].iter().product();
        let fits = match dtype {
            DType::U8 | DType::I8 => [4, 8, 16, 32].contains(&len) && (rows * len).is_multiple_of(32),
            DType::F16 => [2, 4].contains(&len) && (rows * len).is_multiple_of(16),
            _ => false,
        };
        if !fits || rows < 2 {
            return false;
        }
        // Rows `(r / n1, r % n1)`, `dk_c0` and `dk_c1` elements apart.
        let (n1, c1) = if dims.len() == 3 { (dims[1], "dk_c1") } else { (1, "0") };
        // A tile that repeats its rows (a zero step along a lead dim) is a few rows broadcast,
        // such as a GEMV's activations, read again by every row group and hot in L1: hints for
        // them only take load slots (with no packed tile hinted at all, the int8 row loop ran
        // hot in 39-40 against 45-47 µs at k = 576, n = 3072). Other rows are hinted a row
        // group ahead (`prefetch_ahead`'s continued rows): for the scales that made k = 4096,
        // n = 14336, group 32 ~1.6× faster from DRAM.
        let repeats = form.coefs[..dims.len() - 1].iter().zip(dims).any(|(c, &d)| d > 1 && *c == Sym::Const(0));
        let row_bytes = len as usize * dtype.size_bytes();
        if self.loop_depth > 0 && !repeats {
            self.open(&format!("for (int r = 0; r < {rows}; r++)"));
            self.line(&format!("const int64_t s = dk_s + (int64_t)(r / {n1}) * dk_c0 + (int64_t)(r % {n1}) * {c1};"));
            self.prefetch_ahead(&b, row_bytes, acc.offsets, Some(dims[0]), true);
            self.close();
        }
        let dst = self.access(out_repr, "0");
        if dtype == DType::F16 {
            self.line(&format!("kiln_f16_pack_rows(&{dst}, &{b}[dk_s], dk_c0, {n1}, {c1}, {len}, {rows});"));
        } else {
            self.line(&format!(
                "kiln_pack_rows((uint8_t *)&{dst}, (const uint8_t *)&{b}[dk_s], dk_c0, {n1}, {c1}, {len}, {rows});"
            ));
        }
        true
    }

    /// The prefetch of a row `&b[s]` of a tile of affine rows (`dk_c0` apart along the first of
    /// its `outer` rows; `None` for a tile of one row) read inside a loop, on the path where the
    /// whole tile is in bounds.
    ///
    /// In a kernel with a byte dot, the same position of the row `outer · dk_c0` further: the
    /// tile of rows after this one, which the next program along the rows reads (a worker runs
    /// consecutive programs, and a GEMV's program `i` reads row block `i`). Walking the next
    /// tile in step with this one asks for all of it, a whole program ahead of its use and in
    /// the order it will be read, so the DRAM latency of every row start is hidden too; the
    /// hint is `prefetcht2` (locality 1), since a tile ahead does not fit L1 beside the one in
    /// use. Measured on the int8 GEMV of `dequant_gemm_w4` (k = 4096, n = 14336, 2 Zen 5
    /// cores): about 1.5× faster than asking a few iterations ahead in the same row, whose
    /// heads are never prefetched and whose many short streams the L1 miss buffers cap.
    /// Rows shorter than a cache line (the activations beside the weights, read again and
    /// again from L1) and other kernels keep [`Self::prefetch_continuation`]: asking for short
    /// rows a tile ahead with `prefetcht2` made the same GEMV ~1.4× slower, and a float GEMV is
    /// bound by its conversions, not by latency, and measured no faster either way.
    ///
    /// `continued`: the rows continue one another along the tile's last lead dim (a weight row
    /// read as 16-byte blocks, one hint per line, see `emit_load_direct`), as in the f32
    /// row-loop GEMV of `dequant_gemm_w4`, whose next row group (the next iteration of its row
    /// loop) lies `outer` rows further: asking for it a row group ahead made that GEMV ~5%
    /// faster on 2 Zen 5 cores (k = 4096, n = 14336, groups 128 and 32) once its conversions
    /// had become cheaper, where asking a few steps ahead in the same row left every row head
    /// to the hardware prefetcher.
    fn prefetch_ahead(&mut self, b: &str, row_bytes: usize, offsets: Value, outer: Option<u32>, continued: bool) {
        let Some(outer) = outer.filter(|_| (self.a.has_byte_dot() && row_bytes >= 64) || continued) else {
            return self.prefetch_continuation(b, row_bytes, offsets);
        };
        // One hint per line, each written out: the same addresses through a loop over lines
        // (or indexed as `&b[s + rows · dk_c0]`) compiled to a loop that ran ~1.4× slower.
        let elem = row_bytes / self.k.ty(offsets).shape.dims().last().map_or(1, |&d| d.max(1) as usize);
        for line in (0..row_bytes).step_by(64) {
            self.line(&format!("__builtin_prefetch((const char *)&{b}[s] + {outer} * {elem} * dk_c0 + {line}, 0, 1);"));
        }
    }

    /// Inside a loop, asks for the line a few iterations ahead of the row at `&b[s]` (rows read
    /// in loops usually continue there on later iterations; see `emit_load`). How far: enough
    /// iterations that the tile's rows together run [`PREFETCH_LEAD_BYTES`] ahead (a DRAM
    /// latency's worth of streaming), at most `PREFETCH_BYTES`. Further costs twice: the head of
    /// every row, up to the distance, is never prefetched (a 2 KiB weight row prefetched 1 KiB
    /// ahead misses on half its lines), and far lines of many rows evict each other from L1
    /// before use. A row shorter than a cache line asks on every iteration too, although most
    /// of its hints name a line already asked for: a hint is one load-port slot, while testing
    /// the row's position in its line was a branch that the rows of a tile (at irregular
    /// offsets, e.g. a GEMV's 36-byte rows of scales) mispredicted often enough to cost the
    /// f32 GEMV of `dequant_gemm_w4` ~15% of its time.
    fn prefetch_continuation(&mut self, b: &str, row_bytes: usize, offsets: Value) {
        let distance = self.continuation_distance(row_bytes, offsets);
        self.line(&format!("__builtin_prefetch((const char *)&{b}[s] + {distance});"));
    }

    /// How far ahead of a row `prefetch_continuation` asks, in bytes (see there).
    fn continuation_distance(&self, row_bytes: usize, offsets: Value) -> usize {
        let dims = self.k.ty(offsets).shape.dims().to_vec();
        let rows: usize = dims[..dims.len().saturating_sub(1)].iter().map(|&d| d as usize).product();
        let tile_bytes = (rows * row_bytes).max(1);
        let lead = if self.a.has_byte_dot() { PREFETCH_LEAD_BYTES_BYTE_DOT } else { PREFETCH_LEAD_BYTES };
        let iterations = lead.div_ceil(tile_bytes).max(1);
        (iterations * row_bytes).div_ceil(64).clamp(1, PREFETCH_BYTES / 64) * 64
    }

    /// Whether the row of `len` evenly spaced lanes `s, s + d, ...` is in bounds (C): its first
    /// and last lanes are and `d` is an `i32`, so the lanes between lie between them unwrapped.
    fn strided_row_in_bounds(&self, acc: &Access, len: u32) -> String {
        let (_, n, _) = self.buf(acc.buffer);
        let last = format!("s + {} * d", len - 1);
        format!(
            "d >= -2147483648LL && d <= 2147483647LL && s >= 0 && s < {n} && {last} >= 0 && {last} < {n} && {last} <= {}",
            self.max_offset(acc.offsets)
        )
    }

    /// A load whose rows are evenly spaced lanes `s, s + d, ...` (a uniform step `d`, not 1): a
    /// row whose first and last lanes are in bounds has every lane in bounds (the lanes lie
    /// between them and none wraps), so it is read with one check and a plain loop; masked-off
    /// lanes then take `other`. Any other row goes lane by lane with exact wrapped offsets.
    fn emit_load_strided(
        &mut self,
        acc: &Access,
        form: &Form,
        out: Option<Value>,
        mask: Option<&Repr>,
        other: Option<&Repr>,
        zero: &str,
    ) {
        let (b, n, dtype) = self.buf(acc.buffer);
        let len = *self.k.ty(acc.offsets).shape.dims().last().unwrap_or(&1);
        let out_repr = out.map(|v| self.a.repr(v).clone());
        let (opened, coords) = self.open_rows(form, acc);
        let step = self.sym(form.coefs.last().expect("a strided form has a last dim"));
        self.line(&format!("const int64_t d = (int64_t)({step});"));
        let o_at = |e: &Self, j: &str| out_repr.as_ref().map(|r| e.access(r, &e.lane(r, &coords, j)));
        let m_at = |e: &Self, j: &str| mask.map(|m| e.access(m, &e.lane(m, &coords, j)));
        let other_at = |e: &Self, j: &str| other.map_or(zero.to_string(), |o| e.access(o, &e.lane(o, &coords, j)));
        let in_bounds = self.strided_row_in_bounds(acc, len);
        if out.is_some() {
            self.open(&format!("if ({in_bounds})"));
            let lanes_contiguous = out_repr.as_ref().is_some_and(|r| !r.scalar_root && r.strides.last() == Some(&1));
            let stride2 = self.target.isa == crate::cpu::target::CpuIsa::Avx512
                && dtype == DType::F32
                && lanes_contiguous
                && len == 16
                && form.coefs.last() == Some(&Sym::Const(2));
            if stride2 {
                // Two vector loads and a permute (`kiln_f32_load_stride2`) instead of 16 lanes
                // one at a time.
                let o = o_at(self, "0").unwrap_or_default();
                self.line(&format!("kiln_f32_load_stride2(&{o}, &{b}[s]);"));
            } else if dtype == DType::F16 && lanes_contiguous && len >= 4 {
                // The raw halves first, then one vector conversion per 8 lanes (F16C's
                // `vcvtph2ps`) instead of a scalar conversion per lane.
                self.line(&format!("uint16_t hb[{len}];"));
                self.line(&format!("for (int j = 0; j < {len}; j++) hb[j] = {b}[s + (int64_t)j * d];"));
                let o = o_at(self, "0").unwrap_or_default();
                self.line(&format!("kiln_f16_load_n(&{o}, hb, {len});"));
            } else {
                self.open(&format!("for (int j = 0; j < {len}; j++)"));
                let o = o_at(self, "j").unwrap_or_default();
                self.line(&format!("{o} = {};", from_storage(dtype, &format!("{b}[s + (int64_t)j * d]"))));
                self.close();
            }
            if let Some(m) = m_at(self, "j") {
                // Lanes are masked off only at a ragged edge: one test of the whole row, not a
                // select per lane (which compiled to a branch per lane).
                self.line("uint8_t all = 1;");
                self.line(&format!("for (int j = 0; j < {len}; j++) all &= (uint8_t)(({m}) != 0);"));
                self.open("if (!all)");
                self.open(&format!("for (int j = 0; j < {len}; j++)"));
                let (o, x) = (o_at(self, "j").unwrap_or_default(), other_at(self, "j"));
                self.line(&format!("{o} = {m} ? {o} : {x};"));
                self.close();
                self.close();
            }
            self.close_else();
        } else {
            self.open(&format!("if (!({in_bounds}))"));
        }
        self.open(&format!("for (int j = 0; j < {len}; j++)"));
        let active = m_at(self, "j").unwrap_or_else(|| "1".into());
        let o_lane = self.wrap(acc.offsets, "(uint64_t)s + (uint64_t)j * (uint64_t)d");
        let fail = self.oob(acc, "o");
        self.open(&format!("if ({active})"));
        self.line(&format!("const int64_t o = {o_lane};"));
        self.line(&format!("if (o < 0 || o >= {n}) {fail}"));
        if let Some(o) = o_at(self, "j") {
            self.line(&format!("{o} = {};", from_storage(dtype, &format!("{b}[o]"))));
            self.close_else();
            self.line(&format!("{o} = {};", other_at(self, "j")));
        }
        self.close();
        self.close();
        self.close();
        self.close_n(opened);
    }

    /// For offsets whose columns are contiguous (`[rows, cols]`, see
    /// [`super::analysis::Analysis::transposed_form`]): declares `cs[cols]`, each column's first
    /// offset, and `ok`, whether every column is wholly in bounds, and opens the loop over the
    /// columns that computes them (the caller may add checks, then closes it).
    fn open_column_starts(&mut self, acc: &Access, form: &Form, rows: u32, cols: u32) {
        self.line(&format!("int64_t cs[{cols}];"));
        self.line("int ok = 1;");
        self.open(&format!("for (int c = 0; c < {cols}; c++)"));
        let mut start = self.sym(&form.uniform);
        if form.coefs[1] != Sym::Const(0) {
            start = format!("{start} + {} * (uint64_t)c", self.sym(&form.coefs[1]));
        }
        for g in &form.gathers {
            let index = sum_expr([(g.repr.strides[1], "c")].into_iter());
            start = format!("{start} + {}", self.gather_term(g, &index));
        }
        let s = self.wrap(acc.offsets, &start);
        self.line(&format!("const int64_t s = {s};"));
        self.line("cs[c] = s;");
        self.line(&format!("ok &= ({});", self.row_in_bounds(acc, rows)));
    }

    /// A float load whose offsets run down the columns (`[R, C]` with each column
    /// `start, start + 1, ...`, a transposed tile such as `kᵀ`): each column is read as a
    /// contiguous row of `R` elements into a `[C, R]` scratch tile, which is transposed into the
    /// result through registers; masked-off lanes then take `other`. When any column is not
    /// wholly in bounds, every lane is checked and read on its own, in row-major order.
    fn emit_load_transposed(
        &mut self,
        acc: &Access,
        form: &Form,
        out: Option<Value>,
        mask: Option<&Repr>,
        other: Option<&Repr>,
        zero: &str,
    ) {
        let (b, n, dtype) = self.buf(acc.buffer);
        let dims = self.k.ty(acc.offsets).shape.dims().to_vec();
        let (rows, cols) = (dims[0], dims[1]);
        // Row-major storage, or column-major (the analysis's `compute_column_major`): the
        // scratch tile's layout, so the columns are read straight into it and not transposed.
        let column_major = out.is_some_and(|v| {
            let r = self.a.repr(v);
            assert!(!r.scalar_root, "a loaded tile has storage");
            assert!(
                r.strides == row_major(&dims) || r.strides == [1, i64::from(rows)],
                "a loaded tile is stored by rows or by columns"
            );
            r.strides != row_major(&dims)
        });
        let o = out.map_or(String::new(), |v| self.name(v));
        // Element (i, c) of the result.
        let o_at = |i: &str, c: &str| {
            if column_major {
                format!("{o}[{c} * {rows} + {i}]")
            } else {
                format!("{o}[{i} * {cols} + {c}]")
            }
        };
        // Column starts, and whether every column is wholly in bounds.
        self.open_column_starts(acc, form, rows, cols);
        if out.is_some() {
            self.prefetch_row(&b, rows as usize * dtype.size_bytes());
        }
        self.close();
        let m_at = |e: &Self, i: &str, c: &str| {
            mask.map(|m| e.access(m, &sum_expr([(m.strides[0], i), (m.strides[1], c)].into_iter())))
        };
        let other_at = |e: &Self, i: &str, c: &str| {
            other.map_or(zero.to_string(), |x| {
                e.access(x, &sum_expr([(x.strides[0], i), (x.strides[1], c)].into_iter()))
            })
        };
        if out.is_none() {
            // Only the checks are live: a column wholly in bounds cannot fail.
            self.open("if (!ok)");
        } else {
            self.open("if (ok)");
            let kt = if column_major {
                o.clone()
            } else {
                self.line(&format!("float kt[{}] __attribute__((aligned(64)));", rows * cols));
                "kt".to_string()
            };
            // A mask (and `other`) constant down each column, as `kᵀ`'s key mask is, is applied
            // to whole columns before the transpose, and masked-off columns are not read.
            let column_mask = mask.is_some_and(|m| m.strides[0] == 0) && other.is_none_or(|x| x.strides[0] == 0);
            self.open(&format!("for (int c = 0; c < {cols}; c++)"));
            if column_mask {
                let (m, x) = (m_at(self, "0", "c").unwrap_or_default(), other_at(self, "0", "c"));
                self.open(&format!("if (!{m})"));
                self.line(&format!("for (int i = 0; i < {rows}; i++) {kt}[c * {rows} + i] = {x};"));
                self.line("continue;");
                self.close();
            }
            match dtype {
                DType::F16 => self.line(&format!("kiln_f16_load_n(&{kt}[c * {rows}], &{b}[cs[c]], {rows});")),
                _ => self.line(&format!("memcpy(&{kt}[c * {rows}], &{b}[cs[c]], {rows} * sizeof(float));")),
            }
            self.close();
            if !column_major {
                self.line(&format!("kiln_transpose_f32({o}, kt, {cols}, {rows});"));
            }
            if mask.is_some() && !column_mask {
                self.open(&format!("for (int i = 0; i < {rows}; i++)"));
                self.open(&format!("for (int c = 0; c < {cols}; c++)"));
                let (m, x) = (m_at(self, "i", "c").unwrap_or_default(), other_at(self, "i", "c"));
                let e = o_at("i", "c");
                self.line(&format!("{e} = {m} ? {e} : {x};"));
                self.close();
                self.close();
            }
            self.close_else();
        }
        self.open(&format!("for (int i = 0; i < {rows}; i++)"));
        self.open(&format!("for (int c = 0; c < {cols}; c++)"));
        let active = m_at(self, "i", "c").unwrap_or_else(|| "1".into());
        let o_lane = self.wrap(acc.offsets, "cs[c] + i");
        let fail = self.oob(acc, "o");
        self.open(&format!("if ({active})"));
        self.line(&format!("const int64_t o = {o_lane};"));
        self.line(&format!("if (o < 0 || o >= {n}) {fail}"));
        if out.is_some() {
            self.line(&format!("{} = {};", o_at("i", "c"), from_storage(dtype, &format!("{b}[o]"))));
            self.close_else();
            self.line(&format!("{} = {};", o_at("i", "c"), other_at(self, "i", "c")));
        }
        self.close();
        self.close();
        self.close();
        self.close();
    }

    pub(crate) fn emit_store(&mut self, acc: &Access, value: Value) {
        self.emit_write(acc, value, Write::Store);
    }

    pub(crate) fn emit_atomic_add(&mut self, acc: &Access, value: Value) {
        self.emit_write(acc, value, Write::AtomicAdd);
    }

    /// `prefetch`: for each active row start, a prefetch of every cache line the row overlaps. A hint
    /// never faults (`__builtin_prefetch` of any address is harmless), so nothing is checked; the
    /// address is formed in integers, as C forbids pointer arithmetic outside the buffer.
    pub(crate) fn emit_prefetch(&mut self, buffer: Param, offsets: Value, mask: Option<Value>, len: u32) {
        let (b, _, dtype) = self.buf(buffer);
        let dims = self.k.ty(offsets).shape.dims().to_vec();
        let off_repr = self.a.repr(offsets).clone();
        let mask = mask.map(|m| self.a.repr(m).clone());
        let strides = vec![off_repr.strides.clone(), mask.as_ref().map_or(vec![0; dims.len()], |m| m.strides.clone())];
        let bytes = len as usize * dtype.size_bytes();
        self.open("");
        let nest = collapsed_nest(&dims, &strides, "i");
        let opened = self.open_nest(&nest);
        let off = self.wrap(offsets, &self.access(&off_repr, &nest.index[0]));
        let active = mask.as_ref().map_or("1".to_string(), |m| self.access(m, &nest.index[1]));
        self.open(&format!("if ({active})"));
        self.line(&format!("const uintptr_t p = (uintptr_t){b} + (uintptr_t)({off} * (int64_t)sizeof({b}[0]));"));
        self.line(&format!("kiln_prefetch_bytes_far(p, {bytes});"));
        self.close();
        self.close_n(opened);
        self.close();
    }

    fn emit_write(&mut self, acc: &Access, value: Value, write: Write) {
        let (b, n, dtype) = self.buf(acc.buffer);
        let val = self.a.repr(value).clone();
        // A raw value holds the buffer's 16-bit patterns already (`compute_raw_copies`).
        let raw = self.a.raw[value.index()];
        let stored = |x: &str| if raw { x.to_string() } else { to_storage(dtype, x) };
        let mask = acc.mask.map(|m| self.a.repr(m).clone());
        // The analysis builds no offsets tile for these two forms (`Analysis::store_form`).
        if let Some((form, transposed)) = self.a.store_form(self.k, acc.inst) {
            if transposed {
                self.emit_store_transposed(acc, &form, value, mask.as_ref());
            } else {
                self.open("");
                self.emit_store_strided(acc, &form, &val, mask.as_ref());
                self.close();
            }
            return;
        }
        let form = match write {
            Write::Store => self.a.contiguous_form(self.k, acc.offsets).cloned(),
            Write::AtomicAdd => None,
        };
        self.open("");
        if let Some(form) = form {
            let len = *self.k.ty(acc.offsets).shape.dims().last().unwrap_or(&1);
            let m_at = |e: &Self, coords: &[String], j: &str| mask.as_ref().map(|m| e.access(m, &e.lane(m, coords, j)));
            // Pass 1: check every active lane of every row.
            let (opened, coords) = self.open_rows(&form, acc);
            self.open(&format!("if (!({}))", self.row_in_bounds(acc, len)));
            self.open(&format!("for (int j = 0; j < {len}; j++)"));
            let active = m_at(self, &coords, "j").unwrap_or_else(|| "1".into());
            let o_lane = self.wrap(acc.offsets, "s + j");
            let fail = self.oob(acc, "o");
            self.open(&format!("if ({active})"));
            self.line(&format!("const int64_t o = {o_lane};"));
            self.line(&format!("if (o < 0 || o >= {n}) {fail}"));
            self.close();
            self.close();
            self.close();
            self.close_n(opened);
            // Pass 2: write, row by row in order (a later lane wins on a repeated offset).
            let (opened, coords) = self.open_rows(&form, acc);
            let v_at = |e: &Self, j: &str| e.access(&val, &e.lane(&val, &coords, j));
            self.open(&format!("if ({})", self.row_in_bounds(acc, len)));
            let row_uniform_mask = mask.as_ref().is_some_and(|m| m.strides[coords.len()] == 0);
            let whole_row = |e: &mut Self| {
                let contiguous_value = !val.scalar_root && val.strides[coords.len()] == 1;
                let row = v_at(e, "0");
                // Rows of at least a few lines into a buffer far larger than the caches stream
                // past them (see `kiln_streams` in the prelude); the size is known at run time.
                let stream = len as usize * dtype.size_bytes() >= STREAM_MIN_ROW_BYTES;
                let streams = format!("kiln_streams({n}, sizeof({b}[0]))");
                // A raw value's row is copied as it is, like an f32 or integer row.
                let bytes = raw || !matches!(dtype, DType::F16 | DType::BF16);
                match (dtype, contiguous_value) {
                    (DType::F16, true) if !raw && stream => e.line(&format!(
                        "if ({streams}) kiln_f16_store_n_nt(&{b}[s], &{row}, {len}); else kiln_f16_store_n(&{b}[s], &{row}, {len});"
                    )),
                    (DType::F16, true) if !raw => e.line(&format!("kiln_f16_store_n(&{b}[s], &{row}, {len});")),
                    (DType::BF16, true) if !raw => e.line(&format!("kiln_bf16_store_n(&{b}[s], &{row}, {len});")),
                    (DType::F16 | DType::BF16 | DType::F32 | DType::I32 | DType::U32, true) if bytes && stream => {
                        e.line(&format!(
                            "if ({streams}) kiln_copy_nt(&{b}[s], &{row}, {len} * sizeof({b}[0])); else memcpy(&{b}[s], &{row}, {len} * sizeof({b}[0]));"
                        ))
                    }
                    (_, true) => e.line(&format!("memcpy(&{b}[s], &{row}, {len} * sizeof({b}[0]));")),
                    (_, false) => {
                        e.open(&format!("for (int j = 0; j < {len}; j++)"));
                        let x = v_at(e, "j");
                        e.line(&format!("{b}[s + j] = {};", stored(&x)));
                        e.close();
                    }
                }
            };
            match (&mask, row_uniform_mask) {
                (None, _) => whole_row(self),
                (Some(_), true) => {
                    let cond = m_at(self, &coords, "0").unwrap_or_default();
                    self.open(&format!("if ({cond})"));
                    whole_row(self);
                    self.close();
                }
                (Some(_), false) => {
                    // A row whose lanes are all active (the common case away from the edges of
                    // the problem) is written whole, with vector conversions and stores.
                    let cond = m_at(self, &coords, "j").unwrap_or_default();
                    self.line("uint8_t all = 1;");
                    self.line(&format!("for (int j = 0; j < {len}; j++) all &= (uint8_t)(({cond}) != 0);"));
                    self.open("if (all)");
                    whole_row(self);
                    self.close_else();
                    self.open(&format!("for (int j = 0; j < {len}; j++)"));
                    let x = v_at(self, "j");
                    self.line(&format!("if ({cond}) {b}[s + j] = {};", stored(&x)));
                    self.close();
                    self.close();
                }
            }
            self.close_else();
            self.open(&format!("for (int j = 0; j < {len}; j++)"));
            let active = m_at(self, &coords, "j").unwrap_or_else(|| "1".into());
            let o_lane = self.wrap(acc.offsets, "s + j");
            let x = v_at(self, "j");
            self.line(&format!("if ({active}) {b}[{o_lane}] = {};", stored(&x)));
            self.close();
            self.close();
            self.close_n(opened);
        } else {
            self.emit_write_lanes(acc, &val, mask.as_ref(), write, raw);
        }
        self.close();
    }

    /// A write lane by lane in row-major order: every active lane's offset checked first, then
    /// every active lane written (a later lane wins on a repeated offset).
    fn emit_write_lanes(&mut self, acc: &Access, val: &Repr, mask: Option<&Repr>, write: Write, raw: bool) {
        let (b, n, dtype) = self.buf(acc.buffer);
        let dims = self.k.ty(acc.offsets).shape.dims().to_vec();
        let off_repr = self.a.repr(acc.offsets).clone();
        let strides = vec![
            off_repr.strides.clone(),
            mask.map_or(vec![0; dims.len()], |m| m.strides.clone()),
            val.strides.clone(),
        ];
        let fail = self.oob(acc, "o");
        for pass in 0..2 {
            let nest = collapsed_nest(&dims, &strides, "i");
            let opened = self.open_nest(&nest);
            let off = self.access(&off_repr, &nest.index[0]);
            let active = mask.map_or("1".to_string(), |m| self.access(m, &nest.index[1]));
            let x = self.access(val, &nest.index[2]);
            self.open(&format!("if ({active})"));
            self.line(&format!("const int64_t o = (int64_t){off};"));
            if pass == 0 {
                self.line(&format!("if ((uint64_t)o >= (uint64_t){n}) {fail}"));
            } else {
                match (write, dtype) {
                    (Write::Store, _) if raw => self.line(&format!("{b}[o] = {x};")),
                    (Write::Store, _) => self.line(&format!("{b}[o] = {};", to_storage(dtype, &x))),
                    (Write::AtomicAdd, DType::F32) => self.line(&format!("kiln_atomic_add_f32(&{b}[o], {x});")),
                    // C11 and GCC define atomic signed arithmetic to wrap.
                    (Write::AtomicAdd, _) => self.line(&format!("__atomic_fetch_add(&{b}[o], {x}, __ATOMIC_RELAXED);")),
                }
            }
            self.close();
            self.close_n(opened);
        }
    }

    /// A float store whose offsets run down the columns (`[R, C]`, column `c` at
    /// `start + c·stride, +1, ...`: a `yᵀ` tile written into `y`). When the columns are wholly in
    /// bounds and evenly spaced at least `R` apart (so no two lanes share an offset), the value
    /// is transposed through registers into `C` rows of `R` and each is written as a contiguous
    /// row (lane by lane under its mask where some lane of it is off); otherwise the write goes
    /// lane by lane, checked first, as any other.
    fn emit_store_transposed(&mut self, acc: &Access, form: &Form, value: Value, mask: Option<&Repr>) {
        let (b, _, dtype) = self.buf(acc.buffer);
        let dims = self.k.ty(acc.offsets).shape.dims().to_vec();
        let (rows, cols) = (dims[0], dims[1]);
        self.open("");
        self.open_column_starts(acc, form, rows, cols);
        if cols > 1 {
            self.line(&format!("if (c > 0) ok &= cs[c] - cs[c - 1] == cs[1] - cs[0] && (cs[1] - cs[0] >= {rows} || cs[1] - cs[0] <= -{rows});"));
        }
        self.close();
        self.open("if (ok)");
        let v = self.contiguous(value);
        self.line(&format!("float kt[{}] __attribute__((aligned(64)));", rows * cols));
        if rows % 8 == 0 && cols % 8 == 0 {
            self.line(&format!("kiln_transpose_f32(kt, {v}, {rows}, {cols});"));
        } else {
            self.open(&format!("for (int i = 0; i < {rows}; i++)"));
            self.line(&format!("for (int c = 0; c < {cols}; c++) kt[c * {rows} + i] = {v}[i * {cols} + c];"));
            self.close();
        }
        self.open(&format!("for (int c = 0; c < {cols}; c++)"));
        let whole = match dtype {
            DType::F16 => format!("kiln_f16_store_n(&{b}[cs[c]], &kt[c * {rows}], {rows});"),
            _ => format!("memcpy(&{b}[cs[c]], &kt[c * {rows}], {rows} * sizeof({b}[0]));"),
        };
        match mask {
            None => self.line(&whole),
            Some(m) => {
                let m_at =
                    |e: &Self, i: &str| e.access(m, &sum_expr([(m.strides[0], i), (m.strides[1], "c")].into_iter()));
                self.line("uint8_t all = 1;");
                let cond = m_at(self, "i");
                self.line(&format!("for (int i = 0; i < {rows}; i++) all &= (uint8_t)(({cond}) != 0);"));
                self.open("if (all)");
                self.line(&whole);
                self.close_else();
                self.open(&format!("for (int i = 0; i < {rows}; i++)"));
                let x = to_storage(dtype, &format!("kt[c * {rows} + i]"));
                self.line(&format!("if ({cond}) {b}[cs[c] + i] = {x};"));
                self.close();
                self.close();
            }
        }
        self.close();
        self.close_else();
        // Lane by lane in row-major order from the column starts (the offsets tile is not
        // built): every active lane checked, then every active lane written.
        let (_, n, _) = self.buf(acc.buffer);
        let val = self.a.repr(value).clone();
        let fail = self.oob(acc, "o");
        let o_lane = self.wrap(acc.offsets, "cs[c] + i");
        for pass in 0..2 {
            self.open(&format!("for (int i = 0; i < {rows}; i++)"));
            self.open(&format!("for (int c = 0; c < {cols}; c++)"));
            let active = mask.map_or("1".to_string(), |m| {
                self.access(m, &sum_expr([(m.strides[0], "i"), (m.strides[1], "c")].into_iter()))
            });
            self.open(&format!("if ({active})"));
            self.line(&format!("const int64_t o = {o_lane};"));
            if pass == 0 {
                self.line(&format!("if (o < 0 || o >= {n}) {fail}"));
            } else {
                let x = self.access(&val, &sum_expr([(val.strides[0], "i"), (val.strides[1], "c")].into_iter()));
                self.line(&format!("{b}[o] = {};", to_storage(dtype, &x)));
            }
            self.close();
            self.close();
            self.close();
        }
        self.close();
        self.close();
    }

    /// A store of rows at evenly spaced lanes (`s, s + d, s + 2d, ...`, see
    /// [`super::analysis::Analysis::strided_form`]: RoPE's even and odd elements). The offsets
    /// tile is not built: a first pass checks every active lane of each row not wholly in
    /// bounds, a second writes every active lane, rows in order and lanes in order (a later lane
    /// wins on a repeated offset, as in the interpreter).
    fn emit_store_strided(&mut self, acc: &Access, form: &Form, val: &Repr, mask: Option<&Repr>) {
        let (b, n, dtype) = self.buf(acc.buffer);
        let len = *self.k.ty(acc.offsets).shape.dims().last().unwrap_or(&1);
        let fail = self.oob(acc, "o");
        for pass in 0..2 {
            let (opened, coords) = self.open_rows(form, acc);
            let step = self.sym(form.coefs.last().expect("a strided form has a last dim"));
            self.line(&format!("const int64_t d = (int64_t)({step});"));
            let in_bounds = self.strided_row_in_bounds(acc, len);
            let active = mask.map_or("1".to_string(), |m| self.access(m, &self.lane(m, &coords, "j")));
            let o_lane = self.wrap(acc.offsets, "(uint64_t)s + (uint64_t)j * (uint64_t)d");
            if pass == 0 {
                self.open(&format!("if (!({in_bounds}))"));
                self.open(&format!("for (int j = 0; j < {len}; j++)"));
                self.open(&format!("if ({active})"));
                self.line(&format!("const int64_t o = {o_lane};"));
                self.line(&format!("if (o < 0 || o >= {n}) {fail}"));
                self.close();
                self.close();
                self.close();
            } else {
                let x = to_storage(dtype, &self.access(val, &self.lane(val, &coords, "j")));
                self.open(&format!("if ({in_bounds})"));
                self.line(&format!("for (int j = 0; j < {len}; j++) if ({active}) {b}[s + (int64_t)j * d] = {x};"));
                self.close_else();
                self.line(&format!("for (int j = 0; j < {len}; j++) if ({active}) {b}[{o_lane}] = {x};"));
                self.close();
            }
            self.close_n(opened);
        }
    }
}
