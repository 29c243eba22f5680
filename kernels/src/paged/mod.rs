//! Paged KV-cache kernels: append, gather and paged decode attention (not written yet).
