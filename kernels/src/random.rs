//! Random inputs for kernels: fresh data from a seed, never zeros, rounded to the buffer's dtype.

use kiln_ir::interp::HostBuffer;
use kiln_ir::DType;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// A seeded generator; the same seed gives the same inputs.
pub fn rng(seed: u64) -> StdRng {
    StdRng::seed_from_u64(seed)
}

/// `len` values uniform in `[lo, hi)`, rounded to `dtype` (a float dtype).
pub fn uniform(rng: &mut StdRng, dtype: DType, len: usize, lo: f64, hi: f64) -> HostBuffer {
    let values: Vec<f64> = (0..len).map(|_| rng.random_range(lo..hi)).collect();
    HostBuffer::from_f64(dtype, &values)
}

/// `len` integers uniform in `[lo, hi)` of an integer dtype.
pub fn integers(rng: &mut StdRng, dtype: DType, len: usize, lo: i64, hi: i64) -> HostBuffer {
    let values: Vec<f64> = (0..len).map(|_| rng.random_range(lo..hi) as f64).collect();
    HostBuffer::from_f64(dtype, &values)
}

/// `len` random bytes.
pub fn bytes(rng: &mut StdRng, len: usize) -> HostBuffer {
    HostBuffer::U8((0..len).map(|_| rng.random()).collect())
}
