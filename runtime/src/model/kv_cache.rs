//! The paged KV cache's bookkeeping: a block allocator over a fixed pool, one block table per
//! sequence, and append / truncate / free.
//!
//! The cache memory itself (per layer, a K and a V buffer of `[n_blocks, kv_heads, block,
//! head_dim]`, the layout of [`kiln_kernels::paged`]) belongs to the model; this type decides which
//! slot every token of every sequence lives in. Every layer uses the same block ids, so one table
//! per sequence serves them all.
//!
//! Operations are all-or-nothing: [`KvCache::append`] either reserves every slot it was asked for
//! or changes nothing (a full pool is [`KvError::Exhausted`], and every other sequence keeps its
//! blocks and contents), and [`KvCache::truncate`] rolls back the last tokens of one sequence (the
//! rejected tokens of speculative decoding) and returns the blocks it no longer needs.

use std::collections::BTreeMap;

/// A sequence of the cache, handed out by [`KvCache::add_sequence`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SeqId(pub u64);

impl std::fmt::Display for SeqId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sequence {}", self.0)
    }
}

/// Why a cache operation was refused. The cache is unchanged after every error.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    #[error(
        "the KV cache is full: {seq} needs {needed} more blocks of {block} tokens but {free} of {total} are free; \
         finish or free other sequences, or build the model with more KV blocks"
    )]
    Exhausted { seq: SeqId, needed: usize, free: usize, total: usize, block: usize },
    #[error(
        "{seq} would hold {len} tokens, more than the {max} the cache was built for (the context); \
         shorten the prompt or the generation, or raise the maximum sequence length"
    )]
    TooLong { seq: SeqId, len: usize, max: usize },
    #[error("{seq} is not in the KV cache (never added, or already freed)")]
    UnknownSequence { seq: SeqId },
    #[error("cannot roll back {n} tokens of {seq}, which holds only {len}")]
    TruncateTooFar { seq: SeqId, n: usize, len: usize },
}

#[derive(Clone, Debug, Default)]
struct Sequence {
    /// Block ids in position order: position `p` lives in `blocks[p / block]`.
    blocks: Vec<u32>,
    len: usize,
}

/// Block allocator and per-sequence block tables.
#[derive(Clone, Debug)]
pub struct KvCache {
    block: usize,
    n_blocks: usize,
    max_seq_len: usize,
    /// Free block ids; allocation pops from the end (the lowest ids first when fresh).
    free: Vec<u32>,
    seqs: BTreeMap<SeqId, Sequence>,
    next_id: u64,
}

impl KvCache {
    /// A pool of `n_blocks` blocks of `block` tokens; no sequence may exceed `max_seq_len` tokens.
    pub fn new(n_blocks: usize, block: usize, max_seq_len: usize) -> KvCache {
        KvCache {
            block: block.max(1),
            n_blocks,
            max_seq_len,
            free: (0..n_blocks as u32).rev().collect(),
            seqs: BTreeMap::new(),
            next_id: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block
    }

    pub fn n_blocks(&self) -> usize {
        self.n_blocks
    }

    pub fn max_seq_len(&self) -> usize {
        self.max_seq_len
    }

    /// Block-table entries per sequence: `ceil(max_seq_len / block)`.
    pub fn max_blocks_per_seq(&self) -> usize {
        self.max_seq_len.div_ceil(self.block)
    }

    pub fn free_blocks(&self) -> usize {
        self.free.len()
    }

    /// A new, empty sequence (it owns no block until tokens are appended).
    pub fn add_sequence(&mut self) -> SeqId {
        let id = SeqId(self.next_id);
        self.next_id += 1;
        self.seqs.insert(id, Sequence::default());
        id
    }

    pub fn contains(&self, seq: SeqId) -> bool {
        self.seqs.contains_key(&seq)
    }

    fn get(&self, seq: SeqId) -> Result<&Sequence, KvError> {
        self.seqs.get(&seq).ok_or(KvError::UnknownSequence { seq })
    }

    /// Tokens the sequence holds.
    pub fn len(&self, seq: SeqId) -> Result<usize, KvError> {
        Ok(self.get(seq)?.len)
    }

    /// The sequence's blocks in position order.
    pub fn block_table(&self, seq: SeqId) -> Result<&[u32], KvError> {
        Ok(&self.get(seq)?.blocks)
    }

    /// The slot (`block_id · block + offset`) of position `pos` of `seq`, if it holds that position.
    pub fn slot(&self, seq: SeqId, pos: usize) -> Result<Option<usize>, KvError> {
        let s = self.get(seq)?;
        Ok((pos < s.len).then(|| s.blocks[pos / self.block] as usize * self.block + pos % self.block))
    }

    /// Checks that `n` more tokens fit `seq` without changing anything: the blocks they need.
    pub fn blocks_needed(&self, seq: SeqId, n: usize) -> Result<usize, KvError> {
        let s = self.get(seq)?;
        let len = s.len + n;
        if len > self.max_seq_len {
            return Err(KvError::TooLong { seq, len, max: self.max_seq_len });
        }
        Ok(len.div_ceil(self.block).saturating_sub(s.blocks.len()))
    }

    /// Reserves slots for `n` new tokens at the end of `seq` and returns the positions they take.
    /// All or nothing: when the pool cannot supply the blocks, nothing changes.
    pub fn append(&mut self, seq: SeqId, n: usize) -> Result<std::ops::Range<usize>, KvError> {
        let needed = self.blocks_needed(seq, n)?;
        if needed > self.free.len() {
            return Err(KvError::Exhausted {
                seq,
                needed,
                free: self.free.len(),
                total: self.n_blocks,
                block: self.block,
            });
        }
        let at = self.free.len() - needed;
        let fresh: Vec<u32> = self.free.drain(at..).rev().collect();
        let s = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSequence { seq })?;
        s.blocks.extend(fresh);
        let start = s.len;
        s.len += n;
        Ok(start..s.len)
    }

    /// Rolls back the last `n` tokens of `seq`, returning blocks that no longer hold any of its
    /// tokens to the pool. The contents of the remaining slots are untouched.
    pub fn truncate(&mut self, seq: SeqId, n: usize) -> Result<(), KvError> {
        let block = self.block;
        let s = self.seqs.get_mut(&seq).ok_or(KvError::UnknownSequence { seq })?;
        if n > s.len {
            return Err(KvError::TruncateTooFar { seq, n, len: s.len });
        }
        s.len -= n;
        let keep = s.len.div_ceil(block);
        self.free.extend(s.blocks.drain(keep..).rev());
        Ok(())
    }

    /// Removes `seq` and returns all its blocks to the pool.
    pub fn free(&mut self, seq: SeqId) -> Result<(), KvError> {
        let s = self.seqs.remove(&seq).ok_or(KvError::UnknownSequence { seq })?;
        self.free.extend(s.blocks.into_iter().rev());
        Ok(())
    }
}
