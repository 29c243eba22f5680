//! `silu_mul` against its reference in the interpreter (with and without the de-interleaved
//! output), the de-interleaved output equal to what the row-loop GEMV's own launch makes of
//! `out`, and its bad inputs.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_kernels::check::{prepare_buffers, run_plan, Interpreter};
use kiln_kernels::{lookup, Args, Plan};

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

        let gemv = lookup("dequant_gemm_w4").unwrap();
        let gemv_shape = Args::parse(&format!("m=1,n=64,k=1536,group=32,act={dtype}")).unwrap();
        let config = Args::parse("block_m=1,gemv=1,block_n=32,block_k=128,split_k=1,row_loop=4").unwrap();
        let gemv_plan = gemv.plan(&gemv_shape, &config).unwrap();
        let mut inputs = gemv.inputs(&gemv_shape, 22).unwrap();
        inputs.insert("x".into(), buffers["out"].clone());
        let mut gemv_buffers = prepare_buffers("dequant_gemm_w4", &gemv_plan, &inputs).unwrap();
        let first = Plan { buffers: gemv_plan.buffers.clone(), launches: gemv_plan.launches[..1].to_vec() };
        run_plan("dequant_gemm_w4", &first, &mut Interpreter, &mut gemv_buffers).unwrap();
        for name in ["xd", "xs"] {
            let (want, got) = (gemv_buffers[name].to_f64(), buffers[name].to_f64());
            assert_eq!(want.len(), got.len(), "{name}");
            assert!(want.iter().all(|v| v.is_finite()), "{name} not written by the GEMV's launch");
            let differ = want.iter().zip(&got).filter(|(a, b)| a.to_bits() != b.to_bits()).count();
            assert_eq!(differ, 0, "{dtype} {block}: {differ} of {} values of `{name}` differ", want.len());
        }
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
