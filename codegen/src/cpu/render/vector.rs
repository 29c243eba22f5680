//! Elementwise loops a vector at a time.
//!
//! The scalar form of a map (one C statement per element, see [`Emitter::emit_map`]) leaves
//! vectorization to the C compiler, which handles mixed widths poorly: a `u8` tile widened to
//! `f32` in a 16-lane inner loop comes out in 4-lane pieces, and a 64-lane one through two
//! widening steps and lane extracts. When the innermost loop runs a multiple of `KILN_VL`
//! elements and every operand walks it contiguously (or not at all), the map is written with
//! GCC vector types instead: `KILN_VL` lanes of every dtype (`kiln_u8v` is 16 bytes beside a
//! 64-byte `kiln_f32v` on AVX-512), explicit conversions (`__builtin_convertvector`), and the
//! operands that do not change along the loop kept scalar until an op needs them as vectors.
//!
//! Only ops whose vector C computes exactly what the scalar C computes are rendered this way:
//! float `+ - * /`, negation and f32 `abs` (the same IEEE operations lane by lane), f32 `exp2` (the
//! prelude's `kiln_exp2v`, the scalar `kiln_exp2f`'s arithmetic lane by lane), wrapping `+ - *` on
//! unsigned integers, bitwise ops, shifts of unsigned integers by a uniform amount (an amount of
//! the width or more gives 0, as in the interpreter), widening or integer conversions, and the
//! saturating float → i32 / i8 / u8 conversions (the prelude's `kiln_f2i32v` and kin). Any
//! other op in the expression keeps the whole map scalar.
//!
//! Booleans in a vector loop are **masks**: a `kiln_i32v` whose lanes are -1 (true) or 0
//! (false), what GCC's vector comparisons give. A stored `bool` tile (bytes 0 / 1) is widened and
//! compared with 0; compares of 32-bit lanes are vector compares (ordered on floats, as the
//! scalar C's); `&`, `|`, `^` of masks are masks; and `select` on a mask is a bit blend of the
//! two 32-bit operands, so it picks exactly the bits the scalar `?:` picks. A map's score mask
//! (attention's `select(visible, scores, -inf)` over `[rows, keys]`) was a scalar loop before.

use super::tile::Nest;
use super::Emitter;
use kiln_ir::{BinaryOp, CmpPred, DType, Inst, Op, UnaryOp, Value, ValueDef};

/// An operand's C inside a vector loop: one value for every lane, or a vector of `KILN_VL`.
#[derive(Clone)]
enum Lanes {
    Uniform(String),
    Vector(String),
}

/// The vector type of `KILN_VL` lanes of a dtype's held type.
fn vector_type(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => Some("kiln_f32v"),
        DType::I32 => Some("kiln_i32v"),
        DType::U32 => Some("kiln_u32v"),
        DType::U8 => Some("kiln_u8v"),
        DType::I8 => Some("kiln_i8v"),
        DType::Bool => None,
    }
}

fn vector(l: &Lanes, vt: &str) -> String {
    match l {
        Lanes::Uniform(s) => format!("{vt}_splat({s})"),
        Lanes::Vector(v) => v.clone(),
    }
}

/// `op` on lanes of `dtype` where at least one operand is a vector.
fn binary(op: BinaryOp, dtype: DType, a: &Lanes, b: &Lanes) -> Option<String> {
    let vt = vector_type(dtype)?;
    let (va, vb) = (vector(a, vt), vector(b, vt));
    let infix = |sym: &str| Some(format!("({va} {sym} {vb})"));
    if dtype.is_float() {
        return match op {
            BinaryOp::Add => infix("+"),
            BinaryOp::Sub => infix("-"),
            BinaryOp::Mul => infix("*"),
            BinaryOp::Div => infix("/"),
            BinaryOp::Rem
            | BinaryOp::Min
            | BinaryOp::Max
            | BinaryOp::And
            | BinaryOp::Or
            | BinaryOp::Xor
            | BinaryOp::Shl
            | BinaryOp::Shr => None,
        };
    }
    let unsigned = matches!(dtype, DType::U8 | DType::U32);
    let w = dtype.bits();
    match op {
        BinaryOp::And => infix("&"),
        BinaryOp::Or => infix("|"),
        BinaryOp::Xor => infix("^"),
        // Unsigned vector arithmetic wraps modulo 2^width, as the IR's does.
        BinaryOp::Add if unsigned => infix("+"),
        BinaryOp::Sub if unsigned => infix("-"),
        BinaryOp::Mul if unsigned => infix("*"),
        BinaryOp::Shl | BinaryOp::Shr if unsigned => {
            let Lanes::Uniform(amount) = b else { return None };
            let amount = if w == 32 { format!("(uint32_t){amount}") } else { format!("(uint32_t)(uint8_t){amount}") };
            let sym = if op == BinaryOp::Shl { "<<" } else { ">>" };
            Some(format!("({amount} >= {w}u ? {vt}_splat(0) : ({va} {sym} {amount}))"))
        }
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Shl
        | BinaryOp::Shr
        | BinaryOp::Div
        | BinaryOp::Rem
        | BinaryOp::Min
        | BinaryOp::Max => None,
    }
}

/// The vector type of a dtype held in 32-bit lanes (floats of every width, `i32`, `u32`): the
/// width of a mask's lanes.
fn lanes_of_32_bits(dtype: DType) -> Option<&'static str> {
    vector_type(dtype).filter(|vt| matches!(*vt, "kiln_f32v" | "kiln_i32v" | "kiln_u32v"))
}

/// A boolean's lanes as a mask (`kiln_i32v`, -1 for true, 0 for false): a uniform bool (0 or 1
/// in C) negated into every lane.
fn mask(l: &Lanes) -> String {
    match l {
        Lanes::Uniform(s) => format!("kiln_i32v_splat(-(int32_t)({s}))"),
        Lanes::Vector(v) => v.clone(),
    }
}

/// `&`, `|`, `^` of two booleans' lanes, at least one a mask.
fn mask_binary(op: BinaryOp, a: &Lanes, b: &Lanes) -> Option<String> {
    let sym = match op {
        BinaryOp::And => "&",
        BinaryOp::Or => "|",
        BinaryOp::Xor => "^",
        BinaryOp::Add
        | BinaryOp::Sub
        | BinaryOp::Mul
        | BinaryOp::Div
        | BinaryOp::Rem
        | BinaryOp::Min
        | BinaryOp::Max
        | BinaryOp::Shl
        | BinaryOp::Shr => return None,
    };
    Some(format!("({} {sym} {})", mask(a), mask(b)))
}

/// A compare of lanes of a 32-bit `dtype` as a mask: GCC's vector compare gives -1 / 0 in
/// signed lanes of the operands' width (ordered on floats: a NaN compares false except by `!=`,
/// as in the scalar C).
fn compare(pred: CmpPred, dtype: DType, a: &Lanes, b: &Lanes) -> Option<String> {
    let vt = lanes_of_32_bits(dtype)?;
    let sym = match pred {
        CmpPred::Eq => "==",
        CmpPred::Ne => "!=",
        CmpPred::Lt => "<",
        CmpPred::Le => "<=",
        CmpPred::Gt => ">",
        CmpPred::Ge => ">=",
    };
    Some(format!("((kiln_i32v)({} {sym} {}))", vector(a, vt), vector(b, vt)))
}

/// `select(cond, t, f)` on lanes of a 32-bit `dtype`: a bit blend on a mask, or the C `?:` of
/// two vectors on a uniform condition.
fn select(dtype: DType, cond: &Lanes, t: &Lanes, f: &Lanes) -> Option<String> {
    let vt = lanes_of_32_bits(dtype)?;
    let (vt_, vf) = (vector(t, vt), vector(f, vt));
    Some(match cond {
        Lanes::Uniform(c) => format!("(({c}) ? {vt_} : {vf})"),
        Lanes::Vector(m) => {
            format!("({vt})(((kiln_i32v)({vt_}) & {m}) | ((kiln_i32v)({vf}) & ~{m}))")
        }
    })
}

/// `cast` of a vector from `from` to `to`.
fn cast(from: DType, to: DType, a: &str) -> Option<String> {
    let target = vector_type(to)?;
    vector_type(from)?;
    match (from.is_float(), to.is_float()) {
        // Held floats are floats: f16 / bf16 results are rounded by the caller.
        (true, true) => Some(a.to_string()),
        // Small integers convert exactly; a widening step first, so u8 zero-extends.
        (false, true) => match (from, to) {
            (DType::U8, _) => Some(format!("__builtin_convertvector(kiln_u8v_widen({a}), kiln_f32v)")),
            (DType::I8, _) => {
                Some(format!("__builtin_convertvector(__builtin_convertvector({a}, kiln_i32v), kiln_f32v)"))
            }
            (DType::I32 | DType::U32, DType::F32) => Some(format!("__builtin_convertvector({a}, kiln_f32v)")),
            _ => None,
        },
        // C integer conversions, lane by lane: modulo 2^width.
        (false, false) => Some(format!("__builtin_convertvector({a}, {target})")),
        // Float -> int saturates in the IR (NaN gives 0): the prelude's vector forms of the
        // scalar helpers.
        (true, false) => match to {
            DType::I32 => Some(format!("kiln_f2i32v({a})")),
            DType::I8 => Some(format!("kiln_f2i8v({a})")),
            DType::U8 => Some(format!("kiln_f2u8v({a})")),
            _ => None,
        },
    }
}

impl Emitter<'_> {
    /// Lanes of `v` at the current vector: its inlined tree, operands with storage read
    /// through `nest` (in [`super::analysis::Analysis::tree_leaves`] order from `pos`).
    fn lanes(&self, v: Value, nest: &Nest, pos: &mut usize) -> Option<Lanes> {
        if !self.a.inlined[v.index()] {
            let k = *pos + 1; // operand 0 of the nest is the result
            *pos += 1;
            let repr = self.a.repr(v);
            let e = self.access(repr, &nest.index[k]);
            let dtype = self.k.ty(v).dtype;
            return match nest.inner_strides[k] {
                _ if repr.scalar_root => Some(Lanes::Uniform(e)),
                Some(0) => Some(Lanes::Uniform(e)),
                // Stored bools are bytes 0 / 1: widened to a mask.
                Some(1) if dtype == DType::Bool => {
                    Some(Lanes::Vector(format!("((kiln_i32v)kiln_u8v_widen(kiln_u8v_load(&{e})) != 0)")))
                }
                Some(1) => Some(Lanes::Vector(format!("{}_load(&{e})", vector_type(dtype)?))),
                _ => None,
            };
        }
        let ValueDef::Result(inst, _) = self.k.value(v).def else { return None };
        if let Op::Cast { arg, to } = &self.k.inst(inst).op {
            if self.k.ty(*arg).dtype == DType::U8 && *to == DType::F32 && self.target.vector_bytes == 64 {
                let saved = *pos;
                if let Some(index) = self.nibble(*arg, nest, pos) {
                    // A 16-entry table lookup (`vpermps`, which reads the low 4 bits of each
                    // index) instead of a mask or shift and an int → float conversion.
                    let table = (0..16).map(|i| format!("{i}.0f")).collect::<Vec<_>>().join(", ");
                    return Some(Lanes::Vector(format!(
                        "__builtin_shuffle((kiln_f32v){{{table}}}, (kiln_i32v)({index}))"
                    )));
                }
                *pos = saved;
            }
            if self.k.ty(*arg).dtype == DType::U8 && to.is_float() {
                let saved = *pos;
                if let Some(wide) = self.widened(*arg, nest, pos) {
                    // Below 256: the i32 view of the lanes is their value.
                    return Some(Lanes::Vector(format!("__builtin_convertvector((kiln_i32v)({wide}), kiln_f32v)")));
                }
                *pos = saved;
            }
        }
        let operands = self.k.inst(inst).op.operands();
        let lanes = operands.iter().map(|&o| self.lanes(o, nest, pos)).collect::<Option<Vec<_>>>()?;
        self.op_lanes(inst, &lanes)
    }

    /// For a `u8` value below 16 by construction, a nibble of a byte: the widened lanes whose
    /// low 4 bits are it (`__builtin_shuffle` takes indices modulo the lane count, so `x & 15`
    /// needs no mask and `x >> s`, `s ≥ 4`, is the value itself). `None` for anything else.
    fn nibble(&self, v: Value, nest: &Nest, pos: &mut usize) -> Option<String> {
        if self.k.ty(v).dtype != DType::U8 || !self.a.inlined[v.index()] {
            return None;
        }
        let ValueDef::Result(inst, _) = self.k.value(v).def else { return None };
        let Op::Binary { op, lhs, rhs } = &self.k.inst(inst).op else { return None };
        match (op, self.constant_int(*rhs)?) {
            (BinaryOp::And, 15) => {
                let a = self.widened(*lhs, nest, pos)?;
                // The mask's own lane (a uniform) is a leaf of the tree too.
                let Lanes::Uniform(_) = self.lanes(*rhs, nest, pos)? else { return None };
                Some(a)
            }
            (BinaryOp::Shr, 4..=7) => self.widened(v, nest, pos),
            _ => None,
        }
    }

    /// The value of an integer constant (through views of it), if `v` is one.
    pub(crate) fn constant_int(&self, v: Value) -> Option<i64> {
        let ValueDef::Result(def, _) = self.k.value(self.a.repr(v).root).def else { return None };
        match self.k.inst(def).op {
            Op::Constant { value: kiln_ir::Literal::Int(c), .. } => Some(c),
            _ => None,
        }
    }

    /// The lanes of a `u8` value as `kiln_u32v`, widened at its leaves. Zero-extension commutes
    /// with `&`, `|`, `^` and with `>>` by a uniform amount (an amount of 8 or more gives 0 either
    /// way), so these run on the wide lanes: x86 has no byte shifts (a byte shift is a word shift
    /// and a mask), and the bytes are widened once for the high and the low nibble alike.
    fn widened(&self, v: Value, nest: &Nest, pos: &mut usize) -> Option<String> {
        if self.k.ty(v).dtype != DType::U8 {
            return None;
        }
        if !self.a.inlined[v.index()] {
            return match self.lanes(v, nest, pos)? {
                Lanes::Uniform(s) => Some(format!("kiln_u32v_splat((uint32_t)({s}))")),
                Lanes::Vector(bytes) => Some(format!("(kiln_u32v)kiln_u8v_widen({bytes})")),
            };
        }
        let ValueDef::Result(inst, _) = self.k.value(v).def else { return None };
        let Op::Binary { op, lhs, rhs } = &self.k.inst(inst).op else { return None };
        let a = self.widened(*lhs, nest, pos)?;
        match op {
            BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => {
                let b = self.widened(*rhs, nest, pos)?;
                let sym = match op {
                    BinaryOp::And => "&",
                    BinaryOp::Or => "|",
                    _ => "^",
                };
                Some(format!("({a} {sym} {b})"))
            }
            BinaryOp::Shr => {
                let Lanes::Uniform(amount) = self.lanes(*rhs, nest, pos)? else { return None };
                let amount = format!("(uint32_t)(uint8_t){amount}");
                Some(format!("({amount} >= 8u ? kiln_u32v_splat(0) : ({a} >> {amount}))"))
            }
            _ => None,
        }
    }

    /// Lanes of the result of the elementwise `inst` from its operands' lanes.
    fn op_lanes(&self, inst: Inst, lanes: &[Lanes]) -> Option<Lanes> {
        let k = self.k;
        // Every operand uniform: the scalar C of the op, on the scalars.
        if lanes.iter().all(|l| matches!(l, Lanes::Uniform(_))) {
            let (_, _, f) = self.elementwise(inst);
            let args: Vec<String> = lanes
                .iter()
                .map(|l| match l {
                    Lanes::Uniform(s) | Lanes::Vector(s) => s.clone(),
                })
                .collect();
            return Some(Lanes::Uniform(f(&args)));
        }
        match &k.inst(inst).op {
            Op::Binary { op, lhs, .. } if k.ty(*lhs).dtype == DType::Bool => {
                mask_binary(*op, &lanes[0], &lanes[1]).map(Lanes::Vector)
            }
            Op::Binary { op, lhs, .. } => binary(*op, k.ty(*lhs).dtype, &lanes[0], &lanes[1]).map(Lanes::Vector),
            Op::Compare { pred, lhs, .. } => compare(*pred, k.ty(*lhs).dtype, &lanes[0], &lanes[1]).map(Lanes::Vector),
            Op::Select { on_true, .. } => {
                select(k.ty(*on_true).dtype, &lanes[0], &lanes[1], &lanes[2]).map(Lanes::Vector)
            }
            Op::Unary { op: UnaryOp::Neg, arg } if k.ty(*arg).dtype.is_float() => {
                Some(Lanes::Vector(format!("(-{})", vector(&lanes[0], "kiln_f32v"))))
            }
            Op::Cast { arg, to } => {
                cast(k.ty(*arg).dtype, *to, &vector(&lanes[0], vector_type(k.ty(*arg).dtype)?)).map(Lanes::Vector)
            }
            // |x| clears the sign bit, as `fabsf` does (NaN included).
            Op::Unary { op: UnaryOp::Abs, arg } if k.ty(*arg).dtype == DType::F32 => Some(Lanes::Vector(format!(
                "((kiln_f32v)((kiln_i32v)({}) & kiln_i32v_splat(0x7fffffff)))",
                vector(&lanes[0], "kiln_f32v")
            ))),
            // The prelude's vector exp2 is the scalar `kiln_exp2f` lane by lane. Only on f32:
            // an f16 / bf16 result inlined into a larger expression would need rounding first.
            Op::Unary { op: UnaryOp::Exp2, arg } if k.ty(*arg).dtype == DType::F32 => {
                Some(Lanes::Vector(format!("kiln_exp2v({})", vector(&lanes[0], "kiln_f32v"))))
            }
            Op::Unary { .. } | Op::Bitcast { .. } => None,
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
            | Op::Yield { .. } => None,
        }
    }

    /// Writes the map `out = inst(operands)` over `nest` a vector at a time, if it can (see the
    /// module doc); returns whether it did.
    pub(crate) fn emit_vector_map(&mut self, out: Value, inst: Inst, operands: &[Value], nest: &Nest) -> bool {
        let vl = u64::from(self.target.vector_bytes / 4);
        let Some((var, extent)) = nest.innermost.clone() else { return false };
        let out_dtype = self.k.ty(out).dtype;
        let Some(vt) = vector_type(out_dtype) else { return false };
        if self.target.vector_bytes < 16 || extent % vl != 0 || nest.inner_strides[0] != Some(1) {
            return false;
        }
        let mut pos = 0;
        let Some(lanes) = operands.iter().map(|&o| self.lanes(o, nest, &mut pos)).collect::<Option<Vec<_>>>() else {
            return false;
        };
        let Some(result) = self.op_lanes(inst, &lanes) else { return false };
        let last = nest.headers.len() - 1;
        // An update of a register-held accumulator is unrolled whole, so that every vector of
        // it is named by a constant index and stays in a register.
        let unroll = if self.registers.contains(&self.a.repr(out).root) { "_Pragma(\"GCC unroll 64\") " } else { "" };
        for h in &nest.headers[..last] {
            self.open(&format!("{unroll}{h}"));
        }
        self.open(&format!("{unroll}for (int {var} = 0; {var} < {extent}; {var} += {vl})"));
        let target = self.access(&self.a.repr(out).clone(), &nest.index[0]);
        self.line(&format!("const {vt} r = {};", vector(&result, vt)));
        self.line(&format!("memcpy(&{target}, &r, sizeof r);"));
        self.close_n(nest.headers.len());
        true
    }
}
