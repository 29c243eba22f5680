//! The paged KV cache's bookkeeping: allocation, block tables, truncate, free, exhaustion and
//! every refusal leaving the cache unchanged; a random sequence of operations against a simple
//! model of what each sequence should hold.

use kiln_runtime::model::kv_cache::{KvCache, KvError, SeqId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};

#[test]
fn append_allocates_whole_blocks_and_maps_positions_to_slots() {
    let mut c = KvCache::new(8, 4, 64);
    let a = c.add_sequence();
    assert_eq!(c.append(a, 5).unwrap(), 0..5);
    assert_eq!(c.block_table(a).unwrap().len(), 2);
    assert_eq!(c.free_blocks(), 6);
    assert_eq!(c.append(a, 3).unwrap(), 5..8);
    assert_eq!(c.block_table(a).unwrap().len(), 2, "8 tokens fit 2 blocks of 4");
    let table = c.block_table(a).unwrap().to_vec();
    for pos in 0..8 {
        let slot = c.slot(a, pos).unwrap().unwrap();
        assert_eq!(slot, table[pos / 4] as usize * 4 + pos % 4);
    }
    assert_eq!(c.slot(a, 8).unwrap(), None);
}

#[test]
fn exhaustion_is_typed_and_changes_nothing() {
    let mut c = KvCache::new(3, 4, 64);
    let (a, b) = (c.add_sequence(), c.add_sequence());
    c.append(a, 6).unwrap();
    let before = c.block_table(a).unwrap().to_vec();
    let err = c.append(b, 9).unwrap_err();
    assert_eq!(err, KvError::Exhausted { seq: b, needed: 3, free: 1, total: 3, block: 4 });
    assert!(err.to_string().contains("free"), "{err}");
    assert_eq!(c.len(b).unwrap(), 0);
    assert!(c.block_table(b).unwrap().is_empty());
    assert_eq!(c.block_table(a).unwrap(), before.as_slice());
    assert_eq!(c.free_blocks(), 1);
    c.append(b, 4).unwrap();
    assert_eq!(c.free_blocks(), 0);
}

#[test]
fn truncate_returns_blocks_and_keeps_the_prefix() {
    let mut c = KvCache::new(4, 4, 64);
    let a = c.add_sequence();
    c.append(a, 10).unwrap();
    let table = c.block_table(a).unwrap().to_vec();
    c.truncate(a, 6).unwrap();
    assert_eq!(c.len(a).unwrap(), 4);
    assert_eq!(c.block_table(a).unwrap(), &table[..1]);
    assert_eq!(c.free_blocks(), 3);
    assert_eq!(c.truncate(a, 5).unwrap_err(), KvError::TruncateTooFar { seq: a, n: 5, len: 4 });
    c.truncate(a, 4).unwrap();
    assert!(c.block_table(a).unwrap().is_empty());
    assert_eq!(c.free_blocks(), 4);
}

#[test]
fn too_long_and_unknown_sequences_are_refused() {
    let mut c = KvCache::new(100, 4, 10);
    let a = c.add_sequence();
    c.append(a, 8).unwrap();
    assert_eq!(c.append(a, 3).unwrap_err(), KvError::TooLong { seq: a, len: 11, max: 10 });
    assert_eq!(c.len(a).unwrap(), 8);
    c.free(a).unwrap();
    assert_eq!(c.free_blocks(), 100);
    assert_eq!(c.append(a, 1).unwrap_err(), KvError::UnknownSequence { seq: a });
    assert_eq!(c.free(a).unwrap_err(), KvError::UnknownSequence { seq: a });
    assert_eq!(c.len(SeqId(77)).unwrap_err(), KvError::UnknownSequence { seq: SeqId(77) });
}

/// Random appends, truncates, frees and new sequences: block tables stay disjoint, cover each
/// sequence's tokens exactly, and together with the free list account for every block.
#[test]
fn random_operations_keep_the_pool_consistent() {
    let mut rng = StdRng::seed_from_u64(7);
    let (n_blocks, block) = (40, 4);
    let mut c = KvCache::new(n_blocks, block, 60);
    let mut lens: BTreeMap<SeqId, usize> = BTreeMap::new();
    for _ in 0..2000 {
        match rng.random_range(0..10) {
            0 => {
                lens.insert(c.add_sequence(), 0);
            }
            1 if !lens.is_empty() => {
                let s = *lens.keys().nth(rng.random_range(0..lens.len())).unwrap();
                c.free(s).unwrap();
                lens.remove(&s);
            }
            2..=3 if !lens.is_empty() => {
                let s = *lens.keys().nth(rng.random_range(0..lens.len())).unwrap();
                let n = rng.random_range(0..=lens[&s]);
                c.truncate(s, n).unwrap();
                *lens.get_mut(&s).unwrap() -= n;
            }
            _ if !lens.is_empty() => {
                let s = *lens.keys().nth(rng.random_range(0..lens.len())).unwrap();
                let n = rng.random_range(1..20);
                let free = c.free_blocks();
                match c.append(s, n) {
                    Ok(r) => {
                        assert_eq!(r, lens[&s]..lens[&s] + n);
                        *lens.get_mut(&s).unwrap() += n;
                    }
                    Err(KvError::TooLong { len, .. }) => assert!(len > 60 && len == lens[&s] + n),
                    Err(KvError::Exhausted { needed, .. }) => assert!(needed > free),
                    Err(e) => panic!("{e}"),
                }
            }
            _ => {}
        }
        let mut used = BTreeSet::new();
        for (&s, &len) in &lens {
            let table = c.block_table(s).unwrap();
            assert_eq!(c.len(s).unwrap(), len);
            assert_eq!(table.len(), len.div_ceil(block), "{s} holds exactly the blocks it needs");
            for &b in table {
                assert!((b as usize) < n_blocks && used.insert(b), "block {b} used twice");
            }
        }
        assert_eq!(used.len() + c.free_blocks(), n_blocks, "every block is used or free");
    }
}
