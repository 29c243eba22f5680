//! `softmax` with temperature against its reference in the interpreter, and its bad inputs.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_ir::interp::HostBuffer;
use kiln_ir::DType;
use kiln_kernels::check::compare;
use kiln_kernels::lookup;
use kiln_kernels::Args;
use proptest::prelude::*;

#[test]
fn softmax_matches_reference() {
    // Ragged vocabularies (not multiples of any block), both input dtypes, several temperatures
    // (0.7 is not an f32: the reference uses the rounded value the kernel sees).
    let shapes = [
        "rows=1,vocab=64",
        "rows=3,vocab=100,dtype=f16",
        "rows=2,vocab=1000,temperature=0.7",
        "rows=2,vocab=513,dtype=f16,temperature=2.5",
        "rows=1,vocab=5000,temperature=0.05",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_conformance("softmax", shape, 3, 300 + i as u64);
    }
}

#[test]
fn softmax_temperature_changes_the_answer() {
    // A kernel that ignored T would produce the T = 1 answer; against the T = 0.5 reference that
    // is far outside the f32 tolerance, so the conformance check would catch it.
    let k = lookup("softmax").unwrap();
    let hot = Args::parse("rows=2,vocab=300,temperature=0.5").unwrap();
    let plain = Args::parse("rows=2,vocab=300,temperature=1").unwrap();
    let inputs = k.inputs(&hot, 11).unwrap();
    let want = k.reference(&hot, &inputs).unwrap();
    let ignored_t = k.reference(&plain, &inputs).unwrap();
    let got = HostBuffer::from_f64(DType::F32, &ignored_t["out"]);
    assert!(!compare("out", &got, &want["out"], k.tolerance(&hot, DType::F32).unwrap()).passed());
}

#[test]
fn softmax_rejects_bad_problems() {
    assert_constraint("softmax", "rows=0,vocab=8", "", "at least 1");
    assert_constraint("softmax", "rows=1,vocab=0", "", "at least 1");
    assert_constraint("softmax", "rows=1,vocab=8,dtype=bf16", "", "dtype `bf16`");
    assert_constraint("softmax", "rows=1,vocab=8,temperature=0", "", "temperature = 0");
    assert_constraint("softmax", "rows=1,vocab=8,temperature=-1", "", "temperature = -1");
    assert_constraint("softmax", "rows=1,vocab=8,temperature=1e-50", "", "temperature = 0.0000");
    assert_constraint("softmax", "rows=1,vocab=8,temperature=inf", "", "temperature = inf");
    assert_constraint("softmax", "rows=1,vocab=8,temperature=NaN", "", "temperature = NaN");
    assert_constraint("softmax", "rows=65536,vocab=65536", "", "i32 offset range");
    assert_constraint("softmax", "rows=1,vocab=8", "block=100", "block = 100");
    assert_constraint("softmax", "rows=1,vocab=8,tokens=3", "", "unknown shape key `tokens`");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn softmax_random_shapes(rows in 1u32..4, vocab in 1u32..2000, f16 in any::<bool>(), t in 0.1f64..4.0, seed in 0u64..1000) {
        let dtype = if f16 { "f16" } else { "f32" };
        assert_conformance("softmax", &format!("rows={rows},vocab={vocab},dtype={dtype},temperature={t}"), 2, seed);
    }
}

#[test]
fn softmax_example_problem_and_whole_space_plan() {
    // The example problem (what a caller gets with no shape) passes, and every config of its
    // legal space, which contains the default, plans.
    let k = lookup("softmax").unwrap();
    let shape = k.example_problem();
    assert_conformance("softmax", &shape.to_string(), 1, 1);
    let space = k.space(&shape, &kiln_kernels::SpaceLimits::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("[{config}]: {e}"));
    }
}
