//! An independent f64 reference of the Llama forward pass for the tests: it reads tensors from a
//! [`TensorSource`], dequantizes GGUF blocks itself (Q4_0, Q4_1, Q8_0, floats) in f64 one layer at
//! a time (so a real model never sits in memory as f64), and computes every position of a
//! sequence from position 0 with the Llama equations: RMSNorm, adjacent-pair RoPE, causal GQA
//! attention, SwiGLU, residuals, final norm and the (tied) head.

#![allow(dead_code)]

use half::{bf16, f16};
use kiln_runtime::model::tensor::{LlamaConfig, RawTensor, TensorData, TensorSource};

fn f16_at(b: &[u8], at: usize) -> f64 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f64()
}

/// A tensor in f64, row-major with GGUF's `shape[0]` fastest (a `[k, n]` weight is `n` rows of
/// `k`), from the GGUF block formats as ggml's `dequantize_row_*` defines them.
pub fn dequant(t: &RawTensor) -> Vec<f64> {
    match &t.data {
        TensorData::Q4_0(b) => b
            .chunks(18)
            .flat_map(|blk| {
                let d = f16_at(blk, 0);
                (0..32).map(move |j| {
                    let q = if j < 16 { blk[2 + j] & 0xF } else { blk[2 + j - 16] >> 4 };
                    (f64::from(q) - 8.0) * d
                })
            })
            .collect(),
        TensorData::Q4_1(b) => b
            .chunks(20)
            .flat_map(|blk| {
                let (d, m) = (f16_at(blk, 0), f16_at(blk, 2));
                (0..32).map(move |j| {
                    let q = if j < 16 { blk[4 + j] & 0xF } else { blk[4 + j - 16] >> 4 };
                    f64::from(q) * d + m
                })
            })
            .collect(),
        TensorData::Q8_0(b) => b
            .chunks(34)
            .flat_map(|blk| {
                let d = f16_at(blk, 0);
                (0..32).map(move |j| f64::from(blk[2 + j] as i8) * d)
            })
            .collect(),
        TensorData::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
        TensorData::F16(v) => v.iter().map(|&x| x.to_f64()).collect(),
        TensorData::BF16(v) => v.iter().map(|&x: &bf16| x.to_f64()).collect(),
    }
}

pub fn matvec(w: &[f64], x: &[f64]) -> Vec<f64> {
    w.chunks(x.len()).map(|row| row.iter().zip(x).map(|(a, b)| a * b).sum()).collect()
}

fn rmsnorm(x: &[f64], w: &[f64], eps: f64) -> Vec<f64> {
    let ms = x.iter().map(|v| v * v).sum::<f64>() / x.len() as f64;
    let r = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * r * g).collect()
}

fn rope(c: &LlamaConfig, v: &mut [f64], pos: usize) {
    let hd = c.head_dim;
    for head in v.chunks_mut(hd) {
        for i in 0..hd / 2 {
            let theta = pos as f64 * c.rope_base.powf(-(2.0 * i as f64) / hd as f64);
            let (x0, x1) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = x0 * theta.cos() - x1 * theta.sin();
            head[2 * i + 1] = x0 * theta.sin() + x1 * theta.cos();
        }
    }
}

/// Logits of the positions `wanted` (indices into `tokens`) of the sequence `tokens` from
/// position 0, each `[vocab]`.
pub fn reference_logits(src: &dyn TensorSource, tokens: &[u32], wanted: &[usize]) -> Vec<Vec<f64>> {
    let c = src.config().unwrap();
    let (dim, hd) = (c.dim, c.head_dim);
    let t = |name: &str| dequant(&src.tensor(name).unwrap());
    let emb = t("token_embd.weight");
    let mut xs: Vec<Vec<f64>> = tokens.iter().map(|&t| emb[t as usize * dim..][..dim].to_vec()).collect();
    for l in 0..c.n_layers {
        let w = |n: &str| t(&format!("blk.{l}.{n}.weight"));
        let (attn_norm, ffn_norm) = (w("attn_norm"), w("ffn_norm"));
        let (wq, wk, wv, wo) = (w("attn_q"), w("attn_k"), w("attn_v"), w("attn_output"));
        let (wg, wu, wd) = (w("ffn_gate"), w("ffn_up"), w("ffn_down"));
        let (mut qs, mut ks, mut vs) = (Vec::new(), Vec::new(), Vec::new());
        for (pos, x) in xs.iter().enumerate() {
            let h = rmsnorm(x, &attn_norm, c.rms_eps);
            let (mut q, mut k) = (matvec(&wq, &h), matvec(&wk, &h));
            rope(&c, &mut q, pos);
            rope(&c, &mut k, pos);
            qs.push(q);
            ks.push(k);
            vs.push(matvec(&wv, &h));
        }
        for (pos, x) in xs.iter_mut().enumerate() {
            let mut attn = vec![0.0; c.n_heads * hd];
            for h in 0..c.n_heads {
                let kvh = h / (c.n_heads / c.n_kv_heads);
                let q = &qs[pos][h * hd..][..hd];
                let scores: Vec<f64> = (0..=pos)
                    .map(|p| {
                        q.iter().zip(&ks[p][kvh * hd..][..hd]).map(|(a, b)| a * b).sum::<f64>() / (hd as f64).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let e: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for (p, ep) in e.iter().enumerate() {
                    for d in 0..hd {
                        attn[h * hd + d] += ep / total * vs[p][kvh * hd + d];
                    }
                }
            }
            let o = matvec(&wo, &attn);
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += b);
            let h = rmsnorm(x, &ffn_norm, c.rms_eps);
            let (g, u) = (matvec(&wg, &h), matvec(&wu, &h));
            let a: Vec<f64> = g.iter().zip(&u).map(|(g, u)| g / (1.0 + (-g).exp()) * u).collect();
            let d = matvec(&wd, &a);
            x.iter_mut().zip(&d).for_each(|(a, b)| *a += b);
        }
    }
    let out_norm = t("output_norm.weight");
    let head = if c.tied_head { emb } else { t("output.weight") };
    wanted.iter().map(|&p| matvec(&head, &rmsnorm(&xs[p], &out_norm, c.rms_eps))).collect()
}

/// ‖got − want‖ / ‖want‖ over all rows; fails on non-finite values or a length mismatch.
pub fn rel_error(got: &[f32], want: &[Vec<f64>]) -> f64 {
    let want: Vec<f64> = want.iter().flatten().copied().collect();
    assert_eq!(got.len(), want.len(), "logit count");
    assert!(got.iter().all(|v| v.is_finite()), "non-finite logits");
    let err: f64 = got.iter().zip(&want).map(|(g, w)| (f64::from(*g) - w).powi(2)).sum();
    let norm: f64 = want.iter().map(|w| w * w).sum();
    (err / norm).sqrt()
}
