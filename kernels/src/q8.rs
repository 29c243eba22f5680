//! Q8_0 kernels: `q8_gemv` and `embedding` (not written yet).
