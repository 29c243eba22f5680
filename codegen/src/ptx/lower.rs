//! Lowering a verified tile-IR kernel to the thread-level IR with one simple layout.
//!
//! **Layout.** One program is one CUDA block of `num_warps × 32` threads. A tile of `n > 1`
//! elements is *blocked* with `vec` consecutive elements per thread per run (`vec` is 4 or 2
//! when `n` is a multiple of it and fills every thread `vec` times over, else 1): slot `j` of
//! thread `t` holds the row-major element `(j / vec)·threads·vec + t·vec + j % vec`, one
//! register per slot, so a warp covers `32·vec` consecutive elements per run and its accesses
//! to a contiguous tile coalesce into full 128-byte lines, while each thread's run can be one
//! `.v2` / `.v4` access when the offset analysis (`axis.rs`) proves it contiguous, aligned and
//! under one mask value (scalar accesses otherwise); slots at or past `n` are *invalid*
//! (they compute garbage that never reaches memory or a reduction). A value of one element
//! (scalars, `[1]` tiles) is *replicated*: every thread holds it, so uniform control flow and
//! scalar arguments need no communication. Because the layout depends only on the element count,
//! `reshape` and `expand_dims` move no data. Buffer base pointers are assumed 16-byte aligned (the
//! CUDA allocator gives 256 bytes; the simulator places buffers likewise and checks alignment).
//!
//! **Data movement.** Everything that needs other threads' elements goes through shared memory,
//! one 4-byte word per element (written by its owner, `bar.sync`, read, `bar.sync`): `broadcast`
//! of a non-replicated tile, reductions along an axis, and `dot` (both operands staged, then an
//! FMA loop over `k` per output slot). A reduction of a whole tile to one element instead reduces
//! each thread's slots, then the warp with `shfl.sync.bfly`, then the warps through shared memory.
//!
//! **Arithmetic.** f16 and bf16 live in 16-bit registers and are computed in f32, rounded once
//! to their dtype (f32 carries more than twice their precision, so the double rounding is
//! harmless for `+ - × ÷ √`). `i8` / `u8` live in 32-bit registers, sign- or zero-extended, and
//! are wrapped after each op. `exp2`, `log2` and `rsqrt` use the `.approx` instructions.
//!
//! **Not done yet** (see the module doc of `ptx/mod.rs`): bounds checks against the buffer lengths, integer division
//! by zero as an error, and float `rem`, which is [`PtxError::Unsupported`].

use super::axis::{self, ValueFacts};
use super::thread::{
    BinOp, Cmp, Guard, Instr, KernelParam, Label, Operand, Reg, RegClass, Space, Special, Stmt, ThreadKernel, Ty, UnOp,
};
use super::{PtxError, PtxOptions, SHARED_LIMIT_BYTES};
use kiln_ir::kernel::ParamKind;
use kiln_ir::{
    BinaryOp, Block, CmpPred, DType, Inst, Kernel, Literal, Op, Param, ReduceOp, Shape, Type, UnaryOp, Value,
};
use std::collections::HashMap;

/// Lowers `kernel` (which must verify) for `options`.
pub fn lower(kernel: &Kernel, options: &PtxOptions) -> Result<ThreadKernel, PtxError> {
    kiln_ir::verify(kernel)?;
    let threads = options.num_warps * 32;
    let mut l = Lowerer::new(kernel, threads);
    l.facts = axis::analyze(kernel, &options.specialization);
    l.params()?;
    l.block(kernel.entry)?;
    l.body.push(stmt(Instr::Ret));
    if l.shared_bytes > SHARED_LIMIT_BYTES {
        return Err(PtxError::SharedMemory {
            kernel: kernel.name.clone(),
            bytes: l.shared_bytes,
            limit: SHARED_LIMIT_BYTES,
        });
    }
    let mut body = std::mem::take(&mut l.prologue);
    body.append(&mut l.body);
    Ok(ThreadKernel {
        name: identifier("kiln_", &kernel.name),
        params: l.kernel_params,
        body,
        reg_counts: l.counts,
        shared_bytes: l.shared_bytes,
        threads,
    })
}

/// How a tile's elements sit in the threads of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    /// Element count.
    n: u64,
    /// Slots (registers) per thread.
    per: u32,
    /// Every thread holds the one element.
    replicated: bool,
    /// Some slots of some threads are past `n`.
    ragged: bool,
    /// Consecutive elements per thread per run; divides `n`, so a run is wholly valid or not.
    vec: u32,
}

/// The largest run per thread up to `cap`: 16, 8, 4 or 2 elements when `n` is a multiple and
/// fills every thread's run at least once, so small tiles keep every thread busy.
fn layout(shape: &Shape, threads: u32, cap: u32) -> Layout {
    let n = shape.numel();
    if n == 1 {
        return Layout { n, per: 1, replicated: true, ragged: false, vec: 1 };
    }
    let t = u64::from(threads);
    let vec = [16u32, 8, 4, 2]
        .into_iter()
        .find(|&v| v <= cap && n.is_multiple_of(u64::from(v)) && n >= t * u64::from(v))
        .unwrap_or(1);
    let runs = n.div_ceil(t * u64::from(vec));
    let per = (runs * u64::from(vec)) as u32;
    Layout { n, per, replicated: false, ragged: u64::from(per) * t != n, vec }
}

/// The longest run of elements per thread for tiles of each element count: 16 bytes of the
/// widest dtype any global load or store of that count moves (4 for f32, 8 for f16, 16 for
/// bytes), so a run is one 16-byte access at most; 4 for counts no access uses.
fn run_caps(k: &Kernel) -> HashMap<u64, u32> {
    let mut caps: HashMap<u64, u32> = HashMap::new();
    for (inst, _) in k.walk() {
        let data = k.inst(inst);
        let tile = match &data.op {
            Op::Load { .. } => data.results.first().map(|&r| k.ty(r)),
            Op::Store { value, .. } | Op::AtomicAdd { value, .. } => Some(k.ty(*value)),
            _ => None,
        };
        if let Some(ty) = tile {
            let bytes = if ty.dtype.is_bool() { 4 } else { ty.dtype.size_bytes().max(1) };
            let cap = (16 / bytes).max(1) as u32;
            let entry = caps.entry(ty.shape.numel()).or_insert(cap);
            *entry = (*entry).min(cap);
        }
    }
    caps
}

fn class_of(dtype: DType) -> RegClass {
    match dtype {
        DType::F32 => RegClass::F32,
        DType::F16 | DType::BF16 => RegClass::B16,
        DType::I32 | DType::U32 | DType::I8 | DType::U8 => RegClass::B32,
        DType::Bool => RegClass::Pred,
    }
}

/// The instruction type for integer arithmetic on a dtype held in a 32-bit register.
fn int_ty(dtype: DType) -> Ty {
    if dtype.is_signed_int() {
        Ty::S32
    } else {
        Ty::U32
    }
}

fn mov_ty(class: RegClass) -> Ty {
    match class {
        RegClass::Pred => Ty::Pred,
        RegClass::B16 => Ty::B16,
        RegClass::B32 => Ty::B32,
        RegClass::F32 => Ty::F32,
        RegClass::B64 => Ty::B64,
    }
}

fn stmt(instr: Instr) -> Stmt {
    Stmt { guard: None, instr }
}

/// A PTX identifier from a tile-IR name: `prefix` then the name with anything but ASCII letters,
/// digits and `_` replaced by `_`.
fn identifier(prefix: &str, name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '_' { c } else { '_' }).collect();
    format!("{prefix}{clean}")
}

fn unsupported(k: &Kernel, inst: Inst, why: impl Into<String>) -> PtxError {
    PtxError::Unsupported { op: format!("{} ({inst}) in kernel `{}`", k.inst(inst).op.name(), k.name), why: why.into() }
}

struct Lowerer<'k> {
    k: &'k Kernel,
    threads: u32,
    /// Statements run once at kernel start: parameters, thread indices, addresses. Values here
    /// are defined before any loop, so a cached register is valid wherever it is used.
    prologue: Vec<Stmt>,
    body: Vec<Stmt>,
    counts: [u32; 5],
    labels: u32,
    kernel_params: Vec<KernelParam>,
    /// The registers of each tile-IR value, one per slot (one for replicated values).
    tiles: HashMap<Value, Vec<Reg>>,
    /// Global base address of each buffer.
    buffers: HashMap<Param, Reg>,
    tid: Option<Reg>,
    smem: Option<Reg>,
    /// The longest run per thread by element count (see [`run_caps`]).
    run_caps: HashMap<u64, u32>,
    /// What the offset analysis knows of each integer value.
    facts: HashMap<Value, ValueFacts>,
    /// `tid · vec` by `vec`.
    tid_times: HashMap<u32, Reg>,
    /// Element index of slot `j` by `(per, vec, j)`.
    elem_index: HashMap<(u32, u32, u32), Reg>,
    /// Whether slot `j` is valid, by `(n, per, j)`.
    valid: HashMap<(u64, u32, u32), Reg>,
    thread0: Option<Reg>,
    lane0: Option<Reg>,
    /// `smem + warp · 4`: this warp's word for cross-warp reductions.
    warp_word: Option<Reg>,
    shared_bytes: u32,
}

impl<'k> Lowerer<'k> {
    fn new(k: &'k Kernel, threads: u32) -> Self {
        Lowerer {
            k,
            threads,
            prologue: Vec::new(),
            body: Vec::new(),
            counts: [0; 5],
            labels: 0,
            kernel_params: Vec::new(),
            tiles: HashMap::new(),
            buffers: HashMap::new(),
            tid: None,
            smem: None,
            run_caps: run_caps(k),
            facts: HashMap::new(),
            tid_times: HashMap::new(),
            elem_index: HashMap::new(),
            valid: HashMap::new(),
            thread0: None,
            lane0: None,
            warp_word: None,
            shared_bytes: 0,
        }
    }

    fn reg(&mut self, class: RegClass) -> Reg {
        let slot = &mut self.counts[RegClass::ALL.iter().position(|&c| c == class).unwrap_or(0)];
        let r = Reg { class, id: *slot };
        *slot += 1;
        r
    }

    fn label(&mut self) -> Label {
        self.labels += 1;
        Label(self.labels)
    }

    fn emit(&mut self, instr: Instr) {
        self.body.push(stmt(instr));
    }

    fn emit_guarded(&mut self, guard: Option<Reg>, instr: Instr) {
        self.body.push(Stmt { guard: guard.map(|reg| Guard { reg, negate: false }), instr });
    }

    fn pro(&mut self, instr: Instr) {
        self.prologue.push(stmt(instr));
    }

    fn layout_of(&self, v: Value) -> Layout {
        self.layout(&self.k.ty(v).shape)
    }

    /// The layout of a tile of `shape` in this kernel (see [`run_caps`]).
    fn layout(&self, shape: &Shape) -> Layout {
        let cap = self.run_caps.get(&shape.numel()).copied().unwrap_or(4);
        layout(shape, self.threads, cap)
    }

    fn regs(&self, v: Value) -> Vec<Reg> {
        self.tiles.get(&v).cloned().unwrap_or_default()
    }

    /// The register of slot `j` of `v` (the one register of a replicated value).
    fn slot(&self, v: Value, j: usize) -> Reg {
        let regs = &self.tiles[&v];
        regs[if regs.len() == 1 { 0 } else { j }]
    }

    // --- prologue values ---

    fn tid(&mut self) -> Reg {
        if let Some(r) = self.tid {
            return r;
        }
        let r = self.reg(RegClass::B32);
        self.pro(Instr::ReadSpecial { dst: r, special: Special::Tid });
        self.tid = Some(r);
        r
    }

    fn smem(&mut self) -> Reg {
        if let Some(r) = self.smem {
            return r;
        }
        let r = self.reg(RegClass::B64);
        self.pro(Instr::SharedBase { dst: r });
        self.smem = Some(r);
        r
    }

    /// `tid · vec` (the first element of this thread's run).
    fn tid_times(&mut self, vec: u32) -> Reg {
        let tid = self.tid();
        if vec == 1 {
            return tid;
        }
        if let Some(&r) = self.tid_times.get(&vec) {
            return r;
        }
        let r = self.reg(RegClass::B32);
        self.pro(Instr::Bin { op: BinOp::Mul, ty: Ty::U32, dst: r, a: tid.into(), b: Operand::Int(vec.into()) });
        self.tid_times.insert(vec, r);
        r
    }

    /// The row-major index of the element in slot `j` of this thread:
    /// `(j / vec) · threads · vec + tid · vec + j % vec`, so the threads of a warp hold
    /// consecutive runs and their accesses to a contiguous tile coalesce.
    fn elem_index(&mut self, lay: Layout, j: u32) -> Operand {
        if lay.replicated {
            return Operand::Int(0);
        }
        if let Some(&r) = self.elem_index.get(&(lay.per, lay.vec, j)) {
            return r.into();
        }
        let first = self.tid_times(lay.vec);
        let start = i64::from(j / lay.vec) * i64::from(self.threads) * i64::from(lay.vec) + i64::from(j % lay.vec);
        if start == 0 {
            return first.into();
        }
        let r = self.reg(RegClass::B32);
        self.pro(Instr::Bin { op: BinOp::Add, ty: Ty::U32, dst: r, a: first.into(), b: Operand::Int(start) });
        self.elem_index.insert((lay.per, lay.vec, j), r);
        r.into()
    }

    /// The predicate "slot `j` holds an element", or `None` when every slot does.
    fn valid(&mut self, lay: Layout, j: u32) -> Option<Reg> {
        if !lay.ragged {
            return None;
        }
        if let Some(&r) = self.valid.get(&(lay.n, lay.per, j)) {
            return Some(r);
        }
        let e = self.elem_index(lay, j);
        let r = self.reg(RegClass::Pred);
        self.pro(Instr::Setp { cmp: Cmp::Lt, ty: Ty::U32, dst: r, a: e, b: Operand::Int(lay.n as i64) });
        self.valid.insert((lay.n, lay.per, j), r);
        Some(r)
    }

    fn thread0(&mut self) -> Reg {
        if let Some(r) = self.thread0 {
            return r;
        }
        let tid = self.tid();
        let r = self.reg(RegClass::Pred);
        self.pro(Instr::Setp { cmp: Cmp::Eq, ty: Ty::U32, dst: r, a: tid.into(), b: Operand::Int(0) });
        self.thread0 = Some(r);
        r
    }

    fn lane0_and_warp_word(&mut self) -> (Reg, Reg) {
        if let (Some(a), Some(b)) = (self.lane0, self.warp_word) {
            return (a, b);
        }
        let tid = self.tid();
        let smem = self.smem();
        let lane = self.reg(RegClass::B32);
        self.pro(Instr::Bin { op: BinOp::And, ty: Ty::B32, dst: lane, a: tid.into(), b: Operand::Int(31) });
        let lane0 = self.reg(RegClass::Pred);
        self.pro(Instr::Setp { cmp: Cmp::Eq, ty: Ty::U32, dst: lane0, a: lane.into(), b: Operand::Int(0) });
        let warp = self.reg(RegClass::B32);
        self.pro(Instr::Bin { op: BinOp::Shr, ty: Ty::U32, dst: warp, a: tid.into(), b: Operand::Int(5) });
        let off = self.reg(RegClass::B64);
        self.pro(Instr::MulWide { ty: Ty::U32, dst: off, a: warp.into(), b: Operand::Int(4) });
        let word = self.reg(RegClass::B64);
        self.pro(Instr::Bin { op: BinOp::Add, ty: Ty::S64, dst: word, a: smem.into(), b: off.into() });
        self.lane0 = Some(lane0);
        self.warp_word = Some(word);
        (lane0, word)
    }

    fn and_pred(&mut self, a: Option<Reg>, b: Option<Reg>) -> Option<Reg> {
        match (a, b) {
            (Some(a), Some(b)) => {
                let r = self.reg(RegClass::Pred);
                self.emit(Instr::Bin { op: BinOp::And, ty: Ty::Pred, dst: r, a: a.into(), b: b.into() });
                Some(r)
            }
            (a, None) => a,
            (None, b) => b,
        }
    }

    // --- parameters ---

    fn params(&mut self) -> Result<(), PtxError> {
        for (i, p) in self.k.params.iter().enumerate() {
            let base = identifier(&format!("p{i}_"), &p.name);
            match &p.kind {
                ParamKind::Buffer { .. } => {
                    let index = self.kernel_params.len();
                    self.kernel_params.push(KernelParam { name: format!("{base}_ptr"), ty: Ty::U64 });
                    self.kernel_params.push(KernelParam { name: format!("{base}_len"), ty: Ty::U64 });
                    let generic = self.reg(RegClass::B64);
                    self.pro(Instr::LdParam { ty: Ty::U64, dst: generic, index });
                    let global = self.reg(RegClass::B64);
                    self.pro(Instr::CvtaGlobal { dst: global, src: generic });
                    self.buffers.insert(Param(i as u32), global);
                }
                ParamKind::Scalar { value } => {
                    let dtype = self.k.ty(*value).dtype;
                    // i8 / u8 / bool scalars travel as 32-bit words: a simpler launch ABI.
                    let ty = match dtype {
                        DType::F32 => Ty::F32,
                        DType::F16 | DType::BF16 => Ty::B16,
                        DType::I32 | DType::I8 => Ty::S32,
                        DType::U32 | DType::U8 | DType::Bool => Ty::U32,
                    };
                    let index = self.kernel_params.len();
                    self.kernel_params.push(KernelParam { name: base, ty });
                    let class = if dtype == DType::Bool { RegClass::B32 } else { class_of(dtype) };
                    let r = self.reg(class);
                    self.pro(Instr::LdParam { ty, dst: r, index });
                    let r = if dtype == DType::Bool {
                        let p = self.reg(RegClass::Pred);
                        self.pro(Instr::Setp { cmp: Cmp::Ne, ty: Ty::U32, dst: p, a: r.into(), b: Operand::Int(0) });
                        p
                    } else {
                        r
                    };
                    self.tiles.insert(*value, vec![r]);
                }
            }
        }
        Ok(())
    }

    // --- blocks and instructions ---

    fn block(&mut self, block: Block) -> Result<(), PtxError> {
        for &inst in &self.k.block(block).insts.clone() {
            self.inst(inst)?;
        }
        Ok(())
    }

    /// New registers for a value of type `ty`, one per slot.
    fn new_tile(&mut self, ty: &Type) -> Vec<Reg> {
        let lay = self.layout(&ty.shape);
        let class = class_of(ty.dtype);
        (0..lay.per).map(|_| self.reg(class)).collect()
    }

    fn inst(&mut self, inst: Inst) -> Result<(), PtxError> {
        let data = self.k.inst(inst).clone();
        let result = data.results.first().copied();
        let out_ty = result.map(|r| self.k.ty(r).clone());
        match &data.op {
            Op::ProgramId { axis } | Op::NumPrograms { axis } => {
                let r = self.reg(RegClass::B32);
                let special = if matches!(data.op, Op::ProgramId { .. }) {
                    Special::CtaId(*axis)
                } else {
                    Special::NCtaId(*axis)
                };
                self.emit(Instr::ReadSpecial { dst: r, special });
                self.set(result, vec![r]);
            }
            Op::Arange { start, .. } => {
                let ty = out_ty.unwrap_or(Type::scalar(DType::I32));
                let lay = self.layout(&ty.shape);
                let regs = self.new_tile(&ty);
                for (j, &r) in regs.iter().enumerate() {
                    let e = self.elem_index(lay, j as u32);
                    self.emit(Instr::Bin {
                        op: BinOp::Add,
                        ty: Ty::S32,
                        dst: r,
                        a: e,
                        b: Operand::Int((*start).into()),
                    });
                }
                self.set(result, regs);
            }
            Op::Constant { value, ty } => {
                let r = self.constant(*value, ty.dtype);
                self.set(result, vec![r]);
            }
            Op::Unary { op, arg } => {
                let ty = self.k.ty(*arg).clone();
                let mut regs = Vec::new();
                for j in 0..self.regs(*arg).len() {
                    let a = self.slot(*arg, j);
                    regs.push(self.unary(inst, *op, ty.dtype, a)?);
                }
                self.set(result, regs);
            }
            Op::Binary { op, lhs, rhs } => {
                let dtype = self.k.ty(*lhs).dtype;
                let n = self.regs(*lhs).len().max(self.regs(*rhs).len());
                let mut regs = Vec::new();
                for j in 0..n {
                    let (a, b) = (self.slot(*lhs, j), self.slot(*rhs, j));
                    regs.push(self.binary(inst, *op, dtype, a, b)?);
                }
                self.set(result, regs);
            }
            Op::Compare { pred, lhs, rhs } => {
                let dtype = self.k.ty(*lhs).dtype;
                let n = self.regs(*lhs).len().max(self.regs(*rhs).len());
                let mut regs = Vec::new();
                for j in 0..n {
                    let (a, b) = (self.slot(*lhs, j), self.slot(*rhs, j));
                    regs.push(self.compare(*pred, dtype, a, b));
                }
                self.set(result, regs);
            }
            Op::Select { cond, on_true, on_false } => {
                let dtype = self.k.ty(*on_true).dtype;
                let n = self.regs(*cond).len().max(self.regs(*on_true).len()).max(self.regs(*on_false).len());
                let mut regs = Vec::new();
                for j in 0..n {
                    let (c, a, b) = (self.slot(*cond, j), self.slot(*on_true, j), self.slot(*on_false, j));
                    regs.push(self.select(dtype, c, a, b));
                }
                self.set(result, regs);
            }
            Op::Cast { arg, to } => {
                let from = self.k.ty(*arg).dtype;
                let mut regs = Vec::new();
                for j in 0..self.regs(*arg).len() {
                    let a = self.slot(*arg, j);
                    regs.push(self.cast(a, from, *to));
                }
                self.set(result, regs);
            }
            Op::Bitcast { arg, to } => {
                let from = self.k.ty(*arg).dtype;
                let mut regs = Vec::new();
                for j in 0..self.regs(*arg).len() {
                    let a = self.slot(*arg, j);
                    regs.push(self.bitcast(a, from, *to));
                }
                self.set(result, regs);
            }
            Op::Broadcast { arg, shape } => {
                let regs = if self.layout_of(*arg).replicated {
                    let r = self.slot(*arg, 0);
                    vec![r; self.layout(shape).per as usize]
                } else {
                    self.broadcast(*arg, shape)
                };
                self.set(result, regs);
            }
            // The layout depends only on the element count, so these move nothing.
            Op::Reshape { arg, .. } | Op::ExpandDims { arg, .. } => {
                let regs = self.regs(*arg);
                self.set(result, regs);
            }
            Op::Reduce { op, arg, axis } => {
                let src = self.k.ty(*arg).clone();
                if src.dtype.is_bool() {
                    return Err(unsupported(self.k, inst, "reductions of bool tiles are not lowered yet"));
                }
                let out = out_ty.unwrap_or(Type::scalar(src.dtype));
                let regs = if self.layout_of(*arg).replicated {
                    self.regs(*arg)
                } else if self.layout(&out.shape).replicated {
                    self.reduce_all(*op, *arg)
                } else {
                    self.reduce_axis(*op, *arg, *axis as usize, &out)
                };
                self.set(result, regs);
            }
            Op::Dot { lhs, rhs, acc } => {
                let regs = self.dot(inst, *lhs, *rhs, *acc)?;
                self.set(result, regs);
            }
            Op::Load { buffer, offsets, mask, other } => {
                let regs = self.load(inst, *buffer, *offsets, *mask, *other, out_ty.as_ref())?;
                self.set(result, regs);
            }
            Op::Store { buffer, offsets, value, mask } => self.store(inst, *buffer, *offsets, *value, *mask, false)?,
            Op::AtomicAdd { buffer, offsets, value, mask } => {
                self.store(inst, *buffer, *offsets, *value, *mask, true)?
            }
            // A hint; the GPU's many warps in flight hide latency without it.
            Op::Prefetch { .. } => {}
            Op::For { start, end, step, init, body } => self.for_loop(inst, *start, *end, *step, init, *body)?,
            Op::Yield { .. } => {
                return Err(unsupported(self.k, inst, "a yield outside the end of a loop body"));
            }
        }
        Ok(())
    }

    fn set(&mut self, result: Option<Value>, regs: Vec<Reg>) {
        if let Some(v) = result {
            self.tiles.insert(v, regs);
        }
    }

    // --- elementwise ---

    fn constant(&mut self, value: Literal, dtype: DType) -> Reg {
        let as_f64 = match value {
            Literal::Int(i) => i as f64,
            Literal::Float(f) => f,
            Literal::Bool(b) => f64::from(u8::from(b)),
        };
        let as_i64 = match value {
            Literal::Int(i) => i,
            Literal::Float(f) => f as i64,
            Literal::Bool(b) => i64::from(b),
        };
        match dtype {
            DType::F32 | DType::F16 | DType::BF16 => {
                let f = self.reg(RegClass::F32);
                self.emit(Instr::Mov { ty: Ty::F32, dst: f, src: Operand::F32(as_f64 as f32) });
                if dtype == DType::F32 {
                    f
                } else {
                    self.round_from_f32(f, dtype)
                }
            }
            DType::I32 | DType::U32 | DType::I8 | DType::U8 => {
                let r = self.reg(RegClass::B32);
                let wrapped = match dtype {
                    DType::I32 => i64::from(as_i64 as i32),
                    DType::U32 => i64::from(as_i64 as u32),
                    DType::I8 => i64::from(as_i64 as i8),
                    _ => i64::from(as_i64 as u8),
                };
                self.emit(Instr::Mov { ty: int_ty(dtype), dst: r, src: Operand::Int(wrapped) });
                r
            }
            DType::Bool => {
                let r = self.reg(RegClass::B32);
                self.emit(Instr::Mov { ty: Ty::U32, dst: r, src: Operand::Int(i64::from(as_i64 != 0)) });
                let p = self.reg(RegClass::Pred);
                self.emit(Instr::Setp { cmp: Cmp::Ne, ty: Ty::U32, dst: p, a: r.into(), b: Operand::Int(0) });
                p
            }
        }
    }

    /// A float register of `dtype` widened to f32 (f32 itself is returned as is).
    fn widen_to_f32(&mut self, r: Reg, dtype: DType) -> Reg {
        match dtype {
            DType::F16 => {
                let f = self.reg(RegClass::F32);
                self.emit(Instr::Cvt { dst_ty: Ty::F32, src_ty: Ty::F16, dst: f, src: r });
                f
            }
            DType::BF16 => {
                // bf16 is the top half of an f32: widen by shifting the bits (cvt.f32.bf16 needs sm_90).
                let wide = self.reg(RegClass::B32);
                self.emit(Instr::Cvt { dst_ty: Ty::U32, src_ty: Ty::U16, dst: wide, src: r });
                let shifted = self.reg(RegClass::B32);
                self.emit(Instr::Bin {
                    op: BinOp::Shl,
                    ty: Ty::B32,
                    dst: shifted,
                    a: wide.into(),
                    b: Operand::Int(16),
                });
                let f = self.reg(RegClass::F32);
                self.emit(Instr::Mov { ty: Ty::B32, dst: f, src: shifted.into() });
                f
            }
            _ => r,
        }
    }

    /// An f32 register rounded to the float `dtype`.
    fn round_from_f32(&mut self, f: Reg, dtype: DType) -> Reg {
        let dst_ty = match dtype {
            DType::F16 => Ty::F16,
            DType::BF16 => Ty::Bf16,
            _ => return f,
        };
        let h = self.reg(RegClass::B16);
        self.emit(Instr::Cvt { dst_ty, src_ty: Ty::F32, dst: h, src: f });
        h
    }

    /// Wraps a 32-bit register to `i8` / `u8` (sign- or zero-extending); other dtypes unchanged.
    fn wrap(&mut self, r: Reg, dtype: DType) -> Reg {
        match dtype {
            DType::I8 => {
                let t = self.reg(RegClass::B32);
                self.emit(Instr::Bin { op: BinOp::Shl, ty: Ty::B32, dst: t, a: r.into(), b: Operand::Int(24) });
                let out = self.reg(RegClass::B32);
                self.emit(Instr::Bin { op: BinOp::Shr, ty: Ty::S32, dst: out, a: t.into(), b: Operand::Int(24) });
                out
            }
            DType::U8 => {
                let out = self.reg(RegClass::B32);
                self.emit(Instr::Bin { op: BinOp::And, ty: Ty::B32, dst: out, a: r.into(), b: Operand::Int(255) });
                out
            }
            _ => r,
        }
    }

    fn unary(&mut self, inst: Inst, op: UnaryOp, dtype: DType, a: Reg) -> Result<Reg, PtxError> {
        if dtype.is_bool() {
            let r = self.reg(RegClass::Pred);
            self.emit(Instr::Un { op: UnOp::Not, ty: Ty::Pred, dst: r, a: a.into() });
            return Ok(r);
        }
        if dtype.is_float() {
            let f = self.widen_to_f32(a, dtype);
            let un = match op {
                UnaryOp::Neg => UnOp::Neg,
                UnaryOp::Abs => UnOp::Abs,
                UnaryOp::Exp2 => UnOp::Ex2,
                UnaryOp::Log2 => UnOp::Lg2,
                UnaryOp::Sqrt => UnOp::Sqrt,
                UnaryOp::Rsqrt => UnOp::Rsqrt,
                UnaryOp::Recip => UnOp::Rcp,
                UnaryOp::Not => return Err(unsupported(self.k, inst, "not on a float")),
            };
            let r = self.reg(RegClass::F32);
            self.emit(Instr::Un { op: un, ty: Ty::F32, dst: r, a: f.into() });
            return Ok(self.round_from_f32(r, dtype));
        }
        let ty = int_ty(dtype);
        let r = self.reg(RegClass::B32);
        match op {
            UnaryOp::Neg => self.emit(Instr::Un { op: UnOp::Neg, ty: Ty::S32, dst: r, a: a.into() }),
            UnaryOp::Not => self.emit(Instr::Un { op: UnOp::Not, ty: Ty::B32, dst: r, a: a.into() }),
            UnaryOp::Abs if ty == Ty::S32 => self.emit(Instr::Un { op: UnOp::Abs, ty: Ty::S32, dst: r, a: a.into() }),
            UnaryOp::Abs => self.emit(Instr::Mov { ty: Ty::B32, dst: r, src: a.into() }),
            UnaryOp::Exp2 | UnaryOp::Log2 | UnaryOp::Sqrt | UnaryOp::Rsqrt | UnaryOp::Recip => {
                return Err(unsupported(self.k, inst, "a float op on an integer"))
            }
        }
        Ok(self.wrap(r, dtype))
    }

    fn binary(&mut self, inst: Inst, op: BinaryOp, dtype: DType, a: Reg, b: Reg) -> Result<Reg, PtxError> {
        let bin = match op {
            BinaryOp::Add => BinOp::Add,
            BinaryOp::Sub => BinOp::Sub,
            BinaryOp::Mul => BinOp::Mul,
            BinaryOp::Div => BinOp::Div,
            BinaryOp::Rem => BinOp::Rem,
            BinaryOp::Min => BinOp::Min,
            BinaryOp::Max => BinOp::Max,
            BinaryOp::And => BinOp::And,
            BinaryOp::Or => BinOp::Or,
            BinaryOp::Xor => BinOp::Xor,
            BinaryOp::Shl => BinOp::Shl,
            BinaryOp::Shr => BinOp::Shr,
        };
        if dtype.is_bool() {
            let r = self.reg(RegClass::Pred);
            self.emit(Instr::Bin { op: bin, ty: Ty::Pred, dst: r, a: a.into(), b: b.into() });
            return Ok(r);
        }
        if dtype.is_float() {
            if op == BinaryOp::Rem {
                return Err(unsupported(
                    self.k,
                    inst,
                    "float rem (fmod) has no PTX instruction and is not lowered yet",
                ));
            }
            let (fa, fb) = (self.widen_to_f32(a, dtype), self.widen_to_f32(b, dtype));
            let r = self.reg(RegClass::F32);
            self.emit(Instr::Bin { op: bin, ty: Ty::F32, dst: r, a: fa.into(), b: fb.into() });
            return Ok(self.round_from_f32(r, dtype));
        }
        let ty = match op {
            BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::Shl => Ty::B32,
            _ => int_ty(dtype),
        };
        let r = self.reg(RegClass::B32);
        self.emit(Instr::Bin { op: bin, ty, dst: r, a: a.into(), b: b.into() });
        Ok(self.wrap(r, dtype))
    }

    fn compare(&mut self, pred: CmpPred, dtype: DType, a: Reg, b: Reg) -> Reg {
        let cmp = match pred {
            CmpPred::Eq => Cmp::Eq,
            CmpPred::Ne => Cmp::Ne,
            CmpPred::Lt => Cmp::Lt,
            CmpPred::Le => Cmp::Le,
            CmpPred::Gt => Cmp::Gt,
            CmpPred::Ge => Cmp::Ge,
        };
        let r = self.reg(RegClass::Pred);
        if dtype.is_bool() {
            // Only eq / ne are defined on bool: xor is "differ".
            self.emit(Instr::Bin { op: BinOp::Xor, ty: Ty::Pred, dst: r, a: a.into(), b: b.into() });
            if pred == CmpPred::Eq {
                let e = self.reg(RegClass::Pred);
                self.emit(Instr::Un { op: UnOp::Not, ty: Ty::Pred, dst: e, a: r.into() });
                return e;
            }
            return r;
        }
        if dtype.is_float() {
            let (fa, fb) = (self.widen_to_f32(a, dtype), self.widen_to_f32(b, dtype));
            self.emit(Instr::Setp { cmp, ty: Ty::F32, dst: r, a: fa.into(), b: fb.into() });
        } else {
            self.emit(Instr::Setp { cmp, ty: int_ty(dtype), dst: r, a: a.into(), b: b.into() });
        }
        r
    }

    fn select(&mut self, dtype: DType, c: Reg, a: Reg, b: Reg) -> Reg {
        if dtype.is_bool() {
            let (t, nc, f, r) = (
                self.reg(RegClass::Pred),
                self.reg(RegClass::Pred),
                self.reg(RegClass::Pred),
                self.reg(RegClass::Pred),
            );
            self.emit(Instr::Bin { op: BinOp::And, ty: Ty::Pred, dst: t, a: c.into(), b: a.into() });
            self.emit(Instr::Un { op: UnOp::Not, ty: Ty::Pred, dst: nc, a: c.into() });
            self.emit(Instr::Bin { op: BinOp::And, ty: Ty::Pred, dst: f, a: nc.into(), b: b.into() });
            self.emit(Instr::Bin { op: BinOp::Or, ty: Ty::Pred, dst: r, a: t.into(), b: f.into() });
            return r;
        }
        let class = class_of(dtype);
        let r = self.reg(class);
        self.emit(Instr::Selp { ty: mov_ty(class), dst: r, a: a.into(), b: b.into(), pred: c });
        r
    }

    fn cast(&mut self, a: Reg, from: DType, to: DType) -> Reg {
        if from == to {
            return a;
        }
        if from.is_bool() {
            return match to {
                DType::F32 | DType::F16 | DType::BF16 => {
                    let f = self.reg(RegClass::F32);
                    self.emit(Instr::Selp { ty: Ty::F32, dst: f, a: Operand::F32(1.0), b: Operand::F32(0.0), pred: a });
                    self.round_from_f32(f, to)
                }
                _ => {
                    let r = self.reg(RegClass::B32);
                    self.emit(Instr::Selp { ty: Ty::U32, dst: r, a: Operand::Int(1), b: Operand::Int(0), pred: a });
                    r
                }
            };
        }
        if to.is_bool() {
            let p = self.reg(RegClass::Pred);
            if from.is_float() {
                let f = self.widen_to_f32(a, from);
                self.emit(Instr::Setp { cmp: Cmp::Ne, ty: Ty::F32, dst: p, a: f.into(), b: Operand::F32(0.0) });
            } else {
                self.emit(Instr::Setp { cmp: Cmp::Ne, ty: Ty::U32, dst: p, a: a.into(), b: Operand::Int(0) });
            }
            return p;
        }
        match (from.is_float(), to.is_float()) {
            (true, true) => {
                let f = self.widen_to_f32(a, from);
                self.round_from_f32(f, to)
            }
            (true, false) => {
                // cvt.rzi saturates to the 32-bit range and maps NaN to 0; i8 / u8 clamp further.
                let f = self.widen_to_f32(a, from);
                let r = self.reg(RegClass::B32);
                let ty = int_ty(to);
                self.emit(Instr::Cvt { dst_ty: ty, src_ty: Ty::F32, dst: r, src: f });
                let (lo, hi) = match to {
                    DType::I8 => (-128, 127),
                    DType::U8 => (0, 255),
                    _ => return r,
                };
                let t = self.reg(RegClass::B32);
                self.emit(Instr::Bin { op: BinOp::Max, ty, dst: t, a: r.into(), b: Operand::Int(lo) });
                let out = self.reg(RegClass::B32);
                self.emit(Instr::Bin { op: BinOp::Min, ty, dst: out, a: t.into(), b: Operand::Int(hi) });
                out
            }
            (false, true) => {
                let f = self.reg(RegClass::F32);
                self.emit(Instr::Cvt { dst_ty: Ty::F32, src_ty: int_ty(from), dst: f, src: a });
                self.round_from_f32(f, to)
            }
            // Held sign- or zero-extended, so widening is free and narrowing wraps.
            (false, false) => self.wrap(a, to),
        }
    }

    fn bitcast(&mut self, a: Reg, from: DType, to: DType) -> Reg {
        let (fc, tc) = (class_of(from), class_of(to));
        if fc == tc {
            return self.wrap(a, to);
        }
        let r = self.reg(tc);
        self.emit(Instr::Mov { ty: Ty::B32, dst: r, src: a.into() });
        r
    }

    // --- shared-memory data movement ---

    /// Reserves `bytes` of shared memory at offset 0 (every use is fenced by barriers, so uses
    /// share one array).
    fn reserve(&mut self, bytes: u64) {
        self.shared_bytes = self.shared_bytes.max(bytes.min(u64::from(u32::MAX)) as u32);
    }

    /// Writes every valid element of `v` to the shared word `base_word + index`.
    fn stage(&mut self, v: Value, base_word: u64) {
        let lay = self.layout_of(v);
        let dtype = self.k.ty(v).dtype;
        self.reserve((base_word + lay.n) * 4);
        let smem = self.smem();
        for j in 0..lay.per {
            let e = self.elem_index(lay, j);
            let mut guard = self.valid(lay, j);
            if lay.replicated {
                guard = Some(self.thread0());
            }
            let addr = self.shared_addr(smem, e, base_word);
            let r = self.slot(v, j as usize);
            let (ty, src) = match class_of(dtype) {
                RegClass::Pred => {
                    let w = self.reg(RegClass::B32);
                    self.emit(Instr::Selp { ty: Ty::U32, dst: w, a: Operand::Int(1), b: Operand::Int(0), pred: r });
                    (Ty::U32, w)
                }
                class => (mov_ty(class), r),
            };
            self.emit_guarded(guard, Instr::St { space: Space::Shared, ty, srcs: vec![src.into()], addr, offset: 0 });
        }
    }

    /// `smem + (base_word + index) · 4`.
    fn shared_addr(&mut self, smem: Reg, index: Operand, base_word: u64) -> Reg {
        let off = self.reg(RegClass::B64);
        match index {
            Operand::Reg(r) => self.emit(Instr::MulWide { ty: Ty::U32, dst: off, a: r.into(), b: Operand::Int(4) }),
            other => self.emit(Instr::Mov { ty: Ty::B64, dst: off, src: other }),
        }
        let addr = self.reg(RegClass::B64);
        self.emit(Instr::Bin { op: BinOp::Add, ty: Ty::S64, dst: addr, a: smem.into(), b: off.into() });
        if base_word == 0 {
            return addr;
        }
        let out = self.reg(RegClass::B64);
        self.emit(Instr::Bin {
            op: BinOp::Add,
            ty: Ty::S64,
            dst: out,
            a: addr.into(),
            b: Operand::Int((base_word * 4) as i64),
        });
        out
    }

    /// Reads a staged element of `dtype` at `addr`.
    fn read_staged(&mut self, dtype: DType, addr: Reg) -> Reg {
        let class = class_of(dtype);
        if class == RegClass::Pred {
            let w = self.reg(RegClass::B32);
            self.emit(Instr::Ld { space: Space::Shared, ty: Ty::U32, dsts: vec![w], addr, offset: 0 });
            let p = self.reg(RegClass::Pred);
            self.emit(Instr::Setp { cmp: Cmp::Ne, ty: Ty::U32, dst: p, a: w.into(), b: Operand::Int(0) });
            return p;
        }
        let r = self.reg(class);
        self.emit(Instr::Ld { space: Space::Shared, ty: mov_ty(class), dsts: vec![r], addr, offset: 0 });
        r
    }

    /// `(e / stride) % dim` as a register.
    fn coord(&mut self, e: Operand, stride: u64, dim: u64) -> Reg {
        let q = self.reg(RegClass::B32);
        self.emit(Instr::Bin { op: BinOp::Div, ty: Ty::U32, dst: q, a: e, b: Operand::Int(stride as i64) });
        let c = self.reg(RegClass::B32);
        self.emit(Instr::Bin { op: BinOp::Rem, ty: Ty::U32, dst: c, a: q.into(), b: Operand::Int(dim as i64) });
        c
    }

    fn broadcast(&mut self, arg: Value, shape: &Shape) -> Vec<Reg> {
        let src = self.k.ty(arg).clone();
        let out_lay = self.layout(shape);
        self.stage(arg, 0);
        self.emit(Instr::BarSync);
        let rank = shape.rank();
        let pad = rank - src.shape.rank();
        let src_dims: Vec<u64> =
            (0..rank).map(|d| if d < pad { 1 } else { u64::from(src.shape.dims()[d - pad]) }).collect();
        let src_strides = Shape::new(src_dims.iter().map(|&d| d as u32).collect::<Vec<_>>()).strides();
        let out_strides = shape.strides();
        let smem = self.smem();
        let mut regs = Vec::new();
        for j in 0..out_lay.per {
            let e = self.elem_index(out_lay, j);
            let mut index: Option<Reg> = None;
            for d in 0..rank {
                if src_dims[d] == 1 {
                    continue;
                }
                let c = self.coord(e, out_strides[d] as u64, u64::from(shape.dims()[d]));
                let next = self.reg(RegClass::B32);
                let acc = index.map(Operand::from).unwrap_or(Operand::Int(0));
                self.emit(Instr::Fma {
                    ty: Ty::U32,
                    dst: next,
                    a: c.into(),
                    b: Operand::Int(src_strides[d] as i64),
                    c: acc,
                });
                index = Some(next);
            }
            let index = index.map(Operand::from).unwrap_or(Operand::Int(0));
            let addr = self.shared_addr(smem, index, 0);
            regs.push(self.read_staged(src.dtype, addr));
        }
        self.emit(Instr::BarSync);
        regs
    }

    /// The accumulator type of a reduction or dot over `dtype`, and its identity for `op`.
    fn acc_init(&mut self, op: ReduceOp, dtype: DType) -> (Reg, Ty) {
        if dtype.is_float() {
            let r = self.reg(RegClass::F32);
            let init = match op {
                ReduceOp::Sum => 0.0,
                ReduceOp::Max => f32::NEG_INFINITY,
            };
            self.emit(Instr::Mov { ty: Ty::F32, dst: r, src: Operand::F32(init) });
            (r, Ty::F32)
        } else {
            let r = self.reg(RegClass::B32);
            let init = match op {
                ReduceOp::Sum => 0,
                ReduceOp::Max => dtype.int_range().map(|(lo, _)| lo).unwrap_or(0),
            };
            self.emit(Instr::Mov { ty: int_ty(dtype), dst: r, src: Operand::Int(init) });
            (r, int_ty(dtype))
        }
    }

    fn accumulate(&mut self, op: ReduceOp, ty: Ty, acc: Reg, x: Reg, guard: Option<Reg>) {
        let bin = match op {
            ReduceOp::Sum => BinOp::Add,
            ReduceOp::Max => BinOp::Max,
        };
        self.emit_guarded(guard, Instr::Bin { op: bin, ty, dst: acc, a: acc.into(), b: x.into() });
    }

    /// Widens an element to the accumulator's register (f16 / bf16 to f32; others as they are).
    fn widen(&mut self, r: Reg, dtype: DType) -> Reg {
        if dtype.is_float() {
            self.widen_to_f32(r, dtype)
        } else {
            r
        }
    }

    /// The accumulator rounded or wrapped back to `dtype`.
    fn narrow(&mut self, acc: Reg, dtype: DType) -> Reg {
        if dtype.is_float() {
            self.round_from_f32(acc, dtype)
        } else {
            self.wrap(acc, dtype)
        }
    }

    /// A whole tile to one replicated element: per-thread, then the warp by butterfly shuffles,
    /// then the warps through shared memory.
    fn reduce_all(&mut self, op: ReduceOp, arg: Value) -> Vec<Reg> {
        let lay = self.layout_of(arg);
        let dtype = self.k.ty(arg).dtype;
        let (acc, ty) = self.acc_init(op, dtype);
        for j in 0..lay.per {
            let x = self.slot(arg, j as usize);
            let x = self.widen(x, dtype);
            let guard = self.valid(lay, j);
            self.accumulate(op, ty, acc, x, guard);
        }
        for lane_mask in [16, 8, 4, 2, 1] {
            let other = self.reg(acc.class);
            self.emit(Instr::ShflBfly { dst: other, src: acc, lane_mask });
            self.accumulate(op, ty, acc, other, None);
        }
        let warps = self.threads / 32;
        if warps > 1 {
            let (lane0, word) = self.lane0_and_warp_word();
            self.reserve(u64::from(warps) * 4);
            self.emit_guarded(
                Some(lane0),
                Instr::St { space: Space::Shared, ty, srcs: vec![acc.into()], addr: word, offset: 0 },
            );
            self.emit(Instr::BarSync);
            let smem = self.smem();
            let (total, _) = self.acc_init(op, dtype);
            for w in 0..warps {
                let x = self.reg(acc.class);
                self.emit(Instr::Ld { space: Space::Shared, ty, dsts: vec![x], addr: smem, offset: i64::from(w) * 4 });
                self.accumulate(op, ty, total, x, None);
            }
            self.emit(Instr::BarSync);
            return vec![self.narrow(total, dtype)];
        }
        vec![self.narrow(acc, dtype)]
    }

    /// Reduces `axis` of `arg` through shared memory: each output slot loops over the axis.
    fn reduce_axis(&mut self, op: ReduceOp, arg: Value, axis: usize, out: &Type) -> Vec<Reg> {
        let src = self.k.ty(arg).clone();
        let dims: Vec<u64> = src.shape.dims().iter().map(|&d| u64::from(d)).collect();
        let outer: u64 = dims[..axis].iter().product();
        let len = dims[axis];
        let inner: u64 = dims[axis + 1..].iter().product();
        let out_lay = self.layout(&out.shape);
        self.stage(arg, 0);
        self.emit(Instr::BarSync);
        let smem = self.smem();
        let mut regs = Vec::new();
        for j in 0..out_lay.per {
            let e = self.elem_index(out_lay, j);
            // Invalid slots clamp their coordinates, so they read inside the staged words.
            let o = self.coord(e, inner, outer.max(1));
            let i = self.coord(e, 1, inner.max(1));
            let base = self.reg(RegClass::B32);
            self.emit(Instr::Fma {
                ty: Ty::U32,
                dst: base,
                a: o.into(),
                b: Operand::Int((len * inner) as i64),
                c: i.into(),
            });
            let addr = self.shared_addr(smem, base.into(), 0);
            let (acc, ty) = self.acc_init(op, src.dtype);
            self.counted_loop(len, |l| {
                let x = l.read_staged(src.dtype, addr);
                let x = l.widen(x, src.dtype);
                l.accumulate(op, ty, acc, x, None);
                l.emit(Instr::Bin {
                    op: BinOp::Add,
                    ty: Ty::S64,
                    dst: addr,
                    a: addr.into(),
                    b: Operand::Int((inner * 4) as i64),
                });
            });
            regs.push(self.narrow(acc, src.dtype));
        }
        self.emit(Instr::BarSync);
        regs
    }

    /// Emits `body` `count` times as a PTX loop (uniform across the block: `count` is static).
    fn counted_loop(&mut self, count: u64, mut body: impl FnMut(&mut Self)) {
        if count == 0 {
            return;
        }
        let k = self.reg(RegClass::B32);
        self.emit(Instr::Mov { ty: Ty::U32, dst: k, src: Operand::Int(0) });
        let head = self.label();
        self.emit(Instr::Label(head));
        body(self);
        self.emit(Instr::Bin { op: BinOp::Add, ty: Ty::U32, dst: k, a: k.into(), b: Operand::Int(1) });
        let more = self.reg(RegClass::Pred);
        self.emit(Instr::Setp { cmp: Cmp::Lt, ty: Ty::U32, dst: more, a: k.into(), b: Operand::Int(count as i64) });
        self.emit_guarded(Some(more), Instr::Bra { target: head });
    }

    /// `acc + lhs · rhs` with both operands staged in shared memory and an FMA loop over `k`.
    fn dot(&mut self, inst: Inst, lhs: Value, rhs: Value, acc: Value) -> Result<Vec<Reg>, PtxError> {
        let (lt, rt, at) = (self.k.ty(lhs).clone(), self.k.ty(rhs).clone(), self.k.ty(acc).clone());
        let (m, kk) = (u64::from(lt.shape.dims()[0]), u64::from(lt.shape.dims()[1]));
        let n = u64::from(rt.shape.dims()[1]);
        let float = lt.dtype.is_float();
        if !float && !matches!(lt.dtype, DType::I8 | DType::U8) {
            return Err(unsupported(self.k, inst, format!("dot of {} operands", lt.dtype)));
        }
        self.stage(lhs, 0);
        self.stage(rhs, m * kk);
        self.emit(Instr::BarSync);
        let smem = self.smem();
        let out_lay = self.layout(&at.shape);
        let mut regs = Vec::new();
        for j in 0..out_lay.per {
            let e = self.elem_index(out_lay, j);
            let row = self.coord(e, n, m);
            let col = self.coord(e, 1, n);
            let a_index = self.reg(RegClass::B32);
            self.emit(Instr::Bin {
                op: BinOp::Mul,
                ty: Ty::U32,
                dst: a_index,
                a: row.into(),
                b: Operand::Int(kk as i64),
            });
            let a_addr = self.shared_addr(smem, a_index.into(), 0);
            let b_addr = self.shared_addr(smem, col.into(), m * kk);
            let init = self.slot(acc, j as usize);
            let sum = self.reg(init.class);
            self.emit(Instr::Mov { ty: mov_ty(init.class), dst: sum, src: init.into() });
            self.counted_loop(kk, |l| {
                let a = l.read_staged(lt.dtype, a_addr);
                let a = l.widen(a, lt.dtype);
                let b = l.read_staged(rt.dtype, b_addr);
                let b = l.widen(b, rt.dtype);
                let ty = if float { Ty::F32 } else { Ty::S32 };
                l.emit(Instr::Fma { ty, dst: sum, a: a.into(), b: b.into(), c: sum.into() });
                l.emit(Instr::Bin { op: BinOp::Add, ty: Ty::S64, dst: a_addr, a: a_addr.into(), b: Operand::Int(4) });
                l.emit(Instr::Bin {
                    op: BinOp::Add,
                    ty: Ty::S64,
                    dst: b_addr,
                    a: b_addr.into(),
                    b: Operand::Int((n * 4) as i64),
                });
            });
            regs.push(sum);
        }
        self.emit(Instr::BarSync);
        Ok(regs)
    }

    // --- global memory ---

    /// `base + offset · size` for one slot's offset register.
    fn global_addr(&mut self, base: Reg, offset: Reg, offset_dtype: DType, size: usize) -> Reg {
        let wide = self.reg(RegClass::B64);
        let ty = if offset_dtype.is_signed_int() { Ty::S32 } else { Ty::U32 };
        self.emit(Instr::MulWide { ty, dst: wide, a: offset.into(), b: Operand::Int(size as i64) });
        let addr = self.reg(RegClass::B64);
        self.emit(Instr::Bin { op: BinOp::Add, ty: Ty::S64, dst: addr, a: base.into(), b: wide.into() });
        addr
    }

    /// How many consecutive slots of each run one access may cover: the largest of 4, 2 and 1
    /// that divides the layout's run and the tile's last dimension (so a group stays in one row),
    /// spans at most 16 bytes, and over which the offset analysis proves the offsets consecutive
    /// from a multiple of the width (aligned, as buffer bases are 16-byte aligned) and the mask
    /// constant.
    ///
    /// Runs wider than 4 elements (bytes, f16 / bf16) are one packed `.v2` / `.v4.b32` access,
    /// split into elements after a load ([`Lowerer::packed_load`]) or packed before a store
    /// ([`Lowerer::pack_words`]); `max_width` is 4 where that is not done (bool).
    fn access_width(&self, offsets: Value, mask: Option<Value>, dtype: DType, lay: Layout, max_width: u32) -> usize {
        if lay.replicated || lay.vec == 1 {
            return 1;
        }
        let shape = &self.k.ty(offsets).shape;
        let last = u64::from(shape.dims().last().copied().unwrap_or(1));
        let Some(offs) = self.facts.get(&offsets).map(ValueFacts::last) else { return 1 };
        let mask_constancy = match mask {
            None => u64::MAX,
            Some(m) => self.facts.get(&m).map(|f| f.last().constancy).unwrap_or(1),
        };
        let widest = (16 / dtype.size_bytes().max(1)) as u32;
        let mut width = lay.vec.min(widest).min(max_width);
        while width > 1 {
            let w = u64::from(width);
            let fits = last % w == 0
                && offs.contiguity % w == 0
                && offs.divisibility_at(w) % w == 0
                && (mask_constancy == u64::MAX || mask_constancy % w == 0);
            if fits {
                return width as usize;
            }
            width /= 2;
        }
        1
    }

    /// A run of `width` (8 or 16) one- or two-byte elements as one 16-byte (or 8-byte)
    /// `ld.global.v4.b32` / `.v2.b32`, split into elements with `bfe` (bytes) or `mov.b32 {lo,
    /// hi}` (halves). `guard` is the load's predicate and whether elements where it is false must
    /// be replaced by their `others` (one per element; zero when absent) — not needed when the
    /// fallback is zero, which the zeroed words already give.
    fn packed_load(
        &mut self,
        dtype: DType,
        width: usize,
        addr: Reg,
        guard: Option<(Reg, bool)>,
        others: &[Option<Reg>],
    ) -> Vec<Reg> {
        let bytes = width * dtype.size_bytes();
        let words: Vec<Reg> = (0..bytes / 4).map(|_| self.reg(RegClass::B32)).collect();
        for &w in &words {
            // Defined even where the load is off, so every later read sees a set register.
            self.emit(Instr::Mov { ty: Ty::B32, dst: w, src: Operand::Int(0) });
        }
        self.emit_guarded(
            guard.map(|(g, _)| g),
            Instr::Ld { space: Space::Global, ty: Ty::B32, dsts: words.clone(), addr, offset: 0 },
        );
        let class = class_of(dtype);
        let mut elems = Vec::with_capacity(others.len());
        for &w in &words {
            if dtype.size_bytes() == 2 {
                let (lo, hi) = (self.reg(class), self.reg(class));
                self.emit(Instr::SplitHalves { lo, hi, src: w });
                elems.extend([lo, hi]);
            } else {
                let ty = if dtype.is_signed_int() { Ty::S32 } else { Ty::U32 };
                for byte in 0..4 {
                    let e = self.reg(class);
                    self.emit(Instr::Bfe { ty, dst: e, a: w, pos: byte * 8, len: 8 });
                    elems.push(e);
                }
            }
        }
        let Some((guard, true)) = guard else { return elems };
        elems
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let fallback = match others.get(i).copied().flatten() {
                    Some(o) => Operand::Reg(o),
                    None => Operand::Int(0),
                };
                let r = self.reg(class);
                self.emit(Instr::Selp { ty: mov_ty(class), dst: r, a: e.into(), b: fallback, pred: guard });
                r
            })
            .collect()
    }

    /// 8 or 16 one- or two-byte elements packed into 32-bit words (little-endian, as memory
    /// holds them), for one `st.global.v2` / `.v4.b32`.
    fn pack_words(&mut self, dtype: DType, elems: &[Reg]) -> Vec<Reg> {
        let per_word = 4 / dtype.size_bytes().max(1);
        let mut words = Vec::with_capacity(elems.len() / per_word);
        for chunk in elems.chunks(per_word) {
            let w = self.reg(RegClass::B32);
            if dtype.size_bytes() == 2 {
                self.emit(Instr::PackHalves { dst: w, lo: chunk[0], hi: chunk[1] });
            } else {
                // Bytes live sign- or zero-extended in words: mask each, shift it in place, or.
                self.emit(Instr::Bin { op: BinOp::And, ty: Ty::B32, dst: w, a: chunk[0].into(), b: Operand::Int(255) });
                for (i, &b) in chunk.iter().enumerate().skip(1) {
                    let masked = self.reg(RegClass::B32);
                    self.emit(Instr::Bin {
                        op: BinOp::And,
                        ty: Ty::B32,
                        dst: masked,
                        a: b.into(),
                        b: Operand::Int(255),
                    });
                    let shifted = self.reg(RegClass::B32);
                    let by = Operand::Int(8 * i as i64);
                    self.emit(Instr::Bin { op: BinOp::Shl, ty: Ty::B32, dst: shifted, a: masked.into(), b: by });
                    self.emit(Instr::Bin { op: BinOp::Or, ty: Ty::B32, dst: w, a: w.into(), b: shifted.into() });
                }
            }
            words.push(w);
        }
        words
    }

    fn mem_ty(dtype: DType) -> Ty {
        match dtype {
            DType::F32 => Ty::F32,
            DType::F16 | DType::BF16 => Ty::B16,
            DType::I32 => Ty::S32,
            DType::U32 => Ty::U32,
            DType::I8 => Ty::S8,
            DType::U8 | DType::Bool => Ty::U8,
        }
    }

    fn load(
        &mut self,
        inst: Inst,
        buffer: Param,
        offsets: Value,
        mask: Option<Value>,
        other: Option<Value>,
        out_ty: Option<&Type>,
    ) -> Result<Vec<Reg>, PtxError> {
        let Some(out_ty) = out_ty else { return Err(unsupported(self.k, inst, "a load without a result")) };
        let dtype = out_ty.dtype;
        let base = self.buffers[&buffer];
        let lay = self.layout(&out_ty.shape);
        let off_dtype = self.k.ty(offsets).dtype;
        let max_width = if dtype.is_bool() { 4 } else { 16 };
        let width = self.access_width(offsets, mask, dtype, lay, max_width);
        let mut regs = Vec::new();
        for j0 in (0..lay.per as usize).step_by(width) {
            if width > 4 {
                let valid = self.valid(lay, j0 as u32);
                let m = mask.map(|m| self.slot(m, j0));
                let guard = self.and_pred(valid, m);
                let off = self.slot(offsets, j0);
                let addr = self.global_addr(base, off, off_dtype, dtype.size_bytes());
                // Zeroed words already give zero elements where the load is off.
                let zero_other = other.is_none_or(|o| self.facts.get(&o).and_then(|f| f.constant) == Some(0));
                let others: Vec<Option<Reg>> = if zero_other {
                    Vec::new()
                } else {
                    (j0..j0 + width).map(|j| other.map(|o| self.slot(o, j))).collect()
                };
                let guard = if zero_other { guard.map(|g| (g, false)) } else { guard.map(|g| (g, true)) };
                regs.extend(self.packed_load(dtype, width, addr, guard, &others));
                continue;
            }
            // A run of `width` slots: one mask value, consecutive aligned addresses (proved by
            // `access_width`), so one guarded vector load.
            let valid = self.valid(lay, j0 as u32);
            let m = mask.map(|m| self.slot(m, j0));
            let guard = self.and_pred(valid, m);
            let off = self.slot(offsets, j0);
            let addr = self.global_addr(base, off, off_dtype, dtype.size_bytes());
            // Bool is stored as a byte; it is loaded into a word and compared.
            let class = if dtype.is_bool() { RegClass::B32 } else { class_of(dtype) };
            let mut dsts = Vec::with_capacity(width);
            for j in j0..j0 + width {
                let dst = self.reg(class);
                let init = match other {
                    Some(o) if dtype.is_bool() => {
                        let p = self.slot(o, j);
                        self.emit(Instr::Selp { ty: Ty::U32, dst, a: Operand::Int(1), b: Operand::Int(0), pred: p });
                        None
                    }
                    Some(o) => Some(Operand::Reg(self.slot(o, j))),
                    None if class == RegClass::F32 => Some(Operand::F32(0.0)),
                    None => Some(Operand::Int(0)),
                };
                if let Some(src) = init {
                    self.emit(Instr::Mov { ty: mov_ty(class), dst, src });
                }
                dsts.push(dst);
            }
            self.emit_guarded(
                guard,
                Instr::Ld { space: Space::Global, ty: Self::mem_ty(dtype), dsts: dsts.clone(), addr, offset: 0 },
            );
            for dst in dsts {
                if dtype.is_bool() {
                    let p = self.reg(RegClass::Pred);
                    self.emit(Instr::Setp { cmp: Cmp::Ne, ty: Ty::U32, dst: p, a: dst.into(), b: Operand::Int(0) });
                    regs.push(p);
                } else {
                    regs.push(dst);
                }
            }
        }
        Ok(regs)
    }

    fn store(
        &mut self,
        inst: Inst,
        buffer: Param,
        offsets: Value,
        value: Value,
        mask: Option<Value>,
        atomic: bool,
    ) -> Result<(), PtxError> {
        let dtype = self.k.ty(value).dtype;
        let base = self.buffers[&buffer];
        let lay = self.layout_of(offsets);
        let off_dtype = self.k.ty(offsets).dtype;
        if atomic && !matches!(dtype, DType::F32 | DType::I32 | DType::U32) {
            return Err(unsupported(self.k, inst, format!("atomic_add on {dtype} (only f32, i32 and u32 so far)")));
        }
        let max_width = if dtype.is_bool() { 4 } else { 16 };
        let width = if atomic { 1 } else { self.access_width(offsets, mask, dtype, lay, max_width) };
        for j0 in (0..lay.per as usize).step_by(width) {
            let mut valid = self.valid(lay, j0 as u32);
            if lay.replicated {
                // Every thread holds the element; one writes it.
                valid = Some(self.thread0());
            }
            let m = mask.map(|m| self.slot(m, j0));
            let guard = self.and_pred(valid, m);
            let off = self.slot(offsets, j0);
            let addr = self.global_addr(base, off, off_dtype, dtype.size_bytes());
            let mut srcs = Vec::with_capacity(width);
            for j in j0..j0 + width {
                let mut src = self.slot(value, j);
                if dtype.is_bool() {
                    let w = self.reg(RegClass::B32);
                    self.emit(Instr::Selp { ty: Ty::U32, dst: w, a: Operand::Int(1), b: Operand::Int(0), pred: src });
                    src = w;
                }
                srcs.push(src);
            }
            if width > 4 {
                srcs = self.pack_words(dtype, &srcs);
            }
            let instr = if atomic {
                let src = srcs[0];
                Instr::RedAdd { ty: if dtype == DType::F32 { Ty::F32 } else { int_ty(dtype) }, addr, src: src.into() }
            } else {
                let ty = match dtype {
                    _ if width > 4 => Ty::B32,
                    DType::I8 | DType::U8 | DType::Bool => Ty::B8,
                    other => Self::mem_ty(other),
                };
                Instr::St {
                    space: Space::Global,
                    ty,
                    srcs: srcs.into_iter().map(Operand::from).collect(),
                    addr,
                    offset: 0,
                }
            };
            self.emit_guarded(guard, instr);
        }
        Ok(())
    }

    // --- loops ---

    fn for_loop(
        &mut self,
        inst: Inst,
        start: Value,
        end: Value,
        step: Value,
        init: &[Value],
        body: Block,
    ) -> Result<(), PtxError> {
        let (start, end, step) = (self.slot(start, 0), self.slot(end, 0), self.slot(step, 0));
        // A step <= 0 is an error in the interpreter; here it traps instead of spinning.
        let bad = self.reg(RegClass::Pred);
        self.emit(Instr::Setp { cmp: Cmp::Le, ty: Ty::S32, dst: bad, a: step.into(), b: Operand::Int(0) });
        self.emit_guarded(Some(bad), Instr::Trap);
        let mut carried = Vec::new();
        for &v in init {
            let ty = self.k.ty(v).clone();
            let regs = self.new_tile(&ty);
            for (j, &r) in regs.iter().enumerate() {
                let src = self.slot(v, j);
                self.emit(Instr::Mov { ty: mov_ty(r.class), dst: r, src: src.into() });
            }
            carried.push(regs);
        }
        let iv = self.reg(RegClass::B32);
        self.emit(Instr::Mov { ty: Ty::S32, dst: iv, src: start.into() });
        let args = self.k.block(body).args.clone();
        if args.len() != carried.len() + 1 {
            return Err(unsupported(self.k, inst, "a loop body whose arguments do not match its carried values"));
        }
        self.tiles.insert(args[0], vec![iv]);
        for (a, regs) in args[1..].iter().zip(&carried) {
            self.tiles.insert(*a, regs.clone());
        }
        let (head, exit) = (self.label(), self.label());
        self.emit(Instr::Label(head));
        let done = self.reg(RegClass::Pred);
        self.emit(Instr::Setp { cmp: Cmp::Ge, ty: Ty::S32, dst: done, a: iv.into(), b: end.into() });
        self.emit_guarded(Some(done), Instr::Bra { target: exit });
        let insts = self.k.block(body).insts.clone();
        let Some((&last, rest)) = insts.split_last() else {
            return Err(unsupported(self.k, inst, "an empty loop body"));
        };
        for &i in rest {
            self.inst(i)?;
        }
        let Op::Yield { values } = &self.k.inst(last).op else {
            return Err(unsupported(self.k, inst, "a loop body that does not end in yield"));
        };
        // A parallel copy: read every yielded register before writing any carried one.
        let mut temps = Vec::new();
        for (v, regs) in values.iter().zip(&carried) {
            for (j, &r) in regs.iter().enumerate() {
                let src = self.slot(*v, j);
                let t = self.reg(r.class);
                self.emit(Instr::Mov { ty: mov_ty(r.class), dst: t, src: src.into() });
                temps.push((r, t));
            }
        }
        for (r, t) in temps {
            self.emit(Instr::Mov { ty: mov_ty(r.class), dst: r, src: t.into() });
        }
        self.emit(Instr::Bin { op: BinOp::Add, ty: Ty::S32, dst: iv, a: iv.into(), b: step.into() });
        self.emit(Instr::Bra { target: head });
        self.emit(Instr::Label(exit));
        for (r, regs) in self.k.inst(inst).results.clone().iter().zip(carried) {
            self.tiles.insert(*r, regs);
        }
        Ok(())
    }
}
