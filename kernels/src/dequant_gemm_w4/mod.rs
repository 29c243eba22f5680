//! `dequant_gemm_w4`: int4 dequant-GEMM (not written yet).
