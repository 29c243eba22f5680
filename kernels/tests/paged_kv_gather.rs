//! `paged_kv_gather` against its reference in the interpreter: scattered blocks, ragged lengths
//! (zeros past each), both cache dtypes; bad inputs; and that the comparison can fail.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_kernels::check::{check, compare, Interpreter};
use kiln_kernels::{lookup, Args};
use proptest::prelude::*;

#[test]
fn paged_kv_gather_matches_reference() {
    // Contexts and rows that are not multiples of the page block or of the tiles.
    for (i, shape) in [
        "batch=1,ctx=1,kv_heads=1,head_dim=64,block=16",
        "batch=3,ctx=37,kv_heads=3,head_dim=64,block=16",
        "batch=4,ctx=50,kv_heads=2,head_dim=48,block=7,dtype=f32",
        "batch=2,ctx=33,kv_heads=5,head_dim=128,block=1",
        "batch=2,ctx=64,kv_heads=1,head_dim=128,block=32,dtype=f16",
    ]
    .iter()
    .enumerate()
    {
        assert_conformance("paged_kv_gather", shape, 4, 20 + i as u64);
    }
}

#[test]
fn paged_kv_gather_every_tile_config() {
    let k = lookup("paged_kv_gather").unwrap();
    // head_dim 130: 64 and 128 columns split a head into 3 and 2 chunks, the last one ragged.
    let shape = Args::parse("batch=3,ctx=21,kv_heads=3,head_dim=130,block=4").unwrap();
    let space = k.space(&shape, &Default::default()).unwrap();
    assert!(space.len() >= 10, "space {space:?}");
    for (i, config) in space.iter().enumerate() {
        let r = check(k, &shape, config, &mut Interpreter, 60 + i as u64).unwrap();
        assert!(r.passed(), "{r}");
    }
}

#[test]
fn paged_kv_gather_inputs_are_ragged_and_scattered() {
    // The generator gives what the check relies on: lengths that vary with one at ctx, distinct
    // scattered block ids, −1 table entries past each length; and stale cache data past the
    // lengths would be caught (the zeros are compared, exactly).
    let k = lookup("paged_kv_gather").unwrap();
    let shape = Args::parse("batch=6,ctx=40,kv_heads=1,head_dim=8,block=8").unwrap();
    let inputs = k.inputs(&shape, 5).unwrap();
    let lens = inputs["context_lens"].to_f64();
    assert!(lens.contains(&40.0) && lens.iter().any(|&l| l < 40.0), "lengths {lens:?}");
    let tables = inputs["block_tables"].to_f64();
    let mut used: Vec<f64> = tables.iter().copied().filter(|&b| b >= 0.0).collect();
    let n_used = used.len();
    let expected: usize = lens.iter().map(|&l| (l as usize).div_ceil(8)).sum();
    assert_eq!(n_used, expected);
    assert!(tables.contains(&-1.0));
    used.sort_by(f64::total_cmp);
    used.dedup();
    assert_eq!(used.len(), n_used, "block ids repeat: {tables:?}");
    assert!(tables.windows(2).any(|w| w[1] >= 0.0 && w[1] != w[0] + 1.0), "blocks are not scattered");

    let reference = k.reference(&shape, &inputs).unwrap();
    let short = lens.iter().position(|&l| l < 40.0).unwrap();
    let mut leaked = reference["k_out"].clone();
    // Position ctx − 1 of the short sequence: stale data there must fail the exact comparison.
    leaked[short * 40 * 8 + 39 * 8] = 0.5;
    let got = kiln_ir::interp::HostBuffer::from_f64(kiln_ir::DType::F16, &leaked);
    assert!(!compare("k_out", &got, &reference["k_out"], 0.0).passed());
}

#[test]
fn paged_kv_gather_rejects_bad_problems() {
    assert_constraint("paged_kv_gather", "batch=0,ctx=8,kv_heads=1,head_dim=64,block=16", "", "at least 1");
    assert_constraint("paged_kv_gather", "batch=1,ctx=0,kv_heads=1,head_dim=64,block=16", "", "at least 1");
    assert_constraint("paged_kv_gather", "batch=1,ctx=8,kv_heads=1,head_dim=64,block=0", "", "at least 1");
    assert_constraint("paged_kv_gather", "batch=70000,ctx=8,kv_heads=1,head_dim=64,block=16", "", "grid limit");
    assert_constraint("paged_kv_gather", "batch=1,ctx=8,kv_heads=1,head_dim=64,block=16,dtype=i8", "", "dtype `i8`");
    assert_constraint("paged_kv_gather", "batch=64,ctx=32768,kv_heads=8,head_dim=128,block=16", "", "i32 offsets");
    assert_constraint(
        "paged_kv_gather",
        "batch=1,ctx=8,kv_heads=1,head_dim=64,block=16",
        "block_cols=48",
        "block_cols = 48",
    );
    assert_constraint(
        "paged_kv_gather",
        "batch=1,ctx=8,kv_heads=1,head_dim=64,block=16",
        "tokens_per_program=64",
        "tokens_per_program = 64",
    );
    assert_constraint(
        "paged_kv_gather",
        "batch=1,ctx=8,kv_heads=1,head_dim=64,block=16,n_blocks=4",
        "",
        "unknown shape key `n_blocks`",
    );
    assert_constraint(
        "paged_kv_gather",
        "batch=1,ctx=70000,kv_heads=1,head_dim=1,block=16",
        "tokens_per_program=1",
        "grid limit",
    );
    assert_constraint("paged_kv_gather", "batch=1,ctx=8,kv_heads=1,head_dim=64,block=16", "prefetch=3", "prefetch = 3");
}

#[test]
fn paged_kv_gather_example_problem_and_space() {
    // The registry's example problem passes, and every config of its space plans.
    let k = lookup("paged_kv_gather").unwrap();
    let shape = k.example_problem();
    assert_conformance("paged_kv_gather", &shape.to_string(), 2, 70);
    let space = k.space(&shape, &Default::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("{config}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn paged_kv_gather_random_shapes(
        batch in 1u32..5, ctx in 1u32..48, kv_heads in 1u32..4, head_dim in 1u32..80, block in 1u32..17,
        f32_cache in any::<bool>(), seed in 0u64..1000,
    ) {
        let dtype = if f32_cache { "f32" } else { "f16" };
        let shape = format!("batch={batch},ctx={ctx},kv_heads={kv_heads},head_dim={head_dim},block={block},dtype={dtype}");
        assert_conformance("paged_kv_gather", &shape, 2, seed);
    }
}
