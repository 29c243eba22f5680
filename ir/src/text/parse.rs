//! The parser: `.tir` text to a [`Kernel`] and a [`SourceMap`].
//!
//! Recursive descent over the tokens of [`super::lexer`]. It builds the kernel with the same
//! `Kernel` calls, in the same order, as the builder, so value, instruction and block ids come out
//! exactly as the builder numbers them. It takes declared result types as given and does not
//! type-check: that is the verifier's job, and keeping it there lets type errors be written as
//! tests.

use super::lexer::{lex, Token, TokenKind};
use super::{ParseError, SourceMap, MAX_LOOP_DEPTH};
use crate::entities::{Block, Param, Value};
use crate::kernel::{Kernel, ValueDef};
use crate::op::{BinaryOp, CmpPred, Literal, Op, ReduceOp, UnaryOp};
use crate::verify::is_identifier;
use crate::{DType, Shape, Type};
use std::collections::HashMap;

/// A position in the source: 1-based line and column.
type Pos = (u32, u32);

/// A declared result `%name: type` of an instruction, before its value exists.
struct Declared {
    name: String,
    ty: Type,
    pos: Pos,
}

pub(super) fn parse_kernel(src: &str) -> Result<(Kernel, SourceMap), ParseError> {
    let mut p = Parser {
        tokens: lex(src),
        at: 0,
        kernel: Kernel::new(""),
        values: HashMap::new(),
        buffers: HashMap::new(),
        map: SourceMap::default(),
        depth: 0,
    };
    p.kernel_def()?;
    Ok((p.kernel, p.map))
}

struct Parser {
    tokens: Vec<Token>,
    at: usize,
    kernel: Kernel,
    /// Every value name defined so far (flat: loop bodies do not open a scope), with where.
    values: HashMap<String, (Value, Pos)>,
    buffers: HashMap<String, (Param, Pos)>,
    map: SourceMap,
    /// Loops open around the current position.
    depth: usize,
}

impl Parser {
    // --- token plumbing ---

    fn peek(&self) -> &Token {
        // `lex` always ends with Eof and `bump` never moves past it.
        &self.tokens[self.at.min(self.tokens.len() - 1)]
    }

    fn bump(&mut self) -> Token {
        let t = self.peek().clone();
        if self.at + 1 < self.tokens.len() {
            self.at += 1;
        }
        t
    }

    fn pos(&self) -> Pos {
        let t = self.peek();
        (t.line, t.column)
    }

    /// An error at the current token. A token the lexer could not read is reported as such,
    /// whatever was expected there.
    fn error(&self, expected: impl Into<String>) -> ParseError {
        let t = self.peek();
        error_at(t, expected.into(), t.describe())
    }

    fn is_punct(&self, c: char) -> bool {
        self.peek().kind == TokenKind::Punct(c)
    }

    fn is_keyword(&self, word: &str) -> bool {
        matches!(&self.peek().kind, TokenKind::Ident(s) if s == word)
    }

    fn expect_punct(&mut self, c: char, expected: &str) -> Result<(), ParseError> {
        if self.is_punct(c) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(expected))
        }
    }

    fn expect_keyword(&mut self, word: &str) -> Result<(), ParseError> {
        if self.is_keyword(word) {
            self.bump();
            Ok(())
        } else {
            Err(self.error(format!("`{word}`")))
        }
    }

    fn ident(&mut self, expected: &str) -> Result<String, ParseError> {
        match &self.peek().kind {
            TokenKind::Ident(s) => {
                let s = s.clone();
                self.bump();
                Ok(s)
            }
            _ => Err(self.error(expected)),
        }
    }

    /// An unsigned integer that fits `max`.
    fn uint(&mut self, what: &str, max: u64) -> Result<u64, ParseError> {
        let expected = format!("{what} (an integer in 0..={max})");
        match &self.peek().kind {
            TokenKind::Number(s) => match s.parse::<u64>() {
                Ok(n) if n <= max => {
                    self.bump();
                    Ok(n)
                }
                _ => Err(self.error(expected)),
            },
            _ => Err(self.error(expected)),
        }
    }

    fn int32(&mut self, what: &str) -> Result<i32, ParseError> {
        let expected = format!("{what} (an i32 integer)");
        match &self.peek().kind {
            TokenKind::Number(s) => match s.parse::<i32>() {
                Ok(n) => {
                    self.bump();
                    Ok(n)
                }
                Err(_) => Err(self.error(expected)),
            },
            _ => Err(self.error(expected)),
        }
    }

    // --- names ---

    /// A `%name` token where a new value is defined; returns the table key.
    fn value_def_name(&mut self) -> Result<(String, Pos), ParseError> {
        let pos = self.pos();
        match &self.peek().kind {
            TokenKind::Value(s) if is_value_name(s) => {
                let s = s.clone();
                self.bump();
                Ok((s, pos))
            }
            _ => Err(self.error("a value name (`%` and an identifier or a number)")),
        }
    }

    /// A `%name` operand: a value defined earlier in the text.
    fn operand(&mut self) -> Result<Value, ParseError> {
        match &self.peek().kind {
            TokenKind::Value(s) if is_value_name(s) => match self.values.get(s) {
                Some((v, _)) => {
                    let v = *v;
                    self.bump();
                    Ok(v)
                }
                None => Err(self.error("a value defined earlier")),
            },
            _ => Err(self.error("a value (`%` and a name)")),
        }
    }

    /// Enters `name` in the value table, refusing redefinitions, and names the value unless the
    /// name is a number.
    fn define(&mut self, name: String, pos: Pos, value: Value) -> Result<(), ParseError> {
        if let Some((_, first)) = self.values.get(&name) {
            return Err(redefinition(pos, "value", '%', &name, *first));
        }
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            self.kernel.values[value.index()].name = Some(name.clone());
        }
        self.values.insert(name, (value, pos));
        Ok(())
    }

    fn buffer_ref(&mut self) -> Result<Param, ParseError> {
        match &self.peek().kind {
            TokenKind::Buffer(s) => match self.buffers.get(s) {
                Some((p, _)) => {
                    let p = *p;
                    self.bump();
                    Ok(p)
                }
                None => Err(self.error("a buffer parameter of this kernel")),
            },
            _ => Err(self.error("a buffer (`@` and a parameter name)")),
        }
    }

    // --- types ---

    fn dtype(&mut self) -> Result<DType, ParseError> {
        const EXPECTED: &str = "a dtype (f32, f16, bf16, i32, u32, i8, u8, bool)";
        match &self.peek().kind {
            TokenKind::Ident(s) => match DType::from_name(s) {
                Some(d) => {
                    self.bump();
                    Ok(d)
                }
                None => Err(self.error(EXPECTED)),
            },
            _ => Err(self.error(EXPECTED)),
        }
    }

    /// `dtype` or `dtype[d0, d1, ...]`.
    fn ty(&mut self) -> Result<Type, ParseError> {
        let dtype = self.dtype()?;
        let mut dims = Vec::new();
        if self.is_punct('[') {
            self.bump();
            loop {
                // Shapes are bounded by the verifier's element limit; the bound here only keeps
                // a pathological input from growing a huge vector.
                if dims.len() >= MAX_RANK {
                    return Err(self.error(format!("at most {MAX_RANK} dims")));
                }
                dims.push(self.uint("a dimension", u32::MAX as u64)? as u32);
                if self.is_punct(',') {
                    self.bump();
                } else {
                    self.expect_punct(']', "`,` or `]`")?;
                    break;
                }
            }
        }
        Ok(Type { dtype, shape: Shape(dims) })
    }

    // --- kernel and parameters ---

    fn kernel_def(&mut self) -> Result<(), ParseError> {
        self.expect_keyword("kernel")?;
        self.map.kernel = self.pos();
        self.kernel.name = self.ident("a kernel name")?;
        self.map.blocks.push(self.map.kernel);
        self.expect_punct('(', "`(`")?;
        if !self.is_punct(')') {
            loop {
                self.param()?;
                if self.is_punct(',') {
                    self.bump();
                } else {
                    break;
                }
            }
        }
        self.expect_punct(')', "`,` or `)`")?;
        self.expect_punct('{', "`{`")?;
        let entry = self.kernel.entry;
        self.block_body(entry)?;
        if self.peek().kind != TokenKind::Eof {
            return Err(self.error("end of input after the kernel"));
        }
        Ok(())
    }

    /// `@name: ptr<dtype>` or `%name: dtype`.
    fn param(&mut self) -> Result<(), ParseError> {
        let pos = self.pos();
        let (is_buffer, name) = match &self.peek().kind {
            TokenKind::Buffer(s) if is_identifier(s) => (true, s.clone()),
            TokenKind::Value(s) if is_identifier(s) => (false, s.clone()),
            _ => return Err(self.error("a parameter (`@name: ptr<dtype>` or `%name: dtype`)")),
        };
        self.bump();
        self.expect_punct(':', "`:`")?;
        if is_buffer {
            self.expect_keyword("ptr")?;
            self.expect_punct('<', "`<`")?;
            let dtype = self.dtype()?;
            self.expect_punct('>', "`>`")?;
            if let Some((_, first)) = self.buffers.get(&name) {
                return Err(redefinition(pos, "buffer", '@', &name, *first));
            }
            let p = self.kernel.add_buffer(name.clone(), dtype);
            self.buffers.insert(name, (p, pos));
        } else {
            let dtype = self.dtype()?;
            if let Some((_, first)) = self.values.get(&name) {
                return Err(redefinition(pos, "value", '%', &name, *first));
            }
            let v = self.kernel.add_scalar(name.clone(), dtype);
            self.values.insert(name, (v, pos));
        }
        self.map.params.push(pos);
        Ok(())
    }

    // --- blocks and instructions ---

    /// Instructions up to and including the closing `}` of a block.
    fn block_body(&mut self, block: Block) -> Result<(), ParseError> {
        loop {
            if self.is_punct('}') {
                self.bump();
                return Ok(());
            }
            self.inst(block)?;
        }
    }

    /// `results = op operands` or `op operands`.
    fn inst(&mut self, block: Block) -> Result<(), ParseError> {
        let start = self.pos();
        let mut declared = Vec::new();
        if matches!(self.peek().kind, TokenKind::Value(_)) {
            loop {
                let (name, pos) = self.value_def_name()?;
                self.expect_punct(':', "`:`")?;
                let ty = self.ty()?;
                declared.push(Declared { name, ty, pos });
                if self.is_punct(',') {
                    self.bump();
                } else {
                    break;
                }
            }
            self.expect_punct('=', "`,` or `=`")?;
        }
        let op_pos = self.pos();
        let name = match &self.peek().kind {
            TokenKind::Ident(s) => s.clone(),
            _ => return Err(self.error(if declared.is_empty() { "an instruction or `}`" } else { "an op name" })),
        };
        if name == "for" {
            return self.for_loop(block, start, declared);
        }
        let op = self.op(&name, op_pos, &declared)?;
        let types = declared.iter().map(|d| d.ty.clone()).collect();
        let inst = self.kernel.push_inst(block, op, types);
        self.map.insts.push(start);
        let results = self.kernel.insts[inst.index()].results.clone();
        for (d, v) in declared.into_iter().zip(results) {
            self.define(d.name, d.pos, v)?;
        }
        Ok(())
    }

    /// The op after its name (the name token is current). `declared` gives the result types the
    /// op takes its target dtype or shape from.
    fn op(&mut self, name: &str, op_pos: Pos, declared: &[Declared]) -> Result<Op, ParseError> {
        // The single declared result type, for ops whose attributes come from it.
        let result_type = |what: &str| -> Result<Type, ParseError> {
            match declared {
                [d] => Ok(d.ty.clone()),
                _ => Err(ParseError {
                    line: op_pos.0,
                    column: op_pos.1,
                    expected: format!("one declared result before `{name}` (its type gives the {what})"),
                    found: format!("{} results", declared.len()),
                }),
            }
        };
        if let Some(op) = UnaryOp::ALL.into_iter().find(|u| u.name() == name) {
            self.bump();
            return Ok(Op::Unary { op, arg: self.operand()? });
        }
        if let Some(op) = BinaryOp::ALL.into_iter().find(|b| b.name() == name) {
            self.bump();
            let lhs = self.operand()?;
            self.expect_punct(',', "`,`")?;
            return Ok(Op::Binary { op, lhs, rhs: self.operand()? });
        }
        let op = match name {
            "program_id" | "num_programs" => {
                self.bump();
                let axis = self.uint("a grid axis", u8::MAX as u64)? as u8;
                if name == "program_id" {
                    Op::ProgramId { axis }
                } else {
                    Op::NumPrograms { axis }
                }
            }
            "arange" => {
                self.bump();
                let start = self.int32("a start")?;
                self.expect_punct(',', "`,`")?;
                Op::Arange { start, end: self.int32("an end")? }
            }
            "const" => {
                let ty = result_type("constant's type")?;
                self.bump();
                Op::Constant { value: self.literal(ty.dtype)?, ty }
            }
            "cmp" => {
                self.bump();
                let pred = match &self.peek().kind {
                    TokenKind::Ident(s) => CmpPred::ALL.into_iter().find(|p| p.name() == s),
                    _ => None,
                };
                let Some(pred) = pred else {
                    return Err(self.error("a predicate (eq, ne, lt, le, gt, ge)"));
                };
                self.bump();
                let lhs = self.operand()?;
                self.expect_punct(',', "`,`")?;
                Op::Compare { pred, lhs, rhs: self.operand()? }
            }
            "select" => {
                self.bump();
                let cond = self.operand()?;
                self.expect_punct(',', "`,`")?;
                let on_true = self.operand()?;
                self.expect_punct(',', "`,`")?;
                Op::Select { cond, on_true, on_false: self.operand()? }
            }
            "cast" | "bitcast" => {
                let to = result_type("target dtype")?.dtype;
                self.bump();
                let arg = self.operand()?;
                if name == "cast" {
                    Op::Cast { arg, to }
                } else {
                    Op::Bitcast { arg, to }
                }
            }
            "broadcast" | "reshape" => {
                let shape = result_type("target shape")?.shape;
                self.bump();
                let arg = self.operand()?;
                if name == "broadcast" {
                    Op::Broadcast { arg, shape }
                } else {
                    Op::Reshape { arg, shape }
                }
            }
            "expand_dims" | "reduce_sum" | "reduce_max" => {
                self.bump();
                let arg = self.operand()?;
                self.expect_punct(',', "`,`")?;
                let axis = self.uint("an axis", u32::MAX as u64)? as u32;
                match name {
                    "expand_dims" => Op::ExpandDims { arg, axis },
                    "reduce_sum" => Op::Reduce { op: ReduceOp::Sum, arg, axis },
                    _ => Op::Reduce { op: ReduceOp::Max, arg, axis },
                }
            }
            "dot" => {
                self.bump();
                let lhs = self.operand()?;
                self.expect_punct(',', "`,`")?;
                let rhs = self.operand()?;
                self.expect_punct(',', "`,`")?;
                Op::Dot { lhs, rhs, acc: self.operand()? }
            }
            "load" => {
                self.bump();
                let (buffer, offsets) = self.address()?;
                let (mut mask, mut other) = (None, None);
                if self.is_punct(',') {
                    self.bump();
                    if self.is_keyword("mask") {
                        self.bump();
                        mask = Some(self.operand()?);
                        if self.is_punct(',') {
                            self.bump();
                            self.expect_keyword("other")?;
                            other = Some(self.operand()?);
                        }
                    } else if self.is_keyword("other") {
                        self.bump();
                        other = Some(self.operand()?);
                    } else {
                        return Err(self.error("`mask` or `other`"));
                    }
                }
                Op::Load { buffer, offsets, mask, other }
            }
            "store" | "atomic_add" => {
                self.bump();
                let (buffer, offsets) = self.address()?;
                self.expect_punct(',', "`,`")?;
                let value = self.operand()?;
                let mut mask = None;
                if self.is_punct(',') {
                    self.bump();
                    self.expect_keyword("mask")?;
                    mask = Some(self.operand()?);
                }
                if name == "store" {
                    Op::Store { buffer, offsets, value, mask }
                } else {
                    Op::AtomicAdd { buffer, offsets, value, mask }
                }
            }
            "prefetch" => {
                self.bump();
                let (buffer, offsets) = self.address()?;
                self.expect_punct(',', "`,`")?;
                self.expect_keyword("len")?;
                let len = self.uint("a row length", u32::MAX as u64)? as u32;
                let mut mask = None;
                if self.is_punct(',') {
                    self.bump();
                    self.expect_keyword("mask")?;
                    mask = Some(self.operand()?);
                }
                Op::Prefetch { buffer, offsets, mask, len }
            }
            "yield" => {
                self.bump();
                let mut values = Vec::new();
                if matches!(self.peek().kind, TokenKind::Value(_)) {
                    values.push(self.operand()?);
                    while self.is_punct(',') {
                        self.bump();
                        values.push(self.operand()?);
                    }
                }
                Op::Yield { values }
            }
            _ => return Err(self.error("an op name")),
        };
        Ok(op)
    }

    /// `@buffer[%offsets]`.
    fn address(&mut self) -> Result<(Param, Value), ParseError> {
        let buffer = self.buffer_ref()?;
        self.expect_punct('[', "`[`")?;
        let offsets = self.operand()?;
        self.expect_punct(']', "`]`")?;
        Ok((buffer, offsets))
    }

    /// A constant literal for a value of `dtype`. Integers become floats for float dtypes; a
    /// literal of the wrong kind is kept as written for the verifier to report.
    fn literal(&mut self, dtype: DType) -> Result<Literal, ParseError> {
        const EXPECTED: &str = "a literal (integer, float, `inf`, `nan`, `true` or `false`)";
        let tok = self.peek().clone();
        let lit = match &tok.kind {
            TokenKind::Number(s) => {
                let is_float_text = s.contains(['.', 'e', 'E']);
                if is_float_text || dtype.is_float() {
                    match s.parse::<f64>() {
                        // Rust parses any overlong decimal, rounding; only the form can fail.
                        Ok(f) => Literal::Float(f),
                        Err(_) => return Err(self.error(EXPECTED)),
                    }
                } else {
                    match s.parse::<i64>() {
                        Ok(i) => Literal::Int(i),
                        Err(_) => return Err(self.error("an integer literal that fits i64")),
                    }
                }
            }
            TokenKind::Ident(s) if s == "true" || s == "false" => Literal::Bool(s == "true"),
            TokenKind::Ident(s) if s == "inf" => Literal::Float(f64::INFINITY),
            TokenKind::Ident(s) if s == "nan" => {
                self.bump();
                if !self.is_punct('(') {
                    return Ok(Literal::Float(f64::NAN));
                }
                self.bump();
                let bits = self.nan_bits()?;
                self.expect_punct(')', "`)`")?;
                return Ok(Literal::Float(bits));
            }
            TokenKind::Punct('-') => {
                self.bump();
                if !self.is_keyword("inf") {
                    return Err(self.error("`inf` after `-`"));
                }
                Literal::Float(f64::NEG_INFINITY)
            }
            _ => return Err(self.error(EXPECTED)),
        };
        self.bump();
        Ok(lit)
    }

    /// The `0x...` payload of `nan(0x...)`: all 64 bits of a NaN.
    fn nan_bits(&mut self) -> Result<f64, ParseError> {
        const EXPECTED: &str = "the bits of a NaN as `0x` and 16 hex digits";
        // The lexer reads `0x7ff8...` as the number `0` followed by an identifier `x7ff8...`.
        let is_zero = matches!(&self.peek().kind, TokenKind::Number(s) if s == "0");
        let next = self.tokens.get(self.at + 1).map(|t| &t.kind);
        let hex = match next {
            Some(TokenKind::Ident(s)) if is_zero && s.starts_with('x') => s[1..].to_string(),
            _ => return Err(self.error(EXPECTED)),
        };
        match u64::from_str_radix(&hex, 16) {
            Ok(bits) if hex.len() == 16 && f64::from_bits(bits).is_nan() => {
                self.bump();
                self.bump();
                Ok(f64::from_bits(bits))
            }
            _ => Err(self.error(EXPECTED)),
        }
    }

    /// `for %i = %lo to %hi step %st [iter(%a = %init, ...)] { body }`, the `for` token current.
    /// Values are created in the builder's order: body block, its arguments, the body, then the
    /// loop instruction and its results.
    fn for_loop(&mut self, block: Block, start_pos: Pos, declared: Vec<Declared>) -> Result<(), ParseError> {
        let for_pos = self.pos();
        if self.depth >= MAX_LOOP_DEPTH {
            return Err(self.error(format!("at most {MAX_LOOP_DEPTH} nested loops")));
        }
        self.bump();
        let induction = self.value_def_name()?;
        self.expect_punct('=', "`=`")?;
        let start = self.operand()?;
        self.expect_keyword("to")?;
        let end = self.operand()?;
        self.expect_keyword("step")?;
        let step = self.operand()?;
        let mut carried = Vec::new();
        if self.is_keyword("iter") {
            self.bump();
            self.expect_punct('(', "`(`")?;
            loop {
                let arg = self.value_def_name()?;
                self.expect_punct('=', "`=`")?;
                let init = self.operand()?;
                carried.push((arg, init));
                if self.is_punct(',') {
                    self.bump();
                } else {
                    break;
                }
            }
            self.expect_punct(')', "`,` or `)`")?;
        }
        self.expect_punct('{', "`{`")?;

        let body = self.kernel.new_block();
        self.map.blocks.push(for_pos);
        let mut arg_types = vec![Type::scalar(DType::I32)];
        // Carried arguments take their initial values' types, as the builder gives them.
        arg_types.extend(carried.iter().map(|(_, init)| self.kernel.ty(*init).clone()));
        let args: Vec<Value> = arg_types
            .into_iter()
            .enumerate()
            .map(|(n, ty)| self.kernel.new_value(ty, ValueDef::BlockArg(body, n as u32)))
            .collect();
        self.kernel.blocks[body.index()].args = args.clone();
        let names = std::iter::once(induction).chain(carried.iter().map(|(arg, _)| arg.clone()));
        for ((name, pos), v) in names.zip(args) {
            self.define(name, pos, v)?;
        }

        self.depth += 1;
        self.block_body(body)?;
        self.depth -= 1;

        let init = carried.iter().map(|(_, init)| *init).collect();
        let types = declared.iter().map(|d| d.ty.clone()).collect();
        let inst = self.kernel.push_inst(block, Op::For { start, end, step, init, body }, types);
        self.map.insts.push(start_pos);
        let results = self.kernel.insts[inst.index()].results.clone();
        for (d, v) in declared.into_iter().zip(results) {
            self.define(d.name, d.pos, v)?;
        }
        Ok(())
    }
}

/// Most dims a type may spell out.
const MAX_RANK: usize = 16;

/// Whether `s` (after `%`) is a value name: a number or an identifier.
fn is_value_name(s: &str) -> bool {
    (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())) || is_identifier(s)
}

fn error_at(t: &Token, expected: String, found: String) -> ParseError {
    match &t.kind {
        TokenKind::Invalid(_) => ParseError { line: t.line, column: t.column, expected: "a token".to_string(), found },
        TokenKind::Ident(_)
        | TokenKind::Value(_)
        | TokenKind::Buffer(_)
        | TokenKind::Number(_)
        | TokenKind::Punct(_)
        | TokenKind::Eof => ParseError { line: t.line, column: t.column, expected, found },
    }
}

/// The error for a second definition of `name` (`sigil` `%` for values, `@` for buffers).
fn redefinition(pos: Pos, kind: &str, sigil: char, name: &str, first: Pos) -> ParseError {
    ParseError {
        line: pos.0,
        column: pos.1,
        expected: format!("a {kind} name not defined before"),
        found: format!("`{sigil}{name}`, already defined at {}:{}", first.0, first.1),
    }
}
