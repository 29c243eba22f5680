//! `rmsnorm` against its reference in the interpreter (plain and fused with the residual add,
//! every dtype, one-tile and looped rows, with and without the de-interleaved output), the
//! de-interleaved output equal to what the row-loop GEMV's own launch makes of `out`, and its
//! bad inputs.

mod common;

use common::{assert_conformance, assert_constraint, assert_row_loop_x};
use kiln_kernels::check::{check, prepare_buffers, run_plan, Interpreter};
use kiln_kernels::{lookup, Args};
use proptest::prelude::*;

#[test]
fn rmsnorm_matches_reference() {
    // Ragged dims (not multiples of any block), every dtype, both modes; 3 configs each cover
    // both the one-tile row and the two-loop row where dim > 64.
    let shapes = [
        "tokens=1,dim=64",
        "tokens=3,dim=100,dtype=f16",
        "tokens=2,dim=576,dtype=bf16",
        "tokens=4,dim=513,fused=1",
        "tokens=2,dim=200,dtype=f16,fused=1,eps=1e-6",
        "tokens=3,dim=130,dtype=bf16,fused=1",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_conformance("rmsnorm", shape, 3, 200 + i as u64);
    }
}

#[test]
fn rmsnorm_loop_and_single_tile_agree_with_reference() {
    // The same ragged row with the smallest block (a 9-piece loop) and one covering it.
    for block in ["block=64", "block=1024"] {
        let k = lookup("rmsnorm").unwrap();
        let shape = Args::parse("tokens=2,dim=576,fused=1").unwrap();
        let report = check(k, &shape, &Args::parse(block).unwrap(), &mut Interpreter, 7).unwrap();
        assert!(report.passed(), "{report}");
        assert_eq!(report.comparisons.len(), 2, "out and residual are both compared");
    }
}

#[test]
fn rmsnorm_deinterleaved_output_matches_reference() {
    // Every dtype, plain and fused, one tile (block >= dim) and a loop of pieces (block 64).
    let shapes = [
        "tokens=1,dim=576,fused=1,deinterleave=1",
        "tokens=3,dim=96,dtype=f16,deinterleave=1",
        "tokens=2,dim=160,dtype=bf16,fused=1,deinterleave=1",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        for block in ["block=64", "block=1024"] {
            let k = lookup("rmsnorm").unwrap();
            let shape = Args::parse(shape).unwrap();
            let report = check(k, &shape, &Args::parse(block).unwrap(), &mut Interpreter, 30 + i as u64).unwrap();
            assert!(report.passed(), "{report}");
            let compared: Vec<&str> = report.comparisons.iter().map(|c| c.buffer.as_str()).collect();
            assert!(compared.contains(&"xd") && compared.contains(&"xs"), "{compared:?}");
        }
    }
}

#[test]
fn rmsnorm_deinterleaved_output_is_the_row_loop_gemvs_x() {
    // The norm's `xd` / `xs` must be bit for bit what the one-token row-loop GEMV's first launch
    // makes of the norm's `out`, since a model step hands them to the GEMV in its place.
    for (dtype, block) in [("f32", "block=64"), ("f32", "block=1024"), ("f16", "block=128")] {
        let norm = lookup("rmsnorm").unwrap();
        let shape = Args::parse(&format!("tokens=1,dim=576,dtype={dtype},fused=1,deinterleave=1")).unwrap();
        let plan = norm.plan(&shape, &Args::parse(block).unwrap()).unwrap();
        let mut buffers = prepare_buffers("rmsnorm", &plan, &norm.inputs(&shape, 11).unwrap()).unwrap();
        run_plan("rmsnorm", &plan, &mut Interpreter, &mut buffers).unwrap();
        assert_row_loop_x(
            &buffers,
            dtype,
            576,
            "block_m=1,gemv=1,block_n=32,block_k=64,split_k=1,row_loop=8",
            &format!("{dtype} {block}"),
        );
    }
}

#[test]
fn rmsnorm_reference_catches_a_missing_weight() {
    // A kernel that forgot `· w` would be off by the weights (drawn in [0.25, 1.75)), far beyond
    // the f32 tolerance: the comparison must fail when the weight is dropped from the reference.
    let k = lookup("rmsnorm").unwrap();
    let shape = Args::parse("tokens=2,dim=96").unwrap();
    let inputs = k.inputs(&shape, 3).unwrap();
    let good = k.reference(&shape, &inputs).unwrap();
    let mut no_weight = inputs.clone();
    no_weight.insert("w".into(), kiln_ir::interp::HostBuffer::filled(kiln_ir::DType::F32, 96, 1.0));
    let bad = k.reference(&shape, &no_weight).unwrap();
    let got = kiln_ir::interp::HostBuffer::from_f64(kiln_ir::DType::F32, &bad["out"]);
    let cmp =
        kiln_kernels::check::compare("out", &got, &good["out"], k.tolerance(&shape, kiln_ir::DType::F32).unwrap());
    assert!(!cmp.passed(), "{cmp:?}");
}

#[test]
fn rmsnorm_rejects_bad_problems() {
    assert_constraint("rmsnorm", "tokens=0,dim=8", "", "at least 1");
    assert_constraint("rmsnorm", "tokens=1,dim=0", "", "at least 1");
    assert_constraint("rmsnorm", "tokens=1,dim=8,dtype=i32", "", "dtype `i32`");
    assert_constraint("rmsnorm", "tokens=1,dim=8,fused=2", "", "fused = 2");
    assert_constraint("rmsnorm", "tokens=1,dim=100,deinterleave=1", "", "multiple of 32");
    assert_constraint("rmsnorm", "tokens=1,dim=64,deinterleave=2", "", "deinterleave = 2");
    assert_constraint("rmsnorm", "tokens=1,dim=8,eps=-1", "", "eps = -1");
    assert_constraint("rmsnorm", "tokens=1,dim=8,eps=inf", "", "eps = inf");
    assert_constraint("rmsnorm", "tokens=65536,dim=65536", "", "i32 offset range");
    assert_constraint("rmsnorm", "tokens=1,dim=8", "block=100", "block = 100");
    assert_constraint("rmsnorm", "tokens=1,dim=8,heads=3", "", "unknown shape key `heads`");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn rmsnorm_random_shapes(tokens in 1u32..4, dim in 1u32..300, dtype in 0usize..3, fused in 0u32..2, seed in 0u64..1000) {
        let dtype = ["f32", "f16", "bf16"][dtype];
        assert_conformance("rmsnorm", &format!("tokens={tokens},dim={dim},dtype={dtype},fused={fused}"), 2, seed);
    }
}

#[test]
fn rmsnorm_example_problem_and_whole_space_plan() {
    // The example problem (what a caller gets with no shape) passes, and every config of its
    // legal space, which contains the default, plans.
    let k = lookup("rmsnorm").unwrap();
    let shape = k.example_problem();
    assert_conformance("rmsnorm", &shape.to_string(), 1, 1);
    let space = k.space(&shape, &kiln_kernels::SpaceLimits::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("[{config}]: {e}"));
    }
}
