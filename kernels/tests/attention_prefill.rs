//! `attention_prefill` against its reference in the interpreter (ragged batches, GQA ratios, both
//! head dims and dtypes), checks that the comparison would catch a wrong mask or KV head, and its
//! bad inputs.

mod common;

use common::{assert_conformance, assert_constraint};
use kiln_kernels::check::{compare, prepare_buffers, run_plan, Interpreter};
use kiln_kernels::{lookup, Args, Buffers};
use proptest::prelude::*;

/// Runs the default plan of `shape` and returns the inputs, the output `o` in f64 and the
/// tolerance of its dtype.
fn run_default(shape: &str, seed: u64) -> (Buffers, kiln_ir::interp::HostBuffer, f64) {
    let k = lookup("attention_prefill").unwrap();
    let shape = Args::parse(shape).unwrap();
    let plan = k.plan(&shape, &Args::new()).unwrap();
    let inputs = k.inputs(&shape, seed).unwrap();
    let mut buffers = prepare_buffers("attention_prefill", &plan, &inputs).unwrap();
    run_plan("attention_prefill", &plan, &mut Interpreter, &mut buffers).unwrap();
    let o = buffers.remove("o").unwrap();
    let tol = k.tolerance(&shape, o.dtype()).unwrap();
    (inputs, o, tol)
}

#[test]
fn attention_prefill_matches_reference() {
    // Lengths follow seq − ⌊b·seq/(2·batch)⌋: 70, 59, 47 for seq=70, batch=3; 37, 31, 25 for
    // seq=37 — none a multiple of 16, 32 or 64.
    let shapes = [
        // One sequence, no GQA, both head dims and dtypes.
        "batch=1,seq=37,heads=2,kv_heads=2,head_dim=64",
        "batch=1,seq=21,heads=1,kv_heads=1,head_dim=128,dtype=f32",
        // Ragged batches with SmolLM2's 9 / 3 heads (GQA ratio 3).
        "batch=3,seq=37,heads=9,kv_heads=3,head_dim=64",
        "batch=3,seq=70,heads=9,kv_heads=3,head_dim=128",
        "batch=3,seq=70,heads=3,kv_heads=1,head_dim=64,dtype=f32",
        // GQA ratio 4 with head_dim 128.
        "batch=3,seq=45,heads=4,kv_heads=1,head_dim=128",
        "batch=2,seq=19,heads=8,kv_heads=2,head_dim=128,dtype=f32",
        // Single-token sequences: one row, one key.
        "batch=3,seq=1,heads=2,kv_heads=1,head_dim=64",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_conformance("attention_prefill", shape, 3, 700 + i as u64);
    }
}

#[test]
fn attention_prefill_space_covers_block_shapes() {
    // seq = 70 allows every block; blocks of 64 would only mask rows for seq = 20.
    let k = lookup("attention_prefill").unwrap();
    let space = |shape: &str| k.space(&Args::parse(shape).unwrap(), &Default::default()).unwrap();
    assert_eq!(space("batch=1,seq=70,heads=1,kv_heads=1,head_dim=128").len(), 9);
    let small = space("batch=1,seq=20,heads=1,kv_heads=1,head_dim=64");
    assert_eq!(small.len(), 4);
    assert!(small.iter().all(|c| c.get("block_m") != Some("64") && c.get("block_n") != Some("64")));
    // Each (block_m, block_n) pair of the space runs correctly on a ragged batch.
    for config in space("batch=2,seq=67,heads=2,kv_heads=1,head_dim=64") {
        let report = kiln_kernels::check::check(
            k,
            &Args::parse("batch=2,seq=67,heads=2,kv_heads=1,head_dim=64").unwrap(),
            &config,
            &mut Interpreter,
            71,
        )
        .unwrap();
        assert!(report.passed(), "{report}");
    }
}

/// Plain f64 attention over the whole sequence (no causal mask), for the test below.
fn non_causal_reference(inputs: &Buffers, heads: usize, kv_heads: usize, d: usize) -> Vec<f64> {
    let (q, k, v) = (inputs["q"].to_f64(), inputs["k"].to_f64(), inputs["v"].to_f64());
    let cu: Vec<usize> = inputs["cu_seqlens"].to_f64().into_iter().map(|x| x as usize).collect();
    let mut o = vec![0.0; q.len()];
    for w in cu.windows(2) {
        for h in 0..heads {
            let kvh = h / (heads / kv_heads);
            for t in w[0]..w[1] {
                let dot = |j: usize| {
                    (0..d).map(|i| q[(t * heads + h) * d + i] * k[(j * kv_heads + kvh) * d + i]).sum::<f64>()
                };
                let e: Vec<f64> = (w[0]..w[1]).map(|j| (dot(j) / (d as f64).sqrt()).exp()).collect();
                let sum: f64 = e.iter().sum();
                for (j, ej) in (w[0]..w[1]).zip(&e) {
                    for i in 0..d {
                        o[(t * heads + h) * d + i] += ej / sum * v[(j * kv_heads + kvh) * d + i];
                    }
                }
            }
        }
    }
    o
}

#[test]
fn attention_prefill_check_catches_wrong_mask_and_head() {
    // The check passes only if the kernel agrees with the causal reference; these show that the
    // tolerance is tight enough that a kernel ignoring the causal mask, or reading the wrong KV
    // head, would fail it.
    let shape = "batch=2,seq=23,heads=4,kv_heads=2,head_dim=64";
    let (inputs, o, tol) = run_default(shape, 5);
    let k = lookup("attention_prefill").unwrap();
    let right = k.reference(&Args::parse(shape).unwrap(), &inputs).unwrap();
    assert!(compare("o", &o, &right["o"], tol).passed());

    let no_mask = non_causal_reference(&inputs, 4, 2, 64);
    let c = compare("o", &o, &no_mask, tol);
    assert!(!c.passed(), "a non-causal reference should not match: {c:?}");

    // KV heads 0 and 1 swapped: what a kernel with the wrong GQA mapping would compute.
    let mut swapped = inputs.clone();
    for name in ["k", "v"] {
        let x = inputs[name].to_f64();
        let y: Vec<f64> = (0..x.len()).map(|i| x[(i / 128) * 128 + (i % 128 + 64) % 128]).collect();
        swapped.insert(name.to_string(), kiln_ir::interp::HostBuffer::from_f64(inputs[name].dtype(), &y));
    }
    let wrong_head = k.reference(&Args::parse(shape).unwrap(), &swapped).unwrap();
    let c = compare("o", &o, &wrong_head["o"], tol);
    assert!(!c.passed(), "a reference with swapped KV heads should not match: {c:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn attention_prefill_random_shapes(
        batch in 1u32..=3,
        seq in 1u32..=40,
        kv_heads in 1u32..=2,
        ratio in prop::sample::select(vec![1u32, 3, 4]),
        head_dim in prop::sample::select(vec![64u32, 128]),
        dtype in prop::sample::select(vec!["f16", "f32"]),
        seed in 0u64..1000,
    ) {
        let shape = format!(
            "batch={batch},seq={seq},heads={},kv_heads={kv_heads},head_dim={head_dim},dtype={dtype}",
            kv_heads * ratio
        );
        assert_conformance("attention_prefill", &shape, 2, seed);
    }
}

#[test]
fn attention_prefill_rejects_bad_problems() {
    let ok = "batch=2,seq=8,heads=4,kv_heads=2,head_dim=64";
    assert!(lookup("attention_prefill").unwrap().plan(&Args::parse(ok).unwrap(), &Args::new()).is_ok());
    assert_constraint(
        "attention_prefill",
        "batch=1,seq=8,heads=9,kv_heads=2,head_dim=64",
        "",
        "not a multiple of kv_heads",
    );
    assert_constraint("attention_prefill", "batch=1,seq=8,heads=4,kv_heads=0,head_dim=64", "", "at least 1");
    assert_constraint("attention_prefill", "batch=1,seq=8,heads=4,kv_heads=2,head_dim=96", "", "head_dim = 96");
    assert_constraint(
        "attention_prefill",
        "batch=1,seq=0,heads=4,kv_heads=2,head_dim=64",
        "",
        "seq must be at least 1",
    );
    assert_constraint(
        "attention_prefill",
        "batch=0,seq=8,heads=4,kv_heads=2,head_dim=64",
        "",
        "batch must be at least 1",
    );
    assert_constraint("attention_prefill", "batch=70000,seq=8,heads=4,kv_heads=2,head_dim=64", "", "grid limit");
    assert_constraint(
        "attention_prefill",
        "batch=1,seq=8,heads=4,kv_heads=2,head_dim=64,dtype=bf16",
        "",
        "dtype `bf16`",
    );
    assert_constraint("attention_prefill", "batch=1,seq=8,heads=4,kv_heads=2,head_dim=64,dtype=i8", "", "dtype `i8`");
    assert_constraint("attention_prefill", "batch=4,seq=1000000,heads=32,kv_heads=8,head_dim=128", "", "i32 offsets");
    assert_constraint(
        "attention_prefill",
        "batch=1,seq=8,heads=4,kv_heads=2,head_dim=64,len=3",
        "",
        "unknown shape key `len`",
    );
    // Blocks beyond the largest allowed tile, or not of the list.
    assert_constraint("attention_prefill", ok, "block_m=128", "block_m = 128");
    assert_constraint("attention_prefill", ok, "block_n=256", "block_n = 256");
    assert_constraint("attention_prefill", ok, "block_m=24", "block_m = 24");
}
