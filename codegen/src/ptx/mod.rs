//! The PTX backend: tile IR → thread-level IR → PTX text (ISA 8.0, `sm_80` / `sm_90`).
//!
//! The pipeline, in order:
//! 1. [`axis::analyze`] then [`lower()`] (`lower.rs`): a verified tile-IR kernel → [`ThreadKernel`] under one layout
//!    (blocked tiles, replicated scalars, shared memory for data movement; see its module doc);
//! 2. [`print()`] (`print.rs`): the thread kernel → PTX text, one line per instruction;
//! 3. [`sim`]: the SIMT simulator, which runs the thread kernel on host memory (the check that
//!    needs no GPU: the conformance suite runs it against the interpreter);
//! 4. [`ptxas`]: assembling the text with NVIDIA's `ptxas` as a check (registers, spills), with
//!    a typed error naming the saved PTX and the command that reproduces a failure.
//!
//! **Kernel ABI.** One program is one CUDA block of `num_warps × 32` threads (`.reqntid`), the
//! grid is the tile IR's grid. Parameters follow the tile IR's order: a buffer becomes a `.u64`
//! pointer and a `.u64` length in elements, a scalar one `.param` (`i8` / `u8` / `bool` as 32-bit
//! words, f16 / bf16 as `.b16`). Static shared memory only, at most [`SHARED_LIMIT_BYTES`].
//!
//! The lowering runs the offset analysis ([`axis`]) first: where it proves a thread's run of
//! elements contiguous, aligned and under one mask, the access is one `ld` / `st.global.v2` /
//! `.v4` (8 or 16 one- or two-byte elements: one `.v4.b32`, split with `bfe` / `mov` after a
//! load, packed with `mov` / shifts before a store). Integer scalar arguments are specialised on their divisibility by 32, 16, 8 or 4
//! ([`Specialization`], part of [`PtxOptions`]), so strides and sizes can prove alignment.
//!
//! **Not done yet** (a later issue continues here): bounds checks against the buffer lengths;
//! tensor cores; dynamic shared memory; float `rem`; atomic adds on 16- and 8-bit types.
//!
//! Architecture Invariant: nothing here loads PTX on a device (the runtime will); the simulator
//! interprets the thread IR and `ptxas` only assembles the text.

pub mod axis;
mod lower;
mod print;
pub mod ptxas;
pub mod sim;
pub mod thread;

pub use axis::Specialization;
pub use lower::lower;
pub use print::print;
pub use thread::ThreadKernel;

/// The largest static shared-memory array a block may declare (48 KiB on every target).
pub const SHARED_LIMIT_BYTES: u32 = 48 * 1024;

/// The GPU generation the PTX targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Sm {
    /// Ampere (A100).
    Sm80,
    /// Hopper (H100, H200).
    Sm90,
}

impl Sm {
    pub const ALL: [Sm; 2] = [Sm::Sm80, Sm::Sm90];

    /// The `.target` / `-arch` name.
    pub fn name(self) -> &'static str {
        match self {
            Sm::Sm80 => "sm_80",
            Sm::Sm90 => "sm_90",
        }
    }

    /// From the number users type (`80`, `90`).
    pub fn from_number(n: u32) -> Result<Sm, PtxError> {
        match n {
            80 => Ok(Sm::Sm80),
            90 => Ok(Sm::Sm90),
            other => Err(PtxError::BadOptions(format!("sm {other} is not supported; use 80 or 90"))),
        }
    }
}

/// How to lower a kernel.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PtxOptions {
    pub sm: Sm,
    /// Warps per block (one block runs one program): 1 to 32.
    pub num_warps: u32,
    /// What the integer scalar arguments are known to be multiples of: the PTX is valid only for
    /// launches whose values satisfy it (executors compute it from the launch with
    /// [`Specialization::of_values`] and key their module caches on it).
    pub specialization: Specialization,
}

impl PtxOptions {
    /// `num_warps = 4`, the usual choice for memory-bound kernels, and no specialisation.
    pub fn new(sm: Sm) -> PtxOptions {
        PtxOptions { sm, num_warps: 4, specialization: Specialization::default() }
    }

    pub fn with_warps(self, num_warps: u32) -> PtxOptions {
        PtxOptions { num_warps, ..self }
    }

    pub fn with_specialization(self, specialization: Specialization) -> PtxOptions {
        PtxOptions { specialization, ..self }
    }

    /// Everything that changes the lowered text besides the kernel, for cache keys.
    pub fn key(&self) -> String {
        format!("{}|w{}|s{}", self.sm.name(), self.num_warps, self.specialization.key())
    }
}

/// Why a kernel could not be lowered.
#[derive(Debug, thiserror::Error)]
pub enum PtxError {
    #[error(transparent)]
    Invalid(#[from] kiln_ir::VerifyErrors),
    #[error("the PTX backend cannot lower {op} yet: {why}")]
    Unsupported { op: String, why: String },
    #[error(
        "kernel `{kernel}` needs {bytes} bytes of shared memory, over the {limit}-byte static limit; use smaller tiles"
    )]
    SharedMemory { kernel: String, bytes: u32, limit: u32 },
    #[error("bad PTX options: {0}")]
    BadOptions(String),
}

/// A verified tile-IR kernel → PTX text for `options`.
pub fn emit(kernel: &kiln_ir::Kernel, options: &PtxOptions) -> Result<String, PtxError> {
    if !(1..=32).contains(&options.num_warps) {
        return Err(PtxError::BadOptions(format!("num_warps = {} is not in 1..=32", options.num_warps)));
    }
    let thread = lower(kernel, options)?;
    Ok(print(&thread, options.sm))
}
