//! `silu_mul` against its reference in the interpreter (with and without the de-interleaved
//! output), the de-interleaved output equal to what the row-loop GEMV's own launch makes of
//! `out`, and its bad inputs.

mod common;

use common::{assert_conformance, assert_constraint, assert_row_loop_x};
use kiln_kernels::check::{prepare_buffers, run_plan, Interpreter};
use kiln_kernels::{lookup, Args};

#[test]
fn silu_mul_matches_reference() {
    // Ragged dims (not multiples of any block) and every activation dtype.
    for (i, shape) in
        ["tokens=1,dim=64", "tokens=3,dim=100,dtype=f16", "tokens=2,dim=1000,dtype=bf16", "tokens=4,dim=513"]
            .iter()
            .enumerate()
    {
        assert_conformance("silu_mul", shape, 3, 100 + i as u64);
    }
}

#[test]
fn silu_mul_deinterleaved_output_matches_reference() {
    // Blocks of columns that end inside the row (dim 96 with block 64) and that cover it.
    for (i, shape) in [
        "tokens=1,dim=1536,deinterleave=1",
        "tokens=3,dim=96,dtype=f16,deinterleave=1",
        "tokens=2,dim=160,dtype=bf16,deinterleave=1",
    ]
    .iter()
    .enumerate()
    {
        assert_conformance("silu_mul", shape, 3, 300 + i as u64);
    }
}

#[test]
fn silu_mul_deinterleaved_output_is_the_row_loop_gemvs_x() {
    // `xd` / `xs` bit for bit what the one-token row-loop GEMV's first launch makes of `out`.
    for (dtype, block) in [("f32", "block=512"), ("f32", "block=64"), ("f16", "block=128")] {
        let silu = lookup("silu_mul").unwrap();
        let shape = Args::parse(&format!("tokens=1,dim=1536,dtype={dtype},deinterleave=1")).unwrap();
        let plan = silu.plan(&shape, &Args::parse(block).unwrap()).unwrap();
        let mut buffers = prepare_buffers("silu_mul", &plan, &silu.inputs(&shape, 21).unwrap()).unwrap();
        run_plan("silu_mul", &plan, &mut Interpreter, &mut buffers).unwrap();
        assert_row_loop_x(
            &buffers,
            dtype,
            1536,
            "block_m=1,gemv=1,block_n=32,block_k=128,split_k=1,row_loop=4",
            &format!("{dtype} {block}"),
        );
    }
}

#[test]
fn silu_mul_rejects_bad_problems() {
    assert_constraint("silu_mul", "tokens=1,dim=100,deinterleave=1", "", "multiple of 32");
    assert_constraint("silu_mul", "tokens=1,dim=64,deinterleave=2", "", "deinterleave = 2");
    assert_constraint("silu_mul", "tokens=0,dim=8", "", "at least 1");
    assert_constraint("silu_mul", "tokens=1,dim=8,dtype=i32", "", "dtype `i32`");
    assert_constraint("silu_mul", "tokens=1,dim=8", "block=100", "block = 100");
    assert_constraint("silu_mul", "tokens=1,dim=8,heads=3", "", "unknown shape key `heads`");
}
