//! The verifier: every invariant a kernel must satisfy, checked all at once.
//!
//! Errors are collected rather than stopping at the first, and each names its location (the
//! instruction, parameter or block) and what is wrong. The parser keeps a source map so the CLI can
//! add `line:column` to each.
//!
//! # Invariants
//!
//! Signature
//! 1. The kernel name and every parameter name are identifiers (`[A-Za-z_][A-Za-z0-9_.]*`), and
//!    parameter names are unique.
//! 2. A scalar parameter's value is defined by that parameter, has a scalar type, and carries the
//!    parameter's name (the text form writes both as one `%name`).
//!
//! Structure
//! 3. Every value, instruction, block and parameter id that is referenced exists.
//! 4. Every instruction sits in exactly one block; every block other than the entry is the body of
//!    exactly one `for`; the entry block has no arguments.
//! 5. Each value is defined exactly once, and its recorded definition (`ValueDef`) says where.
//! 6. Value names are identifiers that do not start with a digit, unique in the kernel.
//!
//! Scoping
//! 7. An operand is defined before its use, either earlier in the same block or in an enclosing
//!    block, or it is a scalar parameter or an argument of an enclosing loop body. Values defined
//!    inside a loop body (including its carried arguments) are not visible after the loop; the
//!    loop's results carry them out.
//!
//! Types (the rules of `infer::result_types`)
//! 8. Each instruction has the number of results its op defines, with exactly the inferred types.
//! 9. Elementwise ops take operands of one type; arithmetic excludes `bool`, bit ops take integers
//!    or `bool`, shifts take integers, transcendental ops take floats; `select` takes a `bool`
//!    condition of the value's shape; ordered comparisons exclude `bool`.
//! 10. `broadcast` follows numpy rules (right-aligned, each source dim 1 or equal); `reshape` keeps
//!     the element count; `expand_dims` takes an axis in `0..=rank`.
//! 11. Reductions name an axis in `0..rank` of a non-`bool` tile.
//! 12. `dot` takes `[M, K] · [K, N] + [M, N]`, equal operand dtypes, an `f32` accumulator for float
//!     operands and `i32` for `i8`/`u8`.
//! 13. Memory ops name a buffer parameter; offsets are `i32`/`u32`; masks are `bool` with the
//!     offsets' shape; stored values have the buffer's dtype and the offsets' shape; a load's
//!     `other` is the buffer's dtype, scalar or of the offsets' shape; `atomic_add` is on `f32`,
//!     `i32` or `u32`.
//! 14. `program_id` / `num_programs` name axis 0, 1 or 2; `arange` has `start < end`; constants
//!     have a literal of their dtype's kind, in range for integers.
//! 15. No tile has more than `infer::MAX_TILE_ELEMENTS` elements.
//!
//! Loops
//! 16. Loop bounds and step are `i32` scalars.
//! 17. A loop body's arguments are an `i32` scalar induction variable followed by one argument per
//!     carried value, of the carried value's type.
//! 18. A loop body ends with `yield`, whose values match the carried types; `yield` appears
//!     nowhere else.

use crate::entities::{Block, Inst, Param, Value};
use crate::infer;
use crate::kernel::{Kernel, ParamKind, ValueDef};
use crate::op::Op;
use crate::{DType, Type};
use std::collections::HashSet;
use std::fmt;

/// Where a verifier error is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Kernel,
    Param(Param),
    Inst(Inst),
    Block(Block),
}

/// One broken invariant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyError {
    pub location: Location,
    /// A short rendering of the location (`%5 = add`, `param x`, `block2`).
    pub context: String,
    pub message: String,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.message)
    }
}

/// All errors found in one kernel.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct VerifyErrors {
    pub kernel: String,
    pub errors: Vec<VerifyError>,
}

impl fmt::Display for VerifyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "kernel `{}` failed verification with {} error(s)", self.kernel, self.errors.len())?;
        for e in &self.errors {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

/// Checks every invariant of the module doc.
pub fn verify(kernel: &Kernel) -> Result<(), VerifyErrors> {
    let mut v = Verifier { k: kernel, errors: Vec::new() };
    v.run();
    if v.errors.is_empty() {
        Ok(())
    } else {
        Err(VerifyErrors { kernel: kernel.name.clone(), errors: v.errors })
    }
}

/// Whether `s` is an identifier of the text form.
pub fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {}
        _ => return false,
    }
    chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

struct Verifier<'k> {
    k: &'k Kernel,
    errors: Vec<VerifyError>,
}

impl Verifier<'_> {
    fn err(&mut self, location: Location, message: impl Into<String>) {
        let context = match &location {
            Location::Kernel => format!("kernel {}", self.k.name),
            Location::Param(p) => match self.k.params.get(p.index()) {
                Some(d) => format!("param `{}`", d.name),
                None => format!("{p}"),
            },
            Location::Inst(i) => self.describe_inst(*i),
            Location::Block(b) => format!("{b}"),
        };
        self.errors.push(VerifyError { location, context, message: message.into() });
    }

    fn describe_inst(&self, i: Inst) -> String {
        let Some(data) = self.k.insts.get(i.index()) else { return format!("{i}") };
        let results: Vec<String> = data
            .results
            .iter()
            .filter(|r| r.index() < self.k.values.len())
            .map(|r| format!("%{}", self.k.value_name(*r)))
            .collect();
        if results.is_empty() {
            format!("{} ({i})", data.op.name())
        } else {
            format!("{} = {} ({i})", results.join(", "), data.op.name())
        }
    }

    fn value_exists(&self, v: Value) -> bool {
        v.index() < self.k.values.len()
    }

    fn run(&mut self) {
        self.check_signature();
        if !self.check_structure() {
            // Scoping and types assume every id resolves; with dangling ids they would only add
            // noise (or index out of bounds).
            return;
        }
        self.check_names();
        let mut scope = Vec::new();
        for p in &self.k.params {
            if let ParamKind::Scalar { value } = p.kind {
                scope.push(value);
            }
        }
        let mut visible: HashSet<Value> = scope.iter().copied().collect();
        self.check_block(self.k.entry, &mut visible, None);
    }

    /// Invariants 1-2.
    fn check_signature(&mut self) {
        if !is_identifier(&self.k.name) {
            self.err(Location::Kernel, format!("kernel name `{}` is not an identifier", self.k.name));
        }
        let mut seen = HashSet::new();
        for (i, p) in self.k.params.iter().enumerate() {
            let loc = Location::Param(Param(i as u32));
            if !is_identifier(&p.name) {
                self.err(loc.clone(), format!("parameter name `{}` is not an identifier", p.name));
            }
            if !seen.insert(p.name.as_str()) {
                self.err(loc.clone(), format!("duplicate parameter name `{}`", p.name));
            }
            if let ParamKind::Scalar { value } = p.kind {
                match self.k.values.get(value.index()) {
                    None => self.err(loc, format!("scalar parameter value {value} does not exist")),
                    Some(d) => {
                        if d.def != ValueDef::Param(Param(i as u32)) {
                            self.err(loc.clone(), format!("value {value} is not defined by this parameter"));
                        }
                        if !d.ty.is_scalar() {
                            self.err(loc.clone(), format!("scalar parameter has tile type {}", d.ty));
                        }
                        if d.name.as_deref() != Some(p.name.as_str()) {
                            self.err(loc, format!("the parameter's value is named {:?}, not `{}`", d.name, p.name));
                        }
                    }
                }
            }
        }
    }

    /// Invariants 3-5. Returns false when ids dangle, so later checks are skipped.
    fn check_structure(&mut self) -> bool {
        let k = self.k;
        let n_errors = self.errors.len();
        if k.entry.index() >= k.blocks.len() {
            self.err(Location::Kernel, format!("entry {} does not exist", k.entry));
            return false;
        }
        if !k.blocks[k.entry.index()].args.is_empty() {
            self.err(Location::Block(k.entry), "the entry block takes no arguments");
        }
        let mut inst_home: Vec<Option<Block>> = vec![None; k.insts.len()];
        for (b, data) in k.blocks.iter().enumerate() {
            let b = Block(b as u32);
            for &i in &data.insts {
                match inst_home.get_mut(i.index()) {
                    None => self.err(Location::Block(b), format!("{i} does not exist")),
                    Some(Some(other)) => self.err(Location::Block(b), format!("{i} is also listed in {other}")),
                    Some(slot) => *slot = Some(b),
                }
            }
            for &a in &data.args {
                if !self.value_exists(a) {
                    self.err(Location::Block(b), format!("argument {a} does not exist"));
                }
            }
        }
        let mut block_owner: Vec<Option<Inst>> = vec![None; k.blocks.len()];
        let mut defined = vec![0u32; k.values.len()];
        for (i, data) in k.insts.iter().enumerate() {
            let i = Inst(i as u32);
            if inst_home[i.index()].is_none() {
                self.err(Location::Inst(i), "instruction is in no block");
            }
            for v in data.op.operands() {
                if !self.value_exists(v) {
                    self.err(Location::Inst(i), format!("operand {v} does not exist"));
                }
            }
            if let Some(p) = data.op.buffer() {
                if p.index() >= k.params.len() {
                    self.err(Location::Inst(i), format!("{p} does not exist"));
                }
            }
            if let Some(body) = data.op.body() {
                match block_owner.get_mut(body.index()) {
                    None => self.err(Location::Inst(i), format!("body {body} does not exist")),
                    Some(_) if body == k.entry => self.err(Location::Inst(i), "the entry block cannot be a loop body"),
                    Some(Some(other)) => {
                        self.err(Location::Inst(i), format!("body {body} is also the body of {other}"))
                    }
                    Some(slot) => *slot = Some(i),
                }
            }
            for (n, &r) in data.results.iter().enumerate() {
                match k.values.get(r.index()) {
                    None => self.err(Location::Inst(i), format!("result {r} does not exist")),
                    Some(d) => {
                        defined[r.index()] += 1;
                        if d.def != ValueDef::Result(i, n as u32) {
                            self.err(Location::Inst(i), format!("result {r} records another definition ({:?})", d.def));
                        }
                    }
                }
            }
        }
        for (b, owner) in block_owner.iter().enumerate() {
            let b = Block(b as u32);
            if b != k.entry && owner.is_none() {
                self.err(Location::Block(b), "block is neither the entry nor a loop body");
            }
            for (n, &a) in k.blocks[b.index()].args.iter().enumerate() {
                if let Some(d) = k.values.get(a.index()) {
                    defined[a.index()] += 1;
                    if d.def != ValueDef::BlockArg(b, n as u32) {
                        self.err(Location::Block(b), format!("argument {a} records another definition ({:?})", d.def));
                    }
                }
            }
        }
        for p in &k.params {
            if let ParamKind::Scalar { value } = p.kind {
                if let Some(slot) = defined.get_mut(value.index()) {
                    *slot += 1;
                }
            }
        }
        for (v, &count) in defined.iter().enumerate() {
            if count != 1 {
                self.err(Location::Kernel, format!("value %v{v} is defined {count} times"));
            }
        }
        self.errors.len() == n_errors
    }

    /// Invariants 6 and 15.
    fn check_names(&mut self) {
        let mut seen = HashSet::new();
        for (v, d) in self.k.values.iter().enumerate() {
            if d.ty.shape.numel() > infer::MAX_TILE_ELEMENTS {
                self.err(
                    Location::Kernel,
                    format!("value %v{v} has type {} with more than {} elements", d.ty, infer::MAX_TILE_ELEMENTS),
                );
            }
            if let Some(name) = &d.name {
                if !is_identifier(name) {
                    self.err(Location::Kernel, format!("value %v{v} has name `{name}`, not an identifier"));
                } else if !seen.insert(name.as_str()) {
                    self.err(Location::Kernel, format!("value name `{name}` is used twice"));
                }
            }
        }
    }

    /// Invariants 7-18 for one block. `visible` holds the values in scope on entry; `carried` is
    /// the carried types when `block` is a loop body.
    fn check_block(&mut self, block: Block, visible: &mut HashSet<Value>, carried: Option<&[Type]>) {
        let k = self.k;
        let data = &k.blocks[block.index()];
        visible.extend(data.args.iter().copied());
        let n = data.insts.len();
        for (pos, &inst) in data.insts.iter().enumerate() {
            let d = &k.insts[inst.index()];
            let loc = Location::Inst(inst);
            for v in d.op.operands() {
                if !visible.contains(&v) {
                    self.err(loc.clone(), format!("operand %{} is not in scope here", k.value_name(v)));
                }
            }
            let is_last = pos + 1 == n;
            match &d.op {
                Op::Yield { values } => match carried {
                    None => self.err(loc.clone(), "yield outside a loop body"),
                    Some(_) if !is_last => self.err(loc.clone(), "yield must be the last instruction of its body"),
                    Some(types) => {
                        let got: Vec<Type> = values.iter().map(|v| k.ty(*v).clone()).collect();
                        if got != types {
                            self.err(
                                loc.clone(),
                                format!("yield types ({}) differ from carried types ({})", list(&got), list(types)),
                            );
                        }
                    }
                },
                Op::For { init, body, .. } => {
                    let init_types: Vec<Type> = init.iter().map(|v| k.ty(*v).clone()).collect();
                    let args = &k.blocks[body.index()].args;
                    if args.len() != init.len() + 1 {
                        self.err(
                            loc.clone(),
                            format!(
                                "loop body takes {} arguments, expected the induction variable and {} carried",
                                args.len(),
                                init.len()
                            ),
                        );
                    } else {
                        if k.ty(args[0]) != &Type::scalar(DType::I32) {
                            self.err(loc.clone(), format!("induction variable must be i32, got {}", k.ty(args[0])));
                        }
                        for (n, (a, t)) in args[1..].iter().zip(&init_types).enumerate() {
                            if k.ty(*a) != t {
                                self.err(
                                    loc.clone(),
                                    format!("carried argument {n} is {}, its initial value is {t}", k.ty(*a)),
                                );
                            }
                        }
                    }
                    let ends_in_yield = k.blocks[body.index()]
                        .insts
                        .last()
                        .is_some_and(|i| matches!(k.insts[i.index()].op, Op::Yield { .. }));
                    if !ends_in_yield {
                        self.err(loc.clone(), "loop body does not end with yield");
                    }
                    let mut inner = visible.clone();
                    self.check_block(*body, &mut inner, Some(&init_types));
                }
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
                | Op::Load { .. }
                | Op::Store { .. }
                | Op::AtomicAdd { .. }
                | Op::Prefetch { .. } => {}
            }
            match infer::result_types(k, &d.op) {
                Err(msg) => self.err(loc.clone(), msg),
                Ok(types) => {
                    let declared: Vec<Type> = d.results.iter().map(|r| k.ty(*r).clone()).collect();
                    if declared != types {
                        self.err(
                            loc,
                            format!(
                                "declared result types ({}) differ from inferred ({})",
                                list(&declared),
                                list(&types)
                            ),
                        );
                    }
                }
            }
            // Loop bodies are checked with a copy of `visible`, so nothing defined inside one
            // leaks past the loop; only the loop's results become visible here.
            visible.extend(d.results.iter().copied());
        }
    }
}

fn list(types: &[Type]) -> String {
    types.iter().map(|t| t.to_string()).collect::<Vec<_>>().join(", ")
}
