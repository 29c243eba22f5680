//! The C renderer: a verified kernel becomes one C11 translation unit exporting
//! `int32_t kiln_NAME(const kiln_args *, int64_t begin, int64_t end, kiln_error *)` (see
//! `abi.h`).
//!
//! Shape of the output: the ABI header, a `#define` block from the [`CpuTarget`], the prelude of
//! helpers (`prelude.h`), then a `static` function running one program instance and the
//! exported entry looping over the linear program range. Inside a program each value is a C
//! scalar or a 64-byte aligned local array named `v<id>` (views share their root's storage,
//! see [`analysis`]); a loop body is a C block, so its tiles are scoped to it; loops carry their
//! values in storage declared before the `for`. Every failure (`OUT_OF_BOUNDS`,
//! `DIVISION_BY_ZERO`, `BAD_STEP`) fills `*err` and returns its code before the failing op has
//! any effect.
//!
//! Per-op emission is the one `match` in [`Emitter::emit_inst`]; the per-element C of
//! elementwise ops is in [`ops`], whole-tile loops in [`tile`], memory in [`memory`].

mod analysis;
mod bytedot;
mod memory;
mod ops;
mod tile;
mod vector;
mod versioning;

use super::target::CpuTarget;
use analysis::Analysis;
use kiln_ir::{BinaryOp, Block, DType, Inst, Kernel, Literal, Op, ParamKind, Value, ValueDef, VerifyErrors};
use memory::Access;
use std::fmt::Write as _;

/// The verbatim ABI header every generated source starts with.
pub const ABI_HEADER: &str = include_str!("../abi.h");
const PRELUDE: &str = include_str!("../prelude.h");

/// Most vectors of a loop-carried accumulator held in registers (see
/// `Emitter::register_accumulator`): 16 of AVX-512's 32 leave room for a step's operands.
const MAX_REGISTER_VECTORS: u64 = 16;

/// One rendered kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CSource {
    /// The kernel name made a C identifier.
    pub name: String,
    /// The exported symbol, `kiln_` + `name`.
    pub entry: String,
    /// The whole translation unit.
    pub code: String,
}

/// Why a kernel could not be rendered.
#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error("cannot render an invalid kernel: {0}")]
    Invalid(#[from] VerifyErrors),
}

/// Renders `kernel` as C for `target`.
pub fn render(kernel: &Kernel, target: &CpuTarget) -> Result<CSource, RenderError> {
    kiln_ir::verify(kernel)?;
    let name: String = kernel.name.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let entry = format!("kiln_{name}");
    let mut e = Emitter {
        k: kernel,
        a: Analysis::new(kernel),
        target,
        out: String::new(),
        indent: 0,
        tmp: 0,
        loop_depth: 0,
        registers: Vec::new(),
        proven: Vec::new(),
    };
    e.out.push_str(ABI_HEADER);
    if !ABI_HEADER.ends_with('\n') {
        e.out.push('\n');
    }
    let _ = writeln!(e.out, "\n/* kernel `{}` for {} */", kernel.name, target.fingerprint());
    let _ = writeln!(e.out, "#define KILN_VECTOR_BYTES {}", target.vector_bytes);
    let _ = writeln!(e.out, "#define KILN_F16C {}", u8::from(target.f16c && target.isa.is_x86()));
    let _ = writeln!(e.out, "#define KILN_X86 {}", u8::from(target.isa.is_x86()));
    e.out.push_str(PRELUDE);
    e.emit_program(&name);
    e.emit_entry(&name, &entry);
    Ok(CSource { name, entry, code: e.out })
}

/// The per-element C of an elementwise op, from its operands' C.
pub(crate) type ElementFn<'k> = Box<dyn Fn(&[String]) -> String + 'k>;

/// Writes C text for one kernel.
pub(crate) struct Emitter<'k> {
    pub(crate) k: &'k Kernel,
    pub(crate) a: Analysis,
    pub(crate) target: &'k CpuTarget,
    out: String,
    indent: usize,
    tmp: usize,
    /// How many `for` bodies enclose the instruction being emitted.
    pub(crate) loop_depth: usize,
    /// Loop-carried f32 tiles held as arrays of vectors small enough for registers (see
    /// [`Emitter::register_accumulator`]); the maps that update them are fully unrolled.
    pub(crate) registers: Vec<Value>,
    /// Offsets of the loads whose in-bounds check the enclosing loop version has proven for
    /// every iteration (`versioning.rs`).
    pub(crate) proven: Vec<Value>,
}

impl<'k> Emitter<'k> {
    pub(crate) fn name(&self, v: Value) -> String {
        format!("v{}", v.0)
    }

    /// A scalar value as C (a loop result reads its loop's carried variable).
    pub(crate) fn scalar(&self, v: Value) -> String {
        self.access(self.a.repr(v), "0")
    }

    pub(crate) fn fresh(&mut self, prefix: &str) -> String {
        self.tmp += 1;
        format!("{prefix}{}", self.tmp)
    }

    pub(crate) fn line(&mut self, s: &str) {
        for _ in 0..self.indent {
            self.out.push_str("    ");
        }
        self.out.push_str(s);
        self.out.push('\n');
    }

    /// `header {` (or a bare `{`), indenting what follows.
    pub(crate) fn open(&mut self, header: &str) {
        if header.is_empty() {
            self.line("{");
        } else {
            self.line(&format!("{header} {{"));
        }
        self.indent += 1;
    }

    pub(crate) fn close(&mut self) {
        self.indent -= 1;
        self.line("}");
    }

    /// `} else {`
    pub(crate) fn close_else(&mut self) {
        self.indent -= 1;
        self.line("} else {");
        self.indent += 1;
    }

    fn emit_program(&mut self, name: &str) {
        self.line("");
        self.line(&format!(
            "static int32_t {name}_program(const kiln_args *args, int64_t program, int32_t pid0, int32_t pid1, int32_t pid2, kiln_error *err)"
        ));
        self.open("");
        let k = self.k;
        for (i, p) in k.params.iter().enumerate() {
            match &p.kind {
                ParamKind::Buffer { dtype } => {
                    let t = ops::storage_type(*dtype);
                    self.line(&format!("{t} *const b{i} KILN_UNUSED = ({t} *)args->buffers[{i}];"));
                    self.line(&format!("const int64_t n{i} KILN_UNUSED = args->buffer_lens[{i}];"));
                }
                ParamKind::Scalar { value } => {
                    let dtype = k.ty(*value).dtype;
                    let raw = format!("args->scalars[{i}].{}", ops::scalar_member(dtype));
                    let held = ops::from_storage(dtype, &raw);
                    self.line(&format!("const {} {} KILN_UNUSED = {held};", ops::held_type(dtype), self.name(*value)));
                }
            }
        }
        self.line("(void)pid0; (void)pid1; (void)pid2; (void)program;");
        self.emit_block(k.entry);
        self.line("return 0;");
        self.close();
    }

    fn emit_entry(&mut self, name: &str, entry: &str) {
        self.line("");
        self.line(&format!("int32_t {entry}(const kiln_args *args, int64_t begin, int64_t end, kiln_error *err)"));
        self.open("");
        self.line("const int64_t gx = args->grid[0], gy = args->grid[1];");
        self.open("for (int64_t p = begin; p < end; p++)");
        self.line("const int32_t x = (int32_t)(p % gx), y = (int32_t)((p / gx) % gy), z = (int32_t)(p / (gx * gy));");
        self.line(&format!("const int32_t rc = {name}_program(args, p, x, y, z, err);"));
        self.line("if (rc != 0) { kiln_store_fence(); return rc; }");
        self.close();
        // Non-temporal stores are weakly ordered: drain them before the caller sees the range done.
        self.line("kiln_store_fence();");
        self.line("return 0;");
        self.close();
    }

    /// The instructions of a block, without its `yield` (loops emit that themselves).
    fn emit_block(&mut self, block: Block) {
        let k = self.k;
        for &inst in &k.block(block).insts {
            if self.a.is_live(k, inst) {
                self.emit_inst(inst);
            }
        }
    }

    /// The one table of per-op emission.
    fn emit_inst(&mut self, inst: Inst) {
        let k = self.k;
        let data = k.inst(inst);
        let result = data.results.first().copied();
        let out = || result.expect("ops with a result have one");
        match &data.op {
            Op::ProgramId { axis } => {
                let v = out();
                self.line(&format!("const int32_t {} KILN_UNUSED = pid{axis};", self.name(v)));
            }
            Op::NumPrograms { axis } => {
                let v = out();
                self.line(&format!("const int32_t {} KILN_UNUSED = args->grid[{axis}];", self.name(v)));
            }
            Op::Arange { start, end } => {
                let v = out();
                self.declare(v);
                self.line(&format!(
                    "for (int i = 0; i < {}; i++) {}[i] = (int32_t)({start} + i);",
                    end - start,
                    self.name(v)
                ));
            }
            Op::Constant { value, ty } => {
                let v = out();
                let lit = ops::literal(*value, ty.dtype);
                self.line(&format!("const {} {} KILN_UNUSED = {lit};", ops::held_type(ty.dtype), self.name(v)));
            }
            Op::Unary { .. } | Op::Compare { .. } | Op::Select { .. } | Op::Cast { .. } | Op::Bitcast { .. } => {
                let v = out();
                // A widening cast the analysis made a view of its operand has no code.
                let view = matches!(data.op, Op::Cast { .. }) && self.a.repr(v).root != v;
                if !self.a.inlined[v.index()] && !view {
                    self.emit_map(v);
                }
            }
            Op::Binary { op, lhs, rhs } => {
                let dtype = k.ty(*lhs).dtype;
                if dtype.is_int() && matches!(op, BinaryOp::Div | BinaryOp::Rem) {
                    self.emit_zero_check(inst, *rhs);
                }
                let v = out();
                if self.a.needed[v.index()] && !self.a.inlined[v.index()] {
                    self.emit_map(v);
                }
            }
            // Views: no code, the analysis points them at their root's storage.
            Op::Broadcast { .. } | Op::ExpandDims { .. } => {}
            Op::Reshape { arg, .. } => {
                let v = out();
                if self.a.repr(v).root == v {
                    self.declare(v);
                    let dims = k.ty(*arg).shape.dims().to_vec();
                    let src = self.a.repr(*arg).clone();
                    let dst = self.name(v);
                    self.emit_copy(&dst, false, &dims, &src);
                }
            }
            Op::Reduce { op, arg, axis } => self.emit_reduce(out(), *op, *arg, *axis as usize),
            Op::Dot { lhs, rhs, acc } => self.emit_dot(out(), *lhs, *rhs, *acc),
            Op::Load { buffer, offsets, mask, other } => {
                let acc = Access { inst, buffer: *buffer, offsets: *offsets, mask: *mask };
                self.emit_load(&acc, *other, out());
            }
            Op::Store { buffer, offsets, value, mask } => {
                let acc = Access { inst, buffer: *buffer, offsets: *offsets, mask: *mask };
                self.emit_store(&acc, *value);
            }
            Op::AtomicAdd { buffer, offsets, value, mask } => {
                let acc = Access { inst, buffer: *buffer, offsets: *offsets, mask: *mask };
                self.emit_atomic_add(&acc, *value);
            }
            Op::Prefetch { buffer, offsets, mask, len } => self.emit_prefetch(*buffer, *offsets, *mask, *len),
            Op::For { start, end, step, init, body } => self.emit_for(inst, [*start, *end, *step], init, *body),
            // Emitted by its loop, which knows where the carried storage is.
            Op::Yield { .. } => {}
        }
    }

    /// The operands of an elementwise instruction, whether its float result is rounded to its
    /// dtype, and its per-element C as a function of the operands' C.
    pub(crate) fn elementwise(&self, inst: Inst) -> (Vec<Value>, bool, ElementFn<'k>) {
        let k = self.k;
        match &k.inst(inst).op {
            Op::Unary { op, arg } => {
                let (op, dtype) = (*op, k.ty(*arg).dtype);
                let round = dtype.is_float() && ops::unary_rounds(op);
                (vec![*arg], round, Box::new(move |x| ops::unary(op, dtype, &x[0])))
            }
            Op::Binary { op, lhs, rhs } => {
                let (op, dtype) = (*op, k.ty(*lhs).dtype);
                (vec![*lhs, *rhs], dtype.is_float(), Box::new(move |x| ops::binary(op, dtype, &x[0], &x[1])))
            }
            Op::Compare { pred, lhs, rhs } => {
                let pred = *pred;
                (vec![*lhs, *rhs], false, Box::new(move |x| ops::compare(pred, &x[0], &x[1])))
            }
            Op::Select { cond, on_true, on_false } => {
                (vec![*cond, *on_true, *on_false], false, Box::new(|x| format!("({} ? {} : {})", x[0], x[1], x[2])))
            }
            Op::Cast { arg, to } => {
                let (from, to) = (k.ty(*arg).dtype, *to);
                (vec![*arg], ops::cast_rounds(from, to), Box::new(move |x| ops::cast(from, to, &x[0])))
            }
            Op::Bitcast { arg, to } => {
                let (from, to) = (k.ty(*arg).dtype, *to);
                (vec![*arg], false, Box::new(move |x| ops::bitcast(from, to, &x[0])))
            }
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
            | Op::Yield { .. } => unreachable!("only elementwise instructions have elementwise C"),
        }
    }

    /// The per-element C of `v`: its inlined tree down to the operands with storage, which read
    /// elements `index[pos..]` in [`analysis::Analysis::tree_leaves`] order.
    pub(crate) fn tree_expr(&self, v: Value, index: &[String], pos: &mut usize) -> String {
        if !self.a.inlined[v.index()] {
            let e = self.access(self.a.repr(v), &index[*pos]);
            *pos += 1;
            return e;
        }
        let ValueDef::Result(inst, _) = self.k.value(v).def else { unreachable!("inlined values are results") };
        let (operands, _, f) = self.elementwise(inst);
        let args: Vec<String> = operands.iter().map(|&o| self.tree_expr(o, index, pos)).collect();
        f(&args)
    }

    fn emit_zero_check(&mut self, inst: Inst, divisor: Value) {
        let repr = self.a.repr(divisor).clone();
        // A nonzero constant divisor (the common `x / 2`) needs no check at all.
        if let ValueDef::Result(def, _) = self.k.value(repr.root).def {
            if let Op::Constant { value: Literal::Int(c), .. } = self.k.inst(def).op {
                if c != 0 {
                    return;
                }
            }
        }
        // Dims the divisor repeats along (stride 0) hold no new elements to check.
        let (dims, strides): (Vec<u32>, Vec<i64>) = self
            .k
            .ty(divisor)
            .shape
            .dims()
            .iter()
            .zip(&repr.strides)
            .filter(|(_, &s)| s != 0)
            .map(|(&d, &s)| (d, s))
            .unzip();
        let repr = analysis::Repr { strides, ..repr };
        let nest = tile::collapsed_nest(&dims, std::slice::from_ref(&repr.strides), "i");
        let n = self.open_nest(&nest);
        let d = self.access(&repr, &nest.index[0]);
        self.line(&format!(
            "if ({d} == 0) return kiln_fail(err, KILN_DIVISION_BY_ZERO, {}, -1, 0, 0, program);",
            inst.0
        ));
        self.close_n(n);
    }

    /// Whether the loop-carried `carried` (with initial value `init`, yielding `yielded`) is an
    /// f32 accumulator to hold in vector registers, and in how many vectors: updated in place
    /// every iteration, filled with one value at the start, whole vectors of at most
    /// [`MAX_REGISTER_VECTORS`] (an AVX-512 register file holds 32; the rest is left for the
    /// operands). Kept in a stack array, as other tiles are, the C compiler loads and stores it
    /// at every iteration.
    fn register_accumulator(&self, carried: Value, yielded: Value, init: &analysis::Repr) -> Option<u64> {
        let ty = self.k.ty(carried);
        let lanes = u64::from(self.target.vector_bytes / 4);
        let repr = self.a.repr(carried);
        let numel = ty.shape.numel();
        // A dot accumulating in place indexes its storage at run time: not held in registers.
        let dot = matches!(self.k.value(yielded).def, ValueDef::Result(inst, _) if matches!(self.k.inst(inst).op, Op::Dot { .. }));
        let in_place = self.a.repr(yielded) == repr && repr.root == carried && !dot;
        let uniform = init.scalar_root || init.strides.iter().all(|&s| s == 0);
        let fits = lanes >= 4 && numel.is_multiple_of(lanes) && numel / lanes <= MAX_REGISTER_VECTORS;
        (ty.dtype == DType::F32 && !repr.scalar_root && in_place && uniform && fits).then_some(numel / lanes)
    }

    fn emit_for(&mut self, inst: Inst, [start, end, step]: [Value; 3], init: &[Value], body: Block) {
        let k = self.k;
        let id = inst.0;
        let (lo, hi, st) = (format!("lo{id}"), format!("hi{id}"), format!("st{id}"));
        self.line(&format!(
            "const int64_t {lo} = {}, {hi} = {}, {st} = {};",
            self.scalar(start),
            self.scalar(end),
            self.scalar(step)
        ));
        self.line(&format!("if ({st} <= 0) return kiln_fail(err, KILN_BAD_STEP, {id}, -1, {st}, 0, program);"));
        let args = k.block(body).args.clone();
        let slots: Vec<usize> = (0..init.len()).filter(|&i| self.a.slot_needed(k, inst, i)).collect();
        let yields = match k.block(body).insts.last().map(|&y| &k.inst(y).op) {
            Some(Op::Yield { values }) => values.clone(),
            _ => Vec::new(),
        };
        for &i in &slots {
            let carried = args[i + 1];
            let src = self.a.repr(init[i]).clone();
            let dims = k.ty(carried).shape.dims().to_vec();
            let scalar = self.a.repr(carried).scalar_root;
            let dst = self.name(carried);
            if let Some(vectors) = yields.get(i).and_then(|&y| self.register_accumulator(carried, y, &src)) {
                // Whole vectors named by constant indices once the updates are unrolled, so
                // the C compiler keeps them in registers for the length of the loop.
                self.registers.push(carried);
                self.line(&format!("kiln_f32v {dst}_v[{vectors}];"));
                self.line(&format!("float *const {dst} = (float *){dst}_v;"));
                let value = self.access(&src, "0");
                self.line(&format!("_Pragma(\"GCC unroll 64\") for (int q = 0; q < {vectors}; q++) {dst}_v[q] = kiln_f32v_splat({value});"));
                continue;
            }
            self.declare(carried);
            self.emit_copy(&dst, scalar, &dims, &src);
        }
        match self.emit_version_check(body, [&lo, &hi, &st]) {
            Some((flag, proven)) => {
                self.open(&format!("if ({flag})"));
                let outer = self.proven.len();
                self.proven.extend(proven);
                self.emit_loop(inst, [&lo, &hi, &st], body, &slots);
                self.proven.truncate(outer);
                self.close_else();
                self.emit_loop(inst, [&lo, &hi, &st], body, &slots);
                self.close();
            }
            None => self.emit_loop(inst, [&lo, &hi, &st], body, &slots),
        }
    }

    /// The `for` statement of a loop whose carried storage `emit_for` has set up.
    fn emit_loop(&mut self, inst: Inst, [lo, hi, st]: [&str; 3], body: Block, slots: &[usize]) {
        let k = self.k;
        let id = inst.0;
        let args = k.block(body).args.clone();
        let it = format!("it{id}");
        self.open(&format!("for (int64_t {it} = {lo}; {it} < {hi}; {it} += {st})"));
        let induction = args[0];
        if self.a.needed[induction.index()] {
            self.line(&format!("const int32_t {} = (int32_t){it};", self.name(induction)));
        }
        self.loop_depth += 1;
        self.emit_block(body);
        self.loop_depth -= 1;
        let yielded = match k.block(body).insts.last().map(|&y| &k.inst(y).op) {
            Some(Op::Yield { values }) => values.clone(),
            _ => Vec::new(),
        };
        // Yield: values that read this loop's carried storage are copied out first, so that
        // `yield %b, %a` swaps instead of smearing.
        let carried_roots: Vec<Value> = args[1..].to_vec();
        let mut sources = Vec::new();
        for &i in slots {
            let carried = args[i + 1];
            let src = self.a.repr(yielded[i]).clone();
            let own = self.a.repr(carried).clone();
            if src == own {
                continue; // yields its own argument unchanged
            }
            let dims = k.ty(carried).shape.dims().to_vec();
            if carried_roots.contains(&src.root) {
                let t = self.fresh("y");
                let ty = k.ty(carried).clone();
                let c = ops::held_type(ty.dtype);
                if own.scalar_root {
                    self.line(&format!("const {c} {t} = {};", self.access(&src, "0")));
                } else {
                    self.line(&format!("{c} {t}[{}] __attribute__((aligned(64)));", ty.shape.numel()));
                    self.emit_copy(&t, false, &dims, &src);
                }
                sources.push((i, src, Some(t)));
            } else {
                sources.push((i, src, None));
            }
        }
        for (i, src, temp) in sources {
            let carried = args[i + 1];
            let dims = k.ty(carried).shape.dims().to_vec();
            let scalar = self.a.repr(carried).scalar_root;
            let dst = self.name(carried);
            match temp {
                Some(t) if scalar => self.line(&format!("{dst} = {t};")),
                Some(t) => {
                    let n: u64 = dims.iter().map(|&d| u64::from(d)).product();
                    self.line(&format!("memcpy({dst}, {t}, {n} * sizeof({dst}[0]));"));
                }
                None => self.emit_copy(&dst, scalar, &dims, &src),
            }
        }
        self.close();
    }
}
