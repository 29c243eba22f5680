//! The SIMT simulator: runs a [`ThreadKernel`] over a grid on host memory, the way a GPU would,
//! so the PTX backend is checked against the interpreter without a GPU.
//!
//! Blocks run one after another; within a block each warp runs its 32 lanes in lockstep, one
//! instruction for all lanes at a time (so `shfl.sync` reads every lane's value from before the
//! instruction). A warp runs until `bar.sync` or `ret`; when every warp waits at the barrier they
//! all go on. Errors instead of undefined behaviour:
//! - a barrier reached by only part of the block (some warps returned), [`SimError::PartialBarrier`];
//! - two threads writing one shared-memory word between barriers, [`SimError::SharedRace`];
//! - a branch that splits a warp ([`SimError::Divergent`]: the lowering only emits uniform ones);
//! - an access outside a buffer or outside shared memory, an access (scalar or `.v2` / `.v4`)
//!   not aligned to its whole size, integer division by zero, `trap`, and
//!   a block running more than [`STEP_LIMIT`] warp instructions (a hang).
//!
//! Memory: buffer `i` lives at [`buffer_address`]`(i)` (its index in the top bits), shared memory
//! at address 0 of its own space.

use super::thread::{BinOp, Cmp, Instr, Label, Operand, Reg, RegClass, Space, Special, ThreadKernel, Ty, UnOp};
use half::{bf16, f16};
use std::collections::HashMap;

/// Warp instructions one block may run before [`run`] calls it a hang.
pub const STEP_LIMIT: u64 = 200_000_000;

const BUFFER_SHIFT: u32 = 40;

/// The simulated global address of buffer `index`.
pub fn buffer_address(index: usize) -> u64 {
    (index as u64 + 1) << BUFFER_SHIFT
}

/// Why a simulated run failed.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SimError {
    #[error("block {block:?}: warps {waiting:?} wait at a barrier that warps {returned:?} never reach")]
    PartialBarrier { block: [u32; 3], waiting: Vec<u32>, returned: Vec<u32> },
    #[error("block {block:?}: threads {first} and {second} both write shared word {word} between barriers (pc {pc})")]
    SharedRace { block: [u32; 3], word: u64, first: u32, second: u32, pc: usize },
    #[error("block {block:?}, warp {warp}: branch at pc {pc} splits the warp")]
    Divergent { block: [u32; 3], warp: u32, pc: usize },
    #[error("block {block:?}, thread {thread}: {what} at pc {pc}")]
    Fault { block: [u32; 3], thread: u32, pc: usize, what: String },
    #[error("block {block:?}: more than {limit} warp instructions; the kernel does not terminate")]
    Hang { block: [u32; 3], limit: u64 },
    #[error("bad launch: {0}")]
    Launch(String),
}

/// Runs `kernel` over `grid`. `params` holds the raw bits of each kernel parameter (pointers as
/// given by [`buffer_address`]); `buffers` the bytes of each buffer.
pub fn run(kernel: &ThreadKernel, grid: [u32; 3], params: &[u64], buffers: &mut [Vec<u8>]) -> Result<(), SimError> {
    run_with_limit(kernel, grid, params, buffers, STEP_LIMIT)
}

/// [`run`] with another limit on the warp instructions of one block.
pub fn run_with_limit(
    kernel: &ThreadKernel,
    grid: [u32; 3],
    params: &[u64],
    buffers: &mut [Vec<u8>],
    step_limit: u64,
) -> Result<(), SimError> {
    if params.len() != kernel.params.len() {
        return Err(SimError::Launch(format!("{} parameters, got {}", kernel.params.len(), params.len())));
    }
    if !kernel.threads.is_multiple_of(32) || kernel.threads == 0 {
        return Err(SimError::Launch(format!("{} threads is not a whole number of warps", kernel.threads)));
    }
    let labels: HashMap<Label, usize> = kernel
        .body
        .iter()
        .enumerate()
        .filter_map(|(pc, s)| if let Instr::Label(l) = s.instr { Some((l, pc)) } else { None })
        .collect();
    let mut offsets = [0usize; 5];
    let mut total = 0;
    for (i, &n) in kernel.reg_counts.iter().enumerate() {
        offsets[i] = total;
        total += n as usize;
    }
    let sim = Sim { kernel, params, labels, offsets, total, grid, step_limit };
    for z in 0..grid[2] {
        for y in 0..grid[1] {
            for x in 0..grid[0] {
                sim.block([x, y, z], buffers)?;
            }
        }
    }
    Ok(())
}

struct Sim<'a> {
    kernel: &'a ThreadKernel,
    params: &'a [u64],
    labels: HashMap<Label, usize>,
    offsets: [usize; 5],
    total: usize,
    grid: [u32; 3],
    step_limit: u64,
}

struct Warp {
    pc: usize,
    /// Registers lane-major: `regs[reg * 32 + lane]`, raw bits.
    regs: Vec<u64>,
    done: bool,
    waiting: bool,
}

/// Shared memory and, per 4-byte word, the thread that wrote it since the last barrier.
struct Shared {
    bytes: Vec<u8>,
    writer: Vec<Option<u32>>,
}

impl Sim<'_> {
    fn index(&self, r: Reg) -> usize {
        let class = RegClass::ALL.iter().position(|&c| c == r.class).unwrap_or(0);
        (self.offsets[class] + r.id as usize) * 32
    }

    fn block(&self, block: [u32; 3], buffers: &mut [Vec<u8>]) -> Result<(), SimError> {
        let warps_n = self.kernel.threads / 32;
        let mut warps: Vec<Warp> =
            (0..warps_n).map(|_| Warp { pc: 0, regs: vec![0; self.total * 32], done: false, waiting: false }).collect();
        let size = self.kernel.shared_bytes as usize;
        let mut shared = Shared { bytes: vec![0xA5; size], writer: vec![None; size.div_ceil(4)] };
        let mut steps = 0u64;
        loop {
            for (w, warp) in warps.iter_mut().enumerate() {
                while !warp.done && !warp.waiting {
                    steps += 1;
                    if steps > self.step_limit {
                        return Err(SimError::Hang { block, limit: self.step_limit });
                    }
                    self.step(block, w as u32, warp, &mut shared, buffers)?;
                }
            }
            let waiting: Vec<u32> = (0..warps_n).filter(|&w| warps[w as usize].waiting).collect();
            let returned: Vec<u32> = (0..warps_n).filter(|&w| warps[w as usize].done).collect();
            if waiting.is_empty() {
                return Ok(());
            }
            if !returned.is_empty() {
                return Err(SimError::PartialBarrier { block, waiting, returned });
            }
            for warp in &mut warps {
                warp.waiting = false;
            }
            shared.writer.iter_mut().for_each(|w| *w = None);
        }
    }

    /// Executes the instruction at `warp.pc` for every lane whose guard holds.
    fn step(
        &self,
        block: [u32; 3],
        w: u32,
        warp: &mut Warp,
        shared: &mut Shared,
        buffers: &mut [Vec<u8>],
    ) -> Result<(), SimError> {
        let pc = warp.pc;
        let Some(stmt) = self.kernel.body.get(pc) else {
            warp.done = true;
            return Ok(());
        };
        let active: Vec<bool> = (0..32)
            .map(|lane| match stmt.guard {
                None => true,
                Some(g) => (warp.regs[self.index(g.reg) + lane] != 0) != g.negate,
            })
            .collect();
        let fault = |lane: usize, what: String| SimError::Fault { block, thread: w * 32 + lane as u32, pc, what };
        warp.pc += 1;
        let get = |regs: &Vec<u64>, op: Operand, lane: usize| -> u64 {
            match op {
                Operand::Reg(r) => regs[self.index(r) + lane],
                Operand::Int(i) => i as u64,
                Operand::F32(f) => u64::from(f.to_bits()),
            }
        };
        match &stmt.instr {
            Instr::Label(_) => {}
            Instr::BarSync => {
                if active.iter().any(|a| !a) {
                    return Err(SimError::Divergent { block, warp: w, pc });
                }
                warp.waiting = true;
            }
            Instr::Ret => {
                if active.iter().all(|&a| a) {
                    warp.done = true;
                } else if active.iter().any(|&a| a) {
                    return Err(SimError::Divergent { block, warp: w, pc });
                }
            }
            Instr::Trap => {
                if let Some(lane) = active.iter().position(|&a| a) {
                    return Err(fault(lane, "trap".to_string()));
                }
            }
            Instr::Bra { target } => {
                let taken = active.iter().filter(|&&a| a).count();
                if taken == 32 {
                    warp.pc = self.labels[target];
                } else if taken != 0 {
                    return Err(SimError::Divergent { block, warp: w, pc });
                }
            }
            Instr::ShflBfly { dst, src, lane_mask } => {
                let before: Vec<u64> = (0..32).map(|l| warp.regs[self.index(*src) + l]).collect();
                let dst = self.index(*dst);
                for (lane, _) in active.iter().enumerate().filter(|(_, &a)| a) {
                    warp.regs[dst + lane] = before[lane ^ (*lane_mask as usize & 31)];
                }
            }
            instr => {
                for (lane, _) in active.iter().enumerate().filter(|(_, &a)| a) {
                    let thread = w * 32 + lane as u32;
                    self.lane(instr, block, thread, lane, warp, shared, buffers, &get).map_err(|what| {
                        if let LaneError::Race { word, first } = what {
                            SimError::SharedRace { block, word, first, second: thread, pc }
                        } else {
                            fault(lane, what.to_string())
                        }
                    })?;
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn lane(
        &self,
        instr: &Instr,
        block: [u32; 3],
        thread: u32,
        lane: usize,
        warp: &mut Warp,
        shared: &mut Shared,
        buffers: &mut [Vec<u8>],
        get: &dyn Fn(&Vec<u64>, Operand, usize) -> u64,
    ) -> Result<(), LaneError> {
        let regs = &mut warp.regs;
        let value = match instr {
            Instr::Mov { ty, src, .. } => mask(*ty, get(regs, *src, lane)),
            Instr::ReadSpecial { special, .. } => u64::from(match special {
                Special::Tid => thread,
                Special::CtaId(a) => block[*a as usize % 3],
                Special::NCtaId(a) => self.grid[*a as usize % 3],
            }),
            Instr::LdParam { ty, index, .. } => mask(*ty, self.params[*index]),
            Instr::Bin { op, ty, a, b, .. } => bin(*op, *ty, get(regs, *a, lane), get(regs, *b, lane))?,
            Instr::Un { op, ty, a, .. } => un(*op, *ty, get(regs, *a, lane)),
            Instr::Fma { ty, a, b, c, .. } => {
                let (a, b, c) = (get(regs, *a, lane), get(regs, *b, lane), get(regs, *c, lane));
                if *ty == Ty::F32 {
                    u64::from(
                        f32::from_bits(a as u32).mul_add(f32::from_bits(b as u32), f32::from_bits(c as u32)).to_bits(),
                    )
                } else {
                    mask(*ty, (a as u32).wrapping_mul(b as u32).wrapping_add(c as u32) as u64)
                }
            }
            Instr::MulWide { ty, a, b, .. } => {
                let (a, b) = (get(regs, *a, lane), get(regs, *b, lane));
                if *ty == Ty::S32 {
                    (i64::from(a as i32) * i64::from(b as i32)) as u64
                } else {
                    u64::from(a as u32) * u64::from(b as u32)
                }
            }
            Instr::Bfe { ty, a, pos, len, .. } => {
                let bits = (regs[self.index(*a) + lane] as u32) >> pos.min(&31);
                let len = (*len).clamp(1, 32);
                let field = if len == 32 { bits } else { bits & ((1u32 << len) - 1) };
                let sign = *ty == Ty::S32 && len < 32 && field >> (len - 1) & 1 == 1;
                u64::from(if sign { field | !((1u32 << len) - 1) } else { field })
            }
            Instr::SplitHalves { lo, hi, src } => {
                let v = regs[self.index(*src) + lane];
                regs[self.index(*lo) + lane] = v & 0xFFFF;
                regs[self.index(*hi) + lane] = (v >> 16) & 0xFFFF;
                return Ok(());
            }
            Instr::PackHalves { lo, hi, .. } => {
                (regs[self.index(*lo) + lane] & 0xFFFF) | (regs[self.index(*hi) + lane] & 0xFFFF) << 16
            }
            Instr::Setp { cmp, ty, a, b, .. } => u64::from(setp(*cmp, *ty, get(regs, *a, lane), get(regs, *b, lane))),
            Instr::Selp { ty, a, b, pred, .. } => {
                let p = regs[self.index(*pred) + lane] != 0;
                mask(*ty, if p { get(regs, *a, lane) } else { get(regs, *b, lane) })
            }
            Instr::Cvt { dst_ty, src_ty, src, .. } => cvt(*dst_ty, *src_ty, regs[self.index(*src) + lane])?,
            Instr::CvtaGlobal { src, .. } => regs[self.index(*src) + lane],
            Instr::SharedBase { .. } => 0,
            Instr::Ld { space, ty, dsts, addr, offset } => {
                let base = regs[self.index(*addr) + lane].wrapping_add(*offset as u64);
                let size = ty_bytes(*ty);
                aligned(base, size * dsts.len())?;
                for (i, d) in dsts.iter().enumerate() {
                    let at = base + (i * size) as u64;
                    let bytes = match space {
                        Space::Global => global(buffers, at, size)?,
                        Space::Shared => shared_slice(&mut shared.bytes, at, size)?,
                    };
                    let mut raw = [0u8; 8];
                    raw[..size].copy_from_slice(bytes);
                    let v = u64::from_le_bytes(raw);
                    let v = match ty {
                        Ty::S8 => i64::from(v as u8 as i8) as u64 & 0xFFFF_FFFF,
                        Ty::S32 => v & 0xFFFF_FFFF,
                        _ => v,
                    };
                    regs[self.index(*d) + lane] = v;
                }
                return Ok(());
            }
            Instr::St { space, ty, srcs, addr, offset } => {
                let base = regs[self.index(*addr) + lane].wrapping_add(*offset as u64);
                let size = ty_bytes(*ty);
                aligned(base, size * srcs.len())?;
                for (i, s) in srcs.iter().enumerate() {
                    let at = base + (i * size) as u64;
                    let v = get(regs, *s, lane).to_le_bytes();
                    match space {
                        Space::Global => global(buffers, at, size)?.copy_from_slice(&v[..size]),
                        Space::Shared => {
                            for word in at / 4..(at + size as u64).div_ceil(4) {
                                let slot = shared.writer.get_mut(word as usize).ok_or(LaneError::SharedBounds(at))?;
                                match *slot {
                                    Some(first) if first != thread => return Err(LaneError::Race { word, first }),
                                    _ => *slot = Some(thread),
                                }
                            }
                            shared_slice(&mut shared.bytes, at, size)?.copy_from_slice(&v[..size]);
                        }
                    }
                }
                return Ok(());
            }
            Instr::RedAdd { ty, addr, src } => {
                let at = regs[self.index(*addr) + lane];
                let bytes = global(buffers, at, 4)?;
                let old = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                let add = get(regs, *src, lane) as u32;
                let new = if *ty == Ty::F32 {
                    (f32::from_bits(old) + f32::from_bits(add)).to_bits()
                } else {
                    old.wrapping_add(add)
                };
                bytes.copy_from_slice(&new.to_le_bytes());
                return Ok(());
            }
            Instr::BarSync
            | Instr::ShflBfly { .. }
            | Instr::Label(_)
            | Instr::Bra { .. }
            | Instr::Trap
            | Instr::Ret => return Ok(()),
        };
        let dst = match instr {
            Instr::Mov { dst, .. }
            | Instr::ReadSpecial { dst, .. }
            | Instr::LdParam { dst, .. }
            | Instr::Bin { dst, .. }
            | Instr::Un { dst, .. }
            | Instr::Fma { dst, .. }
            | Instr::MulWide { dst, .. }
            | Instr::Setp { dst, .. }
            | Instr::Selp { dst, .. }
            | Instr::Cvt { dst, .. }
            | Instr::Bfe { dst, .. }
            | Instr::PackHalves { dst, .. }
            | Instr::CvtaGlobal { dst, .. }
            | Instr::SharedBase { dst } => *dst,
            _ => return Ok(()),
        };
        regs[self.index(dst) + lane] = value;
        Ok(())
    }
}

#[derive(Debug)]
enum LaneError {
    Race {
        word: u64,
        first: u32,
    },
    SharedBounds(u64),
    GlobalBounds(u64),
    DivisionByZero,
    /// A vector (or scalar) access whose address is not a multiple of its total size.
    Misaligned {
        at: u64,
        bytes: usize,
    },
    Unsupported(String),
}

impl std::fmt::Display for LaneError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LaneError::Race { word, first } => write!(f, "race on shared word {word} with thread {first}"),
            LaneError::Misaligned { at, bytes } => {
                let place = match at >> BUFFER_SHIFT {
                    0 => format!("shared byte {at}"),
                    b => format!("buffer {} byte {}", b - 1, at & ((1 << BUFFER_SHIFT) - 1)),
                };
                write!(f, "misaligned {bytes}-byte access at {place}: an access must be aligned to its whole size")
            }
            LaneError::SharedBounds(a) => write!(f, "shared-memory access at {a} outside the block's array"),
            LaneError::GlobalBounds(a) => {
                write!(
                    f,
                    "global access at buffer {} byte {} outside the buffer",
                    (a >> BUFFER_SHIFT) as i64 - 1,
                    a & ((1 << BUFFER_SHIFT) - 1)
                )
            }
            LaneError::DivisionByZero => write!(f, "integer division by zero"),
            LaneError::Unsupported(what) => write!(f, "the simulator does not implement {what}"),
        }
    }
}

fn global(buffers: &mut [Vec<u8>], at: u64, size: usize) -> Result<&mut [u8], LaneError> {
    let index = (at >> BUFFER_SHIFT) as usize;
    let off = (at & ((1 << BUFFER_SHIFT) - 1)) as usize;
    let buf = index.checked_sub(1).and_then(|i| buffers.get_mut(i)).ok_or(LaneError::GlobalBounds(at))?;
    buf.get_mut(off..off + size).ok_or(LaneError::GlobalBounds(at))
}

/// Global and shared accesses of `bytes` (an element or a whole vector) must be aligned to it,
/// as on the GPU, where a misaligned vector access faults.
fn aligned(at: u64, bytes: usize) -> Result<(), LaneError> {
    if at.is_multiple_of(bytes as u64) {
        Ok(())
    } else {
        Err(LaneError::Misaligned { at, bytes })
    }
}

fn shared_slice(bytes: &mut [u8], at: u64, size: usize) -> Result<&mut [u8], LaneError> {
    let at_usize = usize::try_from(at).map_err(|_| LaneError::SharedBounds(at))?;
    bytes.get_mut(at_usize..at_usize + size).ok_or(LaneError::SharedBounds(at))
}

fn ty_bytes(ty: Ty) -> usize {
    match ty {
        Ty::Pred | Ty::B8 | Ty::U8 | Ty::S8 => 1,
        Ty::B16 | Ty::U16 | Ty::F16 | Ty::Bf16 => 2,
        Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 4,
        Ty::B64 | Ty::U64 | Ty::S64 => 8,
    }
}

/// Keeps the bits a register of the instruction's width holds.
fn mask(ty: Ty, v: u64) -> u64 {
    match ty_bytes(ty) {
        1 if ty == Ty::Pred => u64::from(v != 0),
        1 => v & 0xFF,
        2 => v & 0xFFFF,
        4 => v & 0xFFFF_FFFF,
        _ => v,
    }
}

fn f(v: u64) -> f32 {
    f32::from_bits(v as u32)
}

fn fb(x: f32) -> u64 {
    u64::from(x.to_bits())
}

fn bin(op: BinOp, ty: Ty, a: u64, b: u64) -> Result<u64, LaneError> {
    if ty == Ty::F32 {
        let (x, y) = (f(a), f(b));
        return Ok(fb(match op {
            BinOp::Add => x + y,
            BinOp::Sub => x - y,
            BinOp::Mul => x * y,
            BinOp::Div => x / y,
            BinOp::Min => x.min(y),
            BinOp::Max => x.max(y),
            other => return Err(LaneError::Unsupported(format!("{other:?}.f32"))),
        }));
    }
    if ty == Ty::Pred {
        let (x, y) = (a != 0, b != 0);
        return Ok(u64::from(match op {
            BinOp::And => x && y,
            BinOp::Or => x || y,
            BinOp::Xor => x != y,
            other => return Err(LaneError::Unsupported(format!("{other:?}.pred"))),
        }));
    }
    if matches!(ty, Ty::S64 | Ty::U64 | Ty::B64) {
        return match op {
            BinOp::Add => Ok(a.wrapping_add(b)),
            BinOp::Sub => Ok(a.wrapping_sub(b)),
            other => Err(LaneError::Unsupported(format!("{other:?}.{}", ty.name()))),
        };
    }
    let (ua, ub) = (a as u32, b as u32);
    let (sa, sb) = (ua as i32, ub as i32);
    let signed = ty == Ty::S32;
    let r: u32 = match op {
        BinOp::Add => ua.wrapping_add(ub),
        BinOp::Sub => ua.wrapping_sub(ub),
        BinOp::Mul => ua.wrapping_mul(ub),
        BinOp::Div | BinOp::Rem if ub == 0 => return Err(LaneError::DivisionByZero),
        BinOp::Div if signed => sa.wrapping_div(sb) as u32,
        BinOp::Div => ua / ub,
        BinOp::Rem if signed => sa.wrapping_rem(sb) as u32,
        BinOp::Rem => ua % ub,
        BinOp::Min if signed => sa.min(sb) as u32,
        BinOp::Min => ua.min(ub),
        BinOp::Max if signed => sa.max(sb) as u32,
        BinOp::Max => ua.max(ub),
        BinOp::And => ua & ub,
        BinOp::Or => ua | ub,
        BinOp::Xor => ua ^ ub,
        // PTX clamps shift amounts above the width to the width.
        BinOp::Shl => ua.checked_shl(ub).unwrap_or(0),
        BinOp::Shr if signed => sa.checked_shr(ub.min(31)).unwrap_or(0) as u32,
        BinOp::Shr => ua.checked_shr(ub).unwrap_or(0),
    };
    Ok(u64::from(r))
}

fn un(op: UnOp, ty: Ty, a: u64) -> u64 {
    match ty {
        Ty::F32 => {
            let x = f(a);
            fb(match op {
                UnOp::Neg => -x,
                UnOp::Abs => x.abs(),
                UnOp::Ex2 => x.exp2(),
                UnOp::Lg2 => x.log2(),
                UnOp::Sqrt => x.sqrt(),
                UnOp::Rsqrt => 1.0 / x.sqrt(),
                UnOp::Rcp => 1.0 / x,
                UnOp::Not => x,
            })
        }
        Ty::Pred => u64::from(a == 0),
        _ => {
            let x = a as u32;
            u64::from(match op {
                UnOp::Neg => (x as i32).wrapping_neg() as u32,
                UnOp::Abs => (x as i32).wrapping_abs() as u32,
                UnOp::Not => !x,
                UnOp::Ex2 | UnOp::Lg2 | UnOp::Sqrt | UnOp::Rsqrt | UnOp::Rcp => x,
            })
        }
    }
}

fn setp(cmp: Cmp, ty: Ty, a: u64, b: u64) -> bool {
    if ty == Ty::F32 {
        let (x, y) = (f(a), f(b));
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
        };
    }
    if ty == Ty::S32 {
        let (x, y) = (a as u32 as i32, b as u32 as i32);
        return match cmp {
            Cmp::Eq => x == y,
            Cmp::Ne => x != y,
            Cmp::Lt => x < y,
            Cmp::Le => x <= y,
            Cmp::Gt => x > y,
            Cmp::Ge => x >= y,
        };
    }
    let (x, y) = (a as u32, b as u32);
    match cmp {
        Cmp::Eq => x == y,
        Cmp::Ne => x != y,
        Cmp::Lt => x < y,
        Cmp::Le => x <= y,
        Cmp::Gt => x > y,
        Cmp::Ge => x >= y,
    }
}

fn cvt(dst: Ty, src: Ty, v: u64) -> Result<u64, LaneError> {
    Ok(match (dst, src) {
        (Ty::F32, Ty::F16) => fb(f16::from_bits(v as u16).to_f32()),
        (Ty::F16, Ty::F32) => u64::from(f16::from_f32(f(v)).to_bits()),
        (Ty::Bf16, Ty::F32) => u64::from(bf16::from_f32(f(v)).to_bits()),
        (Ty::U32, Ty::U16) => v & 0xFFFF,
        // Rust's float-to-int `as` truncates, saturates and maps NaN to 0, as cvt.rzi does.
        (Ty::S32, Ty::F32) => u64::from(f(v) as i32 as u32),
        (Ty::U32, Ty::F32) => u64::from(f(v) as u32),
        (Ty::F32, Ty::S32) => fb(v as u32 as i32 as f32),
        (Ty::F32, Ty::U32) => fb(v as u32 as f32),
        (d, s) => return Err(LaneError::Unsupported(format!("cvt.{}.{}", d.name(), s.name()))),
    })
}
