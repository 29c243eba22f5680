//! Helpers for choosing tile sizes and writing tile code that kernels share.

use kiln_ir::Tile;

/// The smallest of `choices` (ascending) that is at least `len`, or the largest one.
pub fn covering(choices: &[u32], len: u32) -> u32 {
    choices.iter().copied().find(|&c| c >= len).or(choices.last().copied()).unwrap_or(len)
}

/// The blocks of `choices` (ascending) worth trying on a row of `len` elements: every block up
/// to the first that covers the row (wider ones only mask work away), within `max_tile`.
pub fn blocks_for(choices: &[u32], len: u32, max_tile: u64) -> Vec<u32> {
    let cover = covering(choices, len);
    choices.iter().copied().filter(|&b| b <= cover && u64::from(b) <= max_tile).collect()
}

/// Pins a closure's tile lifetime to the builder's (a closure annotated `|t: Tile|` would be
/// generic over it and could not return tiles built from captured ones).
pub fn tile_fn<'b, F: Fn(Tile<'b>) -> Tile<'b>>(f: F) -> F {
    f
}
