//! Choosing `k`, the number of tokens to draft, per step.
//!
//! With a per-token acceptance probability `α` (each draft kept given that the ones before it
//! were), a step that drafts `k` tokens yields `E(k) = (1 − α^(k+1)) / (1 − α)` tokens on average
//! (the kept drafts and the target's own token) and costs `k · t_draft + t_verify(k)`. The policy
//! picks the `k` in `0..=max` with the most expected tokens per second.
//!
//! - `α` is a running estimate: kept drafts over kept drafts plus rejections (one per step that
//!   rejected a draft), both decayed by [`DECAY`] per step so that the estimate follows the text
//!   (copying a passage, then writing freely), with an optimistic prior ([`PRIOR`]) that steps
//!   without drafts drift back to (a policy that stopped drafting tries again).
//! - `t_draft` is the measured time per drafted token (proposal and catch-up), a running mean.
//! - `t_verify(k)` is the measured time of verification steps of `k + 1` tokens, a running mean per
//!   size (each size is its own tuned shape, so sizes are not assumed to cost alike); a size not
//!   measured yet is estimated from the nearest measured sizes, and costs as the largest measured
//!   size above it when none is, which is optimistic and so tries larger `k` once.
//!
//! When drafting does not pay, the policy still drafts once every [`EXPLORE`] steps, so that a
//! turn of the text towards copying is noticed.
//!
//! [`KPolicy::calibrate`] measures every size once before generation starts; a fixed `k` (`--k`)
//! skips all this.

use crate::model::llama::{LlamaModel, Logits, ModelError, SeqInput};
use std::time::Instant;

/// Weight of the past per step in the running estimates.
pub const DECAY: f64 = 0.9;

/// Steps without drafts after which the policy drafts once anyway.
pub const EXPLORE: usize = 4;

/// The prior of the acceptance estimate, (kept, rejected): α = 0.75, optimistic, so that drafting
/// is tried whenever a verification of two tokens costs less than 1.75 of one.
pub const PRIOR: (f64, f64) = (3.0, 1.0);

/// The `k` policy of one generation.
#[derive(Clone, Debug)]
pub struct KPolicy {
    max: usize,
    fixed: bool,
    kept: f64,
    rejected: f64,
    draft_secs: f64,
    drafted: f64,
    /// Per verification size `k`: decayed (seconds, steps).
    verify: Vec<(f64, f64)>,
    /// Steps since the last one that drafted.
    idle: usize,
}

impl KPolicy {
    /// Always `k`.
    pub fn fixed(k: usize) -> KPolicy {
        KPolicy { fixed: true, ..KPolicy::adaptive(k) }
    }

    /// Adaptive, at most `max`.
    pub fn adaptive(max: usize) -> KPolicy {
        KPolicy {
            max,
            fixed: false,
            kept: PRIOR.0,
            rejected: PRIOR.1,
            draft_secs: 0.0,
            drafted: 0.0,
            verify: vec![(0.0, 0.0); max + 1],
            idle: 0,
        }
    }

    pub fn max(&self) -> usize {
        self.max
    }

    pub fn is_fixed(&self) -> bool {
        self.fixed
    }

    /// Lowers the bound (the remaining context or output shrinks it).
    pub fn clamp(&mut self, max: usize) {
        self.max = self.max.min(max);
        self.verify.truncate(self.max + 1);
    }

    /// The running acceptance probability per drafted token.
    pub fn alpha(&self) -> f64 {
        self.kept / (self.kept + self.rejected)
    }

    /// Estimated seconds of a verification step of `k + 1` tokens (`None` before any measurement).
    fn verify_cost(&self, k: usize) -> Option<f64> {
        let mean = |i: usize| self.verify.get(i).filter(|v| v.1 > 0.0).map(|v| v.0 / v.1);
        if let Some(t) = mean(k) {
            return Some(t);
        }
        let below = (0..k).rev().find_map(|i| mean(i).map(|t| (i, t)));
        let above = (k + 1..self.verify.len()).find_map(|i| mean(i).map(|t| (i, t)));
        match (below, above) {
            (Some((i, a)), Some((j, b))) => Some(a + (b - a) * (k - i) as f64 / (j - i) as f64),
            (Some((_, a)), None) => Some(a),
            (None, Some((_, b))) => Some(b),
            (None, None) => None,
        }
    }

    /// The `k` for the next step, at most `limit` (tokens left to generate or room in the cache).
    pub fn choose(&self, limit: usize) -> usize {
        let max = self.max.min(limit);
        if self.fixed {
            return max;
        }
        let alpha = self.alpha().min(1.0 - 1e-9);
        let t_draft = if self.drafted > 0.0 { self.draft_secs / self.drafted } else { 0.0 };
        // After EXPLORE steps without drafts, try the best k ≥ 1 anyway: the acceptance estimate
        // only moves on steps that draft, and the text may have turned into a copy.
        let from = usize::from(self.idle >= EXPLORE && max > 0);
        let mut best = (max, f64::NEG_INFINITY);
        for k in from..=max {
            let Some(t_verify) = self.verify_cost(k) else {
                // Nothing measured: start from the bound.
                return max;
            };
            let tokens = (1.0 - alpha.powi(k as i32 + 1)) / (1.0 - alpha);
            let rate = tokens / (k as f64 * t_draft + t_verify).max(1e-12);
            if rate > best.1 {
                best = (k, rate);
            }
        }
        best.0
    }

    /// Mean seconds of a verification step of `k + 1` tokens, per `k` (`None`: not measured).
    pub fn verify_costs(&self) -> Vec<Option<f64>> {
        self.verify.iter().map(|v| (v.1 > 0.0).then(|| v.0 / v.1)).collect()
    }

    /// Whether every verification size has a measurement.
    pub fn is_calibrated(&self) -> bool {
        self.verify.iter().all(|v| v.1 > 0.0)
    }

    /// Measures a verification step of every size `1..=max + 1` on `model` (a scratch sequence of
    /// `tokens`' first tokens, freed after), so that the first steps already know which sizes are
    /// cheap: on a CPU the GEMM path for 5 or more rows can cost several times the GEMV path's.
    pub fn calibrate(&mut self, model: &mut LlamaModel, tokens: &[u32]) -> Result<(), ModelError> {
        if self.fixed || tokens.is_empty() {
            return Ok(());
        }
        for k in 0..=self.max {
            let input: Vec<u32> = tokens.iter().copied().cycle().take(k + 1).collect();
            model.prepare(&[k + 1])?;
            let mut best = f64::INFINITY;
            for _ in 0..2 {
                let seq = model.add_sequence();
                let t = Instant::now();
                let out = model.step(&[SeqInput { seq, tokens: &input, logits: Logits::All }]);
                best = best.min(t.elapsed().as_secs_f64());
                model.free_sequence(seq)?;
                out?;
            }
            self.verify[k] = (best, 1.0);
        }
        Ok(())
    }

    /// Records a step: `proposed` tokens drafted in `draft_secs`, `accepted` of them kept, and a
    /// verification of `proposed + 1` tokens in `verify_secs`.
    pub fn observe(&mut self, proposed: usize, accepted: usize, draft_secs: f64, verify_secs: f64) {
        self.idle = if proposed > 0 { 0 } else { self.idle + 1 };
        if proposed > 0 {
            self.kept = self.kept * DECAY + accepted as f64;
            self.rejected = self.rejected * DECAY + f64::from(u8::from(accepted < proposed));
        } else {
            // A step with nothing drafted says nothing about acceptance: the estimate drifts back
            // to the prior, so that a policy that stopped drafting tries again later.
            self.kept = self.kept * DECAY + PRIOR.0 * (1.0 - DECAY);
            self.rejected = self.rejected * DECAY + PRIOR.1 * (1.0 - DECAY);
        }
        if proposed > 0 {
            self.draft_secs = self.draft_secs * DECAY + draft_secs;
            self.drafted = self.drafted * DECAY + proposed as f64;
        }
        if let Some(v) = self.verify.get_mut(proposed) {
            v.0 = v.0 * DECAY + verify_secs;
            v.1 = v.1 * DECAY + 1.0;
        }
    }
}
