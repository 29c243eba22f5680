//! `dequant_gemm_w4` against its reference in the interpreter (every group size, sym and asym,
//! f16 and f32 activations, the GEMV and dot paths, split-K, ragged m and n), its bad inputs, and
//! the GGUF Q4_0 / Q4_1, GPTQ and AWQ converters against dequantizers of those formats written
//! here, independently of `layout.rs`, from each format's definition.

mod common;

use common::{assert_conformance, assert_constraint};
use half::f16;
use kiln_ir::interp::HostBuffer;
use kiln_ir::DType;
use kiln_kernels::check::{check, compare, prepare_buffers, run_plan, Interpreter};
use kiln_kernels::dequant_gemm_w4::layout::{
    from_awq, from_gguf_q4_0, from_gguf_q4_1, from_gptq, GptqZeros, LayoutError, Quant, W4Weights,
};
use kiln_kernels::dequant_gemm_w4::matmul_nt;
use kiln_kernels::{lookup, random, Args, Buffers};
use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::Rng;

const NAME: &str = "dequant_gemm_w4";

/// Checks one explicit config (on top of the default) and asserts it passes.
fn assert_config(shape: &str, config: &str, seed: u64) {
    let k = lookup(NAME).unwrap();
    let report = check(k, &Args::parse(shape).unwrap(), &Args::parse(config).unwrap(), &mut Interpreter, seed)
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(report.passed(), "{report}");
}

#[test]
fn dequant_gemm_w4_decode_matches_reference() {
    // m = 1 takes the GEMV path by default, m = 4 the multi-row GEMV; n ragged against every block_n.
    for (i, shape) in [
        "m=1,n=40,k=256,group=32,quant=sym",
        "m=1,n=72,k=384,group=128,act=f32",
        "m=4,n=50,k=128,group=64,act=f32,quant=asym",
        "m=4,n=33,k=256,group=32,act=f16,quant=sym",
    ]
    .iter()
    .enumerate()
    {
        assert_conformance(NAME, shape, 3, 10 + i as u64);
    }
}

#[test]
fn dequant_gemm_w4_prefill_matches_reference() {
    // m = 70 is ragged against every block_m.
    assert_conformance(NAME, "m=70,n=48,k=128,group=64", 3, 20);
    assert_conformance(NAME, "m=70,n=20,k=256,group=128,act=f32,quant=sym", 2, 21);
}

#[test]
fn dequant_gemm_w4_row_loop_matches_reference() {
    // The one-token row loop (`row_loop = R`): rows R at a time, k inner; n ragged against R and
    // block_n, k tiles within a group and spanning several, sym and asym, f16 and f32, several
    // tokens (one grid row each) and split-K.
    assert_config("m=1,n=37,k=256,group=32,act=f32", "block_m=1,block_n=16,block_k=64,split_k=1,row_loop=4", 70);
    assert_config(
        "m=3,n=21,k=256,group=64,act=f16,quant=sym",
        "block_m=1,block_n=8,block_k=128,split_k=1,row_loop=2",
        71,
    );
    assert_config("m=1,n=19,k=384,group=128,act=f16", "block_m=1,block_n=32,block_k=32,split_k=1,row_loop=8", 72);
    assert_config(
        "m=2,n=9,k=128,group=32,act=f32,quant=sym",
        "block_m=1,block_n=16,block_k=32,split_k=1,row_loop=1",
        73,
    );
    assert_config("m=1,n=30,k=512,group=32,act=f32", "block_m=1,block_n=8,block_k=64,split_k=4,row_loop=4", 74);
}

#[test]
fn dequant_gemm_w4_row_loop_constraints() {
    let shape = "m=4,n=32,k=128,group=32";
    assert_constraint(NAME, shape, "block_m=2,block_n=16,block_k=32,split_k=1,row_loop=2", "row_loop");
    assert_constraint(NAME, shape, "block_m=1,block_n=8,block_k=32,split_k=1,row_loop=16", "row_loop");
    assert_constraint(NAME, shape, "block_m=1,block_n=8,block_k=16,split_k=1,row_loop=2", "block_k");
    assert_constraint(NAME, shape, "block_m=1,block_n=8,block_k=32,split_k=1,row_loop=3", "row_loop");
    // The int8 row loop: 32-column steps put 4 rows in a vector, so 2 rows do not fit.
    assert_constraint(
        NAME,
        "m=1,n=32,k=128,group=32,xq=i8",
        "block_m=1,block_n=16,block_k=32,split_k=1,row_loop=2",
        "128 / block_k",
    );
}

#[test]
fn dequant_gemm_w4_paths_and_group_handling() {
    // GEMV path with f16 and f32 activations, for m > 1 too (one grid row per token).
    assert_config("m=3,n=20,k=128,group=32,act=f16", "block_m=1,block_n=16,block_k=64,split_k=1", 30);
    assert_config("m=2,n=20,k=128,group=64,act=f32,quant=sym", "block_m=1,block_n=32,block_k=16,split_k=1", 31);
    // The dot path for a few rows (`gemv=0`); block_k > group: scales and mins gathered per k
    // column (group 32 inside 128-wide tiles).
    assert_config("m=5,n=24,k=256,group=32,act=f32", "block_m=16,gemv=0,block_n=16,block_k=128,split_k=1", 32);
    assert_config("m=1,n=24,k=256,group=32,act=f16,quant=sym", "block_m=1,block_n=32,block_k=128,split_k=1", 33);
    // block_k < group: one scale row serves several tiles.
    assert_config("m=17,n=24,k=256,group=128,act=f16", "block_m=32,block_n=16,block_k=16,split_k=1", 34);
}

#[test]
fn dequant_gemm_w4_multi_row_gemv_matches_reference() {
    // Several tokens per program on the GEMV path, m ragged against block_m (masked rows read
    // zeros and store nothing), sym and asym, f16 and f32, block_k above, at and below group.
    assert_config("m=5,n=40,k=256,group=32,act=f32", "block_m=8,gemv=1,block_n=16,block_k=128,split_k=1", 50);
    assert_config("m=3,n=33,k=128,group=64,act=f16,quant=sym", "block_m=2,gemv=1,block_n=32,block_k=64,split_k=1", 51);
    assert_config("m=11,n=20,k=256,group=128,act=f16", "block_m=16,gemv=1,block_n=16,block_k=32,split_k=1", 52);
    assert_config("m=7,n=24,k=192,group=32,act=f32,quant=sym", "block_m=4,gemv=1,block_n=16,block_k=64,split_k=1", 53);
    // With split-K: 5 k tiles over 4 splits of 2, the last split empty.
    assert_config("m=6,n=18,k=160,group=32,act=f32", "block_m=4,gemv=1,block_n=16,block_k=32,split_k=4", 54);
    // The defaults for m = 2..16 take this path.
    for (i, m) in [2, 5, 9, 16].into_iter().enumerate() {
        assert_conformance(NAME, &format!("m={m},n=36,k=128,group=32,act=f32"), 2, 55 + i as u64);
    }
}

#[test]
fn dequant_gemm_w4_path_and_block_m_must_agree() {
    assert_constraint(NAME, "m=4,n=32,k=128,group=32", "block_m=32,gemv=1,block_n=16,block_k=32,split_k=1", "gemv = 1");
    assert_constraint(
        NAME,
        "m=4,n=32,k=128,group=32",
        "block_m=4,gemv=0,block_n=16,block_k=32,split_k=1",
        "smallest dot tile",
    );
    assert_constraint(NAME, "m=4,n=32,k=128,group=32", "block_m=4,gemv=2,block_n=16,block_k=32,split_k=1", "gemv");
    // 8 columns per program exist on the GEMV path only.
    assert_constraint(
        NAME,
        "m=32,n=32,k=128,group=32",
        "block_m=32,gemv=0,block_n=8,block_k=32,split_k=1",
        "block_n = 8 is below 16",
    );
}

#[test]
fn dequant_gemm_w4_gemv_of_eight_columns_matches_reference() {
    // n ragged against 8 columns per program, one and several tokens, f32 and int8 activations.
    assert_config("m=1,n=37,k=256,group=64,act=f16", "block_m=1,gemv=1,block_n=8,block_k=128,split_k=1", 60);
    assert_config("m=3,n=21,k=128,group=32,act=f32,quant=sym", "block_m=4,gemv=1,block_n=8,block_k=64,split_k=1", 61);
    assert_config("m=1,n=19,k=256,group=128,act=f16,xq=i8", "block_m=1,gemv=1,block_n=8,block_k=128,split_k=1", 62);
}

#[test]
fn dequant_gemm_w4_split_k_matches_reference() {
    // Even splits, on the dot and the GEMV paths.
    assert_config("m=3,n=40,k=512,group=64,act=f32", "block_m=16,gemv=0,block_n=16,block_k=64,split_k=4", 40);
    assert_config("m=1,n=40,k=512,group=128,act=f16,quant=sym", "block_m=1,block_n=32,block_k=32,split_k=16", 41);
    // 10 k tiles over 4 splits: 3, 3, 3 and a short last one.
    assert_config("m=5,n=18,k=320,group=64,act=f16", "block_m=16,gemv=0,block_n=32,block_k=32,split_k=4", 42);
    // 5 k tiles over 4 splits of 2: the last split is empty and must contribute zeros.
    assert_config("m=2,n=18,k=160,group=32,act=f32,quant=sym", "block_m=16,gemv=0,block_n=16,block_k=32,split_k=4", 43);
    // Prefill-sized m with split-K, more outputs than one reduce block.
    assert_config("m=40,n=20,k=256,group=128,act=f32", "block_m=32,block_n=16,block_k=64,split_k=2", 44);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]

    #[test]
    fn dequant_gemm_w4_random_shapes(
        m in 1u32..=12,
        n in 1u32..=40,
        group_idx in 0usize..3,
        groups in 1u32..=2,
        f32_act in any::<bool>(),
        sym in any::<bool>(),
        config_pick in any::<prop::sample::Index>(),
        seed in any::<u64>(),
    ) {
        let group = [32, 64, 128][group_idx];
        let shape = format!(
            "m={m},n={n},k={},group={group},act={},quant={}",
            group * groups,
            if f32_act { "f32" } else { "f16" },
            if sym { "sym" } else { "asym" },
        );
        let k = lookup(NAME).unwrap();
        let args = Args::parse(&shape).unwrap();
        let space = k.space(&args, &Default::default()).unwrap();
        let config = config_pick.get(&space);
        let report = check(k, &args, config, &mut Interpreter, seed).unwrap();
        prop_assert!(report.passed(), "{}", report);
    }
}

#[test]
fn dequant_gemm_w4_rejects_bad_problems() {
    assert_constraint(NAME, "m=0,n=8,k=64,group=32", "", "at least 1");
    assert_constraint(NAME, "m=70000,n=8,k=64,group=32", "", "exceeds 65535");
    assert_constraint(NAME, "m=1,n=8,k=64,group=16", "", "group = 16");
    assert_constraint(NAME, "m=1,n=8,k=96,group=64", "", "k = 96 is not a multiple of group = 64");
    assert_constraint(NAME, "m=1,n=8,k=64,group=32,act=bf16", "", "act `bf16`");
    assert_constraint(NAME, "m=1,n=8,k=64,group=32,quant=q8", "", "quant `q8`");
    assert_constraint(NAME, "m=65535,n=8,k=65536,group=32", "", "fit i32");
    assert_constraint(NAME, "m=1,n=8,k=64,group=32,heads=3", "", "unknown shape key `heads`");
    assert_constraint(NAME, "m=1,n=8,k=96,group=32", "block_k=64", "block_k = 64 does not divide k = 96");
    assert_constraint(NAME, "m=1,n=8,k=64,group=32", "block_k=64,split_k=2", "split_k = 2 exceeds the 1 k tiles");
    assert_constraint(NAME, "m=1,n=8,k=64,group=32", "block_m=3", "block_m = 3");
    assert_constraint(NAME, "m=1,n=8,k=64,group=32", "block_n=48", "block_n = 48");
    assert_constraint(NAME, "m=1,n=8,k=64,group=32", "block_k=256", "block_k = 256");
    assert_constraint(NAME, "m=1,n=8,k=64,group=32", "split_k=3", "split_k = 3");
}

#[test]
fn dequant_gemm_w4_space_is_legal_and_has_the_default() {
    let k = lookup(NAME).unwrap();
    for shape in ["m=1,n=40,k=256,group=32", "m=70,n=300,k=4096,group=128,act=f32", "m=4096,n=8,k=32,group=32"] {
        let args = Args::parse(shape).unwrap();
        let space = k.space(&args, &Default::default()).unwrap();
        assert!(space.contains(&k.default_config(&args).unwrap()), "{shape}");
        for config in &space {
            k.plan(&args, config).unwrap_or_else(|e| panic!("{shape} [{config}]: {e}"));
        }
    }
}

#[test]
fn dequant_gemm_w4_check_catches_a_swapped_nibble_order() {
    // The same run compared with a reference whose bytes have their nibbles swapped must fail:
    // a kernel reading the high nibble first would be caught.
    let k = lookup(NAME).unwrap();
    let shape = Args::parse("m=2,n=24,k=64,group=32,act=f32").unwrap();
    let plan = k.plan(&shape, &Args::new()).unwrap();
    let inputs = k.inputs(&shape, 7).unwrap();
    let mut buffers = prepare_buffers(NAME, &plan, &inputs).unwrap();
    run_plan(NAME, &plan, &mut Interpreter, &mut buffers).unwrap();
    let good = k.reference(&shape, &inputs).unwrap();
    assert!(compare("y", &buffers["y"], &good["y"], 1e-5).passed());
    let mut swapped = inputs.clone();
    let HostBuffer::U8(bytes) = swapped.get_mut("w").unwrap() else { panic!("w is u8") };
    bytes.iter_mut().for_each(|b| *b = b.rotate_left(4));
    let bad = k.reference(&shape, &swapped).unwrap();
    assert!(!compare("y", &buffers["y"], &bad["y"], 1e-5).passed());
}

// --- the converters -------------------------------------------------------------------------

fn random_f16(rng: &mut StdRng, lo: f64, hi: f64) -> f16 {
    f16::from_f64(rng.random_range(lo..hi))
}

/// A random GGUF Q4_0 (`asym = false`) or Q4_1 tensor of `n` rows of `k`: random codes, scales
/// of both signs (ggml's Q4_0 `d` takes the sign of the largest-magnitude value).
fn random_gguf(rng: &mut StdRng, n: usize, k: usize, asym: bool) -> Vec<u8> {
    let mut data = Vec::new();
    for _ in 0..n * k / 32 {
        data.extend(random_f16(rng, -0.03, 0.03).to_le_bytes());
        if asym {
            data.extend(random_f16(rng, -0.3, 0.0).to_le_bytes());
        }
        data.extend((0..16).map(|_| rng.random::<u8>()));
    }
    data
}

/// ggml's `dequantize_row_q4_0` / `_q4_1`, in f64: per block `d` (and `m`), then for
/// `j < 16`: `y[j] = lo(qs[j])`, `y[j + 16] = hi(qs[j])`, each `(q − 8)·d` or `q·d + m`.
fn gguf_dequant(data: &[u8], n: usize, k: usize, asym: bool) -> Vec<f64> {
    let block_bytes = if asym { 20 } else { 18 };
    let mut y = vec![0.0; n * k];
    for (i, block) in data.chunks(block_bytes).enumerate() {
        let d = f16::from_le_bytes([block[0], block[1]]).to_f64();
        let (m, qs) =
            if asym { (f16::from_le_bytes([block[2], block[3]]).to_f64(), &block[4..]) } else { (0.0, &block[2..]) };
        let value = |q: u8| if asym { f64::from(q) * d + m } else { (f64::from(q) - 8.0) * d };
        for j in 0..16 {
            y[i * 32 + j] = value(qs[j] & 0x0F);
            y[i * 32 + j + 16] = value(qs[j] >> 4);
        }
    }
    y
}

/// Unpacks int32 words of 4-bit fields: field `i` of each word is bits `4i..4i+4`.
fn fields(word: i32) -> [u8; 8] {
    std::array::from_fn(|i| ((word as u32 >> (4 * i)) & 0xF) as u8)
}

/// GPTQ as AutoGPTQ's dequantizer defines it: `qweight [k/8, n]` unpacked along k,
/// `qzeros [k/g, n/8]` along n (plus one for legacy checkpoints), `w = s·(q − z)`; returns
/// `W [n, k]` (outputs by inputs).
fn gptq_dequant(
    qweight: &[i32],
    qzeros: &[i32],
    scales: &[f16],
    n: usize,
    k: usize,
    group: usize,
    plus_one: bool,
) -> Vec<f64> {
    let mut q = vec![vec![0u8; n]; k]; // [k, n]
    for (r, words) in qweight.chunks(n).enumerate() {
        for (col, &word) in words.iter().enumerate() {
            for (i, v) in fields(word).into_iter().enumerate() {
                q[8 * r + i][col] = v;
            }
        }
    }
    let mut z = vec![vec![0u8; n]; k / group]; // [k/g, n]
    for (g, words) in qzeros.chunks(n / 8).enumerate() {
        for (c, &word) in words.iter().enumerate() {
            for (j, v) in fields(word).into_iter().enumerate() {
                z[g][8 * c + j] = v + u8::from(plus_one);
            }
        }
    }
    let mut w = vec![0.0; n * k];
    for row in 0..k {
        for col in 0..n {
            let g = row / group;
            w[col * k + row] = scales[g * n + col].to_f64() * (f64::from(q[row][col]) - f64::from(z[g][col]));
        }
    }
    w
}

/// AWQ as AutoAWQ's `pack` defines it: field `i` of word `c` of a row holds column
/// `8c + [0, 2, 4, 6, 1, 3, 5, 7][i]`, for `qweight [k, n/8]` and `qzeros [k/g, n/8]` alike.
fn awq_dequant(qweight: &[i32], qzeros: &[i32], scales: &[f16], n: usize, k: usize, group: usize) -> Vec<f64> {
    const ORDER: [usize; 8] = [0, 2, 4, 6, 1, 3, 5, 7];
    let unpack = |words: &[i32]| -> Vec<Vec<u8>> {
        words
            .chunks(n / 8)
            .map(|row| {
                let mut out = vec![0u8; n];
                for (c, &word) in row.iter().enumerate() {
                    for (i, v) in fields(word).into_iter().enumerate() {
                        out[8 * c + ORDER[i]] = v;
                    }
                }
                out
            })
            .collect()
    };
    let (q, z) = (unpack(qweight), unpack(qzeros));
    let mut w = vec![0.0; n * k];
    for row in 0..k {
        for col in 0..n {
            let g = row / group;
            w[col * k + row] = scales[g * n + col].to_f64() * (f64::from(q[row][col]) - f64::from(z[g][col]));
        }
    }
    w
}

fn random_words(rng: &mut StdRng, len: usize) -> Vec<i32> {
    (0..len).map(|_| rng.random::<i32>()).collect()
}

fn random_scales(rng: &mut StdRng, len: usize) -> Vec<f16> {
    (0..len).map(|_| random_f16(rng, 0.002, 0.03)).collect()
}

/// Asserts kiln's dequantized weights equal the source's exactly.
fn assert_exact(kiln: &W4Weights, source: &[f64]) {
    let got = kiln.dequantize();
    assert_eq!(got.len(), source.len());
    for (i, (g, s)) in got.iter().zip(source).enumerate() {
        assert_eq!(g, s, "weight {i}");
    }
}

/// Asserts kiln's dequantized zero-point weights are within the rounding of `min = f16(−s·z)`:
/// half an f16 ulp of `s·z` (`|s·z|·2⁻¹¹`, or 2⁻²⁵ in the subnormal range), plus the f64
/// rounding of both sides.
fn assert_within_min_rounding(kiln: &W4Weights, source: &[f64]) {
    let got = kiln.dequantize();
    let mins = kiln.mins.as_ref().expect("asymmetric");
    let groups = kiln.k / kiln.group;
    for (i, (g, s)) in got.iter().zip(source).enumerate() {
        let min = mins[(i / kiln.k) * groups + (i % kiln.k) / kiln.group].to_f64();
        let bound = min.abs() * 2f64.powi(-11) + 2f64.powi(-25) + 1e-15;
        assert!((g - s).abs() <= bound, "weight {i}: {g} vs {s} (bound {bound})");
    }
}

/// Runs the kernel on converted weights and random `x`, compares `y` with `x · sourceᵀ` in f64.
fn assert_kernel_matches_source(
    weights: &W4Weights,
    source: &[f64],
    m: usize,
    act: &str,
    config: &str,
    tolerance: f64,
) {
    let (n, k) = (weights.n, weights.k);
    let shape = format!("m={m},n={n},k={k},group={},act={act},quant={}", weights.group, weights.quant());
    let kernel = lookup(NAME).unwrap();
    let plan = kernel.plan(&Args::parse(&shape).unwrap(), &Args::parse(config).unwrap()).unwrap();
    let dtype = if act == "f16" { DType::F16 } else { DType::F32 };
    let x = random::uniform(&mut random::rng(m as u64), dtype, m * k, -1.0, 1.0);
    let want = matmul_nt(&x.to_f64(), source, m, n, k);
    let mut inputs: Buffers = weights.buffers();
    inputs.insert("x".to_string(), x);
    let mut buffers = prepare_buffers(NAME, &plan, &inputs).unwrap();
    run_plan(NAME, &plan, &mut Interpreter, &mut buffers).unwrap();
    let c = compare("y", &buffers["y"], &want, tolerance);
    assert!(c.passed(), "{shape} [{config}]: {c:?}");
}

#[test]
fn dequant_gemm_w4_gguf_q4_0() {
    let mut rng = random::rng(1);
    let (n, k) = (20, 128);
    let data = random_gguf(&mut rng, n, k, false);
    let w = from_gguf_q4_0(&data, n, k).unwrap();
    assert_eq!((w.quant(), w.group), (Quant::Sym, 32));
    let source = gguf_dequant(&data, n, k, false);
    assert_exact(&w, &source);
    // Exact conversion, so the f32 tolerance applies against the source itself.
    assert_kernel_matches_source(&w, &source, 3, "f32", "", 1e-5);
    assert_kernel_matches_source(&w, &source, 1, "f16", "", 2e-3);
}

#[test]
fn dequant_gemm_w4_gguf_q4_1() {
    let mut rng = random::rng(2);
    let (n, k) = (20, 96);
    let data = random_gguf(&mut rng, n, k, true);
    let w = from_gguf_q4_1(&data, n, k).unwrap();
    assert_eq!((w.quant(), w.group), (Quant::Asym, 32));
    let source = gguf_dequant(&data, n, k, true);
    assert_exact(&w, &source);
    assert_kernel_matches_source(&w, &source, 1, "f32", "", 1e-5);
    assert_kernel_matches_source(&w, &source, 4, "f16", "block_m=16,block_n=16,block_k=32,split_k=2", 2e-3);
}

#[test]
fn dequant_gemm_w4_gptq() {
    let mut rng = random::rng(3);
    let (n, k, group) = (24, 256, 128);
    let qweight = random_words(&mut rng, k / 8 * n);
    let qzeros = random_words(&mut rng, k / group * n / 8);
    let scales = random_scales(&mut rng, k / group * n);
    for (zeros, plus_one) in [(GptqZeros::StoredMinusOne, true), (GptqZeros::Exact, false)] {
        let w = from_gptq(&qweight, &qzeros, &scales, n, k, group, zeros).unwrap();
        assert_eq!(w.quant(), Quant::Asym);
        let source = gptq_dequant(&qweight, &qzeros, &scales, n, k, group, plus_one);
        assert_within_min_rounding(&w, &source);
        // The min rounding (up to 2⁻¹² of |min| ≈ 8·scale per weight) is ~1e-4 relative: inside
        // the f16 tolerance, not the f32 one.
        assert_kernel_matches_source(&w, &source, 3, "f16", "", 2e-3);
    }
    // A symmetric checkpoint (legacy zeros stored as 7) converts to kiln's exact symmetric form.
    let sevens = vec![0x7777_7777; k / group * n / 8];
    let w = from_gptq(&qweight, &sevens, &scales, n, k, group, GptqZeros::StoredMinusOne).unwrap();
    assert_eq!(w.quant(), Quant::Sym);
    let source = gptq_dequant(&qweight, &sevens, &scales, n, k, group, true);
    assert_exact(&w, &source);
    assert_kernel_matches_source(&w, &source, 1, "f32", "", 1e-5);
    // The same words read as gptq_v2 zeros (7, not 8) are asymmetric.
    let w = from_gptq(&qweight, &sevens, &scales, n, k, group, GptqZeros::Exact).unwrap();
    assert_eq!(w.quant(), Quant::Asym);
}

#[test]
fn dequant_gemm_w4_awq() {
    let mut rng = random::rng(4);
    let (n, k, group) = (16, 128, 64);
    let qweight = random_words(&mut rng, k * n / 8);
    let qzeros = random_words(&mut rng, k / group * n / 8);
    let scales = random_scales(&mut rng, k / group * n);
    let w = from_awq(&qweight, &qzeros, &scales, n, k, group).unwrap();
    assert_eq!(w.quant(), Quant::Asym);
    let source = awq_dequant(&qweight, &qzeros, &scales, n, k, group);
    assert_within_min_rounding(&w, &source);
    assert_kernel_matches_source(&w, &source, 5, "f16", "", 2e-3);
    assert_kernel_matches_source(&w, &source, 1, "f16", "", 2e-3);
    // Reading AWQ words in plain nibble order gives other weights: the interleave matters.
    let plain = gptq_like_plain_order(&qweight, n, k);
    assert!((0..n * k).any(|i| plain[i] != w.code(i / k, i % k)));
    // Symmetric zeros (8 everywhere) convert exactly.
    let eights = vec![0x8888_8888u32 as i32; k / group * n / 8];
    let w = from_awq(&qweight, &eights, &scales, n, k, group).unwrap();
    assert_eq!(w.quant(), Quant::Sym);
    assert_exact(&w, &awq_dequant(&qweight, &eights, &scales, n, k, group));
}

/// Codes of AWQ words read without the interleave (`[n, k]` order), to show it changes them.
fn gptq_like_plain_order(qweight: &[i32], n: usize, k: usize) -> Vec<u8> {
    let mut codes = vec![0u8; n * k];
    for row in 0..k {
        for c in 0..n / 8 {
            for (i, v) in fields(qweight[row * (n / 8) + c]).into_iter().enumerate() {
                codes[(8 * c + i) * k + row] = v;
            }
        }
    }
    codes
}

#[test]
fn dequant_gemm_w4_converters_reject_bad_inputs() {
    let scales = vec![f16::ONE; 2 * 16];
    let size = |e: LayoutError| match e {
        LayoutError::Size { array, got, expected, .. } => (array, got, expected),
        other => panic!("expected a size error, got {other}"),
    };
    assert_eq!(size(from_gguf_q4_0(&[0; 35], 1, 64).unwrap_err()), ("data (bytes)", 35, 36));
    assert_eq!(size(from_gguf_q4_1(&[0; 36], 1, 64).unwrap_err()), ("data (bytes)", 36, 40));
    assert!(matches!(from_gguf_q4_0(&[0; 18], 1, 48), Err(LayoutError::Shape { .. })));
    // GPTQ n = 16, k = 128, group 64: qweight 16·16, qzeros 2·2, scales 2·16.
    let err = from_gptq(&[0; 255], &[0; 4], &scales, 16, 128, 64, GptqZeros::Exact).unwrap_err();
    assert_eq!(size(err.clone()), ("qweight", 255, 256));
    assert!(err.to_string().starts_with("GPTQ: `qweight` has 255 elements"), "{err}");
    assert_eq!(
        size(from_gptq(&[0; 256], &[0; 3], &scales, 16, 128, 64, GptqZeros::Exact).unwrap_err()),
        ("qzeros", 3, 4)
    );
    assert_eq!(
        size(from_gptq(&[0; 256], &[0; 4], &scales[1..], 16, 128, 64, GptqZeros::Exact).unwrap_err()),
        ("scales", 31, 32)
    );
    assert_eq!(size(from_awq(&[0; 257], &[0; 4], &scales, 16, 128, 64).unwrap_err()), ("qweight", 257, 256));
    assert_eq!(size(from_awq(&[0; 256], &[0; 5], &scales, 16, 128, 64).unwrap_err()), ("qzeros", 5, 4));
    let shape_err = |r: Result<W4Weights, LayoutError>| match r {
        Err(LayoutError::Shape { constraint, .. }) => constraint,
        other => panic!("expected a shape error, got {other:?}"),
    };
    assert!(shape_err(from_awq(&[0; 128], &[0; 2], &scales, 12, 128, 64)).contains("n = 12 is not a multiple of 8"));
    assert!(shape_err(from_gptq(&[0; 256], &[0; 4], &scales, 16, 128, 48, GptqZeros::Exact)).contains("group = 48"));
    assert!(
        shape_err(from_awq(&[0; 256], &[0; 4], &scales, 16, 96, 64)).contains("k = 96 is not a multiple of group = 64")
    );
}

// --- int8 activations (`xq=i8`) --------------------------------------------------------------

#[test]
fn dequant_gemm_w4_int8_activations_match_reference() {
    // Ragged n, every group size, sym and asym, f16 and f32, split-K and block_k above the group.
    assert_conformance(NAME, "m=1,n=45,k=256,group=32,quant=sym,act=f32,xq=i8", 3, 40);
    assert_conformance(NAME, "m=3,n=70,k=384,group=128,act=f16,xq=i8", 3, 41);
    assert_config("m=2,n=20,k=256,group=32,act=f32,xq=i8", "block_m=1,block_n=16,block_k=128,split_k=2", 42);
    assert_config("m=1,n=33,k=128,group=64,act=f32,quant=sym,xq=i8", "block_m=1,block_n=32,block_k=32,split_k=4", 43);
    // Groups of 64 inside tiles of 128: each group's scale serves two blocks of 32.
    assert_config("m=1,n=40,k=512,group=64,act=f32,xq=i8", "block_m=1,block_n=16,block_k=128,split_k=1", 44);
}

#[test]
fn dequant_gemm_w4_int8_rejects_configs_it_cannot_run() {
    let k = lookup(NAME).unwrap();
    let shape = Args::parse("m=4,n=32,k=128,group=32,xq=i8").unwrap();
    for config in ["block_m=16,block_n=16,block_k=32,split_k=1", "block_m=1,block_n=16,block_k=16,split_k=1"] {
        let err = k.plan(&shape, &Args::parse(config).unwrap()).unwrap_err().to_string();
        assert!(err.contains("xq=i8"), "{err}");
    }
    assert_constraint(NAME, "m=1,n=32,k=128,group=32,xq=i4", "", "xq `i4`");
    // The tuner's space for an int8 problem holds only configs the int8 path runs.
    let space = k.space(&shape, &Default::default()).unwrap();
    assert!(!space.is_empty());
    for c in &space {
        k.plan(&shape, c).unwrap_or_else(|e| panic!("{c}: {e}"));
    }
}

/// Runs the int8 `shape` with `config` in the interpreter and checks its tolerance is tight:
/// the result passes `tolerance` (the kernel's own), its error lies in `derived` (far below, x
/// was not quantized; far above, the quantizer is broken), and the same output fails against
/// weights whose scales are 2% off, which the tolerance must catch.
fn assert_tight_int8_tolerance(shape: &str, config: &str, seed: u64, tolerance: f64, derived: (f64, f64)) {
    let k = lookup(NAME).unwrap();
    let shape = Args::parse(shape).unwrap();
    assert_eq!(k.tolerance(&shape, DType::F32).unwrap(), tolerance);
    let plan = k.plan(&shape, &Args::parse(config).unwrap()).unwrap();
    let inputs = k.inputs(&shape, seed).unwrap();
    let mut buffers = prepare_buffers(NAME, &plan, &inputs).unwrap();
    run_plan(NAME, &plan, &mut Interpreter, &mut buffers).unwrap();
    let good = k.reference(&shape, &inputs).unwrap();
    let ok = compare("y", &buffers["y"], &good["y"], tolerance);
    assert!(ok.passed(), "{ok:?}");
    assert!(
        ok.rel_error > derived.0 && ok.rel_error < derived.1,
        "relative error {} outside {derived:?}",
        ok.rel_error
    );
    let mut off = inputs.clone();
    let HostBuffer::F16(scales) = off.get_mut("scales").unwrap() else { panic!("scales are f16") };
    scales.iter_mut().for_each(|s| *s = f16::from_f64(s.to_f64() * 1.02));
    let bad = k.reference(&shape, &off).unwrap();
    assert!(!compare("y", &buffers["y"], &bad["y"], tolerance).passed());
}

#[test]
fn dequant_gemm_w4_int8_tolerance_is_tight() {
    // One digit, the default config: the derivation in `int8` predicts ≈ 0.004 for these inputs.
    let shape = "m=1,n=96,k=512,group=32,act=f32,quant=asym,xq=i8";
    assert_tight_int8_tolerance(shape, "", 9, kiln_kernels::dequant_gemm_w4::int8::TOLERANCE, (0.001, 0.006));
}

#[test]
fn dequant_gemm_w4_two_digit_tolerance_is_tight() {
    // Two digits (`xq=i8x2`) on the row loop: the derivation predicts ≈ 1.5e-5.
    let shape = "m=1,n=96,k=512,group=32,act=f32,quant=asym,xq=i8x2";
    let config = "block_m=1,block_n=16,block_k=128,split_k=1,row_loop=8";
    assert_tight_int8_tolerance(shape, config, 10, kiln_kernels::dequant_gemm_w4::int8::TOLERANCE_I8X2, (3e-6, 3e-5));
}

#[test]
fn dequant_gemm_w4_int8_row_loop_needs_whole_rows_per_vector() {
    // A vector of 16 i32 lanes holds 128 / block_k rows: row_loop must be a multiple of that.
    let k = lookup(NAME).unwrap();
    let shape = Args::parse("m=1,n=64,k=512,group=32,xq=i8").unwrap();
    for config in
        ["block_m=1,block_n=16,block_k=32,split_k=1,row_loop=2", "block_m=1,block_n=16,block_k=64,split_k=1,row_loop=1"]
    {
        let err = k.plan(&shape, &Args::parse(config).unwrap()).unwrap_err().to_string();
        assert!(err.contains("row_loop") && err.contains("128 / block_k"), "{config}: {err}");
    }
    k.plan(&shape, &Args::parse("block_m=1,block_n=16,block_k=64,split_k=1,row_loop=2").unwrap()).unwrap();
}
