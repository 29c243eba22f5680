//! The one `enum Op` of the tile IR, and the small enums its variants use.
//!
//! Every consumer matches `Op` exhaustively (no `_ =>`), so adding a variant makes rustc list
//! every place that has to handle it. The semantics of each op are defined by the interpreter
//! (`interp`); the typing rules by `infer`.

use crate::entities::{Block, Param, Value};
use crate::{DType, Shape, Type};

/// A scalar literal. Floats are compared by bit pattern so that `NaN` constants round-trip.
#[derive(Clone, Copy, Debug)]
pub enum Literal {
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl PartialEq for Literal {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Literal::Int(a), Literal::Int(b)) => a == b,
            (Literal::Float(a), Literal::Float(b)) => a.to_bits() == b.to_bits(),
            (Literal::Bool(a), Literal::Bool(b)) => a == b,
            (Literal::Int(_), _) | (Literal::Float(_), _) | (Literal::Bool(_), _) => false,
        }
    }
}

/// Ops of one operand, applied elementwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnaryOp {
    /// Arithmetic negation (wrapping for integers).
    Neg,
    /// Bitwise not for integers, logical not for `bool`.
    Not,
    Abs,
    Exp2,
    Log2,
    Sqrt,
    Rsqrt,
    /// Reciprocal `1 / x`.
    Recip,
}

/// Ops of two operands of the same type, applied elementwise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
    /// Float division, or integer division truncating toward zero.
    Div,
    /// Remainder with the sign of the dividend (integers) or `fmod` (floats).
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    /// Shift left; amounts at or beyond the bit width give 0.
    Shl,
    /// Shift right, arithmetic for signed and logical for unsigned integers; amounts at or beyond
    /// the bit width give the sign fill.
    Shr,
}

/// Comparison predicates; the result is `bool`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CmpPred {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// Reductions along one axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ReduceOp {
    Sum,
    Max,
}

impl UnaryOp {
    pub const ALL: [UnaryOp; 8] = [
        UnaryOp::Neg,
        UnaryOp::Not,
        UnaryOp::Abs,
        UnaryOp::Exp2,
        UnaryOp::Log2,
        UnaryOp::Sqrt,
        UnaryOp::Rsqrt,
        UnaryOp::Recip,
    ];

    pub fn name(self) -> &'static str {
        match self {
            UnaryOp::Neg => "neg",
            UnaryOp::Not => "not",
            UnaryOp::Abs => "abs",
            UnaryOp::Exp2 => "exp2",
            UnaryOp::Log2 => "log2",
            UnaryOp::Sqrt => "sqrt",
            UnaryOp::Rsqrt => "rsqrt",
            UnaryOp::Recip => "recip",
        }
    }
}

impl BinaryOp {
    pub const ALL: [BinaryOp; 12] = [
        BinaryOp::Add,
        BinaryOp::Sub,
        BinaryOp::Mul,
        BinaryOp::Div,
        BinaryOp::Rem,
        BinaryOp::Min,
        BinaryOp::Max,
        BinaryOp::And,
        BinaryOp::Or,
        BinaryOp::Xor,
        BinaryOp::Shl,
        BinaryOp::Shr,
    ];

    pub fn name(self) -> &'static str {
        match self {
            BinaryOp::Add => "add",
            BinaryOp::Sub => "sub",
            BinaryOp::Mul => "mul",
            BinaryOp::Div => "div",
            BinaryOp::Rem => "rem",
            BinaryOp::Min => "min",
            BinaryOp::Max => "max",
            BinaryOp::And => "and",
            BinaryOp::Or => "or",
            BinaryOp::Xor => "xor",
            BinaryOp::Shl => "shl",
            BinaryOp::Shr => "shr",
        }
    }
}

impl CmpPred {
    pub const ALL: [CmpPred; 6] = [CmpPred::Eq, CmpPred::Ne, CmpPred::Lt, CmpPred::Le, CmpPred::Gt, CmpPred::Ge];

    pub fn name(self) -> &'static str {
        match self {
            CmpPred::Eq => "eq",
            CmpPred::Ne => "ne",
            CmpPred::Lt => "lt",
            CmpPred::Le => "le",
            CmpPred::Gt => "gt",
            CmpPred::Ge => "ge",
        }
    }
}

impl ReduceOp {
    pub const ALL: [ReduceOp; 2] = [ReduceOp::Sum, ReduceOp::Max];

    pub fn name(self) -> &'static str {
        match self {
            ReduceOp::Sum => "sum",
            ReduceOp::Max => "max",
        }
    }
}

/// One tile-IR operation. Operands are [`Value`]s; buffers are referenced by [`Param`].
///
/// Grouped by phase: program indexing, value creation, elementwise math, shape changes,
/// reductions and `dot`, memory, control flow.
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    // --- program indexing: scalars that tell an instance where it is in the grid ---
    /// Index of this program instance along grid `axis` (0, 1 or 2); an `i32` scalar.
    ProgramId {
        axis: u8,
    },
    /// Grid size along `axis`; an `i32` scalar.
    NumPrograms {
        axis: u8,
    },

    // --- value creation ---
    /// The `i32` tile `[start, start + 1, ..., end - 1]`.
    Arange {
        start: i32,
        end: i32,
    },
    /// A literal splatted over `ty` (scalar or tile).
    Constant {
        value: Literal,
        ty: Type,
    },

    // --- elementwise math: operands and result share one shape ---
    Unary {
        op: UnaryOp,
        arg: Value,
    },
    Binary {
        op: BinaryOp,
        lhs: Value,
        rhs: Value,
    },
    Compare {
        pred: CmpPred,
        lhs: Value,
        rhs: Value,
    },
    /// `cond ? on_true : on_false`, elementwise; `cond` is `bool` of the same shape.
    Select {
        cond: Value,
        on_true: Value,
        on_false: Value,
    },
    /// Numeric conversion (rounding to nearest for floats, truncation toward zero and
    /// saturation for float→int, wrapping for int→int, `!= 0` for →bool).
    Cast {
        arg: Value,
        to: DType,
    },
    /// Reinterpretation of the bits as another dtype of the same width.
    Bitcast {
        arg: Value,
        to: DType,
    },

    // --- shape changes ---
    /// Numpy-style broadcast to `shape` (dims right-aligned; each source dim is 1 or equal).
    Broadcast {
        arg: Value,
        shape: Shape,
    },
    /// Same elements in row-major order, another shape with the same element count.
    Reshape {
        arg: Value,
        shape: Shape,
    },
    /// Inserts a dim of size 1 before position `axis` (`axis == rank` appends).
    ExpandDims {
        arg: Value,
        axis: u32,
    },

    // --- reductions and dot ---
    /// Reduces `axis` away.
    Reduce {
        op: ReduceOp,
        arg: Value,
        axis: u32,
    },
    /// `acc + lhs · rhs` for `lhs: [M, K]`, `rhs: [K, N]`, `acc: [M, N]`. Floats accumulate into
    /// `f32`, `i8`/`u8` into `i32`.
    Dot {
        lhs: Value,
        rhs: Value,
        acc: Value,
    },

    // --- memory: offsets are integer element offsets into a buffer parameter ---
    /// Reads `buffer[offsets]`; where `mask` is false the result is `other` (or zero if absent)
    /// and memory is not touched.
    Load {
        buffer: Param,
        offsets: Value,
        mask: Option<Value>,
        other: Option<Value>,
    },
    /// Writes `value` to `buffer[offsets]` where `mask` is true.
    Store {
        buffer: Param,
        offsets: Value,
        value: Value,
        mask: Option<Value>,
    },
    /// `buffer[offsets] += value` atomically where `mask` is true.
    AtomicAdd {
        buffer: Param,
        offsets: Value,
        value: Value,
        mask: Option<Value>,
    },
    /// A hint that `buffer[offsets[i] .. offsets[i] + len]` will be read soon, for each row `i`
    /// of the 1-D `offsets` where `mask` is true. No result and no effect: offsets outside the
    /// buffer are not an error, and a backend may ignore the hint. It lets a kernel ask for the
    /// rows of its next tile (found through an index, as in a paged KV cache) while it computes
    /// on the current one.
    Prefetch {
        buffer: Param,
        offsets: Value,
        mask: Option<Value>,
        len: u32,
    },

    // --- control flow ---
    /// `for i in (start..end).step_by(step)` with loop-carried values. `body` has the induction
    /// variable and one argument per carried value; it ends in `Yield`. The results are the
    /// carried values after the last iteration (`init` if the loop runs zero times).
    For {
        start: Value,
        end: Value,
        step: Value,
        init: Vec<Value>,
        body: Block,
    },
    /// Ends a loop body, passing the next iteration's carried values.
    Yield {
        values: Vec<Value>,
    },
}

impl Op {
    /// The mnemonic of the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Op::ProgramId { .. } => "program_id",
            Op::NumPrograms { .. } => "num_programs",
            Op::Arange { .. } => "arange",
            Op::Constant { .. } => "const",
            Op::Unary { op, .. } => op.name(),
            Op::Binary { op, .. } => op.name(),
            Op::Compare { .. } => "cmp",
            Op::Select { .. } => "select",
            Op::Cast { .. } => "cast",
            Op::Bitcast { .. } => "bitcast",
            Op::Broadcast { .. } => "broadcast",
            Op::Reshape { .. } => "reshape",
            Op::ExpandDims { .. } => "expand_dims",
            Op::Reduce { op, .. } => match op {
                ReduceOp::Sum => "reduce_sum",
                ReduceOp::Max => "reduce_max",
            },
            Op::Dot { .. } => "dot",
            Op::Load { .. } => "load",
            Op::Store { .. } => "store",
            Op::AtomicAdd { .. } => "atomic_add",
            Op::Prefetch { .. } => "prefetch",
            Op::For { .. } => "for",
            Op::Yield { .. } => "yield",
        }
    }

    /// The value operands, in order (not including values defined inside a loop body).
    pub fn operands(&self) -> Vec<Value> {
        match self {
            Op::ProgramId { .. } | Op::NumPrograms { .. } | Op::Arange { .. } | Op::Constant { .. } => Vec::new(),
            Op::Unary { arg, .. }
            | Op::Cast { arg, .. }
            | Op::Bitcast { arg, .. }
            | Op::Broadcast { arg, .. }
            | Op::Reshape { arg, .. }
            | Op::ExpandDims { arg, .. }
            | Op::Reduce { arg, .. } => vec![*arg],
            Op::Binary { lhs, rhs, .. } | Op::Compare { lhs, rhs, .. } => vec![*lhs, *rhs],
            Op::Select { cond, on_true, on_false } => vec![*cond, *on_true, *on_false],
            Op::Dot { lhs, rhs, acc } => vec![*lhs, *rhs, *acc],
            Op::Load { offsets, mask, other, .. } => {
                let mut v = vec![*offsets];
                v.extend(mask.iter().copied());
                v.extend(other.iter().copied());
                v
            }
            Op::Store { offsets, value, mask, .. } | Op::AtomicAdd { offsets, value, mask, .. } => {
                let mut v = vec![*offsets, *value];
                v.extend(mask.iter().copied());
                v
            }
            Op::Prefetch { offsets, mask, .. } => {
                let mut v = vec![*offsets];
                v.extend(mask.iter().copied());
                v
            }
            Op::For { start, end, step, init, .. } => {
                let mut v = vec![*start, *end, *step];
                v.extend(init.iter().copied());
                v
            }
            Op::Yield { values } => values.clone(),
        }
    }

    /// The buffer parameter the op accesses, if it is a memory op.
    pub fn buffer(&self) -> Option<Param> {
        match self {
            Op::Load { buffer, .. }
            | Op::Store { buffer, .. }
            | Op::AtomicAdd { buffer, .. }
            | Op::Prefetch { buffer, .. } => Some(*buffer),
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
            | Op::For { .. }
            | Op::Yield { .. } => None,
        }
    }

    /// The nested block, for `for`.
    pub fn body(&self) -> Option<Block> {
        match self {
            Op::For { body, .. } => Some(*body),
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
            | Op::Prefetch { .. }
            | Op::Yield { .. } => None,
        }
    }
}
