//! `rmsnorm` (not written yet).
