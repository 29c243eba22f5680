//! Choosing the next token from logits: greedy, temperature, top-k and top-p (nucleus), seeded.
//!
//! The order is the usual one (Hugging Face's logits processors, llama.cpp's default chain):
//! temperature scales the logits, the softmax gives probabilities, top-k keeps the `k` most likely
//! tokens, top-p then keeps the smallest most-likely prefix of those (renormalised) whose mass
//! reaches `p`, and one token is drawn from what is left, renormalised. Temperature 0 is greedy
//! (the first index of the largest logit), whatever top-k and top-p say. Ties in the ordering
//! break towards the lower token id, so the kept set is a function of the logits alone.
//!
//! Probabilities are computed in f64, so the kept set does not depend on summation order at the
//! precision f32 logits carry. Draws come from a [`StdRng`] seeded once per [`Sampler`]: the same
//! seed and the same logits give the same tokens.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// How to sample.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingParams {
    /// 0 is greedy; otherwise logits are divided by it before the softmax.
    pub temperature: f64,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: usize,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p`; 1 keeps all.
    pub top_p: f64,
    pub seed: u64,
}

impl SamplingParams {
    pub fn greedy() -> SamplingParams {
        SamplingParams { temperature: 0.0, top_k: 0, top_p: 1.0, seed: 0 }
    }

    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Checks the ranges: temperature finite and ≥ 0, top-p in (0, 1].
    pub fn validate(&self) -> Result<(), SampleError> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(SampleError::BadParam(format!(
                "temperature {} must be finite and at least 0 (0 is greedy)",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(SampleError::BadParam(format!("top-p {} must be in (0, 1] (1 keeps every token)", self.top_p)));
        }
        Ok(())
    }
}

impl Default for SamplingParams {
    fn default() -> SamplingParams {
        SamplingParams::greedy()
    }
}

/// Why no token could be chosen.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum SampleError {
    #[error("bad sampling parameter: {0}")]
    BadParam(String),
    #[error("cannot sample from an empty vocabulary")]
    Empty,
    #[error("logit {index} is {value}: the forward pass produced a non-finite value")]
    NonFinite { index: usize, value: f32 },
}

/// The first index of the largest value (`None` for an empty slice or a non-finite value).
pub fn argmax(logits: &[f32]) -> Result<u32, SampleError> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &v) in logits.iter().enumerate() {
        if !v.is_finite() {
            return Err(SampleError::NonFinite { index: i, value: v });
        }
        if best.is_none_or(|(_, b)| v > b) {
            best = Some((i, v));
        }
    }
    best.map(|(i, _)| i as u32).ok_or(SampleError::Empty)
}

/// The tokens sampling may pick and their renormalised probabilities, most likely first (ties by
/// token id). Greedy gives the argmax alone with probability 1.
///
/// Only what the filters keep is sorted: top-k partitions the vocabulary in linear time, and top-p
/// partitions out the 64, 256, 1024, ... most likely tokens until they hold the mass `p` (which a
/// peaked next-token distribution reaches within the first step), so a step does not sort the
/// whole vocabulary.
pub fn candidates(logits: &[f32], params: &SamplingParams) -> Result<Vec<(u32, f64)>, SampleError> {
    params.validate()?;
    if params.is_greedy() {
        return Ok(vec![(argmax(logits)?, 1.0)]);
    }
    let mut probs = weights(logits, params.temperature)?;
    if params.top_k > 0 && params.top_k < probs.len() {
        probs.select_nth_unstable_by(params.top_k - 1, more_likely);
        probs.truncate(params.top_k);
    }
    let total: f64 = probs.iter().map(|p| p.1).sum();
    let mut keep = probs.len();
    if params.top_p < 1.0 {
        let mut head = probs.len().min(64);
        loop {
            if head < probs.len() {
                probs.select_nth_unstable_by(head - 1, more_likely);
            }
            let mass: f64 = probs[..head].iter().map(|p| p.1).sum();
            if mass >= params.top_p * total || head == probs.len() {
                break;
            }
            head = (head * 4).min(probs.len());
        }
        // The top `head` tokens hold at least the mass p: the nucleus is a prefix of them.
        probs[..head].sort_by(more_likely);
        let mut mass = 0.0;
        keep = head;
        for (i, &(_, p)) in probs[..head].iter().enumerate() {
            mass += p / total;
            if mass >= params.top_p {
                keep = i + 1;
                break;
            }
        }
    } else {
        probs.sort_by(more_likely);
    }
    probs.truncate(keep);
    normalise(&mut probs);
    Ok(probs)
}

/// `(token, e^((logit − max) / temperature))` for every token; fails on non-finite logits.
fn weights(logits: &[f32], temperature: f64) -> Result<Vec<(u32, f64)>, SampleError> {
    if let Some((index, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(SampleError::NonFinite { index, value });
    }
    if logits.is_empty() {
        return Err(SampleError::Empty);
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    Ok(logits.iter().enumerate().map(|(i, &l)| (i as u32, ((l as f64 - max) / temperature).exp())).collect())
}

/// Most likely first, ties towards the lower token id.
fn more_likely(a: &(u32, f64), b: &(u32, f64)) -> std::cmp::Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

fn normalise(probs: &mut [(u32, f64)]) {
    let total: f64 = probs.iter().map(|p| p.1).sum();
    for p in probs {
        p.1 /= total;
    }
}

/// A seeded sampler: one per generated sequence.
#[derive(Clone, Debug)]
pub struct Sampler {
    pub params: SamplingParams,
    rng: StdRng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Result<Sampler, SampleError> {
        params.validate()?;
        Ok(Sampler { params, rng: StdRng::seed_from_u64(params.seed) })
    }

    /// The next token for `logits` (one row of the vocabulary).
    pub fn sample(&mut self, logits: &[f32]) -> Result<u32, SampleError> {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        if self.params.top_k == 0 && self.params.top_p >= 1.0 {
            // Nothing filtered: draw from the whole distribution in token order, unsorted.
            let w = weights(logits, self.params.temperature)?;
            let total: f64 = w.iter().map(|p| p.1).sum();
            let mut u = self.rng.random::<f64>() * total;
            for &(token, p) in &w {
                if u < p {
                    return Ok(token);
                }
                u -= p;
            }
            return w.last().map(|&(t, _)| t).ok_or(SampleError::Empty);
        }
        let kept = candidates(logits, &self.params)?;
        let u: f64 = self.rng.random();
        let mut mass = 0.0;
        for &(token, p) in &kept {
            mass += p;
            if u < mass {
                return Ok(token);
            }
        }
        // u fell into the rounding gap below 1.0: the last kept token.
        kept.last().map(|&(t, _)| t).ok_or(SampleError::Empty)
    }
}
