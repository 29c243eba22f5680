//! The `.tir` text form of a kernel: [`print`], [`parse`], and a [`SourceMap`] that puts
//! `line:column` on verifier errors.
//!
//! `parse(&print(&k)) == k` for every kernel the builder makes (ids, names, everything), and
//! `print(&parse(t)?)` is a fixed point after one pass (comments and spacing are not kept, and
//! numeric value names are renumbered to the value ids).
//!
//! # Grammar
//!
//! Whitespace and newlines only separate tokens; `//` comments run to the end of the line.
//!
//! ```text
//! kernel   := "kernel" IDENT "(" [param ("," param)*] ")" "{" inst* "}"
//! param    := "@" IDENT ":" "ptr" "<" dtype ">"          // buffer
//!           | "%" IDENT ":" dtype                        // scalar
//! type     := dtype | dtype "[" DIM ("," DIM)* "]"       // DIM fits u32
//! dtype    := f32 | f16 | bf16 | i32 | u32 | i8 | u8 | bool
//! inst     := [result ("," result)* "="] op
//! result   := VALUE ":" type
//! op       := "program_id" AXIS | "num_programs" AXIS
//!           | "arange" INT "," INT
//!           | "const" literal                            // type = the declared result type
//!           | UNARY v                                    // neg not abs exp2 log2 sqrt rsqrt recip
//!           | BINARY v "," v                             // add sub mul div rem min max and or xor shl shr
//!           | "cmp" PRED v "," v                         // eq ne lt le gt ge
//!           | "select" v "," v "," v
//!           | "cast" v | "bitcast" v                     // target dtype = declared result dtype
//!           | "broadcast" v | "reshape" v                // target shape = declared result shape
//!           | "expand_dims" v "," AXIS | "reduce_sum" v "," AXIS | "reduce_max" v "," AXIS
//!           | "dot" v "," v "," v
//!           | "load" addr ["," "mask" v] ["," "other" v]
//!           | "store" addr "," v ["," "mask" v] | "atomic_add" addr "," v ["," "mask" v]
//!           | "prefetch" addr "," "len" INT ["," "mask" v]
//!           | "for" VALUE "=" v "to" v "step" v ["iter" "(" VALUE "=" v ("," VALUE "=" v)* ")"]
//!             "{" inst* "}"
//!           | "yield" [v ("," v)*]
//! addr     := "@" IDENT "[" v "]"
//! v        := VALUE                                      // a value defined earlier in the text
//! VALUE    := "%" (IDENT | [0-9]+)
//! IDENT    := [A-Za-z_][A-Za-z0-9_.]*
//! literal  := INT | FLOAT | "inf" | "-inf" | "nan" | "nan" "(" "0x" HEX16 ")" | "true" | "false"
//! ```
//!
//! # Meaning
//!
//! - Parameters keep their signature order. A scalar parameter `%n` is a value named `n`.
//! - Values are numbered as the builder numbers them: scalar parameters first, then each
//!   instruction's results in text order, except that a `for` first creates its body block and
//!   the block's arguments (the induction variable, then one per `iter` value, typed like its
//!   initial value), then its body, and only then the loop instruction and its results.
//! - `%name` with an identifier names the value (`ValueData::name`); `%12` leaves it unnamed, so
//!   it prints as its id. Names live in one table for the whole kernel: using an unknown name or
//!   defining one twice is a parse error, while using a loop-body value after its loop parses and
//!   is left to the verifier, which reports the scoping error.
//! - The parser does not type-check: declared result types become the value types as written,
//!   and ops whose attributes are types (`const`, `cast`, `bitcast`, `broadcast`, `reshape`) take
//!   them from their single declared result. An integer literal of a float dtype is a float.
//! - Floats print so they parse back bit-exactly: Rust's shortest round-trip form (`1.0`, `1e-5`,
//!   `-0.0`), `inf`, `-inf`, `nan` for the canonical NaN and `nan(0x...)` with all 64 bits for
//!   any other.
//! - Nothing panics on any input; loops nest at most [`MAX_LOOP_DEPTH`] deep.

mod lexer;
mod parse;
mod print;

pub use print::print;

use crate::entities::{Inst, Param};
use crate::kernel::Kernel;
use crate::verify::{Location, VerifyErrors};
use std::fmt;

/// Deepest loop nesting the parser accepts; deeper input is a parse error rather than a risk to
/// the stack.
pub const MAX_LOOP_DEPTH: usize = 64;

/// Why text did not parse: where (1-based line and column), what was expected, what was found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: expected {expected}, found {found}")]
pub struct ParseError {
    pub line: u32,
    pub column: u32,
    pub expected: String,
    pub found: String,
}

/// Where each parameter and instruction of a parsed kernel was written, as `(line, column)`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SourceMap {
    /// The kernel's name.
    kernel: (u32, u32),
    /// Indexed by parameter id.
    params: Vec<(u32, u32)>,
    /// Indexed by instruction id: the first token of the instruction.
    insts: Vec<(u32, u32)>,
    /// Indexed by block id: the kernel name for the entry, the `for` keyword for a loop body.
    blocks: Vec<(u32, u32)>,
}

impl SourceMap {
    /// Where the kernel's name is.
    pub fn kernel(&self) -> (u32, u32) {
        self.kernel
    }

    pub fn param(&self, p: Param) -> Option<(u32, u32)> {
        self.params.get(p.index()).copied()
    }

    pub fn inst(&self, i: Inst) -> Option<(u32, u32)> {
        self.insts.get(i.index()).copied()
    }

    /// The `(line, column)` a verifier location points at.
    pub fn locate(&self, location: &Location) -> Option<(u32, u32)> {
        match location {
            Location::Kernel => Some(self.kernel),
            Location::Param(p) => self.param(*p),
            Location::Inst(i) => self.inst(*i),
            Location::Block(b) => self.blocks.get(b.index()).copied(),
        }
    }
}

/// Parses one kernel.
pub fn parse(src: &str) -> Result<Kernel, ParseError> {
    parse::parse_kernel(src).map(|(kernel, _)| kernel)
}

/// Parses one kernel and says where each of its parts was written.
pub fn parse_with_source_map(src: &str) -> Result<(Kernel, SourceMap), ParseError> {
    parse::parse_kernel(src)
}

/// Verifier errors one per line, each prefixed with `file:line:column:` (or `file:` where the
/// map does not know the location).
pub fn render_verify_errors(errs: &VerifyErrors, map: &SourceMap, file: &str) -> String {
    let mut out = String::new();
    for e in &errs.errors {
        match map.locate(&e.location) {
            Some((line, column)) => out.push_str(&format!("{file}:{line}:{column}: {e}\n")),
            None => out.push_str(&format!("{file}: {e}\n")),
        }
    }
    out
}

impl fmt::Display for Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&print(self))
    }
}
