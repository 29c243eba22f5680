//! `argmax` against its reference in the interpreter, the smallest-index tie rule, and its bad
//! inputs.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_ir::interp::HostBuffer;
use kiln_ir::DType;
use kiln_kernels::check::{prepare_buffers, run_plan, Interpreter};
use kiln_kernels::{lookup, Args, Buffers};
use proptest::prelude::*;

#[test]
fn argmax_matches_reference() {
    // Ragged vocabularies, both dtypes, several blocks each; the generator plants exact ties at
    // the maximum in about half the rows.
    let shapes = [
        "rows=1,vocab=64",
        "rows=8,vocab=100,dtype=f16",
        "rows=6,vocab=1000",
        "rows=5,vocab=4099,dtype=f16",
        "rows=4,vocab=700",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_conformance("argmax", shape, 4, 400 + i as u64);
    }
}

/// Runs argmax on the given rows with `block` and returns the indices.
fn run_argmax(dtype: DType, rows: &[Vec<f64>], block: u32) -> Vec<i32> {
    let vocab = rows[0].len();
    let k = lookup("argmax").unwrap();
    let shape = Args::parse(&format!("rows={},vocab={vocab},dtype={dtype}", rows.len())).unwrap();
    let plan = k.plan(&shape, &Args::new().with("block", block)).unwrap();
    let flat: Vec<f64> = rows.concat();
    let inputs = Buffers::from([("logits".to_string(), HostBuffer::from_f64(dtype, &flat))]);
    let mut buffers = prepare_buffers("argmax", &plan, &inputs).unwrap();
    run_plan("argmax", &plan, &mut Interpreter, &mut buffers).unwrap();
    match &buffers["out"] {
        HostBuffer::I32(v) => v.clone(),
        other => panic!("out is {:?}", other.dtype()),
    }
}

#[test]
fn argmax_ties_go_to_the_smallest_index() {
    let vocab = 300;
    let mut rows = Vec::new();
    // Equal maxima within one 64-piece, across pieces, at both ends, everywhere.
    for ties in [vec![5, 9], vec![70, 3], vec![299, 0], vec![130, 200, 65], vec![63, 64]] {
        let mut row: Vec<f64> = (0..vocab).map(|i| -((i * 7 % 13) as f64)).collect();
        for &t in &ties {
            row[t] = 4.5;
        }
        rows.push(row);
    }
    rows.push(vec![1.25; vocab]);
    rows.push(vec![f64::NEG_INFINITY; vocab]);
    let want = vec![5, 3, 0, 65, 63, 0, 0];
    for dtype in [DType::F32, DType::F16] {
        for block in [64, 128, 512] {
            assert_eq!(run_argmax(dtype, &rows, block), want, "{dtype} block={block}");
        }
    }
}

#[test]
fn argmax_rejects_bad_problems() {
    assert_constraint("argmax", "rows=0,vocab=8", "", "at least 1");
    assert_constraint("argmax", "rows=1,vocab=0", "", "at least 1");
    assert_constraint("argmax", "rows=1,vocab=8,dtype=bf16", "", "dtype `bf16`");
    assert_constraint("argmax", "rows=65536,vocab=65536", "", "i32 offset range");
    assert_constraint("argmax", "rows=1,vocab=8", "block=100", "block = 100");
    assert_constraint("argmax", "rows=1,vocab=8,tokens=3", "", "unknown shape key `tokens`");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn argmax_random_shapes(rows in 1u32..6, vocab in 1u32..2000, f16 in any::<bool>(), seed in 0u64..1000) {
        let dtype = if f16 { "f16" } else { "f32" };
        assert_conformance("argmax", &format!("rows={rows},vocab={vocab},dtype={dtype}"), 3, seed);
    }
}

#[test]
fn argmax_example_problem_and_whole_space_plan() {
    // The example problem (what a caller gets with no shape) passes, and every config of its
    // legal space, which contains the default, plans.
    let k = lookup("argmax").unwrap();
    let shape = k.example_problem();
    assert_conformance("argmax", &shape.to_string(), 1, 1);
    let space = k.space(&shape, &kiln_kernels::SpaceLimits::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("[{config}]: {e}"));
    }
}
