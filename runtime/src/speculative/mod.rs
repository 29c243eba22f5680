//! Speculative decoding: a cheap draft proposes `k` tokens, the target scores all `k + 1`
//! positions in one batched step over the paged cache, an acceptance rule keeps a prefix of the
//! drafts plus one token of the target's own, and the rejected tokens are rolled back.
//!
//! - [`draft`]: the [`draft::DraftSource`] trait and its three sources — a separate draft model
//!   with its own cache ([`draft::DraftModel`]), the target's first layers sharing its weights and
//!   cache ([`draft::SelfDraft`]), prompt n-gram lookup ([`draft::NgramDraft`]) — and the
//!   same-tokenizer check.
//! - [`accept`]: the acceptance rules: greedy (token-for-token target-only greedy decoding) and
//!   rejection sampling (the target's sampling distribution exactly).
//! - [`adaptive`]: choosing `k` per step from the running acceptance rate and the measured costs
//!   of a draft token and of a verification step of each size.
//! - [`decode`]: the speculative generation loop.
//! - [`bench`]: `kiln bench-speculative` — baseline and every source on the same prompts.
//!
//! # The invariant of the loop
//!
//! The committed tokens are the prompt and every token generated so far. Between steps the
//! target's cache holds all committed tokens but the last, `x`, and so does the draft's cache when
//! it has one: a step verifies `[x, d1 … dk]`, whose first logits row scores `d1` and whose last
//! row gives the extra token when every draft is accepted. After `a` acceptances the target rolls
//! back its `k − a` rejected tokens; the committed tokens gain `d1 … da` and the rule's own token
//! `y`, which becomes the next `x`.

pub mod accept;
pub mod adaptive;
pub mod bench;
pub mod decode;
pub mod draft;

use crate::generate::GenerateError;
use crate::model::llama::ModelError;
use crate::model::sampling::SampleError;

/// Why speculative decoding could not start or stopped.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error(transparent)]
    Model(#[from] ModelError),
    #[error(transparent)]
    Sample(#[from] SampleError),
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error(
        "the draft model has a vocabulary of {draft} tokens and the target {target}: a draft must share the \
         target's tokenizer; choose a draft from the same model family, or use --draft-layers or --ngram"
    )]
    VocabMismatch { draft: usize, target: usize },
    #[error(
        "the draft model's tokenizer differs from the target's ({detail}): a draft must share the target's \
         tokenizer; choose a draft from the same model family, or use --draft-layers or --ngram"
    )]
    TokenizerMismatch { detail: String },
    #[error("--draft-layers {layers}: the target has {n_layers} layers and a draft uses fewer; choose 1 to {} (fewer is cheaper)", .n_layers.saturating_sub(1))]
    DraftLayers { layers: usize, n_layers: usize },
    #[error("--ngram {0}: the n-gram length must be at least 1")]
    Ngram(usize),
    #[error("the caller's token callback failed: {0}")]
    Callback(String),
    /// A broken invariant of the loop itself, reported instead of panicking.
    #[error("internal error in speculative decoding: {0}")]
    Internal(String),
}
