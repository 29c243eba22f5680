//! Shape sets: every named set is valid for its kernels, includes the speculative-verify shapes,
//! and a shapes file with a bad field is an error that names it.

use kiln_autotune::shapes::{self, ShapesError};
use kiln_kernels::{KernelId, SpaceLimits};
use std::path::PathBuf;

fn file(name: &str, text: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("shapes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn named_sets_are_valid_and_cover_decode_verify_and_prefill() {
    for name in shapes::SETS {
        let set = shapes::load(name).unwrap();
        assert!(!set.is_empty());
        for s in &set {
            let k = s.kernel.kernel();
            // Canonical and valid, with a non-empty legal space holding the default.
            assert_eq!(k.problem(&s.shape).unwrap(), s.shape, "{name}: {} {}", s.kernel, s.shape);
            let space = k.space(&s.shape, &SpaceLimits::default()).unwrap();
            assert!(space.contains(&k.default_config(&s.shape).unwrap()), "{name}: {}", s.shape);
        }
        let gemm_ms: Vec<&str> =
            set.iter().filter(|s| s.kernel == KernelId::DequantGemmW4).filter_map(|s| s.shape.get("m")).collect();
        // m = batch × (k + 1) for k = 4 draft tokens, decode and prefill.
        for m in ["1", "5"] {
            assert!(gemm_ms.contains(&m), "{name}: m = {m} in {gemm_ms:?}");
        }
        let q_lens: Vec<&str> = set
            .iter()
            .filter(|s| s.kernel == KernelId::AttentionDecodePaged)
            .filter_map(|s| s.shape.get("q_len"))
            .collect();
        assert!(q_lens.contains(&"1") && q_lens.contains(&"5"), "{name}: {q_lens:?}");
    }
    let smollm2 = shapes::smollm2();
    assert!(smollm2.iter().any(|s| s.shape.get("m") == Some("9") && s.shape.get("n") == Some("1536")));
    assert!(smollm2.iter().any(|s| s.shape.get("m") == Some("128")));
    // The one-token fused projections the runtime runs: Q/K/V (576 + 2 · 192) and gate/up.
    for n in ["960", "3072"] {
        assert!(smollm2.iter().any(|s| s.shape.get("m") == Some("1") && s.shape.get("n") == Some(n)), "fused n = {n}");
    }
}

#[test]
fn a_shapes_file_is_read_and_validated() {
    let path = file(
        "good.toml",
        "[[shape]]\nkernel = \"dequant_gemm_w4\"\nshape = \"m=2,n=64,k=64,group=32\"\n\n[[shape]]\nkernel = \"rmsnorm\"\nshape = \"tokens=3,dim=64\"\n",
    );
    let set = shapes::load(path.to_str().unwrap()).unwrap();
    assert_eq!(set.len(), 2);
    assert_eq!(set[0].kernel, KernelId::DequantGemmW4);
    // Canonical: defaults filled in.
    assert_eq!(set[0].shape.get("act"), Some("f16"));
}

#[test]
fn bad_shapes_files_name_the_problem() {
    let cases = [
        ("kernel.toml", "[[shape]]\nkernel = \"gemm\"\nshape = \"m=1\"\n", "`kernel` field", "unknown kernel `gemm`"),
        (
            "key.toml",
            "[[shape]]\nkernel = \"rmsnorm\"\nshape = \"tokens=3,dim=64,dims=64\"\n",
            "shape 1 (`shape` field)",
            "dims",
        ),
        ("value.toml", "[[shape]]\nkernel = \"rmsnorm\"\nshape = \"tokens=x,dim=64\"\n", "`shape` field", "tokens"),
        ("syntax.toml", "[[shape]]\nkernel = \"rmsnorm\"\nshape = tokens\n", "line 3", ""),
        ("field.toml", "[[shape]]\nkernel = \"rmsnorm\"\nshape = \"tokens=1,dim=8\"\nsize = 3\n", "line 4", "size"),
    ];
    for (name, text, where_, what) in cases {
        let path = file(name, text);
        let e = shapes::load(path.to_str().unwrap()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains(where_) && msg.contains(what), "{name}: {msg}");
    }
    assert!(matches!(shapes::load("no-such-set"), Err(ShapesError::UnknownSet(_))));
    assert!(shapes::load("no-such-set").unwrap_err().to_string().contains("smollm2, llama-8b"));
}

#[test]
fn selecting_kernels_outside_the_set_is_an_error() {
    let set = shapes::smollm2();
    let e = shapes::select("smollm2", set.clone(), &[KernelId::Argmax]).unwrap_err();
    assert!(e.to_string().contains("argmax"), "{e}");
    let only = shapes::select("smollm2", set, &[KernelId::DequantGemmW4]).unwrap();
    assert!(only.iter().all(|s| s.kernel == KernelId::DequantGemmW4));
}
