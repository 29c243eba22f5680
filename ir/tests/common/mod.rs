//! Helpers shared by the interpreter tests: argument construction, poisoned outputs, a small
//! deterministic RNG, brute-force rounding oracles and NaN-aware comparison.

#![allow(dead_code)]

use half::{bf16, f16};
use kiln_ir::interp::{run, Arg, HostBuffer, Scalar};
use kiln_ir::{DType, Kernel, KernelBuilder, Tile};

/// A buffer argument of `dtype` holding `xs` (converted as `cast` converts).
pub fn buf(dtype: DType, xs: &[f64]) -> Arg {
    Arg::Buffer(HostBuffer::from_f64(dtype, xs))
}

/// A poisoned output buffer: NaN for floats, a sentinel for integers, `true` for bool.
pub fn poison(dtype: DType, n: usize) -> Arg {
    Arg::Buffer(HostBuffer::filled(dtype, n, poison_value(dtype)))
}

pub fn poison_value(dtype: DType) -> f64 {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => f64::NAN,
        DType::I32 => -0x5a5a_5a5a as f64,
        DType::U32 => 0xa5a5_a5a5u32 as f64,
        DType::I8 => -91.0,
        DType::U8 => 165.0,
        DType::Bool => 1.0,
    }
}

pub fn scalar(dtype: DType, x: f64) -> Arg {
    Arg::Scalar(Scalar::from_f64(dtype, x))
}

/// The elements of buffer argument `i`, as `f64`.
pub fn out(args: &[Arg], i: usize) -> Vec<f64> {
    args[i].buffer().expect("argument is a buffer").to_f64()
}

pub fn run_ok(kernel: &Kernel, grid: [u32; 3], args: &mut [Arg]) {
    if let Err(e) = run(kernel, grid, args) {
        panic!("run of `{}` failed: {e}", kernel.name);
    }
}

/// Equal as values, NaN equal to NaN and -0 distinct from +0.
pub fn same(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

#[track_caller]
pub fn assert_same(got: &[f64], want: &[f64]) {
    assert_eq!(got.len(), want.len(), "lengths differ");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(same(*g, *w), "element {i}: got {g:e}, want {w:e}\n got {got:?}\nwant {want:?}");
    }
}

/// xorshift64*: deterministic, dependency-free inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }
    /// `n` f32 values in `[lo, hi)`.
    pub fn f32s(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi) as f32 as f64).collect()
    }
    pub fn ints(&mut self, n: usize, lo: i64, hi: i64) -> Vec<f64> {
        (0..n).map(|_| (lo + (self.next_u64() % (hi - lo + 1) as u64) as i64) as f64).collect()
    }
}

/// Nearest of the finite 16-bit patterns `value_of` decodes, ties to the even pattern; beyond
/// `overflow` (max + half an ulp) it is infinite. Brute force, independent of the interpreter.
fn nearest16(x: f64, value_of: impl Fn(u16) -> f64, overflow: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    if x.abs() >= overflow {
        return f64::INFINITY.copysign(x);
    }
    let mut best: Option<(f64, u16)> = None;
    for bits in 0..=u16::MAX {
        let v = value_of(bits);
        if !v.is_finite() || v.is_sign_negative() != x.is_sign_negative() {
            continue;
        }
        let d = (v - x).abs();
        best = match best {
            None => Some((d, bits)),
            Some((bd, bb)) if d < bd || (d == bd && bits & 1 == 0 && bb & 1 == 1) => Some((d, bits)),
            keep => keep,
        };
    }
    best.map(|(_, b)| value_of(b)).unwrap_or(f64::NAN)
}

/// `x` rounded to f16 by brute force.
pub fn nearest_f16(x: f64) -> f64 {
    nearest16(x, |b| f16::from_bits(b).to_f64(), 65520.0)
}

/// `x` rounded to bf16 by brute force.
pub fn nearest_bf16(x: f64) -> f64 {
    // Max plus half an ulp: (2 - 2^-7) * 2^127 + 2^119.
    let overflow = bf16::MAX.to_f64() + 2f64.powi(119);
    nearest16(x, |b| bf16::from_bits(b).to_f64(), overflow)
}

/// A kernel `out[i] = f(x[i], y[i])` over `n` elements.
pub fn binary_kernel(din: DType, dout: DType, n: usize, f: impl for<'b> Fn(Tile<'b>, Tile<'b>) -> Tile<'b>) -> Kernel {
    let b = KernelBuilder::new("binary");
    let (x, y, o) = (b.buffer("x", din), b.buffer("y", din), b.buffer("out", dout));
    let offs = b.arange(0, n as i32);
    let r = f(b.load(x, offs), b.load(y, offs));
    b.store(o, offs, r);
    b.finish().unwrap()
}

/// Runs `out[i] = f(x[i], y[i])` and returns `out`.
pub fn apply2(
    din: DType,
    dout: DType,
    xs: &[f64],
    ys: &[f64],
    f: impl for<'b> Fn(Tile<'b>, Tile<'b>) -> Tile<'b>,
) -> Vec<f64> {
    assert_eq!(xs.len(), ys.len());
    let k = binary_kernel(din, dout, xs.len(), f);
    let mut args = [buf(din, xs), buf(din, ys), poison(dout, xs.len())];
    run_ok(&k, [1, 1, 1], &mut args);
    out(&args, 2)
}

/// Runs `out[i] = f(x[i])` and returns `out`.
pub fn apply1(din: DType, dout: DType, xs: &[f64], f: impl for<'b> Fn(Tile<'b>) -> Tile<'b>) -> Vec<f64> {
    let b = KernelBuilder::new("unary");
    let (x, o) = (b.buffer("x", din), b.buffer("out", dout));
    let offs = b.arange(0, xs.len() as i32);
    let r = f(b.load(x, offs));
    b.store(o, offs, r);
    let k = b.finish().unwrap();
    let mut args = [buf(din, xs), poison(dout, xs.len())];
    run_ok(&k, [1, 1, 1], &mut args);
    out(&args, 1)
}
