//! `q8_gemv` against its reference in the interpreter (the GEMV path for m = 1 and the dot path
//! for m > 1, both activation and output dtypes), the GGUF Q8_0 converter against a
//! dequantize-then-matmul straight from the GGUF bytes, and bad inputs.

mod common;

use common::{assert_conformance, assert_constraint};
use half::f16;
use kiln_ir::interp::HostBuffer;
use kiln_ir::DType;
use kiln_kernels::check::{compare, prepare_buffers, run_plan, Interpreter};
use kiln_kernels::q8::{Q8FormatError, Q8Matrix};
use kiln_kernels::{lookup, Args, Buffers};
use proptest::prelude::*;
use rand::{Rng, SeedableRng};

#[test]
fn q8_gemv_matches_reference() {
    // n ragged for every block_n; k = 96 and 160 are whole Q8_0 blocks but not whole steps of
    // 64 or 128, so the last step is masked; m = 3, 5, 11 and 16 take the multi-row GEMV (rows
    // padded to 4, 8, 16 and masked), m = 17, 64 pad to 32, 64 rows of the dot.
    let shapes = [
        "n=50,k=96",
        "m=1,n=70,k=576,act=f16",
        "m=1,n=33,k=64,out=f16",
        "m=3,n=70,k=96",
        "m=5,n=41,k=160,act=f16",
        "m=11,n=70,k=576",
        "m=16,n=17,k=96,out=f16",
        "m=17,n=40,k=160,act=f16",
        "m=64,n=20,k=64,act=f16,out=f16",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_conformance("q8_gemv", shape, 3, 600 + i as u64);
    }
}

/// GGUF Q8_0 bytes of a random `[rows, cols]` tensor, written block by block as the format
/// says: the f16 scale little-endian, then 32 int8 values.
fn gguf_q8_0(rng: &mut impl Rng, rows: usize, cols: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for _ in 0..rows * cols / 32 {
        bytes.extend(f16::from_f64(rng.random_range(-0.03..0.03)).to_le_bytes());
        bytes.extend((0..32).map(|_| rng.random::<u8>()));
    }
    bytes
}

/// Dequantizes GGUF Q8_0 bytes directly: value `c` of row `r` is in block `r · cols/32 + c/32`.
fn dequantize_gguf(bytes: &[u8], rows: usize, cols: usize) -> Vec<f64> {
    let mut w = vec![0.0; rows * cols];
    for r in 0..rows {
        for c in 0..cols {
            let block = &bytes[(r * cols / 32 + c / 32) * 34..][..34];
            let d = f16::from_le_bytes([block[0], block[1]]).to_f64();
            w[r * cols + c] = d * f64::from(block[2 + c % 32] as i8);
        }
    }
    w
}

#[test]
fn q8_gemv_on_converted_gguf_matches_dequantize_then_matmul() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    for (m, n, k) in [(1, 37, 96), (4, 50, 64)] {
        let bytes = gguf_q8_0(&mut rng, n, k);
        let w = dequantize_gguf(&bytes, n, k);
        let x: Vec<f64> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
        let x = HostBuffer::from_f64(DType::F32, &x).to_f64();
        let want: Vec<f64> = (0..m * n).map(|i| (0..k).map(|j| x[i / n * k + j] * w[i % n * k + j]).sum()).collect();

        let matrix = Q8Matrix::from_gguf(&bytes, n, k).unwrap();
        let (qs, scales) = matrix.host_buffers();
        let kernel = lookup("q8_gemv").unwrap();
        let shape = Args::parse(&format!("m={m},n={n},k={k}")).unwrap();
        let plan = kernel.plan(&shape, &Args::new()).unwrap();
        let inputs = Buffers::from([
            ("x".to_string(), HostBuffer::from_f64(DType::F32, &x)),
            ("qs".to_string(), qs),
            ("scales".to_string(), scales),
        ]);
        let mut buffers = prepare_buffers("q8_gemv", &plan, &inputs).unwrap();
        run_plan("q8_gemv", &plan, &mut Interpreter, &mut buffers).unwrap();
        let cmp = compare("y", &buffers["y"], &want, 1e-5);
        assert!(cmp.passed(), "{cmp:?}");
    }
}

#[test]
fn q8_gemv_gguf_converter_rejects_bad_sizes() {
    let bytes = vec![0u8; 2 * 34];
    assert_eq!(Q8Matrix::from_gguf(&bytes, 2, 48), Err(Q8FormatError::RaggedRow { cols: 48 }));
    assert_eq!(
        Q8Matrix::from_gguf(&bytes[..67], 2, 32),
        Err(Q8FormatError::Size { rows: 2, cols: 32, expected: 68, got: 67 })
    );
    assert_eq!(
        Q8Matrix::from_gguf(&bytes, 1, 32),
        Err(Q8FormatError::Size { rows: 1, cols: 32, expected: 34, got: 68 })
    );
    assert_eq!(
        Q8Matrix::from_gguf(&bytes, usize::MAX, 64),
        Err(Q8FormatError::TooLarge { rows: usize::MAX, cols: 64 })
    );
    let m = Q8Matrix::from_gguf(&bytes, 2, 32).unwrap();
    assert_eq!((m.qs.len(), m.scales.len()), (64, 2));
}

#[test]
fn q8_gemv_rejects_bad_problems() {
    assert_constraint("q8_gemv", "m=0,n=8,k=32", "", "m = 0");
    assert_constraint("q8_gemv", "m=65,n=8,k=32", "", "m = 65");
    assert_constraint("q8_gemv", "n=0,k=32", "", "at least 1");
    assert_constraint("q8_gemv", "n=8,k=48", "", "k = 48 is not a multiple");
    assert_constraint("q8_gemv", "n=8,k=32,act=bf16", "", "act `bf16`");
    assert_constraint("q8_gemv", "n=8,k=32,out=i32", "", "out `i32`");
    assert_constraint("q8_gemv", "n=65536,k=65536", "", "i32 offset range");
    assert_constraint("q8_gemv", "n=8,k=32", "block_n=48", "block_n = 48");
    assert_constraint("q8_gemv", "n=8,k=32", "block_k=48", "block_k = 48");
    assert_constraint("q8_gemv", "n=8,k=32,dim=3", "", "unknown shape key `dim`");
    assert_constraint("q8_gemv", "n=8,k=32,xq=i4", "", "xq `i4` is not one of f32, i8, i8x2");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 10, ..ProptestConfig::default() })]
    #[test]
    fn q8_gemv_random_shapes(m in 1u32..10, n in 1u32..150, k_blocks in 1u32..10, f16_act in any::<bool>(), seed in 0u64..1000) {
        let act = if f16_act { "f16" } else { "f32" };
        assert_conformance("q8_gemv", &format!("m={m},n={n},k={},act={act}", 32 * k_blocks), 2, seed);
    }
}

#[test]
fn q8_gemv_example_problem_and_whole_space_plan() {
    // The example problem (what a caller gets with no shape) passes, and every config of its
    // legal space, which contains the default, plans.
    let k = lookup("q8_gemv").unwrap();
    let shape = k.example_problem();
    assert_conformance("q8_gemv", &shape.to_string(), 1, 1);
    let space = k.space(&shape, &kiln_kernels::SpaceLimits::default()).unwrap();
    assert!(space.contains(&k.default_config(&shape).unwrap()));
    for config in &space {
        k.plan(&shape, config).unwrap_or_else(|e| panic!("[{config}]: {e}"));
    }
}

#[test]
fn q8_gemv_plans_smollm2_output_head() {
    // SmolLM2's tied head, [49152, 576] Q8_0: planned (not run: 28M weights is slow in the
    // interpreter), with every offset inside i32 and one program per block_n vocabulary rows.
    let k = lookup("q8_gemv").unwrap();
    let shape = Args::parse("m=1,n=49152,k=576").unwrap();
    let plan = k.plan(&shape, &Args::new()).unwrap();
    assert_eq!(plan.buffer("qs").unwrap().len, 49152 * 576);
    assert_eq!(plan.buffer("scales").unwrap().len, 49152 * 18);
    assert_eq!(plan.launches[0].grid, [49152 / 64, 1, 1]);
    assert_eq!(k.default_config(&shape).unwrap().to_string(), "block_k=64,block_n=64");
}

// --- int8 activations (`xq=i8`) --------------------------------------------------------------

#[test]
fn q8_gemv_int8_activations_match_reference() {
    // Ragged n for every block_n; k = 96 and 160 are not whole steps of 64 or 128 (masked last
    // step); several rows; f16 activations and outputs; SmolLM2's head width.
    let shapes = [
        "m=1,n=50,k=96,xq=i8",
        "m=1,n=70,k=576,xq=i8",
        "m=3,n=41,k=160,act=f16,xq=i8",
        "m=2,n=33,k=64,out=f16,xq=i8",
        "m=1,n=50,k=96,xq=i8x2",
        "m=1,n=64,k=576,xq=i8x2",
        "m=2,n=41,k=160,act=f16,xq=i8x2",
    ];
    for (i, shape) in shapes.iter().enumerate() {
        assert_conformance("q8_gemv", shape, 3, 700 + i as u64);
    }
}

/// Runs `shape` (an `xq` problem) in the interpreter on inputs of `seed` and returns its relative
/// error against the reference, after checking that the same output fails the tolerance against
/// scales 2% off: the tolerance catches a kernel that gets its scales wrong by that much.
fn int8_error_and_wrong_scale_fails(shape: &str, seed: u64) -> f64 {
    let k = lookup("q8_gemv").unwrap();
    let shape = Args::parse(shape).unwrap();
    let tolerance = k.tolerance(&shape, DType::F32).unwrap();
    let plan = k.plan(&shape, &Args::new()).unwrap();
    let inputs = k.inputs(&shape, seed).unwrap();
    let HostBuffer::U8(_) = &inputs["qs"] else { panic!("integer activations take offset u8 weights") };
    let mut buffers = prepare_buffers("q8_gemv", &plan, &inputs).unwrap();
    run_plan("q8_gemv", &plan, &mut Interpreter, &mut buffers).unwrap();
    let good = k.reference(&shape, &inputs).unwrap();
    let ok = compare("y", &buffers["y"], &good["y"], tolerance);
    assert!(ok.passed(), "{ok:?}");
    let mut off = inputs.clone();
    let HostBuffer::F16(scales) = off.get_mut("scales").unwrap() else { panic!("scales are f16") };
    scales.iter_mut().for_each(|s| *s = f16::from_f64(s.to_f64() * 1.02));
    let bad = k.reference(&shape, &off).unwrap();
    assert!(!compare("y", &buffers["y"], &bad["y"], tolerance).passed());
    ok.rel_error
}

#[test]
fn q8_gemv_int8_tolerance_is_tight() {
    // The derivation in `gemv_i8` predicts ≈ 0.004 with one digit and ≈ 1.5e-5 with two for
    // these inputs: an error far below would mean x was not quantized as documented (an f32
    // path, or a second digit on the one-digit path), far above a broken quantizer.
    let one = int8_error_and_wrong_scale_fails("m=1,n=96,k=576,xq=i8", 17);
    assert!(one > 0.001 && one < 0.006, "xq=i8: relative error {one} outside the derived range");
    let two = int8_error_and_wrong_scale_fails("m=1,n=96,k=576,xq=i8x2", 18);
    assert!(two > 4e-6 && two < 3e-5, "xq=i8x2: relative error {two} outside the derived range");
    let k = lookup("q8_gemv").unwrap();
    let tol = |s: &str| k.tolerance(&Args::parse(s).unwrap(), DType::F32).unwrap();
    assert_eq!(tol("n=8,k=32,xq=i8"), kiln_kernels::q8::gemv_i8::TOLERANCE);
    assert_eq!(tol("n=8,k=32,xq=i8x2"), kiln_kernels::q8::gemv_i8::TOLERANCE_I8X2);
}

#[test]
fn q8_offset_qs_flips_the_sign_bit() {
    // `q + 128` for the extremes and zero, and the int8 path on a converted matrix agrees with
    // the f32 path on the original one (both against the same reference up to the int8 error).
    assert_eq!(kiln_kernels::q8::offset_qs(&[-128, -1, 0, 1, 127]), vec![0, 127, 128, 129, 255]);
    let k = lookup("q8_gemv").unwrap();
    let (f32_shape, i8_shape) = (Args::parse("m=1,n=40,k=64").unwrap(), Args::parse("m=1,n=40,k=64,xq=i8").unwrap());
    let inputs = k.inputs(&f32_shape, 5).unwrap();
    let HostBuffer::I8(qs) = &inputs["qs"] else { panic!("qs are i8") };
    let mut converted = inputs.clone();
    converted.insert("qs".to_string(), HostBuffer::U8(kiln_kernels::q8::offset_qs(qs)));
    let plan = k.plan(&i8_shape, &Args::new()).unwrap();
    let mut buffers = prepare_buffers("q8_gemv", &plan, &converted).unwrap();
    run_plan("q8_gemv", &plan, &mut Interpreter, &mut buffers).unwrap();
    let reference = k.reference(&f32_shape, &inputs).unwrap();
    let tolerance = k.tolerance(&i8_shape, DType::F32).unwrap();
    let report = compare("y", &buffers["y"], &reference["y"], tolerance);
    assert!(report.passed(), "{report:?}");
}
