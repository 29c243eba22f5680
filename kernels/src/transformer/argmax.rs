//! `argmax` (not written yet).
