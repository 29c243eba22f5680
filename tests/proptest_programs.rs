//! Property tests: random programs run by the interpreter against a naive Rust evaluation, and
//! random kernels through the text form (`parse(print(k)) == k`).
//!
//! The naive evaluators follow the semantics written in the interpreter's module doc (floats
//! computed in f64 and rounded to f32, integers wrapping, shifts clamped) without sharing any of
//! its code, so results are compared exactly (NaN equal to NaN).

use kiln::ir::interp::{run, Arg, HostBuffer, Scalar};
use kiln::ir::{text, DType, Kernel, KernelBuilder, Tile};
use proptest::prelude::*;

// ---------- elementwise f32 programs ----------

#[derive(Clone, Debug)]
enum FExpr {
    Input(usize),
    Const(f32),
    Unary(FUnary, Box<FExpr>),
    Binary(FBinary, Box<FExpr>, Box<FExpr>),
    /// `lhs < rhs ? a : b`
    SelectLt(Box<[FExpr; 4]>),
}

#[derive(Clone, Copy, Debug)]
enum FUnary {
    Neg,
    Abs,
    Exp2,
    Log2,
    Sqrt,
    Rsqrt,
    Recip,
    /// Round trip through f16: exercises rounding at casts.
    ViaF16,
}

#[derive(Clone, Copy, Debug)]
enum FBinary {
    Add,
    Sub,
    Mul,
    Div,
    Rem,
    Min,
    Max,
}

const N_INPUTS: usize = 3;

fn f_expr() -> impl Strategy<Value = FExpr> {
    let leaf = prop_oneof![(0..N_INPUTS).prop_map(FExpr::Input), (-8.0f32..8.0).prop_map(FExpr::Const),];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (
                prop_oneof![
                    Just(FUnary::Neg),
                    Just(FUnary::Abs),
                    Just(FUnary::Exp2),
                    Just(FUnary::Log2),
                    Just(FUnary::Sqrt),
                    Just(FUnary::Rsqrt),
                    Just(FUnary::Recip),
                    Just(FUnary::ViaF16),
                ],
                inner.clone()
            )
                .prop_map(|(op, a)| FExpr::Unary(op, Box::new(a))),
            (
                prop_oneof![
                    Just(FBinary::Add),
                    Just(FBinary::Sub),
                    Just(FBinary::Mul),
                    Just(FBinary::Div),
                    Just(FBinary::Rem),
                    Just(FBinary::Min),
                    Just(FBinary::Max),
                ],
                inner.clone(),
                inner.clone()
            )
                .prop_map(|(op, a, b)| FExpr::Binary(op, Box::new(a), Box::new(b))),
            [inner.clone(), inner.clone(), inner.clone(), inner].prop_map(|e| FExpr::SelectLt(Box::new(e))),
        ]
    })
}

fn build_f<'b>(b: &'b KernelBuilder, e: &FExpr, inputs: &[Tile<'b>]) -> Tile<'b> {
    match e {
        FExpr::Input(i) => inputs[*i],
        FExpr::Const(c) => b.constant(*c, DType::F32).broadcast_to(&inputs[0].shape()),
        FExpr::Unary(op, a) => {
            let a = build_f(b, a, inputs);
            match op {
                FUnary::Neg => -a,
                FUnary::Abs => a.abs(),
                FUnary::Exp2 => a.exp2(),
                FUnary::Log2 => a.log2(),
                FUnary::Sqrt => a.sqrt(),
                FUnary::Rsqrt => a.rsqrt(),
                FUnary::Recip => a.recip(),
                FUnary::ViaF16 => a.cast(DType::F16).cast(DType::F32),
            }
        }
        FExpr::Binary(op, l, r) => {
            let (l, r) = (build_f(b, l, inputs), build_f(b, r, inputs));
            match op {
                FBinary::Add => l + r,
                FBinary::Sub => l - r,
                FBinary::Mul => l * r,
                FBinary::Div => l / r,
                FBinary::Rem => l % r,
                FBinary::Min => l.minimum(r),
                FBinary::Max => l.maximum(r),
            }
        }
        FExpr::SelectLt(e) => {
            let [p, q, x, y] = &**e;
            let cond = build_f(b, p, inputs).lt(build_f(b, q, inputs));
            b.select(cond, build_f(b, x, inputs), build_f(b, y, inputs))
        }
    }
}

/// Rounds an f64 result to f32, as every f32 op does.
fn r32(x: f64) -> f32 {
    x as f32
}

/// IEEE maxNum / minNum: a NaN operand loses to a number.
fn num_pick(a: f32, b: f32, take_b: impl Fn(f32, f32) -> bool) -> f32 {
    if a.is_nan() {
        b
    } else if b.is_nan() {
        a
    } else if take_b(a, b) {
        b
    } else {
        a
    }
}

fn eval_f(e: &FExpr, inputs: &[f32]) -> f32 {
    match e {
        FExpr::Input(i) => inputs[*i],
        FExpr::Const(c) => *c,
        FExpr::Unary(op, a) => {
            let a = eval_f(a, inputs);
            let x = a as f64;
            match op {
                FUnary::Neg => -a,
                FUnary::Abs => a.abs(),
                FUnary::Exp2 => r32(x.exp2()),
                FUnary::Log2 => r32(x.log2()),
                FUnary::Sqrt => r32(x.sqrt()),
                FUnary::Rsqrt => r32(1.0 / x.sqrt()),
                FUnary::Recip => r32(1.0 / x),
                FUnary::ViaF16 => half::f16::from_f32(a).to_f32(),
            }
        }
        FExpr::Binary(op, l, r) => {
            let (a, b) = (eval_f(l, inputs), eval_f(r, inputs));
            let (x, y) = (a as f64, b as f64);
            match op {
                FBinary::Add => r32(x + y),
                FBinary::Sub => r32(x - y),
                FBinary::Mul => r32(x * y),
                FBinary::Div => r32(x / y),
                FBinary::Rem => r32(x % y),
                FBinary::Min => num_pick(a, b, |a, b| b < a),
                FBinary::Max => num_pick(a, b, |a, b| b > a),
            }
        }
        FExpr::SelectLt(e) => {
            let [p, q, x, y] = &**e;
            if eval_f(p, inputs) < eval_f(q, inputs) {
                eval_f(x, inputs)
            } else {
                eval_f(y, inputs)
            }
        }
    }
}

/// A masked elementwise kernel over `len` elements, `block` per program: `y = expr(x0, x1, x2)`.
fn elementwise_kernel(e: &FExpr, block: i32) -> Kernel {
    let b = KernelBuilder::new("prop_elementwise");
    let xs: Vec<_> = (0..N_INPUTS).map(|i| b.buffer(&format!("x{i}"), DType::F32)).collect();
    let y = b.buffer("y", DType::F32);
    let n = b.scalar("n", DType::I32);
    let offs = b.program_id(0) * block + b.arange(0, block);
    let mask = offs.lt(n);
    let inputs: Vec<_> = xs.iter().map(|x| b.load_masked(*x, offs, mask, 1.0)).collect();
    let out = build_f(&b, e, &inputs);
    b.store_masked(y, offs, out, mask);
    b.finish().expect("generated kernels are valid")
}

fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()) || (a == 0.0 && b == 0.0)
}

const POISON: f32 = -7777.0;

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn elementwise_f32_matches_naive(
        e in f_expr(),
        block in prop_oneof![Just(4), Just(16), Just(32)],
        len in 1usize..100,
        seed in any::<u64>(),
    ) {
        let k = elementwise_kernel(&e, block);
        let mut rng = Lcg(seed);
        let inputs: Vec<Vec<f32>> = (0..N_INPUTS).map(|_| (0..len).map(|_| rng.f32_in(-10.0, 10.0)).collect()).collect();
        // One slot past the end stays poisoned: the mask must stop the last program.
        let mut args: Vec<Arg> = inputs.iter().map(|v| Arg::Buffer(HostBuffer::F32(v.clone()))).collect();
        args.push(Arg::Buffer(HostBuffer::F32(vec![POISON; len + 1])));
        args.push(Arg::Scalar(Scalar::I32(len as i32)));
        let grid = [len.div_ceil(block as usize) as u32, 1, 1];
        run(&k, grid, &mut args).unwrap();
        let Arg::Buffer(HostBuffer::F32(out)) = &args[N_INPUTS] else { panic!("output buffer changed kind") };
        for i in 0..len {
            let row: Vec<f32> = inputs.iter().map(|v| v[i]).collect();
            let want = eval_f(&e, &row);
            prop_assert!(same_f32(out[i], want), "element {i}: got {} want {want} for {e:?}", out[i]);
        }
        prop_assert_eq!(out[len], POISON);
    }

    #[test]
    fn elementwise_kernels_round_trip_through_text(e in f_expr(), block in prop_oneof![Just(8), Just(64)]) {
        let k = elementwise_kernel(&e, block);
        let printed = text::print(&k);
        let parsed = text::parse(&printed).map_err(|err| TestCaseError::fail(format!("{err}\n{printed}")))?;
        prop_assert_eq!(&parsed, &k);
        prop_assert_eq!(text::print(&parsed), printed);
    }
}

// ---------- elementwise i32 programs ----------

#[derive(Clone, Debug)]
enum IExpr {
    Input(usize),
    Const(i32),
    Neg(Box<IExpr>),
    Not(Box<IExpr>),
    Abs(Box<IExpr>),
    Binary(IBinary, Box<IExpr>, Box<IExpr>),
    /// `a == b ? x : y`
    SelectEq(Box<[IExpr; 4]>),
    /// Through u8 and back: wraps to 8 bits, then zero-extends.
    ViaU8(Box<IExpr>),
}

#[derive(Clone, Copy, Debug)]
enum IBinary {
    Add,
    Sub,
    Mul,
    /// Divisor forced odd (`| 1`), so never zero.
    Div,
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    /// Shift amounts in 0..40, so some reach past the width.
    Shl,
    Shr,
}

fn i_expr() -> impl Strategy<Value = IExpr> {
    let leaf = prop_oneof![
        (0..N_INPUTS).prop_map(IExpr::Input),
        prop_oneof![any::<i32>(), -40i32..40].prop_map(IExpr::Const),
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        let binop = prop_oneof![
            Just(IBinary::Add),
            Just(IBinary::Sub),
            Just(IBinary::Mul),
            Just(IBinary::Div),
            Just(IBinary::Rem),
            Just(IBinary::Min),
            Just(IBinary::Max),
            Just(IBinary::And),
            Just(IBinary::Or),
            Just(IBinary::Xor),
            Just(IBinary::Shl),
            Just(IBinary::Shr),
        ];
        prop_oneof![
            inner.clone().prop_map(|a| IExpr::Neg(Box::new(a))),
            inner.clone().prop_map(|a| IExpr::Not(Box::new(a))),
            inner.clone().prop_map(|a| IExpr::Abs(Box::new(a))),
            inner.clone().prop_map(|a| IExpr::ViaU8(Box::new(a))),
            (binop, inner.clone(), inner.clone()).prop_map(|(op, a, b)| IExpr::Binary(op, Box::new(a), Box::new(b))),
            [inner.clone(), inner.clone(), inner.clone(), inner].prop_map(|e| IExpr::SelectEq(Box::new(e))),
        ]
    })
}

fn build_i<'b>(b: &'b KernelBuilder, e: &IExpr, inputs: &[Tile<'b>]) -> Tile<'b> {
    match e {
        IExpr::Input(i) => inputs[*i],
        IExpr::Const(c) => b.constant(*c, DType::I32).broadcast_to(&inputs[0].shape()),
        IExpr::Neg(a) => -build_i(b, a, inputs),
        IExpr::Not(a) => !build_i(b, a, inputs),
        IExpr::Abs(a) => build_i(b, a, inputs).abs(),
        IExpr::ViaU8(a) => build_i(b, a, inputs).cast(DType::U8).cast(DType::I32),
        IExpr::Binary(op, l, r) => {
            let (l, r) = (build_i(b, l, inputs), build_i(b, r, inputs));
            match op {
                IBinary::Add => l + r,
                IBinary::Sub => l - r,
                IBinary::Mul => l * r,
                IBinary::Div => l / (r | 1),
                IBinary::Rem => l % (r | 1),
                IBinary::Min => l.minimum(r),
                IBinary::Max => l.maximum(r),
                IBinary::And => l & r,
                IBinary::Or => l | r,
                IBinary::Xor => l ^ r,
                IBinary::Shl => l << ((r & 63) % 40),
                IBinary::Shr => l >> ((r & 63) % 40),
            }
        }
        IExpr::SelectEq(e) => {
            let [p, q, x, y] = &**e;
            let cond = build_i(b, p, inputs).eq(build_i(b, q, inputs));
            b.select(cond, build_i(b, x, inputs), build_i(b, y, inputs))
        }
    }
}

fn eval_i(e: &IExpr, inputs: &[i32]) -> i32 {
    match e {
        IExpr::Input(i) => inputs[*i],
        IExpr::Const(c) => *c,
        IExpr::Neg(a) => eval_i(a, inputs).wrapping_neg(),
        IExpr::Not(a) => !eval_i(a, inputs),
        IExpr::Abs(a) => eval_i(a, inputs).wrapping_abs(),
        IExpr::ViaU8(a) => eval_i(a, inputs) as u8 as i32,
        IExpr::Binary(op, l, r) => {
            let (a, b) = (eval_i(l, inputs), eval_i(r, inputs));
            let shift = ((b & 63) % 40) as u32;
            match op {
                IBinary::Add => a.wrapping_add(b),
                IBinary::Sub => a.wrapping_sub(b),
                IBinary::Mul => a.wrapping_mul(b),
                IBinary::Div => a.wrapping_div(b | 1),
                IBinary::Rem => a.wrapping_rem(b | 1),
                IBinary::Min => a.min(b),
                IBinary::Max => a.max(b),
                IBinary::And => a & b,
                IBinary::Or => a | b,
                IBinary::Xor => a ^ b,
                IBinary::Shl => a.checked_shl(shift).unwrap_or(0),
                IBinary::Shr => a.checked_shr(shift).unwrap_or(if a < 0 { -1 } else { 0 }),
            }
        }
        IExpr::SelectEq(e) => {
            let [p, q, x, y] = &**e;
            if eval_i(p, inputs) == eval_i(q, inputs) {
                eval_i(x, inputs)
            } else {
                eval_i(y, inputs)
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    #[test]
    fn elementwise_i32_matches_naive(e in i_expr(), len in 1usize..70, seed in any::<u64>()) {
        let block = 16;
        let b = KernelBuilder::new("prop_int");
        let xs: Vec<_> = (0..N_INPUTS).map(|i| b.buffer(&format!("x{i}"), DType::I32)).collect();
        let y = b.buffer("y", DType::I32);
        let n = b.scalar("n", DType::I32);
        let offs = b.program_id(0) * block + b.arange(0, block);
        let mask = offs.lt(n);
        let inputs: Vec<_> = xs.iter().map(|x| b.load_masked(*x, offs, mask, 0)).collect();
        let out = build_i(&b, &e, &inputs);
        b.store_masked(y, offs, out, mask);
        let k = b.finish().unwrap();

        let mut rng = Lcg(seed);
        let inputs: Vec<Vec<i32>> = (0..N_INPUTS).map(|_| (0..len).map(|_| rng.i32()).collect()).collect();
        let mut args: Vec<Arg> = inputs.iter().map(|v| Arg::Buffer(HostBuffer::I32(v.clone()))).collect();
        args.push(Arg::Buffer(HostBuffer::I32(vec![-7777; len + 1])));
        args.push(Arg::Scalar(Scalar::I32(len as i32)));
        run(&k, [len.div_ceil(block as usize) as u32, 1, 1], &mut args).unwrap();
        let Arg::Buffer(HostBuffer::I32(out)) = &args[N_INPUTS] else { panic!("output buffer changed kind") };
        for i in 0..len {
            let row: Vec<i32> = inputs.iter().map(|v| v[i]).collect();
            prop_assert_eq!(out[i], eval_i(&e, &row), "element {} of {:?}", i, e);
        }
        prop_assert_eq!(out[len], -7777);
        let parsed = text::parse(&text::print(&k)).unwrap();
        prop_assert_eq!(parsed, k);
    }
}

// ---------- reductions, dot, loops ----------

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// `y = reduce(x[R, C], axis)` for sum and max.
    #[test]
    fn reductions_match_naive(rows in 1u32..9, cols in 1u32..17, axis in 0u32..2, use_max in any::<bool>(), seed in any::<u64>()) {
        let b = KernelBuilder::new("prop_reduce");
        let (x, y) = (b.buffer("x", DType::F32), b.buffer("y", DType::F32));
        let offs = b.arange(0, rows as i32).col() * cols as i32 + b.arange(0, cols as i32).row();
        let v = b.load(x, offs);
        let r = if use_max { v.max(axis) } else { v.sum(axis) };
        let out_len = if axis == 0 { cols } else { rows };
        b.store(y, b.arange(0, out_len as i32), r);
        let k = b.finish().unwrap();

        let mut rng = Lcg(seed);
        let data: Vec<f32> = (0..rows * cols).map(|_| rng.f32_in(-3.0, 3.0)).collect();
        let mut args = vec![Arg::Buffer(HostBuffer::F32(data.clone())), Arg::Buffer(HostBuffer::F32(vec![POISON; out_len as usize]))];
        run(&k, [1, 1, 1], &mut args).unwrap();
        let Arg::Buffer(HostBuffer::F32(out)) = &args[1] else { panic!("output buffer changed kind") };
        for o in 0..out_len {
            let lane = |i: u32| if axis == 0 { data[(i * cols + o) as usize] } else { data[(o * cols + i) as usize] };
            let n = if axis == 0 { rows } else { cols };
            let want = if use_max {
                (0..n).map(lane).fold(f32::NEG_INFINITY, f32::max)
            } else {
                (0..n).map(|i| lane(i) as f64).sum::<f64>() as f32
            };
            prop_assert!(same_f32(out[o as usize], want), "lane {o}: got {} want {want}", out[o as usize]);
        }
        prop_assert_eq!(text::parse(&text::print(&k)).unwrap(), k);
    }

    /// `c = acc + a[M, K] · b[K, N]` with f16 operands.
    #[test]
    fn dot_matches_naive(m in 1u32..7, kd in 1u32..9, n in 1u32..7, seed in any::<u64>()) {
        let b = KernelBuilder::new("prop_dot");
        let (a_buf, b_buf, c_buf) = (b.buffer("a", DType::F16), b.buffer("b", DType::F16), b.buffer("c", DType::F32));
        let a = b.load(a_buf, b.arange(0, m as i32).col() * kd as i32 + b.arange(0, kd as i32).row());
        let w = b.load(b_buf, b.arange(0, kd as i32).col() * n as i32 + b.arange(0, n as i32).row());
        let c_offs = b.arange(0, m as i32).col() * n as i32 + b.arange(0, n as i32).row();
        let acc = b.load(c_buf, c_offs);
        b.store(c_buf, c_offs, b.dot(a, w, acc));
        let k = b.finish().unwrap();

        let mut rng = Lcg(seed);
        let av: Vec<half::f16> = (0..m * kd).map(|_| half::f16::from_f32(rng.f32_in(-2.0, 2.0))).collect();
        let bv: Vec<half::f16> = (0..kd * n).map(|_| half::f16::from_f32(rng.f32_in(-2.0, 2.0))).collect();
        let cv: Vec<f32> = (0..m * n).map(|_| rng.f32_in(-1.0, 1.0)).collect();
        let mut args = vec![
            Arg::Buffer(HostBuffer::F16(av.clone())),
            Arg::Buffer(HostBuffer::F16(bv.clone())),
            Arg::Buffer(HostBuffer::F32(cv.clone())),
        ];
        run(&k, [1, 1, 1], &mut args).unwrap();
        let Arg::Buffer(HostBuffer::F32(out)) = &args[2] else { panic!("output buffer changed kind") };
        for i in 0..m {
            for j in 0..n {
                // The definition: start from acc, add the exact products in k order, round once.
                let want = (0..kd)
                    .map(|p| av[(i * kd + p) as usize].to_f64() * bv[(p * n + j) as usize].to_f64())
                    .fold(cv[(i * n + j) as usize] as f64, |s, x| s + x) as f32;
                prop_assert!(same_f32(out[(i * n + j) as usize], want));
            }
        }
    }

    /// A loop carrying two values over `steps` tiles: `acc = acc * 0.5 + x[t]`, `cnt += t`.
    #[test]
    fn loops_match_naive(steps in 0i32..6, width in prop_oneof![Just(1i32), Just(8), Just(12)], start in -2i32..2, step in 1i32..3, seed in any::<u64>()) {
        let b = KernelBuilder::new("prop_loop");
        let (x, y, z) = (b.buffer("x", DType::F32), b.buffer("y", DType::F32), b.buffer("z", DType::I32));
        let lanes = b.arange(0, width);
        let init = [b.full(&[width as u32], 1.0, DType::F32), b.constant(0, DType::I32)];
        let [acc, cnt] = b.for_range(start, start + steps * step, step, init, |t, [acc, cnt]| {
            let row = b.load(x, (t - start) / step * width + lanes);
            [acc * 0.5 + row, cnt + t]
        });
        b.store(y, lanes, acc);
        b.store(z, b.arange(0, 1), cnt.broadcast_to(&kiln::ir::Shape::new(vec![1])));
        let k = b.finish().unwrap();

        let mut rng = Lcg(seed);
        let xs: Vec<f32> = (0..(steps * width).max(1)).map(|_| rng.f32_in(-4.0, 4.0)).collect();
        let mut args = vec![
            Arg::Buffer(HostBuffer::F32(xs.clone())),
            Arg::Buffer(HostBuffer::F32(vec![POISON; width as usize])),
            Arg::Buffer(HostBuffer::I32(vec![-7777])),
        ];
        run(&k, [1, 1, 1], &mut args).unwrap();
        let mut acc = vec![1.0f32; width as usize];
        let mut cnt = 0i32;
        for s in 0..steps {
            for (l, a) in acc.iter_mut().enumerate() {
                *a = r32(r32(*a as f64 * 0.5) as f64 + xs[(s * width) as usize + l] as f64);
            }
            cnt += start + s * step;
        }
        let (Arg::Buffer(HostBuffer::F32(out)), Arg::Buffer(HostBuffer::I32(out_cnt))) = (&args[1], &args[2]) else {
            panic!("output buffers changed kind")
        };
        prop_assert_eq!(out, &acc);
        prop_assert_eq!(out_cnt[0], cnt);
        prop_assert_eq!(text::parse(&text::print(&k)).unwrap(), k);
    }
}

/// A tiny deterministic generator for input data (proptest picks the seed).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        self.0 >> 11
    }
    fn f32_in(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next() as f64 / (1u64 << 53) as f64) as f32;
        lo + (hi - lo) * u
    }
    fn i32(&mut self) -> i32 {
        let v = self.next() as i32;
        // Mix in small values so comparisons and shifts see interesting cases.
        if v % 3 == 0 {
            v % 16
        } else {
            v
        }
    }
}
