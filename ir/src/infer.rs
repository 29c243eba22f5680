//! Typing rules: the result types of an op given its operands. Shared by the builder (which
//! assigns types) and the verifier (which checks declared types against these).

use crate::op::{BinaryOp, CmpPred, Literal, Op, ReduceOp, UnaryOp};
use crate::{DType, Kernel, Shape, Type};

/// Largest number of elements a tile may have. Keeps every tile a size the interpreter and the
/// backends can hold, and turns absurd shapes into verifier errors instead of allocations.
pub const MAX_TILE_ELEMENTS: u64 = 1 << 24;

/// Largest grid axis a kernel may name.
pub const MAX_GRID_AXES: u8 = 3;

/// Result types of `op`, or a message saying which rule it breaks.
///
/// Operand values must exist in `kernel` (the verifier checks that first).
pub fn result_types(kernel: &Kernel, op: &Op) -> Result<Vec<Type>, String> {
    let ty = |v: crate::Value| kernel.ty(v).clone();
    let one = |t: Type| Ok(vec![t]);
    match op {
        Op::ProgramId { axis } | Op::NumPrograms { axis } => {
            if *axis >= MAX_GRID_AXES {
                return Err(format!("grid axis {axis} out of range (0..{MAX_GRID_AXES})"));
            }
            one(Type::scalar(DType::I32))
        }
        Op::Arange { start, end } => {
            if end <= start {
                return Err(format!("arange needs start < end, got {start}..{end}"));
            }
            let len = (*end as i64 - *start as i64) as u64;
            check_numel(len)?;
            one(Type::tile(DType::I32, vec![len as u32]))
        }
        Op::Constant { value, ty } => {
            check_literal(*value, ty.dtype)?;
            check_numel(ty.shape.numel())?;
            one(ty.clone())
        }
        Op::Unary { op, arg } => {
            let t = ty(*arg);
            let ok = match op {
                UnaryOp::Neg | UnaryOp::Abs => !t.dtype.is_bool(),
                UnaryOp::Not => t.dtype.is_int() || t.dtype.is_bool(),
                UnaryOp::Exp2 | UnaryOp::Log2 | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => t.dtype.is_float(),
            };
            if !ok {
                return Err(format!("{} is not defined on {}", op.name(), t.dtype));
            }
            one(t)
        }
        Op::Binary { op, lhs, rhs } => {
            let (a, b) = (ty(*lhs), ty(*rhs));
            same_type(op.name(), &a, &b)?;
            let ok = match op {
                BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Rem
                | BinaryOp::Min
                | BinaryOp::Max => !a.dtype.is_bool(),
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => a.dtype.is_int() || a.dtype.is_bool(),
                BinaryOp::Shl | BinaryOp::Shr => a.dtype.is_int(),
            };
            if !ok {
                return Err(format!("{} is not defined on {}", op.name(), a.dtype));
            }
            one(a)
        }
        Op::Compare { pred, lhs, rhs } => {
            let (a, b) = (ty(*lhs), ty(*rhs));
            same_type("cmp", &a, &b)?;
            let ordered = match pred {
                CmpPred::Eq | CmpPred::Ne => false,
                CmpPred::Lt | CmpPred::Le | CmpPred::Gt | CmpPred::Ge => true,
            };
            if ordered && a.dtype.is_bool() {
                return Err(format!("cmp {} is not defined on bool", pred.name()));
            }
            one(a.with_dtype(DType::Bool))
        }
        Op::Select { cond, on_true, on_false } => {
            let (c, a, b) = (ty(*cond), ty(*on_true), ty(*on_false));
            if c.dtype != DType::Bool {
                return Err(format!("select condition must be bool, got {c}"));
            }
            same_type("select", &a, &b)?;
            if c.shape != a.shape {
                return Err(format!("select condition shape {} differs from value shape {}", c.shape, a.shape));
            }
            one(a)
        }
        Op::Cast { arg, to } => one(ty(*arg).with_dtype(*to)),
        Op::Bitcast { arg, to } => {
            let t = ty(*arg);
            if t.dtype.is_bool() || to.is_bool() || t.dtype.bits() != to.bits() {
                return Err(format!("bitcast needs two non-bool dtypes of one width, got {} -> {to}", t.dtype));
            }
            one(t.with_dtype(*to))
        }
        Op::Broadcast { arg, shape } => {
            let t = ty(*arg);
            check_numel(shape.numel())?;
            if !t.shape.broadcasts_to(shape) {
                return Err(format!("shape {} does not broadcast to {shape}", t.shape));
            }
            one(Type { dtype: t.dtype, shape: shape.clone() })
        }
        Op::Reshape { arg, shape } => {
            let t = ty(*arg);
            if t.shape.numel() != shape.numel() {
                return Err(format!(
                    "reshape from {} ({} elements) to {shape} ({} elements)",
                    t.shape,
                    t.shape.numel(),
                    shape.numel()
                ));
            }
            one(Type { dtype: t.dtype, shape: shape.clone() })
        }
        Op::ExpandDims { arg, axis } => {
            let t = ty(*arg);
            if *axis as usize > t.shape.rank() {
                return Err(format!("expand_dims axis {axis} out of range for rank {}", t.shape.rank()));
            }
            let mut dims = t.shape.0.clone();
            dims.insert(*axis as usize, 1);
            one(Type { dtype: t.dtype, shape: Shape(dims) })
        }
        Op::Reduce { op, arg, axis } => {
            let t = ty(*arg);
            if *axis as usize >= t.shape.rank() {
                return Err(format!("reduction axis {axis} out of range for {}", t));
            }
            let ok = match op {
                ReduceOp::Sum | ReduceOp::Max => !t.dtype.is_bool(),
            };
            if !ok {
                return Err(format!("reduce_{} is not defined on {}", op.name(), t.dtype));
            }
            let mut dims = t.shape.0.clone();
            dims.remove(*axis as usize);
            one(Type { dtype: t.dtype, shape: Shape(dims) })
        }
        Op::Dot { lhs, rhs, acc } => {
            let (a, b, c) = (ty(*lhs), ty(*rhs), ty(*acc));
            if a.shape.rank() != 2 || b.shape.rank() != 2 || c.shape.rank() != 2 {
                return Err(format!("dot needs rank-2 operands, got {a}, {b}, {c}"));
            }
            let (m, k) = (a.shape.0[0], a.shape.0[1]);
            let (k2, n) = (b.shape.0[0], b.shape.0[1]);
            if k != k2 {
                return Err(format!("dot inner dims differ: {a} · {b}"));
            }
            if c.shape.0 != [m, n] {
                return Err(format!("dot accumulator is {c}, expected [{m}, {n}]"));
            }
            if a.dtype != b.dtype {
                return Err(format!("dot operand dtypes differ: {} and {}", a.dtype, b.dtype));
            }
            let want_acc = match a.dtype {
                DType::F32 | DType::F16 | DType::BF16 => DType::F32,
                DType::I8 | DType::U8 => DType::I32,
                DType::I32 | DType::U32 | DType::Bool => {
                    return Err(format!("dot is not defined on {}", a.dtype));
                }
            };
            if c.dtype != want_acc {
                return Err(format!("dot of {} accumulates into {want_acc}, got {}", a.dtype, c.dtype));
            }
            one(c)
        }
        Op::Load { buffer, offsets, mask, other } => {
            let dtype = buffer_dtype(kernel, *buffer)?;
            let o = ty(*offsets);
            check_offsets(&o)?;
            if let Some(m) = mask {
                check_mask(&ty(*m), &o.shape)?;
            }
            if let Some(other) = other {
                let t = ty(*other);
                if t.dtype != dtype || !(t.shape.is_scalar() || t.shape == o.shape) {
                    return Err(format!("load `other` must be {dtype} scalar or {}, got {t}", o.with_dtype(dtype)));
                }
            }
            one(o.with_dtype(dtype))
        }
        Op::Store { buffer, offsets, value, mask } | Op::AtomicAdd { buffer, offsets, value, mask } => {
            let dtype = buffer_dtype(kernel, *buffer)?;
            let o = ty(*offsets);
            check_offsets(&o)?;
            let v = ty(*value);
            if v.dtype != dtype {
                return Err(format!("{} of {} into a buffer of {dtype}", op.name(), v.dtype));
            }
            if v.shape != o.shape {
                return Err(format!("{} value shape {} differs from offsets shape {}", op.name(), v.shape, o.shape));
            }
            if let Some(m) = mask {
                check_mask(&ty(*m), &o.shape)?;
            }
            if matches!(op, Op::AtomicAdd { .. }) && !matches!(dtype, DType::F32 | DType::I32 | DType::U32) {
                return Err(format!("atomic_add supports f32, i32 and u32 buffers, not {dtype}"));
            }
            Ok(Vec::new())
        }
        Op::Prefetch { buffer, offsets, mask, len } => {
            buffer_dtype(kernel, *buffer)?;
            let o = ty(*offsets);
            check_offsets(&o)?;
            if o.shape.rank() != 1 {
                return Err(format!("prefetch offsets must be one row start per element of a 1-D tile, got {o}"));
            }
            if let Some(m) = mask {
                check_mask(&ty(*m), &o.shape)?;
            }
            if *len == 0 {
                return Err("prefetch of rows of 0 elements".into());
            }
            Ok(Vec::new())
        }
        Op::For { start, end, step, init, .. } => {
            for (what, v) in [("start", start), ("end", end), ("step", step)] {
                let t = ty(*v);
                if t != Type::scalar(DType::I32) {
                    return Err(format!("loop {what} must be an i32 scalar, got {t}"));
                }
            }
            Ok(init.iter().map(|v| ty(*v)).collect())
        }
        Op::Yield { .. } => Ok(Vec::new()),
    }
}

fn check_numel(numel: u64) -> Result<(), String> {
    if numel > MAX_TILE_ELEMENTS {
        return Err(format!("tile of {numel} elements exceeds the limit of {MAX_TILE_ELEMENTS}"));
    }
    Ok(())
}

fn same_type(what: &str, a: &Type, b: &Type) -> Result<(), String> {
    if a != b {
        return Err(format!("{what} operands must have one type, got {a} and {b}"));
    }
    Ok(())
}

fn buffer_dtype(kernel: &Kernel, buffer: crate::Param) -> Result<DType, String> {
    kernel.buffer_dtype(buffer).ok_or_else(|| format!("{buffer} is not a buffer parameter"))
}

fn check_offsets(t: &Type) -> Result<(), String> {
    match t.dtype {
        DType::I32 | DType::U32 => Ok(()),
        DType::F32 | DType::F16 | DType::BF16 | DType::I8 | DType::U8 | DType::Bool => {
            Err(format!("offsets must be i32 or u32, got {t}"))
        }
    }
}

fn check_mask(mask: &Type, shape: &Shape) -> Result<(), String> {
    if mask.dtype != DType::Bool || &mask.shape != shape {
        return Err(format!("mask must be {}, got {mask}", Type { dtype: DType::Bool, shape: shape.clone() }));
    }
    Ok(())
}

/// Whether `lit` is a valid constant of `dtype`: int literals for integer dtypes and in range,
/// float literals for float dtypes, bool literals for bool.
pub fn check_literal(lit: Literal, dtype: DType) -> Result<(), String> {
    match (lit, dtype) {
        (Literal::Float(_), DType::F32 | DType::F16 | DType::BF16) => Ok(()),
        (Literal::Bool(_), DType::Bool) => Ok(()),
        (Literal::Int(i), DType::I32 | DType::U32 | DType::I8 | DType::U8) => {
            let (lo, hi) = dtype.int_range().unwrap_or((i64::MIN, i64::MAX));
            if i < lo || i > hi {
                return Err(format!("constant {i} out of range for {dtype}"));
            }
            Ok(())
        }
        (lit, dtype) => Err(format!("literal {lit:?} is not a {dtype} constant")),
    }
}
