//! Paged KV-cache kernels: [`append`] (write new tokens' K/V into their cache slots), [`gather`]
//! (copy sequences out of the pages into contiguous K/V) and [`decode_attention`] (decode and
//! speculative-verification attention straight over the pages, with split-KV).
//!
//! # The paged cache
//!
//! The K cache and the V cache are two buffers of one layout, row-major
//! `[n_blocks, block, kv_heads, head_dim]`, dtype f16 (or f32 through the `dtype` key). A
//! sequence's token at position `p` lives in the block `block_tables[seq, p / block]` at offset
//! `p % block`; its *slot* is `block_id · block + p % block`, so its K vector for KV head `h` starts
//! at element `(slot · kv_heads + h) · head_dim`. One slot holds a token's whole
//! `kv_heads · head_dim` row contiguously, which is what the kernels copy and load.
//!
//! - `block_tables`: i32 `[batch, max_blocks]`, `max_blocks = ceil(ctx / block)`. Entries past a
//!   sequence's last used block are ignored; the input generators fill them with −1 so that a
//!   kernel reading them unmasked fails in the interpreter instead of passing by luck.
//! - `context_lens`: i32 `[batch]`, each in `1..=ctx` (the gather) or `q_len..=ctx` (attention).
//!
//! The input generators build realistic caches: every sequence gets distinct block ids drawn from a
//! shuffled pool, so its pages are scattered, and the pool holds more blocks than the sequences use
//! ([`SPARE_BLOCKS`] plus the tails of shorter sequences). Unused blocks and the slots past a
//! sequence's length inside its last block hold random data, which must not reach any result.

pub mod append;
pub mod decode_attention;
pub mod gather;

use crate::{ensure, KernelError};
use kiln_ir::interp::HostBuffer;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

/// Blocks of the pool beyond what the batch could use, so that some blocks are never referenced.
pub const SPARE_BLOCKS: u32 = 3;

/// Checks that every element index of a buffer of `len` elements fits the i32 offsets kernels use.
pub fn ensure_i32_indexable(kernel: &'static str, what: &str, len: u64) -> Result<(), KernelError> {
    ensure(kernel, len <= i32::MAX as u64, || format!("{what} has {len} elements, more than i32 offsets can index"))
}

/// `max_blocks`: block-table entries per sequence for contexts of up to `ctx` tokens.
pub fn max_blocks(ctx: u32, block: u32) -> u32 {
    ctx.div_ceil(block)
}

/// The block pool of a gather or attention problem: every sequence could fill `max_blocks`, plus
/// spares.
pub fn pool_blocks(batch: u32, max_blocks: u32) -> u32 {
    batch * max_blocks + SPARE_BLOCKS
}

/// Random context lengths in `min_len..=ctx`, one of them (at a random index) exactly `ctx`.
pub fn random_context_lens(rng: &mut StdRng, batch: u32, ctx: u32, min_len: u32) -> Vec<i32> {
    let mut lens: Vec<i32> = (0..batch).map(|_| rng.random_range(min_len..=ctx) as i32).collect();
    let longest = rng.random_range(0..batch as usize);
    lens[longest] = ctx as i32;
    lens
}

/// Block tables `[batch, max_blocks]` for sequences of `lens`: distinct block ids from a shuffled
/// pool of `n_blocks`, −1 past each sequence's last used block.
pub fn random_block_tables(rng: &mut StdRng, lens: &[i32], block: u32, max_blocks: u32, n_blocks: u32) -> Vec<i32> {
    let mut pool: Vec<i32> = (0..n_blocks as i32).collect();
    pool.shuffle(rng);
    let mut tables = vec![-1; lens.len() * max_blocks as usize];
    for (s, &len) in lens.iter().enumerate() {
        let used = (len as u32).div_ceil(block) as usize;
        let start = s * max_blocks as usize;
        tables[start..start + used].copy_from_slice(&pool[start..start + used]);
    }
    tables
}

/// An i32 host buffer.
pub fn i32_buffer(values: Vec<i32>) -> HostBuffer {
    HostBuffer::I32(values)
}

/// The slot of position `pos` of the sequence whose block-table row is `table` (host side, for
/// references).
pub fn slot_of(table: &[f64], block: usize, pos: usize) -> usize {
    table[pos / block] as usize * block + pos % block
}
