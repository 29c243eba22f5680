//! Acceptance rules: given the target's logits at the `k + 1` verified positions and the `k`
//! drafted tokens (with the distributions they were drawn from), how many drafts to keep and which
//! token comes next.
//!
//! - [`Greedy`]: keep drafts while each equals the target's argmax at its position; the next token
//!   is the target's argmax after the last kept one. The output is target-only greedy decoding.
//! - [`RejectionSampling`] (Leviathan et al. 2023, Chen et al. 2023): keep draft `d` drawn from
//!   `q` with probability `min(1, p(d) / q(d))`, where `p` is the target's sampling distribution
//!   (temperature, top-k, top-p applied exactly as [`crate::model::sampling`] does); at the first
//!   rejection draw the next token from `norm(max(0, p − q))`; when all `k` are kept draw one more
//!   from the target's `p` at the last position. Each output token is then distributed exactly as
//!   target-only sampling's.
//!
//! Rules are a trait so that a test can plug in a deliberately wrong rule and show that the
//! distribution test catches it.

use super::draft::Proposal;
use super::SpecError;
use crate::model::sampling::{argmax, candidates, SamplingParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// What verification decided: `accepted` drafts kept, then `next`, the target's own token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub accepted: usize,
    pub next: u32,
}

/// Decides which drafted tokens to keep.
pub trait AcceptanceRule {
    /// A token from one row of target logits alone (the prompt's last position).
    fn sample(&mut self, logits: &[f32]) -> Result<u32, SpecError>;
    /// `rows` holds `proposal.tokens.len() + 1` rows of `vocab` target logits: row `i` is the
    /// target's distribution for the position of draft `i` (and the last row for the token after
    /// the drafts).
    fn verify(&mut self, rows: &[f32], vocab: usize, proposal: &Proposal) -> Result<Verdict, SpecError>;
}

fn row(rows: &[f32], vocab: usize, i: usize) -> Result<&[f32], SpecError> {
    rows.get(i * vocab..(i + 1) * vocab)
        .ok_or_else(|| SpecError::Internal(format!("verification returned no logits row {i}")))
}

/// Target-only greedy decoding, token for token.
#[derive(Clone, Copy, Debug, Default)]
pub struct Greedy;

impl AcceptanceRule for Greedy {
    fn sample(&mut self, logits: &[f32]) -> Result<u32, SpecError> {
        Ok(argmax(logits)?)
    }

    fn verify(&mut self, rows: &[f32], vocab: usize, proposal: &Proposal) -> Result<Verdict, SpecError> {
        for (i, &d) in proposal.tokens.iter().enumerate() {
            let best = argmax(row(rows, vocab, i)?)?;
            if best != d {
                return Ok(Verdict { accepted: i, next: best });
            }
        }
        let k = proposal.tokens.len();
        Ok(Verdict { accepted: k, next: argmax(row(rows, vocab, k)?)? })
    }
}

/// Rejection sampling against the target's sampling distribution.
#[derive(Clone, Debug)]
pub struct RejectionSampling {
    pub params: SamplingParams,
    rng: StdRng,
}

impl RejectionSampling {
    pub fn new(params: SamplingParams) -> Result<RejectionSampling, SpecError> {
        params.validate()?;
        Ok(RejectionSampling { params, rng: StdRng::seed_from_u64(params.seed) })
    }
}

/// A sparse distribution as a dense vector over the vocabulary.
pub fn dense(sparse: &[(u32, f64)], vocab: usize) -> Vec<f64> {
    let mut out = vec![0.0; vocab];
    for &(t, p) in sparse {
        if let Some(slot) = out.get_mut(t as usize) {
            *slot = p;
        }
    }
    out
}

/// Draws an index from non-negative weights (their sum need not be 1); `None` when they sum to 0.
pub fn draw(weights: &[f64], rng: &mut StdRng) -> Option<u32> {
    let total: f64 = weights.iter().sum();
    if total.is_nan() || total <= 0.0 {
        return None;
    }
    let u = rng.random::<f64>() * total;
    let mut mass = 0.0;
    let mut last = None;
    for (i, &w) in weights.iter().enumerate() {
        if w > 0.0 {
            mass += w;
            last = Some(i as u32);
            if u < mass {
                return last;
            }
        }
    }
    // u fell into the rounding gap at the top: the last token with weight.
    last
}

impl AcceptanceRule for RejectionSampling {
    fn sample(&mut self, logits: &[f32]) -> Result<u32, SpecError> {
        let p = dense(&candidates(logits, &self.params)?, logits.len());
        draw(&p, &mut self.rng).ok_or_else(|| SpecError::Internal("the target distribution is empty".into()))
    }

    fn verify(&mut self, rows: &[f32], vocab: usize, proposal: &Proposal) -> Result<Verdict, SpecError> {
        for (i, &d) in proposal.tokens.iter().enumerate() {
            let p = dense(&candidates(row(rows, vocab, i)?, &self.params)?, vocab);
            // A draft without a distribution was chosen deterministically: q is one-hot on it.
            let q = match proposal.q.get(i) {
                Some(Some(q)) => dense(q, vocab),
                _ => dense(&[(d, 1.0)], vocab),
            };
            // A token outside the vocabulary has probability 0 under both: rejected below.
            let (pd, qd) = (p.get(d as usize).copied().unwrap_or(0.0), q.get(d as usize).copied().unwrap_or(0.0));
            // q(d) > 0 whenever d was drawn from q; a zero means a one-hot q elsewhere: reject.
            let keep = if qd > 0.0 { (pd / qd).min(1.0) } else { 0.0 };
            if self.rng.random::<f64>() < keep {
                continue;
            }
            let residual: Vec<f64> = p.iter().zip(&q).map(|(p, q)| (p - q).max(0.0)).collect();
            // p = q leaves no residual, but then every draft is kept; rounding may still get
            // here, and then p itself is the right distribution.
            let next = match draw(&residual, &mut self.rng) {
                Some(t) => t,
                None => draw(&p, &mut self.rng)
                    .ok_or_else(|| SpecError::Internal("the target distribution is empty".into()))?,
            };
            return Ok(Verdict { accepted: i, next });
        }
        let k = proposal.tokens.len();
        let next = self.sample(row(rows, vocab, k)?)?;
        Ok(Verdict { accepted: k, next })
    }
}

/// The rule for `params`: greedy when the temperature is 0, rejection sampling otherwise.
pub fn rule_for(params: &SamplingParams) -> Result<Box<dyn AcceptanceRule>, SpecError> {
    if params.is_greedy() {
        Ok(Box::new(Greedy))
    } else {
        Ok(Box::new(RejectionSampling::new(*params)?))
    }
}
