//! The small ops of a transformer layer: RMSNorm, RoPE, SiLU·mul, argmax and softmax, plus the
//! little helpers their problems and config spaces share.

pub mod argmax;
pub mod rmsnorm;
pub mod rope;
pub mod silu_mul;
pub mod softmax;

use crate::KernelError;
use kiln_ir::{DType, Tile};

/// Parses the dtype key `key` = `name`, which must be one of `allowed`.
pub fn parse_dtype_in(kernel: &'static str, key: &str, name: &str, allowed: &[DType]) -> Result<DType, KernelError> {
    match DType::from_name(name) {
        Some(d) if allowed.contains(&d) => Ok(d),
        _ => {
            let names: Vec<&str> = allowed.iter().map(|d| d.name()).collect();
            let constraint = format!("{key} `{name}` is not one of {}", names.join(", "));
            Err(KernelError::Constraint { kernel, constraint })
        }
    }
}

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
