//! Shared helpers of the kernel tests: the conformance sweep in the interpreter and bad-input
//! assertions.

#![allow(dead_code)]

use kiln_kernels::check::{sweep, Interpreter};
use kiln_kernels::{lookup, Args};

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
