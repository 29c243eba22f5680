//! kiln's autotuner: legal config spaces, search strategies, correctness-gated measurement and a
//! TOML tuning database per target.
//!
//! Empty until the autotuner issue.
//!
//! Architecture Invariant: the tuner measures through a `Measure` trait the runtime implements;
//! it touches no device itself.
