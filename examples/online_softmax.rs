//! Row softmax with an online-softmax loop, written with kiln's builder.
//!
//! One program per row of an `[rows, n]` f32 matrix. The first loop keeps a running maximum `m`
//! and a running sum `l` of `exp(x - m)`, rescaling `l` whenever the maximum grows, so the row is
//! read once for the statistics; the second loop writes `exp(x - m) / l`. The Triton version:
//!
//! ```text
//! row = tl.program_id(0)
//! m, l = -inf, 0.0
//! for j in range(0, N, BLOCK):
//!     cols = j + tl.arange(0, BLOCK)
//!     v = tl.load(x + row * N + cols, mask=cols < N, other=-inf)
//!     m_new = tl.maximum(m, tl.max(v, 0))
//!     l = l * tl.exp(m - m_new) + tl.sum(tl.exp(v - m_new), 0)
//!     m = m_new
//! for j in range(0, N, BLOCK):
//!     cols = j + tl.arange(0, BLOCK)
//!     v = tl.load(x + row * N + cols, mask=cols < N, other=-inf)
//!     tl.store(y + row * N + cols, tl.exp(v - m) / l, mask=cols < N)
//! ```
//!
//! Run with `cargo run --example online_softmax` to print the kernel's text form.

use kiln_ir::{DType::F32, DType::I32, Kernel, KernelBuilder};

pub const BLOCK: i32 = 64;

pub fn build() -> Kernel {
    let b = KernelBuilder::new("softmax_online");
    let (x, y) = (b.buffer("x", F32), b.buffer("y", F32));
    let n = b.scalar("n", I32);
    let base = b.program_id(0) * n;

    let init = [b.constant(f32::NEG_INFINITY, F32).named("m0"), b.constant(0.0, F32).named("l0")];
    let [m, l] = b.for_range(0, n, BLOCK, init, |j, [m, l]| {
        let cols = j + b.arange(0, BLOCK);
        let v = b.load_masked(x, base + cols, cols.lt(n), f32::NEG_INFINITY);
        let m_new = m.maximum(v.max(0));
        [m_new, l * (m - m_new).exp() + (v - m_new).exp().sum(0)]
    });
    b.for_range(0, n, BLOCK, [], |j, []| {
        let cols = j + b.arange(0, BLOCK);
        let mask = cols.lt(n);
        let v = b.load_masked(x, base + cols, mask, f32::NEG_INFINITY);
        b.store_masked(y, base + cols, (v - m).exp() / l, mask);
        []
    });
    b.finish().expect("softmax_online is a valid kernel")
}

#[allow(dead_code)]
fn main() {
    print!("{}", kiln_ir::text::print(&build()));
}
