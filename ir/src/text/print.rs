//! The printer: a [`Kernel`] as `.tir` text.
//!
//! It never panics, even on a kernel that fails verification: dangling ids print as
//! `%v12`-style placeholders (which the parser then rejects) and a block nested inside itself is
//! cut off at a depth bound, so a malformed kernel can still be looked at.

use crate::entities::{Block, Inst, Param, Value};
use crate::kernel::{Kernel, ParamKind};
use crate::op::{Literal, Op};
use std::fmt::Write;

/// Prints `kernel` in the text form; [`super::parse`] reads it back unchanged.
pub fn print(kernel: &Kernel) -> String {
    let mut p = Printer { k: kernel, out: String::new() };
    p.signature();
    p.block(kernel.entry, 1);
    p.out.push_str("}\n");
    p.out
}

struct Printer<'k> {
    k: &'k Kernel,
    out: String,
}

impl Printer<'_> {
    fn signature(&mut self) {
        let k = self.k;
        let params: Vec<String> = k
            .params
            .iter()
            .map(|p| match &p.kind {
                ParamKind::Buffer { dtype } => format!("@{}: ptr<{dtype}>", p.name),
                ParamKind::Scalar { value } => format!("%{}: {}", p.name, self.ty(*value)),
            })
            .collect();
        let _ = writeln!(self.out, "kernel {}({}) {{", k.name, params.join(", "));
    }

    fn value(&self, v: Value) -> String {
        if v.index() < self.k.values.len() {
            format!("%{}", self.k.value_name(v))
        } else {
            // Not parseable on purpose: a dangling id must not read back as a real value.
            format!("%<{v}>")
        }
    }

    fn ty(&self, v: Value) -> String {
        match self.k.values.get(v.index()) {
            Some(d) => d.ty.to_string(),
            None => "<unknown type>".to_string(),
        }
    }

    fn buffer(&self, p: Param) -> String {
        match self.k.params.get(p.index()) {
            Some(d) => format!("@{}", d.name),
            None => format!("@<{p}>"),
        }
    }

    fn values(&self, vs: &[Value]) -> String {
        vs.iter().map(|v| self.value(*v)).collect::<Vec<_>>().join(", ")
    }

    fn block(&mut self, block: Block, depth: usize) {
        let Some(data) = self.k.blocks.get(block.index()) else { return };
        for &inst in &data.insts {
            self.inst(inst, depth);
        }
    }

    fn inst(&mut self, inst: Inst, depth: usize) {
        let indent = "  ".repeat(depth);
        let Some(data) = self.k.insts.get(inst.index()) else {
            let _ = writeln!(self.out, "{indent}<missing {inst}>");
            return;
        };
        let results: Vec<String> =
            data.results.iter().map(|r| format!("{}: {}", self.value(*r), self.ty(*r))).collect();
        let lhs = if results.is_empty() { String::new() } else { format!("{} = ", results.join(", ")) };
        let name = data.op.name();
        let v = |x: &Value| self.value(*x);
        let body = match &data.op {
            Op::ProgramId { axis } | Op::NumPrograms { axis } => format!("{name} {axis}"),
            Op::Arange { start, end } => format!("{name} {start}, {end}"),
            Op::Constant { value, .. } => format!("{name} {}", literal(*value)),
            Op::Unary { arg, .. }
            | Op::Cast { arg, .. }
            | Op::Bitcast { arg, .. }
            | Op::Broadcast { arg, .. }
            | Op::Reshape { arg, .. } => format!("{name} {}", v(arg)),
            Op::Binary { lhs, rhs, .. } => format!("{name} {}, {}", v(lhs), v(rhs)),
            Op::Compare { pred, lhs, rhs } => format!("{name} {} {}, {}", pred.name(), v(lhs), v(rhs)),
            Op::Select { cond, on_true, on_false } => {
                format!("{name} {}, {}, {}", v(cond), v(on_true), v(on_false))
            }
            Op::ExpandDims { arg, axis } | Op::Reduce { arg, axis, .. } => {
                format!("{name} {}, {axis}", v(arg))
            }
            Op::Dot { lhs, rhs, acc } => format!("{name} {}, {}, {}", v(lhs), v(rhs), v(acc)),
            Op::Load { buffer, offsets, mask, other } => {
                let mut s = format!("{name} {}[{}]", self.buffer(*buffer), v(offsets));
                if let Some(m) = mask {
                    let _ = write!(s, ", mask {}", v(m));
                }
                if let Some(o) = other {
                    let _ = write!(s, ", other {}", v(o));
                }
                s
            }
            Op::Store { buffer, offsets, value, mask } | Op::AtomicAdd { buffer, offsets, value, mask } => {
                let mut s = format!("{name} {}[{}], {}", self.buffer(*buffer), v(offsets), v(value));
                if let Some(m) = mask {
                    let _ = write!(s, ", mask {}", v(m));
                }
                s
            }
            Op::Prefetch { buffer, offsets, mask, len } => {
                let mut s = format!("{name} {}[{}], len {len}", self.buffer(*buffer), v(offsets));
                if let Some(m) = mask {
                    let _ = write!(s, ", mask {}", v(m));
                }
                s
            }
            Op::Yield { values } if values.is_empty() => name.to_string(),
            Op::Yield { values } => format!("{name} {}", self.values(values)),
            Op::For { start, end, step, init, body } => {
                let args = self.k.blocks.get(body.index()).map(|b| b.args.as_slice()).unwrap_or(&[]);
                let induction = args.first().map(|a| self.value(*a)).unwrap_or_else(|| "%<missing>".into());
                let mut s = format!("{name} {induction} = {} to {} step {}", v(start), v(end), v(step));
                if !init.is_empty() {
                    let pairs: Vec<String> = init
                        .iter()
                        .enumerate()
                        .map(|(n, i)| {
                            let arg = args.get(n + 1).map(|a| self.value(*a)).unwrap_or_else(|| "%<missing>".into());
                            format!("{arg} = {}", v(i))
                        })
                        .collect();
                    let _ = write!(s, " iter({})", pairs.join(", "));
                }
                let _ = writeln!(self.out, "{indent}{lhs}{s} {{");
                // A block nested in itself is malformed (the verifier says so); stop rather than
                // recurse forever.
                if depth <= self.k.blocks.len() {
                    self.block(*body, depth + 1);
                }
                let _ = writeln!(self.out, "{indent}}}");
                return;
            }
        };
        let _ = writeln!(self.out, "{indent}{lhs}{body}");
    }
}

/// A literal as the parser reads it back bit-exactly: floats always carry a `.`, an exponent or
/// a name (`inf`, `nan`), so they stay floats; NaNs other than the canonical one print their
/// bits as `nan(0x...)`.
pub(crate) fn literal(lit: Literal) -> String {
    match lit {
        Literal::Int(i) => i.to_string(),
        Literal::Bool(b) => b.to_string(),
        Literal::Float(f) => float(f),
    }
}

/// An `f64` in a form that parses back to the same bits. Rust's `{:?}` prints the shortest
/// representation that round-trips, and keeps `.0` on integral values and the sign of `-0.0`.
pub(crate) fn float(f: f64) -> String {
    if f.is_nan() {
        if f.to_bits() == f64::NAN.to_bits() {
            "nan".to_string()
        } else {
            format!("nan(0x{:016x})", f.to_bits())
        }
    } else {
        format!("{f:?}")
    }
}
