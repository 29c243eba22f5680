//! `attention_decode_paged` against its reference in the interpreter: GQA ratios 1, 3 and 4,
//! q_len 1, 4 and 16, head_dim 64 and 128, ragged contexts, one split and several (the combine,
//! empty splits, rows that see no key of a split), every dtype pairing; bad inputs; and that the
//! comparison can fail.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_kernels::check::{check, compare, prepare_buffers, run_plan, Interpreter};
use kiln_kernels::{lookup, Args};
use proptest::prelude::*;

const NAME: &str = "attention_decode_paged";

/// Checks `shape` under one explicit `config`.
fn assert_config(shape: &str, config: &str, seed: u64) {
    let k = lookup(NAME).unwrap();
    let r = check(k, &Args::parse(shape).unwrap(), &Args::parse(config).unwrap(), &mut Interpreter, seed).unwrap();
    assert!(r.passed(), "{r}");
}

/// How many launches `config` plans for `shape` (2 when the combine runs).
fn launches(shape: &str, config: &str) -> usize {
    let k = lookup(NAME).unwrap();
    k.plan(&Args::parse(shape).unwrap(), &Args::parse(config).unwrap()).unwrap().launches.len()
}

#[test]
fn attention_decode_paged_matches_reference() {
    // Contexts that are multiples of neither block_n nor the page block; default plus sampled
    // configs of each space.
    for (i, shape) in [
        // MHA (GQA ratio 1), plain decode.
        "batch=2,q_len=1,ctx=37,heads=2,kv_heads=2,head_dim=64,block=16",
        // SmolLM2's 9 heads over 3 KV heads, verifying 4 draft tokens.
        "batch=2,q_len=4,ctx=100,heads=9,kv_heads=3,head_dim=64,block=16",
        // Ratio 4, the longest verification, head_dim 128, small pages.
        "batch=1,q_len=16,ctx=70,heads=8,kv_heads=2,head_dim=128,block=8",
        // f32 cache and queries; pages of 5 tokens; MQA (ratio 4 over one KV head).
        "batch=2,q_len=3,ctx=45,heads=4,kv_heads=1,head_dim=64,block=5,dtype=f32",
        // f32 queries over an f16 cache (P rounded to f16 before P·V).
        "batch=1,q_len=2,ctx=50,heads=6,kv_heads=2,head_dim=128,block=16,q_dtype=f32",
        // f16 queries over an f32 cache.
        "batch=2,q_len=1,ctx=29,heads=3,kv_heads=3,head_dim=64,block=4,dtype=f32,q_dtype=f16",
    ]
    .iter()
    .enumerate()
    {
        assert_conformance(NAME, shape, 3, 30 + i as u64);
    }
}

#[test]
fn attention_decode_paged_splits_and_combine() {
    let shape = "batch=4,q_len=4,ctx=100,heads=9,kv_heads=3,head_dim=64,block=16";
    // One split writes out directly; more run the combine. With 4 splits of 32 keys, the shorter
    // sequences of the batch leave whole splits empty.
    assert_eq!(launches(shape, "block_n=32,splits=1"), 1);
    assert_eq!(launches(shape, "block_n=32,splits=4"), 2);
    for (i, config) in
        ["block_n=32,splits=1", "block_n=16,splits=2", "block_n=32,splits=4", "block_n=16,splits=8"].iter().enumerate()
    {
        assert_config(shape, config, 40 + i as u64);
    }
    // q_len 16 with a split boundary among the new tokens: split 1 holds keys 32..40 only, which
    // the first 8 query rows of the longest sequence may not see (rows with no key in a split).
    let verify = "batch=1,q_len=16,ctx=40,heads=4,kv_heads=1,head_dim=64,block=16";
    assert_eq!(launches(verify, "block_n=16,splits=2"), 2);
    assert_config(verify, "block_n=16,splits=2", 50);
    // head_dim 128, f32 everywhere, many splits.
    assert_config(
        "batch=2,q_len=1,ctx=90,heads=2,kv_heads=1,head_dim=128,block=8,dtype=f32",
        "block_n=16,splits=4",
        51,
    );
    // A requested split count above what ctx supports runs with fewer splits.
    assert_config("batch=1,q_len=1,ctx=20,heads=2,kv_heads=2,head_dim=64,block=16", "block_n=16,splits=32", 52);
}

#[test]
fn attention_decode_paged_default_splits_long_context() {
    // A long context with few programs gets split-KV by default.
    let shape = "batch=1,q_len=1,ctx=600,heads=2,kv_heads=1,head_dim=64,block=16";
    let k = lookup(NAME).unwrap();
    let default = k.default_config(&Args::parse(shape).unwrap()).unwrap();
    assert_ne!(default.get("splits"), Some("1"), "{default}");
    assert_conformance(NAME, shape, 1, 60);
}

#[test]
fn attention_decode_paged_cpu_default_splits_only_small_grids() {
    use kiln_kernels::TargetKind;
    let k = lookup(NAME).unwrap();
    let cpu = |shape: &str| {
        let shape = Args::parse(shape).unwrap();
        let config = k.target_default(&shape, TargetKind::Cpu).unwrap();
        assert!(k.space(&shape, &Default::default()).unwrap().contains(&config), "{config} not in the space");
        config
    };
    // 128 programs: no split, 16 keys a tile (the GPU default splits this one in 2), two KV heads
    // a program; an odd KV head count keeps one.
    let wide = cpu("batch=16,q_len=1,ctx=2048,heads=32,kv_heads=8,head_dim=128,block=16");
    assert_eq!(
        (wide.get("splits"), wide.get("block_n"), wide.get("heads_per_program")),
        (Some("1"), Some("16"), Some("2")),
        "{wide}"
    );
    // The CPU default of two heads a program, checked against the reference on a small shape.
    let pairs = "batch=3,q_len=2,ctx=90,heads=8,kv_heads=4,head_dim=64,block=16";
    assert_eq!(cpu(pairs).get("heads_per_program"), Some("2"));
    assert_config(pairs, &cpu(pairs).to_string(), 64);
    // One sequence of a long context: split while each split keeps 256 keys.
    let long = cpu("batch=1,q_len=1,ctx=600,heads=2,kv_heads=1,head_dim=64,block=16");
    assert_eq!(long.get("splits"), Some("2"), "{long}");
    let shape = "batch=1,q_len=1,ctx=600,heads=2,kv_heads=1,head_dim=64,block=16";
    assert_config(shape, &long.to_string(), 61);
    assert_config("batch=3,q_len=2,ctx=90,heads=4,kv_heads=2,head_dim=64,block=16", "block_n=16,splits=1", 62);
    // Prefill lanes (48 query rows a KV head, padded to 64): 32 keys a tile, checked on a
    // ragged shape.
    let lanes = cpu("batch=32,q_len=16,ctx=512,heads=9,kv_heads=3,head_dim=64,block=16");
    assert_eq!((lanes.get("block_n"), lanes.get("heads_per_program")), (Some("32"), Some("1")), "{lanes}");
    let shape = "batch=3,q_len=16,ctx=70,heads=9,kv_heads=3,head_dim=64,block=16";
    assert_config(shape, &cpu(shape).to_string(), 63);
}

#[test]
fn attention_decode_paged_scale_override() {
    assert_conformance(NAME, "batch=1,q_len=2,ctx=30,heads=2,kv_heads=1,head_dim=64,block=16,scale=0.3", 2, 61);
}

#[test]
fn attention_decode_paged_wrong_kernel_is_caught() {
    // A kernel computing with the wrong scale (a plan for scale=0.5) fails against the default
    // reference on the same inputs: the tolerance is tight enough to see a softmax-temperature
    // error, and the check compares real data.
    let k = lookup(NAME).unwrap();
    let shape = Args::parse("batch=2,q_len=2,ctx=40,heads=4,kv_heads=2,head_dim=64,block=16").unwrap();
    let wrong = shape.clone().with("scale", 0.5);
    let config = Args::parse("block_n=16,splits=2").unwrap();
    let plan = k.plan(&wrong, &config).unwrap();
    let inputs = k.inputs(&shape, 7).unwrap();
    let mut buffers = prepare_buffers(NAME, &plan, &inputs).unwrap();
    run_plan(NAME, &plan, &mut Interpreter, &mut buffers).unwrap();
    let reference = k.reference(&shape, &inputs).unwrap();
    let tolerance = k.tolerance(&shape, kiln_ir::DType::F16).unwrap();
    let c = compare("out", &buffers["out"], &reference["out"], tolerance);
    assert!(!c.passed(), "{c:?}");
    // The same run against its own reference passes.
    let right = k.reference(&wrong, &inputs).unwrap();
    assert!(compare("out", &buffers["out"], &right["out"], tolerance).passed());
}

#[test]
fn attention_decode_paged_rejects_bad_problems() {
    let shape = |s: &str| format!("batch=1,ctx=32,block=16,{s}");
    assert_constraint(NAME, &shape("q_len=1,heads=9,kv_heads=2,head_dim=64"), "", "not a multiple of kv_heads");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=96"), "", "head_dim = 96");
    assert_constraint(NAME, &shape("q_len=0,heads=4,kv_heads=2,head_dim=64"), "", "q_len = 0");
    assert_constraint(NAME, &shape("q_len=17,heads=4,kv_heads=2,head_dim=64"), "", "q_len = 17");
    assert_constraint(NAME, "batch=1,q_len=8,ctx=5,heads=4,kv_heads=2,head_dim=64,block=16", "", "shorter than q_len");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=0,head_dim=64"), "", "at least 1");
    assert_constraint(NAME, "batch=1,q_len=1,ctx=32,heads=4,kv_heads=2,head_dim=64,block=0", "", "at least 1");
    assert_constraint(NAME, "batch=70000,q_len=1,ctx=32,heads=4,kv_heads=2,head_dim=64,block=16", "", "grid limit");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=64,dtype=bf16"), "", "dtype `bf16`");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=64,q_dtype=i32"), "", "q_dtype `i32`");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=64,scale=-1"), "", "scale must be");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=64,scale=abc"), "", "scale `abc`");
    assert_constraint(
        NAME,
        &shape("q_len=1,heads=4,kv_heads=2,head_dim=64,tokens=3"),
        "",
        "unknown shape key `tokens`",
    );
    assert_constraint(NAME, &shape("q_len=16,heads=16384,kv_heads=1,head_dim=128"), "", "do not fit one tile");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=64"), "block_n=48", "block_n = 48");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=64"), "splits=3", "splits = 3");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=64"), "split=2", "unknown config key `split`");
    assert_constraint(NAME, &shape("q_len=1,heads=4,kv_heads=2,head_dim=64"), "prefetch=2", "prefetch = 2");
}

#[test]
fn attention_decode_paged_look_ahead_changes_nothing_but_the_hint() {
    // With and without the next tile's prefetch, one split and several, on ragged contexts whose
    // last tile has nothing after it (the look-ahead's block-table lookups are masked there).
    let shape = "batch=3,q_len=2,ctx=77,heads=8,kv_heads=2,head_dim=64,block=8";
    for (i, config) in ["block_n=16,splits=1", "block_n=32,splits=2"].iter().enumerate() {
        for prefetch in [0, 1] {
            assert_config(shape, &format!("{config},prefetch={prefetch}"), 90 + i as u64);
        }
    }
    // Configs tuned before the knob existed still read, as the default look-ahead.
    let k = lookup(NAME).unwrap();
    let plan = k.plan(&Args::parse(shape).unwrap(), &Args::parse("block_n=16,splits=1").unwrap()).unwrap();
    let text = kiln_ir::text::print(&plan.launches[0].kernel);
    assert!(text.contains("prefetch @k_cache"), "{text}");
    assert!(text.contains("prefetch @v_cache"), "{text}");
}

#[test]
fn attention_decode_paged_several_kv_heads_per_program() {
    // 2, 3 and 4 KV heads per program (each with its own q rows, state and output rows), one
    // split and several, with and without the look-ahead; ragged contexts.
    let two = "batch=3,q_len=2,ctx=77,heads=8,kv_heads=4,head_dim=64,block=8";
    let three = "batch=2,q_len=4,ctx=100,heads=9,kv_heads=3,head_dim=64,block=16";
    for (i, (shape, hp)) in [(two, 2), (two, 4), (three, 3)].iter().enumerate() {
        for config in ["block_n=16,splits=1,prefetch=1", "block_n=32,splits=2,prefetch=0"] {
            assert_config(shape, &format!("{config},heads_per_program={hp}"), 110 + i as u64);
        }
    }
    // The grid shrinks by the heads per program.
    let k = lookup(NAME).unwrap();
    let plan = k.plan(&Args::parse(two).unwrap(), &Args::parse("block_n=16,splits=1,heads_per_program=4").unwrap());
    assert_eq!(plan.unwrap().launches[0].grid, [1, 3, 1]);
    // Not a divisor of kv_heads, or not a legal value at all.
    assert_constraint(NAME, three, "block_n=16,splits=1,heads_per_program=2", "does not divide kv_heads = 3");
    assert!(k
        .plan(&Args::parse(three).unwrap(), &Args::parse("block_n=16,splits=1,heads_per_program=5").unwrap())
        .is_err_and(|e| e.to_string().contains("heads_per_program = 5 is not one of")));
}

#[test]
fn attention_decode_paged_example_problem_and_space() {
    // The registry's example problem passes, and every config of its space plans.
    let k = lookup("attention_decode_paged").unwrap();
    let shape = k.example_problem();
    assert_conformance("attention_decode_paged", &shape.to_string(), 2, 70);
    let space = k.space(&shape, &Default::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("{config}: {e}"));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]
    #[test]
    fn attention_decode_paged_random_shapes(
        batch in 1u32..4, q_len in 1u32..=16, extra in 0u32..60, kv_heads in 1u32..3, group in 1u32..5,
        wide in any::<bool>(), block in 1u32..20, dtypes in 0usize..3, seed in 0u64..1000,
    ) {
        let ctx = q_len + extra;
        let heads = kv_heads * group;
        let head_dim = if wide { 128 } else { 64 };
        let dtype = ["dtype=f16", "dtype=f32", "dtype=f16,q_dtype=f32"][dtypes];
        let shape = format!("batch={batch},q_len={q_len},ctx={ctx},heads={heads},kv_heads={kv_heads},head_dim={head_dim},block={block},{dtype}");
        assert_conformance(NAME, &shape, 2, seed);
    }
}
