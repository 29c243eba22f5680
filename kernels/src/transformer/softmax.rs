//! `softmax` (not written yet).
