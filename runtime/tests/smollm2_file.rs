//! The real SmolLM2-135M-Instruct GGUF (fetched, or found in the cache) read by the GGUF reader:
//! the configuration, every tensor's type and shape, and the data of a norm and a quantized block
//! checked against the bytes of the file read independently here.

use kiln_runtime::model::fetch;
use kiln_runtime::model::gguf::GgufFile;
use kiln_runtime::model::tensor::{LlamaConfig, TensorData, TensorSource};

fn open() -> GgufFile {
    let path = fetch::smollm2().unwrap_or_else(|e| panic!("this test needs SmolLM2: {e}"));
    GgufFile::open(path).unwrap_or_else(|e| panic!("{e}"))
}

#[test]
fn config_and_tensors_are_the_published_ones() {
    let f = open();
    assert_eq!(
        f.config().unwrap(),
        LlamaConfig {
            n_layers: 30,
            dim: 576,
            ffn_dim: 1536,
            n_heads: 9,
            n_kv_heads: 3,
            head_dim: 64,
            vocab_size: 49152,
            context_length: 8192,
            rope_base: 100000.0,
            rms_eps: f32::from_bits(1e-5f32.to_bits()) as f64,
            tied_head: true,
        }
    );
    assert_eq!(f.tensor_infos().len(), 272);
    assert_eq!(f.alignment(), 32);
    let kind = |name: &str| {
        let info = f.tensor_info(name).unwrap_or_else(|| panic!("no {name}"));
        (info.ggml_type.name(), info.shape.clone())
    };
    assert_eq!(kind("token_embd.weight"), ("Q8_0".into(), vec![576, 49152]));
    assert_eq!(kind("output_norm.weight"), ("F32".into(), vec![576]));
    assert!(f.tensor_info("output.weight").is_none());
    for i in 0..30 {
        let layer = |t: &str| kind(&format!("blk.{i}.{t}.weight"));
        assert_eq!(layer("attn_q"), ("Q4_1".into(), vec![576, 576]));
        assert_eq!(layer("attn_k"), ("Q4_1".into(), vec![576, 192]));
        assert_eq!(layer("attn_v"), ("Q4_1".into(), vec![576, 192]));
        assert_eq!(layer("attn_output"), ("Q4_1".into(), vec![576, 576]));
        assert_eq!(layer("ffn_gate"), ("Q4_1".into(), vec![576, 1536]));
        assert_eq!(layer("ffn_up"), ("Q4_1".into(), vec![576, 1536]));
        assert_eq!(layer("ffn_down"), ("Q4_1".into(), vec![1536, 576]));
        assert_eq!(layer("attn_norm"), ("F32".into(), vec![576]));
        assert_eq!(layer("ffn_norm"), ("F32".into(), vec![576]));
    }
    assert_eq!(f.require_str("tokenizer.ggml.pre").unwrap(), "smollm");
}

#[test]
fn tensor_data_is_the_bytes_of_the_file() {
    let f = open();
    let bytes = std::fs::read(f.path()).unwrap();
    // llama.cpp pads every tensor's data to the alignment, the last one included, so the data
    // section starts at the file's end less the padded extent of the last tensor.
    let last = f.tensor_infos().iter().max_by_key(|t| t.offset).unwrap();
    let data_start = bytes.len() as u64 - (last.offset + last.n_bytes).div_ceil(32) * 32;
    assert_eq!(data_start % 32, 0);
    for info in f.tensor_infos() {
        let start = (data_start + info.offset) as usize;
        assert!(f.tensor_bytes(&info.name).unwrap() == &bytes[start..start + info.n_bytes as usize], "{}", info.name);
    }
    let norm = f.tensor("blk.0.attn_norm.weight").unwrap();
    let TensorData::F32(values) = &norm.data else { panic!("{}", norm.data.kind()) };
    assert_eq!(values.len(), 576);
    // RMSNorm weights of a trained model: finite, positive on average, not all equal.
    assert!(values.iter().all(|v| v.is_finite()));
    assert!(values.iter().sum::<f32>() > 0.0);
    assert!(values.iter().any(|&v| v != values[0]));
    let q = f.tensor("blk.3.attn_q.weight").unwrap();
    let TensorData::Q4_1(blocks) = &q.data else { panic!("{}", q.data.kind()) };
    assert_eq!(blocks.len(), 576 * 576 / 32 * 20);
    // Each Q4_1 block starts with an f16 scale and an f16 minimum: finite, scale positive.
    for block in blocks.chunks_exact(20).step_by(97) {
        let d = half::f16::from_le_bytes([block[0], block[1]]).to_f32();
        let m = half::f16::from_le_bytes([block[2], block[3]]).to_f32();
        assert!(d.is_finite() && d >= 0.0 && m.is_finite(), "d {d} m {m}");
    }
}
