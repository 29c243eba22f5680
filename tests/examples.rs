//! The example kernels: their `.tir` files are exactly what the builder produces, and they
//! compute what they claim against naive Rust references on fresh random inputs.

#[path = "../examples/int4_gemv.rs"]
mod int4_gemv;
#[path = "../examples/online_softmax.rs"]
mod online_softmax;

use half::f16;
use kiln::ir::interp::{run, Arg, HostBuffer, Scalar};
use kiln::ir::text;

fn check_tir_matches(kernel: &kiln::ir::Kernel, path: &str) {
    let printed = text::print(kernel);
    let full = format!("{}/{path}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("BLESS").is_some() {
        std::fs::write(&full, &printed).unwrap();
    }
    let on_disk = std::fs::read_to_string(&full).unwrap_or_default();
    assert_eq!(on_disk, printed, "{path} is stale; run `BLESS=1 cargo test --test examples`");
    assert_eq!(&text::parse(&on_disk).unwrap(), kernel);
}

#[test]
fn int4_gemv_text_form_is_current() {
    check_tir_matches(&int4_gemv::build(), "examples/int4_gemv.tir");
}

#[test]
fn online_softmax_text_form_is_current() {
    check_tir_matches(&online_softmax::build(), "examples/online_softmax.tir");
}

/// Deterministic pseudo-random numbers in [0, 1).
fn uniform(seed: u64, n: usize) -> Vec<f64> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (s >> 11) as f64 / (1u64 << 53) as f64
        })
        .collect()
}

#[test]
fn int4_gemv_matches_dequantize_then_matmul() {
    use int4_gemv::{BLOCK_N, GROUP};
    // n is ragged (not a multiple of BLOCK_N) so the row mask matters.
    let (n, k) = (37usize, 96usize);
    let x: Vec<f16> = uniform(1, k).iter().map(|u| f16::from_f64(u * 2.0 - 1.0)).collect();
    let w: Vec<u8> = uniform(2, n * k / 2).iter().map(|u| (u * 256.0) as u8).collect();
    let scales: Vec<f16> = uniform(3, n * k / GROUP as usize).iter().map(|u| f16::from_f64(0.01 + u * 0.05)).collect();
    let mut args = vec![
        Arg::Buffer(HostBuffer::F16(x.clone())),
        Arg::Buffer(HostBuffer::U8(w.clone())),
        Arg::Buffer(HostBuffer::F16(scales.clone())),
        Arg::Buffer(HostBuffer::F32(vec![f32::NAN; n])),
        Arg::Scalar(Scalar::I32(n as i32)),
        Arg::Scalar(Scalar::I32(k as i32)),
    ];
    let grid = [(n as u32).div_ceil(BLOCK_N as u32), 1, 1];
    run(&int4_gemv::build(), grid, &mut args).unwrap();
    let Arg::Buffer(HostBuffer::F32(y)) = &args[3] else { panic!("output changed kind") };
    let groups = k / GROUP as usize;
    let mut err2 = 0.0;
    let mut ref2 = 0.0;
    for row in 0..n {
        let mut want = 0.0f64;
        for col in 0..k {
            let byte = w[row * k / 2 + col / 2];
            let q = if col % 2 == 0 { byte & 0xF } else { byte >> 4 } as f64;
            let s = scales[row * groups + col / GROUP as usize].to_f64();
            want += (q - 8.0) * s * x[col].to_f64();
        }
        err2 += (y[row] as f64 - want).powi(2);
        ref2 += want * want;
    }
    let rel = (err2 / ref2).sqrt();
    assert!(rel < 1e-5, "relative error {rel}");
}

#[test]
fn online_softmax_matches_two_pass_softmax() {
    let (rows, n) = (3usize, 150usize); // 150 is not a multiple of the block: the tail is masked
    let x: Vec<f32> = uniform(7, rows * n).iter().map(|u| (u * 20.0 - 10.0) as f32).collect();
    let mut args = vec![
        Arg::Buffer(HostBuffer::F32(x.clone())),
        Arg::Buffer(HostBuffer::F32(vec![f32::NAN; rows * n])),
        Arg::Scalar(Scalar::I32(n as i32)),
    ];
    run(&online_softmax::build(), [rows as u32, 1, 1], &mut args).unwrap();
    let Arg::Buffer(HostBuffer::F32(y)) = &args[1] else { panic!("output changed kind") };
    for r in 0..rows {
        let row = &x[r * n..(r + 1) * n];
        let m = row.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let total: f64 = row.iter().map(|&v| (v as f64 - m).exp()).sum();
        for c in 0..n {
            let want = (row[c] as f64 - m).exp() / total;
            let got = y[r * n + c] as f64;
            assert!((got - want).abs() <= 1e-5 * want.max(1e-3), "row {r} col {c}: got {got} want {want}");
        }
    }
}
