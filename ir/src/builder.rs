//! Writing kernels in Rust: a builder whose tile handles overload the arithmetic operators, so a
//! kernel reads close to its Triton counterpart.
//!
//! ```
//! use kiln_ir::{DType, KernelBuilder};
//!
//! // y[i] = x[i] * 2 + 1 over n elements, 128 per program.
//! let b = KernelBuilder::new("axpb");
//! let (x, y) = (b.buffer("x", DType::F32), b.buffer("y", DType::F32));
//! let n = b.scalar("n", DType::I32);
//! let offs = b.program_id(0) * 128 + b.arange(0, 128);
//! let mask = offs.lt(n);
//! let v = b.load_masked(x, offs, mask, 0.0);
//! b.store_masked(y, offs, v * 2.0 + 1.0, mask);
//! let kernel = b.finish().unwrap();
//! assert_eq!(kernel.params.len(), 3);
//! ```
//!
//! Binary operators broadcast their operands numpy-style (inserting `broadcast` ops) and turn Rust
//! literals into constants of the other operand's dtype; they never convert between dtypes, which
//! is what `cast` is for. Misuse does not panic: the builder records the error, keeps going with a
//! placeholder, and [`KernelBuilder::finish`] reports every error, followed by the verifier's.

use crate::entities::{Block, Param, Value};
use crate::infer;
use crate::kernel::{Kernel, ValueDef};
use crate::op::{BinaryOp, CmpPred, Literal, Op, ReduceOp, UnaryOp};
use crate::verify::{verify, VerifyErrors};
use crate::{DType, Shape, Type};
use std::cell::RefCell;
use std::ops;

/// Why a kernel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Misuse of the builder (dtype mismatch, shapes that do not broadcast, ...), in order.
    #[error("building kernel `{kernel}` failed:\n  {}", errors.join("\n  "))]
    Build { kernel: String, errors: Vec<String> },
    /// The built kernel breaks verifier invariants.
    #[error(transparent)]
    Verify(#[from] VerifyErrors),
}

/// Builds one [`Kernel`]. Declare parameters first, then write the body.
pub struct KernelBuilder {
    state: RefCell<State>,
}

struct State {
    kernel: Kernel,
    /// Innermost block last: where new instructions go.
    cursor: Vec<Block>,
    errors: Vec<String>,
}

/// A value (scalar or tile) under construction. Cheap to copy.
#[derive(Clone, Copy)]
pub struct Tile<'b> {
    b: &'b KernelBuilder,
    value: Value,
}

/// A buffer parameter, for `load` / `store` / `atomic_add`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    pub param: Param,
}

/// Something usable as an operand: a [`Tile`] or a Rust literal, which becomes a constant of the
/// dtype the context asks for.
pub trait Operand<'b> {
    fn value_for(self, b: &'b KernelBuilder, dtype: DType) -> Value;
}

impl<'b> Operand<'b> for Tile<'b> {
    fn value_for(self, _: &'b KernelBuilder, _: DType) -> Value {
        self.value
    }
}

macro_rules! literal_operand {
    ($($t:ty => $kind:ident),*) => {$(
        impl<'b> Operand<'b> for $t {
            fn value_for(self, b: &'b KernelBuilder, dtype: DType) -> Value {
                b.literal(Literal::$kind(self.into()), dtype)
            }
        }
    )*};
}
literal_operand!(i32 => Int, u32 => Int, i64 => Int, u8 => Int, i8 => Int, f32 => Float, f64 => Float, bool => Bool);

impl KernelBuilder {
    pub fn new(name: impl Into<String>) -> KernelBuilder {
        let kernel = Kernel::new(name);
        let entry = kernel.entry;
        KernelBuilder { state: RefCell::new(State { kernel, cursor: vec![entry], errors: Vec::new() }) }
    }

    fn error(&self, msg: String) {
        self.state.borrow_mut().errors.push(msg);
    }

    fn tile(&self, value: Value) -> Tile<'_> {
        Tile { b: self, value }
    }

    fn ty(&self, v: Value) -> Type {
        self.state.borrow().kernel.ty(v).clone()
    }

    fn check_params_first(&self, what: &str) {
        let started = !self.state.borrow().kernel.insts.is_empty();
        if started {
            self.error(format!("parameter `{what}` declared after the first instruction; declare parameters first"));
        }
    }

    /// Declares a buffer parameter of `dtype` elements.
    pub fn buffer(&self, name: &str, dtype: DType) -> Buf {
        self.check_params_first(name);
        Buf { param: self.state.borrow_mut().kernel.add_buffer(name, dtype) }
    }

    /// Declares a scalar parameter.
    pub fn scalar(&self, name: &str, dtype: DType) -> Tile<'_> {
        self.check_params_first(name);
        let v = self.state.borrow_mut().kernel.add_scalar(name, dtype);
        self.tile(v)
    }

    /// Appends `op`, typing it with the rules of `infer`. On a typing error the error is recorded
    /// and `fallback` types the results so building can go on.
    fn push(&self, op: Op, fallback: Vec<Type>) -> Vec<Value> {
        let types = {
            let st = self.state.borrow();
            infer::result_types(&st.kernel, &op)
        };
        let types = match types {
            Ok(t) => t,
            Err(msg) => {
                self.error(format!("{}: {msg}", op.name()));
                fallback
            }
        };
        let mut st = self.state.borrow_mut();
        let block = *st.cursor.last().expect("the entry block is never popped");
        let inst = st.kernel.push_inst(block, op, types);
        st.kernel.inst(inst).results.clone()
    }

    fn push1(&self, op: Op, fallback: Type) -> Tile<'_> {
        let v = self.push(op, vec![fallback])[0];
        self.tile(v)
    }

    fn literal(&self, value: Literal, dtype: DType) -> Value {
        let value = match (value, dtype.is_float()) {
            (Literal::Int(i), true) => Literal::Float(i as f64),
            (v, _) => v,
        };
        self.push1(Op::Constant { value, ty: Type::scalar(dtype) }, Type::scalar(dtype)).value
    }

    // --- program indexing and creation ---

    /// Index of this program along grid `axis`.
    pub fn program_id(&self, axis: u8) -> Tile<'_> {
        self.push1(Op::ProgramId { axis }, Type::scalar(DType::I32))
    }

    /// Grid size along `axis`.
    pub fn num_programs(&self, axis: u8) -> Tile<'_> {
        self.push1(Op::NumPrograms { axis }, Type::scalar(DType::I32))
    }

    /// `[start, ..., end - 1]` as an `i32` tile.
    pub fn arange(&self, start: i32, end: i32) -> Tile<'_> {
        let len = (end as i64 - start as i64).clamp(1, 1 << 20) as u32;
        self.push1(Op::Arange { start, end }, Type::tile(DType::I32, vec![len]))
    }

    /// A scalar constant of `dtype`.
    pub fn constant<'s>(&'s self, value: impl Operand<'s>, dtype: DType) -> Tile<'s> {
        let v = value.value_for(self, dtype);
        self.tile(v)
    }

    /// A tile of `shape` filled with `value`.
    pub fn full(&self, shape: &[u32], value: impl Into<Literal>, dtype: DType) -> Tile<'_> {
        let value = match (value.into(), dtype.is_float()) {
            (Literal::Int(i), true) => Literal::Float(i as f64),
            (v, _) => v,
        };
        let ty = Type::tile(dtype, shape.to_vec());
        self.push1(Op::Constant { value, ty: ty.clone() }, ty)
    }

    /// A tile of `shape` filled with zeros.
    pub fn zeros(&self, shape: &[u32], dtype: DType) -> Tile<'_> {
        let zero = match dtype {
            DType::F32 | DType::F16 | DType::BF16 => Literal::Float(0.0),
            DType::Bool => Literal::Bool(false),
            DType::I32 | DType::U32 | DType::I8 | DType::U8 => Literal::Int(0),
        };
        self.full(shape, zero, dtype)
    }

    // --- memory ---

    fn buffer_dtype(&self, buf: Buf) -> DType {
        self.state.borrow().kernel.buffer_dtype(buf.param).unwrap_or(DType::F32)
    }

    /// `buf[offsets]`.
    pub fn load(&self, buf: Buf, offsets: Tile<'_>) -> Tile<'_> {
        let fallback = self.ty(offsets.value).with_dtype(self.buffer_dtype(buf));
        self.push1(Op::Load { buffer: buf.param, offsets: offsets.value, mask: None, other: None }, fallback)
    }

    /// `buf[offsets]` where `mask`, else `other`. A scalar mask or offsets broadcast to the other's
    /// shape.
    pub fn load_masked<'s>(&'s self, buf: Buf, offsets: Tile<'s>, mask: Tile<'s>, other: impl Operand<'s>) -> Tile<'s> {
        let (offsets, mask) = self.broadcast_pair(offsets, mask);
        let dtype = self.buffer_dtype(buf);
        let other = other.value_for(self, dtype);
        let fallback = self.ty(offsets.value).with_dtype(dtype);
        let op = Op::Load { buffer: buf.param, offsets: offsets.value, mask: Some(mask.value), other: Some(other) };
        self.push1(op, fallback)
    }

    /// `buf[offsets] = value`; a scalar value is broadcast over the offsets.
    pub fn store<'s>(&'s self, buf: Buf, offsets: Tile<'s>, value: impl Operand<'s>) {
        let (offsets, value) = self.memory_operands(buf, offsets, value);
        self.push(Op::Store { buffer: buf.param, offsets: offsets.value, value: value.value, mask: None }, Vec::new());
    }

    /// `buf[offsets] = value` where `mask`.
    pub fn store_masked<'s>(&'s self, buf: Buf, offsets: Tile<'s>, value: impl Operand<'s>, mask: Tile<'s>) {
        let (offsets, value) = self.memory_operands(buf, offsets, value);
        let (offsets, mask) = self.broadcast_pair(offsets, mask);
        let value = value.broadcast_to(&self.ty(offsets.value).shape);
        let op = Op::Store { buffer: buf.param, offsets: offsets.value, value: value.value, mask: Some(mask.value) };
        self.push(op, Vec::new());
    }

    /// `buf[offsets] += value` atomically, where `mask` if given.
    pub fn atomic_add<'s>(&'s self, buf: Buf, offsets: Tile<'s>, value: impl Operand<'s>, mask: Option<Tile<'s>>) {
        let (mut offsets, mut value) = self.memory_operands(buf, offsets, value);
        let mask = mask.map(|m| {
            let (o, m) = self.broadcast_pair(offsets, m);
            offsets = o;
            value = value.broadcast_to(&self.ty(o.value).shape);
            m.value
        });
        self.push(Op::AtomicAdd { buffer: buf.param, offsets: offsets.value, value: value.value, mask }, Vec::new());
    }

    /// A hint that `buf[offsets[i] .. offsets[i] + len]` will be read soon, for each row start of
    /// the 1-D `offsets` where `mask` is true (see [`Op::Prefetch`]).
    pub fn prefetch<'s>(&'s self, buf: Buf, offsets: Tile<'s>, mask: Option<Tile<'s>>, len: u32) {
        // A scalar mask applies to every row; any other mismatch is the verifier's to report.
        let mask = mask.map(|m| m.broadcast_to(&self.ty(offsets.value).shape).value);
        self.push(Op::Prefetch { buffer: buf.param, offsets: offsets.value, mask, len }, Vec::new());
    }

    fn memory_operands<'s>(&'s self, buf: Buf, offsets: Tile<'s>, value: impl Operand<'s>) -> (Tile<'s>, Tile<'s>) {
        let value = self.tile(value.value_for(self, self.buffer_dtype(buf)));
        self.broadcast_pair(offsets, value)
    }

    /// Broadcasts two tiles to their common shape (recording an error if there is none).
    fn broadcast_pair<'s>(&'s self, a: Tile<'s>, b: Tile<'s>) -> (Tile<'s>, Tile<'s>) {
        let (sa, sb) = (self.ty(a.value).shape, self.ty(b.value).shape);
        if sa == sb {
            return (a, b);
        }
        match sa.broadcast_with(&sb) {
            Some(s) => (a.broadcast_to(&s), b.broadcast_to(&s)),
            None => {
                self.error(format!("shapes {sa} and {sb} do not broadcast together"));
                (a, b)
            }
        }
    }

    // --- math that takes several tiles ---

    /// `acc + lhs · rhs`.
    pub fn dot<'s>(&'s self, lhs: Tile<'s>, rhs: Tile<'s>, acc: Tile<'s>) -> Tile<'s> {
        let fallback = self.ty(acc.value);
        self.push1(Op::Dot { lhs: lhs.value, rhs: rhs.value, acc: acc.value }, fallback)
    }

    /// `cond ? on_true : on_false`, broadcasting all three; a literal `on_false` takes the
    /// dtype of `on_true`.
    pub fn select<'s>(&'s self, cond: Tile<'s>, on_true: Tile<'s>, on_false: impl Operand<'s>) -> Tile<'s> {
        let on_false = self.tile(on_false.value_for(self, on_true.dtype()));
        let (t, f) = self.broadcast_pair(on_true, on_false);
        let (cond, t) = self.broadcast_pair(cond, t);
        let (cond, f) = self.broadcast_pair(cond, f);
        let fallback = self.ty(t.value);
        self.push1(Op::Select { cond: cond.value, on_true: t.value, on_false: f.value }, fallback)
    }

    // --- loops ---

    /// `for i in (start..end).step_by(step)` carrying `init`; `body` gets the induction variable
    /// and the carried values and returns the next carried values. Returns the final ones.
    pub fn for_range<'s, const N: usize>(
        &'s self,
        start: impl Operand<'s>,
        end: impl Operand<'s>,
        step: impl Operand<'s>,
        init: [Tile<'s>; N],
        body: impl FnOnce(Tile<'s>, [Tile<'s>; N]) -> [Tile<'s>; N],
    ) -> [Tile<'s>; N] {
        let start = start.value_for(self, DType::I32);
        let end = end.value_for(self, DType::I32);
        let step = step.value_for(self, DType::I32);
        let init_types: Vec<Type> = init.iter().map(|t| self.ty(t.value)).collect();
        let (block, args) = {
            let mut st = self.state.borrow_mut();
            let block = st.kernel.new_block();
            let mut args = Vec::with_capacity(N + 1);
            for (n, ty) in std::iter::once(Type::scalar(DType::I32)).chain(init_types.iter().cloned()).enumerate() {
                let v = st.kernel.new_value(ty, ValueDef::BlockArg(block, n as u32));
                args.push(v);
            }
            st.kernel.blocks[block.index()].args = args.clone();
            st.cursor.push(block);
            (block, args)
        };
        let carried: [Tile<'s>; N] = std::array::from_fn(|i| self.tile(args[i + 1]));
        let next = body(self.tile(args[0]), carried);
        self.push(Op::Yield { values: next.iter().map(|t| t.value).collect() }, Vec::new());
        self.state.borrow_mut().cursor.pop();
        let op = Op::For { start, end, step, init: init.iter().map(|t| t.value).collect(), body: block };
        let results = self.push(op, init_types);
        std::array::from_fn(|i| self.tile(results[i]))
    }

    /// Finishes the kernel and verifies it.
    pub fn finish(self) -> Result<Kernel, BuildError> {
        let st = self.state.into_inner();
        if !st.errors.is_empty() {
            return Err(BuildError::Build { kernel: st.kernel.name.clone(), errors: st.errors });
        }
        verify(&st.kernel)?;
        Ok(st.kernel)
    }
}

impl<'b> Tile<'b> {
    /// The value this handle stands for.
    pub fn value(self) -> Value {
        self.value
    }

    pub fn ty(self) -> Type {
        self.b.ty(self.value)
    }

    pub fn dtype(self) -> DType {
        self.ty().dtype
    }

    pub fn shape(self) -> Shape {
        self.ty().shape
    }

    /// Names the value in the text form (`%acc` instead of `%17`).
    pub fn named(self, name: &str) -> Tile<'b> {
        self.b.state.borrow_mut().kernel.values[self.value.index()].name = Some(name.to_string());
        self
    }

    fn unary(self, op: UnaryOp) -> Tile<'b> {
        self.b.push1(Op::Unary { op, arg: self.value }, self.ty())
    }

    fn binary(self, op: BinaryOp, rhs: impl Operand<'b>) -> Tile<'b> {
        let rhs = self.b.tile(rhs.value_for(self.b, self.dtype()));
        let (l, r) = self.b.broadcast_pair(self, rhs);
        self.b.push1(Op::Binary { op, lhs: l.value, rhs: r.value }, l.ty())
    }

    /// `literal op tile`, for operators with the literal on the left.
    fn binary_rev(self, op: BinaryOp, lhs: impl Operand<'b>) -> Tile<'b> {
        let lhs = self.b.tile(lhs.value_for(self.b, self.dtype()));
        lhs.binary(op, self)
    }

    fn compare(self, pred: CmpPred, rhs: impl Operand<'b>) -> Tile<'b> {
        let rhs = self.b.tile(rhs.value_for(self.b, self.dtype()));
        let (l, r) = self.b.broadcast_pair(self, rhs);
        self.b.push1(Op::Compare { pred, lhs: l.value, rhs: r.value }, l.ty().with_dtype(DType::Bool))
    }

    pub fn exp2(self) -> Tile<'b> {
        self.unary(UnaryOp::Exp2)
    }
    /// `e^x`, as `exp2(x * log2(e))`.
    pub fn exp(self) -> Tile<'b> {
        (self * std::f64::consts::LOG2_E).exp2()
    }
    pub fn log2(self) -> Tile<'b> {
        self.unary(UnaryOp::Log2)
    }
    pub fn sqrt(self) -> Tile<'b> {
        self.unary(UnaryOp::Sqrt)
    }
    pub fn rsqrt(self) -> Tile<'b> {
        self.unary(UnaryOp::Rsqrt)
    }
    pub fn recip(self) -> Tile<'b> {
        self.unary(UnaryOp::Recip)
    }
    pub fn abs(self) -> Tile<'b> {
        self.unary(UnaryOp::Abs)
    }
    /// Elementwise minimum.
    pub fn minimum(self, rhs: impl Operand<'b>) -> Tile<'b> {
        self.binary(BinaryOp::Min, rhs)
    }
    /// Elementwise maximum.
    pub fn maximum(self, rhs: impl Operand<'b>) -> Tile<'b> {
        self.binary(BinaryOp::Max, rhs)
    }
    pub fn eq(self, rhs: impl Operand<'b>) -> Tile<'b> {
        self.compare(CmpPred::Eq, rhs)
    }
    pub fn ne(self, rhs: impl Operand<'b>) -> Tile<'b> {
        self.compare(CmpPred::Ne, rhs)
    }
    pub fn lt(self, rhs: impl Operand<'b>) -> Tile<'b> {
        self.compare(CmpPred::Lt, rhs)
    }
    pub fn le(self, rhs: impl Operand<'b>) -> Tile<'b> {
        self.compare(CmpPred::Le, rhs)
    }
    pub fn gt(self, rhs: impl Operand<'b>) -> Tile<'b> {
        self.compare(CmpPred::Gt, rhs)
    }
    pub fn ge(self, rhs: impl Operand<'b>) -> Tile<'b> {
        self.compare(CmpPred::Ge, rhs)
    }

    pub fn cast(self, to: DType) -> Tile<'b> {
        self.b.push1(Op::Cast { arg: self.value, to }, self.ty().with_dtype(to))
    }
    pub fn bitcast(self, to: DType) -> Tile<'b> {
        self.b.push1(Op::Bitcast { arg: self.value, to }, self.ty().with_dtype(to))
    }

    /// Broadcasts to `shape` (no-op if already that shape).
    pub fn broadcast_to(self, shape: &Shape) -> Tile<'b> {
        let ty = self.ty();
        if &ty.shape == shape {
            return self;
        }
        self.b.push1(
            Op::Broadcast { arg: self.value, shape: shape.clone() },
            Type { dtype: ty.dtype, shape: shape.clone() },
        )
    }
    pub fn reshape(self, dims: &[u32]) -> Tile<'b> {
        let shape = Shape::new(dims.to_vec());
        self.b.push1(Op::Reshape { arg: self.value, shape: shape.clone() }, Type { dtype: self.dtype(), shape })
    }
    pub fn expand_dims(self, axis: u32) -> Tile<'b> {
        let ty = self.ty();
        let mut dims = ty.shape.0.clone();
        dims.insert((axis as usize).min(dims.len()), 1);
        self.b.push1(Op::ExpandDims { arg: self.value, axis }, Type { dtype: ty.dtype, shape: Shape(dims) })
    }
    /// `x[:, None]`: a column of a 1-D tile.
    pub fn col(self) -> Tile<'b> {
        self.expand_dims(1)
    }
    /// `x[None, :]`: a row of a 1-D tile.
    pub fn row(self) -> Tile<'b> {
        self.expand_dims(0)
    }

    fn reduce(self, op: ReduceOp, axis: u32) -> Tile<'b> {
        let ty = self.ty();
        let mut dims = ty.shape.0.clone();
        if (axis as usize) < dims.len() {
            dims.remove(axis as usize);
        }
        self.b.push1(Op::Reduce { op, arg: self.value, axis }, Type { dtype: ty.dtype, shape: Shape(dims) })
    }
    /// Sum along `axis`, which is removed.
    pub fn sum(self, axis: u32) -> Tile<'b> {
        self.reduce(ReduceOp::Sum, axis)
    }
    /// Maximum along `axis`, which is removed.
    pub fn max(self, axis: u32) -> Tile<'b> {
        self.reduce(ReduceOp::Max, axis)
    }
}

macro_rules! binary_operator {
    ($($trait:ident $method:ident $op:ident),*) => {$(
        impl<'b, R: Operand<'b>> ops::$trait<R> for Tile<'b> {
            type Output = Tile<'b>;
            fn $method(self, rhs: R) -> Tile<'b> {
                self.binary(BinaryOp::$op, rhs)
            }
        }
        binary_operator!(@rev $trait $method $op: i32, u32, f32, f64);
    )*};
    (@rev $trait:ident $method:ident $op:ident: $($lit:ty),*) => {$(
        impl<'b> ops::$trait<Tile<'b>> for $lit {
            type Output = Tile<'b>;
            fn $method(self, rhs: Tile<'b>) -> Tile<'b> {
                rhs.binary_rev(BinaryOp::$op, self)
            }
        }
    )*};
}
binary_operator!(
    Add add Add, Sub sub Sub, Mul mul Mul, Div div Div, Rem rem Rem,
    BitAnd bitand And, BitOr bitor Or, BitXor bitxor Xor, Shl shl Shl, Shr shr Shr
);

impl<'b> ops::Neg for Tile<'b> {
    type Output = Tile<'b>;
    fn neg(self) -> Tile<'b> {
        self.unary(UnaryOp::Neg)
    }
}

impl<'b> ops::Not for Tile<'b> {
    type Output = Tile<'b>;
    fn not(self) -> Tile<'b> {
        self.unary(UnaryOp::Not)
    }
}

impl From<i32> for Literal {
    fn from(v: i32) -> Literal {
        Literal::Int(v.into())
    }
}
impl From<i64> for Literal {
    fn from(v: i64) -> Literal {
        Literal::Int(v)
    }
}
impl From<u32> for Literal {
    fn from(v: u32) -> Literal {
        Literal::Int(v.into())
    }
}
impl From<u8> for Literal {
    fn from(v: u8) -> Literal {
        Literal::Int(v.into())
    }
}
impl From<i8> for Literal {
    fn from(v: i8) -> Literal {
        Literal::Int(v.into())
    }
}
impl From<f32> for Literal {
    fn from(v: f32) -> Literal {
        Literal::Float(v.into())
    }
}
impl From<f64> for Literal {
    fn from(v: f64) -> Literal {
        Literal::Float(v)
    }
}
impl From<bool> for Literal {
    fn from(v: bool) -> Literal {
        Literal::Bool(v)
    }
}
