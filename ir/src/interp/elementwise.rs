//! Elementwise semantics: unary, binary, compare, select, cast and bitcast on [`Data`].
//!
//! Each function takes operands already of one shape (the verifier guarantees it) and returns the
//! result's elements. The rules are the module doc of `interp`; this file is their code.

use super::value::{Data, Int, Kind};
use super::Fault;
use crate::op::{BinaryOp, CmpPred, UnaryOp};

pub(crate) fn unary(op: UnaryOp, arg: &Data) -> Result<Data, Fault> {
    match arg {
        Data::F(f, v) => {
            let f = *f;
            let g: fn(f64) -> f64 = match op {
                // Sign-bit operations: exact, and they leave a NaN's payload alone.
                UnaryOp::Neg => return Ok(Data::F(f, v.iter().map(|&x| -x).collect())),
                UnaryOp::Abs => return Ok(Data::F(f, v.iter().map(|&x| x.abs()).collect())),
                UnaryOp::Not => return Err(undefined(op.name(), arg)),
                UnaryOp::Exp2 => f64::exp2,
                UnaryOp::Log2 => f64::log2,
                UnaryOp::Sqrt => f64::sqrt,
                UnaryOp::Rsqrt => |x| 1.0 / x.sqrt(),
                UnaryOp::Recip => |x| 1.0 / x,
            };
            Ok(Data::F(f, v.iter().map(|&x| f.round(g(x))).collect()))
        }
        Data::I(t, v) => {
            let t = *t;
            let g: fn(i64) -> i64 = match op {
                UnaryOp::Neg => i64::wrapping_neg,
                UnaryOp::Not => |x| !x,
                // Unsigned values are held non-negative, so this is the identity for them; for
                // signed MIN the result wraps back to MIN.
                UnaryOp::Abs => i64::wrapping_abs,
                UnaryOp::Exp2 | UnaryOp::Log2 | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => {
                    return Err(undefined(op.name(), arg))
                }
            };
            Ok(Data::I(t, v.iter().map(|&x| t.wrap(g(x))).collect()))
        }
        Data::B(v) => match op {
            UnaryOp::Not => Ok(Data::B(v.iter().map(|&x| !x).collect())),
            UnaryOp::Neg
            | UnaryOp::Abs
            | UnaryOp::Exp2
            | UnaryOp::Log2
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Recip => Err(undefined(op.name(), arg)),
        },
    }
}

pub(crate) fn binary(op: BinaryOp, lhs: &Data, rhs: &Data) -> Result<Data, Fault> {
    check_len(lhs, rhs)?;
    match (lhs, rhs) {
        (Data::F(f, a), Data::F(_, b)) => {
            let f = *f;
            let g: fn(f64, f64) -> f64 = match op {
                BinaryOp::Add => |x, y| x + y,
                BinaryOp::Sub => |x, y| x - y,
                BinaryOp::Mul => |x, y| x * y,
                BinaryOp::Div => |x, y| x / y,
                // `%` on f64 is C's fmod: exact, with the sign of the dividend.
                BinaryOp::Rem => |x, y| x % y,
                BinaryOp::Min => min_num,
                BinaryOp::Max => max_num,
                BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::Shl | BinaryOp::Shr => {
                    return Err(undefined(op.name(), lhs))
                }
            };
            Ok(Data::F(f, a.iter().zip(b).map(|(&x, &y)| f.round(g(x, y))).collect()))
        }
        (Data::I(t, a), Data::I(_, b)) => {
            let t = *t;
            let out: Result<Vec<i64>, Fault> =
                a.iter().zip(b).map(|(&x, &y)| int_binary(op, t, x, y).map(|r| t.wrap(r))).collect();
            Ok(Data::I(t, out?))
        }
        (Data::B(a), Data::B(b)) => {
            let g: fn(bool, bool) -> bool = match op {
                BinaryOp::And => |x, y| x & y,
                BinaryOp::Or => |x, y| x | y,
                BinaryOp::Xor => |x, y| x ^ y,
                BinaryOp::Add
                | BinaryOp::Sub
                | BinaryOp::Mul
                | BinaryOp::Div
                | BinaryOp::Rem
                | BinaryOp::Min
                | BinaryOp::Max
                | BinaryOp::Shl
                | BinaryOp::Shr => return Err(undefined(op.name(), lhs)),
            };
            Ok(Data::B(a.iter().zip(b).map(|(&x, &y)| g(x, y)).collect()))
        }
        (Data::F(..) | Data::I(..) | Data::B(_), _) => Err(mismatch(op.name(), lhs, rhs)),
    }
}

/// One integer op on held (wrapped) values; the caller wraps the result. Values are at most 32
/// bits wide, so nothing here overflows `i64` except `mul` of two large `u32`, which wraps
/// modulo 2^64 and so still truncates to the right low bits.
fn int_binary(op: BinaryOp, t: Int, x: i64, y: i64) -> Result<i64, Fault> {
    let width = u64::from(t.width());
    // The shift amount is the rhs's bit pattern read as unsigned.
    let amount = || u64::from(t.encode(y));
    Ok(match op {
        BinaryOp::Add => x.wrapping_add(y),
        BinaryOp::Sub => x.wrapping_sub(y),
        BinaryOp::Mul => x.wrapping_mul(y),
        // i64 truncates toward zero and gives the remainder the dividend's sign; MIN / -1 of a
        // 32-bit type is 2^31 here, which the caller wraps back to MIN.
        BinaryOp::Div => x.checked_div(y).ok_or(Fault::DivisionByZero)?,
        BinaryOp::Rem => x.checked_rem(y).ok_or(Fault::DivisionByZero)?,
        BinaryOp::Min => x.min(y),
        BinaryOp::Max => x.max(y),
        BinaryOp::And => x & y,
        BinaryOp::Or => x | y,
        BinaryOp::Xor => x ^ y,
        BinaryOp::Shl => {
            let s = amount();
            if s >= width {
                0
            } else {
                x << s
            }
        }
        // Signed values are held sign-extended, so `>>` on i64 is the arithmetic shift; unsigned
        // values are held non-negative, so it is the logical one.
        BinaryOp::Shr => {
            let s = amount();
            if s >= width {
                if x < 0 {
                    -1
                } else {
                    0
                }
            } else {
                x >> s
            }
        }
    })
}

/// IEEE minNum: a NaN operand is ignored unless both are NaN; -0 counts as below +0.
fn min_num(x: f64, y: f64) -> f64 {
    if x.is_nan() {
        y
    } else if y.is_nan() || x < y || (x == y && x.is_sign_negative()) {
        x
    } else {
        y
    }
}

/// IEEE maxNum: a NaN operand is ignored unless both are NaN; +0 counts as above -0.
pub(crate) fn max_num(x: f64, y: f64) -> f64 {
    if x.is_nan() {
        y
    } else if y.is_nan() || x > y || (x == y && x.is_sign_positive()) {
        x
    } else {
        y
    }
}

pub(crate) fn compare(pred: CmpPred, lhs: &Data, rhs: &Data) -> Result<Data, Fault> {
    check_len(lhs, rhs)?;
    let out = match (lhs, rhs) {
        // IEEE comparisons: with a NaN operand only `ne` is true.
        (Data::F(_, a), Data::F(_, b)) => cmp_all(pred, a, b),
        (Data::I(_, a), Data::I(_, b)) => cmp_all(pred, a, b),
        // The verifier only admits eq / ne on bool; the others order false before true.
        (Data::B(a), Data::B(b)) => cmp_all(pred, a, b),
        (Data::F(..) | Data::I(..) | Data::B(_), _) => return Err(mismatch("cmp", lhs, rhs)),
    };
    Ok(Data::B(out))
}

fn cmp_all<T: PartialOrd>(pred: CmpPred, a: &[T], b: &[T]) -> Vec<bool> {
    let g: fn(&T, &T) -> bool = match pred {
        CmpPred::Eq => |x, y| x == y,
        CmpPred::Ne => |x, y| x != y,
        CmpPred::Lt => |x, y| x < y,
        CmpPred::Le => |x, y| x <= y,
        CmpPred::Gt => |x, y| x > y,
        CmpPred::Ge => |x, y| x >= y,
    };
    a.iter().zip(b).map(|(x, y)| g(x, y)).collect()
}

pub(crate) fn select(cond: &Data, on_true: &Data, on_false: &Data) -> Result<Data, Fault> {
    let Data::B(c) = cond else {
        return Err(Fault::Internal(format!("select condition holds {} elements", cond.kind_name())));
    };
    check_len(on_true, on_false)?;
    if c.len() != on_true.len() {
        return Err(Fault::Internal("select condition and values differ in length".into()));
    }
    fn pick<T: Copy>(c: &[bool], a: &[T], b: &[T]) -> Vec<T> {
        c.iter().zip(a.iter().zip(b)).map(|(&c, (&x, &y))| if c { x } else { y }).collect()
    }
    Ok(match (on_true, on_false) {
        (Data::F(f, a), Data::F(_, b)) => Data::F(*f, pick(c, a, b)),
        (Data::I(t, a), Data::I(_, b)) => Data::I(*t, pick(c, a, b)),
        (Data::B(a), Data::B(b)) => Data::B(pick(c, a, b)),
        (Data::F(..) | Data::I(..) | Data::B(_), _) => return Err(mismatch("select", on_true, on_false)),
    })
}

/// Numeric conversion to `to`.
pub(crate) fn cast(arg: &Data, to: Kind) -> Data {
    match (arg, to) {
        (Data::F(_, v), Kind::Float(g)) => Data::F(g, v.iter().map(|&x| g.round(x)).collect()),
        (Data::F(_, v), Kind::Int(t)) => Data::I(t, v.iter().map(|&x| t.saturate(x)).collect()),
        // NaN != 0, so NaN casts to true.
        (Data::F(_, v), Kind::Bool) => Data::B(v.iter().map(|&x| x != 0.0).collect()),
        (Data::I(_, v), Kind::Float(g)) => Data::F(g, v.iter().map(|&x| g.round(x as f64)).collect()),
        // Held values are already sign- or zero-extended by the source's signedness.
        (Data::I(_, v), Kind::Int(t)) => Data::I(t, v.iter().map(|&x| t.wrap(x)).collect()),
        (Data::I(_, v), Kind::Bool) => Data::B(v.iter().map(|&x| x != 0).collect()),
        (Data::B(v), Kind::Float(g)) => Data::F(g, v.iter().map(|&x| f64::from(u8::from(x))).collect()),
        (Data::B(v), Kind::Int(t)) => Data::I(t, v.iter().map(|&x| i64::from(x)).collect()),
        (Data::B(v), Kind::Bool) => Data::B(v.clone()),
    }
}

/// Reinterpretation of each element's bits as `to`, which has the same width.
pub(crate) fn bitcast(arg: &Data, to: Kind) -> Result<Data, Fault> {
    let (width, bits): (u32, Vec<u32>) = match arg {
        Data::F(f, v) => (f.width(), v.iter().map(|&x| f.encode(x)).collect()),
        Data::I(t, v) => (t.width(), v.iter().map(|&x| t.encode(x)).collect()),
        Data::B(_) => return Err(Fault::Internal("bitcast of bool".into())),
    };
    match to {
        Kind::Float(g) if g.width() == width => Ok(Data::F(g, bits.into_iter().map(|b| g.decode(b)).collect())),
        Kind::Int(t) if t.width() == width => Ok(Data::I(t, bits.into_iter().map(|b| t.decode(b)).collect())),
        Kind::Float(_) | Kind::Int(_) | Kind::Bool => {
            Err(Fault::Internal(format!("bitcast of {width}-bit values to {to:?}")))
        }
    }
}

fn check_len(a: &Data, b: &Data) -> Result<(), Fault> {
    if a.len() != b.len() {
        return Err(Fault::Internal(format!("operands of {} and {} elements", a.len(), b.len())));
    }
    Ok(())
}

fn undefined(op: &str, arg: &Data) -> Fault {
    Fault::Internal(format!("{op} is not defined on {} values", arg.kind_name()))
}

fn mismatch(op: &str, a: &Data, b: &Data) -> Fault {
    Fault::Internal(format!("{op} of {} and {} values", a.kind_name(), b.kind_name()))
}
