//! Shared helpers of the kernel tests: the conformance sweep in the interpreter, bad-input
//! assertions, and the check that a producer's de-interleaved output is the row-loop GEMV's x.

#![allow(dead_code)]

use kiln_kernels::check::{prepare_buffers, run_plan, sweep, Interpreter};
use kiln_kernels::{lookup, Args, Buffers, Plan};

/// Runs `kernel` on `shape` with its default and `max_configs - 1` more configs in the
/// interpreter, fresh inputs from `seed`, and asserts every output matches the reference.
pub fn assert_conformance(kernel: &str, shape: &str, max_configs: usize, seed: u64) {
    let k = lookup(kernel).unwrap_or_else(|e| panic!("{e}"));
    let shape = Args::parse(shape).unwrap();
    let reports = sweep(k, &shape, &mut Interpreter, seed, max_configs).unwrap_or_else(|e| panic!("{e}"));
    assert!(!reports.is_empty());
    for r in &reports {
        assert!(r.passed(), "{r}");
        assert!(!r.comparisons.is_empty(), "{kernel} compared nothing");
    }
}

/// Asserts that planning `kernel` for `shape` / `config` fails with a message containing `needle`.
pub fn assert_constraint(kernel: &str, shape: &str, config: &str, needle: &str) {
    let k = lookup(kernel).unwrap();
    let err = k.plan(&Args::parse(shape).unwrap(), &Args::parse(config).unwrap()).expect_err("plan should fail");
    let msg = err.to_string();
    assert!(msg.contains(needle), "`{msg}` does not mention `{needle}`");
    assert!(msg.starts_with(kernel), "`{msg}` does not name the kernel");
}

/// Asserts that a producer's `xd` / `xs` (in `produced`, which holds its `out` too) are bit for
/// bit what the one-token row-loop GEMV's first launch makes of that `out`: a model step hands
/// them to the GEMV in place of that launch. `gemv_config` picks the row loop's step;
/// `label` names the case in failures.
pub fn assert_row_loop_x(produced: &Buffers, dtype: &str, k: usize, gemv_config: &str, label: &str) {
    let gemv = lookup("dequant_gemm_w4").unwrap();
    let gemv_shape = Args::parse(&format!("m=1,n=64,k={k},group=32,act={dtype}")).unwrap();
    let gemv_plan = gemv.plan(&gemv_shape, &Args::parse(gemv_config).unwrap()).unwrap();
    let mut inputs = gemv.inputs(&gemv_shape, 12).unwrap();
    inputs.insert("x".into(), produced["out"].clone());
    let mut gemv_buffers = prepare_buffers("dequant_gemm_w4", &gemv_plan, &inputs).unwrap();
    // Only the first launch: the de-interleave.
    let first = Plan { buffers: gemv_plan.buffers.clone(), launches: gemv_plan.launches[..1].to_vec() };
    run_plan("dequant_gemm_w4", &first, &mut Interpreter, &mut gemv_buffers).unwrap();
    for name in ["xd", "xs"] {
        let (want, got) = (gemv_buffers[name].to_f64(), produced[name].to_f64());
        assert_eq!(want.len(), got.len(), "{name}");
        assert!(want.iter().all(|v| v.is_finite()), "{name} not written by the GEMV's launch");
        let differ = want.iter().zip(&got).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
        assert_eq!(differ, 0, "{label}: {differ} of {} values of `{name}` differ", want.len());
    }
}
