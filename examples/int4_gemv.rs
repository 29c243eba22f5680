//! An int4 GEMV written with kiln's builder: `y[n] = Σ_k x[k] · (q[n, k] - 8) · scale[n, k / G]`.
//!
//! Weights are packed two per byte along k (low nibble first) in rows of `k / 2` bytes, with one
//! f16 scale per group of `G` weights. Each program computes `BLOCK_N` outputs, walking k in
//! tiles of `BLOCK_K`. Compare with the Triton version this mirrors:
//!
//! ```text
//! n = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
//! acc = tl.zeros([BLOCK_N], tl.float32)
//! for k0 in range(0, K, BLOCK_K):
//!     k = k0 + tl.arange(0, BLOCK_K)
//!     xk = tl.load(x + k).to(tl.float32)
//!     packed = tl.load(w + n[:, None] * (K // 2) + k[None, :] // 2, mask=n[:, None] < N, other=0)
//!     q = (packed >> (k[None, :] % 2 * 4).to(tl.uint8)) & 0xF
//!     scale = tl.load(s + n[:, None] * (K // G) + k[None, :] // G, mask=n[:, None] < N, other=0)
//!     acc += tl.sum((q.to(tl.float32) - 8) * scale.to(tl.float32) * xk[None, :], 1)
//! tl.store(y + n, acc, mask=n < N)
//! ```
//!
//! Run with `cargo run --example int4_gemv` to print the kernel's text form (the same text as
//! `examples/int4_gemv.tir`).

use kiln_ir::{DType::*, Kernel, KernelBuilder};

pub const BLOCK_N: i32 = 16;
pub const BLOCK_K: i32 = 32;
pub const GROUP: i32 = 32;

/// Builds the kernel; `k` must be a multiple of `BLOCK_K` (and `BLOCK_K` of `GROUP`).
pub fn build() -> Kernel {
    let b = KernelBuilder::new("gemv_w4");
    let (x, w, s, y) = (b.buffer("x", F16), b.buffer("w", U8), b.buffer("scales", F16), b.buffer("y", F32));
    let (n, k) = (b.scalar("n", I32), b.scalar("k", I32));

    let rows = (b.program_id(0) * BLOCK_N + b.arange(0, BLOCK_N)).named("rows");
    let row_ok = rows.lt(n).col();
    let [acc] = b.for_range(0, k, BLOCK_K, [b.zeros(&[BLOCK_N as u32], F32).named("acc0")], |k0, [acc]| {
        let ks = k0 + b.arange(0, BLOCK_K);
        let xk = b.load(x, ks).cast(F32).row();
        let packed = b.load_masked(w, rows.col() * (k / 2) + (ks / 2).row(), row_ok, 0u8);
        let q = (packed >> (ks % 2 * 4).cast(U8).row()) & 0xFu8;
        let scale = b.load_masked(s, rows.col() * (k / GROUP) + (ks / GROUP).row(), row_ok, 0.0).cast(F32);
        [acc + ((q.cast(F32) - 8.0) * scale * xk).sum(1)]
    });
    b.store_masked(y, rows, acc, rows.lt(n));
    b.finish().expect("gemv_w4 is a valid kernel")
}

#[allow(dead_code)]
fn main() {
    print!("{}", kiln_ir::text::print(&build()));
}
