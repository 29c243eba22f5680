//! kiln's autotuner: legal config spaces, search strategies, correctness-gated measurement and a
//! TOML tuning database per target.
//!
//! - [`lookup`]: the [`lookup::ConfigProvider`] seam through which the runtime asks for configs.
//!
//! Architecture Invariant: the tuner measures through a `Measure` trait the runtime implements;
//! it touches no device itself.

pub mod lookup;
