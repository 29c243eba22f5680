//! `rope` (both variants) against its f64 reference in the interpreter, its host cos/sin cache,
//! and its bad inputs.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_ir::interp::HostBuffer;
use kiln_ir::DType;
use kiln_kernels::check::{compare, prepare_buffers, run_plan, Interpreter};
use kiln_kernels::transformer::rope::rope_cache;
use kiln_kernels::{lookup, Args, KernelError};
use proptest::prelude::*;

#[test]
fn rope_matches_reference() {
    // SmolLM2's attention (adjacent pairs, base 1e5, GQA 9/3), NeoX pairs, head dims whose half
    // is not a power of two, more kv heads than fit one block, and f16.
    let shapes = [
        "tokens=3,heads=9,kv_heads=3,head_dim=64,max_pos=2048,base=100000",
        "tokens=3,heads=9,kv_heads=3,head_dim=64,max_pos=2048,base=100000,variant=half,dtype=f16",
        "tokens=2,heads=4,kv_heads=4,head_dim=80,max_pos=100,variant=half",
        "tokens=5,heads=3,kv_heads=1,head_dim=6,max_pos=7,dtype=f16",
        "tokens=1,heads=2,kv_heads=5,head_dim=2,max_pos=1",
        "tokens=2,heads=33,kv_heads=11,head_dim=16,max_pos=64,variant=half",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_conformance("rope", shape, 3, 500 + i as u64);
    }
}

#[test]
fn rope_cache_holds_cosines_and_sines_of_the_angles() {
    let (cos, sin) = rope_cache(100_000.0, 5, 8);
    assert_eq!(cos.len(), 5 * 4);
    // Position 0 is no rotation; pair 0 turns by the position itself; pair 2 by p / base^(1/2).
    assert!(cos[..4].iter().all(|&c| c == 1.0) && sin[..4].iter().all(|&s| s == 0.0));
    assert_eq!(cos[3 * 4], (3.0f64).cos() as f32);
    assert_eq!(sin[4 * 4 + 2], (4.0 / 100_000f64.sqrt()).sin() as f32);
}

#[test]
fn rope_variants_differ() {
    // Running the kernel with the wrong pairing would be caught: the two variants' references
    // disagree far beyond the tolerance on the same inputs.
    let k = lookup("rope").unwrap();
    let adjacent = Args::parse("tokens=2,heads=2,kv_heads=1,head_dim=8,max_pos=16").unwrap();
    let half = adjacent.clone().with("variant", "half");
    let inputs = k.inputs(&adjacent, 5).unwrap();
    let want = k.reference(&adjacent, &inputs).unwrap();
    let other = k.reference(&half, &inputs).unwrap();
    let got = HostBuffer::from_f64(DType::F32, &other["q"]);
    assert!(!compare("q", &got, &want["q"], 1e-5).passed());
}

#[test]
fn rope_position_past_the_cache_is_an_error() {
    let k = lookup("rope").unwrap();
    let shape = Args::parse("tokens=2,heads=2,kv_heads=1,head_dim=8,max_pos=16").unwrap();
    let plan = k.plan(&shape, &Args::new()).unwrap();
    for bad in [16, -1] {
        let mut inputs = k.inputs(&shape, 1).unwrap();
        inputs.insert("positions".into(), HostBuffer::I32(vec![3, bad]));
        let mut buffers = prepare_buffers("rope", &plan, &inputs).unwrap();
        let err =
            run_plan("rope", &plan, &mut Interpreter, &mut buffers).expect_err("a position past the cache must fail");
        assert!(matches!(&err, KernelError::Launch { message, .. } if message.contains("out of bounds")), "{err}");
    }
}

#[test]
fn rope_rejects_bad_problems() {
    let ok = "tokens=1,heads=2,kv_heads=1,max_pos=8";
    assert_constraint("rope", &format!("{ok},head_dim=7"), "", "head_dim = 7 must be even");
    assert_constraint("rope", &format!("{ok},head_dim=0"), "", "head_dim = 0 must be even");
    assert_constraint("rope", &format!("{ok},head_dim=8,base=1"), "", "base = 1");
    assert_constraint("rope", &format!("{ok},head_dim=8,base=inf"), "", "base = inf");
    assert_constraint("rope", &format!("{ok},head_dim=8,variant=neox"), "", "variant `neox`");
    assert_constraint("rope", &format!("{ok},head_dim=8,dtype=bf16"), "", "dtype `bf16`");
    assert_constraint("rope", "tokens=0,heads=2,kv_heads=1,head_dim=8,max_pos=8", "", "at least 1");
    assert_constraint("rope", "tokens=1,heads=2,kv_heads=0,head_dim=8,max_pos=8", "", "at least 1");
    assert_constraint("rope", "tokens=1,heads=2,kv_heads=1,head_dim=8,max_pos=0", "", "at least 1");
    assert_constraint("rope", "tokens=65536,heads=256,kv_heads=1,head_dim=256,max_pos=8", "", "i32 offset range");
    assert_constraint("rope", "tokens=1,heads=70000,kv_heads=1,head_dim=2,max_pos=8", "block_h=1", "grid limit 65535");
    assert_constraint("rope", &format!("{ok},head_dim=8"), "block_h=3", "block_h = 3");
    assert_constraint("rope", &format!("{ok},head_dim=8,dim=3"), "", "unknown shape key `dim`");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn rope_random_shapes(
        tokens in 1u32..4, heads in 1u32..10, kv_heads in 1u32..10, half_dim in 1u32..40,
        max_pos in 1u32..300, half in any::<bool>(), f16 in any::<bool>(), seed in 0u64..1000,
    ) {
        let variant = if half { "half" } else { "adjacent" };
        let dtype = if f16 { "f16" } else { "f32" };
        let shape = format!(
            "tokens={tokens},heads={heads},kv_heads={kv_heads},head_dim={},max_pos={max_pos},base=10000,variant={variant},dtype={dtype}",
            2 * half_dim
        );
        assert_conformance("rope", &shape, 2, seed);
    }
}

#[test]
fn rope_example_problem_and_whole_space_plan() {
    // The example problem (what a caller gets with no shape) passes, and every config of its
    // legal space, which contains the default, plans.
    let k = lookup("rope").unwrap();
    let shape = k.example_problem();
    assert_conformance("rope", &shape.to_string(), 1, 1);
    let space = k.space(&shape, &kiln_kernels::SpaceLimits::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("[{config}]: {e}"));
    }
}
