//! `kiln bench-speculative`: on the same prompts, machine and run, target-only greedy decoding
//! (the baseline) and speculative greedy decoding with each draft source; per (prompt, source) the
//! acceptance rate, kept drafts per step, tokens/s and the speedup over the baseline. Greedy
//! speculative output must equal the baseline's token for token; each row says whether it did.

use super::accept::Greedy;
use super::adaptive::KPolicy;
use super::decode::{generate_speculative, SpecGeneration};
use super::draft::DraftSource;
use super::SpecError;
use crate::generate::{generate, GenerateOptions};
use crate::model::llama::LlamaModel;
use crate::model::sampling::SamplingParams;

/// A prompt of the benchmark.
#[derive(Clone, Debug)]
pub struct BenchPrompt {
    pub name: String,
    pub tokens: Vec<u32>,
}

/// One (prompt, source) of the benchmark.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SpecBenchRow {
    pub prompt: String,
    pub source: String,
    pub tokens: usize,
    pub steps: usize,
    pub acceptance_rate: f64,
    pub mean_accepted: f64,
    /// Median over the repeats.
    pub tokens_per_s: f64,
    pub baseline_tokens_per_s: f64,
    pub speedup: f64,
    /// The speculative tokens equal the baseline's (greedy decoding is lossless).
    pub same_as_baseline: bool,
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Runs the baseline and every source on every prompt, `repeats` times each (medians reported),
/// generating `max_tokens` tokens (past stop tokens: every run times the same number of tokens).
/// `policy` is the `k` policy each speculative run starts from; `calibration` receives its measured
/// verification costs (seconds per step of `k + 1` tokens, per `k`).
pub fn bench_speculative(
    model: &mut LlamaModel,
    calibration: &mut Vec<Option<f64>>,
    drafts: &mut [Box<dyn DraftSource>],
    prompts: &[BenchPrompt],
    max_tokens: usize,
    policy: &KPolicy,
    repeats: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<SpecBenchRow>, SpecError> {
    let options = GenerateOptions { max_tokens, sampling: SamplingParams::greedy(), stop: Vec::new() };
    // Every run starts from the same measured verification costs.
    let mut policy = policy.clone();
    if let Some(p) = prompts.first() {
        progress("measuring verification steps");
        policy.calibrate(model, &p.tokens)?;
    }
    *calibration = policy.verify_costs();
    let mut rows = Vec::new();
    for prompt in prompts {
        // Repeats interleave the baseline and the sources, so that a change in the machine's load
        // during the run falls on all of them alike.
        let mut baseline = (Vec::new(), Vec::new());
        let mut runs: Vec<(Vec<f64>, Option<SpecGeneration>)> = drafts.iter().map(|_| (Vec::new(), None)).collect();
        for _ in 0..repeats.max(1) {
            progress(&format!("{}: target only", prompt.name));
            let g = generate(model, &prompt.tokens, &options, &mut |_| Ok(()))?;
            baseline.0.push(g.decode_tok_s());
            baseline.1 = g.tokens;
            for (draft, run) in drafts.iter_mut().zip(runs.iter_mut()) {
                progress(&format!("{}: {}", prompt.name, draft.name()));
                let g = generate_speculative(
                    model,
                    draft.as_mut(),
                    Box::new(Greedy),
                    policy.clone(),
                    &prompt.tokens,
                    &options,
                    &mut |_| Ok(()),
                )?;
                run.0.push(g.tokens_per_s());
                run.1 = Some(g);
            }
        }
        let baseline_tokens_per_s = median(baseline.0);
        for (draft, (speeds, g)) in drafts.iter().zip(runs) {
            let g = g.ok_or_else(|| SpecError::Internal("no run".into()))?;
            let tokens_per_s = median(speeds);
            rows.push(SpecBenchRow {
                prompt: prompt.name.clone(),
                source: draft.name(),
                tokens: g.tokens.len(),
                steps: g.steps,
                acceptance_rate: g.acceptance_rate(),
                mean_accepted: g.mean_accepted(),
                tokens_per_s,
                baseline_tokens_per_s,
                speedup: tokens_per_s / baseline_tokens_per_s,
                same_as_baseline: g.tokens == baseline.1,
            });
        }
    }
    Ok(rows)
}
