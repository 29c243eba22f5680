//! Draft sources: what proposes the tokens the target verifies.
//!
//! Every source implements [`DraftSource`]. Between steps a source with a cache holds exactly the
//! tokens the target's cache holds (all committed tokens but the last; see the module doc of
//! [`super`]), so each proposal starts by running the last committed token.
//!
//! - [`DraftModel`]: a separate Llama model with the target's tokenizer and its own paged cache.
//!   It runs the last committed token and then its own drafts one at a time; [`DraftSource::commit`]
//!   rolls back the drafts the target rejected and runs the accepted tokens it has not seen.
//! - [`SelfDraft`]: the target's first `L` layers, then its final norm and head
//!   ([`LlamaModel::step_layers`]), in the target's own sequence: the draft writes the first `L`
//!   layers' K/V of its tokens into the target's cache and rolls them back before verification,
//!   which runs the same positions through every layer and rewrites those slots. Nothing is
//!   copied and no second cache exists.
//! - [`NgramDraft`]: prompt lookup — the longest suffix of up to `n` committed tokens that occurred
//!   before, and the tokens that followed its latest occurrence. Free to run; strong when the
//!   output copies its input (code edits, summaries that quote).

use super::SpecError;
use crate::model::kv_cache::{KvCache, SeqId};
use crate::model::llama::{LlamaModel, Logits, SeqInput};
use crate::model::sampling::{argmax, candidates, SamplingParams};
use crate::model::tensor::{LlamaConfig, LoadError, RawTensor, TensorSource};
use crate::model::tokenizer::Tokenizer;
use rand::rngs::StdRng;

/// Drafted tokens and, per token, the distribution it was drawn from (`None`: chosen
/// deterministically, a one-hot distribution).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proposal {
    pub tokens: Vec<u32>,
    pub q: Vec<Option<Vec<(u32, f64)>>>,
}

/// A source of draft tokens.
pub trait DraftSource {
    /// How reports name the source.
    fn name(&self) -> String;
    /// Builds what proposals of up to `max_k` tokens run, before any clock starts.
    fn prepare(&mut self, target: &mut LlamaModel, prompt_len: usize, max_k: usize) -> Result<(), SpecError>;
    /// Up to `k` tokens to follow `context` (the committed tokens; the target's sequence `seq` holds
    /// all of them but the last). Greedy `sampling` drafts argmax tokens; otherwise drafts are
    /// drawn from the draft's distribution under the same temperature, top-k and top-p.
    fn propose(
        &mut self,
        target: &mut LlamaModel,
        seq: SeqId,
        context: &[u32],
        k: usize,
        sampling: &SamplingParams,
        rng: &mut StdRng,
    ) -> Result<Proposal, SpecError>;
    /// After verification: `context` is the new committed sequence; roll back rejected drafts and
    /// catch up, so that the draft's cache holds all of `context` but its last token.
    fn commit(&mut self, context: &[u32]) -> Result<(), SpecError>;
    /// The draft's own cache and sequence, when it has one apart from the target's.
    fn own_cache(&self) -> Option<(&KvCache, SeqId)>;
    /// Forgets the current generation (frees its sequence) so that a new one can start.
    fn reset(&mut self) -> Result<(), SpecError>;
}

/// The token a draft proposes from `logits`, and its distribution when sampled.
fn pick(
    logits: &[f32],
    sampling: &SamplingParams,
    rng: &mut StdRng,
) -> Result<(u32, Option<Vec<(u32, f64)>>), SpecError> {
    if sampling.is_greedy() {
        return Ok((argmax(logits)?, None));
    }
    let q = candidates(logits, sampling)?;
    let token = super::accept::draw(&super::accept::dense(&q, logits.len()), rng)
        .ok_or_else(|| SpecError::Internal("the draft distribution is empty".into()))?;
    Ok((token, Some(q)))
}

/// The committed tokens but the last: what the caches hold between steps.
fn held_part(context: &[u32]) -> Result<&[u32], SpecError> {
    match context.split_last() {
        Some((_, rest)) => Ok(rest),
        None => Err(SpecError::Internal("a proposal needs at least one committed token".into())),
    }
}

/// A separate draft model with its own cache.
pub struct DraftModel {
    model: LlamaModel,
    seq: SeqId,
    /// The tokens the draft's sequence holds, in order.
    held: Vec<u32>,
    label: String,
}

impl DraftModel {
    /// Wraps a loaded draft model; refuses one whose vocabulary differs from the target's (compare
    /// tokenizers with [`check_same_tokenizer`] when both files have one).
    pub fn new(mut model: LlamaModel, target: &LlamaConfig, label: &str) -> Result<DraftModel, SpecError> {
        if model.config.vocab_size != target.vocab_size {
            return Err(SpecError::VocabMismatch { draft: model.config.vocab_size, target: target.vocab_size });
        }
        let seq = model.add_sequence();
        Ok(DraftModel { model, seq, held: Vec::new(), label: label.to_string() })
    }

    pub fn model(&self) -> &LlamaModel {
        &self.model
    }

    pub fn seq(&self) -> SeqId {
        self.seq
    }

    /// Makes the draft's sequence hold exactly `want`: rolls back what differs, runs what is new.
    fn sync(&mut self, want: &[u32]) -> Result<(), SpecError> {
        let common = self.held.iter().zip(want).take_while(|(a, b)| a == b).count();
        if common < self.held.len() {
            self.model.truncate(self.seq, self.held.len() - common)?;
            self.held.truncate(common);
        }
        if common < want.len() {
            let tokens = &want[common..];
            self.model.step(&[SeqInput { seq: self.seq, tokens, logits: Logits::Last }])?;
            self.held.extend_from_slice(tokens);
        }
        Ok(())
    }

    fn run(&mut self, token: u32) -> Result<Vec<f32>, SpecError> {
        let out = self.model.step(&[SeqInput { seq: self.seq, tokens: &[token], logits: Logits::Last }])?;
        self.held.push(token);
        out.into_iter().next().ok_or_else(|| SpecError::Internal("the draft step returned no logits".into()))
    }
}

impl DraftSource for DraftModel {
    fn name(&self) -> String {
        self.label.clone()
    }

    fn prepare(&mut self, _target: &mut LlamaModel, prompt_len: usize, max_k: usize) -> Result<(), SpecError> {
        self.model.prepare(&[prompt_len])?;
        // Catching up after a step runs up to two tokens (the last accepted draft and the target's).
        for n in 1..=2.min(max_k.max(1)) {
            self.model.prepare(&[n])?;
        }
        Ok(())
    }

    fn propose(
        &mut self,
        _target: &mut LlamaModel,
        _seq: SeqId,
        context: &[u32],
        k: usize,
        sampling: &SamplingParams,
        rng: &mut StdRng,
    ) -> Result<Proposal, SpecError> {
        let mut proposal = Proposal::default();
        if k == 0 {
            return Ok(proposal);
        }
        self.sync(held_part(context)?)?;
        let last = *context.last().ok_or_else(|| SpecError::Internal("empty context".into()))?;
        let mut logits = self.run(last)?;
        for i in 0..k {
            let (token, q) = pick(&logits, sampling, rng)?;
            proposal.tokens.push(token);
            proposal.q.push(q);
            if i + 1 < k {
                logits = self.run(token)?;
            }
        }
        Ok(proposal)
    }

    fn commit(&mut self, context: &[u32]) -> Result<(), SpecError> {
        self.sync(held_part(context)?)
    }

    fn own_cache(&self) -> Option<(&KvCache, SeqId)> {
        Some((self.model.cache(), self.seq))
    }

    fn reset(&mut self) -> Result<(), SpecError> {
        self.model.free_sequence(self.seq)?;
        self.seq = self.model.add_sequence();
        self.held.clear();
        Ok(())
    }
}

/// Self-speculation: the target's first `layers` layers, final norm and head, in its own cache.
pub struct SelfDraft {
    layers: usize,
}

impl SelfDraft {
    /// Refuses 0 layers and all of them (the draft would cost as much as the target).
    pub fn new(layers: usize, target: &LlamaConfig) -> Result<SelfDraft, SpecError> {
        if layers == 0 || layers >= target.n_layers {
            return Err(SpecError::DraftLayers { layers, n_layers: target.n_layers });
        }
        Ok(SelfDraft { layers })
    }
}

impl DraftSource for SelfDraft {
    fn name(&self) -> String {
        format!("self-speculation (first {} layers)", self.layers)
    }

    fn prepare(&mut self, target: &mut LlamaModel, _prompt_len: usize, _max_k: usize) -> Result<(), SpecError> {
        Ok(target.prepare_layers(&[1], self.layers)?)
    }

    fn propose(
        &mut self,
        target: &mut LlamaModel,
        seq: SeqId,
        context: &[u32],
        k: usize,
        sampling: &SamplingParams,
        rng: &mut StdRng,
    ) -> Result<Proposal, SpecError> {
        let mut proposal = Proposal::default();
        let Some(&last) = context.last() else {
            return Err(SpecError::Internal("empty context".into()));
        };
        let mut appended = 0;
        let mut token = last;
        let result = (|| -> Result<(), SpecError> {
            for _ in 0..k {
                let out =
                    target.step_layers(&[SeqInput { seq, tokens: &[token], logits: Logits::Last }], self.layers)?;
                appended += 1;
                let logits =
                    out.first().ok_or_else(|| SpecError::Internal("the draft step returned no logits".into()))?;
                let (next, q) = pick(logits, sampling, rng)?;
                proposal.tokens.push(next);
                proposal.q.push(q);
                token = next;
            }
            Ok(())
        })();
        // The drafted positions hold only the first layers' K/V: verification rewrites them.
        target.truncate(seq, appended)?;
        result.map(|()| proposal)
    }

    fn commit(&mut self, _context: &[u32]) -> Result<(), SpecError> {
        Ok(())
    }

    fn own_cache(&self) -> Option<(&KvCache, SeqId)> {
        None
    }

    fn reset(&mut self) -> Result<(), SpecError> {
        Ok(())
    }
}

/// Prompt lookup: continue the latest earlier occurrence of the longest matching suffix.
pub struct NgramDraft {
    n: usize,
}

impl NgramDraft {
    pub fn new(n: usize) -> Result<NgramDraft, SpecError> {
        if n == 0 {
            return Err(SpecError::Ngram(n));
        }
        Ok(NgramDraft { n })
    }

    /// Up to `k` tokens that followed the latest earlier occurrence of the longest suffix of
    /// `context` of at most `n` tokens; empty when no suffix occurred before.
    pub fn lookup(&self, context: &[u32], k: usize) -> Vec<u32> {
        let len = context.len();
        for size in (1..=self.n.min(len.saturating_sub(1))).rev() {
            let suffix = &context[len - size..];
            // Latest start first, excluding the suffix itself.
            for start in (0..len - size).rev() {
                if &context[start..start + size] == suffix {
                    let from = start + size;
                    let to = (from + k).min(len);
                    if from < to {
                        return context[from..to].to_vec();
                    }
                }
            }
        }
        Vec::new()
    }
}

impl DraftSource for NgramDraft {
    fn name(&self) -> String {
        format!("n-gram lookup (n ≤ {})", self.n)
    }

    fn prepare(&mut self, _target: &mut LlamaModel, _prompt_len: usize, _max_k: usize) -> Result<(), SpecError> {
        Ok(())
    }

    fn propose(
        &mut self,
        _target: &mut LlamaModel,
        _seq: SeqId,
        context: &[u32],
        k: usize,
        _sampling: &SamplingParams,
        _rng: &mut StdRng,
    ) -> Result<Proposal, SpecError> {
        let tokens = self.lookup(context, k);
        Ok(Proposal { q: vec![None; tokens.len()], tokens })
    }

    fn commit(&mut self, _context: &[u32]) -> Result<(), SpecError> {
        Ok(())
    }

    fn own_cache(&self) -> Option<(&KvCache, SeqId)> {
        None
    }

    fn reset(&mut self) -> Result<(), SpecError> {
        Ok(())
    }
}

/// The first `layers` layers of a model (with its embedding, final norm and head) as a model of its
/// own: a cheap draft model from the target's own file, with a separate cache.
pub struct LayerPrefix<'a> {
    pub source: &'a dyn TensorSource,
    pub layers: usize,
}

impl TensorSource for LayerPrefix<'_> {
    fn config(&self) -> Result<LlamaConfig, LoadError> {
        let mut c = self.source.config()?;
        if self.layers == 0 || self.layers > c.n_layers {
            return Err(LoadError::Config(format!(
                "a prefix of {} layers of a model of {}; choose 1..={}",
                self.layers, c.n_layers, c.n_layers
            )));
        }
        c.n_layers = self.layers;
        Ok(c)
    }

    fn tensor(&self, name: &str) -> Result<RawTensor, LoadError> {
        self.source.tensor(name)
    }
}

/// Refuses a draft whose tokenizer differs from the target's: a different vocabulary size, or a
/// token id that spells a different token (ids are compared, and only equal ids mean equal text).
pub fn check_same_tokenizer(target: &Tokenizer, draft: &Tokenizer) -> Result<(), SpecError> {
    if target.vocab_size() != draft.vocab_size() {
        return Err(SpecError::VocabMismatch { draft: draft.vocab_size(), target: target.vocab_size() });
    }
    for id in 0..target.vocab_size() as u32 {
        let (a, b) = (target.token(id), draft.token(id));
        if a != b {
            return Err(SpecError::TokenizerMismatch {
                detail: format!("token {id} is {a:?} in the target and {b:?} in the draft"),
            });
        }
    }
    for (what, a, b) in [("BOS", target.bos_id(), draft.bos_id()), ("end-of-sequence", target.eos_id(), draft.eos_id())]
    {
        if a != b {
            return Err(SpecError::TokenizerMismatch {
                detail: format!("the {what} token is {a} in the target and {b} in the draft"),
            });
        }
    }
    Ok(())
}
