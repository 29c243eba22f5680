//! The kernel: a signature of parameters plus arenas of values, instructions and blocks.
//!
//! Structured control flow only: the entry block holds instructions; a `for` instruction owns its
//! body block, whose arguments are the induction variable followed by the loop-carried values.
//! Values are numbered in creation order, which the builder and the parser share: scalar
//! parameters first, then, instruction by instruction, a loop's block arguments, the values of
//! its body, and only then the loop's results.

use crate::entities::{Block, Inst, Param, Value};
use crate::op::Op;
use crate::{DType, Type};

/// What a kernel parameter is.
#[derive(Clone, Debug, PartialEq)]
pub enum ParamKind {
    /// A device buffer of `dtype` elements, accessed only through load / store / atomic ops.
    Buffer { dtype: DType },
    /// A runtime scalar, available in the body as `value`.
    Scalar { value: Value },
}

#[derive(Clone, Debug, PartialEq)]
pub struct ParamData {
    pub name: String,
    pub kind: ParamKind,
}

/// Where a value comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueDef {
    Param(Param),
    /// Result `index` of an instruction.
    Result(Inst, u32),
    /// Argument `index` of a block (0 is a loop's induction variable).
    BlockArg(Block, u32),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ValueData {
    pub ty: Type,
    /// Name used by the text form; `None` prints the value's number.
    pub name: Option<String>,
    pub def: ValueDef,
}

#[derive(Clone, Debug, PartialEq)]
pub struct InstData {
    pub op: Op,
    pub results: Vec<Value>,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct BlockData {
    pub args: Vec<Value>,
    pub insts: Vec<Inst>,
}

/// A tile-IR kernel, run once per program instance of a 1-3D grid.
#[derive(Clone, Debug, PartialEq)]
pub struct Kernel {
    pub name: String,
    pub params: Vec<ParamData>,
    pub values: Vec<ValueData>,
    pub insts: Vec<InstData>,
    pub blocks: Vec<BlockData>,
    pub entry: Block,
}

impl Kernel {
    /// An empty kernel with an empty entry block.
    pub fn new(name: impl Into<String>) -> Kernel {
        Kernel {
            name: name.into(),
            params: Vec::new(),
            values: Vec::new(),
            insts: Vec::new(),
            blocks: vec![BlockData::default()],
            entry: Block(0),
        }
    }

    pub fn value(&self, v: Value) -> &ValueData {
        &self.values[v.index()]
    }

    pub fn ty(&self, v: Value) -> &Type {
        &self.values[v.index()].ty
    }

    pub fn inst(&self, i: Inst) -> &InstData {
        &self.insts[i.index()]
    }

    pub fn block(&self, b: Block) -> &BlockData {
        &self.blocks[b.index()]
    }

    pub fn param(&self, p: Param) -> &ParamData {
        &self.params[p.index()]
    }

    /// Dtype of a buffer parameter; `None` if `p` is out of range or a scalar.
    pub fn buffer_dtype(&self, p: Param) -> Option<DType> {
        match self.params.get(p.index()).map(|d| &d.kind) {
            Some(ParamKind::Buffer { dtype }) => Some(*dtype),
            Some(ParamKind::Scalar { .. }) | None => None,
        }
    }

    /// Buffer parameters, in signature order.
    pub fn buffers(&self) -> impl Iterator<Item = (Param, &ParamData, DType)> {
        self.params.iter().enumerate().filter_map(|(i, d)| match d.kind {
            ParamKind::Buffer { dtype } => Some((Param(i as u32), d, dtype)),
            ParamKind::Scalar { .. } => None,
        })
    }

    /// Finds a parameter by name.
    pub fn param_named(&self, name: &str) -> Option<Param> {
        self.params.iter().position(|p| p.name == name).map(|i| Param(i as u32))
    }

    pub fn new_value(&mut self, ty: Type, def: ValueDef) -> Value {
        let v = Value(self.values.len() as u32);
        self.values.push(ValueData { ty, name: None, def });
        v
    }

    pub fn new_block(&mut self) -> Block {
        let b = Block(self.blocks.len() as u32);
        self.blocks.push(BlockData::default());
        b
    }

    /// Adds a buffer parameter.
    pub fn add_buffer(&mut self, name: impl Into<String>, dtype: DType) -> Param {
        let p = Param(self.params.len() as u32);
        self.params.push(ParamData { name: name.into(), kind: ParamKind::Buffer { dtype } });
        p
    }

    /// Adds a scalar parameter and returns its value.
    pub fn add_scalar(&mut self, name: impl Into<String>, dtype: DType) -> Value {
        let name = name.into();
        let p = Param(self.params.len() as u32);
        let v = self.new_value(Type::scalar(dtype), ValueDef::Param(p));
        self.values[v.index()].name = Some(name.clone());
        self.params.push(ParamData { name, kind: ParamKind::Scalar { value: v } });
        v
    }

    /// Appends `op` to `block` with results of the given types.
    pub fn push_inst(&mut self, block: Block, op: Op, result_types: Vec<Type>) -> Inst {
        let inst = Inst(self.insts.len() as u32);
        let results = result_types
            .into_iter()
            .enumerate()
            .map(|(i, ty)| self.new_value(ty, ValueDef::Result(inst, i as u32)))
            .collect();
        self.insts.push(InstData { op, results });
        self.blocks[block.index()].insts.push(inst);
        inst
    }

    /// Every instruction reachable from the entry block, in text order (a loop before its body),
    /// with its nesting depth (0 for the entry block).
    pub fn walk(&self) -> Vec<(Inst, usize)> {
        let mut out = Vec::with_capacity(self.insts.len());
        self.walk_block(self.entry, 0, &mut out);
        out
    }

    fn walk_block(&self, block: Block, depth: usize, out: &mut Vec<(Inst, usize)>) {
        let Some(data) = self.blocks.get(block.index()) else { return };
        for &inst in &data.insts {
            out.push((inst, depth));
            if let Some(body) = self.insts.get(inst.index()).and_then(|d| d.op.body()) {
                // A malformed kernel could nest a block inside itself; the verifier reports it,
                // and the depth bound keeps this walk finite meanwhile.
                if depth < self.blocks.len() {
                    self.walk_block(body, depth + 1, out);
                }
            }
        }
    }

    /// The text name of a value: its name if it has one, else its number.
    pub fn value_name(&self, v: Value) -> String {
        match self.values.get(v.index()).and_then(|d| d.name.as_deref()) {
            Some(name) => name.to_string(),
            None => v.0.to_string(),
        }
    }
}
