//! `rope` (not written yet).
