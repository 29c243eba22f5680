//! The thread-level IR: what one CUDA thread executes, one step above PTX text.
//!
//! Registers are virtual and typed by class (`%p` predicates, `%h` 16-bit, `%r` 32-bit integer,
//! `%f` f32, `%rd` 64-bit addresses); unlike the tile IR they are mutable, which is how loops
//! carry values. Every statement may carry a guard predicate (`@%p1` / `@!%p1`), which is how
//! masks become predicated loads and stores. Each instruction maps to one PTX instruction, so the
//! printer (`print.rs`) stays almost 1:1 and the SIMT simulator can execute the same list.

use std::fmt;

/// The register class, which fixes the `.reg` declaration and the printed prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegClass {
    Pred,
    /// 16-bit values: f16 and bf16 bit patterns.
    B16,
    /// 32-bit integers; `i8` / `u8` live here sign- or zero-extended.
    B32,
    F32,
    /// 64-bit values: addresses and buffer lengths.
    B64,
}

impl RegClass {
    pub const ALL: [RegClass; 5] = [RegClass::Pred, RegClass::B16, RegClass::B32, RegClass::F32, RegClass::B64];

    pub fn prefix(self) -> &'static str {
        match self {
            RegClass::Pred => "%p",
            RegClass::B16 => "%h",
            RegClass::B32 => "%r",
            RegClass::F32 => "%f",
            RegClass::B64 => "%rd",
        }
    }

    /// The type of the `.reg` declaration.
    pub fn decl(self) -> &'static str {
        match self {
            RegClass::Pred => ".pred",
            RegClass::B16 => ".b16",
            RegClass::B32 => ".b32",
            RegClass::F32 => ".f32",
            RegClass::B64 => ".b64",
        }
    }
}

/// A virtual register: its class and its number within the class.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Reg {
    pub class: RegClass,
    pub id: u32,
}

impl fmt::Display for Reg {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.class.prefix(), self.id)
    }
}

/// An instruction's operand: a register or an immediate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Operand {
    Reg(Reg),
    /// An integer immediate (also used for predicates-free bit patterns of b16 / b32 / b64).
    Int(i64),
    /// An f32 immediate, printed as its exact bit pattern (`0f3F800000`).
    F32(f32),
}

impl From<Reg> for Operand {
    fn from(r: Reg) -> Operand {
        Operand::Reg(r)
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Reg(r) => write!(f, "{r}"),
            Operand::Int(i) => write!(f, "{i}"),
            Operand::F32(x) => write!(f, "0f{:08X}", x.to_bits()),
        }
    }
}

/// The PTX instruction type suffix (`.s32`, `.f32`, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Ty {
    Pred,
    B8,
    B16,
    B32,
    B64,
    U8,
    S8,
    U16,
    U32,
    S32,
    U64,
    S64,
    F16,
    Bf16,
    F32,
}

impl Ty {
    pub fn name(self) -> &'static str {
        match self {
            Ty::Pred => "pred",
            Ty::B8 => "b8",
            Ty::B16 => "b16",
            Ty::B32 => "b32",
            Ty::B64 => "b64",
            Ty::U8 => "u8",
            Ty::S8 => "s8",
            Ty::U16 => "u16",
            Ty::U32 => "u32",
            Ty::S32 => "s32",
            Ty::U64 => "u64",
            Ty::S64 => "s64",
            Ty::F16 => "f16",
            Ty::Bf16 => "bf16",
            Ty::F32 => "f32",
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, Ty::F16 | Ty::Bf16 | Ty::F32)
    }
}

/// The special registers a kernel reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Special {
    /// `%tid.x`: the thread's index in its block (blocks are one-dimensional).
    Tid,
    /// `%ctaid.{x,y,z}`: the block index, which is the tile IR's `program_id`.
    CtaId(u8),
    /// `%nctaid.{x,y,z}`: the grid size, the tile IR's `num_programs`.
    NCtaId(u8),
}

/// Ops of two operands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    /// `mul.lo` for integers, `mul.rn` for floats.
    Mul,
    /// `div.rn` for floats, truncating for integers.
    Div,
    /// Integer remainder with the dividend's sign.
    Rem,
    Min,
    Max,
    And,
    Or,
    Xor,
    Shl,
    Shr,
}

/// Ops of one operand.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnOp {
    Neg,
    Not,
    Abs,
    /// `ex2.approx.f32`.
    Ex2,
    /// `lg2.approx.f32`.
    Lg2,
    /// `sqrt.rn.f32`.
    Sqrt,
    /// `rsqrt.approx.f32`.
    Rsqrt,
    /// `rcp.rn.f32`.
    Rcp,
}

/// Comparison operators of `setp`; float compares are ordered except `ne`, which is `neu` so
/// that a NaN operand compares unequal as the tile IR says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

/// The state space of a load or store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    Global,
    Shared,
}

/// A branch target, printed `$L3`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Label(pub u32);

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "$L{}", self.0)
    }
}

/// A guard: the statement runs only where `reg` is true (or false when `negate`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Guard {
    pub reg: Reg,
    pub negate: bool,
}

/// One thread-level instruction; each prints as one PTX instruction.
#[derive(Clone, Debug, PartialEq)]
pub enum Instr {
    Mov {
        ty: Ty,
        dst: Reg,
        src: Operand,
    },
    ReadSpecial {
        dst: Reg,
        special: Special,
    },
    /// `ld.param` of kernel parameter `index` (named by the printer).
    LdParam {
        ty: Ty,
        dst: Reg,
        index: usize,
    },
    Bin {
        op: BinOp,
        ty: Ty,
        dst: Reg,
        a: Operand,
        b: Operand,
    },
    Un {
        op: UnOp,
        ty: Ty,
        dst: Reg,
        a: Operand,
    },
    /// `fma.rn` for floats, `mad.lo` for integers: `dst = a * b + c`.
    Fma {
        ty: Ty,
        dst: Reg,
        a: Operand,
        b: Operand,
        c: Operand,
    },
    /// `mul.wide`: a 32-bit × 32-bit product into 64 bits (address arithmetic).
    MulWide {
        ty: Ty,
        dst: Reg,
        a: Operand,
        b: Operand,
    },
    Setp {
        cmp: Cmp,
        ty: Ty,
        dst: Reg,
        a: Operand,
        b: Operand,
    },
    /// `dst = pred ? a : b`.
    Selp {
        ty: Ty,
        dst: Reg,
        a: Operand,
        b: Operand,
        pred: Reg,
    },
    /// `cvt` with the rounding modifier PTX requires for the pair (`.rn`, `.rzi` or none).
    Cvt {
        dst_ty: Ty,
        src_ty: Ty,
        dst: Reg,
        src: Reg,
    },
    /// A load of `dsts.len()` (1, 2 or 4) consecutive elements: `.v2` / `.v4` when more than one.
    Ld {
        space: Space,
        ty: Ty,
        dsts: Vec<Reg>,
        addr: Reg,
        offset: i64,
    },
    /// A store of `srcs.len()` (1, 2 or 4) consecutive elements.
    St {
        space: Space,
        ty: Ty,
        srcs: Vec<Operand>,
        addr: Reg,
        offset: i64,
    },
    /// `bfe.u32` / `bfe.s32`: bits `pos .. pos + len` of `a`, zero- (`U32`) or sign-extended
    /// (`S32`): how the bytes of a packed 32-bit load become elements.
    Bfe {
        ty: Ty,
        dst: Reg,
        a: Reg,
        pos: u32,
        len: u32,
    },
    /// `mov.b32 {lo, hi}, src`: the two 16-bit halves of a packed 32-bit load.
    SplitHalves {
        lo: Reg,
        hi: Reg,
        src: Reg,
    },
    /// `mov.b32 dst, {lo, hi}`: two 16-bit values packed into a word for a wide store.
    PackHalves {
        dst: Reg,
        lo: Reg,
        hi: Reg,
    },
    /// `red.global.add`: an atomic add whose old value is not needed.
    RedAdd {
        ty: Ty,
        addr: Reg,
        src: Operand,
    },
    /// `cvta.to.global.u64`: a generic pointer parameter to a global-space address.
    CvtaGlobal {
        dst: Reg,
        src: Reg,
    },
    /// `mov.u64 dst, smem;`: the address of the kernel's shared-memory array.
    SharedBase {
        dst: Reg,
    },
    /// `bar.sync 0`: every thread of the block waits here.
    BarSync,
    /// `shfl.sync.bfly.b32 dst, src, lane_mask, 0x1f, 0xffffffff` (the whole warp takes part).
    ShflBfly {
        dst: Reg,
        src: Reg,
        lane_mask: u32,
    },
    Label(Label),
    Bra {
        target: Label,
    },
    /// Aborts the kernel: the launch fails with an error instead of hanging or writing garbage.
    Trap,
    Ret,
}

/// An instruction with its optional guard.
#[derive(Clone, Debug, PartialEq)]
pub struct Stmt {
    pub guard: Option<Guard>,
    pub instr: Instr,
}

/// A kernel parameter as PTX sees it. A tile-IR buffer becomes two: its pointer and its length.
#[derive(Clone, Debug, PartialEq)]
pub struct KernelParam {
    pub name: String,
    pub ty: Ty,
}

/// A whole kernel at thread level: parameters, statements, register counts and shared memory.
#[derive(Clone, Debug, PartialEq)]
pub struct ThreadKernel {
    pub name: String,
    pub params: Vec<KernelParam>,
    pub body: Vec<Stmt>,
    /// Number of registers used per class, in `RegClass::ALL` order.
    pub reg_counts: [u32; 5],
    /// Bytes of the block's static shared-memory array (0: none).
    pub shared_bytes: u32,
    /// Threads per block (`num_warps × 32`), stated as `.reqntid`.
    pub threads: u32,
}
