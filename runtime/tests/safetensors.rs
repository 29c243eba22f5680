//! Hugging Face Llama checkpoints the test writes (safetensors files by hand, from the format
//! description, and a `config.json`): GGUF names and shapes, f16 / bf16 / f32 data, the Q/K row
//! permutation checked by what it is for — attention scores under Hugging Face's rotate-half RoPE
//! equal those under adjacent-pair RoPE, in f64 — tied heads, sharded checkpoints, and typed errors.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use half::{bf16, f16};
use kiln_runtime::model::safetensors::SafetensorsModel;
use kiln_runtime::model::tensor::{LoadError, TensorData, TensorSource};
use rand::{Rng, RngCore, SeedableRng};

const DIM: usize = 32;
const N_HEADS: usize = 4;
const N_KV_HEADS: usize = 2;
const HEAD_DIM: usize = DIM / N_HEADS;
const FFN: usize = 48;
const VOCAB: usize = 40;
const N_LAYERS: usize = 2;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dt {
    F16,
    BF16,
    F32,
}

impl Dt {
    fn name(self) -> &'static str {
        match self {
            Dt::F16 => "F16",
            Dt::BF16 => "BF16",
            Dt::F32 => "F32",
        }
    }

    fn bytes(self, values: &[f32]) -> Vec<u8> {
        match self {
            Dt::F16 => values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes()).collect(),
            Dt::BF16 => values.iter().flat_map(|&v| bf16::from_f32(v).to_le_bytes()).collect(),
            Dt::F32 => values.iter().flat_map(|&v| v.to_le_bytes()).collect(),
        }
    }

    /// The values as stored (rounded to the dtype), in f64.
    fn stored(self, values: &[f32]) -> Vec<f64> {
        match self {
            Dt::F16 => values.iter().map(|&v| f16::from_f32(v).to_f64()).collect(),
            Dt::BF16 => values.iter().map(|&v| bf16::from_f32(v).to_f64()).collect(),
            Dt::F32 => values.iter().map(|&v| v as f64).collect(),
        }
    }
}

/// A tensor of the checkpoint: HF name, HF shape (`[out, in]`), dtype name, raw bytes.
struct Tensor {
    name: String,
    shape: Vec<usize>,
    dtype: String,
    data: Vec<u8>,
}

/// Writes a safetensors file: 8-byte little-endian header length, JSON header, data.
fn write_safetensors(path: &Path, tensors: &[&Tensor]) {
    let mut header = serde_json::Map::new();
    let mut data = Vec::new();
    for t in tensors {
        let start = data.len();
        data.extend_from_slice(&t.data);
        header.insert(
            t.name.clone(),
            serde_json::json!({"dtype": t.dtype, "shape": t.shape, "data_offsets": [start, data.len()]}),
        );
    }
    header.insert("__metadata__".into(), serde_json::json!({"format": "pt"}));
    let mut json = serde_json::to_vec(&header).unwrap();
    while !json.len().is_multiple_of(8) {
        json.push(b' ');
    }
    let mut out = (json.len() as u64).to_le_bytes().to_vec();
    out.extend(json);
    out.extend(data);
    std::fs::write(path, out).unwrap();
}

/// A random tiny Llama checkpoint: values by HF name, so tests can compare.
struct Checkpoint {
    dtype: Dt,
    values: BTreeMap<String, (Vec<usize>, Vec<f32>)>,
    config: serde_json::Value,
}

impl Checkpoint {
    fn new(rng: &mut impl Rng, dtype: Dt, lm_head: bool) -> Checkpoint {
        let mut values = BTreeMap::new();
        let mut add = |name: String, shape: Vec<usize>| {
            let n = shape.iter().product();
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
            values.insert(name, (shape, v));
        };
        add("model.embed_tokens.weight".into(), vec![VOCAB, DIM]);
        add("model.norm.weight".into(), vec![DIM]);
        if lm_head {
            add("lm_head.weight".into(), vec![VOCAB, DIM]);
        }
        for i in 0..N_LAYERS {
            let p = format!("model.layers.{i}");
            add(format!("{p}.self_attn.q_proj.weight"), vec![DIM, DIM]);
            add(format!("{p}.self_attn.k_proj.weight"), vec![N_KV_HEADS * HEAD_DIM, DIM]);
            add(format!("{p}.self_attn.v_proj.weight"), vec![N_KV_HEADS * HEAD_DIM, DIM]);
            add(format!("{p}.self_attn.o_proj.weight"), vec![DIM, DIM]);
            add(format!("{p}.mlp.gate_proj.weight"), vec![FFN, DIM]);
            add(format!("{p}.mlp.up_proj.weight"), vec![FFN, DIM]);
            add(format!("{p}.mlp.down_proj.weight"), vec![DIM, FFN]);
            add(format!("{p}.input_layernorm.weight"), vec![DIM]);
            add(format!("{p}.post_attention_layernorm.weight"), vec![DIM]);
        }
        // Weights HF keeps but kiln does not use: ignored.
        add("model.layers.0.self_attn.rotary_emb.inv_freq".into(), vec![HEAD_DIM / 2]);
        let config = serde_json::json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": DIM,
            "intermediate_size": FFN,
            "num_hidden_layers": N_LAYERS,
            "num_attention_heads": N_HEADS,
            "num_key_value_heads": N_KV_HEADS,
            "vocab_size": VOCAB,
            "max_position_embeddings": 512,
            "rope_theta": 100000.0,
            "rms_norm_eps": 1e-5,
            "hidden_act": "silu",
            "tie_word_embeddings": !lm_head,
            "rope_scaling": null,
            "torch_dtype": "bfloat16",
        });
        Checkpoint { dtype, values, config }
    }

    fn tensors(&self) -> Vec<Tensor> {
        self.values
            .iter()
            .map(|(name, (shape, v))| Tensor {
                name: name.clone(),
                shape: shape.clone(),
                dtype: self.dtype.name().into(),
                data: self.dtype.bytes(v),
            })
            .collect()
    }

    /// Writes `model.safetensors` (or `shards` files and an index) and `config.json` into `dir`.
    fn write(&self, dir: &Path, shards: usize) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("config.json"), serde_json::to_string_pretty(&self.config).unwrap()).unwrap();
        let tensors = self.tensors();
        if shards == 1 {
            write_safetensors(&dir.join("model.safetensors"), &tensors.iter().collect::<Vec<_>>());
            return;
        }
        let mut weight_map = serde_json::Map::new();
        for s in 0..shards {
            let file = format!("model-{:05}-of-{shards:05}.safetensors", s + 1);
            let part: Vec<&Tensor> = tensors.iter().skip(s).step_by(shards).collect();
            for t in &part {
                weight_map.insert(t.name.clone(), file.clone().into());
            }
            write_safetensors(&dir.join(&file), &part);
        }
        let index = serde_json::json!({"metadata": {}, "weight_map": weight_map});
        std::fs::write(dir.join("model.safetensors.index.json"), index.to_string()).unwrap();
    }
}

struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kiln-safetensors-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn rng() -> rand::rngs::StdRng {
    let seed = rand::rng().next_u64();
    eprintln!("seed {seed}");
    rand::rngs::StdRng::seed_from_u64(seed)
}

fn f64s(data: &TensorData) -> Vec<f64> {
    match data {
        TensorData::F32(v) => v.iter().map(|&x| x as f64).collect(),
        TensorData::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
        TensorData::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
        other => panic!("unexpected {}", other.kind()),
    }
}

/// `W x` for a row-major `[out, in]` matrix.
fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    w.chunks_exact(x.len()).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

/// Hugging Face's RoPE on one head: element i pairs with i + head_dim/2.
fn rope_rotate_half(head: &[f64], pos: f64, base: f64) -> Vec<f64> {
    let half = head.len() / 2;
    let mut out = head.to_vec();
    for i in 0..half {
        let theta = pos * base.powf(-2.0 * i as f64 / head.len() as f64);
        let (s, c) = theta.sin_cos();
        out[i] = head[i] * c - head[i + half] * s;
        out[i + half] = head[i + half] * c + head[i] * s;
    }
    out
}

/// GGUF's RoPE on one head: element 2i pairs with 2i + 1.
fn rope_adjacent(head: &[f64], pos: f64, base: f64) -> Vec<f64> {
    let mut out = head.to_vec();
    for i in 0..head.len() / 2 {
        let theta = pos * base.powf(-2.0 * i as f64 / head.len() as f64);
        let (s, c) = theta.sin_cos();
        out[2 * i] = head[2 * i] * c - head[2 * i + 1] * s;
        out[2 * i + 1] = head[2 * i + 1] * c + head[2 * i] * s;
    }
    out
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn tensors_come_back_under_gguf_names_in_every_dtype() {
    let mut rng = rng();
    for (dtype, shards) in [(Dt::BF16, 1), (Dt::F16, 1), (Dt::F32, 1), (Dt::BF16, 3)] {
        let scratch = Scratch::new(&format!("names-{dtype:?}-{shards}"));
        let ckpt = Checkpoint::new(&mut rng, dtype, false);
        ckpt.write(&scratch.0, shards);
        let model = SafetensorsModel::open(&scratch.0).unwrap_or_else(|e| panic!("{e}"));
        let c = model.config().unwrap();
        assert_eq!(
            (c.n_layers, c.dim, c.ffn_dim, c.n_heads, c.n_kv_heads, c.head_dim, c.vocab_size, c.context_length),
            (N_LAYERS, DIM, FFN, N_HEADS, N_KV_HEADS, HEAD_DIM, VOCAB, 512)
        );
        assert_eq!((c.rope_base, c.rms_eps, c.tied_head), (100000.0, 1e-5, true));
        let unpermuted = [
            ("token_embd.weight", "model.embed_tokens.weight"),
            ("output_norm.weight", "model.norm.weight"),
            ("blk.1.attn_v.weight", "model.layers.1.self_attn.v_proj.weight"),
            ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight"),
            ("blk.1.ffn_gate.weight", "model.layers.1.mlp.gate_proj.weight"),
            ("blk.0.ffn_up.weight", "model.layers.0.mlp.up_proj.weight"),
            ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
            ("blk.0.attn_norm.weight", "model.layers.0.input_layernorm.weight"),
            ("blk.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight"),
        ];
        for (gguf, hf) in unpermuted {
            let t = model.tensor(gguf).unwrap();
            let (shape, values) = &ckpt.values[hf];
            let reversed: Vec<usize> = shape.iter().rev().copied().collect();
            assert_eq!(t.shape, reversed, "{gguf}");
            assert_eq!(t.data.kind(), dtype.name(), "{gguf}");
            assert_eq!(f64s(&t.data), dtype.stored(values), "{gguf}");
        }
        for name in ["output.weight", "blk.2.attn_q.weight", "blk.0.attn_qkv.weight", "rope_freqs.weight"] {
            assert!(matches!(model.tensor(name), Err(LoadError::MissingTensor { .. })), "{name}");
        }
    }
}

#[test]
fn permuted_q_and_k_give_the_same_attention_scores_under_adjacent_pair_rope() {
    let mut rng = rng();
    let scratch = Scratch::new("rope");
    let ckpt = Checkpoint::new(&mut rng, Dt::BF16, true);
    ckpt.write(&scratch.0, 1);
    let model = SafetensorsModel::open(&scratch.0).unwrap();
    let base = 100000.0;
    for layer in 0..N_LAYERS {
        let hf = |p: &str| Dt::BF16.stored(&ckpt.values[&format!("model.layers.{layer}.self_attn.{p}.weight")].1);
        let gguf = |t: &str| {
            let raw = model.tensor(&format!("blk.{layer}.{t}.weight")).unwrap();
            assert_eq!(raw.shape[0], DIM);
            f64s(&raw.data)
        };
        let (wq_hf, wk_hf, wq, wk) = (hf("q_proj"), hf("k_proj"), gguf("attn_q"), gguf("attn_k"));
        // The permutation reorders rows only: the same multiset of values.
        assert_ne!(wq, wq_hf);
        let (x_q, x_k): (Vec<f64>, Vec<f64>) = (
            (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect(),
            (0..DIM).map(|_| rng.random_range(-1.0..1.0)).collect(),
        );
        let (pos_q, pos_k) = (rng.random_range(0..500) as f64, rng.random_range(0..500) as f64);
        let (q_hf, k_hf, q, k) = (matvec(&wq_hf, &x_q), matvec(&wk_hf, &x_k), matvec(&wq, &x_q), matvec(&wk, &x_k));
        for h in 0..N_HEADS {
            let g = h / (N_HEADS / N_KV_HEADS);
            let heads = |v: &[f64], i: usize| v[i * HEAD_DIM..(i + 1) * HEAD_DIM].to_vec();
            let want =
                dot(&rope_rotate_half(&heads(&q_hf, h), pos_q, base), &rope_rotate_half(&heads(&k_hf, g), pos_k, base));
            let got = dot(&rope_adjacent(&heads(&q, h), pos_q, base), &rope_adjacent(&heads(&k, g), pos_k, base));
            assert!((want - got).abs() <= 1e-12 * want.abs().max(1.0), "layer {layer} head {h}: {want} vs {got}");
            // Without the permutation the scores differ: the test can fail.
            let unpermuted =
                dot(&rope_adjacent(&heads(&q_hf, h), pos_q, base), &rope_adjacent(&heads(&k_hf, g), pos_k, base));
            assert!((want - unpermuted).abs() > 1e-9, "layer {layer} head {h}");
        }
    }
}

#[test]
fn the_head_is_tied_unless_the_checkpoint_has_its_own() {
    let mut rng = rng();
    let scratch = Scratch::new("tied");
    let mut ckpt = Checkpoint::new(&mut rng, Dt::F16, true);
    ckpt.write(&scratch.0, 1);
    let model = SafetensorsModel::open(&scratch.0).unwrap();
    assert!(!model.config().unwrap().tied_head);
    let head = model.tensor("output.weight").unwrap();
    assert_eq!(head.shape, [DIM, VOCAB]);
    assert_eq!(f64s(&head.data), Dt::F16.stored(&ckpt.values["lm_head.weight"].1));
    // `tie_word_embeddings` wins over a stored `lm_head.weight`.
    ckpt.config["tie_word_embeddings"] = true.into();
    ckpt.write(&scratch.0, 1);
    let model = SafetensorsModel::open(&scratch.0).unwrap();
    assert!(model.config().unwrap().tied_head);
    assert!(matches!(model.tensor("output.weight"), Err(LoadError::MissingTensor { .. })));
    // A path to the weights file works as well as the directory.
    let model = SafetensorsModel::open(scratch.0.join("model.safetensors")).unwrap();
    assert!(model.config().unwrap().tied_head);
}

fn open_err(dir: &Path) -> String {
    match SafetensorsModel::open(dir) {
        Ok(_) => panic!("{} opened", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_checkpoints_are_typed_errors() {
    let mut rng = rng();
    let scratch = Scratch::new("bad");
    let base = Checkpoint::new(&mut rng, Dt::BF16, false);
    for (key, value, expect) in [
        ("model_type", serde_json::json!("mistral"), "model_type `mistral` is not supported"),
        ("rope_scaling", serde_json::json!({"rope_type": "llama3", "factor": 8.0}), "rope_scaling"),
        ("hidden_act", serde_json::json!("gelu"), "hidden_act `gelu`"),
        ("num_key_value_heads", serde_json::json!(3), "do not divide"),
        ("vocab_size", serde_json::json!(41), "model.embed_tokens.weight has shape"),
        ("head_dim", serde_json::json!(16), "head_dim"),
    ] {
        let mut ckpt = Checkpoint { dtype: base.dtype, values: base.values.clone(), config: base.config.clone() };
        ckpt.config[key] = value;
        ckpt.write(&scratch.0, 1);
        let e = open_err(&scratch.0);
        assert!(e.contains(expect), "{key}: {e}");
    }
    let mut ckpt = Checkpoint { dtype: base.dtype, values: base.values.clone(), config: base.config.clone() };
    ckpt.config.as_object_mut().unwrap().remove("hidden_size");
    ckpt.write(&scratch.0, 1);
    let e = open_err(&scratch.0);
    assert!(e.contains("missing field `hidden_size`") && e.contains("config.json"), "{e}");

    base.write(&scratch.0, 1);
    std::fs::remove_file(scratch.0.join("config.json")).unwrap();
    let e = open_err(&scratch.0);
    assert!(e.contains("config.json"), "{e}");

    base.write(&scratch.0, 1);
    let weights = scratch.0.join("model.safetensors");
    let bytes = std::fs::read(&weights).unwrap();
    for cut in [0, 7, 8, 40, bytes.len() - 1] {
        std::fs::write(&weights, &bytes[..cut]).unwrap();
        let e = open_err(&scratch.0);
        assert!(e.contains("not a valid safetensors file"), "cut at {cut}: {e}");
    }
    let e = open_err(&scratch.0.join("absent"));
    assert!(e.contains("absent"), "{e}");
}

#[test]
fn unsupported_dtypes_name_the_dtype() {
    let mut rng = rng();
    let scratch = Scratch::new("dtype");
    let ckpt = Checkpoint::new(&mut rng, Dt::BF16, false);
    ckpt.write(&scratch.0, 1);
    let mut tensors = ckpt.tensors();
    let q = tensors.iter_mut().find(|t| t.name == "model.layers.0.self_attn.q_proj.weight").unwrap();
    q.dtype = "I8".into();
    q.data.truncate(DIM * DIM);
    write_safetensors(&scratch.0.join("model.safetensors"), &tensors.iter().collect::<Vec<_>>());
    let model = SafetensorsModel::open(&scratch.0).unwrap();
    let e = model.tensor("blk.0.attn_q.weight").unwrap_err();
    assert!(matches!(e, LoadError::BadTensor { .. }), "{e}");
    assert!(e.to_string().contains("dtype I8 is not supported"), "{e}");
    assert!(model.tensor("blk.0.attn_k.weight").is_ok());
}
