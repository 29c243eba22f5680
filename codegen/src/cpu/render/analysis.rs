//! Facts the C renderer computes about a verified kernel before it writes a line:
//!
//! - **Layouts** ([`Repr`]): where each value's elements live. Values with storage of their own
//!   are a C scalar or a C array named after the value; `broadcast`, `expand_dims`, constants
//!   and `reshape` of a contiguous tile are *views* (a storage root plus per-dim strides, 0
//!   where elements repeat), so they cost no copy. Loop results live in their loop's carried
//!   storage.
//! - **Offset forms** ([`Form`]): for `i32` / `u32` values, the value as
//!   `uniform + Σ_d coef_d · idx_d + Σ_g scale_g · root_g[strided idx]`, where the uniform part
//!   and the coefficients are symbolic scalar expressions ([`Sym`]) and the gathered terms are
//!   tiles read through views. A memory op whose offsets have last-dim coefficient 1 and no
//!   gathered term varying along the last dim reads or writes whole contiguous rows. All of it
//!   is arithmetic modulo 2^32 (done in `uint64_t` in C), which is exactly how the IR's wrapping
//!   adds and muls compose, so the form is the offsets' true value, not an approximation.
//! - **Needed values**: which instructions must be emitted. A value is needed when an emitted
//!   instruction reads it; memory ops, integer `div` / `rem` and loops are always emitted
//!   because they can fail. A memory op that uses a contiguous offset form needs the form's
//!   leaves instead of the offsets tile, so offsets tiles of contiguous accesses are never built.
//! - **Inlined values** ([`Analysis::inlined`]): an elementwise tile read exactly once, by an
//!   elementwise op of its own shape in its own block (or by a reduction whose operands walk the
//!   reduced and kept dims with one stride each), gets no storage: its per-element C becomes part
//!   of its user's expression, so a chain of elementwise ops is one loop instead of one
//!   materialised tile per op. Integer `i32` / `u32` tiles (offset forms name their storage),
//!   f16 / bf16 results (rounded a whole tile at a time) and `div` / `rem` (which check their
//!   divisor's storage) are never inlined.
//! - **Column-major loads** (`Analysis::compute_column_major`): a transposed float load (columns
//!   contiguous in the buffer, attention's `kᵀ`) read only as the right operand of `dot`s whose
//!   left operands have fewer than 16 rows (directly, or through a widening cast that views
//!   it) is stored by columns, as it is read, instead of being transposed into rows. (Stores
//!   with such offsets, a `yᵀ` tile, are transposed through registers into whole rows by the
//!   emitter.)
//! - **In-place loop updates** ([`Analysis::compute_in_place`]): a loop-carried float tile
//!   yielded as an elementwise update of itself (`acc + f(...)`), read by nothing else, is
//!   computed straight into the carried storage instead of a new tile copied back every
//!   iteration. Likewise a carried f32 tile yielded as `dot(a, b, acc)` whose `acc` is the
//!   carried tile or such an update of it read only by the dot (`Analysis::dot_in_place`):
//!   the update and the dot both write the carried storage.
//! - **Byte dots** ([`Analysis::byte_dot`]): an `i32` sum along a last axis of 4 of
//!   `Σ cast(u8 a) · cast(i8 b)` (the lanes of an x86 VNNI `vpdpbusd`) has its whole product
//!   tree inlined, `i32` nodes included, so the renderer sees the byte operands and can emit the
//!   dot instruction (see [`byte_dot_pairs`]); its operands are walked by a nest of their own.
//! - **Rows read in place by a dot** (`Analysis::compute_rows_in_place`): an f16 / f32 load of
//!   whole rows, at any starts, read only as the right operand of `dot`s, with a mask constant
//!   along rows and a zero `other`, is a table of row pointers; the dot converts as it loads.
//! - **Columns read in place by a dot** (`Analysis::compute_columns_in_place`): a column-major
//!   load (above) of f16 / f32 with a mask constant down each column and a zero `other` is a
//!   table of column pointers; the column dot converts as it loads (attention's `kᵀ`, f16 keys
//!   read where the pages hold them, through a widening cast when the query is f32).
//! - **Loads read in place** ([`Analysis::direct`]): a tile of whole rows at affine row starts,
//!   read only by elementwise loops, points into the buffer when all its lanes are active and in
//!   bounds, instead of being copied into a local array first.

use kiln_ir::{BinaryOp, DType, Inst, Kernel, Literal, Op, ReduceOp, UnaryOp, Value, ValueDef};

/// Where a value's elements live: element `idx` is `root[Σ idx_d · strides_d]`, or the scalar
/// `root` itself when `scalar_root`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Repr {
    /// The value whose C variable holds the storage (itself, a loop's block argument, or the
    /// value a view looks through).
    pub root: Value,
    pub scalar_root: bool,
    /// One stride per dim of the value's shape, in elements of the root.
    pub strides: Vec<i64>,
}

impl Repr {
    /// Whether the elements are the root array itself in row-major order.
    pub fn is_contiguous(&self, dims: &[u32]) -> bool {
        !self.scalar_root && self.strides == row_major(dims)
    }
}

/// Row-major strides of `dims`.
pub(crate) fn row_major(dims: &[u32]) -> Vec<i64> {
    let mut strides = vec![1i64; dims.len()];
    for i in (0..dims.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * i64::from(dims[i + 1]);
    }
    strides
}

/// Strides of `from` seen through a numpy broadcast to `to` (0 on new and size-1 dims).
pub(crate) fn broadcast_strides(strides: &[i64], from: &[u32], to: &[u32]) -> Vec<i64> {
    let offset = to.len() - from.len();
    (0..to.len()).map(|i| if i < offset || from[i - offset] == 1 { 0 } else { strides[i - offset] }).collect()
}

/// A scalar integer expression, evaluated in C as `uint64_t` (so modulo 2^64, which is
/// consistent with the IR's modulo-2^32 arithmetic).
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Sym {
    Const(i64),
    /// An `i32` or `u32` scalar value of the kernel.
    Val(Value),
    Add(Box<Sym>, Box<Sym>),
    Mul(Box<Sym>, Box<Sym>),
}

impl Sym {
    fn add(a: &Sym, b: &Sym) -> Sym {
        match (a, b) {
            (Sym::Const(x), Sym::Const(y)) => Sym::Const(x.wrapping_add(*y)),
            (Sym::Const(0), other) | (other, Sym::Const(0)) => other.clone(),
            _ => Sym::Add(Box::new(a.clone()), Box::new(b.clone())),
        }
    }

    fn mul(a: &Sym, b: &Sym) -> Sym {
        match (a, b) {
            (Sym::Const(x), Sym::Const(y)) => Sym::Const(x.wrapping_mul(*y)),
            (Sym::Const(0), _) | (_, Sym::Const(0)) => Sym::Const(0),
            (Sym::Const(1), other) | (other, Sym::Const(1)) => other.clone(),
            _ => Sym::Mul(Box::new(a.clone()), Box::new(b.clone())),
        }
    }

    fn size(&self) -> usize {
        match self {
            Sym::Const(_) | Sym::Val(_) => 1,
            Sym::Add(a, b) | Sym::Mul(a, b) => 1 + a.size() + b.size(),
        }
    }

    pub fn leaves(&self, out: &mut Vec<Value>) {
        match self {
            Sym::Const(_) => {}
            Sym::Val(v) => out.push(*v),
            Sym::Add(a, b) | Sym::Mul(a, b) => {
                a.leaves(out);
                b.leaves(out);
            }
        }
    }
}

/// A gathered term of a [`Form`]: `scale · (element of a stored tile, through `repr`)`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Gather {
    pub repr: Repr,
    /// Dtype of the root (`i32` is sign-extended, `u32` zero-extended).
    pub dtype: DType,
    pub scale: Sym,
}

/// An integer value as an affine function of its lane coordinates plus gathered terms.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Form {
    pub uniform: Sym,
    pub coefs: Vec<Sym>,
    pub gathers: Vec<Gather>,
}

impl Form {
    fn uniform(s: Sym, rank: usize) -> Form {
        Form { uniform: s, coefs: vec![Sym::Const(0); rank], gathers: Vec::new() }
    }

    fn is_uniform(&self) -> bool {
        self.gathers.is_empty() && self.coefs.iter().all(|c| *c == Sym::Const(0))
    }

    fn size(&self) -> usize {
        self.uniform.size()
            + self.coefs.iter().map(Sym::size).sum::<usize>()
            + self.gathers.iter().map(|g| g.scale.size() + 1).sum::<usize>()
    }

    fn scaled(&self, k: &Sym) -> Form {
        Form {
            uniform: Sym::mul(&self.uniform, k),
            coefs: self.coefs.iter().map(|c| Sym::mul(c, k)).collect(),
            gathers: self
                .gathers
                .iter()
                .map(|g| Gather { repr: g.repr.clone(), dtype: g.dtype, scale: Sym::mul(&g.scale, k) })
                .collect(),
        }
    }

    fn plus(&self, other: &Form) -> Form {
        let mut gathers = self.gathers.clone();
        gathers.extend(other.gathers.iter().cloned());
        Form {
            uniform: Sym::add(&self.uniform, &other.uniform),
            coefs: self.coefs.iter().zip(&other.coefs).map(|(a, b)| Sym::add(a, b)).collect(),
            gathers,
        }
    }

    /// Whether each row (last dim) of the value is `start + 0, 1, 2, ...`.
    pub fn contiguous_rows(&self) -> bool {
        match self.coefs.last() {
            Some(Sym::Const(1)) => self.gathers.iter().all(|g| g.repr.strides.last() == Some(&0)),
            _ => false,
        }
    }

    /// The values the form reads: its scalar leaves and the roots of its gathered terms.
    pub fn deps(&self) -> Vec<Value> {
        let mut out = Vec::new();
        self.uniform.leaves(&mut out);
        for c in &self.coefs {
            c.leaves(&mut out);
        }
        for g in &self.gathers {
            out.push(g.repr.root);
            g.scale.leaves(&mut out);
        }
        out
    }
}

/// Forms larger than this are not worth their C expression; the value becomes a gathered term.
const MAX_FORM_SIZE: usize = 48;

/// Everything the emitter looks up per value.
pub(crate) struct Analysis {
    pub reprs: Vec<Option<Repr>>,
    pub forms: Vec<Option<Form>>,
    pub needed: Vec<bool>,
    pub inlined: Vec<bool>,
    /// Loads read in place: see [`Analysis::compute_direct`].
    pub direct: Vec<bool>,
    /// Loads read in place only through broadcasts (the shared operand beside a larger tile,
    /// e.g. a GEMV's activations beside its weight rows): see [`Analysis::compute_direct`].
    pub shared: Vec<bool>,
    /// Reductions that are byte dots: see [`Analysis::compute_byte_dots`].
    pub byte_dot: Vec<bool>,
    /// Loads whose rows a `dot` reads where they lie: see [`Analysis::compute_rows_in_place`].
    pub rows_in_place: Vec<bool>,
    /// Column-major loads whose columns a `dot` reads where they lie: see
    /// [`Analysis::compute_columns_in_place`].
    pub columns_in_place: Vec<bool>,
    /// f16 / bf16 loads held as their 16-bit patterns, only copied to stores: see
    /// [`Analysis::compute_raw_copies`].
    pub raw: Vec<bool>,
}

impl Analysis {
    pub fn new(kernel: &Kernel) -> Analysis {
        let mut a = Analysis {
            reprs: vec![None; kernel.values.len()],
            forms: vec![None; kernel.values.len()],
            needed: vec![false; kernel.values.len()],
            inlined: vec![false; kernel.values.len()],
            direct: vec![false; kernel.values.len()],
            shared: vec![false; kernel.values.len()],
            byte_dot: vec![false; kernel.values.len()],
            rows_in_place: vec![false; kernel.values.len()],
            columns_in_place: vec![false; kernel.values.len()],
            raw: vec![false; kernel.values.len()],
        };
        for p in &kernel.params {
            if let kiln_ir::ParamKind::Scalar { value } = p.kind {
                a.define_own(kernel, value);
            }
        }
        for (inst, _) in kernel.walk() {
            a.layout_inst(kernel, inst);
        }
        a.compute_column_major(kernel);
        a.compute_needed(kernel);
        a.compute_inlined(kernel);
        a.compute_byte_dots(kernel);
        a.compute_in_place(kernel);
        a.compute_direct(kernel);
        a.compute_rows_in_place(kernel);
        a.compute_columns_in_place(kernel);
        a.compute_raw_copies(kernel);
        a
    }

    /// Marks the f16 / bf16 row loads whose every reader is a contiguous store of the same dtype
    /// (a copy: `paged_kv_gather`'s K and V rows), with `other` zero or no mask. Such a tile
    /// holds the 16-bit patterns as loaded (`uint16_t`) and the stores write them back as
    /// they are, instead of every element going to f32 on the way in and back on the way out.
    /// Measured on `paged_kv_gather` at batch 16, ctx 2048, 8 KV heads of 128 (2 Zen 5 cores,
    /// three interleaved pairs of a C swap, with the load's whole-row mask check below):
    /// 5283-5664 µs against 7091-8835 µs. The patterns are the values, so the copy is exact for
    /// every value, NaN payloads and signed zeros included.
    fn compute_raw_copies(&mut self, kernel: &Kernel) {
        let users = users(kernel);
        for (inst, _) in kernel.walk() {
            let data = kernel.inst(inst);
            let Op::Load { buffer, offsets, other, .. } = &data.op else { continue };
            let v = data.results[0];
            let Some(dtype) = kernel.buffer_dtype(*buffer) else { continue };
            let transposed = self.transposed_form(kernel, *offsets).is_some() && super::memory::transposes(dtype);
            let only_copied = !users[v.index()].is_empty()
                && users[v.index()].iter().all(|&user| match &kernel.inst(user).op {
                    Op::Store { buffer: to, offsets: at, value, mask } => {
                        *value == v
                            && *at != v
                            && *mask != Some(v)
                            && kernel.buffer_dtype(*to) == Some(dtype)
                            && self.contiguous_form(kernel, *at).is_some()
                    }
                    _ => false,
                });
            self.raw[v.index()] = matches!(dtype, DType::F16 | DType::BF16)
                && self.needed[v.index()]
                && !self.direct[v.index()]
                && !self.rows_in_place[v.index()]
                && !self.columns_in_place[v.index()]
                && self.repr(v).root == v
                && !transposed
                && self.contiguous_form(kernel, *offsets).is_some()
                && other.is_none_or(|o| is_float_zero(kernel, o))
                && only_copied;
        }
    }

    /// Marks the f16 / f32 loads of whole rows (at any starts, gathered ones included: the
    /// pages of a paged KV cache) read only as the right operand of `dot`s, with a mask that
    /// is constant along each row and `other` zero (or no mask). Such a tile is a table of row
    /// pointers, into the buffer or at a row of zeros for a masked-off row, and the dot
    /// converts each vector of the rhs as it loads it (`vcvtph2ps` on x86), instead of the
    /// load converting every row into an f32 copy that the dot reads back: attention's V
    /// (`P·V`), 16 KiB written and read again per 32-key tile at head_dim 128.
    fn compute_rows_in_place(&mut self, kernel: &Kernel) {
        let users = users(kernel);
        for (inst, _) in kernel.walk() {
            let data = kernel.inst(inst);
            let Op::Load { buffer, offsets, mask, other } = &data.op else { continue };
            let v = data.results[0];
            let Some(dtype) = kernel.buffer_dtype(*buffer) else { continue };
            let ty = kernel.ty(v);
            let transposed = self.transposed_form(kernel, *offsets).is_some() && super::memory::transposes(dtype);
            let written = writes(kernel, *buffer);
            let row_mask = mask.is_none_or(|m| self.repr(m).strides.get(1) == Some(&0));
            let zero_other = other.is_none_or(|o| is_float_zero(kernel, o));
            let only_rhs = !users[v.index()].is_empty()
                && users[v.index()].iter().all(|&user| {
                    matches!(kernel.inst(user).op, Op::Dot { lhs, rhs, acc } if rhs == v && lhs != v && acc != v)
                });
            self.rows_in_place[v.index()] = matches!(dtype, DType::F16 | DType::F32)
                && ty.shape.rank() == 2
                && self.needed[v.index()]
                && !self.direct[v.index()]
                && self.repr(v).root == v
                && self.repr(v).strides == row_major(ty.shape.dims())
                && !transposed
                && self.contiguous_form(kernel, *offsets).is_some()
                && !written
                && row_mask
                && zero_other
                && only_rhs;
        }
    }

    /// Marks the column-major loads (see [`Analysis::compute_column_major`]: a transposed
    /// f16 / f32 tile such as decode attention's `kᵀ`, read only by column dots) whose columns
    /// the dot reads where they lie: a mask constant down each column (or none), `other` zero,
    /// and a buffer no program writes. Each column is a contiguous run of the buffer (a key's
    /// row), so the tile is a table of column pointers, into the buffer or at a run of zeros
    /// for a masked-off column, and the dot converts f16 as it loads: no scratch tile is
    /// written and read back. Measured on attention at batch 16, ctx 2048, 32 heads of 128
    /// over 8 KV heads (2 Zen 5 cores, six interleaved pairs): 2087-2324 µs against
    /// 2219-2764 µs with the columns copied and converted first.
    fn compute_columns_in_place(&mut self, kernel: &Kernel) {
        for (inst, _) in kernel.walk() {
            let data = kernel.inst(inst);
            let Op::Load { buffer, offsets, mask, other } = &data.op else { continue };
            let v = data.results[0];
            let Some(dtype) = kernel.buffer_dtype(*buffer) else { continue };
            let dims = kernel.ty(v).shape.dims();
            let repr = self.repr(v);
            let column_major = dims.len() == 2 && repr.root == v && repr.strides == [1, i64::from(dims[0])];
            let column_mask = mask.is_none_or(|m| self.repr(m).strides.first() == Some(&0));
            self.columns_in_place[v.index()] = matches!(dtype, DType::F16 | DType::F32)
                && column_major
                && self.needed[v.index()]
                && self.transposed_form(kernel, *offsets).is_some()
                && !writes(kernel, *buffer)
                && column_mask
                && other.is_none_or(|o| is_float_zero(kernel, o));
        }
    }

    /// Gives column-major storage to the transposed loads (see [`Analysis::transposed_form`])
    /// read only as the right operand of `dot`s with few left rows: decode attention's `kᵀ`
    /// `[head_dim, keys]` against a KV group's query rows is then stored as the key rows it was
    /// read from, with no transpose, and the dot takes each output column as a dot product of a
    /// row of the left operand with a stored row (`Emitter::emit_dot`). A value with any other
    /// reader, or read against 16 left rows or more, keeps row-major storage: attention
    /// prefill's `kᵀ` against 64 query rows ran 1.37 ms by rows against 1.63 ms by columns
    /// (batch 1, 512 tokens, 9 heads of 64, 2 Zen 5 cores), and a GEMM's `xᵀ` `[32, 64]`
    /// against 64 weight rows would end each output in a horizontal sum of two vectors.
    fn compute_column_major(&mut self, kernel: &Kernel) {
        /// Left-operand rows from which a transposed right operand is stored by rows.
        const COLUMN_DOT_MAX_ROWS: u32 = 16;
        let users = users(kernel);
        for (inst, _) in kernel.walk() {
            let data = kernel.inst(inst);
            let Op::Load { buffer, offsets, .. } = &data.op else { continue };
            let v = data.results[0];
            let transposes = kernel.buffer_dtype(*buffer).is_some_and(super::memory::transposes);
            if !transposes || self.transposed_form(kernel, *offsets).is_none() || self.repr(v).root != v {
                continue;
            }
            // The dots read the load itself, or a widening cast of it that is a view of its
            // storage (an f16 `kᵀ` against f32 query rows): the view is stored as its root is.
            let views: Vec<Value> = users[v.index()]
                .iter()
                .filter_map(|&user| match kernel.inst(user).op {
                    Op::Cast { .. } => kernel.inst(user).results.first().copied().filter(|&c| self.repr(c).root == v),
                    _ => None,
                })
                .collect();
            let readers: Vec<Inst> = users[v.index()]
                .iter()
                .copied()
                .filter(|&user| !kernel.inst(user).results.first().is_some_and(|c| views.contains(c)))
                .chain(views.iter().flat_map(|c| users[c.index()].iter().copied()))
                .collect();
            let read_as_rhs = |user: Inst| match kernel.inst(user).op {
                Op::Dot { lhs, rhs, acc } => {
                    let of_tile = |x: Value| x == v || views.contains(&x);
                    of_tile(rhs) && !of_tile(lhs) && !of_tile(acc)
                }
                _ => false,
            };
            let only_rhs = readers.iter().all(|&user| read_as_rhs(user));
            // By columns when few rows of the left operand meet it (decode attention's q tile,
            // a KV group's 4 heads, against `kᵀ`): the transpose would cost more per output than
            // the column form's horizontal sums. Against many rows (a GEMM's weight tile, 64
            // rows against `xᵀ`) it is transposed into rows instead, for the register-blocked
            // dot that broadcasts the left operand against vectors of columns, where the column
            // form ends every output in a horizontal sum of a few vectors.
            let dims = kernel.ty(v).shape.dims();
            let lhs_rows = readers
                .iter()
                .filter_map(|&user| match kernel.inst(user).op {
                    Op::Dot { lhs, .. } => kernel.ty(lhs).shape.dims().first().copied(),
                    _ => None,
                })
                .max()
                .unwrap_or(0);
            if only_rhs && !readers.is_empty() && lhs_rows < COLUMN_DOT_MAX_ROWS {
                let rows = i64::from(dims[0]);
                let repr = Repr { root: v, scalar_root: false, strides: vec![1, rows] };
                for &c in &views {
                    self.reprs[c.index()] = Some(repr.clone());
                }
                self.reprs[v.index()] = Some(repr);
            }
        }
    }

    /// Marks the loads whose tile can be read where it lies in the buffer instead of copied into
    /// a local array: whole contiguous rows at row starts affine in the row coordinates, of a
    /// dtype held as stored (no conversion), read only by elementwise loops (which index rows
    /// through runtime strides, see [`super::tile::collapsed_nest_with`]). The load still checks
    /// bounds and the mask; only when every lane is active and in bounds does the tile point
    /// into the buffer, otherwise it is copied as before.
    fn compute_direct(&mut self, kernel: &Kernel) {
        let users = users(kernel);
        for (inst, _) in kernel.walk() {
            let data = kernel.inst(inst);
            let Op::Load { buffer, offsets, .. } = &data.op else { continue };
            let v = data.results[0];
            let dtype = kernel.buffer_dtype(*buffer);
            let held_as_stored = matches!(dtype, Some(DType::U8 | DType::I8 | DType::F32 | DType::I32 | DType::U32));
            let affine_rows = self
                .contiguous_form(kernel, *offsets)
                .is_some_and(|f| f.gathers.iter().all(|g| g.repr.strides.iter().all(|&s| s == 0)));
            // Another program (or this one) writing the buffer would change what the tile reads.
            let written = kernel.walk().iter().any(|&(i, _)| match &kernel.inst(i).op {
                Op::Store { buffer: b, .. } | Op::AtomicAdd { buffer: b, .. } => b == buffer,
                _ => false,
            });
            let ty = kernel.ty(v);
            if written
                || !held_as_stored
                || !affine_rows
                || ty.shape.rank() < 2
                || !self.needed[v.index()]
                || self.repr(v).root != v
                || users[v.index()].is_empty()
            {
                continue;
            }
            // Every reader is an elementwise loop: an emitted map, or an expression inlined into
            // one or into a byte dot (not into another reduction, which indexes its operands
            // with constant strides); or a reshape of whole rows read so (see `row_view`).
            // A broadcast of the tile along its size-1 dims (an activation row beside the weight
            // rows) is a view that maps index with the tile's runtime strides too.
            let read_by_maps = users[v.index()].iter().all(|&user| {
                self.feeds_a_map(kernel, &users, user)
                    || kernel.inst(user).results.first().is_some_and(|&r| {
                        let view = match kernel.inst(user).op {
                            Op::Reshape { .. } => self.row_view(kernel, r).is_some(),
                            Op::Broadcast { .. } => self.broadcast_view(kernel, r).is_some(),
                            _ => false,
                        };
                        view && !users[r.index()].is_empty()
                            && users[r.index()].iter().all(|&u| self.feeds_a_map(kernel, &users, u))
                    })
            });
            self.direct[v.index()] = read_by_maps;
            self.shared[v.index()] =
                read_by_maps && users[v.index()].iter().all(|&u| matches!(kernel.inst(u).op, Op::Broadcast { .. }));
        }
    }

    /// For a view `v` of a tile of its own storage with the same rank, that repeats the tile
    /// along some of its size-1 dims and is otherwise the tile as stored: per dim, whether it is
    /// such a repeated dim (stride 0).
    pub fn broadcast_view(&self, kernel: &Kernel, v: Value) -> Option<Vec<bool>> {
        let repr = self.repr(v);
        let root_dims = kernel.ty(repr.root).shape.dims();
        if repr.scalar_root || repr.root == v || root_dims.len() != kernel.ty(v).shape.rank() {
            return None;
        }
        let fixed = row_major(root_dims);
        let same = repr.strides.iter().zip(&fixed).zip(root_dims).all(|((&s, &f), &n)| s == f || (s == 0 && n == 1));
        same.then(|| repr.strides.iter().map(|&s| s == 0).collect())
    }

    /// For a view `v` of a rank-2 tile `[rows, len]` of its own storage (a load's whole rows):
    /// per dim of `v`, the number of rows one step moves (`Some`), or `None` for a dim that
    /// moves within a row. Only when the dims split into leading row dims (strides multiples of
    /// `len`) and trailing in-row dims that together stay within one row, so that element
    /// `(row, col)` is `row · row_stride + col` whatever the row stride is at run time.
    pub fn row_view(&self, kernel: &Kernel, v: Value) -> Option<Vec<Option<i64>>> {
        let repr = self.repr(v);
        let root_dims = kernel.ty(repr.root).shape.dims();
        if repr.scalar_root || repr.root == v || root_dims.len() != 2 {
            return None;
        }
        let len = i64::from(root_dims[1]);
        let dims = kernel.ty(v).shape.dims();
        let split = repr.strides.iter().position(|&s| s == 0 || s % len != 0).unwrap_or(dims.len());
        let span: i64 = dims[split..].iter().zip(&repr.strides[split..]).map(|(&n, &s)| (i64::from(n) - 1) * s).sum();
        if repr.strides[split..].iter().any(|&s| s < 0) || span >= len {
            return None;
        }
        Some(repr.strides.iter().enumerate().map(|(d, &s)| (d < split).then_some(s / len)).collect())
    }

    /// Whether `inst` is elementwise and its loop is an emitted map (itself or the map it is
    /// inlined into), or it is a byte dot (which walks its operands with runtime row strides
    /// too, see [`super::bytedot`]).
    fn feeds_a_map(&self, kernel: &Kernel, users: &[Vec<Inst>], inst: Inst) -> bool {
        let data = kernel.inst(inst);
        if matches!(data.op, Op::Reduce { .. }) && data.results.first().is_some_and(|r| self.byte_dot[r.index()]) {
            return true;
        }
        if !is_elementwise(kernel, &data.op) {
            return false;
        }
        let [result] = data.results[..] else { return false };
        if !self.inlined[result.index()] {
            return true;
        }
        match users[result.index()][..] {
            [user] => self.feeds_a_map(kernel, users, user),
            _ => false,
        }
    }

    /// Points a loop's yielded tile at the loop's carried storage when it is an elementwise
    /// update of that storage (`acc + f(...)`): each element reads its own carried element and
    /// nothing else reads the carried value, so writing the result in place is exact and saves
    /// a tile copy per iteration (see the module doc).
    fn compute_in_place(&mut self, kernel: &Kernel) {
        let users = users(kernel);
        for (inst, _) in kernel.walk() {
            let Op::For { body, .. } = &kernel.inst(inst).op else { continue };
            let block = kernel.block(*body);
            let Some(&yield_inst) = block.insts.last() else { continue };
            let Op::Yield { values } = &kernel.inst(yield_inst).op else { continue };
            for (i, &v) in values.iter().enumerate() {
                let carried = block.args[i + 1];
                let strides = row_major(kernel.ty(v).shape.dims());
                let in_place = Repr { root: carried, scalar_root: false, strides };
                if self.can_update_in_place(kernel, &users, &block.insts, yield_inst, carried, v) {
                    self.reprs[v.index()] = Some(in_place);
                } else if let Some(acc) = self.dot_in_place(kernel, &users, &block.insts, yield_inst, carried, v) {
                    self.reprs[v.index()] = Some(in_place.clone());
                    self.reprs[acc.index()] = Some(in_place);
                }
            }
        }
    }

    /// A loop-carried f32 tile yielded as `dot(a, b, acc)` where `acc` is the carried tile
    /// itself or an elementwise update of it read only by the dot (flash attention's
    /// `dot(p, v, acc · α)`): both are computed in the carried storage, the update in place and
    /// the dot accumulating onto it, instead of the update into a tile of its own, copied into
    /// the dot's result, copied back at the yield (three passes over `[rows, head_dim]` a
    /// tile). Returns the value whose storage becomes the carried one besides `v`: `acc`, or
    /// `carried` when the dot reads it directly. The dot's operands must not read the carried
    /// storage, which it overwrites as it goes.
    fn dot_in_place(
        &self,
        kernel: &Kernel,
        users: &[Vec<Inst>],
        body: &[Inst],
        yield_inst: Inst,
        carried: Value,
        v: Value,
    ) -> Option<Value> {
        let ValueDef::Result(def, _) = kernel.value(v).def else { return None };
        let Op::Dot { lhs, rhs, acc } = kernel.inst(def).op else { return None };
        let ty = kernel.ty(v);
        let simple = body.contains(&def)
            && ty.dtype == DType::F32
            && *kernel.ty(carried) == *ty
            && self.needed[v.index()]
            && self.repr(v).root == v
            && self.repr(carried).root == carried
            && self.repr(lhs).root != carried
            && self.repr(rhs).root != carried
            && users[v.index()][..] == [yield_inst];
        if !simple {
            return None;
        }
        if acc == carried {
            return (users[carried.index()][..] == [def]).then_some(carried);
        }
        let update = self.repr(acc).root == acc
            && self.repr(lhs).root != acc
            && self.repr(rhs).root != acc
            && self.is_elementwise_update(kernel, users, body, def, carried, acc);
        update.then_some(acc)
    }

    fn can_update_in_place(
        &self,
        kernel: &Kernel,
        users: &[Vec<Inst>],
        body: &[Inst],
        yield_inst: Inst,
        carried: Value,
        v: Value,
    ) -> bool {
        self.is_elementwise_update(kernel, users, body, yield_inst, carried, v)
    }

    /// Whether `v`, read only by `reader`, is an elementwise function of the loop-carried
    /// `carried` that reads element i of it for element i and is its only reader, so that it
    /// can be computed in the carried storage.
    fn is_elementwise_update(
        &self,
        kernel: &Kernel,
        users: &[Vec<Inst>],
        body: &[Inst],
        reader: Inst,
        carried: Value,
        v: Value,
    ) -> bool {
        let ty = kernel.ty(v);
        let ValueDef::Result(def, _) = kernel.value(v).def else { return false };
        let simple = is_elementwise(kernel, &kernel.inst(def).op)
            && body.contains(&def)
            && !ty.is_scalar()
            && ty.dtype.is_float()
            && !matches!(ty.dtype, DType::F16 | DType::BF16)
            && *kernel.ty(carried) == *ty
            && self.needed[v.index()]
            && !self.inlined[v.index()]
            && self.repr(v).root == v
            && self.repr(carried).root == carried
            && users[v.index()][..] == [reader];
        if !simple {
            return false;
        }
        // The instructions whose C is the one loop computing `v`.
        let mut tree = Vec::new();
        self.tree_insts(kernel, v, &mut tree);
        // Every reader of the carried storage (directly or through a view) is in that loop and
        // reads element i at element i.
        let own = row_major(ty.shape.dims());
        let mut leaves = Vec::new();
        self.tree_leaves(kernel, v, &mut leaves);
        if leaves.iter().any(|&l| self.repr(l).root == carried && self.repr(l).strides != own) {
            return false;
        }
        let mut pending = vec![carried];
        while let Some(w) = pending.pop() {
            for &user in &users[w.index()] {
                if tree.contains(&user) {
                    continue;
                }
                let data = kernel.inst(user);
                let views = matches!(data.op, Op::Broadcast { .. } | Op::ExpandDims { .. } | Op::Reshape { .. })
                    && data.results.iter().all(|&r| self.repr(r).root == carried);
                if !views {
                    return false;
                }
                pending.extend(data.results.iter().copied());
            }
        }
        true
    }

    /// The instructions of `v`'s inlined expression, `v`'s own included.
    fn tree_insts(&self, kernel: &Kernel, v: Value, out: &mut Vec<Inst>) {
        let ValueDef::Result(inst, _) = kernel.value(v).def else { return };
        out.push(inst);
        for operand in kernel.inst(inst).op.operands() {
            if self.inlined[operand.index()] {
                self.tree_insts(kernel, operand, out);
            }
        }
    }

    /// Marks the values that are computed inside their single user's loop (see the module doc).
    fn compute_inlined(&mut self, kernel: &Kernel) {
        let mut uses: Vec<Vec<Inst>> = vec![Vec::new(); kernel.values.len()];
        let mut block_of: Vec<Option<usize>> = vec![None; kernel.insts.len()];
        for (b, data) in kernel.blocks.iter().enumerate() {
            for &inst in &data.insts {
                block_of[inst.index()] = Some(b);
                for v in kernel.inst(inst).op.operands() {
                    uses[v.index()].push(inst);
                }
            }
        }
        // Pass 1: every condition but the reduction's strides.
        let mut reduce_users = Vec::new();
        for (i, data) in kernel.insts.iter().enumerate() {
            let Some(&v) = data.results.first() else { continue };
            let ty = kernel.ty(v);
            if !is_elementwise(kernel, &data.op)
                || ty.is_scalar()
                || matches!(ty.dtype, DType::I32 | DType::U32 | DType::F16 | DType::BF16)
                || !self.needed[v.index()]
                || self.repr(v).root != v
            {
                continue;
            }
            let [user] = uses[v.index()][..] else { continue };
            if block_of[user.index()] != block_of[i] || kernel.inst(user).results.len() != 1 {
                continue;
            }
            let user_op = &kernel.inst(user).op;
            if is_elementwise(kernel, user_op) && kernel.ty(kernel.inst(user).results[0]).shape == ty.shape {
                self.inlined[v.index()] = true;
            } else if let Op::Reduce { axis, .. } = user_op {
                self.inlined[v.index()] = true;
                reduce_users.push((v, *axis as usize));
            }
        }
        // Pass 2: a reduction walks each operand of the tree with one stride per part (outer,
        // reduced, inner); others keep their storage.
        for (v, axis) in reduce_users {
            let dims = kernel.ty(v).shape.dims().to_vec();
            let mut leaves = Vec::new();
            self.tree_leaves(kernel, v, &mut leaves);
            // A float reduction along the last axis sums whole vectors of a stored row (one row
            // buffer per output, refilled per row, measured slower: the stores do not forward to
            // the vector loads), so its operand keeps its storage.
            let last_axis_float = dims[axis + 1..].iter().all(|&d| d == 1) && kernel.ty(v).dtype.is_float();
            if last_axis_float || !leaves.iter().all(|&l| reduce_strides(&self.repr(l).strides, &dims, axis).is_some())
            {
                self.inlined[v.index()] = false;
            }
        }
    }

    /// Marks the `i32` sums along a last axis of 4 of `Σ cast(u8) · cast(i8)` products and
    /// inlines their product trees (adds, muls and casts read once, in the reduction's block), so
    /// the reduction is one loop over the byte operands.
    fn compute_byte_dots(&mut self, kernel: &Kernel) {
        let mut uses = vec![0usize; kernel.values.len()];
        let mut block_of: Vec<Option<usize>> = vec![None; kernel.insts.len()];
        for (b, data) in kernel.blocks.iter().enumerate() {
            for &inst in &data.insts {
                block_of[inst.index()] = Some(b);
                for v in kernel.inst(inst).op.operands() {
                    uses[v.index()] += 1;
                }
            }
        }
        for (i, data) in kernel.insts.iter().enumerate() {
            let Op::Reduce { op: ReduceOp::Sum, arg, axis } = data.op else { continue };
            let dims = kernel.ty(arg).shape.dims();
            let Some(&result) = data.results.first() else { continue };
            if kernel.ty(result).dtype != DType::I32 || axis as usize + 1 != dims.len() || dims[axis as usize] != 4 {
                continue;
            }
            let mut tree = Vec::new();
            if byte_dot_tree(kernel, arg, &mut tree).is_none() {
                continue;
            }
            let own = |v: Value| {
                let ValueDef::Result(def, _) = kernel.value(v).def else { return false };
                uses[v.index()] == 1
                    && block_of[def.index()].is_some()
                    && block_of[def.index()] == block_of[i]
                    && self.needed[v.index()]
                    && self.repr(v).root == v
            };
            if tree.iter().all(|&v| own(v)) {
                for v in tree {
                    self.inlined[v.index()] = true;
                }
                self.byte_dot[result.index()] = true;
            }
        }
    }

    /// The operands with storage that the expression of `v` reads, in evaluation order (`v`
    /// itself when it is not inlined).
    pub fn tree_leaves(&self, kernel: &Kernel, v: Value, out: &mut Vec<Value>) {
        if !self.inlined[v.index()] {
            out.push(v);
            return;
        }
        let ValueDef::Result(inst, _) = kernel.value(v).def else { unreachable!("inlined values are results") };
        for operand in kernel.inst(inst).op.operands() {
            self.tree_leaves(kernel, operand, out);
        }
    }

    /// Whether the kernel has any byte dot (its loads are then prefetched for an integer loop).
    pub fn has_byte_dot(&self) -> bool {
        self.byte_dot.iter().any(|&d| d)
    }

    pub fn repr(&self, v: Value) -> &Repr {
        self.reprs[v.index()].as_ref().expect("every value of a verified kernel has a layout")
    }

    /// The offset form of a memory op's offsets, when it reads whole contiguous rows.
    pub fn contiguous_form(&self, kernel: &Kernel, offsets: Value) -> Option<&Form> {
        if kernel.ty(offsets).shape.rank() == 0 {
            return None;
        }
        self.forms[offsets.index()].as_ref().filter(|f| f.contiguous_rows())
    }

    /// The offset form of a load's offsets whose rows are evenly spaced but not contiguous
    /// (`start, start + d, start + 2d, ...` for a uniform `d`): the even or odd elements of a
    /// row, or one element per row of a matrix, such as a column of per-row scales.
    pub fn strided_form(&self, kernel: &Kernel, offsets: Value) -> Option<&Form> {
        if kernel.ty(offsets).shape.rank() == 0 {
            return None;
        }
        self.forms[offsets.index()].as_ref().filter(|f| {
            !f.contiguous_rows()
                && !matches!(f.coefs.last(), Some(Sym::Const(0)))
                && f.gathers.iter().all(|g| g.repr.strides.last() == Some(&0))
        })
    }

    /// How a store that does not write contiguous rows reads its offsets through their form, if
    /// it does: a float store whose columns are contiguous, without gathered terms (`true`:
    /// transposed through registers, `Emitter::emit_store_transposed`), or any store of evenly
    /// strided rows (`false`, `Emitter::emit_store_strided`). Either way the offsets tile itself
    /// is never built.
    pub fn store_form(&self, kernel: &Kernel, inst: Inst) -> Option<(Form, bool)> {
        let Op::Store { buffer, offsets, .. } = &kernel.inst(inst).op else { return None };
        if self.contiguous_form(kernel, *offsets).is_some() {
            return None;
        }
        let float = kernel.buffer_dtype(*buffer).is_some_and(super::memory::transposes);
        if let Some(form) = self.transposed_form(kernel, *offsets).filter(|f| float && f.gathers.is_empty()) {
            return Some((form.clone(), true));
        }
        self.strided_form(kernel, *offsets).map(|f| (f.clone(), false))
    }

    /// The offset form of a rank-2 memory op's offsets whose *columns* are contiguous (each
    /// column `start, start + 1, ...` down the first dim): a transposed tile such as `kᵀ`.
    pub fn transposed_form(&self, kernel: &Kernel, offsets: Value) -> Option<&Form> {
        if kernel.ty(offsets).shape.rank() != 2 {
            return None;
        }
        self.forms[offsets.index()].as_ref().filter(|f| {
            f.coefs[0] == Sym::Const(1) && f.gathers.iter().all(|g| g.repr.strides[0] == 0) && !f.contiguous_rows()
        })
    }

    /// A value with storage of its own; integer values get an opaque form naming themselves.
    fn define_own(&mut self, kernel: &Kernel, v: Value) {
        let ty = kernel.ty(v);
        let repr = if ty.is_scalar() {
            Repr { root: v, scalar_root: true, strides: Vec::new() }
        } else {
            Repr { root: v, scalar_root: false, strides: row_major(ty.shape.dims()) }
        };
        self.set_opaque_form(kernel, v, &repr);
        self.reprs[v.index()] = Some(repr);
    }

    fn set_opaque_form(&mut self, kernel: &Kernel, v: Value, repr: &Repr) {
        let ty = kernel.ty(v);
        if !matches!(ty.dtype, DType::I32 | DType::U32) {
            return;
        }
        let form = if ty.is_scalar() {
            Form::uniform(Sym::Val(v), 0)
        } else {
            Form {
                uniform: Sym::Const(0),
                coefs: vec![Sym::Const(0); ty.shape.rank()],
                gathers: vec![Gather { repr: repr.clone(), dtype: ty.dtype, scale: Sym::Const(1) }],
            }
        };
        self.forms[v.index()] = Some(form);
    }

    /// A view of `v`: its layout is `repr`; its form, if computed, is `form`.
    fn define_view(&mut self, kernel: &Kernel, v: Value, repr: Repr, form: Option<Form>) {
        match form.filter(|f| f.size() <= MAX_FORM_SIZE) {
            Some(f) => self.forms[v.index()] = Some(f),
            None => self.set_opaque_form(kernel, v, &repr),
        }
        self.reprs[v.index()] = Some(repr);
    }

    fn form(&self, v: Value) -> Option<&Form> {
        self.forms[v.index()].as_ref()
    }

    fn layout_inst(&mut self, kernel: &Kernel, inst: Inst) {
        let data = kernel.inst(inst);
        let result = data.results.first().copied();
        match &data.op {
            Op::Broadcast { arg, shape } => {
                let Some(v) = result else { return };
                let from = kernel.ty(*arg).shape.dims().to_vec();
                let r = self.repr(*arg).clone();
                let repr = Repr {
                    root: r.root,
                    scalar_root: r.scalar_root,
                    strides: broadcast_strides(&r.strides, &from, shape.dims()),
                };
                let form = self.form(*arg).map(|f| Form {
                    uniform: f.uniform.clone(),
                    coefs: {
                        let offset = shape.rank() - from.len();
                        (0..shape.rank())
                            .map(|i| {
                                if i < offset || from[i - offset] == 1 {
                                    Sym::Const(0)
                                } else {
                                    f.coefs[i - offset].clone()
                                }
                            })
                            .collect()
                    },
                    gathers: f
                        .gathers
                        .iter()
                        .map(|g| Gather {
                            repr: Repr {
                                root: g.repr.root,
                                scalar_root: g.repr.scalar_root,
                                strides: broadcast_strides(&g.repr.strides, &from, shape.dims()),
                            },
                            dtype: g.dtype,
                            scale: g.scale.clone(),
                        })
                        .collect(),
                });
                self.define_view(kernel, v, repr, form);
            }
            Op::ExpandDims { arg, axis } => {
                let Some(v) = result else { return };
                let axis = *axis as usize;
                let mut repr = self.repr(*arg).clone();
                repr.strides.insert(axis, 0);
                let form = self.form(*arg).map(|f| {
                    let mut f = f.clone();
                    f.coefs.insert(axis, Sym::Const(0));
                    for g in &mut f.gathers {
                        g.repr.strides.insert(axis, 0);
                    }
                    f
                });
                self.define_view(kernel, v, repr, form);
            }
            Op::Reshape { arg, shape } => {
                let Some(v) = result else { return };
                let r = self.repr(*arg).clone();
                if r.is_contiguous(kernel.ty(*arg).shape.dims()) {
                    let repr = Repr { root: r.root, scalar_root: false, strides: row_major(shape.dims()) };
                    self.define_view(kernel, v, repr, None);
                } else if r.strides.iter().all(|&s| s == 0) {
                    // Every element is the same one: a splat stays a splat in any shape.
                    let repr = Repr { root: r.root, scalar_root: r.scalar_root, strides: vec![0; shape.rank()] };
                    let form = self
                        .form(*arg)
                        .filter(|f| f.is_uniform())
                        .map(|f| Form::uniform(f.uniform.clone(), shape.rank()));
                    self.define_view(kernel, v, repr, form);
                } else {
                    self.define_own(kernel, v);
                }
            }
            Op::Constant { value, ty } => {
                let Some(v) = result else { return };
                // A constant tile is a splat of one C scalar: no array, no fill loop.
                let repr = Repr { root: v, scalar_root: true, strides: vec![0; ty.shape.rank()] };
                let form = match (value, ty.dtype) {
                    (Literal::Int(i), DType::I32) => {
                        Some(Form::uniform(Sym::Const(i64::from(*i as i32)), ty.shape.rank()))
                    }
                    (Literal::Int(i), DType::U32) => {
                        Some(Form::uniform(Sym::Const(i64::from(*i as u32)), ty.shape.rank()))
                    }
                    _ => None,
                };
                self.reprs[v.index()] = Some(repr);
                self.forms[v.index()] = form;
            }
            Op::Arange { start, .. } => {
                let Some(v) = result else { return };
                self.define_own(kernel, v);
                self.forms[v.index()] = Some(Form {
                    uniform: Sym::Const(i64::from(*start)),
                    coefs: vec![Sym::Const(1)],
                    gathers: Vec::new(),
                });
            }
            Op::Binary { op, lhs, rhs } => {
                let Some(v) = result else { return };
                self.define_own(kernel, v);
                let (Some(a), Some(b)) = (self.form(*lhs).cloned(), self.form(*rhs).cloned()) else { return };
                let form = match op {
                    BinaryOp::Add => Some(a.plus(&b)),
                    BinaryOp::Sub => Some(a.plus(&b.scaled(&Sym::Const(-1)))),
                    BinaryOp::Mul if b.is_uniform() => Some(a.scaled(&b.uniform)),
                    BinaryOp::Mul if a.is_uniform() => Some(b.scaled(&a.uniform)),
                    BinaryOp::Shl => match b.uniform {
                        Sym::Const(s) if b.is_uniform() && (0..32).contains(&s) => Some(a.scaled(&Sym::Const(1 << s))),
                        _ => None,
                    },
                    BinaryOp::Mul
                    | BinaryOp::Div
                    | BinaryOp::Rem
                    | BinaryOp::Min
                    | BinaryOp::Max
                    | BinaryOp::And
                    | BinaryOp::Or
                    | BinaryOp::Xor
                    | BinaryOp::Shr => None,
                };
                // Scalars keep their own name: a scalar op is one C statement anyway.
                if kernel.ty(v).is_scalar() {
                    return;
                }
                if let Some(f) = form.filter(|f| f.size() <= MAX_FORM_SIZE) {
                    self.forms[v.index()] = Some(f);
                }
            }
            Op::Unary { op: UnaryOp::Neg, arg } => {
                let Some(v) = result else { return };
                self.define_own(kernel, v);
                if !kernel.ty(v).is_scalar() {
                    if let Some(f) = self.form(*arg).map(|f| f.scaled(&Sym::Const(-1))) {
                        self.forms[v.index()] = Some(f);
                    }
                }
            }
            Op::Cast { arg, to } => {
                let Some(v) = result else { return };
                let from = kernel.ty(*arg).dtype;
                // f16 and bf16 tiles are held as the f32 values they round to, so widening a
                // loaded one to f32 changes nothing: the result is a view of the load's storage
                // instead of a copy (a row of converted scales read again at once by a vector
                // load would also wait on the narrow stores that wrote it). Only loads: their
                // storage is never written again, unlike a loop's carried tiles.
                let of_load = matches!(kernel.value(*arg).def, ValueDef::Result(i, _) if matches!(kernel.inst(i).op, Op::Load { .. }));
                if *to == DType::F32 && matches!(from, DType::F16 | DType::BF16) && of_load && !kernel.ty(v).is_scalar()
                {
                    let repr = self.repr(*arg).clone();
                    if !repr.scalar_root {
                        self.define_view(kernel, v, repr, None);
                        return;
                    }
                }
                self.define_own(kernel, v);
                // i32 <-> u32 keeps the bits, so the value modulo 2^32 and its form.
                if !kernel.ty(v).is_scalar()
                    && matches!(from, DType::I32 | DType::U32)
                    && matches!(to, DType::I32 | DType::U32)
                {
                    if let Some(f) = self.form(*arg).cloned() {
                        self.forms[v.index()] = Some(f);
                    }
                }
            }
            Op::For { body, .. } => {
                // Block arguments own their storage; results live in the carried storage.
                let args = kernel.block(*body).args.clone();
                for &a in &args {
                    self.define_own(kernel, a);
                }
                for (i, &r) in data.results.iter().enumerate() {
                    let carried = args[i + 1];
                    let repr = self.repr(carried).clone();
                    self.reprs[r.index()] = Some(repr.clone());
                    self.set_opaque_form(kernel, r, &repr);
                }
            }
            Op::ProgramId { .. }
            | Op::NumPrograms { .. }
            | Op::Unary { .. }
            | Op::Compare { .. }
            | Op::Select { .. }
            | Op::Bitcast { .. }
            | Op::Reduce { .. }
            | Op::Dot { .. }
            | Op::Load { .. }
            | Op::Store { .. }
            | Op::AtomicAdd { .. }
            | Op::Prefetch { .. }
            | Op::Yield { .. } => {
                for &r in &data.results {
                    self.define_own(kernel, r);
                }
            }
        }
    }

    /// Marks needed values until nothing changes (loops feed yields back to their arguments).
    fn compute_needed(&mut self, kernel: &Kernel) {
        let order: Vec<Inst> = kernel.walk().into_iter().map(|(i, _)| i).collect();
        loop {
            let before = self.needed.iter().filter(|&&n| n).count();
            for &inst in order.iter().rev() {
                self.mark_inst(kernel, inst);
            }
            if self.needed.iter().filter(|&&n| n).count() == before {
                break;
            }
        }
    }

    fn mark(&mut self, v: Value) {
        self.needed[v.index()] = true;
    }

    fn mark_all(&mut self, vs: impl IntoIterator<Item = Value>) {
        for v in vs {
            self.mark(v);
        }
    }

    /// Whether the instruction is emitted even if no result is read: it can fail or write.
    pub fn is_effectful(kernel: &Kernel, inst: Inst) -> bool {
        match &kernel.inst(inst).op {
            Op::Load { .. }
            | Op::Store { .. }
            | Op::AtomicAdd { .. }
            | Op::Prefetch { .. }
            | Op::For { .. }
            | Op::Yield { .. } => true,
            Op::Binary { op: BinaryOp::Div | BinaryOp::Rem, lhs, .. } => kernel.ty(*lhs).dtype.is_int(),
            Op::ProgramId { .. }
            | Op::NumPrograms { .. }
            | Op::Arange { .. }
            | Op::Constant { .. }
            | Op::Unary { .. }
            | Op::Binary { .. }
            | Op::Compare { .. }
            | Op::Select { .. }
            | Op::Cast { .. }
            | Op::Bitcast { .. }
            | Op::Broadcast { .. }
            | Op::Reshape { .. }
            | Op::ExpandDims { .. }
            | Op::Reduce { .. }
            | Op::Dot { .. } => false,
        }
    }

    /// Whether `inst` is emitted.
    pub fn is_live(&self, kernel: &Kernel, inst: Inst) -> bool {
        Self::is_effectful(kernel, inst) || kernel.inst(inst).results.iter().any(|r| self.needed[r.index()])
    }

    /// Whether carried slot `i` of a loop (its init, argument, yield and result) is kept.
    pub fn slot_needed(&self, kernel: &Kernel, inst: Inst, i: usize) -> bool {
        let data = kernel.inst(inst);
        let Some(body) = data.op.body() else { return false };
        self.needed[data.results[i].index()] || self.needed[kernel.block(body).args[i + 1].index()]
    }

    fn mark_inst(&mut self, kernel: &Kernel, inst: Inst) {
        if !self.is_live(kernel, inst) {
            return;
        }
        let data = kernel.inst(inst);
        match &data.op {
            Op::Load { offsets, .. } | Op::Store { offsets, .. } => {
                // A load with contiguous columns reads its offsets through the form too (see
                // `emit_load_transposed`; it is taken for float loads only).
                let transposed = match &data.op {
                    Op::Load { buffer, .. } if kernel.buffer_dtype(*buffer).is_some_and(super::memory::transposes) => {
                        self.transposed_form(kernel, *offsets)
                    }
                    _ => None,
                };
                // A strided load reads its offsets through the form too (see `emit_load`), and
                // so do stores with contiguous columns or strided rows (`store_form`).
                let strided = match &data.op {
                    Op::Load { .. } if transposed.is_none() => self.strided_form(kernel, *offsets),
                    _ => None,
                };
                let stored = self.store_form(kernel, inst);
                let form_deps = self
                    .contiguous_form(kernel, *offsets)
                    .or(transposed)
                    .or(strided)
                    .or(stored.as_ref().map(|(f, _)| f))
                    .map(Form::deps);
                for v in data.op.operands() {
                    if v == *offsets {
                        match &form_deps {
                            Some(deps) => self.mark_all(deps.clone()),
                            None => self.mark(v),
                        }
                    } else {
                        self.mark(v);
                    }
                }
            }
            Op::For { start, end, step, init, body } => {
                self.mark_all([*start, *end, *step]);
                let body = *body;
                for (i, &v) in init.iter().enumerate() {
                    if self.slot_needed(kernel, inst, i) {
                        self.mark(v);
                        // Keep argument and result in step so the slot test above agrees.
                        self.mark(kernel.block(body).args[i + 1]);
                        self.mark(data.results[i]);
                        let yield_inst = kernel.block(body).insts.last().copied();
                        if let Some(y) = yield_inst {
                            if let Op::Yield { values } = &kernel.inst(y).op {
                                self.mark(values[i]);
                            }
                        }
                    }
                }
            }
            // Yield values are marked by their loop, slot by slot.
            Op::Yield { .. } => {}
            Op::ProgramId { .. }
            | Op::NumPrograms { .. }
            | Op::Arange { .. }
            | Op::Constant { .. }
            | Op::Unary { .. }
            | Op::Binary { .. }
            | Op::Compare { .. }
            | Op::Select { .. }
            | Op::Cast { .. }
            | Op::Bitcast { .. }
            | Op::Broadcast { .. }
            | Op::Reshape { .. }
            | Op::ExpandDims { .. }
            | Op::Reduce { .. }
            | Op::Dot { .. }
            | Op::AtomicAdd { .. }
            | Op::Prefetch { .. } => self.mark_all(data.op.operands()),
        }
        // A view reads its root's storage.
        for &r in &data.results {
            if self.needed[r.index()] {
                let root = self.repr(r).root;
                if root != r {
                    self.mark(root);
                }
            }
        }
    }
}

/// Whether `op` computes each element from the same element of its operands (and cannot fail).
pub(crate) fn is_elementwise(kernel: &Kernel, op: &Op) -> bool {
    match op {
        Op::Unary { .. } | Op::Compare { .. } | Op::Select { .. } | Op::Cast { .. } | Op::Bitcast { .. } => true,
        Op::Binary { op, lhs, .. } => !(matches!(op, BinaryOp::Div | BinaryOp::Rem) && kernel.ty(*lhs).dtype.is_int()),
        Op::ProgramId { .. }
        | Op::NumPrograms { .. }
        | Op::Arange { .. }
        | Op::Constant { .. }
        | Op::Broadcast { .. }
        | Op::Reshape { .. }
        | Op::ExpandDims { .. }
        | Op::Reduce { .. }
        | Op::Dot { .. }
        | Op::Load { .. }
        | Op::Store { .. }
        | Op::AtomicAdd { .. }
        | Op::Prefetch { .. }
        | Op::For { .. }
        | Op::Yield { .. } => false,
    }
}

/// The one stride of `dims[range]` walked in row-major order through `strides`, if there is
/// one (size-1 dims are free; an empty or all-size-1 range has stride 0).
fn merged_stride(strides: &[i64], dims: &[u32], range: std::ops::Range<usize>) -> Option<i64> {
    let mut inner: Option<i64> = None;
    for d in range.rev() {
        if dims[d] == 1 {
            continue;
        }
        match inner {
            None => inner = Some(strides[d]),
            Some(s) => {
                // The dim just inside `d` (the last non-1 one seen) must be `d`'s unit.
                let mut below = d + 1;
                while dims[below] == 1 {
                    below += 1;
                }
                if strides[d] != strides[below] * i64::from(dims[below]) {
                    return None;
                }
                inner = Some(s);
            }
        }
    }
    Some(inner.unwrap_or(0))
}

/// Strides `(outer, reduced, inner)` of an operand of a reduction along `axis` over `dims`, when
/// the dims before and after the axis each collapse to one stride.
pub(crate) fn reduce_strides(strides: &[i64], dims: &[u32], axis: usize) -> Option<(i64, i64, i64)> {
    let outer = merged_stride(strides, dims, 0..axis)?;
    let inner = merged_stride(strides, dims, axis + 1..dims.len())?;
    let reduced = if dims[axis] == 1 { 0 } else { strides[axis] };
    let inner_len: i64 = dims[axis + 1..].iter().map(|&d| i64::from(d)).product();
    // `outer` is the stride of the innermost outer dim; its unit in the flattened index is one
    // outer step, so it already is the per-`o` stride.
    Some((outer, reduced, if inner_len == 1 { 0 } else { inner }))
}

/// The `(u8, i8)` operand pairs of an `i32` expression `Σ cast(a) · cast(b)` (adds of products
/// of a `u8` and an `i8` tile each cast to `i32`, in either order), in operand order; `None`
/// when `v` is not of that form.
pub(crate) fn byte_dot_pairs(kernel: &Kernel, v: Value) -> Option<Vec<(Value, Value)>> {
    let mut tree = Vec::new();
    byte_dot_tree(kernel, v, &mut tree)
}

/// [`byte_dot_pairs`], also collecting the `i32` nodes of the tree (adds, muls, casts).
fn byte_dot_tree(kernel: &Kernel, v: Value, tree: &mut Vec<Value>) -> Option<Vec<(Value, Value)>> {
    let ValueDef::Result(inst, _) = kernel.value(v).def else { return None };
    if kernel.ty(v).dtype != DType::I32 {
        return None;
    }
    let Op::Binary { op, lhs, rhs } = kernel.inst(inst).op else { return None };
    tree.push(v);
    match op {
        BinaryOp::Add => {
            let mut pairs = byte_dot_tree(kernel, lhs, tree)?;
            pairs.extend(byte_dot_tree(kernel, rhs, tree)?);
            Some(pairs)
        }
        BinaryOp::Mul => {
            let widened = |w: Value| -> Option<Value> {
                let ValueDef::Result(cast, _) = kernel.value(w).def else { return None };
                let Op::Cast { arg, to: DType::I32 } = kernel.inst(cast).op else { return None };
                Some(arg)
            };
            let (a, b) = (widened(lhs)?, widened(rhs)?);
            tree.extend([lhs, rhs]);
            match (kernel.ty(a).dtype, kernel.ty(b).dtype) {
                (DType::U8, DType::I8) => Some(vec![(a, b)]),
                (DType::I8, DType::U8) => Some(vec![(b, a)]),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The instructions reading each value, indexed by value.
/// Whether any store or atomic of the kernel writes `buffer`.
fn writes(kernel: &Kernel, buffer: kiln_ir::Param) -> bool {
    kernel.walk().iter().any(|&(i, _)| match &kernel.inst(i).op {
        Op::Store { buffer: b, .. } | Op::AtomicAdd { buffer: b, .. } => *b == buffer,
        _ => false,
    })
}

/// Whether `v` is the float constant +0.
fn is_float_zero(kernel: &Kernel, v: Value) -> bool {
    matches!(kernel.value(v).def, ValueDef::Result(c, _)
        if matches!(kernel.inst(c).op, Op::Constant { value: Literal::Float(x), .. } if x.to_bits() == 0))
}

fn users(kernel: &Kernel) -> Vec<Vec<Inst>> {
    let mut users: Vec<Vec<Inst>> = vec![Vec::new(); kernel.values.len()];
    for (inst, _) in kernel.walk() {
        for v in kernel.inst(inst).op.operands() {
            users[v.index()].push(inst);
        }
    }
    users
}
