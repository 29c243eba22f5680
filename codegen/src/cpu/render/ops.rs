//! The per-element C of every elementwise op, cast and constant: one table-like `match` each.
//!
//! Operands are C expressions of the *held* type ([`held_type`]): `float` for every float dtype
//! (f16 / bf16 values already rounded), the integer's own C type, `uint8_t` 0 / 1 for `bool`.
//! Integer arithmetic goes through `uint32_t` so that wrapping is defined C; results of f16 /
//! bf16 ops are rounded by the caller ([`rounds_result`]), since rounding a whole tile at once
//! is what vectorizes.

use kiln_ir::interp::HostBuffer;
use kiln_ir::{BinaryOp, CmpPred, DType, Literal, UnaryOp};

/// The C type a value of `dtype` is held in.
pub(crate) fn held_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => "float",
        DType::I32 => "int32_t",
        DType::U32 => "uint32_t",
        DType::I8 => "int8_t",
        DType::U8 | DType::Bool => "uint8_t",
    }
}

/// The C type a buffer of `dtype` stores (the ABI's element types).
pub(crate) fn storage_type(dtype: DType) -> &'static str {
    match dtype {
        DType::F16 | DType::BF16 => "uint16_t",
        DType::F32 | DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => held_type(dtype),
    }
}

/// The `kiln_scalar` member a scalar parameter of `dtype` is passed in.
pub(crate) fn scalar_member(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::F16 => "f16",
        DType::BF16 => "bf16",
        DType::I32 => "i32",
        DType::U32 => "u32",
        DType::I8 => "i8",
        DType::U8 => "u8",
        DType::Bool => "b",
    }
}

/// A buffer element (`e`, of the storage type) as a held value.
pub(crate) fn from_storage(dtype: DType, e: &str) -> String {
    match dtype {
        DType::F16 => format!("kiln_f16_value({e})"),
        DType::BF16 => format!("kiln_bf16_value({e})"),
        DType::Bool => format!("(uint8_t)({e} != 0)"),
        DType::F32 | DType::I32 | DType::U32 | DType::I8 | DType::U8 => e.to_string(),
    }
}

/// A held value as a buffer element.
pub(crate) fn to_storage(dtype: DType, x: &str) -> String {
    match dtype {
        DType::F16 => format!("kiln_f16_bits({x})"),
        DType::BF16 => format!("kiln_bf16_bits({x})"),
        DType::F32 | DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => x.to_string(),
    }
}

/// The C function that rounds one held float to `dtype`, if it needs rounding.
pub(crate) fn round_fn(dtype: DType) -> Option<&'static str> {
    match dtype {
        DType::F16 => Some("kiln_round_f16"),
        DType::BF16 => Some("kiln_round_bf16"),
        DType::F32 | DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => None,
    }
}

/// Bit width of an integer dtype.
fn width(dtype: DType) -> u32 {
    dtype.bits()
}

/// Whether a unary op's float result must be rounded to the dtype: arithmetic does, sign-bit
/// ops (which move NaN bits unchanged) do not.
pub(crate) fn unary_rounds(op: UnaryOp) -> bool {
    match op {
        UnaryOp::Neg | UnaryOp::Abs | UnaryOp::Not => false,
        UnaryOp::Exp2 | UnaryOp::Log2 | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => true,
    }
}

pub(crate) fn unary(op: UnaryOp, dtype: DType, a: &str) -> String {
    let t = held_type(dtype);
    if dtype.is_float() {
        return match op {
            UnaryOp::Neg => format!("(-{a})"),
            UnaryOp::Abs => format!("fabsf({a})"),
            // The prelude's exp2, the same arithmetic as the vector form (`render/vector.rs`).
            UnaryOp::Exp2 => format!("kiln_exp2f({a})"),
            UnaryOp::Log2 => format!("log2f({a})"),
            UnaryOp::Sqrt => format!("sqrtf({a})"),
            UnaryOp::Rsqrt => format!("(1.0f / sqrtf({a}))"),
            UnaryOp::Recip => format!("(1.0f / {a})"),
            // The verifier rejects `not` on floats.
            UnaryOp::Not => format!("({a})"),
        };
    }
    if dtype.is_bool() {
        return match op {
            UnaryOp::Not => format!("(uint8_t)({a} ^ 1u)"),
            UnaryOp::Neg
            | UnaryOp::Abs
            | UnaryOp::Exp2
            | UnaryOp::Log2
            | UnaryOp::Sqrt
            | UnaryOp::Rsqrt
            | UnaryOp::Recip => a.to_string(),
        };
    }
    match op {
        UnaryOp::Neg => format!("({t})(0u - (uint32_t){a})"),
        UnaryOp::Not => format!("({t})~{a}"),
        UnaryOp::Abs if dtype.is_signed_int() => format!("({a} < 0 ? ({t})(0u - (uint32_t){a}) : {a})"),
        UnaryOp::Abs => a.to_string(),
        UnaryOp::Exp2 | UnaryOp::Log2 | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => a.to_string(),
    }
}

/// Whether a binary op's float result is rounded (min / max pick an operand but still quiet a
/// NaN in the interpreter, so they round too; rounding a representable value is exact).
pub(crate) fn binary(op: BinaryOp, dtype: DType, a: &str, b: &str) -> String {
    let t = held_type(dtype);
    if dtype.is_float() {
        return match op {
            BinaryOp::Add => format!("({a} + {b})"),
            BinaryOp::Sub => format!("({a} - {b})"),
            BinaryOp::Mul => format!("({a} * {b})"),
            BinaryOp::Div => format!("({a} / {b})"),
            BinaryOp::Rem => format!("fmodf({a}, {b})"),
            BinaryOp::Min => format!("kiln_minf({a}, {b})"),
            BinaryOp::Max => format!("kiln_maxf({a}, {b})"),
            // Bit ops on floats are rejected by the verifier.
            BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::Shl | BinaryOp::Shr => a.to_string(),
        };
    }
    if dtype.is_bool() {
        return match op {
            BinaryOp::And => format!("(uint8_t)({a} & {b})"),
            BinaryOp::Or => format!("(uint8_t)({a} | {b})"),
            BinaryOp::Xor => format!("(uint8_t)({a} ^ {b})"),
            BinaryOp::Add
            | BinaryOp::Sub
            | BinaryOp::Mul
            | BinaryOp::Div
            | BinaryOp::Rem
            | BinaryOp::Min
            | BinaryOp::Max
            | BinaryOp::Shl
            | BinaryOp::Shr => a.to_string(),
        };
    }
    let w = width(dtype);
    // The shift amount is the rhs's bit pattern read as unsigned.
    let amount = if w == 32 { format!("(uint32_t){b}") } else { format!("(uint32_t)(uint8_t){b}") };
    match op {
        BinaryOp::Add => format!("({t})((uint32_t){a} + (uint32_t){b})"),
        BinaryOp::Sub => format!("({t})((uint32_t){a} - (uint32_t){b})"),
        BinaryOp::Mul => format!("({t})((uint32_t){a} * (uint32_t){b})"),
        // The caller has checked for zero divisors. i32 MIN / -1 overflows C, so -1 negates; the
        // 8-bit types divide in int, where -128 / -1 = 128 wraps back to -128.
        BinaryOp::Div if dtype == DType::I32 => format!("({b} == -1 ? ({t})(0u - (uint32_t){a}) : {a} / {b})"),
        BinaryOp::Rem if dtype == DType::I32 => format!("({b} == -1 ? 0 : {a} % {b})"),
        BinaryOp::Div => format!("({t})({a} / {b})"),
        BinaryOp::Rem => format!("({t})({a} % {b})"),
        BinaryOp::Min => format!("({a} < {b} ? {a} : {b})"),
        BinaryOp::Max => format!("({a} > {b} ? {a} : {b})"),
        BinaryOp::And => format!("({t})({a} & {b})"),
        BinaryOp::Or => format!("({t})({a} | {b})"),
        BinaryOp::Xor => format!("({t})({a} ^ {b})"),
        BinaryOp::Shl => format!("({amount} >= {w}u ? ({t})0 : ({t})((uint32_t){a} << {amount}))"),
        // Signed: an arithmetic shift by at most width - 1 gives the sign fill for large amounts.
        BinaryOp::Shr if dtype.is_signed_int() => {
            format!("({t})({a} >> ({amount} >= {w}u ? {}u : {amount}))", w - 1)
        }
        BinaryOp::Shr => format!("({amount} >= {w}u ? ({t})0 : ({t})({a} >> {amount}))"),
    }
}

pub(crate) fn compare(pred: CmpPred, a: &str, b: &str) -> String {
    let op = match pred {
        CmpPred::Eq => "==",
        CmpPred::Ne => "!=",
        CmpPred::Lt => "<",
        CmpPred::Le => "<=",
        CmpPred::Gt => ">",
        CmpPred::Ge => ">=",
    };
    format!("(uint8_t)({a} {op} {b})")
}

/// `cast` from `from` to `to`. Float results to f16 / bf16 are rounded by the caller, except
/// where this already rounds from an exact integer (so no double rounding through f32).
pub(crate) fn cast(from: DType, to: DType, a: &str) -> String {
    let t = held_type(to);
    match (kind(from), kind(to)) {
        (Kind::Float, Kind::Float) => a.to_string(),
        (Kind::Float, Kind::Int) => match to {
            DType::I32 => format!("kiln_f2i32({a})"),
            DType::U32 => format!("kiln_f2u32({a})"),
            DType::I8 => format!("kiln_f2i8({a})"),
            DType::U8 => format!("kiln_f2u8({a})"),
            DType::F32 | DType::F16 | DType::BF16 | DType::Bool => a.to_string(),
        },
        (Kind::Float, Kind::Bool) => format!("(uint8_t)({a} != 0.0f)"),
        (Kind::Int, Kind::Float) => match (from, to) {
            (DType::I32 | DType::U32, DType::F16) => format!("kiln_int_to_f16((int64_t){a})"),
            (DType::I32 | DType::U32, DType::BF16) => format!("kiln_int_to_bf16((int64_t){a})"),
            _ => format!("(float){a}"),
        },
        // C converts to an integer type modulo 2^width (GCC documents this for signed targets).
        (Kind::Int, Kind::Int) | (Kind::Bool, Kind::Int) => format!("({t}){a}"),
        (Kind::Int, Kind::Bool) => format!("(uint8_t)({a} != 0)"),
        (Kind::Bool, Kind::Float) => format!("(float){a}"),
        (Kind::Bool, Kind::Bool) => a.to_string(),
    }
}

/// Whether `cast` to `to` leaves rounding to the caller.
pub(crate) fn cast_rounds(from: DType, to: DType) -> bool {
    to.is_float() && from.is_float()
}

/// `bitcast` between dtypes of one width.
pub(crate) fn bitcast(from: DType, to: DType, a: &str) -> String {
    match (from, to) {
        (DType::F32, DType::I32) => format!("(int32_t)kiln_f32_bits({a})"),
        (DType::F32, DType::U32) => format!("kiln_f32_bits({a})"),
        (DType::I32 | DType::U32, DType::F32) => format!("kiln_bits_f32((uint32_t){a})"),
        (DType::F16, DType::BF16) => format!("kiln_bf16_value(kiln_f16_bits({a}))"),
        (DType::BF16, DType::F16) => format!("kiln_f16_value(kiln_bf16_bits({a}))"),
        (f, t) if f == t => a.to_string(),
        // i32 <-> u32 and i8 <-> u8: a C conversion keeps the bits.
        (_, t) => format!("({}){a}", held_type(t)),
    }
}

enum Kind {
    Float,
    Int,
    Bool,
}

fn kind(d: DType) -> Kind {
    if d.is_float() {
        Kind::Float
    } else if d.is_bool() {
        Kind::Bool
    } else {
        Kind::Int
    }
}

/// A literal as a C expression of `dtype`'s held type, converted as the interpreter converts
/// (rounded for floats, NaN quieted with its payload kept).
pub(crate) fn literal(value: Literal, dtype: DType) -> String {
    let x = match value {
        Literal::Float(x) => x,
        Literal::Int(i) => i as f64,
        Literal::Bool(b) => f64::from(u8::from(b)),
    };
    if let (Literal::Int(i), true) = (value, dtype.is_int()) {
        return int_literal(dtype, i);
    }
    if let (Literal::Bool(b), DType::Bool) = (value, dtype) {
        return format!("{}", u8::from(b));
    }
    // The interpreter's own conversion, so constants round exactly as it rounds them.
    match HostBuffer::from_f64(dtype, &[x]) {
        HostBuffer::F32(v) => float_bits(v[0].to_bits()),
        HostBuffer::F16(v) => float_bits(f16_held_bits(v[0].to_bits())),
        HostBuffer::BF16(v) => float_bits(u32::from(v[0].to_bits()) << 16),
        HostBuffer::I32(v) => int_literal(dtype, i64::from(v[0])),
        HostBuffer::U32(v) => int_literal(dtype, i64::from(v[0])),
        HostBuffer::I8(v) => int_literal(dtype, i64::from(v[0])),
        HostBuffer::U8(v) => int_literal(dtype, i64::from(v[0])),
        HostBuffer::Bool(v) => format!("{}", u8::from(v[0])),
    }
}

fn float_bits(bits: u32) -> String {
    let f = f32::from_bits(bits);
    if f.is_finite() && f == f.trunc() && f.abs() < 1e7 {
        // Small integers print readably; the value is exact either way.
        format!("{:.1}f", f)
    } else {
        format!("kiln_bits_f32(0x{bits:08x}u)")
    }
}

/// The f32 bits of the held value of an f16 bit pattern (exact; NaN payload kept in the top
/// mantissa bits, as `kiln_f16_value` does).
fn f16_held_bits(h: u16) -> u32 {
    let h = u32::from(h);
    let sign = (h & 0x8000) << 16;
    let (e, m) = ((h >> 10) & 0x1f, h & 0x3ff);
    match e {
        0x1f => sign | 0x7f80_0000 | (m << 13),
        0 => sign | (m as f32 * f32::from_bits(0x3380_0000)).to_bits(), // m · 2^-24, exact
        _ => sign | ((e + 112) << 23) | (m << 13),
    }
}

pub(crate) fn int_literal(dtype: DType, i: i64) -> String {
    let t = held_type(dtype);
    let wrapped: i64 = match dtype {
        DType::I32 => i64::from(i as i32),
        DType::U32 => i64::from(i as u32),
        DType::I8 => i64::from(i as i8),
        DType::U8 | DType::Bool => i64::from(i as u8),
        DType::F32 | DType::F16 | DType::BF16 => i,
    };
    if wrapped < 0 {
        // `-2147483648` is not a C int literal; spell the bits.
        format!("({t})0x{:x}u", wrapped as u32)
    } else {
        format!("({t}){wrapped}")
    }
}
