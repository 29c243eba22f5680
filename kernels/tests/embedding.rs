//! `embedding` from a Q8_0 table against its reference in the interpreter, out-of-range ids as
//! typed errors, and bad inputs.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_ir::interp::HostBuffer;
use kiln_kernels::check::{prepare_buffers, run_plan, Interpreter};
use kiln_kernels::{lookup, Args, KernelError};
use proptest::prelude::*;

#[test]
fn embedding_matches_reference() {
    // dims that are whole Q8_0 blocks but not whole program blocks (96, 160, 576), both dtypes.
    let shapes = [
        "tokens=1,vocab=10,dim=32",
        "tokens=5,vocab=50,dim=96,dtype=f16",
        "tokens=3,vocab=200,dim=576",
        "tokens=7,vocab=3,dim=160,dtype=f16",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_conformance("embedding", shape, 4, 700 + i as u64);
    }
}

#[test]
fn embedding_out_of_range_id_is_an_error() {
    let k = lookup("embedding").unwrap();
    let shape = Args::parse("tokens=3,vocab=10,dim=64").unwrap();
    // Past the end, negative, and ids whose offsets wrap around i32: `2^26 · 64` wraps to 0 in
    // `qs` (not in `scales`), `i32::MIN` to 0 in both, which only the kernel's guard catches.
    for bad in [10, -1, 1 << 26, i32::MIN] {
        for config in ["block=32", "block=64"] {
            let plan = k.plan(&shape, &Args::parse(config).unwrap()).unwrap();
            let mut inputs = k.inputs(&shape, 1).unwrap();
            inputs.insert("ids".into(), HostBuffer::I32(vec![2, bad, 0]));
            let mut buffers = prepare_buffers("embedding", &plan, &inputs).unwrap();
            let err = run_plan("embedding", &plan, &mut Interpreter, &mut buffers).expect_err("a bad id must fail");
            assert!(
                matches!(&err, KernelError::Launch { message, .. } if message.contains("out of bounds")),
                "id {bad}: {err}"
            );
        }
    }
}

#[test]
fn embedding_rejects_bad_problems() {
    assert_constraint("embedding", "tokens=0,vocab=8,dim=32", "", "at least 1");
    assert_constraint("embedding", "tokens=1,vocab=0,dim=32", "", "at least 1");
    assert_constraint("embedding", "tokens=1,vocab=8,dim=0", "", "at least 1");
    assert_constraint("embedding", "tokens=1,vocab=8,dim=48", "", "dim = 48 is not a multiple");
    assert_constraint("embedding", "tokens=1,vocab=8,dim=32,dtype=bf16", "", "dtype `bf16`");
    assert_constraint("embedding", "tokens=1,vocab=65536,dim=65536", "", "i32 offset range");
    assert_constraint("embedding", "tokens=1,vocab=8,dim=32", "block=48", "block = 48");
    assert_constraint("embedding", "tokens=1,vocab=8,dim=32,heads=3", "", "unknown shape key `heads`");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn embedding_random_shapes(tokens in 1u32..8, vocab in 1u32..100, dim_blocks in 1u32..24, f16 in any::<bool>(), seed in 0u64..1000) {
        let dtype = if f16 { "f16" } else { "f32" };
        assert_conformance("embedding", &format!("tokens={tokens},vocab={vocab},dim={},dtype={dtype}", 32 * dim_blocks), 2, seed);
    }
}

#[test]
fn embedding_example_problem_and_whole_space_plan() {
    // The example problem (what a caller gets with no shape) passes, and every config of its
    // legal space, which contains the default, plans.
    let k = lookup("embedding").unwrap();
    let shape = k.example_problem();
    assert_conformance("embedding", &shape.to_string(), 1, 1);
    let space = k.space(&shape, &kiln_kernels::SpaceLimits::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("[{config}]: {e}"));
    }
}
