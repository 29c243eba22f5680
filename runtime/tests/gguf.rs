//! The GGUF reader on files the test writes (`common/gguf_writer.rs`, an independent writer):
//! every metadata type, every supported tensor type, alignment, the Llama configuration, and
//! every kind of broken file — truncated at each section boundary, bad magic, wrong version,
//! corrupt values, tensors out of bounds, misaligned or overlapping, unsupported types.

mod common;

use common::gguf_writer::{GgufWriter, Value};
use half::{bf16, f16};
use kiln_runtime::model::gguf::{GgufError, GgufFile, MetaValue};
use kiln_runtime::model::tensor::{LoadError, TensorData, TensorSource};
use proptest::prelude::*;
use rand::{Rng, RngCore, SeedableRng};

fn rng() -> rand::rngs::StdRng {
    let seed = rand::rng().next_u64();
    eprintln!("seed {seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn random_bytes(rng: &mut impl Rng, n: usize) -> Vec<u8> {
    (0..n).map(|_| rng.random()).collect()
}

/// Bytes of a tensor of `n` values of ggml type `t` (F32 0, F16 1, Q4_0 2, Q4_1 3, Q8_0 8, BF16 30).
fn size(t: u32, n: u64) -> usize {
    (match t {
        0 => n * 4,
        1 | 30 => n * 2,
        2 => n / 32 * 18,
        3 => n / 32 * 20,
        8 => n / 32 * 34,
        _ => unreachable!(),
    }) as usize
}

/// A two-layer Llama model with SmolLM2's tensor types, small dimensions and random data.
fn tiny_llama(rng: &mut impl Rng, tied: bool) -> GgufWriter {
    let (dim, kv_dim, ffn, vocab) = (64u64, 32u64, 96u64, 80u64);
    let mut w = GgufWriter::new()
        .meta("general.architecture", Value::str("llama"))
        .meta("general.name", Value::str("tiny"))
        .meta("llama.block_count", Value::U32(2))
        .meta("llama.context_length", Value::U32(256))
        .meta("llama.embedding_length", Value::U32(dim as u32))
        .meta("llama.feed_forward_length", Value::U32(ffn as u32))
        .meta("llama.attention.head_count", Value::U32(4))
        .meta("llama.attention.head_count_kv", Value::U32(2))
        .meta("llama.rope.freq_base", Value::F32(100000.0))
        .meta("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5))
        .meta("llama.vocab_size", Value::U32(vocab as u32));
    let mut add = |w: GgufWriter, name: &str, dims: &[u64], t: u32| {
        let data = random_bytes(rng, size(t, dims.iter().product()));
        w.tensor(name, dims, t, data)
    };
    w = add(w, "token_embd.weight", &[dim, vocab], 8);
    for i in 0..2 {
        w = add(w, &format!("blk.{i}.attn_norm.weight"), &[dim], 0);
        w = add(w, &format!("blk.{i}.attn_q.weight"), &[dim, dim], 3);
        w = add(w, &format!("blk.{i}.attn_k.weight"), &[dim, kv_dim], 3);
        w = add(w, &format!("blk.{i}.attn_v.weight"), &[dim, kv_dim], 3);
        w = add(w, &format!("blk.{i}.attn_output.weight"), &[dim, dim], 3);
        w = add(w, &format!("blk.{i}.ffn_norm.weight"), &[dim], 0);
        w = add(w, &format!("blk.{i}.ffn_gate.weight"), &[dim, ffn], 3);
        w = add(w, &format!("blk.{i}.ffn_up.weight"), &[dim, ffn], 3);
        w = add(w, &format!("blk.{i}.ffn_down.weight"), &[ffn, dim], 2);
    }
    w = add(w, "output_norm.weight", &[dim], 0);
    if !tied {
        w = add(w, "output.weight", &[dim, vocab], 1);
    }
    w
}

fn open(w: &GgufWriter) -> Result<GgufFile, LoadError> {
    GgufFile::from_bytes("test.gguf", w.write().bytes)
}

/// The GGUF error inside a load error; anything else fails the test.
fn gguf_err(e: LoadError) -> GgufError {
    match e {
        LoadError::Gguf { source, .. } => source,
        other => panic!("expected a GGUF error, got {other:?}"),
    }
}

#[test]
fn every_metadata_type_round_trips() {
    let w = GgufWriter::new()
        .meta("u8", Value::U8(200))
        .meta("i8", Value::I8(-100))
        .meta("u16", Value::U16(60000))
        .meta("i16", Value::I16(-30000))
        .meta("u32", Value::U32(4_000_000_000))
        .meta("i32", Value::I32(-2_000_000_000))
        .meta("u64", Value::U64(u64::MAX - 1))
        .meta("i64", Value::I64(i64::MIN + 1))
        .meta("f32", Value::F32(1.5e-5))
        .meta("f64", Value::F64(-2.25e100))
        .meta("bool", Value::Bool(true))
        .meta("string", Value::str("héllo ✓ 🦀"))
        .meta("strings", Value::strings(&["a", "", "Ġthe", "<|im_start|>"]))
        .meta("nested", Value::Array(9, vec![Value::i32s(&[1, -2]), Value::i32s(&[])]))
        .meta("empty", Value::Array(4, vec![]));
    let f = open(&w).unwrap();
    let expect = [
        ("u8", MetaValue::U8(200)),
        ("i8", MetaValue::I8(-100)),
        ("u16", MetaValue::U16(60000)),
        ("i16", MetaValue::I16(-30000)),
        ("u32", MetaValue::U32(4_000_000_000)),
        ("i32", MetaValue::I32(-2_000_000_000)),
        ("u64", MetaValue::U64(u64::MAX - 1)),
        ("i64", MetaValue::I64(i64::MIN + 1)),
        ("f32", MetaValue::F32(1.5e-5)),
        ("f64", MetaValue::F64(-2.25e100)),
        ("bool", MetaValue::Bool(true)),
        ("string", MetaValue::String("héllo ✓ 🦀".into())),
        (
            "strings",
            MetaValue::Array(vec![
                MetaValue::String("a".into()),
                MetaValue::String("".into()),
                MetaValue::String("Ġthe".into()),
                MetaValue::String("<|im_start|>".into()),
            ]),
        ),
        (
            "nested",
            MetaValue::Array(vec![
                MetaValue::Array(vec![MetaValue::I32(1), MetaValue::I32(-2)]),
                MetaValue::Array(vec![]),
            ]),
        ),
        ("empty", MetaValue::Array(vec![])),
    ];
    assert_eq!(f.metadata().len(), expect.len());
    for ((key, value), (got_key, got)) in expect.iter().zip(f.metadata()) {
        assert_eq!(key, got_key);
        assert_eq!(value, got, "{key}");
        assert_eq!(f.get(key), Some(value));
    }
    assert_eq!(f.require_strings("strings").unwrap(), ["a", "", "Ġthe", "<|im_start|>"]);
    assert_eq!(f.require_u64("u16").unwrap(), 60000);
    assert!(matches!(f.require_u64("i8"), Err(GgufError::WrongType { .. })));
    assert!(matches!(f.require_str("u8"), Err(GgufError::WrongType { .. })));
    assert!(matches!(f.require("absent"), Err(GgufError::MissingKey { .. })));
    assert_eq!(f.version(), 3);
    assert_eq!(f.alignment(), 32);
}

#[test]
fn every_supported_tensor_type_comes_back_as_stored() {
    let mut rng = rng();
    let f32s: Vec<f32> = (0..96).map(|_| rng.random_range(-4.0..4.0)).collect();
    let f16s: Vec<f16> = (0..64).map(|_| f16::from_f32(rng.random_range(-4.0..4.0))).collect();
    let bf16s: Vec<bf16> = (0..64).map(|_| bf16::from_f32(rng.random_range(-4.0..4.0))).collect();
    let q4_0 = random_bytes(&mut rng, size(2, 64 * 3));
    let q4_1 = random_bytes(&mut rng, size(3, 32 * 5));
    let q8_0 = random_bytes(&mut rng, size(8, 96 * 2));
    let w = GgufWriter::new()
        .tensor("f32", &[32, 3], 0, f32s.iter().flat_map(|v| v.to_le_bytes()).collect())
        .tensor("f16", &[64], 1, f16s.iter().flat_map(|v| v.to_le_bytes()).collect())
        .tensor("bf16", &[16, 2, 2], 30, bf16s.iter().flat_map(|v| v.to_le_bytes()).collect())
        .tensor("q4_0", &[64, 3], 2, q4_0.clone())
        .tensor("q4_1", &[32, 5], 3, q4_1.clone())
        .tensor("q8_0", &[96, 2], 8, q8_0.clone());
    let f = open(&w).unwrap();
    let get = |name: &str| f.tensor(name).unwrap();
    assert_eq!(get("f32").shape, [32, 3]);
    assert_eq!(get("f32").data, TensorData::F32(f32s));
    assert_eq!(get("f16").data, TensorData::F16(f16s));
    assert_eq!(get("bf16").shape, [16, 2, 2]);
    assert_eq!(get("bf16").data, TensorData::BF16(bf16s));
    assert_eq!(get("q4_0").data, TensorData::Q4_0(q4_0));
    assert_eq!(get("q4_1").shape, [32, 5]);
    assert_eq!(get("q4_1").data, TensorData::Q4_1(q4_1));
    assert_eq!(get("q8_0").data, TensorData::Q8_0(q8_0));
    assert_eq!(get("q8_0").name, "q8_0");
    assert!(matches!(f.tensor("absent"), Err(LoadError::MissingTensor { name }) if name == "absent"));
    let names: Vec<_> = f.tensor_infos().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["f32", "f16", "bf16", "q4_0", "q4_1", "q8_0"]);
}

#[test]
fn alignment_from_the_metadata_places_the_data() {
    let mut rng = rng();
    for alignment in [None, Some(8), Some(64), Some(256)] {
        let a = random_bytes(&mut rng, size(0, 3));
        let b = random_bytes(&mut rng, size(8, 32));
        let mut w = GgufWriter::new().tensor("a", &[3], 0, a.clone()).tensor("b", &[32], 8, b.clone());
        w.alignment = alignment;
        let f = open(&w).unwrap();
        let align = alignment.unwrap_or(32);
        assert_eq!(f.alignment(), align);
        assert_eq!(f.tensor_info("b").unwrap().offset, align.max(16).div_ceil(align) * align);
        assert_eq!(f.tensor_bytes("a").unwrap(), a);
        assert_eq!(f.tensor_bytes("b").unwrap(), b);
    }
    let mut w = GgufWriter::new();
    w.alignment = Some(48);
    let e = gguf_err(open(&w).unwrap_err());
    assert!(matches!(&e, GgufError::BadMetadata { key, .. } if key == "general.alignment"), "{e}");
}

#[test]
fn llama_config_from_metadata() {
    let mut rng = rng();
    let f = open(&tiny_llama(&mut rng, true)).unwrap();
    let c = f.config().unwrap();
    assert_eq!(
        (c.n_layers, c.dim, c.ffn_dim, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.context_length),
        (2, 64, 96, 4, 2, 16, 80, 256)
    );
    assert_eq!(c.rope_base, 100000.0);
    assert!((c.rms_eps - 1e-5).abs() < 1e-12);
    assert!(c.tied_head);
    assert!(matches!(f.tensor("output.weight"), Err(LoadError::MissingTensor { .. })));
    let untied = open(&tiny_llama(&mut rng, false)).unwrap();
    assert!(!untied.config().unwrap().tied_head);
    assert_eq!(untied.tensor("output.weight").unwrap().shape, [64, 80]);
    let q = f.tensor("blk.1.attn_k.weight").unwrap();
    assert_eq!((q.shape.as_slice(), q.data.kind()), ([64usize, 32].as_slice(), "Q4_1"));
}

/// Replaces the value of metadata `key` (or adds it).
fn with_meta(mut w: GgufWriter, key: &str, value: Value) -> GgufWriter {
    w.metadata.retain(|(k, _)| k != key);
    w.metadata.push((key.to_string(), value));
    w
}

fn config_error(w: GgufWriter) -> String {
    let f = open(&w).unwrap();
    match f.config() {
        Err(e @ LoadError::Config(_)) => e.to_string(),
        other => panic!("expected a configuration error, got {other:?}"),
    }
}

#[test]
fn llama_config_errors_name_the_problem() {
    let mut rng = rng();
    let e = config_error(with_meta(tiny_llama(&mut rng, true), "general.architecture", Value::str("qwen2")));
    assert!(e.contains("`qwen2` is not supported") && e.contains("Llama"), "{e}");
    let mut w = tiny_llama(&mut rng, true);
    w.metadata.retain(|(k, _)| k != "llama.block_count");
    let e = config_error(w);
    assert!(e.contains("llama.block_count"), "{e}");
    let e = config_error(with_meta(tiny_llama(&mut rng, true), "llama.attention.head_count_kv", Value::U32(3)));
    assert!(e.contains("not a multiple of head_count_kv 3"), "{e}");
    let e = config_error(with_meta(tiny_llama(&mut rng, true), "llama.block_count", Value::str("two")));
    assert!(e.contains("llama.block_count") && e.contains("string"), "{e}");
    let e = config_error(with_meta(tiny_llama(&mut rng, true), "llama.vocab_size", Value::U32(81)));
    assert!(e.contains("vocab_size 81"), "{e}");
    let e = config_error(with_meta(tiny_llama(&mut rng, true), "llama.embedding_length", Value::U32(32)));
    assert!(e.contains("token_embd.weight has shape"), "{e}");
    let e = config_error(with_meta(tiny_llama(&mut rng, true), "llama.attention.key_length", Value::U32(32)));
    assert!(e.contains("key_length"), "{e}");
}

#[test]
fn truncation_at_every_section_boundary_is_a_typed_error() {
    let mut rng = rng();
    let w = tiny_llama(&mut rng, false).meta("tokens", Value::strings(&["a", "bc", "d"]));
    let written = w.write();
    assert!(GgufFile::from_bytes("full.gguf", written.bytes.clone()).is_ok());
    let mut cuts: Vec<usize> = vec![0];
    for &(_, end) in &written.boundaries {
        cuts.extend([end.saturating_sub(1), end, end + 1]);
    }
    for cut in cuts.into_iter().filter(|&c| c < written.data_end) {
        let e = gguf_err(GgufFile::from_bytes("cut.gguf", written.bytes[..cut].to_vec()).unwrap_err());
        assert!(matches!(e, GgufError::Truncated { .. } | GgufError::TensorOutOfBounds { .. }), "cut at {cut}: {e}");
        let message = e.to_string();
        assert!(message.contains("truncated"), "cut at {cut}: {message}");
    }
    // Every byte of the header and metadata, not only the boundaries.
    let infos_end = written.boundaries.iter().find(|(what, _)| what == "padding before data").unwrap().1;
    for cut in 0..infos_end {
        assert!(GgufFile::from_bytes("cut.gguf", written.bytes[..cut].to_vec()).is_err(), "cut at {cut}");
    }
    // Only the padding after the last tensor is missing: still a whole file.
    assert!(GgufFile::from_bytes("cut.gguf", written.bytes[..written.data_end].to_vec()).is_ok());
}

#[test]
fn bad_header_is_a_typed_error() {
    let mut bytes = GgufWriter::new().write().bytes;
    bytes[..4].copy_from_slice(b"GGML");
    let e = gguf_err(GgufFile::from_bytes("x.gguf", bytes).unwrap_err());
    assert!(matches!(e, GgufError::BadMagic { .. }), "{e}");
    assert!(e.to_string().contains("not a GGUF file"));
    for version in [1, 2, 4] {
        let mut w = GgufWriter::new();
        w.version = version;
        let e = gguf_err(open(&w).unwrap_err());
        assert!(matches!(e, GgufError::UnsupportedVersion(v) if v == version), "{e}");
    }
    let e = GgufFile::open("/nonexistent/model.gguf").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/model.gguf"), "{e}");
}

#[test]
fn corrupt_metadata_is_a_typed_error() {
    // Unknown value type: write a u32 then patch its type id.
    let bytes = GgufWriter::new().meta("k", Value::U32(7)).write().bytes;
    let type_at = 4 + 4 + 8 + 8 + 8 + 1;
    let mut bad_type = bytes.clone();
    bad_type[type_at] = 13;
    let e = gguf_err(GgufFile::from_bytes("x.gguf", bad_type).unwrap_err());
    assert!(e.to_string().contains("unknown value type 13"), "{e}");
    let mut bad_bool = GgufWriter::new().meta("k", Value::Bool(true)).write().bytes;
    bad_bool[type_at + 4] = 2;
    let e = gguf_err(GgufFile::from_bytes("x.gguf", bad_bool).unwrap_err());
    assert!(e.to_string().contains("bool byte is 2"), "{e}");
    let mut bad_utf8 = GgufWriter::new().meta("k", Value::str("ab")).write().bytes;
    bad_utf8[type_at + 4 + 8] = 0xff;
    let e = gguf_err(GgufFile::from_bytes("x.gguf", bad_utf8).unwrap_err());
    assert!(e.to_string().contains("UTF-8"), "{e}");
    // An array that claims 2^60 elements: an error, not an allocation failure.
    let mut huge = GgufWriter::new().meta("k", Value::i32s(&[1, 2])).write().bytes;
    huge[type_at + 4 + 4..type_at + 4 + 12].copy_from_slice(&(1u64 << 60).to_le_bytes());
    let e = gguf_err(GgufFile::from_bytes("x.gguf", huge).unwrap_err());
    assert!(matches!(e, GgufError::Truncated { .. }), "{e}");
    let w = GgufWriter::new().meta("k", Value::U8(1)).meta("k", Value::U8(2));
    assert!(matches!(gguf_err(open(&w).unwrap_err()), GgufError::DuplicateKey { key } if key == "k"));
}

#[test]
fn bad_tensor_infos_are_typed_errors() {
    let mut rng = rng();
    let data = random_bytes(&mut rng, 4096);
    let w = GgufWriter::new().tensor("q", &[33, 2], 2, data[..size(2, 64)].to_vec());
    let e = gguf_err(open(&w).unwrap_err());
    assert!(e.to_string().contains("not a whole number of 32-value blocks"), "{e}");
    let w = GgufWriter::new().tensor("q", &[32], 99, data[..18].to_vec());
    let e = gguf_err(open(&w).unwrap_err());
    assert!(e.to_string().contains("unknown ggml type 99"), "{e}");
    let w = GgufWriter::new().tensor("q", &[], 0, vec![]);
    assert!(gguf_err(open(&w).unwrap_err()).to_string().contains("0 dimensions"));
    let mut w = GgufWriter::new().tensor("a", &[8], 0, data[..32].to_vec());
    w.tensors[0].offset = Some(4);
    let e = gguf_err(open(&w).unwrap_err());
    assert!(e.to_string().contains("not a multiple of the alignment 32"), "{e}");
    // The info claims more data than the file holds.
    let mut bytes = GgufWriter::new().tensor("a", &[8], 0, data[..32].to_vec()).write().bytes;
    bytes.truncate(bytes.len() - 1);
    let e = gguf_err(GgufFile::from_bytes("x.gguf", bytes).unwrap_err());
    assert!(matches!(&e, GgufError::TensorOutOfBounds { name, .. } if name == "a"), "{e}");
    let mut w = GgufWriter::new().tensor("a", &[16], 0, data[..64].to_vec()).tensor("b", &[8], 0, data[..32].to_vec());
    w.tensors[1].offset = Some(32);
    let e = gguf_err(open(&w).unwrap_err());
    assert!(matches!(e, GgufError::OverlappingTensors { .. }), "{e}");
    let w = GgufWriter::new().tensor("a", &[8], 0, data[..32].to_vec()).tensor("a", &[8], 0, data[..32].to_vec());
    assert!(matches!(gguf_err(open(&w).unwrap_err()), GgufError::DuplicateTensor { .. }));
}

#[test]
fn unsupported_tensor_types_name_the_type_and_the_fix() {
    let mut rng = rng();
    let w = GgufWriter::new().tensor("k", &[256, 2], 12, random_bytes(&mut rng, 2 * 144)).tensor(
        "i32",
        &[4],
        26,
        random_bytes(&mut rng, 16),
    );
    let f = open(&w).unwrap();
    for (name, type_name) in [("k", "Q4_K"), ("i32", "I32")] {
        let e = f.tensor(name).unwrap_err();
        let message = e.to_string();
        assert!(matches!(&e, LoadError::Gguf { source: GgufError::UnsupportedTensorType { .. }, .. }), "{message}");
        assert!(message.contains(type_name) && message.contains("llama-quantize"), "{message}");
    }
    // The bytes are still there for whoever knows the type.
    assert_eq!(f.tensor_bytes("k").unwrap().len(), 288);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    /// Corrupting any bytes of a valid file gives a result or a typed error, never a panic, and
    /// whatever opens hands out tensors of the size its info says.
    #[test]
    fn corrupt_files_never_panic(
        seed in any::<u64>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..8),
    ) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let mut bytes = tiny_llama(&mut rng, true).meta("t", Value::strings(&["x", "yz"])).write().bytes;
        let header_len = bytes.len().min(2048);
        for (at, byte) in flips {
            bytes[at % header_len] = byte;
        }
        if let Ok(f) = GgufFile::from_bytes("fuzz.gguf", bytes) {
            let _ = f.config();
            for info in f.tensor_infos() {
                if let Ok(bytes) = f.tensor_bytes(&info.name) {
                    prop_assert_eq!(bytes.len() as u64, info.n_bytes);
                }
                let _ = f.tensor(&info.name);
            }
        }
    }
}
