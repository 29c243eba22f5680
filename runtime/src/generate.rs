//! The generation loop: prefill a prompt, then sample and feed back one token at a time, timing
//! both phases. Used by `kiln generate`; speculative decoding builds on [`Generator`]'s
//! `feed` / `rollback` (score several tokens in one step, roll back the rejected ones).
//!
//! Text is not this module's business: callers turn text into ids and stream ids back into text
//! through the `on_token` callback, so the loop works with any tokenizer.

use crate::model::kv_cache::SeqId;
use crate::model::llama::{LlamaModel, Logits, ModelError, SeqInput};
use crate::model::sampling::{SampleError, Sampler, SamplingParams};
use std::time::{Duration, Instant};

/// Why generation stopped early.
#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sample(#[from] SampleError),
    #[error("the prompt is empty; give at least one token")]
    EmptyPrompt,
    #[error(
        "the prompt has {prompt} tokens and {max_tokens} more were asked for, but the model was built for \
         {max_seq_len} tokens per sequence; shorten the prompt or lower --max-tokens"
    )]
    TooLong { prompt: usize, max_tokens: usize, max_seq_len: usize },
    /// The caller's token callback failed (e.g. writing to a closed pipe).
    #[error("{0}")]
    Callback(String),
}

/// One sequence being generated: its cache sequence, sampler and the logits of its last token.
pub struct Generator<'m> {
    model: &'m mut LlamaModel,
    seq: SeqId,
    sampler: Sampler,
    /// Logits of the last fed token (`None` before the prompt).
    last: Option<Vec<f32>>,
    /// Tokens the sequence holds (prompt and generated).
    pub tokens: Vec<u32>,
}

impl<'m> Generator<'m> {
    pub fn new(model: &'m mut LlamaModel, params: SamplingParams) -> Result<Generator<'m>, GenerateError> {
        let sampler = Sampler::new(params)?;
        let seq = model.add_sequence();
        Ok(Generator { model, seq, sampler, last: None, tokens: Vec::new() })
    }

    pub fn seq(&self) -> SeqId {
        self.seq
    }

    /// Runs `tokens` through the model (a prompt, or tokens already chosen) and keeps the logits
    /// of the last one.
    pub fn feed(&mut self, tokens: &[u32]) -> Result<(), GenerateError> {
        let out = self.model.step(&[SeqInput { seq: self.seq, tokens, logits: Logits::Last }])?;
        self.last = out.into_iter().next();
        self.tokens.extend_from_slice(tokens);
        Ok(())
    }

    /// Samples the next token from the last fed token's logits (it is not fed yet).
    pub fn sample(&mut self) -> Result<u32, GenerateError> {
        let logits = self.last.as_deref().ok_or(GenerateError::EmptyPrompt)?;
        Ok(self.sampler.sample(logits)?)
    }

    /// Forgets the last `n` tokens (their cache slots are released); the next `feed` continues
    /// from there. The kept logits are dropped: feed a token before sampling again.
    pub fn rollback(&mut self, n: usize) -> Result<(), GenerateError> {
        self.model.truncate(self.seq, n)?;
        self.tokens.truncate(self.tokens.len().saturating_sub(n));
        self.last = None;
        Ok(())
    }
}

impl Drop for Generator<'_> {
    fn drop(&mut self) {
        // The sequence exists until here, so freeing cannot fail; nothing to report in a drop.
        let _ = self.model.free_sequence(self.seq);
    }
}

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateOptions {
    /// Most tokens to generate (the stop token included).
    pub max_tokens: usize,
    pub sampling: SamplingParams,
    /// Tokens that end generation (kept in the output).
    pub stop: Vec<u32>,
}

/// A finished generation with its timings.
#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub prompt_tokens: Vec<u32>,
    pub tokens: Vec<u32>,
    /// The prompt's step (its logits give the first generated token).
    pub prefill: Duration,
    /// The steps of the generated tokens but the last (which is not fed back).
    pub decode: Duration,
    pub decode_steps: usize,
}

impl Generation {
    pub fn prefill_tok_s(&self) -> f64 {
        self.prompt_tokens.len() as f64 / self.prefill.as_secs_f64().max(1e-9)
    }

    /// Decode tokens per second; 0 when nothing was decoded.
    pub fn decode_tok_s(&self) -> f64 {
        if self.decode_steps == 0 {
            0.0
        } else {
            self.decode_steps as f64 / self.decode.as_secs_f64().max(1e-9)
        }
    }
}

/// Generates up to `options.max_tokens` tokens after `prompt`, calling `on_token` with each as it
/// is chosen. Plans for the prompt's and decode's step shapes are built before the clock starts.
pub fn generate(
    model: &mut LlamaModel,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<(), String>,
) -> Result<Generation, GenerateError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt);
    }
    let max_seq_len = model.options.max_seq_len;
    if prompt.len() + options.max_tokens > max_seq_len {
        return Err(GenerateError::TooLong { prompt: prompt.len(), max_tokens: options.max_tokens, max_seq_len });
    }
    model.prepare(&[prompt.len()])?;
    model.prepare(&[1])?;
    let mut g = Generator::new(model, options.sampling)?;
    let start = Instant::now();
    g.feed(prompt)?;
    let prefill = start.elapsed();
    let mut tokens = Vec::new();
    let mut decode = Duration::ZERO;
    let mut decode_steps = 0;
    while tokens.len() < options.max_tokens {
        let next = g.sample()?;
        tokens.push(next);
        on_token(next).map_err(GenerateError::Callback)?;
        if options.stop.contains(&next) || tokens.len() == options.max_tokens {
            break;
        }
        let t = Instant::now();
        g.feed(&[next])?;
        decode += t.elapsed();
        decode_steps += 1;
    }
    Ok(Generation { prompt_tokens: prompt.to_vec(), tokens, prefill, decode, decode_steps })
}

/// Figures of `kiln bench-generate`.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GenerateBench {
    /// `cpu, N threads` or the GPU (`cuda:0 NVIDIA H100 ...`).
    pub device: String,
    pub threads: usize,
    pub read_gbps: f64,
    /// Decode at batch 1: median seconds per token over the timed steps.
    pub decode_step_ms: f64,
    pub decode_tok_s: f64,
    /// Bytes one decode token reads: every weight once plus the K/V of its context (mean over the
    /// timed steps).
    pub decode_bytes_per_token: u64,
    /// `bytes per token / read bandwidth` over the median step time.
    pub decode_roofline_frac: f64,
    pub decode_context: usize,
    pub launches_per_token: usize,
    /// Median time of one launch of a tiny kernel of one program, which runs on the leader
    /// alone: the floor a launch costs.
    pub launch_overhead_us: f64,
    /// The same with a program per thread, through the worker pool: the floor of a launch that
    /// splits its work (every projection of a step), hand-offs between cores included.
    pub pooled_launch_overhead_us: f64,
    /// [`crate::bench::core_round_trip_ns`] right after the timed decode steps: which placement
    /// of the threads the host gave this run.
    pub core_round_trip_ns: Option<f64>,
    /// [`crate::bench::core_round_trip_ns`] right after the roofline (`read_gbps`) was measured,
    /// set by the caller that measured it: far from `core_round_trip_ns`
    /// ([`crate::bench::phase_changed`]), `decode_roofline_frac` mixes two phases of the host.
    pub roofline_round_trip_ns: Option<f64>,
    pub prefill_tokens: usize,
    pub prefill_ms: f64,
    pub prefill_tok_s: f64,
    /// Where a decode step's time goes: (IR kernel, launches, ms, GB/s of weights read, programs
    /// per launch), per kernel and grid size, slowest first; the GB/s over `read_gbps` is how
    /// close the kernel comes to the memory roofline.
    pub decode_profile: Vec<ProfileRow>,
    /// The same for a pass of the prefill.
    pub prefill_profile: Vec<ProfileRow>,
}

/// A profile entry of [`GenerateBench`]: (IR kernel, launches, ms, GB/s of weights read, programs
/// per launch).
pub type ProfileRow = (String, usize, f64, f64, u64);

/// Decode tokens/s at batch 1 against the memory roofline, and prefill tokens/s for a prompt of
/// `prefill_tokens` tokens (random ids from `seed`), on `model`'s device.
pub fn bench_generate(
    model: &mut LlamaModel,
    roofline: &crate::bench::Roofline,
    prefill_tokens: usize,
    decode_tokens: usize,
    seed: u64,
) -> Result<GenerateBench, GenerateError> {
    use rand::{Rng, SeedableRng};
    let vocab = model.config.vocab_size as u32;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut random = |n: usize| (0..n).map(|_| rng.random_range(0..vocab)).collect::<Vec<u32>>();
    let max = model.options.max_seq_len;
    let context = 64.min(max.saturating_sub(decode_tokens + 1)).max(1);
    if prefill_tokens > max || context + decode_tokens > max {
        return Err(GenerateError::TooLong {
            prompt: prefill_tokens.max(context),
            max_tokens: decode_tokens,
            max_seq_len: max,
        });
    }

    // Decode: a short prompt, a few untimed steps, then the timed ones.
    model.prepare(&[context])?;
    model.prepare(&[1])?;
    let mut steps = Vec::with_capacity(decode_tokens);
    let context_before;
    {
        let mut g = Generator::new(model, SamplingParams::greedy())?;
        g.feed(&random(context))?;
        for _ in 0..3 {
            let next = g.sample()?;
            g.feed(&[next])?;
        }
        context_before = g.tokens.len();
        for _ in 0..decode_tokens {
            let next = g.sample()?;
            let t = Instant::now();
            g.feed(&[next])?;
            steps.push(t.elapsed().as_secs_f64());
        }
    }
    let core_round_trip_ns = crate::bench::core_round_trip_ns();
    let step = median(&mut steps);
    let mean_context = context_before + decode_tokens / 2;
    let bytes = model.weight_bytes() + model.kv_bytes_per_token() * mean_context as u64;
    let launches = model.launch_count(1, 1);
    let launch_overhead_us = model.launch_overhead(1)? * 1e6;
    let pooled_launch_overhead_us = model.launch_overhead(model.threads())? * 1e6;
    let decode_profile = model.profile_decode()?.into_iter().map(profile_row).collect::<Vec<_>>();

    // Prefill: the whole prompt in one step, a fresh sequence each time.
    model.prepare(&[prefill_tokens])?;
    let mut prefill = Vec::new();
    for _ in 0..3 {
        let prompt = random(prefill_tokens);
        let mut g = Generator::new(model, SamplingParams::greedy())?;
        let t = Instant::now();
        g.feed(&prompt)?;
        prefill.push(t.elapsed().as_secs_f64());
    }
    let prefill_s = median(&mut prefill);
    let (lanes, q_len) =
        (prefill_tokens.div_ceil(16).min(model.options.max_step_tokens / 16).max(1), 16.min(prefill_tokens));
    let prefill_profile = model.profile(lanes, q_len)?.into_iter().map(profile_row).collect::<Vec<_>>();
    Ok(GenerateBench {
        device: model.device().name(),
        threads: model.threads(),
        read_gbps: roofline.gbps,
        decode_step_ms: step * 1e3,
        decode_tok_s: 1.0 / step,
        decode_bytes_per_token: bytes,
        decode_roofline_frac: bytes as f64 / (roofline.gbps * 1e9) / step,
        decode_context: mean_context,
        launches_per_token: launches,
        launch_overhead_us,
        pooled_launch_overhead_us,
        core_round_trip_ns,
        roofline_round_trip_ns: None,
        prefill_tokens,
        prefill_ms: prefill_s * 1e3,
        prefill_tok_s: prefill_tokens as f64 / prefill_s,
        decode_profile,
        prefill_profile,
    })
}

/// (kernel, launches, ms, GB/s of weights read, programs per launch) of a profile entry.
fn profile_row(p: crate::model::llama::KernelProfile) -> ProfileRow {
    let gbps = if p.seconds > 0.0 { p.weight_bytes as f64 / p.seconds / 1e9 } else { 0.0 };
    (p.kernel, p.launches, p.seconds * 1e3, gbps, p.programs)
}

fn median(xs: &mut [f64]) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
}
