//! Interpreter tests of program indexing, creation, shape ops, reductions, `dot`, memory ops and
//! loops, each against expectations computed independently here, on nontrivial inputs with
//! poisoned outputs.

mod common;

use common::*;
use kiln_ir::{CmpPred, DType, Kernel, KernelBuilder, Literal, Op, Shape, Type};

const F32: DType = DType::F32;
const F16: DType = DType::F16;
const BF16: DType = DType::BF16;
const I32: DType = DType::I32;
const U32: DType = DType::U32;
const I8: DType = DType::I8;
const U8: DType = DType::U8;
const BOOL: DType = DType::Bool;

// ---------------------------------------------------------------- program indexing, creation

#[test]
fn program_ids_num_programs_and_program_order() {
    let b = KernelBuilder::new("grid");
    let (ids, order, counter) = (b.buffer("ids", I32), b.buffer("order", I32), b.buffer("counter", I32));
    let (x, y, z) = (b.program_id(0), b.program_id(1), b.program_id(2));
    let (nx, ny, nz) = (b.num_programs(0), b.num_programs(1), b.num_programs(2));
    let linear = (z * ny + y) * nx + x;
    let base = linear * 6;
    for (i, v) in [x, y, z, nx, ny, nz].into_iter().enumerate() {
        b.store(ids, base + i as i32, v);
    }
    // Programs run one after another, so a counter read and bumped by each gives the run order.
    let zero = b.constant(0, I32);
    let seen = b.load(counter, zero);
    b.store(order, linear, seen);
    b.store(counter, zero, seen + 1);
    let k = b.finish().unwrap();
    let grid = [3, 2, 2];
    let mut args = [poison(I32, 72), poison(I32, 12), buf(I32, &[0.0])];
    run_ok(&k, grid, &mut args);
    let mut want = Vec::new();
    for z in 0..2 {
        for y in 0..2 {
            for x in 0..3 {
                want.extend([x as f64, y as f64, z as f64, 3.0, 2.0, 2.0]);
            }
        }
    }
    assert_same(&out(&args, 0), &want);
    // z, y, x order with x fastest: program (x, y, z) runs at position (z * 2 + y) * 3 + x.
    assert_same(&out(&args, 1), &(0..12).map(f64::from).collect::<Vec<_>>());
    assert_same(&out(&args, 2), &[12.0]);
}

#[test]
fn arange_gives_start_to_end() {
    let b = KernelBuilder::new("arange");
    let o = b.buffer("out", I32);
    let o2 = b.buffer("out2", I32);
    let r = b.arange(-5, 7);
    b.store(o, r + 5, r);
    let one = b.arange(1000, 1001);
    b.store(o2, one - 1000, one);
    let k = b.finish().unwrap();
    let mut args = [poison(I32, 12), poison(I32, 1)];
    run_ok(&k, [1, 1, 1], &mut args);
    assert_same(&out(&args, 0), &(-5..7).map(f64::from).collect::<Vec<_>>());
    assert_same(&out(&args, 1), &[1000.0]);
}

/// Row-major offsets of a `[rows, cols]` tile: `row * cols + col`.
fn offsets_2d<'b>(b: &'b KernelBuilder, rows: u32, cols: u32) -> kiln_ir::Tile<'b> {
    b.arange(0, rows as i32).col() * cols as i32 + b.arange(0, cols as i32).row()
}

#[test]
fn constants_splat_their_literal_rounded_to_the_dtype() {
    let cases: [(DType, Literal, f64); 8] = [
        (F32, Literal::Float(0.1), 0.1f32 as f64),
        (F16, Literal::Float(0.1), 0.0999755859375),
        (BF16, Literal::Float(0.1), 0.10009765625),
        (I32, Literal::Int(-7), -7.0),
        (U32, Literal::Int(4_000_000_000), 4e9),
        (I8, Literal::Int(-128), -128.0),
        (U8, Literal::Int(255), 255.0),
        (BOOL, Literal::Bool(true), 1.0),
    ];
    for (dtype, lit, want) in cases {
        let b = KernelBuilder::new("constant");
        let (o, s) = (b.buffer("tile", dtype), b.buffer("scalar", dtype));
        b.store(o, offsets_2d(&b, 2, 3), b.full(&[2, 3], lit, dtype));
        let scalar = b.full(&[], lit, dtype);
        b.store(s, b.constant(0, I32), scalar);
        let k = b.finish().unwrap();
        let mut args = [buf(dtype, &[0.0; 6]), buf(dtype, &[0.0])];
        run_ok(&k, [1, 1, 1], &mut args);
        assert_same(&out(&args, 0), &[want; 6]);
        assert_same(&out(&args, 1), &[want]);
    }
}

// ---------------------------------------------------------------- shapes

#[test]
fn broadcast_follows_numpy_rules() {
    let b = KernelBuilder::new("broadcast");
    let (x, o1, o2, o3) = (b.buffer("x", F32), b.buffer("o1", F32), b.buffer("o2", F32), b.buffer("o3", F32));
    let v = b.load(x, b.arange(0, 3));
    // [3] -> [2, 3]: rows repeat.
    b.store(o1, offsets_2d(&b, 2, 3), v.broadcast_to(&Shape::new(vec![2, 3])));
    // [3, 1] -> [3, 4]: columns repeat.
    b.store(o2, offsets_2d(&b, 3, 4), v.col().broadcast_to(&Shape::new(vec![3, 4])));
    // scalar -> [2, 2, 2], and [1, 3] -> [2, 2, 3] (new leading dims).
    let s = b.load(x, b.constant(1, I32)).broadcast_to(&Shape::new(vec![2, 2, 2]));
    let s = s.reshape(&[8]);
    b.store(o3, b.arange(0, 8), s);
    let t = v.row().broadcast_to(&Shape::new(vec![2, 2, 3])).reshape(&[12]);
    b.store(o3, b.arange(8, 20), t);
    let k = b.finish().unwrap();
    let xs = [1.25, -2.5, 3.75];
    let mut args = [buf(F32, &xs), poison(F32, 6), poison(F32, 12), poison(F32, 20)];
    run_ok(&k, [1, 1, 1], &mut args);
    assert_same(&out(&args, 1), &[1.25, -2.5, 3.75, 1.25, -2.5, 3.75]);
    let col: Vec<f64> = xs.iter().flat_map(|&x| [x; 4]).collect();
    assert_same(&out(&args, 2), &col);
    let mut want = vec![-2.5; 8];
    for _ in 0..4 {
        want.extend(xs);
    }
    assert_same(&out(&args, 3), &want);
}

#[test]
fn reshape_and_expand_dims_keep_row_major_order() {
    let b = KernelBuilder::new("reshape");
    let (x, sums, outer) = (b.buffer("x", I32), b.buffer("sums", I32), b.buffer("outer", I32));
    let v = b.load(x, b.arange(0, 12));
    // Row i of the [3, 4] reshape is x[4i..4i + 4].
    b.store(sums, b.arange(0, 3), v.reshape(&[3, 4]).sum(1));
    // expand_dims(1) makes a column and expand_dims(0) a row: their product is the outer product.
    let a = b.load(x, b.arange(0, 3));
    let prod =
        a.expand_dims(1).broadcast_to(&Shape::new(vec![3, 3])) * a.expand_dims(0).broadcast_to(&Shape::new(vec![3, 3]));
    b.store(outer, offsets_2d(&b, 3, 3), prod);
    let k = b.finish().unwrap();
    let xs: Vec<f64> = Rng::new(21).ints(12, -50, 50);
    let mut args = [buf(I32, &xs), poison(I32, 3), poison(I32, 9)];
    run_ok(&k, [1, 1, 1], &mut args);
    let want: Vec<f64> = xs.chunks(4).map(|c| c.iter().sum()).collect();
    assert_same(&out(&args, 1), &want);
    let want: Vec<f64> = (0..9).map(|i| xs[i / 3] * xs[i % 3]).collect();
    assert_same(&out(&args, 2), &want);
}

// ---------------------------------------------------------------- reductions

/// Loads `x` as a `[d0, d1, d2]` tile of `dtype`, reduces `axis` with sum and max, stores both.
fn reduce3(dtype: DType, dims: [u32; 3], axis: u32, xs: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let n: u32 = dims.iter().product();
    let rest = n / dims[axis as usize];
    let b = KernelBuilder::new("reduce");
    let (x, s, m) = (b.buffer("x", dtype), b.buffer("sum", dtype), b.buffer("max", dtype));
    let v = b.load(x, b.arange(0, n as i32)).reshape(&dims);
    b.store(s, b.arange(0, rest as i32), v.sum(axis).reshape(&[rest]));
    b.store(m, b.arange(0, rest as i32), v.max(axis).reshape(&[rest]));
    let k = b.finish().unwrap();
    let mut args = [buf(dtype, xs), poison(dtype, rest as usize), poison(dtype, rest as usize)];
    run_ok(&k, [1, 1, 1], &mut args);
    (out(&args, 1), out(&args, 2))
}

/// Independent reduction: for each output position, the elements along `axis` in index order.
fn lines(dims: [u32; 3], axis: usize, xs: &[f64]) -> Vec<Vec<f64>> {
    let [d0, d1, d2] = dims.map(|d| d as usize);
    let mut out = Vec::new();
    for i in 0..d0 {
        for j in 0..d1 {
            for l in 0..d2 {
                let idx = [i, j, l];
                if idx[axis] != 0 {
                    continue;
                }
                let line = (0..dims[axis] as usize)
                    .map(|t| {
                        let mut p = idx;
                        p[axis] = t;
                        xs[(p[0] * d1 + p[1]) * d2 + p[2]]
                    })
                    .collect();
                out.push(line);
            }
        }
    }
    out
}

#[test]
fn reduce_sum_and_max_along_each_axis() {
    let dims = [2, 3, 4];
    let xs = Rng::new(30).f32s(24, -10.0, 10.0);
    for axis in 0..3 {
        let (sum, max) = reduce3(F32, dims, axis, &xs);
        let ls = lines(dims, axis as usize, &xs);
        let want_sum: Vec<f64> = ls.iter().map(|l| l.iter().sum::<f64>() as f32 as f64).collect();
        let want_max: Vec<f64> = ls.iter().map(|l| l.iter().cloned().fold(f64::NEG_INFINITY, f64::max)).collect();
        assert_same(&sum, &want_sum);
        assert_same(&max, &want_max);
    }
    // Integers: the sum wraps; the max is ordinary.
    let xs = [i32::MAX as f64, 5.0, -3.0, 1.0, i32::MIN as f64, -7.0];
    let (sum, max) = reduce3(I32, [1, 2, 3], 2, &xs);
    assert_same(&sum, &[(i32::MAX.wrapping_add(2)) as f64, (i32::MIN.wrapping_sub(6)) as f64]);
    assert_same(&max, &[i32::MAX as f64, 1.0]);
    let (sum, max) = reduce3(U8, [1, 1, 3], 2, &[200.0, 100.0, 7.0]);
    assert_same(&sum, &[51.0]);
    assert_same(&max, &[200.0]);
    let (sum, max) = reduce3(I8, [1, 3, 1], 1, &[-100.0, -100.0, -1.0]);
    assert_same(&sum, &[55.0]);
    assert_same(&max, &[-1.0]);
}

#[test]
fn reduce_sum_rounds_once_to_the_dtype() {
    let e = |k: i32| 2f64.powi(k);
    // Exact sum 2049 + 2^-20 lies just above the f16 tie 2049, so it rounds up to 2050; rounding
    // through f32 or dropping low bits first would tie to 2048.
    let (sum, _) = reduce3(F16, [1, 1, 3], 2, &[2048.0, 1.0, e(-20)]);
    assert_same(&sum, &[2050.0]);
    // In f32, adding 2^-24 to 1 twice step by step stays 1; summed once it is 1 + 2^-23.
    let (sum, _) = reduce3(F32, [1, 1, 3], 2, &[1.0, e(-24), e(-24)]);
    assert_same(&sum, &[1.0 + e(-23)]);
    let (sum, _) = reduce3(BF16, [1, 1, 3], 2, &[1.0, e(-8), e(-20)]);
    assert_same(&sum, &[1.0 + e(-7)]);
}

#[test]
fn reduce_max_ignores_nan_unless_all_nan() {
    let nan = f64::NAN;
    let (_, max) = reduce3(F32, [3, 1, 4], 2, &[nan, 1.0, 3.0, nan, nan, nan, nan, nan, -0.0, 0.0, -1.0, nan]);
    assert_same(&max, &[3.0, nan, 0.0]);
    let (_, max) = reduce3(F16, [1, 1, 3], 2, &[-5.0, nan, -2.0]);
    assert_same(&max, &[-2.0]);
}

// ---------------------------------------------------------------- dot

/// Runs `acc + lhs · rhs` with `lhs: [m, k]` and `rhs: [k, n]` of `dtype`.
fn run_dot(dtype: DType, acc_dtype: DType, [m, k, n]: [u32; 3], a: &[f64], bm: &[f64], c: &[f64]) -> Vec<f64> {
    let b = KernelBuilder::new("dot");
    let (x, y, z, o) =
        (b.buffer("a", dtype), b.buffer("b", dtype), b.buffer("c", acc_dtype), b.buffer("out", acc_dtype));
    let lhs = b.load(x, offsets_2d(&b, m, k));
    let rhs = b.load(y, offsets_2d(&b, k, n));
    let acc = b.load(z, offsets_2d(&b, m, n));
    b.store(o, offsets_2d(&b, m, n), b.dot(lhs, rhs, acc));
    let kernel = b.finish().unwrap();
    let mut args = [buf(dtype, a), buf(dtype, bm), buf(acc_dtype, c), poison(acc_dtype, (m * n) as usize)];
    run_ok(&kernel, [1, 1, 1], &mut args);
    out(&args, 3)
}

/// `acc + Σ_k a·b` in f64 in k order, per output.
fn reference_dot([m, k, n]: [usize; 3], a: &[f64], b: &[f64], c: &[f64]) -> Vec<f64> {
    let mut out = Vec::new();
    for i in 0..m {
        for j in 0..n {
            let mut s = c[i * n + j];
            for t in 0..k {
                s += a[i * k + t] * b[t * n + j];
            }
            out.push(s);
        }
    }
    out
}

#[test]
fn dot_of_floats_accumulates_in_f64_and_rounds_once_to_f32() {
    let mut rng = Rng::new(40);
    let (m, k, n) = (5, 16, 3);
    let a = rng.f32s(m * k, -2.0, 2.0);
    let bm = rng.f32s(k * n, -2.0, 2.0);
    let c = rng.f32s(m * n, -10.0, 10.0);
    let got = run_dot(F32, F32, [m as u32, k as u32, n as u32], &a, &bm, &c);
    let want: Vec<f64> = reference_dot([m, k, n], &a, &bm, &c).into_iter().map(|x| x as f32 as f64).collect();
    assert_same(&got, &want);
    let a16: Vec<f64> = a.iter().map(|&x| nearest_f16(x)).collect();
    let b16: Vec<f64> = bm.iter().map(|&x| nearest_f16(x)).collect();
    let got = run_dot(F16, F32, [m as u32, k as u32, n as u32], &a16, &b16, &c);
    let want: Vec<f64> = reference_dot([m, k, n], &a16, &b16, &c).into_iter().map(|x| x as f32 as f64).collect();
    assert_same(&got, &want);
    // One rounding: 1 + 2^-24 + 2^-24 is 1 + 2^-23 in f32, where per-step rounding would give 1.
    let e = 2f64.powi(-12);
    let got = run_dot(F32, F32, [1, 2, 1], &[e, e], &[e, e], &[1.0]);
    assert_same(&got, &[1.0 + 2f64.powi(-23)]);
}

#[test]
fn dot_of_8_bit_ints_accumulates_into_wrapping_i32() {
    let mut rng = Rng::new(41);
    let (m, k, n) = (3, 20, 4);
    let a = rng.ints(m * k, -128, 127);
    let bm = rng.ints(k * n, -128, 127);
    let c = rng.ints(m * n, -1000, 1000);
    let got = run_dot(I8, I32, [m as u32, k as u32, n as u32], &a, &bm, &c);
    assert_same(&got, &reference_dot([m, k, n], &a, &bm, &c));
    let a = rng.ints(m * k, 0, 255);
    let bm = rng.ints(k * n, 0, 255);
    let got = run_dot(U8, I32, [m as u32, k as u32, n as u32], &a, &bm, &c);
    assert_same(&got, &reference_dot([m, k, n], &a, &bm, &c));
    let got = run_dot(U8, I32, [1, 1, 1], &[255.0], &[255.0], &[i32::MAX as f64]);
    assert_same(&got, &[i32::MAX.wrapping_add(255 * 255) as f64]);
}

// ---------------------------------------------------------------- memory

#[test]
fn masked_load_gives_other_or_zero_and_never_touches_masked_lanes() {
    let xs = Rng::new(50).f32s(10, -5.0, 5.0);
    let b = KernelBuilder::new("load");
    let (x, o1, o2) = (b.buffer("x", F32), b.buffer("o1", F32), b.buffer("o2", F32));
    let offs = b.arange(0, 16);
    // Lanes 10..16 would be out of bounds; masked off, they read nothing.
    let mask = offs.lt(10);
    b.store(o1, offs, b.load_masked(x, offs, mask, -1.5));
    let other = offs.cast(F32) * 100.0;
    b.store(o2, offs, b.load_masked(x, offs, mask, other));
    let k = b.finish().unwrap();
    let mut args = [buf(F32, &xs), poison(F32, 16), poison(F32, 16)];
    run_ok(&k, [1, 1, 1], &mut args);
    let mut want = xs.clone();
    want.extend([-1.5; 6]);
    assert_same(&out(&args, 1), &want);
    let mut want = xs.clone();
    want.extend((10..16).map(|i| i as f64 * 100.0));
    assert_same(&out(&args, 2), &want);
}

/// A kernel the builder cannot write: a masked load with no `other`, on u32 offsets.
fn load_without_other(dtype: DType) -> Kernel {
    let mut k = Kernel::new("load_zero");
    let (x, o) = (k.add_buffer("x", dtype), k.add_buffer("out", dtype));
    let e = k.entry;
    let one = |k: &mut Kernel, op: Op, ty: Type| {
        let i = k.push_inst(e, op, vec![ty]);
        k.inst(i).results[0]
    };
    let offs = one(&mut k, Op::Arange { start: 0, end: 8 }, Type::tile(I32, vec![8]));
    let offs = one(&mut k, Op::Cast { arg: offs, to: U32 }, Type::tile(U32, vec![8]));
    let five =
        one(&mut k, Op::Constant { value: Literal::Int(5), ty: Type::tile(U32, vec![8]) }, Type::tile(U32, vec![8]));
    let mask = one(&mut k, Op::Compare { pred: CmpPred::Lt, lhs: offs, rhs: five }, Type::tile(BOOL, vec![8]));
    let v =
        one(&mut k, Op::Load { buffer: x, offsets: offs, mask: Some(mask), other: None }, Type::tile(dtype, vec![8]));
    k.push_inst(e, Op::Store { buffer: o, offsets: offs, value: v, mask: None }, vec![]);
    kiln_ir::verify(&k).unwrap();
    k
}

#[test]
fn masked_load_without_other_gives_zero() {
    for (dtype, xs, zero) in [
        (F32, vec![1.5, -2.0, 3.0, 4.0, 5.0], 0.0),
        (I8, vec![-1.0, -2.0, 3.0, 4.0, 5.0], 0.0),
        (BOOL, vec![1.0, 1.0, 1.0, 0.0, 1.0], 0.0),
    ] {
        let k = load_without_other(dtype);
        let mut args = [buf(dtype, &xs), poison(dtype, 8)];
        run_ok(&k, [1, 1, 1], &mut args);
        let mut want = xs.clone();
        want.extend([zero; 3]);
        assert_same(&out(&args, 1), &want);
    }
}

#[test]
fn masked_store_skips_masked_lanes_and_later_lanes_win() {
    let b = KernelBuilder::new("store");
    let (o1, o2) = (b.buffer("o1", F32), b.buffer("o2", I32));
    let offs = b.arange(0, 12);
    // Odd lanes are masked off; lanes 8.. point past the buffer, masked off too.
    let mask = (offs % 2).eq(0) & offs.lt(8);
    b.store_masked(o1, offs, offs.cast(F32) * 0.5 - 1.0, mask);
    // Lanes 2i and 2i + 1 both write element i; the later lane's value stays.
    let lanes = b.arange(0, 8);
    b.store(o2, lanes / 2, lanes * 10);
    let k = b.finish().unwrap();
    let mut args = [poison(F32, 8), poison(I32, 4)];
    run_ok(&k, [1, 1, 1], &mut args);
    let want: Vec<f64> = (0..8).map(|i| if i % 2 == 0 { i as f64 * 0.5 - 1.0 } else { f64::NAN }).collect();
    assert_same(&out(&args, 0), &want);
    assert_same(&out(&args, 1), &[10.0, 30.0, 50.0, 70.0]);
}

#[test]
fn store_writes_every_dtype_exactly() {
    let mut rng = Rng::new(51);
    for dtype in DType::ALL {
        let xs: Vec<f64> = match dtype {
            F32 => rng.f32s(8, -1e6, 1e6),
            F16 => rng.vec(8, -1e3, 1e3).into_iter().map(nearest_f16).collect(),
            BF16 => rng.vec(8, -1e9, 1e9).into_iter().map(nearest_bf16).collect(),
            I32 => rng.ints(8, i32::MIN as i64, i32::MAX as i64),
            U32 => rng.ints(8, 0, u32::MAX as i64),
            I8 => rng.ints(8, -128, 127),
            U8 => rng.ints(8, 0, 255),
            BOOL => rng.ints(8, 0, 1),
        };
        let b = KernelBuilder::new("copy");
        let (x, o) = (b.buffer("x", dtype), b.buffer("out", dtype));
        let offs = b.arange(0, 8);
        b.store(o, offs, b.load(x, offs));
        let k = b.finish().unwrap();
        let mut args = [buf(dtype, &xs), poison(dtype, 8)];
        run_ok(&k, [1, 1, 1], &mut args);
        assert_eq!(args[0], args[1], "{dtype}");
        assert_same(&out(&args, 1), &xs);
    }
}

#[test]
fn atomic_add_accumulates_in_lane_then_program_order() {
    let b = KernelBuilder::new("atomic");
    let (x, acc, counts, wrap) =
        (b.buffer("x", F32), b.buffer("acc", F32), b.buffer("counts", U32), b.buffer("wrap", I32));
    let pid = b.program_id(0);
    let lanes = b.arange(0, 8);
    let v = b.load(x, pid * 8 + lanes);
    // Eight lanes fold onto three slots; lane 7 is masked off.
    b.atomic_add(acc, lanes % 3, v, Some(lanes.lt(7)));
    b.atomic_add(counts, lanes % 2, b.constant(1u32, U32), None);
    b.atomic_add(wrap, b.constant(0, I32), b.constant(i32::MAX, I32), None);
    let k = b.finish().unwrap();
    let programs = 4;
    let xs = Rng::new(52).f32s(8 * programs, -3.0, 3.0);
    let init = [0.25, -1.0, 7.0];
    let mut args = [buf(F32, &xs), buf(F32, &init), buf(U32, &[u32::MAX as f64, 5.0]), buf(I32, &[2.0])];
    run_ok(&k, [programs as u32, 1, 1], &mut args);
    let mut want = init.map(|x| x as f32);
    for p in 0..programs {
        for lane in 0..7 {
            want[lane % 3] += xs[p * 8 + lane] as f32;
        }
    }
    assert_same(&out(&args, 1), &want.map(f64::from));
    // 4 programs × 4 lanes per slot; slot 0 starts at u32::MAX and wraps.
    assert_same(&out(&args, 2), &[15.0, 21.0]);
    let want = (0..programs).fold(2i32, |a, _| a.wrapping_add(i32::MAX));
    assert_same(&out(&args, 3), &[want as f64]);
}

#[test]
fn atomic_add_rounds_f32_after_each_add() {
    let b = KernelBuilder::new("atomic_round");
    let acc = b.buffer("acc", F32);
    let zeros = b.full(&[4], 0, I32);
    b.atomic_add(acc, zeros, b.full(&[4], 2f64.powi(-24), F32), None);
    let k = b.finish().unwrap();
    let mut args = [buf(F32, &[1.0])];
    run_ok(&k, [1, 1, 1], &mut args);
    // Each 1 + 2^-24 is a tie that rounds back to 1.
    assert_same(&out(&args, 0), &[1.0]);
}

// ---------------------------------------------------------------- loops

#[test]
fn for_loop_carries_values_over_a_blocked_sum() {
    const BLOCK: i32 = 64;
    let b = KernelBuilder::new("blocked_sum");
    let (x, o) = (b.buffer("x", F32), b.buffer("out", F32));
    let n = b.scalar("n", I32);
    let zero_acc = b.zeros(&[BLOCK as u32], F32);
    let zero_count = b.constant(0, I32);
    let [acc, count] = b.for_range(0, n, BLOCK, [zero_acc, zero_count], |i, [acc, count]| {
        let offs = i + b.arange(0, BLOCK);
        let v = b.load_masked(x, offs, offs.lt(n), 0.0);
        [acc + v, count + 1]
    });
    b.store(o, b.constant(0, I32), acc.sum(0));
    b.store(o, b.constant(1, I32), count.cast(F32));
    let k = b.finish().unwrap();
    let len = 5000;
    let xs = Rng::new(60).f32s(len, -1.0, 1.0);
    let mut args = [buf(F32, &xs), poison(F32, 2), scalar(I32, len as f64)];
    run_ok(&k, [1, 1, 1], &mut args);
    // Lane j accumulates x[j], x[j + 64], ... in f32; then the lanes sum once.
    let mut lanes = [0f32; BLOCK as usize];
    for (i, &v) in xs.iter().enumerate() {
        lanes[i % BLOCK as usize] += v as f32;
    }
    let total = lanes.iter().map(|&l| f64::from(l)).sum::<f64>() as f32;
    let iterations = len.div_ceil(BLOCK as usize);
    assert_same(&out(&args, 1), &[f64::from(total), iterations as f64]);
}

#[test]
fn for_loop_steps_and_zero_iteration_loops_return_init() {
    let b = KernelBuilder::new("loops");
    let (seen, results) = (b.buffer("seen", I32), b.buffer("results", I32));
    let (start, end) = (b.scalar("start", I32), b.scalar("end", I32));
    // Records each induction value at slot (i - start) / 3.
    let [count] = b.for_range(start, end, 3, [b.constant(0, I32)], |i, [c]| {
        b.store(seen, (i - start) / 3, i);
        [c + 1]
    });
    b.store(results, b.constant(0, I32), count);
    // Runs zero times: end <= start.
    let [r] = b.for_range(end, start, 1, [b.constant(-77, I32)], |i, [c]| [c + i]);
    b.store(results, b.constant(1, I32), r);
    // Nested: Σ_{i < 4} Σ_{j < i} (i * 10 + j).
    let [outer] = b.for_range(0, 4, 1, [b.constant(0, I32)], |i, [acc]| {
        let [inner] = b.for_range(0, i, 1, [acc], |j, [a]| [a + i * 10 + j]);
        [inner]
    });
    b.store(results, b.constant(2, I32), outer);
    // Near i32::MAX the next i would overflow i32; the loop still ends after one iteration.
    let [high] = b.for_range(i32::MAX - 2, i32::MAX, 5, [b.constant(0, I32)], |i, [c]| [c + (i - (i32::MAX - 3))]);
    b.store(results, b.constant(3, I32), high);
    let k = b.finish().unwrap();
    let mut args = [poison(I32, 5), poison(I32, 4), scalar(I32, -4.0), scalar(I32, 9.0)];
    run_ok(&k, [1, 1, 1], &mut args);
    assert_same(&out(&args, 0), &[-4.0, -1.0, 2.0, 5.0, 8.0]);
    let nested: i32 = (0..4).map(|i| (0..i).map(|j| i * 10 + j).sum::<i32>()).sum();
    assert_same(&out(&args, 1), &[5.0, -77.0, nested as f64, 1.0]);
}

#[test]
fn programs_see_earlier_programs_writes() {
    // A prefix sum across programs: each program adds its value to the previous total.
    let b = KernelBuilder::new("scan");
    let (x, o) = (b.buffer("x", I32), b.buffer("out", I32));
    let pid = b.program_id(0);
    let prev = b.load_masked(o, pid - 1, pid.gt(0), 0);
    b.store(o, pid, prev + b.load(x, pid));
    let k = b.finish().unwrap();
    let xs = Rng::new(70).ints(9, -100, 100);
    let mut args = [buf(I32, &xs), poison(I32, 9)];
    run_ok(&k, [9, 1, 1], &mut args);
    let want: Vec<f64> = xs
        .iter()
        .scan(0.0, |s, &v| {
            *s += v;
            Some(*s)
        })
        .collect();
    assert_same(&out(&args, 1), &want);
}

#[test]
fn tiled_matmul_with_ragged_edges_matches_a_blockwise_reference() {
    // C[M, N] = A[M, K] · B[K, N], 16×16 tiles per program, K in blocks of 16, masked edges.
    const T: i32 = 16;
    let (m, n, kk) = (45usize, 30usize, 77usize);
    let b = KernelBuilder::new("matmul");
    let (a, bb, c) = (b.buffer("a", F16), b.buffer("b", F16), b.buffer("c", F32));
    let (sm, sn, sk) = (b.scalar("m", I32), b.scalar("n", I32), b.scalar("k", I32));
    let rows = b.program_id(0) * T + b.arange(0, T);
    let cols = b.program_id(1) * T + b.arange(0, T);
    let acc = b.zeros(&[T as u32, T as u32], F32);
    let [acc] = b.for_range(0, sk, T, [acc], |k0, [acc]| {
        let ks = k0 + b.arange(0, T);
        let a_offs = rows.col() * sk + ks.row();
        let a_mask = rows.col().lt(sm) & ks.row().lt(sk);
        let b_offs = ks.col() * sn + cols.row();
        let b_mask = ks.col().lt(sk) & cols.row().lt(sn);
        let x = b.load_masked(a, a_offs, a_mask, 0.0);
        let y = b.load_masked(bb, b_offs, b_mask, 0.0);
        [b.dot(x, y, acc)]
    });
    let c_offs = rows.col() * sn + cols.row();
    b.store_masked(c, c_offs, acc, rows.col().lt(sm) & cols.row().lt(sn));
    let kernel = b.finish().unwrap();

    let mut rng = Rng::new(80);
    // Any f16 values will do as inputs (no need for the brute-force rounding here).
    let to_f16 = |x: f64| half::f16::from_f64(x).to_f64();
    let xs: Vec<f64> = rng.vec(m * kk, -1.0, 1.0).into_iter().map(to_f16).collect();
    let ys: Vec<f64> = rng.vec(kk * n, -1.0, 1.0).into_iter().map(to_f16).collect();
    let mut args = [
        buf(F16, &xs),
        buf(F16, &ys),
        poison(F32, m * n),
        scalar(I32, m as f64),
        scalar(I32, n as f64),
        scalar(I32, kk as f64),
    ];
    let grid = [m.div_ceil(T as usize) as u32, n.div_ceil(T as usize) as u32, 1];
    run_ok(&kernel, grid, &mut args);
    // Each k block adds its products in f64 to the f32 accumulator and rounds once.
    let mut want = vec![0.0; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut acc = 0f32;
            for k0 in (0..kk).step_by(T as usize) {
                let mut s = f64::from(acc);
                for k in k0..(k0 + T as usize).min(kk) {
                    s += xs[i * kk + k] * ys[k * n + j];
                }
                acc = s as f32;
            }
            want[i * n + j] = f64::from(acc);
        }
    }
    assert_same(&out(&args, 2), &want);
}

#[test]
fn host_buffer_helpers_convert_like_cast() {
    use kiln_ir::interp::{HostBuffer, Scalar};
    let b = HostBuffer::from_f64(I8, &[300.0, -3.9, f64::NAN, -1000.0]);
    assert_eq!(b, HostBuffer::I8(vec![127, -3, 0, -128]));
    assert_eq!((b.dtype(), b.len(), b.is_empty()), (I8, 4, false));
    assert_eq!(b.to_f64(), vec![127.0, -3.0, 0.0, -128.0]);
    let h = HostBuffer::from_f64(F16, &[1.0 + 2f64.powi(-11), 0.1]);
    assert_eq!(h.to_f64(), vec![1.0, 0.0999755859375]);
    assert_eq!(HostBuffer::zeros(BOOL, 2), HostBuffer::Bool(vec![false, false]));
    assert_eq!(HostBuffer::filled(U32, 1, -5.0), HostBuffer::U32(vec![0]));
    assert_eq!(Scalar::from_f64(BF16, 0.1).to_f64(), 0.10009765625);
    assert_eq!(Scalar::from_f64(U8, 256.0), Scalar::U8(255));
    assert_eq!(Scalar::I32(-4).dtype(), I32);
}
