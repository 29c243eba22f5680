//! Bad input to the interpreter: every case returns its typed error, naming what went wrong, and
//! none panics.

mod common;

use common::*;
use kiln_ir::interp::{run, Arg, ArgForm, HostBuffer, InterpError, Scalar};
use kiln_ir::{DType, Kernel, KernelBuilder};

const F32: DType = DType::F32;
const I32: DType = DType::I32;

/// `out[i] = x[i] * s` for i < n.
fn scale_kernel() -> Kernel {
    let b = KernelBuilder::new("scale");
    let (x, o) = (b.buffer("x", F32), b.buffer("out", F32));
    let s = b.scalar("s", F32);
    let offs = b.arange(0, 4);
    b.store(o, offs, b.load(x, offs) * s);
    b.finish().unwrap()
}

fn good_args() -> Vec<Arg> {
    vec![buf(F32, &[1.0, 2.0, 3.0, 4.0]), poison(F32, 4), scalar(F32, 0.5)]
}

#[test]
fn good_arguments_run() {
    let mut args = good_args();
    run_ok(&scale_kernel(), [1, 1, 1], &mut args);
    assert_same(&out(&args, 1), &[0.5, 1.0, 1.5, 2.0]);
}

#[test]
fn wrong_argument_count_is_an_error() {
    let mut args = good_args();
    args.pop();
    let err = run(&scale_kernel(), [1, 1, 1], &mut args).unwrap_err();
    assert!(matches!(err, InterpError::ArgCount { expected: 3, got: 2, .. }), "{err}");
    assert!(err.to_string().contains("takes 3 arguments, got 2"), "{err}");
}

#[test]
fn buffer_of_the_wrong_dtype_is_an_error() {
    let mut args = good_args();
    args[0] = Arg::Buffer(HostBuffer::zeros(I32, 4));
    let err = run(&scale_kernel(), [1, 1, 1], &mut args).unwrap_err();
    match &err {
        InterpError::ArgDType { param, form, expected, got } => {
            assert_eq!((param.as_str(), *form, *expected, *got), ("x", ArgForm::Buffer, F32, I32));
        }
        other => panic!("unexpected error {other}"),
    }
    assert_eq!(err.to_string(), "argument `x`: expected a buffer of f32, got one of i32");
}

#[test]
fn scalar_of_the_wrong_dtype_is_an_error() {
    let mut args = good_args();
    args[2] = Arg::Scalar(Scalar::I32(2));
    let err = run(&scale_kernel(), [1, 1, 1], &mut args).unwrap_err();
    assert!(
        matches!(&err, InterpError::ArgDType { param, form: ArgForm::Scalar, expected: F32, got: I32 } if param == "s"),
        "{err}"
    );
}

#[test]
fn scalar_for_a_buffer_and_buffer_for_a_scalar_are_errors() {
    let mut args = good_args();
    args[1] = Arg::Scalar(Scalar::F32(1.0));
    let err = run(&scale_kernel(), [1, 1, 1], &mut args).unwrap_err();
    assert!(
        matches!(&err, InterpError::ArgKind { param, expected: ArgForm::Buffer, got: ArgForm::Scalar } if param == "out"),
        "{err}"
    );
    assert_eq!(err.to_string(), "argument `out`: expected a buffer, got a scalar");
    let mut args = good_args();
    args[2] = buf(F32, &[1.0]);
    let err = run(&scale_kernel(), [1, 1, 1], &mut args).unwrap_err();
    assert!(
        matches!(&err, InterpError::ArgKind { param, expected: ArgForm::Scalar, got: ArgForm::Buffer } if param == "s")
    );
}

#[test]
fn a_grid_with_a_zero_dimension_is_an_error() {
    for grid in [[0, 1, 1], [1, 0, 1], [1, 1, 0], [1, 1, u32::MAX]] {
        let mut args = good_args();
        let err = run(&scale_kernel(), grid, &mut args).unwrap_err();
        assert!(matches!(err, InterpError::BadGrid { grid: g } if g == grid), "{err}");
    }
}

#[test]
fn an_invalid_kernel_is_rejected_by_the_verifier() {
    let mut k = scale_kernel();
    k.name = "not an identifier".into();
    let err = run(&k, [1, 1, 1], &mut good_args()).unwrap_err();
    assert!(matches!(err, InterpError::Invalid(_)), "{err}");
}

/// Loads `x[offs]` for `offs = base + arange(0, 4)` (offsets of `dtype`) and stores them.
fn load_kernel(offset_dtype: DType) -> Kernel {
    let b = KernelBuilder::new("gather");
    let (x, o) = (b.buffer("x", F32), b.buffer("out", F32));
    let base = b.scalar("base", I32);
    let offs = (b.arange(0, 4) + base).cast(offset_dtype);
    let v = b.load(x, offs).named("v");
    b.store(o, b.arange(0, 4), v);
    b.finish().unwrap()
}

#[test]
fn out_of_bounds_load_names_the_op_buffer_and_index() {
    let k = load_kernel(I32);
    let mut args = [buf(F32, &[1.0; 5]), poison(F32, 4), scalar(I32, 3.0)];
    let err = run(&k, [1, 1, 1], &mut args).unwrap_err();
    match &err {
        InterpError::OutOfBounds { inst, buffer, index, len, program } => {
            assert!(inst.starts_with("%v = load (inst"), "{inst}");
            assert_eq!((buffer.as_str(), *index, *len, *program), ("x", 5, 5, [0, 0, 0]));
        }
        other => panic!("unexpected error {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("load") && msg.contains("`x`") && msg.contains("index 5") && msg.contains("5 elements"),
        "{msg}"
    );
    // The output was not written: the failing load comes before the store.
    assert!(out(&args, 1).iter().all(|x| x.is_nan()));

    // Negative i32 offsets are out of bounds; as u32 they are huge and out of bounds too.
    let mut args = [buf(F32, &[1.0; 5]), poison(F32, 4), scalar(I32, -2.0)];
    let err = run(&k, [1, 1, 1], &mut args).unwrap_err();
    assert!(matches!(err, InterpError::OutOfBounds { index: -2, .. }), "{err}");
    let k = load_kernel(DType::U32);
    let err = run(&k, [1, 1, 1], &mut args).unwrap_err();
    assert!(matches!(err, InterpError::OutOfBounds { index: 4294967294, .. }), "{err}");
}

#[test]
fn out_of_bounds_store_and_atomic_add_are_errors_and_write_nothing() {
    let b = KernelBuilder::new("scatter");
    let o = b.buffer("out", I32);
    let base = b.scalar("base", I32);
    b.store(o, b.arange(0, 4) + base, b.arange(0, 4));
    let k = b.finish().unwrap();
    let mut args = [poison(I32, 6), scalar(I32, 3.0)];
    let err = run(&k, [1, 1, 1], &mut args).unwrap_err();
    match &err {
        InterpError::OutOfBounds { inst, buffer, index, len, .. } => {
            assert!(inst.starts_with("store (inst"), "{inst}");
            assert_eq!((buffer.as_str(), *index, *len), ("out", 6, 6));
        }
        other => panic!("unexpected error {other}"),
    }
    // Bounds are checked for every lane before any is written.
    assert_same(&out(&args, 0), &[poison_value(I32); 6]);

    let b = KernelBuilder::new("accumulate");
    let o = b.buffer("acc", F32);
    let pid = b.program_id(0);
    b.atomic_add(o, pid * 2, b.constant(1.0, F32), None);
    let k = b.finish().unwrap();
    let mut args = [buf(F32, &[0.0; 3])];
    let err = run(&k, [3, 1, 1], &mut args).unwrap_err();
    assert!(
        matches!(&err, InterpError::OutOfBounds { index: 4, len: 3, program: [2, 0, 0], buffer, .. } if buffer == "acc"),
        "{err}"
    );
    assert!(err.to_string().contains("atomic_add"), "{err}");
    // Programs before the failing one did run.
    assert_same(&out(&args, 0), &[1.0, 0.0, 1.0]);
}

#[test]
fn integer_division_by_zero_is_an_error() {
    for rem in [false, true] {
        let b = KernelBuilder::new("divide");
        let (x, y, o) = (b.buffer("x", I32), b.buffer("y", I32), b.buffer("out", I32));
        let offs = b.arange(0, 3);
        let (p, q) = (b.load(x, offs), b.load(y, offs));
        let r = if rem { p % q } else { p / q };
        b.store(o, offs, r.named("quotient"));
        let k = b.finish().unwrap();
        let mut args = [buf(I32, &[6.0, 7.0, 8.0]), buf(I32, &[2.0, 0.0, 1.0]), poison(I32, 3)];
        let err = run(&k, [1, 1, 1], &mut args).unwrap_err();
        let op = if rem { "rem" } else { "div" };
        match &err {
            InterpError::DivisionByZero { inst, .. } => {
                assert!(inst.starts_with(&format!("%quotient = {op} (inst")), "{inst}")
            }
            other => panic!("unexpected error {other}"),
        }
    }
    // Float division by zero is IEEE, not an error.
    let got = apply2(F32, F32, &[1.0, -1.0, 0.0], &[0.0, 0.0, 0.0], |a, b| a / b);
    assert_same(&got, &[f64::INFINITY, f64::NEG_INFINITY, f64::NAN]);
}

#[test]
fn a_loop_step_of_zero_or_less_is_an_error() {
    for step in [0.0, -1.0, i32::MIN as f64] {
        let b = KernelBuilder::new("stepper");
        let o = b.buffer("out", I32);
        let s = b.scalar("step", I32);
        let [r] = b.for_range(0, 10, s, [b.constant(0, I32)], |i, [c]| [c + i]);
        b.store(o, b.constant(0, I32), r);
        let k = b.finish().unwrap();
        let mut args = [poison(I32, 1), scalar(I32, step)];
        let err = run(&k, [1, 1, 1], &mut args).unwrap_err();
        match &err {
            InterpError::BadStep { inst, step: got, .. } => {
                assert!(inst.contains("= for (inst"), "{inst}");
                assert_eq!(*got as f64, step);
            }
            other => panic!("unexpected error {other}"),
        }
    }
}
