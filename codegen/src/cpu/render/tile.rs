//! Whole-tile C: loop nests over shapes, elementwise maps, copies, reductions and `dot`.
//!
//! A loop nest walks the result in row-major order and reads each operand through its view
//! strides; adjacent dims that every operand walks contiguously are merged, so an elementwise op
//! on contiguous tiles is one counted loop that the C compiler vectorizes. Reductions and `dot`
//! use the target's GCC vector type explicitly: partial sums in vector registers along a
//! reduced last axis, and a register-blocked `dot` whose inner loop broadcasts one lhs element
//! against a vector of rhs columns (loop order i-k-j, so every output sums its products in k
//! order, each step rounded to f32). A column-major rhs (a transposed load stored as read, see
//! [`super::analysis::Analysis`]) is instead dotted row by column a vector of k at a time, the
//! lanes summed at the end (reassociated, as the backend allows for `dot`).

use super::analysis::{row_major, Repr};
use super::ops::{held_type, round_fn};
use super::Emitter;
use kiln_ir::{ReduceOp, Value, ValueDef};

/// Where a `dot` reads its right operand `[k, n]`: a C array, or a table of pointers into
/// memory (`Analysis::compute_rows_in_place`, `Analysis::compute_columns_in_place`), converted
/// as read when f16. A row-major operand's table has a pointer per row (`[k]`), a column-major
/// one's a pointer per column (`[n]`); `vector` / `element` read the first, `column_vector` /
/// `column_element` the second.
pub(crate) enum Rhs {
    Array(String),
    Rows { table: String, f16: bool },
}

impl Rhs {
    /// A vector of `KILN_VL` floats from row `k`, columns from `col`, of a `[_, n]` operand.
    fn vector(&self, k: &str, col: &str, n: u32) -> String {
        match self {
            Rhs::Array(b) => format!("kiln_loadv(&{b}[{k} * {n} + {col}])"),
            Rhs::Rows { table, f16: true } => format!("kiln_f16_loadv(&{table}[{k}][{col}])"),
            Rhs::Rows { table, f16: false } => format!("kiln_loadv(&{table}[{k}][{col}])"),
        }
    }

    /// Element (`k`, `col`) of a `[_, n]` operand, as held.
    fn element(&self, k: &str, col: &str, n: u32) -> String {
        match self {
            Rhs::Array(b) => format!("{b}[{k} * {n} + {col}]"),
            Rhs::Rows { table, f16: true } => format!("kiln_f16_value({table}[{k}][{col}])"),
            Rhs::Rows { table, f16: false } => format!("{table}[{k}][{col}]"),
        }
    }

    /// A vector of `KILN_VL` floats from column `col`, rows from `kk`, of a column-major
    /// `[k, _]` operand.
    fn column_vector(&self, col: &str, kk: &str, k: u32) -> String {
        match self {
            Rhs::Array(b) => format!("kiln_loadv(&{b}[({col}) * {k} + {kk}])"),
            Rhs::Rows { table, f16: true } => format!("kiln_f16_loadv(&{table}[{col}][{kk}])"),
            Rhs::Rows { table, f16: false } => format!("kiln_loadv(&{table}[{col}][{kk}])"),
        }
    }

    /// Element (`kk`, `col`) of a column-major `[k, _]` operand, as held.
    fn column_element(&self, col: &str, kk: &str, k: u32) -> String {
        match self {
            Rhs::Array(b) => format!("{b}[({col}) * {k} + {kk}]"),
            Rhs::Rows { table, f16: true } => format!("kiln_f16_value({table}[{col}][{kk}])"),
            Rhs::Rows { table, f16: false } => format!("{table}[{col}][{kk}]"),
        }
    }
}

/// A loop nest: C `for` headers and, per operand, the index expression inside the nest.
pub(crate) struct Nest {
    pub headers: Vec<String>,
    pub index: Vec<String>,
    /// Loop variable and trip count of the innermost loop, if there is a loop.
    pub innermost: Option<(String, u64)>,
    /// Per operand, its constant stride along the innermost loop (`None` when runtime).
    pub inner_strides: Vec<Option<i64>>,
}

/// Builds a nest over `dims` for operands with the given strides, merging dims that every
/// operand walks contiguously and dropping dims of size 1.
pub(crate) fn collapsed_nest(dims: &[u32], strides: &[Vec<i64>], var: &str) -> Nest {
    collapsed_nest_with(dims, strides, &[], var)
}

/// [`collapsed_nest`] where some operands have runtime strides: `runtime[k]`, when present,
/// names per dim the C variable holding operand `k`'s stride (`None` for a dim whose constant
/// stride in `strides` holds). Dims are never merged across a runtime stride.
pub(crate) fn collapsed_nest_with(
    dims: &[u32],
    strides: &[Vec<i64>],
    runtime: &[Option<Vec<Option<String>>>],
    var: &str,
) -> Nest {
    let runtime_at = |k: usize, d: usize| runtime.get(k).and_then(|r| r.as_ref()).and_then(|r| r[d].clone());
    // Groups of merged dims: (extent, innermost merged dim, stride of that dim per operand).
    let mut groups: Vec<(u64, usize, Vec<i64>)> = Vec::new();
    for (d, &n) in dims.iter().enumerate() {
        if n == 1 {
            continue;
        }
        let here: Vec<i64> = strides.iter().map(|s| s[d]).collect();
        if let Some((extent, inner_dim, inner)) = groups.last_mut() {
            let fixed = (0..strides.len()).all(|k| runtime_at(k, d).is_none() && runtime_at(k, *inner_dim).is_none());
            if fixed && inner.iter().zip(&here).all(|(&outer, &s)| outer == s * i64::from(n)) {
                *extent *= u64::from(n);
                *inner_dim = d;
                *inner = here;
                continue;
            }
        }
        groups.push((u64::from(n), d, here));
    }
    let vars: Vec<String> = (0..groups.len()).map(|g| format!("{var}{g}")).collect();
    let headers = groups
        .iter()
        .zip(&vars)
        .map(|((extent, _, _), v)| format!("for (int {v} = 0; {v} < {extent}; {v}++)"))
        .collect();
    let index = (0..strides.len())
        .map(|k| {
            let fixed = sum_expr(
                groups
                    .iter()
                    .zip(&vars)
                    .filter(|((_, d, _), _)| runtime_at(k, *d).is_none())
                    .map(|((_, _, s), v)| (s[k], v.as_str())),
            );
            let dynamic: Vec<String> = groups
                .iter()
                .zip(&vars)
                .filter_map(|((_, d, _), v)| runtime_at(k, *d).map(|s| format!("(int64_t){v} * {s}")))
                .collect();
            if dynamic.is_empty() {
                fixed
            } else {
                format!("{} + {fixed}", dynamic.join(" + "))
            }
        })
        .collect();
    let innermost = groups.last().zip(vars.last()).map(|((extent, _, _), v)| (v.clone(), *extent));
    let inner_strides = (0..strides.len())
        .map(|k| match groups.last() {
            Some((_, d, s)) if runtime_at(k, *d).is_none() => Some(s[k]),
            Some(_) => None,
            None => Some(0),
        })
        .collect();
    Nest { headers, index, innermost, inner_strides }
}

/// `Σ stride · var` as C, `0` when empty.
pub(crate) fn sum_expr<'a>(terms: impl Iterator<Item = (i64, &'a str)>) -> String {
    let parts: Vec<String> = terms
        .filter(|(s, _)| *s != 0)
        .map(|(s, v)| if s == 1 { v.to_string() } else { format!("{v} * {s}") })
        .collect();
    if parts.is_empty() {
        "0".to_string()
    } else {
        parts.join(" + ")
    }
}

impl Emitter<'_> {
    /// Element `index` of a value seen through `repr`.
    pub(crate) fn access(&self, repr: &Repr, index: &str) -> String {
        if repr.scalar_root {
            self.name(repr.root)
        } else {
            format!("{}[{index}]", self.name(repr.root))
        }
    }

    /// Opens the loops of `nest`; returns how many to close.
    pub(crate) fn open_nest(&mut self, nest: &Nest) -> usize {
        for h in &nest.headers {
            self.open(h);
        }
        nest.headers.len()
    }

    pub(crate) fn close_n(&mut self, n: usize) {
        for _ in 0..n {
            self.close();
        }
    }

    /// Declares the storage of a value that owns it (a C scalar or an aligned array).
    pub(crate) fn declare(&mut self, v: Value) {
        let ty = self.k.ty(v).clone();
        // A raw copy's tile holds 16-bit patterns (`Analysis::compute_raw_copies`).
        let t = if self.a.raw[v.index()] { "uint16_t" } else { held_type(ty.dtype) };
        if self.a.repr(v).scalar_root {
            self.line(&format!("{t} {} KILN_UNUSED = 0;", self.name(v)));
        } else {
            self.line(&format!("{t} {}[{}] __attribute__((aligned(64)));", self.name(v), ty.shape.numel()));
        }
    }

    /// `out = f(operands)` elementwise for the elementwise instruction defining `out`, with
    /// `out` freshly declared and its inlined operands computed in the same loop; rounds f16 /
    /// bf16 results.
    pub(crate) fn emit_map(&mut self, out: Value) {
        let ValueDef::Result(inst, _) = self.k.value(out).def else { unreachable!("maps are results") };
        let (operands, round, f) = self.elementwise(inst);
        // An in-place loop update writes its loop's carried storage, declared before the loop.
        if self.a.repr(out).root == out {
            self.declare(out);
        }
        let dims = self.k.ty(out).shape.dims().to_vec();
        let out_repr = self.a.repr(out).clone();
        let mut leaves = Vec::new();
        for &o in &operands {
            self.a.tree_leaves(self.k, o, &mut leaves);
        }
        let mut strides = vec![out_repr.strides.clone()];
        strides.extend(leaves.iter().map(|&l| self.a.repr(l).strides.clone()));
        // Loads read in place index their rows through the row strides they set at run time.
        let mut runtime = vec![None];
        runtime.extend(leaves.iter().map(|&l| self.leaf_runtime_strides(l)));
        let nest = collapsed_nest_with(&dims, &strides, &runtime, "i");
        if self.emit_vector_map(out, inst, &operands, &nest) {
            if round {
                self.emit_round(out);
            }
            return;
        }
        let n = self.open_nest(&nest);
        let mut pos = 1;
        let args: Vec<String> = operands.iter().map(|&o| self.tree_expr(o, &nest.index, &mut pos)).collect();
        let target = self.access(&out_repr, &nest.index[0]);
        self.line(&format!("{target} = {};", f(&args)));
        self.close_n(n);
        if round {
            self.emit_round(out);
        }
    }

    /// The runtime row strides a loop nest indexes the leaf `l` with: those of a load read in
    /// place, or of a reshape of one (a step along a row dim of the view moves that many rows);
    /// `None` for a leaf with fixed strides.
    pub(crate) fn leaf_runtime_strides(&self, l: Value) -> Option<Vec<Option<String>>> {
        if self.a.direct[l.index()] {
            return Some(self.runtime_strides(l));
        }
        let root = self.a.repr(l).root;
        if root == l || !self.a.direct[root.index()] {
            return None;
        }
        if let Some(repeated) = self.a.broadcast_view(self.k, l) {
            // The repeated dims step by 0 (their fixed stride); the others as the tile does.
            let root_strides = self.runtime_strides(root);
            return Some(root_strides.into_iter().zip(repeated).map(|(s, r)| if r { None } else { s }).collect());
        }
        let rows = self.a.row_view(self.k, l).expect("views of loads read in place are row or broadcast views");
        let s0 = format!("{}_s0", self.name(root));
        Some(rows.into_iter().map(|r| r.map(|r| format!("((int64_t){r} * {s0})"))).collect())
    }

    /// The C variables holding the row strides of a load read in place (the last dim is
    /// contiguous and keeps its constant stride).
    pub(crate) fn runtime_strides(&self, v: Value) -> Vec<Option<String>> {
        let rank = self.k.ty(v).shape.rank();
        (0..rank).map(|d| (d + 1 < rank).then(|| format!("{}_s{d}", self.name(v)))).collect()
    }

    /// Rounds a freshly computed float value to its dtype, if it is f16 or bf16.
    pub(crate) fn emit_round(&mut self, v: Value) {
        let ty = self.k.ty(v).clone();
        let Some(f) = round_fn(ty.dtype) else { return };
        let name = self.name(v);
        if self.a.repr(v).scalar_root {
            self.line(&format!("{name} = {f}({name});"));
        } else {
            self.line(&format!("{f}_n({name}, {});", ty.shape.numel()));
        }
    }

    /// Copies the elements of `src` (shape `dims`, through `repr`) into the own storage `dst`.
    pub(crate) fn emit_copy(&mut self, dst: &str, dst_scalar: bool, dims: &[u32], src: &Repr) {
        if dst_scalar {
            let s = self.access(src, "0");
            self.line(&format!("{dst} = {s};"));
            return;
        }
        let nest = collapsed_nest(dims, &[row_major(dims), src.strides.clone()], "i");
        let n = self.open_nest(&nest);
        let s = self.access(src, &nest.index[1]);
        self.line(&format!("{dst}[{}] = {s};", nest.index[0]));
        self.close_n(n);
    }

    /// A C array holding `v` row-major: its root when already so, else a fresh copy.
    pub(crate) fn contiguous(&mut self, v: Value) -> String {
        let ty = self.k.ty(v).clone();
        let repr = self.a.repr(v).clone();
        if repr.is_contiguous(ty.shape.dims()) {
            return self.name(repr.root);
        }
        let t = self.fresh("t");
        self.line(&format!("{} {t}[{}] __attribute__((aligned(64)));", held_type(ty.dtype), ty.shape.numel()));
        self.emit_copy(&t, false, ty.shape.dims(), &repr);
        t
    }

    pub(crate) fn emit_reduce(&mut self, out: Value, op: ReduceOp, arg: Value, axis: usize) {
        if self.a.byte_dot[out.index()] {
            self.emit_byte_dot(out, arg);
            return;
        }
        let ty = self.k.ty(arg).clone();
        let dtype = ty.dtype;
        let dims = ty.shape.dims();
        let outer: u64 = dims[..axis].iter().map(|&d| u64::from(d)).product();
        let len = u64::from(dims[axis]);
        let inner: u64 = dims[axis + 1..].iter().map(|&d| u64::from(d)).product();
        // An inlined operand is computed where it is read: element (o, k, i) of the operands with
        // storage is at `o · outer + k · reduced + i · inner` of each.
        let fused = self.a.inlined[arg.index()];
        let x = if fused { String::new() } else { self.contiguous(arg) };
        let mut leaves = Vec::new();
        if fused {
            self.a.tree_leaves(self.k, arg, &mut leaves);
        }
        let leaf_strides: Vec<(i64, i64, i64)> = leaves
            .iter()
            .map(|&l| {
                super::analysis::reduce_strides(&self.a.repr(l).strides, dims, axis)
                    .expect("the analysis inlines only operands with reduction strides")
            })
            .collect();
        let elem = |e: &Self, o: &str, k: &str, i: &str| -> String {
            if !fused {
                return format!("{x}[({o} * {len} + {k}) * {inner} + {i}]");
            }
            let index: Vec<String> =
                leaf_strides.iter().map(|&(so, sk, si)| sum_expr([(so, o), (sk, k), (si, i)].into_iter())).collect();
            e.tree_expr(arg, &index, &mut 0)
        };
        self.declare(out);
        let o_name = self.name(out);
        let out_scalar = self.a.repr(out).scalar_root;
        let at = |o: &str, i: &str| if out_scalar { o_name.clone() } else { format!("{o_name}[{o} * {inner} + {i}]") };
        let t = held_type(dtype);
        let vl = u64::from(self.target.vector_bytes / 4);
        let float = dtype.is_float();
        // The combining step, as C of the accumulator `acc` and an element `x`.
        let combine = |acc: &str, e: &str| -> String {
            match (op, float) {
                (ReduceOp::Sum, true) => format!("{acc} + {e}"),
                (ReduceOp::Max, true) => format!("kiln_maxf({acc}, {e})"),
                (ReduceOp::Sum, false) => format!("({t})((uint32_t){acc} + (uint32_t){e})"),
                (ReduceOp::Max, false) => format!("({e} > {acc} ? {e} : {acc})"),
            }
        };
        let empty = match (op, float) {
            (ReduceOp::Sum, true) => "0.0f".to_string(),
            (ReduceOp::Max, true) => "(-INFINITY)".to_string(),
            (ReduceOp::Sum, false) => "0".to_string(),
            (ReduceOp::Max, false) => super::ops::int_literal(dtype, dtype.int_range().map_or(0, |r| r.0)),
        };
        if len == 0 {
            let nest = collapsed_nest(&[(outer * inner) as u32], &[vec![1]], "i");
            let n = self.open_nest(&nest);
            let target = if out_scalar { o_name.clone() } else { format!("{o_name}[{}]", nest.index[0]) };
            self.line(&format!("{target} = {empty};"));
            self.close_n(n);
            return;
        }
        if inner == 1 && float {
            // Reduce along the last axis: vector partial results, then across the vector.
            let (vop, hop) = match op {
                ReduceOp::Sum => ("+", "kiln_hsumv"),
                ReduceOp::Max => ("max", "kiln_hmaxv"),
            };
            let body = len - len % vl;
            self.open(&format!("for (int o = 0; o < {outer}; o++)"));
            self.line(&format!("const float *x = &{x}[o * {len}];"));
            if body > 0 {
                self.line("kiln_f32v acc = kiln_loadv(x);");
                self.open(&format!("for (int k = {vl}; k < {body}; k += {vl})"));
                match vop {
                    "+" => self.line("acc += kiln_loadv(x + k);"),
                    _ => self.line("acc = kiln_maxv(acc, kiln_loadv(x + k));"),
                }
                self.close();
                self.line(&format!("float s = {hop}(acc);"));
            } else {
                self.line("float s = x[0];");
            }
            let tail_start = if body > 0 { body } else { 1 };
            self.open(&format!("for (int k = {tail_start}; k < {len}; k++)"));
            self.line(&format!("s = {};", combine("s", "x[k]")));
            self.close();
            self.line(&format!("{} = s;", at("o", "0")));
            self.close();
        } else {
            // Reduce along an inner axis (or integers): the innermost loop runs over `inner`
            // contiguous outputs, which vectorizes without reassociating anything.
            self.open(&format!("for (int o = 0; o < {outer}; o++)"));
            self.open(&format!("for (int i = 0; i < {inner}; i++)"));
            let first = match op {
                ReduceOp::Sum => empty.clone(),
                ReduceOp::Max => elem(self, "o", "0", "i"),
            };
            self.line(&format!("{} = {first};", at("o", "i")));
            self.close();
            let k0 = match op {
                ReduceOp::Sum => 0,
                ReduceOp::Max => 1,
            };
            self.open(&format!("for (int k = {k0}; k < {len}; k++)"));
            self.open(&format!("for (int i = 0; i < {inner}; i++)"));
            let e = elem(self, "o", "k", "i");
            let acc = at("o", "i");
            self.line(&format!("{acc} = {};", combine(&acc, &e)));
            self.close();
            self.close();
            self.close();
        }
        self.emit_round(out);
    }

    pub(crate) fn emit_dot(&mut self, out: Value, lhs: Value, rhs: Value, acc: Value) {
        let l = self.k.ty(lhs).shape.dims().to_vec();
        let r = self.k.ty(rhs).shape.dims().to_vec();
        let (m, k, n) = (l[0], l[1], r[1]);
        let float = self.k.ty(lhs).dtype.is_float();
        let rhs_repr = self.a.repr(rhs).clone();
        // Column-major: the load itself, or a widening cast that views it.
        if float && !rhs_repr.scalar_root && rhs_repr.strides == [1, i64::from(k)] {
            let root = rhs_repr.root;
            let b = if self.a.columns_in_place[root.index()] {
                let f16 = self.k.ty(root).dtype == kiln_ir::DType::F16;
                Some(Rhs::Rows { table: format!("{}_rows", self.name(root)), f16 })
            } else {
                (root == rhs).then(|| Rhs::Array(self.name(rhs)))
            };
            if let Some(b) = b {
                let a = self.contiguous(lhs);
                let o = self.dot_output(out, acc, (m, n));
                self.emit_dot_columns(&o, &a, &b, (m, k, n));
                return;
            }
        }
        let a = self.contiguous(lhs);
        let b = if self.a.rows_in_place[rhs.index()] {
            let f16 = self.k.ty(rhs).dtype == kiln_ir::DType::F16;
            Rhs::Rows { table: format!("{}_rows", self.name(rhs)), f16 }
        } else {
            Rhs::Array(self.contiguous(rhs))
        };
        let o = self.dot_output(out, acc, (m, n));
        let vl = self.target.vector_bytes / 4;
        if float && n % vl == 0 {
            self.emit_dot_vector(&o, &a, &b, (m, k, n), vl);
            return;
        }
        self.open(&format!("for (int i = 0; i < {m}; i++)"));
        self.open(&format!("for (int k = 0; k < {k}; k++)"));
        if float {
            self.line(&format!("const float a = {a}[i * {k} + k];"));
            self.open(&format!("for (int j = 0; j < {n}; j++)"));
            self.line(&format!("{o}[i * {n} + j] = {o}[i * {n} + j] + a * {};", b.element("k", "j", n)));
        } else {
            // 8-bit products are exact in int32; the sum wraps like the interpreter's i32.
            self.line(&format!("const int32_t a = (int32_t){a}[i * {k} + k];"));
            self.open(&format!("for (int j = 0; j < {n}; j++)"));
            self.line(&format!(
                "{o}[i * {n} + j] = (int32_t)((uint32_t){o}[i * {n} + j] + (uint32_t)(a * (int32_t){}));",
                b.element("k", "j", n)
            ));
        }
        self.close();
        self.close();
        self.close();
    }

    /// The C array a `dot` accumulates into, holding `acc` on return: `out`'s own, declared and
    /// filled with `acc`, or, for a dot the analysis computes in a loop's carried storage (its
    /// `dot_in_place`, where `acc` lives too), that storage as it is.
    fn dot_output(&mut self, out: Value, acc: Value, (m, n): (u32, u32)) -> String {
        let out_repr = self.a.repr(out).clone();
        let acc_repr = self.a.repr(acc).clone();
        if out_repr.root != out {
            debug_assert_eq!(out_repr, acc_repr, "a dot in place accumulates onto its own storage");
            return self.name(out_repr.root);
        }
        self.declare(out);
        let o = self.name(out);
        self.emit_copy(&o, false, &[m, n], &acc_repr);
        o
    }

    /// f32 `dot` with a column-major right operand (`b[j * k + kk]`, see the analysis's
    /// `compute_column_major`): each output is the dot product of a row of `a` with a stored
    /// column, both contiguous along `k`. `mr` rows of `a` by `nc` columns of `b` are summed a
    /// vector of `k` at a time in registers (each loaded `b` vector serves `mr` rows, each `a`
    /// vector `nc` columns), then reduced across lanes, four rows at once where they can be.
    fn emit_dot_columns(&mut self, o: &str, a: &str, b: &Rhs, (m, k, n): (u32, u32, u32)) {
        let vl = self.target.vector_bytes / 4;
        if !k.is_multiple_of(vl) || self.target.vector_bytes < 16 {
            self.open(&format!("for (int i = 0; i < {m}; i++)"));
            self.open(&format!("for (int j = 0; j < {n}; j++)"));
            self.line(&format!("float s = {o}[i * {n} + j];"));
            let bk = b.column_element("j", "kk", k);
            self.line(&format!("for (int kk = 0; kk < {k}; kk++) s = s + {a}[i * {k} + kk] * {bk};"));
            self.line(&format!("{o}[i * {n} + j] = s;"));
            self.close();
            self.close();
            return;
        }
        let mr = [4u32, 2, 1].into_iter().find(|&r| m.is_multiple_of(r)).unwrap_or(1);
        let nc = [2u32, 1].into_iter().find(|&c| n.is_multiple_of(c)).unwrap_or(1);
        self.open(&format!("for (int j = 0; j < {n}; j += {nc})"));
        self.open(&format!("for (int i = 0; i < {m}; i += {mr})"));
        for r in 0..mr {
            for c in 0..nc {
                self.line(&format!("kiln_f32v c{r}_{c} = kiln_f32v_splat(0.0f);"));
            }
        }
        self.open(&format!("for (int kk = 0; kk < {k}; kk += {vl})"));
        for c in 0..nc {
            self.line(&format!("const kiln_f32v b{c} = {};", b.column_vector(&format!("j + {c}"), "kk", k)));
        }
        for r in 0..mr {
            self.line(&format!("const kiln_f32v a{r} = kiln_loadv(&{a}[(i + {r}) * {k} + kk]);"));
            for c in 0..nc {
                self.line(&format!("c{r}_{c} = c{r}_{c} + a{r} * b{c};"));
            }
        }
        self.close();
        for c in 0..nc {
            if mr == 4 {
                self.line(&format!("kiln_hsum4v_add(&{o}[i * {n} + j + {c}], {n}, c0_{c}, c1_{c}, c2_{c}, c3_{c});"));
            } else {
                for r in 0..mr {
                    self.line(&format!("{o}[(i + {r}) * {n} + j + {c}] += kiln_hsumv(c{r}_{c});"));
                }
            }
        }
        self.close();
        self.close();
    }

    /// Register-blocked f32 `dot`: `mr` rows by `nv` vectors of columns stay in registers over
    /// the whole k loop. An array right operand calls the prelude's function of that block shape
    /// (`kiln_dot_f32_MRxNV`, kept out of line so that the program's other live vectors cannot
    /// push accumulators to the stack); rows read in place (f16 converted as loaded) are written
    /// out here.
    fn emit_dot_vector(&mut self, o: &str, a: &str, b: &Rhs, (m, k, n): (u32, u32, u32), vl: u32) {
        let vectors = n / vl;
        let registers = if self.target.vector_bytes >= 64 { 24 } else { 12 };
        let mr = [4u32, 2, 1].into_iter().find(|&r| m.is_multiple_of(r)).unwrap_or(1);
        let nv = [4u32, 2, 1].into_iter().find(|&v| vectors.is_multiple_of(v) && mr * v <= registers).unwrap_or(1);
        if let Rhs::Array(b) = b {
            // The prelude's function of this block shape (see `KILN_DOT_F32` there).
            self.line(&format!("kiln_dot_f32_{mr}x{nv}({o}, {a}, {b}, {m}, {k}, {n});"));
            return;
        }
        self.open(&format!("for (int i = 0; i < {m}; i += {mr})"));
        self.open(&format!("for (int j = 0; j < {n}; j += {})", nv * vl));
        for r in 0..mr {
            for v in 0..nv {
                self.line(&format!("kiln_f32v c{r}_{v} = kiln_loadv(&{o}[(i + {r}) * {n} + j + {}]);", v * vl));
            }
        }
        self.open(&format!("for (int k = 0; k < {k}; k++)"));
        for v in 0..nv {
            self.line(&format!("const kiln_f32v b{v} = {};", b.vector("k", &format!("j + {}", v * vl), n)));
        }
        for r in 0..mr {
            self.line(&format!("const float a{r} = {a}[(i + {r}) * {k} + k];"));
            for v in 0..nv {
                self.line(&format!("c{r}_{v} = c{r}_{v} + a{r} * b{v};"));
            }
        }
        self.close();
        for r in 0..mr {
            for v in 0..nv {
                self.line(&format!("kiln_storev(&{o}[(i + {r}) * {n} + j + {}], c{r}_{v});", v * vl));
            }
        }
        self.close();
        self.close();
    }
}
