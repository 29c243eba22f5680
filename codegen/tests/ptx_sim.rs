//! The SIMT simulator on hand-written thread kernels: shuffles and barriers work, and each kind
//! of misuse (a barrier only part of the block reaches, two threads writing one shared word
//! between barriers, a branch that splits a warp, an access outside a buffer) is an error.

use kiln_codegen::ptx::sim::{self, SimError};
use kiln_codegen::ptx::thread::{
    BinOp, Cmp, Guard, Instr, KernelParam, Label, Operand, Reg, RegClass, Space, Special, Stmt, ThreadKernel, Ty,
};

fn r(class: RegClass, id: u32) -> Reg {
    Reg { class, id }
}

const TID: Reg = Reg { class: RegClass::B32, id: 0 };
const OUT: Reg = Reg { class: RegClass::B64, id: 0 };
const ADDR: Reg = Reg { class: RegClass::B64, id: 1 };
const OFF: Reg = Reg { class: RegClass::B64, id: 2 };
const SMEM: Reg = Reg { class: RegClass::B64, id: 3 };
const P: Reg = Reg { class: RegClass::Pred, id: 0 };

fn s(instr: Instr) -> Stmt {
    Stmt { guard: None, instr }
}

fn when(p: Reg, instr: Instr) -> Stmt {
    Stmt { guard: Some(Guard { reg: p, negate: false }), instr }
}

/// A kernel of `threads` threads with one output buffer (`u32`), whose body starts by reading
/// `%tid.x` into `TID`, the buffer into `OUT` and `&out[tid]` into `ADDR`, and the shared base
/// into `SMEM`.
fn kernel(threads: u32, shared_bytes: u32, body: Vec<Stmt>) -> ThreadKernel {
    let mut all = vec![
        s(Instr::ReadSpecial { dst: TID, special: Special::Tid }),
        s(Instr::LdParam { ty: Ty::U64, dst: OUT, index: 0 }),
        s(Instr::MulWide { ty: Ty::U32, dst: OFF, a: TID.into(), b: Operand::Int(4) }),
        s(Instr::Bin { op: BinOp::Add, ty: Ty::S64, dst: ADDR, a: OUT.into(), b: OFF.into() }),
        s(Instr::SharedBase { dst: SMEM }),
    ];
    all.extend(body);
    all.push(s(Instr::Ret));
    ThreadKernel {
        name: "test".to_string(),
        params: vec![
            KernelParam { name: "out_ptr".into(), ty: Ty::U64 },
            KernelParam { name: "out_len".into(), ty: Ty::U64 },
        ],
        body: all,
        reg_counts: [4, 0, 8, 4, 4],
        shared_bytes,
        threads,
    }
}

fn run(k: &ThreadKernel, threads: u32) -> Result<Vec<u32>, SimError> {
    let mut memory = vec![vec![0xEEu8; threads as usize * 4]];
    sim::run(k, [1, 1, 1], &[sim::buffer_address(0), u64::from(threads)], &mut memory)?;
    Ok(memory[0].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
}

#[test]
fn a_butterfly_shuffle_sums_a_warp_and_shared_memory_joins_the_warps() {
    // acc = tid; acc += shfl(acc, m) for m = 16..1; lane 0 writes smem[warp]; barrier; every
    // thread adds both warps' words and stores the total to out[tid].
    let (acc, other, warp, lane) = (r(RegClass::B32, 1), r(RegClass::B32, 2), r(RegClass::B32, 3), r(RegClass::B32, 4));
    let (word, total, x) = (r(RegClass::B64, 2), r(RegClass::B32, 5), r(RegClass::B32, 6));
    let mut body = vec![s(Instr::Mov { ty: Ty::U32, dst: acc, src: TID.into() })];
    for m in [16, 8, 4, 2, 1] {
        body.push(s(Instr::ShflBfly { dst: other, src: acc, lane_mask: m }));
        body.push(s(Instr::Bin { op: BinOp::Add, ty: Ty::U32, dst: acc, a: acc.into(), b: other.into() }));
    }
    body.extend([
        s(Instr::Bin { op: BinOp::Shr, ty: Ty::U32, dst: warp, a: TID.into(), b: Operand::Int(5) }),
        s(Instr::Bin { op: BinOp::And, ty: Ty::B32, dst: lane, a: TID.into(), b: Operand::Int(31) }),
        s(Instr::Setp { cmp: Cmp::Eq, ty: Ty::U32, dst: P, a: lane.into(), b: Operand::Int(0) }),
        s(Instr::MulWide { ty: Ty::U32, dst: word, a: warp.into(), b: Operand::Int(4) }),
        s(Instr::Bin { op: BinOp::Add, ty: Ty::S64, dst: word, a: SMEM.into(), b: word.into() }),
        when(P, Instr::St { space: Space::Shared, ty: Ty::U32, srcs: vec![acc.into()], addr: word, offset: 0 }),
        s(Instr::BarSync),
        s(Instr::Ld { space: Space::Shared, ty: Ty::U32, dsts: vec![total], addr: SMEM, offset: 0 }),
        s(Instr::Ld { space: Space::Shared, ty: Ty::U32, dsts: vec![x], addr: SMEM, offset: 4 }),
        s(Instr::Bin { op: BinOp::Add, ty: Ty::U32, dst: total, a: total.into(), b: x.into() }),
        s(Instr::St { space: Space::Global, ty: Ty::U32, srcs: vec![total.into()], addr: ADDR, offset: 0 }),
    ]);
    let k = kernel(64, 8, body);
    let out = run(&k, 64).unwrap();
    assert_eq!(out, vec![(0..64).sum::<u32>(); 64]);
}

#[test]
fn a_barrier_only_part_of_the_block_reaches_is_an_error() {
    // Warp 1 returns early (a branch uniform within each warp), warp 0 waits at the barrier.
    let (warp, exit) = (r(RegClass::B32, 1), Label(1));
    let body = vec![
        s(Instr::Bin { op: BinOp::Shr, ty: Ty::U32, dst: warp, a: TID.into(), b: Operand::Int(5) }),
        s(Instr::Setp { cmp: Cmp::Eq, ty: Ty::U32, dst: P, a: warp.into(), b: Operand::Int(1) }),
        when(P, Instr::Bra { target: exit }),
        s(Instr::BarSync),
        s(Instr::Label(exit)),
    ];
    let err = run(&kernel(64, 0, body), 64).unwrap_err();
    let SimError::PartialBarrier { waiting, returned, .. } = &err else { panic!("expected PartialBarrier, got {err}") };
    assert_eq!((waiting.as_slice(), returned.as_slice()), (&[0][..], &[1][..]));
}

#[test]
fn two_threads_writing_one_shared_word_between_barriers_is_an_error() {
    let body = vec![s(Instr::St { space: Space::Shared, ty: Ty::U32, srcs: vec![TID.into()], addr: SMEM, offset: 0 })];
    let err = run(&kernel(32, 4, body), 32).unwrap_err();
    assert!(matches!(err, SimError::SharedRace { word: 0, first: 0, second: 1, .. }), "{err}");
}

#[test]
fn writes_separated_by_a_barrier_are_no_race() {
    // Thread 0 writes word 0, barrier, thread 1 writes it: ordered, so allowed.
    let body = vec![
        s(Instr::Setp { cmp: Cmp::Eq, ty: Ty::U32, dst: P, a: TID.into(), b: Operand::Int(0) }),
        when(P, Instr::St { space: Space::Shared, ty: Ty::U32, srcs: vec![TID.into()], addr: SMEM, offset: 0 }),
        s(Instr::BarSync),
        s(Instr::Setp { cmp: Cmp::Eq, ty: Ty::U32, dst: P, a: TID.into(), b: Operand::Int(1) }),
        when(P, Instr::St { space: Space::Shared, ty: Ty::U32, srcs: vec![TID.into()], addr: SMEM, offset: 0 }),
        s(Instr::St { space: Space::Global, ty: Ty::U32, srcs: vec![TID.into()], addr: ADDR, offset: 0 }),
    ];
    assert_eq!(run(&kernel(32, 4, body), 32).unwrap(), (0..32).collect::<Vec<u32>>());
}

#[test]
fn a_branch_that_splits_a_warp_is_an_error() {
    let exit = Label(1);
    let body = vec![
        s(Instr::Setp { cmp: Cmp::Lt, ty: Ty::U32, dst: P, a: TID.into(), b: Operand::Int(5) }),
        when(P, Instr::Bra { target: exit }),
        s(Instr::Label(exit)),
    ];
    let err = run(&kernel(32, 0, body), 32).unwrap_err();
    assert!(matches!(err, SimError::Divergent { warp: 0, .. }), "{err}");
}

#[test]
fn an_access_past_the_end_of_a_buffer_is_an_error() {
    // 64 threads store into a buffer of 32 words.
    let body = vec![s(Instr::St { space: Space::Global, ty: Ty::U32, srcs: vec![TID.into()], addr: ADDR, offset: 0 })];
    let k = kernel(64, 0, body);
    let mut memory = vec![vec![0u8; 32 * 4]];
    let err = sim::run(&k, [1, 1, 1], &[sim::buffer_address(0), 32], &mut memory).unwrap_err();
    assert!(
        matches!(err, SimError::Fault { thread: 32, ref what, .. } if what.contains("outside the buffer")),
        "{err}"
    );
}

#[test]
fn a_loop_that_never_ends_is_reported_as_a_hang() {
    let head = Label(1);
    let body = vec![s(Instr::Label(head)), s(Instr::Bra { target: head })];
    let mut memory = vec![vec![0u8; 32 * 4]];
    let err = sim::run_with_limit(&kernel(32, 0, body), [1, 1, 1], &[sim::buffer_address(0), 32], &mut memory, 100_000)
        .unwrap_err();
    assert!(matches!(err, SimError::Hang { limit: 100_000, .. }), "{err}");
}

#[test]
fn a_vector_access_off_its_alignment_is_an_error() {
    // Each thread stores four words at `out + 16·tid + 4`: 4-byte aligned, not 16-byte aligned.
    let words: Vec<Operand> = (0..4).map(|_| TID.into()).collect();
    let body = vec![
        s(Instr::MulWide { ty: Ty::U32, dst: OFF, a: TID.into(), b: Operand::Int(16) }),
        s(Instr::Bin { op: BinOp::Add, ty: Ty::S64, dst: ADDR, a: OUT.into(), b: OFF.into() }),
        s(Instr::St { space: Space::Global, ty: Ty::U32, srcs: words.clone(), addr: ADDR, offset: 4 }),
    ];
    let mut memory = vec![vec![0u8; 32 * 16 + 16]];
    let k = kernel(32, 0, body);
    let e = sim::run(&k, [1, 1, 1], &[sim::buffer_address(0), 32 * 4 + 4], &mut memory).unwrap_err();
    assert!(matches!(&e, SimError::Fault { what, .. } if what.contains("misaligned 16-byte")), "{e}");
    // The same store at offset 0 is aligned and writes every word.
    let body = vec![
        s(Instr::MulWide { ty: Ty::U32, dst: OFF, a: TID.into(), b: Operand::Int(16) }),
        s(Instr::Bin { op: BinOp::Add, ty: Ty::S64, dst: ADDR, a: OUT.into(), b: OFF.into() }),
        s(Instr::St { space: Space::Global, ty: Ty::U32, srcs: words, addr: ADDR, offset: 0 }),
    ];
    let k = kernel(32, 0, body);
    let mut memory = vec![vec![0u8; 32 * 16]];
    sim::run(&k, [1, 1, 1], &[sim::buffer_address(0), 32 * 4], &mut memory).unwrap();
    let got: Vec<u32> = memory[0].chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    assert!(got.iter().enumerate().all(|(i, &w)| w == (i / 4) as u32), "{got:?}");
}

#[test]
fn packed_words_split_into_bytes_and_halves() {
    // One word 0x80FF_7F01 per thread: `bfe` gives its bytes zero- or sign-extended, `mov.b32
    // {lo, hi}` its halves; thread 0 writes all eight results.
    let w = r(RegClass::B32, 1);
    let outs: Vec<Reg> = (2..8).map(|i| r(RegClass::B32, i)).collect();
    let (lo, hi) = (r(RegClass::B16, 0), r(RegClass::B16, 1));
    let mut body = vec![
        s(Instr::Mov { ty: Ty::B32, dst: w, src: Operand::Int(0x80FF_7F01) }),
        s(Instr::Bfe { ty: Ty::U32, dst: outs[0], a: w, pos: 8, len: 8 }),
        s(Instr::Bfe { ty: Ty::S32, dst: outs[1], a: w, pos: 8, len: 8 }),
        s(Instr::Bfe { ty: Ty::S32, dst: outs[2], a: w, pos: 24, len: 8 }),
        s(Instr::Bfe { ty: Ty::S32, dst: outs[3], a: w, pos: 16, len: 8 }),
        s(Instr::SplitHalves { lo, hi, src: w }),
        s(Instr::Cvt { dst_ty: Ty::U32, src_ty: Ty::U16, dst: outs[4], src: lo }),
        s(Instr::Cvt { dst_ty: Ty::U32, src_ty: Ty::U16, dst: outs[5], src: hi }),
        s(Instr::Setp { cmp: Cmp::Eq, ty: Ty::U32, dst: P, a: TID.into(), b: Operand::Int(0) }),
    ];
    for (i, &o) in outs.iter().enumerate() {
        body.push(when(
            P,
            Instr::St { space: Space::Global, ty: Ty::U32, srcs: vec![o.into()], addr: OUT, offset: 4 * i as i64 },
        ));
    }
    let mut k = kernel(32, 0, body);
    k.reg_counts = [4, 2, 8, 4, 4];
    let got = run(&k, 32).unwrap();
    assert_eq!(&got[..6], &[0x7F, 0x7F, 0xFFFF_FF80, 0xFFFF_FFFF, 0x7F01, 0x80FF]);
}
