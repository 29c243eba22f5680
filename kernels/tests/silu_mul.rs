//! `silu_mul` against its reference in the interpreter, and its bad inputs.

mod common;

use common::{assert_conformance, assert_constraint};

#[test]
fn silu_mul_matches_reference() {
    // Ragged dims (not multiples of any block) and every activation dtype.
    for (i, shape) in
        ["tokens=1,dim=64", "tokens=3,dim=100,dtype=f16", "tokens=2,dim=1000,dtype=bf16", "tokens=4,dim=513"]
            .iter()
            .enumerate()
    {
        assert_conformance("silu_mul", shape, 3, 100 + i as u64);
    }
}

#[test]
fn silu_mul_rejects_bad_problems() {
    assert_constraint("silu_mul", "tokens=0,dim=8", "", "at least 1");
    assert_constraint("silu_mul", "tokens=1,dim=8,dtype=i32", "", "dtype `i32`");
    assert_constraint("silu_mul", "tokens=1,dim=8", "block=100", "block = 100");
    assert_constraint("silu_mul", "tokens=1,dim=8,heads=3", "", "unknown shape key `heads`");
}
