//! Paged KV-cache kernels: [`append`] (write new tokens' K/V into their cache slots), [`gather`]
//! (copy sequences out of the pages into contiguous K/V) and [`decode_attention`] (decode and
//! speculative-verification attention straight over the pages, with split-KV).
//!
//! # The paged cache
//!
//! The K cache and the V cache are two buffers of one layout, row-major
//! `[n_blocks, kv_heads, block, head_dim]` ("HND" pages), dtype f16 (or f32 through the `dtype`
//! key). A sequence's token at position `p` lives in the block `block_tables[seq, p / block]` at
//! offset `o = p % block`; its *slot* is `block_id · block + o`, and its K vector for KV head `h`
//! starts at element `((block_id · kv_heads + h) · block + o) · head_dim` ([`row_start`]). Within a
//! page, each KV head's rows are one contiguous run of `block · head_dim` elements: attention,
//! which reads one KV head's keys at a time, streams 4 KiB runs (16 f16 rows of 128) rather than
//! 256-byte rows one slot apart. Against the slot-major `[n_blocks, block, kv_heads, head_dim]`
//! layout, at batch 16 over 2048 keys, 8 KV heads of 128, 2 Zen 5 threads, 6 interleaved runs of
//! each default: `attention_decode_paged` (32 query heads) 2196-2434 µs, median 2284, against
//! 2363-2507, median 2394 (0.72 of the read roofline against 0.68); `paged_kv_gather`, which must
//! interleave the heads' runs to write whole `[ctx, kv_heads, head_dim]` rows, 6503-7791 µs,
//! median 7170, against 5607-6754, median 6234 (0.76 against 0.87). Attention runs every layer
//! of every step; the gather serves no step of the runtime.
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

/// The shape of a paged cache: tokens per block, KV heads, elements per head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageShape {
    pub block: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The first element of KV head `h`'s row of the token in `slot` (`block_id · block + offset`),
/// host side, for references: `((block_id · kv_heads + h) · block + offset) · head_dim`.
pub fn row_start(shape: PageShape, slot: usize, h: usize) -> usize {
    let PageShape { block, kv_heads, head_dim } = shape;
    ((slot / block * kv_heads + h) * block + slot % block) * head_dim
}

/// The slot of position `pos` of the sequence whose block-table row is `table` (host side, for
/// references).
pub fn slot_of(table: &[f64], block: usize, pos: usize) -> usize {
    table[pos / block] as usize * block + pos % block
}
