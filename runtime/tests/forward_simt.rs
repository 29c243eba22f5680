//! The Llama forward pass on the CUDA path, run by the SIMT simulator: every launch lowered to PTX
//! with the GPU's default configs, specialised and packed as a GPU launch is, its buffer
//! arguments views (address + offset) of device copies of the model's store buffers, the step's
//! metadata uploaded and the logits downloaded as on a GPU. Against the same independent f64
//! reference forward as `forward.rs`, on a small random model (the simulator runs every thread
//! of every block on the host).

use kiln_autotune::lookup::Defaults;
use kiln_codegen::ptx::{PtxOptions, Sm};
use kiln_kernels::q8::gemv_i8::ActQuant;
use kiln_runtime::model::device::ModelDevice;
use kiln_runtime::model::llama::{LlamaModel, Logits, ModelOptions, SeqInput};
use kiln_runtime::model::tensor::LlamaConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

mod common;
use common::random_model::MemSource;
use common::reference::{reference_logits, rel_error};

fn config() -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        dim: 128,
        ffn_dim: 192,
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 64,
        vocab_size: 160,
        context_length: 64,
        rope_base: 1e5,
        rms_eps: 1e-5,
        tied_head: true,
    }
}

/// As in `forward.rs`: f32 activations and cache against f64, two layers.
const TOLERANCE: f64 = 2e-5;

fn simt() -> ModelDevice {
    ModelDevice::Simt(PtxOptions::new(Sm::Sm90).with_warps(4))
}

fn model(src: &MemSource, options: ModelOptions) -> LlamaModel {
    let options = ModelOptions { max_seq_len: 32, kv_blocks: Some(8), max_step_tokens: 32, ..options };
    LlamaModel::load(src, simt(), Arc::new(Defaults::gpu()), options).expect("model loads on the simulator")
}

fn random_tokens(rng: &mut StdRng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.random_range(0..160)).collect()
}

#[test]
fn prefill_and_decode_on_the_cuda_path_match_the_f64_reference() {
    let src = common::random_model::random_model(config(), 5, 0.01..0.04, 1.0);
    let mut m = model(&src, ModelOptions { head_activations: ActQuant::F32, ..ModelOptions::default() });
    let mut rng = StdRng::seed_from_u64(55);
    let mut tokens = random_tokens(&mut rng, 19);
    let seq = m.add_sequence();
    // 19 tokens: lanes of 16 and 3 (front-padded) in one pass.
    let out = m.step(&[SeqInput { seq, tokens: &tokens, logits: Logits::All }]).unwrap();
    let positions: Vec<usize> = (0..tokens.len()).collect();
    let err = rel_error(&out[0], &reference_logits(&src, &tokens, &positions));
    assert!(err < TOLERANCE, "prefill logits: relative error {err:.3e}");
    for _ in 0..2 {
        let next = rng.random_range(0..160);
        tokens.push(next);
        let out = m.step(&[SeqInput { seq, tokens: &[next], logits: Logits::Last }]).unwrap();
        let err = rel_error(&out[0], &reference_logits(&src, &tokens, &[tokens.len() - 1]));
        assert!(err < TOLERANCE, "decode logits at {}: relative error {err:.3e}", tokens.len());
    }
}

/// Sequences of different lengths in one step: the metadata of each pass reaches the device
/// before its launches, the rows of the sequences' last tokens are gathered for the head (read
/// back from the device, written to `head_x`, uploaded), and the cache written by earlier steps
/// stays on the device between steps. Against the reference, and the CPU device on the same
/// steps agrees.
#[test]
fn a_batch_of_different_lengths_on_the_cuda_path_matches_the_reference_and_the_cpu() {
    let src = common::random_model::random_model(config(), 6, 0.01..0.04, 1.0);
    let exact = ModelOptions { head_activations: ActQuant::F32, ..ModelOptions::default() };
    let mut m = model(&src, exact.clone());
    let mut cpu = LlamaModel::load(
        &src,
        common::random_model::device(),
        Arc::new(Defaults::cpu()),
        ModelOptions { max_seq_len: 32, kv_blocks: Some(8), max_step_tokens: 32, ..exact },
    )
    .unwrap();
    let mut rng = StdRng::seed_from_u64(66);
    let prompts: Vec<Vec<u32>> = [3, 18, 1].iter().map(|&n| random_tokens(&mut rng, n)).collect();
    let next: Vec<u32> = random_tokens(&mut rng, 3);
    let mut results = Vec::new();
    for model in [&mut m, &mut cpu] {
        let seqs: Vec<_> = (0..3).map(|_| model.add_sequence()).collect();
        let first = model
            .step(&[
                SeqInput { seq: seqs[0], tokens: &prompts[0], logits: Logits::Last },
                SeqInput { seq: seqs[1], tokens: &prompts[1], logits: Logits::Last },
            ])
            .unwrap();
        let mixed = model
            .step(&[
                SeqInput { seq: seqs[2], tokens: &prompts[2], logits: Logits::Last },
                SeqInput { seq: seqs[1], tokens: &next[1..2], logits: Logits::Last },
                SeqInput { seq: seqs[0], tokens: &next[..1], logits: Logits::Last },
            ])
            .unwrap();
        let last = model.step(&[SeqInput { seq: seqs[2], tokens: &next[2..], logits: Logits::Last }]).unwrap();
        results.push([
            first[0].clone(),
            first[1].clone(),
            mixed[2].clone(),
            mixed[1].clone(),
            mixed[0].clone(),
            last[0].clone(),
        ]);
    }
    let (gpu, cpu) = (&results[0], &results[1]);
    // (sequence, tokens it had seen) for each row above.
    let seen = [(0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1)];
    for (row, &(s, extra)) in seen.iter().enumerate() {
        let mut toks = prompts[s].clone();
        toks.extend_from_slice(&next[s..s + extra]);
        let want = reference_logits(&src, &toks, &[toks.len() - 1]);
        let err = rel_error(&gpu[row], &want);
        assert!(err < TOLERANCE, "row {row} (sequence {s}): relative error {err:.3e} against the reference");
        let on_cpu = vec![cpu[row].iter().map(|&x| f64::from(x)).collect::<Vec<f64>>()];
        let err = rel_error(&gpu[row], &on_cpu);
        assert!(err < TOLERANCE, "row {row} (sequence {s}): simulator and CPU differ by {err:.3e}");
    }
}

/// The default options on the CUDA path: the integer head (`q8_gemv xq=i8x2`) for decode tokens
/// and the GPU's default configs for every kernel, none of them a CPU-only layout.
#[test]
fn the_default_options_on_the_cuda_path_stay_within_the_integer_heads_bound() {
    const HEAD_TOLERANCE: f64 = 1e-4;
    let src = common::random_model::random_model(config(), 7, 0.01..0.04, 1.0);
    let mut m = model(&src, ModelOptions::default());
    let mut rng = StdRng::seed_from_u64(77);
    let mut tokens = random_tokens(&mut rng, 9);
    let seq = m.add_sequence();
    m.step(&[SeqInput { seq, tokens: &tokens, logits: Logits::Last }]).unwrap();
    let mut errors = Vec::new();
    for _ in 0..3 {
        let next = rng.random_range(0..160);
        tokens.push(next);
        let out = m.step(&[SeqInput { seq, tokens: &[next], logits: Logits::Last }]).unwrap();
        errors.push(rel_error(&out[0], &reference_logits(&src, &tokens, &[tokens.len() - 1])));
    }
    assert!(errors.iter().all(|&e| e < HEAD_TOLERANCE), "decode logits: relative errors {errors:?}");
    assert!(errors.iter().any(|&e| e > 5e-7), "the integer head errs by nothing: {errors:?}");
    let chosen = m.chosen_configs();
    assert!(chosen.iter().any(|c| c.problem.get("xq") == Some("i8x2")));
    for c in chosen {
        for cpu_only in ["row_loop", "weights_lhs"] {
            assert!(
                c.config.get(cpu_only).is_none_or(|v| v == "0"),
                "{} {}: the GPU path chose {cpu_only} ({})",
                c.kernel,
                c.problem,
                c.config
            );
        }
    }
    assert_eq!(m.device().name(), "simt (sm_90)");
}
