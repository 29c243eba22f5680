//! Small random Llama models held in memory for the runtime tests: Q4_1 projections with
//! zero-mean rows and a Q8_0 tied embedding, made of random GGUF blocks, handed out through
//! [`TensorSource`] as a file reader would; and the shared CPU device.

#![allow(dead_code)]

use half::f16;
use kiln_runtime::cpu::CpuDevice;
use kiln_runtime::model::tensor::{LlamaConfig, LoadError, RawTensor, TensorData, TensorSource};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, OnceLock};

/// One CPU device for every test of the binary (its compiled kernels are shared).
pub fn device() -> Arc<CpuDevice> {
    static DEVICE: OnceLock<Arc<CpuDevice>> = OnceLock::new();
    DEVICE.get_or_init(|| Arc::new(CpuDevice::host(None).expect("CPU device"))).clone()
}

/// A model held in memory, as a file reader would hand it out.
pub struct MemSource {
    pub config: LlamaConfig,
    pub tensors: HashMap<String, RawTensor>,
}

impl TensorSource for MemSource {
    fn config(&self) -> Result<LlamaConfig, LoadError> {
        Ok(self.config.clone())
    }
    fn tensor(&self, name: &str) -> Result<RawTensor, LoadError> {
        self.tensors.get(name).cloned().ok_or_else(|| LoadError::MissingTensor { name: name.to_string() })
    }
}

/// Random Q4_1 blocks for a `[n, k]` weight: codes uniform, scales `d` drawn from `scales` (the
/// size real checkpoints have), `m ≈ −8·d` (a zero-mean row).
pub fn q4_1_blocks(rng: &mut StdRng, n: usize, k: usize, scales: Range<f32>) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n * k / 32 {
        let d: f32 = rng.random_range(scales.clone());
        let m = -8.0 * d * rng.random_range(0.8..1.2);
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend_from_slice(&f16::from_f32(m).to_le_bytes());
        out.extend((0..16).map(|_| rng.random::<u8>()));
    }
    out
}

/// Random Q4_0 blocks for a `[n, k]` weight: codes uniform (zero-mean rows, since Q4_0 subtracts
/// 8), scales `d` drawn from `scales`.
pub fn q4_0_blocks(rng: &mut StdRng, n: usize, k: usize, scales: Range<f32>) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n * k / 32 {
        let d: f32 = rng.random_range(scales.clone());
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend((0..16).map(|_| rng.random::<u8>()));
    }
    out
}

/// `src` with the projections `names` (`attn_q`, `ffn_up`, ...) of every layer replaced by random
/// Q4_0 tensors of the same shape, scales from `scales`.
pub fn with_q4_0(mut src: MemSource, names: &[&str], seed: u64, scales: Range<f32>) -> MemSource {
    let mut rng = StdRng::seed_from_u64(seed);
    for l in 0..src.config.n_layers {
        for what in names {
            let name = format!("blk.{l}.{what}.weight");
            if let Some(t) = src.tensors.get_mut(&name) {
                let (k, n) = (t.shape[0], t.shape[1]);
                t.data = TensorData::Q4_0(q4_0_blocks(&mut rng, n, k, scales.clone()));
            }
        }
    }
    src
}

/// Random Q8_0 blocks for a `[rows, cols]` tensor, scales of 0.005..0.02 times `scale`.
pub fn q8_0_blocks(rng: &mut StdRng, rows: usize, cols: usize, scale: f32) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..rows * cols / 32 {
        let d: f32 = rng.random_range(0.005..0.02) * scale;
        out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
        out.extend((0..32).map(|_| rng.random::<i8>() as u8));
    }
    out
}

/// A random model of config `c` from `seed`: Q4_1 projections with scales from `q4_scales`, a
/// Q8_0 embedding (the tied head) with scales times `embd_scale` (larger: more peaked next-token
/// distributions), norms in 0.5..1.5.
pub fn random_model(c: LlamaConfig, seed: u64, q4_scales: Range<f32>, embd_scale: f32) -> MemSource {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut tensors = HashMap::new();
    let mut add = |name: String, shape: Vec<usize>, data: TensorData| {
        tensors.insert(name.clone(), RawTensor { name, shape, data });
    };
    let embd = q8_0_blocks(&mut rng, c.vocab_size, c.dim, embd_scale);
    add("token_embd.weight".into(), vec![c.dim, c.vocab_size], TensorData::Q8_0(embd));
    let norm = |rng: &mut StdRng| TensorData::F32((0..c.dim).map(|_| rng.random_range(0.5..1.5)).collect());
    add("output_norm.weight".into(), vec![c.dim], norm(&mut rng));
    let (q_dim, kv_dim) = (c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim);
    for l in 0..c.n_layers {
        add(format!("blk.{l}.attn_norm.weight"), vec![c.dim], norm(&mut rng));
        add(format!("blk.{l}.ffn_norm.weight"), vec![c.dim], norm(&mut rng));
        for (what, n, k) in [
            ("attn_q", q_dim, c.dim),
            ("attn_k", kv_dim, c.dim),
            ("attn_v", kv_dim, c.dim),
            ("attn_output", c.dim, q_dim),
            ("ffn_gate", c.ffn_dim, c.dim),
            ("ffn_up", c.ffn_dim, c.dim),
            ("ffn_down", c.dim, c.ffn_dim),
        ] {
            let blocks = q4_1_blocks(&mut rng, n, k, q4_scales.clone());
            add(format!("blk.{l}.{what}.weight"), vec![k, n], TensorData::Q4_1(blocks));
        }
    }
    MemSource { config: c, tensors }
}
