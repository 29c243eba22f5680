//! `attention_prefill`: causal flash attention (not written yet).
