//! `paged_kv_append` against its reference in the interpreter: scattered slots, padding tokens
//! (slot −1), both cache dtypes; bad inputs; and that the comparison can fail.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_kernels::check::{check, compare, Interpreter};
use kiln_kernels::{lookup, Args};
use proptest::prelude::*;

#[test]
fn paged_kv_append_matches_reference() {
    // Rows (kv_heads · head_dim) and token counts that are not multiples of the tiles.
    for (i, shape) in [
        "tokens=1,kv_heads=1,head_dim=64,block=16,n_blocks=4",
        "tokens=7,kv_heads=3,head_dim=64,block=16,n_blocks=9",
        "tokens=13,kv_heads=2,head_dim=40,block=5,n_blocks=6,dtype=f32",
        "tokens=20,kv_heads=5,head_dim=128,block=8,n_blocks=11,dtype=f16",
        // Every slot of the pool is written (tokens = n_blocks · block, less the padding).
        "tokens=12,kv_heads=1,head_dim=8,block=4,n_blocks=3",
    ]
    .iter()
    .enumerate()
    {
        assert_conformance("paged_kv_append", shape, 4, 10 + i as u64);
    }
}

#[test]
fn paged_kv_append_every_tile_config() {
    // A small problem under every config of its space, so each tile shape runs at least once.
    let k = lookup("paged_kv_append").unwrap();
    // head_dim 130: 64 and 128 columns split a head into 3 and 2 chunks, the last one ragged.
    let shape = Args::parse("tokens=9,kv_heads=3,head_dim=130,block=4,n_blocks=7").unwrap();
    let space = k.space(&shape, &Default::default()).unwrap();
    assert!(space.len() >= 10, "space {space:?}");
    for (i, config) in space.iter().enumerate() {
        let r = check(k, &shape, config, &mut Interpreter, 50 + i as u64).unwrap();
        assert!(r.passed(), "{r}");
    }
}

#[test]
fn paged_kv_append_padding_and_untouched_slots_matter() {
    // The check is not vacuous: the appended caches differ from the old ones (so a kernel that
    // writes nothing fails), and the inputs hold padding tokens whose rows must not be written.
    let k = lookup("paged_kv_append").unwrap();
    let shape = Args::parse("tokens=10,kv_heads=2,head_dim=16,block=4,n_blocks=5").unwrap();
    let inputs = k.inputs(&shape, 3).unwrap();
    let reference = k.reference(&shape, &inputs).unwrap();
    let slots = inputs["slot_mapping"].to_f64();
    assert!(slots.contains(&-1.0), "no padding token in {slots:?}");
    let stale = compare("k_cache", &inputs["k_cache"], &reference["k_cache"], 0.0);
    assert!(!stale.passed(), "an untouched cache would pass: {stale:?}");
    // Writing a padding token's row anywhere (here: into slot 0) changes the cache.
    let mut leaked = reference["v_cache"].clone();
    let pad = slots.iter().position(|&s| s < 0.0).unwrap();
    let new = inputs["v_new"].to_f64();
    leaked[..32].copy_from_slice(&new[pad * 32..(pad + 1) * 32]);
    assert_ne!(leaked, reference["v_cache"]);
}

#[test]
fn paged_kv_append_rejects_bad_problems() {
    let ok = "kv_heads=2,head_dim=64,block=16,n_blocks=2";
    assert_constraint("paged_kv_append", &format!("tokens=0,{ok}"), "", "at least 1");
    assert_constraint("paged_kv_append", "tokens=4,kv_heads=2,head_dim=64,block=16,n_blocks=0", "", "at least 1");
    assert_constraint("paged_kv_append", &format!("tokens=33,{ok}"), "", "exceeds the cache's");
    assert_constraint("paged_kv_append", &format!("tokens=4,{ok},dtype=bf16"), "", "dtype `bf16`");
    assert_constraint("paged_kv_append", &format!("tokens=4,{ok},heads=3"), "", "unknown shape key `heads`");
    assert_constraint(
        "paged_kv_append",
        "tokens=4,kv_heads=8,head_dim=128,block=256,n_blocks=65536",
        "",
        "i32 offsets",
    );
    assert_constraint("paged_kv_append", &format!("tokens=4,{ok}"), "block_cols=100", "block_cols = 100");
    assert_constraint("paged_kv_append", &format!("tokens=4,{ok}"), "tokens_per_program=3", "tokens_per_program = 3");
    assert_constraint(
        "paged_kv_append",
        "tokens=70000,kv_heads=1,head_dim=1,block=16,n_blocks=5000",
        "tokens_per_program=1",
        "grid limit",
    );
}

#[test]
fn paged_kv_append_example_problem_and_space() {
    // The registry's example problem passes, and every config of its space plans.
    let k = lookup("paged_kv_append").unwrap();
    let shape = k.example_problem();
    assert_conformance("paged_kv_append", &shape.to_string(), 2, 70);
    let space = k.space(&shape, &Default::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("{config}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn paged_kv_append_random_shapes(
        tokens in 1u32..24, kv_heads in 1u32..4, head_dim in 1u32..80, block in 1u32..9,
        spare in 0u32..6, f32_cache in any::<bool>(), seed in 0u64..1000,
    ) {
        let n_blocks = tokens.div_ceil(block) + spare;
        let dtype = if f32_cache { "f32" } else { "f16" };
        let shape = format!("tokens={tokens},kv_heads={kv_heads},head_dim={head_dim},block={block},n_blocks={n_blocks},dtype={dtype}");
        assert_conformance("paged_kv_append", &shape, 2, seed);
    }
}
