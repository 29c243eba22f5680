//! Interpreter tests of the elementwise ops: every `UnaryOp`, `BinaryOp` and `CmpPred`, `select`,
//! `cast` and `bitcast`, on several dtypes, against expectations computed here with Rust's own
//! arithmetic or brute-force rounding.

mod common;

use common::*;
use half::f16;
use kiln_ir::interp::{Arg, HostBuffer};
use kiln_ir::{DType, KernelBuilder};

const F32: DType = DType::F32;
const F16: DType = DType::F16;
const BF16: DType = DType::BF16;
const I32: DType = DType::I32;
const U32: DType = DType::U32;
const I8: DType = DType::I8;
const U8: DType = DType::U8;
const BOOL: DType = DType::Bool;

fn f32s(xs: &[f32]) -> Vec<f64> {
    xs.iter().map(|&x| f64::from(x)).collect()
}

/// Random f32 operands plus special values.
fn f32_operands(seed: u64) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let mut xs = rng.f32s(64, -100.0, 100.0);
    let mut ys = rng.f32s(64, -3.0, 3.0);
    let special = [0.0, -0.0, 1.0, f64::INFINITY, f64::NEG_INFINITY, f64::NAN, 1e-40, -7.5];
    for &a in &special {
        for &b in &special {
            xs.push(a as f32 as f64);
            ys.push(b as f32 as f64);
        }
    }
    (xs, ys)
}

fn map2(xs: &[f64], ys: &[f64], f: impl Fn(f64, f64) -> f64) -> Vec<f64> {
    xs.iter().zip(ys).map(|(&x, &y)| f(x, y)).collect()
}

fn map1(xs: &[f64], f: impl Fn(f64) -> f64) -> Vec<f64> {
    xs.iter().map(|&x| f(x)).collect()
}

/// f32 results of native f32 arithmetic.
fn f32_op(xs: &[f64], ys: &[f64], f: impl Fn(f32, f32) -> f32) -> Vec<f64> {
    map2(xs, ys, |x, y| f64::from(f(x as f32, y as f32)))
}

// ---------------------------------------------------------------- unary

#[test]
fn neg_on_floats_and_wrapping_ints() {
    let xs = f32s(&[1.5, -2.25, 0.0, -0.0, f32::INFINITY, f32::NAN, 3.0e38]);
    assert_same(&apply1(F32, F32, &xs, |a| -a), &map1(&xs, |x| -x));
    let xs = [5.0, -7.0, i32::MIN as f64, i32::MAX as f64, 0.0];
    assert_same(&apply1(I32, I32, &xs, |a| -a), &map1(&xs, |x| (x as i32).wrapping_neg() as f64));
    let xs = [0.0, 1.0, u32::MAX as f64, 123_456.0];
    assert_same(&apply1(U32, U32, &xs, |a| -a), &map1(&xs, |x| (x as u32).wrapping_neg() as f64));
    let xs = [-128.0, 127.0, 3.0];
    assert_same(&apply1(I8, I8, &xs, |a| -a), &[-128.0, -127.0, -3.0]);
    let xs = [0.0, 1.0, 200.0];
    assert_same(&apply1(U8, U8, &xs, |a| -a), &[0.0, 255.0, 56.0]);
}

#[test]
fn not_is_bitwise_on_ints_and_logical_on_bool() {
    let xs = [0.0, -1.0, 12345.0, i32::MIN as f64];
    assert_same(&apply1(I32, I32, &xs, |a| !a), &map1(&xs, |x| !(x as i32) as f64));
    let xs = [0.0, 0xff00_ff00u32 as f64, 7.0];
    assert_same(&apply1(U32, U32, &xs, |a| !a), &map1(&xs, |x| !(x as u32) as f64));
    assert_same(&apply1(U8, U8, &[15.0, 0.0], |a| !a), &[240.0, 255.0]);
    assert_same(&apply1(I8, I8, &[5.0, -128.0], |a| !a), &[-6.0, 127.0]);
    assert_same(&apply1(BOOL, BOOL, &[1.0, 0.0], |a| !a), &[0.0, 1.0]);
}

#[test]
fn abs_wraps_signed_min_and_is_identity_on_unsigned() {
    let xs = f32s(&[-1.5, 2.0, -0.0, f32::NEG_INFINITY, f32::NAN]);
    assert_same(&apply1(F32, F32, &xs, |a| a.abs()), &f32s(&[1.5, 2.0, 0.0, f32::INFINITY, f32::NAN]));
    let xs = [-5.0, 5.0, i32::MIN as f64, i32::MAX as f64];
    assert_same(&apply1(I32, I32, &xs, |a| a.abs()), &[5.0, 5.0, i32::MIN as f64, i32::MAX as f64]);
    let xs = [u32::MAX as f64, 3.0];
    assert_same(&apply1(U32, U32, &xs, |a| a.abs()), &xs);
    assert_same(&apply1(I8, I8, &[-128.0, -3.0], |a| a.abs()), &[-128.0, 3.0]);
    assert_same(&apply1(U8, U8, &[255.0], |a| a.abs()), &[255.0]);
}

#[test]
fn transcendental_ops_on_f32_round_the_f64_result() {
    let mut rng = Rng::new(7);
    let mut xs = rng.f32s(200, -20.0, 20.0);
    xs.extend(f32s(&[0.0, -0.0, -1.0, f32::INFINITY, f32::NEG_INFINITY, f32::NAN, 1e-45, 0.25]));
    let rounded = |f: fn(f64) -> f64| map1(&xs, move |x| f(x) as f32 as f64);
    assert_same(&apply1(F32, F32, &xs, |a| a.exp2()), &rounded(f64::exp2));
    assert_same(&apply1(F32, F32, &xs, |a| a.log2()), &rounded(f64::log2));
    assert_same(&apply1(F32, F32, &xs, |a| a.rsqrt()), &rounded(|x| 1.0 / x.sqrt()));
    // sqrt and recip are correctly rounded, so they match native f32 arithmetic.
    assert_same(&apply1(F32, F32, &xs, |a| a.sqrt()), &map1(&xs, |x| f64::from((x as f32).sqrt())));
    assert_same(&apply1(F32, F32, &xs, |a| a.recip()), &map1(&xs, |x| f64::from(1.0 / x as f32)));
}

#[test]
fn transcendental_ops_on_f16_and_bf16_round_to_the_dtype() {
    let mut rng = Rng::new(8);
    let xs: Vec<f64> = rng.vec(40, 0.01, 30.0).into_iter().map(nearest_f16).collect();
    let want = |f: fn(f64) -> f64| map1(&xs, move |x| nearest_f16(f(x)));
    assert_same(&apply1(F16, F16, &xs, |a| a.exp2()), &want(f64::exp2));
    assert_same(&apply1(F16, F16, &xs, |a| a.log2()), &want(f64::log2));
    assert_same(&apply1(F16, F16, &xs, |a| a.sqrt()), &want(f64::sqrt));
    assert_same(&apply1(F16, F16, &xs, |a| a.recip()), &want(|x| 1.0 / x));
    assert_same(&apply1(F16, F16, &xs, |a| a.rsqrt()), &want(|x| 1.0 / x.sqrt()));
    let ys: Vec<f64> = rng.vec(40, 0.01, 1e6).into_iter().map(nearest_bf16).collect();
    assert_same(&apply1(BF16, BF16, &ys, |a| a.sqrt()), &map1(&ys, |x| nearest_bf16(x.sqrt())));
    assert_same(&apply1(BF16, BF16, &ys, |a| a.log2()), &map1(&ys, |x| nearest_bf16(x.log2())));
    // exp2 past the f16 range gives inf.
    let got = apply1(F16, F16, &[16.0, 15.9375], |a| a.exp2());
    assert_same(&got, &[f64::INFINITY, nearest_f16(15.9375f64.exp2())]);
    assert!(got[1].is_finite());
}

// ---------------------------------------------------------------- binary, floats

#[test]
fn f32_arithmetic_matches_native_f32() {
    let (xs, ys) = f32_operands(1);
    assert_same(&apply2(F32, F32, &xs, &ys, |a, b| a + b), &f32_op(&xs, &ys, |x, y| x + y));
    assert_same(&apply2(F32, F32, &xs, &ys, |a, b| a - b), &f32_op(&xs, &ys, |x, y| x - y));
    assert_same(&apply2(F32, F32, &xs, &ys, |a, b| a * b), &f32_op(&xs, &ys, |x, y| x * y));
    assert_same(&apply2(F32, F32, &xs, &ys, |a, b| a / b), &f32_op(&xs, &ys, |x, y| x / y));
    assert_same(&apply2(F32, F32, &xs, &ys, |a, b| a % b), &f32_op(&xs, &ys, |x, y| x % y));
}

/// IEEE minNum / maxNum with -0 < +0.
fn min_num(x: f64, y: f64) -> f64 {
    match (x.is_nan(), y.is_nan()) {
        (true, _) => y,
        (false, true) => x,
        _ if x == 0.0 && y == 0.0 => {
            if x.is_sign_negative() {
                x
            } else {
                y
            }
        }
        _ => x.min(y),
    }
}

fn max_num(x: f64, y: f64) -> f64 {
    -min_num(-x, -y)
}

#[test]
fn float_min_max_ignore_a_single_nan() {
    let (xs, ys) = f32_operands(2);
    assert_same(&apply2(F32, F32, &xs, &ys, |a, b| a.minimum(b)), &map2(&xs, &ys, min_num));
    assert_same(&apply2(F32, F32, &xs, &ys, |a, b| a.maximum(b)), &map2(&xs, &ys, max_num));
    let (xs, ys) = ([f64::NAN, 2.0, f64::NAN, -0.0, 0.0], [3.0, f64::NAN, f64::NAN, 0.0, -0.0]);
    assert_same(&apply2(F16, F16, &xs, &ys, |a, b| a.minimum(b)), &[3.0, 2.0, f64::NAN, -0.0, -0.0]);
    assert_same(&apply2(BF16, BF16, &xs, &ys, |a, b| a.maximum(b)), &[3.0, 2.0, f64::NAN, 0.0, 0.0]);
}

#[test]
fn f16_and_bf16_arithmetic_is_correctly_rounded() {
    let mut rng = Rng::new(3);
    let xs: Vec<f64> = rng.vec(48, -50.0, 50.0).into_iter().map(nearest_f16).collect();
    let ys: Vec<f64> = rng.vec(48, -2.0, 2.0).into_iter().map(nearest_f16).collect();
    assert_same(&apply2(F16, F16, &xs, &ys, |a, b| a + b), &map2(&xs, &ys, |x, y| nearest_f16(x + y)));
    assert_same(&apply2(F16, F16, &xs, &ys, |a, b| a - b), &map2(&xs, &ys, |x, y| nearest_f16(x - y)));
    assert_same(&apply2(F16, F16, &xs, &ys, |a, b| a * b), &map2(&xs, &ys, |x, y| nearest_f16(x * y)));
    assert_same(&apply2(F16, F16, &xs, &ys, |a, b| a / b), &map2(&xs, &ys, |x, y| nearest_f16(x / y)));
    assert_same(&apply2(F16, F16, &xs, &ys, |a, b| a % b), &map2(&xs, &ys, |x, y| nearest_f16(x % y)));
    let xs: Vec<f64> = rng.vec(48, -1e4, 1e4).into_iter().map(nearest_bf16).collect();
    let ys: Vec<f64> = rng.vec(48, -3.0, 3.0).into_iter().map(nearest_bf16).collect();
    assert_same(&apply2(BF16, BF16, &xs, &ys, |a, b| a + b), &map2(&xs, &ys, |x, y| nearest_bf16(x + y)));
    assert_same(&apply2(BF16, BF16, &xs, &ys, |a, b| a * b), &map2(&xs, &ys, |x, y| nearest_bf16(x * y)));
    assert_same(&apply2(BF16, BF16, &xs, &ys, |a, b| a / b), &map2(&xs, &ys, |x, y| nearest_bf16(x / y)));
}

#[test]
fn f16_add_rounds_ties_to_even() {
    let e = |k: i32| 2f64.powi(k);
    let xs = [1.0, 1.0, 1.0 + e(-10), 65504.0, 65504.0, -1.0];
    let ys = [e(-11), e(-11) + e(-21), e(-11), 16.0, 15.0, -e(-11)];
    // A tie goes to the even neighbour; just above a tie rounds up; max + half an ulp overflows.
    let want = [1.0, 1.0 + e(-10), 1.0 + e(-9), f64::INFINITY, 65504.0, -1.0];
    assert_same(&apply2(F16, F16, &xs, &ys, |a, b| a + b), &want);
    let (xs, ys) = ([1.0, 1.0], [e(-8), e(-8) + e(-15)]);
    assert_same(&apply2(BF16, BF16, &xs, &ys, |a, b| a + b), &[1.0, 1.0 + e(-7)]);
}

// ---------------------------------------------------------------- binary, integers

/// Operand pairs for integer ops of a dtype with range `[lo, hi]`: random values and extremes.
fn int_operands(seed: u64, lo: i64, hi: i64, nonzero_rhs: bool) -> (Vec<f64>, Vec<f64>) {
    let mut rng = Rng::new(seed);
    let mut xs = rng.ints(64, lo, hi);
    let mut ys = rng.ints(64, lo, hi);
    let extremes = [lo, hi, 0, 1, -1, 2, lo + 1, hi / 3];
    for &a in &extremes {
        for &b in &extremes {
            if (lo..=hi).contains(&a) && (lo..=hi).contains(&b) {
                xs.push(a as f64);
                ys.push(b as f64);
            }
        }
    }
    if nonzero_rhs {
        for y in &mut ys {
            if *y == 0.0 {
                *y = 3.0;
            }
        }
    }
    (xs, ys)
}

macro_rules! int_arith_test {
    ($name:ident, $t:ty, $dtype:expr, $seed:expr) => {
        #[test]
        fn $name() {
            let (lo, hi) = (<$t>::MIN as i64, <$t>::MAX as i64);
            let native = |xs: &[f64], ys: &[f64], f: fn($t, $t) -> $t| -> Vec<f64> {
                map2(xs, ys, |x, y| f(x as i64 as $t, y as i64 as $t) as f64)
            };
            let (xs, ys) = int_operands($seed, lo, hi, false);
            let d = $dtype;
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a + b), &native(&xs, &ys, <$t>::wrapping_add));
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a - b), &native(&xs, &ys, <$t>::wrapping_sub));
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a * b), &native(&xs, &ys, <$t>::wrapping_mul));
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a.minimum(b)), &native(&xs, &ys, <$t>::min));
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a.maximum(b)), &native(&xs, &ys, <$t>::max));
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a & b), &native(&xs, &ys, |x, y| x & y));
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a | b), &native(&xs, &ys, |x, y| x | y));
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a ^ b), &native(&xs, &ys, |x, y| x ^ y));
            let (xs, ys) = int_operands($seed + 100, lo, hi, true);
            // wrapping_div / wrapping_rem: truncation toward zero, MIN / -1 = MIN, MIN % -1 = 0.
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a / b), &native(&xs, &ys, <$t>::wrapping_div));
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a % b), &native(&xs, &ys, <$t>::wrapping_rem));
        }
    };
}

int_arith_test!(i32_arithmetic_wraps, i32, I32, 10);
int_arith_test!(u32_arithmetic_wraps, u32, U32, 11);
int_arith_test!(i8_arithmetic_wraps, i8, I8, 12);
int_arith_test!(u8_arithmetic_wraps, u8, U8, 13);

#[test]
fn signed_division_truncates_toward_zero() {
    let xs = [7.0, -7.0, 7.0, -7.0, i32::MIN as f64, i32::MIN as f64];
    let ys = [2.0, 2.0, -2.0, -2.0, -1.0, 1.0];
    assert_same(&apply2(I32, I32, &xs, &ys, |a, b| a / b), &[3.0, -3.0, -3.0, 3.0, i32::MIN as f64, i32::MIN as f64]);
    assert_same(&apply2(I32, I32, &xs, &ys, |a, b| a % b), &[1.0, -1.0, 1.0, -1.0, 0.0, 0.0]);
}

fn shift_amounts() -> Vec<i64> {
    vec![0, 1, 5, 7, 8, 9, 31, 32, 33, 100, -1, -32]
}

macro_rules! shift_test {
    ($name:ident, $t:ty, $ut:ty, $dtype:expr) => {
        #[test]
        fn $name() {
            let bits = <$t>::BITS;
            let values: [i64; 5] = [<$t>::MIN as i64, <$t>::MAX as i64, 1, 0x5a, <$t>::MAX as i64 / 3];
            let (mut xs, mut ys) = (Vec::new(), Vec::new());
            for &v in &values {
                for &s in &shift_amounts() {
                    // The amount as the dtype would hold it (wrapped into its range).
                    let s = s as $t;
                    xs.push(v as f64);
                    ys.push(s as f64);
                }
            }
            let amount = |y: f64| (y as i64 as $t) as $ut as u32;
            let shl = map2(&xs, &ys, |x, y| {
                let s = amount(y);
                if s >= bits {
                    0.0
                } else {
                    ((x as i64 as $t) << s) as f64
                }
            });
            let shr = map2(&xs, &ys, |x, y| {
                let (x, s) = (x as i64 as $t, amount(y));
                (if s >= bits { x >> (bits - 1) >> 1 } else { x >> s }) as f64
            });
            let d = $dtype;
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a << b), &shl);
            assert_same(&apply2(d, d, &xs, &ys, |a, b| a >> b), &shr);
        }
    };
}

shift_test!(i32_shifts_are_arithmetic_with_sign_fill, i32, u32, I32);
shift_test!(u32_shifts_are_logical, u32, u32, U32);
shift_test!(i8_shifts_are_arithmetic_with_sign_fill, i8, u8, I8);
shift_test!(u8_shifts_are_logical, u8, u8, U8);

#[test]
fn bool_bit_ops_are_logical() {
    let xs = [0.0, 0.0, 1.0, 1.0];
    let ys = [0.0, 1.0, 0.0, 1.0];
    assert_same(&apply2(BOOL, BOOL, &xs, &ys, |a, b| a & b), &[0.0, 0.0, 0.0, 1.0]);
    assert_same(&apply2(BOOL, BOOL, &xs, &ys, |a, b| a | b), &[0.0, 1.0, 1.0, 1.0]);
    assert_same(&apply2(BOOL, BOOL, &xs, &ys, |a, b| a ^ b), &[0.0, 1.0, 1.0, 0.0]);
}

// ---------------------------------------------------------------- compare, select

#[test]
fn comparisons_are_ieee_for_floats_and_signed_or_unsigned_for_ints() {
    let (xs, ys) = f32_operands(4);
    let cmp = |f: fn(f64, f64) -> bool| map2(&xs, &ys, move |x, y| f64::from(u8::from(f(x, y))));
    assert_same(&apply2(F32, BOOL, &xs, &ys, |a, b| a.eq(b)), &cmp(|x, y| x == y));
    assert_same(&apply2(F32, BOOL, &xs, &ys, |a, b| a.ne(b)), &cmp(|x, y| x != y));
    assert_same(&apply2(F32, BOOL, &xs, &ys, |a, b| a.lt(b)), &cmp(|x, y| x < y));
    assert_same(&apply2(F32, BOOL, &xs, &ys, |a, b| a.le(b)), &cmp(|x, y| x <= y));
    assert_same(&apply2(F32, BOOL, &xs, &ys, |a, b| a.gt(b)), &cmp(|x, y| x > y));
    assert_same(&apply2(F32, BOOL, &xs, &ys, |a, b| a.ge(b)), &cmp(|x, y| x >= y));

    let xs = [-1.0, 0x8000_0000u32 as f64, 5.0];
    let ys = [1.0, 1.0, 5.0];
    // As u32, 0xffffffff and 0x80000000 are large; as i32, -1 is small.
    assert_same(&apply2(U32, BOOL, &[u32::MAX as f64, xs[1], 5.0], &ys, |a, b| a.gt(b)), &[1.0, 1.0, 0.0]);
    assert_same(&apply2(I32, BOOL, &xs[..1], &ys[..1], |a, b| a.lt(b)), &[1.0]);
    assert_same(&apply2(I8, BOOL, &[-128.0, 7.0], &[127.0, 7.0], |a, b| a.le(b)), &[1.0, 1.0]);
    assert_same(&apply2(U8, BOOL, &[200.0, 7.0], &[100.0, 7.0], |a, b| a.ge(b)), &[1.0, 1.0]);
    let (bx, by) = ([0.0, 0.0, 1.0, 1.0], [0.0, 1.0, 0.0, 1.0]);
    assert_same(&apply2(BOOL, BOOL, &bx, &by, |a, b| a.eq(b)), &[1.0, 0.0, 0.0, 1.0]);
    assert_same(&apply2(BOOL, BOOL, &bx, &by, |a, b| a.ne(b)), &[0.0, 1.0, 1.0, 0.0]);
}

#[test]
fn select_picks_elementwise_and_broadcasts_scalars() {
    let (xs, ys) = f32_operands(5);
    let n = xs.len();
    let b = KernelBuilder::new("select");
    let (x, y, o) = (b.buffer("x", F32), b.buffer("y", F32), b.buffer("out", F32));
    let (o2, o3) = (b.buffer("out2", F32), b.buffer("out3", F32));
    let offs = b.arange(0, n as i32);
    let (p, q) = (b.load(x, offs), b.load(y, offs));
    b.store(o, offs, b.select(p.lt(q), p, q));
    // A scalar on_false literal and a scalar condition broadcast over the tile.
    b.store(o2, offs, b.select(p.gt(0.0), p, -100.0));
    b.store(o3, offs, b.select(b.program_id(0).eq(0), q, p));
    let k = b.finish().unwrap();
    let mut args = [buf(F32, &xs), buf(F32, &ys), poison(F32, n), poison(F32, n), poison(F32, n)];
    run_ok(&k, [1, 1, 1], &mut args);
    assert_same(&out(&args, 2), &map2(&xs, &ys, |x, y| if x < y { x } else { y }));
    assert_same(&out(&args, 3), &map1(&xs, |x| if x > 0.0 { x } else { -100.0 }));
    assert_same(&out(&args, 4), &ys);
}

// ---------------------------------------------------------------- cast, bitcast

#[test]
fn float_to_float_casts_round_to_nearest_even() {
    let e = |k: i32| 2f64.powi(k);
    // Exact f32 values around f16 ties: 1 + 2^-11 ties to 1, just above rounds up.
    let xs = [1.0 + e(-11), 1.0 + e(-11) + e(-23), 1.0 + 3.0 * e(-11), 65519.0, 65520.0, 1e-8, -2.9e-8, 0.1];
    let want = [1.0, 1.0 + e(-10), 1.0 + e(-9), 65504.0, f64::INFINITY, 0.0, -0.0, 0.0999755859375];
    let xs = map1(&xs, |x| x as f32 as f64);
    let got = apply1(F32, F16, &xs, |a| a.cast(F16));
    assert_same(&got, &want);
    assert_same(&got, &map1(&xs, nearest_f16));
    let mut rng = Rng::new(9);
    let xs = rng.f32s(300, -70000.0, 70000.0);
    assert_same(&apply1(F32, F16, &xs, |a| a.cast(F16)), &map1(&xs, nearest_f16));
    assert_same(&apply1(F32, BF16, &xs, |a| a.cast(BF16)), &map1(&xs, nearest_bf16));
    let small = rng.f32s(300, -1e-4, 1e-4);
    assert_same(&apply1(F32, F16, &small, |a| a.cast(F16)), &map1(&small, nearest_f16));
    // Widening and f16 <-> bf16.
    let h: Vec<f64> = xs.iter().map(|&x| nearest_f16(x / 8.0)).collect();
    assert_same(&apply1(F16, F32, &h, |a| a.cast(F32)), &h);
    assert_same(&apply1(F16, BF16, &h, |a| a.cast(BF16)), &map1(&h, nearest_bf16));
    let nan = apply1(F32, F16, &[f64::NAN, f64::INFINITY, -0.0], |a| a.cast(F16));
    assert_same(&nan, &[f64::NAN, f64::INFINITY, -0.0]);
}

#[test]
fn float_to_int_casts_truncate_and_saturate() {
    let xs = [-3.7, 3.7, 1e10, -1e10, f64::NAN, f64::INFINITY, f64::NEG_INFINITY, -0.5, 2147483520.0];
    let got = apply1(F32, I32, &xs, |a| a.cast(I32));
    assert_same(&got, &map1(&xs, |x| (x as f32) as i32 as f64));
    assert_same(&got[..5], &[-3.0, 3.0, i32::MAX as f64, i32::MIN as f64, 0.0]);
    let xs = [300.0, -5.0, 254.9, f64::NAN, 0.9];
    assert_same(&apply1(F32, U8, &xs, |a| a.cast(U8)), &[255.0, 0.0, 254.0, 0.0, 0.0]);
    assert_same(&apply1(F32, I8, &xs, |a| a.cast(I8)), &[127.0, -5.0, 127.0, 0.0, 0.0]);
    assert_same(&apply1(F32, U32, &[-1.0, 5e9, 4e9], |a| a.cast(U32)), &[0.0, u32::MAX as f64, 4e9]);
    assert_same(&apply1(F16, I32, &[-65504.0, 2.5], |a| a.cast(I32)), &[-65504.0, 2.0]);
}

#[test]
fn int_casts_wrap_and_extend_by_source_signedness() {
    assert_same(&apply1(I32, I8, &[300.0, -129.0, -1.0, 127.0], |a| a.cast(I8)), &[44.0, 127.0, -1.0, 127.0]);
    assert_same(&apply1(I8, U32, &[-1.0, -128.0, 5.0], |a| a.cast(U32)), &[4294967295.0, 4294967168.0, 5.0]);
    assert_same(&apply1(U8, I32, &[200.0, 255.0], |a| a.cast(I32)), &[200.0, 255.0]);
    assert_same(&apply1(U8, I8, &[200.0, 127.0], |a| a.cast(I8)), &[-56.0, 127.0]);
    assert_same(
        &apply1(U32, I32, &[u32::MAX as f64, 0x8000_0000u32 as f64], |a| a.cast(I32)),
        &[-1.0, i32::MIN as f64],
    );
    assert_same(&apply1(I32, U32, &[-2.0], |a| a.cast(U32)), &[4294967294.0]);
}

#[test]
fn int_to_float_and_bool_casts() {
    let xs = [16777217.0, -16777219.0, 2049.0, 2051.0, i32::MAX as f64];
    assert_same(&apply1(I32, F32, &xs, |a| a.cast(F32)), &map1(&xs, |x| (x as i32) as f32 as f64));
    assert_same(&apply1(I32, F16, &xs[2..4], |a| a.cast(F16)), &[2048.0, 2052.0]);
    assert_same(&apply1(I32, F16, &[70000.0], |a| a.cast(F16)), &[f64::INFINITY]);
    assert_same(&apply1(U32, BF16, &[257.0, u32::MAX as f64], |a| a.cast(BF16)), &[256.0, 4294967296.0]);
    assert_same(&apply1(BOOL, F32, &[1.0, 0.0], |a| a.cast(F32)), &[1.0, 0.0]);
    assert_same(&apply1(BOOL, I8, &[1.0, 0.0], |a| a.cast(I8)), &[1.0, 0.0]);
    let xs = [0.0, -0.0, f64::NAN, 1e-30, -2.0];
    assert_same(&apply1(F32, BOOL, &xs, |a| a.cast(BOOL)), &[0.0, 0.0, 1.0, 1.0, 1.0]);
    assert_same(&apply1(I32, BOOL, &[0.0, -7.0], |a| a.cast(BOOL)), &[0.0, 1.0]);
    assert_same(&apply1(BOOL, BOOL, &[1.0, 0.0], |a| a.cast(BOOL)), &[1.0, 0.0]);
}

/// Runs `out[i] = x[i].bitcast(to)` on raw buffers.
fn bitcast_raw(input: HostBuffer, to: DType) -> HostBuffer {
    let n = input.len();
    let b = KernelBuilder::new("bitcast");
    let (x, o) = (b.buffer("x", input.dtype()), b.buffer("out", to));
    let offs = b.arange(0, n as i32);
    b.store(o, offs, b.load(x, offs).bitcast(to));
    let k = b.finish().unwrap();
    let mut args = [Arg::Buffer(input), poison(to, n)];
    run_ok(&k, [1, 1, 1], &mut args);
    args[1].buffer().unwrap().clone()
}

#[test]
fn bitcast_reinterprets_bits_including_nan_payloads() {
    let patterns = [0x3f80_0000u32, 0x8000_0000, 0x7f80_0001, 0xff81_2345, 0x7fc0_0000, 0x0000_0001, 0xdead_beef];
    let floats: Vec<f32> = patterns.iter().map(|&p| f32::from_bits(p)).collect();
    let HostBuffer::I32(ints) = bitcast_raw(HostBuffer::F32(floats.clone()), I32) else { panic!("dtype") };
    assert_eq!(ints, patterns.iter().map(|&p| p as i32).collect::<Vec<_>>());
    let HostBuffer::F32(back) = bitcast_raw(HostBuffer::I32(ints), F32) else { panic!("dtype") };
    // Signaling NaNs survive loads, bitcasts and stores bit for bit.
    assert_eq!(back.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), patterns);
    let HostBuffer::U32(u) = bitcast_raw(HostBuffer::F32(floats), U32) else { panic!("dtype") };
    assert_eq!(u, patterns);
    let HostBuffer::U8(u) = bitcast_raw(HostBuffer::I8(vec![-1, -128, 5]), U8) else { panic!("dtype") };
    assert_eq!(u, [255, 128, 5]);
    let HostBuffer::I8(i) = bitcast_raw(HostBuffer::U8(vec![255, 128, 5]), I8) else { panic!("dtype") };
    assert_eq!(i, [-1, -128, 5]);
    let halves: Vec<u16> = vec![0x3c00, 0x7e01, 0xfc01, 0x0001];
    let h = HostBuffer::F16(halves.iter().map(|&b| f16::from_bits(b)).collect());
    let HostBuffer::BF16(bf) = bitcast_raw(h, BF16) else { panic!("dtype") };
    assert_eq!(bf.iter().map(|x| x.to_bits()).collect::<Vec<_>>(), halves);
}
