//! The speculative generation loop: [`Speculator`] runs one sequence step by step (prefill, then
//! draft → verify → accept → roll back), and [`generate_speculative`] drives it with timings, the
//! stop tokens and the token callback, as [`crate::generate::generate`] does for target-only
//! decoding.
//!
//! A step verifies `[x, d1 … dk]` in one [`LlamaModel::step`] with logits for every position
//! (`attention_decode_paged` with `q_len = k + 1`, causal among the new tokens), so `k` is at most
//! [`MAX_Q_LEN`] − 1; the step shapes of every `k` are built before the clock starts.

use super::accept::AcceptanceRule;
use super::adaptive::KPolicy;
use super::draft::DraftSource;
use super::SpecError;
use crate::generate::{GenerateError, GenerateOptions};
use crate::model::kv_cache::SeqId;
use crate::model::llama::{LlamaModel, Logits, SeqInput, MAX_Q_LEN};
use crate::model::sampling::SamplingParams;
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::time::{Duration, Instant};

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    pub proposed: usize,
    pub accepted: usize,
    /// The kept drafts and the target's own token, in order.
    pub tokens: Vec<u32>,
    pub draft_secs: f64,
    pub verify_secs: f64,
}

/// One sequence under speculative decoding.
pub struct Speculator<'a> {
    model: &'a mut LlamaModel,
    draft: &'a mut dyn DraftSource,
    rule: Box<dyn AcceptanceRule>,
    pub policy: KPolicy,
    sampling: SamplingParams,
    /// Draws of the draft's own sampling (the rule has its own generator).
    rng: StdRng,
    seq: SeqId,
    /// Committed tokens: the prompt and everything generated.
    pub tokens: Vec<u32>,
    /// Seconds the last commit of the draft took (part of the next step's draft cost).
    commit_secs: f64,
}

impl<'a> Speculator<'a> {
    pub fn new(
        model: &'a mut LlamaModel,
        draft: &'a mut dyn DraftSource,
        rule: Box<dyn AcceptanceRule>,
        policy: KPolicy,
        sampling: SamplingParams,
    ) -> Result<Speculator<'a>, SpecError> {
        sampling.validate()?;
        let seq = model.add_sequence();
        // A different stream from the rule's, so drafts and acceptance draws are independent.
        let rng = StdRng::seed_from_u64(sampling.seed ^ 0x9e37_79b9_7f4a_7c15);
        Ok(Speculator { model, draft, rule, policy, sampling, rng, seq, tokens: Vec::new(), commit_secs: 0.0 })
    }

    pub fn seq(&self) -> SeqId {
        self.seq
    }

    pub fn model(&self) -> &LlamaModel {
        self.model
    }

    pub fn draft(&self) -> &dyn DraftSource {
        &*self.draft
    }

    /// Runs the prompt through the target (and the draft) and returns the first generated token,
    /// which is committed.
    pub fn start(&mut self, prompt: &[u32]) -> Result<u32, SpecError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt.into());
        }
        let out = self.model.step(&[SeqInput { seq: self.seq, tokens: prompt, logits: Logits::Last }])?;
        let logits = out.first().ok_or_else(|| SpecError::Internal("the prompt step returned no logits".into()))?;
        let first = self.rule.sample(logits)?;
        self.tokens = prompt.to_vec();
        self.tokens.push(first);
        self.draft.commit(&self.tokens)?;
        Ok(first)
    }

    /// One step: drafts up to `min(k, limit)` tokens (`limit`: how many more the caller wants
    /// drafted at most), verifies them in one target step, keeps the accepted ones and the
    /// target's own token, and rolls back the rest in the target's and the draft's caches.
    pub fn step(&mut self, limit: usize) -> Result<StepReport, SpecError> {
        let room = self.model.options.max_seq_len.saturating_sub(self.tokens.len());
        let k = self.policy.choose(limit.min(room).min(MAX_Q_LEN as usize - 1));
        let t = Instant::now();
        let proposal = if k == 0 {
            Default::default()
        } else {
            self.draft.propose(self.model, self.seq, &self.tokens, k, &self.sampling, &mut self.rng)?
        };
        let draft_secs = t.elapsed().as_secs_f64() + self.commit_secs;
        let proposed = proposal.tokens.len();
        if proposed > k {
            return Err(SpecError::Internal(format!("the draft proposed {proposed} tokens, {k} were asked for")));
        }

        let t = Instant::now();
        let x = *self.tokens.last().ok_or_else(|| SpecError::Internal("step before start".into()))?;
        let mut input = Vec::with_capacity(proposed + 1);
        input.push(x);
        input.extend_from_slice(&proposal.tokens);
        let out = self.model.step(&[SeqInput { seq: self.seq, tokens: &input, logits: Logits::All }])?;
        let rows = out.first().ok_or_else(|| SpecError::Internal("verification returned no logits".into()))?;
        let verdict = self.rule.verify(rows, self.model.config.vocab_size, &proposal)?;
        if verdict.accepted > proposed {
            return Err(SpecError::Internal(format!("the rule kept {} of {proposed} drafts", verdict.accepted)));
        }
        self.model.truncate(self.seq, proposed - verdict.accepted)?;
        let verify_secs = t.elapsed().as_secs_f64();

        let mut tokens = proposal.tokens[..verdict.accepted].to_vec();
        tokens.push(verdict.next);
        self.tokens.extend_from_slice(&tokens);
        let t = Instant::now();
        self.draft.commit(&self.tokens)?;
        self.commit_secs = t.elapsed().as_secs_f64();
        self.policy.observe(proposed, verdict.accepted, draft_secs, verify_secs);
        Ok(StepReport { proposed, accepted: verdict.accepted, tokens, draft_secs, verify_secs })
    }
}

impl Drop for Speculator<'_> {
    fn drop(&mut self) {
        // Both exist until here, so neither can fail; nothing to report in a drop.
        let _ = self.model.free_sequence(self.seq);
        let _ = self.draft.reset();
    }
}

/// A finished speculative generation with its figures.
#[derive(Clone, Debug, PartialEq)]
pub struct SpecGeneration {
    pub prompt_tokens: Vec<u32>,
    pub tokens: Vec<u32>,
    /// The prompt's step in the target and the draft.
    pub prefill: Duration,
    /// Every step after the first token.
    pub decode: Duration,
    pub steps: usize,
    pub proposed: usize,
    pub accepted: usize,
    /// What the user should know (a `k` that was clamped).
    pub notes: Vec<String>,
}

impl SpecGeneration {
    /// Kept drafts over drafted tokens (0 when nothing was drafted).
    pub fn acceptance_rate(&self) -> f64 {
        if self.proposed == 0 {
            0.0
        } else {
            self.accepted as f64 / self.proposed as f64
        }
    }

    /// Kept drafts per verification step.
    pub fn mean_accepted(&self) -> f64 {
        if self.steps == 0 {
            0.0
        } else {
            self.accepted as f64 / self.steps as f64
        }
    }

    /// Tokens after the first per second of decoding (what target-only `decode_tok_s` counts).
    pub fn tokens_per_s(&self) -> f64 {
        if self.tokens.len() <= 1 {
            0.0
        } else {
            (self.tokens.len() - 1) as f64 / self.decode.as_secs_f64().max(1e-9)
        }
    }
}

/// Generates up to `options.max_tokens` tokens after `prompt` with `draft` proposing and `rule`
/// accepting, `policy` choosing `k`; `on_token` sees each committed token in order. A `k` above
/// what one verification can score or the context leaves is clamped, and said in
/// [`SpecGeneration::notes`].
pub fn generate_speculative(
    model: &mut LlamaModel,
    draft: &mut dyn DraftSource,
    rule: Box<dyn AcceptanceRule>,
    mut policy: KPolicy,
    prompt: &[u32],
    options: &GenerateOptions,
    on_token: &mut dyn FnMut(u32) -> Result<(), String>,
) -> Result<SpecGeneration, SpecError> {
    if prompt.is_empty() {
        return Err(GenerateError::EmptyPrompt.into());
    }
    let max_seq_len = model.options.max_seq_len;
    if prompt.len() + options.max_tokens > max_seq_len {
        return Err(GenerateError::TooLong { prompt: prompt.len(), max_tokens: options.max_tokens, max_seq_len }.into());
    }
    let mut notes = Vec::new();
    let kind = if policy.is_fixed() { "k" } else { "--max-draft" };
    let scorable = MAX_Q_LEN as usize - 1;
    if policy.max() > scorable {
        notes.push(format!(
            "{kind} {} is more than the {scorable} drafts one verification step scores (q_len ≤ {MAX_Q_LEN}); \
             using {scorable}",
            policy.max()
        ));
        policy.clamp(scorable);
    }
    // A step commits at most k + 1 tokens: more drafts than the output or context has left are
    // never used.
    let left = options.max_tokens.saturating_sub(1).min(max_seq_len.saturating_sub(prompt.len() + 1));
    if policy.max() > left {
        notes.push(format!(
            "{kind} {} is more than the {left} tokens the generation has left after the first; using {left}",
            policy.max()
        ));
        policy.clamp(left);
    }
    model.prepare(&[prompt.len()])?;
    for k in 0..=policy.max() {
        model.prepare(&[k + 1])?;
    }
    draft.prepare(model, prompt.len(), policy.max())?;
    if !policy.is_fixed() && !policy.is_calibrated() {
        policy.calibrate(model, prompt)?;
    }

    let mut s = Speculator::new(model, draft, rule, policy, options.sampling)?;
    let start = Instant::now();
    let first = s.start(prompt)?;
    let prefill = start.elapsed();
    let mut tokens = vec![first];
    on_token(first).map_err(SpecError::Callback)?;
    let (mut steps, mut proposed, mut accepted) = (0, 0, 0);
    let start = Instant::now();
    let mut done = options.stop.contains(&first) || tokens.len() >= options.max_tokens;
    while !done {
        let left = options.max_tokens - tokens.len();
        let report = s.step(left - 1)?;
        steps += 1;
        proposed += report.proposed;
        accepted += report.accepted;
        for &t in &report.tokens {
            tokens.push(t);
            on_token(t).map_err(SpecError::Callback)?;
            if options.stop.contains(&t) || tokens.len() >= options.max_tokens {
                done = true;
                break;
            }
        }
    }
    let decode = start.elapsed();
    Ok(SpecGeneration { prompt_tokens: prompt.to_vec(), tokens, prefill, decode, steps, proposed, accepted, notes })
}
