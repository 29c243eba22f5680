//! The roofline cost model that ranks candidates before anything is compiled.
//!
//! The kernel's own [`Cost`](kiln_kernels::Cost) is the work any config must do (unique bytes and
//! flops) and does not depend on the config. What differs between configs is read from each
//! launch's IR: per program, the bytes its loads and stores touch (tiles re-read by many
//! programs, masked padding), its multiply-adds and elementwise work, each multiplied by the trip
//! counts of the loops around it; and per launch, how many programs there are for how many
//! workers (waves). Trip counts are evaluated from the launch's scalar bindings for program 0; a
//! bound read from memory (a context length) is unknown, and `min(known, unknown)` is taken as
//! the known side, an upper bound.
//!
//! The model only orders candidates: the guided strategy measures the best few and then searches
//! around the fastest measured one, so its errors cost measurements, not results.

use crate::measure::Roofline;
use kiln_ir::interp::Scalar;
use kiln_ir::{BinaryOp, Block, Kernel, Literal, Op, Value};
use kiln_kernels::plan::Binding;
use kiln_kernels::{Cost, Plan};
use std::collections::HashMap;

/// Re-reads of data another program (or an earlier loop step) already brought in are served
/// from caches this many times faster than DRAM.
const CACHE_SPEEDUP: f64 = 4.0;
/// Fixed cost of scheduling one program, seconds.
const PROGRAM_OVERHEAD_S: f64 = 0.3e-6;
/// Fixed cost of one launch (dispatch to the workers and the join), seconds.
const LAUNCH_OVERHEAD_S: f64 = 4e-6;

/// The model's view of one candidate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Estimate {
    /// Predicted run time, seconds.
    pub seconds: f64,
    /// Bytes all programs' loads and stores touch (with re-reads), summed over launches.
    pub touched_bytes: f64,
    /// Multiply-add and elementwise operations of all programs.
    pub ops: f64,
    /// Largest per-program footprint of the tiles of one launch, bytes: what a CPU program keeps
    /// on its stack, or a GPU program in registers and shared memory.
    pub program_bytes: u64,
}

/// Predicts the run time of `plan` on a device with `roofline` and `parallelism` workers;
/// `unique` is the kernel's own cost of the problem.
pub fn estimate(plan: &Plan, unique: Cost, roofline: &Roofline, parallelism: usize) -> Estimate {
    let workers = parallelism.max(1) as f64;
    let (bw, peak) = (roofline.gbps * 1e9, roofline.gflops * 1e9);
    let (bw_worker, peak_worker) = (bw / workers, peak / workers);
    let mut seconds = roofline.time(unique.bytes, unique.flops);
    let (mut touched, mut ops, mut program_bytes) = (0.0, 0.0, 0);
    let mut launch_sum = 0.0;
    for launch in &plan.launches {
        let per = per_program(&launch.kernel, &launch.args, launch.grid);
        let programs = launch.grid.iter().map(|&g| g.max(1) as f64).product::<f64>();
        let waves = (programs / workers).ceil();
        let program_time = per.bytes / (CACHE_SPEEDUP * bw_worker) + per.ops / peak_worker + PROGRAM_OVERHEAD_S;
        // A launch of fewer programs than workers leaves workers idle; `waves` counts that.
        launch_sum += waves * program_time + LAUNCH_OVERHEAD_S;
        touched += per.bytes * programs;
        ops += per.ops * programs;
        program_bytes = program_bytes.max(per.tile_bytes);
    }
    // The unique traffic must cross DRAM whatever the tiling; the per-program work is on top
    // when it does not overlap, so the larger of the two bounds plus a share of the smaller.
    seconds = seconds.max(launch_sum) + 0.25 * seconds.min(launch_sum);
    Estimate { seconds, touched_bytes: touched, ops, program_bytes }
}

/// Work of one program of a launch.
#[derive(Default)]
struct PerProgram {
    bytes: f64,
    ops: f64,
    tile_bytes: u64,
}

fn per_program(kernel: &Kernel, args: &[Binding], grid: [u32; 3]) -> PerProgram {
    let mut env: HashMap<Value, i64> = HashMap::new();
    for (param, binding) in kernel.params.iter().zip(args) {
        if let (kiln_ir::ParamKind::Scalar { value }, Binding::Scalar(s)) = (&param.kind, binding) {
            if let Some(x) = scalar_i64(s) {
                env.insert(*value, x);
            }
        }
    }
    let tile_bytes = kernel.values.iter().map(|v| v.ty.shape.numel() * v.ty.dtype.size_bytes() as u64).sum();
    let mut out = PerProgram { tile_bytes, ..PerProgram::default() };
    walk(kernel, kernel.entry, 1.0, grid, &mut env, &mut out, 0);
    out
}

fn scalar_i64(s: &Scalar) -> Option<i64> {
    match s {
        Scalar::I32(x) => Some(i64::from(*x)),
        Scalar::U32(x) => Some(i64::from(*x)),
        Scalar::I8(x) => Some(i64::from(*x)),
        Scalar::U8(x) => Some(i64::from(*x)),
        Scalar::F32(_) | Scalar::F16(_) | Scalar::BF16(_) | Scalar::Bool(_) => None,
    }
}

fn walk(
    kernel: &Kernel,
    block: Block,
    mult: f64,
    grid: [u32; 3],
    env: &mut HashMap<Value, i64>,
    out: &mut PerProgram,
    depth: usize,
) {
    let Some(data) = kernel.blocks.get(block.index()) else { return };
    for &inst in &data.insts {
        let Some(inst) = kernel.insts.get(inst.index()) else { continue };
        let elems = |v: &Value| kernel.values.get(v.index()).map_or(1, |d| d.ty.shape.numel()) as f64;
        let result = inst.results.first().copied();
        match &inst.op {
            Op::ProgramId { .. } => {
                if let Some(r) = result {
                    env.insert(r, 0);
                }
            }
            Op::NumPrograms { axis } => {
                if let Some(r) = result {
                    env.insert(r, i64::from(grid.get(*axis as usize).copied().unwrap_or(1)));
                }
            }
            Op::Constant { value: Literal::Int(x), ty } if ty.shape.is_scalar() => {
                if let Some(r) = result {
                    env.insert(r, *x);
                }
            }
            Op::Binary { op, lhs, rhs } => {
                if let (Some(r), true) = (result, elems(lhs) == 1.0) {
                    if let Some(x) = fold(*op, env.get(lhs).copied(), env.get(rhs).copied()) {
                        env.insert(r, x);
                    }
                } else {
                    out.ops += mult * elems(lhs);
                }
            }
            Op::Cast { arg, .. } => {
                if let (Some(r), Some(&x)) = (result, env.get(arg)) {
                    env.insert(r, x);
                }
                out.ops += mult * elems(arg);
            }
            Op::Unary { arg, .. } | Op::Bitcast { arg, .. } | Op::Reduce { arg, .. } => out.ops += mult * elems(arg),
            Op::Compare { lhs, .. } => out.ops += mult * elems(lhs),
            Op::Select { cond, .. } => out.ops += mult * elems(cond),
            Op::Dot { lhs, rhs, .. } => {
                let (l, r) = (kernel.ty(*lhs).shape.dims().to_vec(), kernel.ty(*rhs).shape.dims().to_vec());
                if let (Some(&m), Some(&k), Some(&n)) = (l.first(), l.get(1), r.get(1)) {
                    out.ops += mult * 2.0 * f64::from(m) * f64::from(k) * f64::from(n);
                }
            }
            Op::Load { buffer, .. } => {
                let size = kernel.buffer_dtype(*buffer).map_or(4, |d| d.size_bytes()) as f64;
                if let Some(r) = result {
                    out.bytes += mult * elems(&r) * size;
                }
            }
            Op::Store { buffer, value, .. } | Op::AtomicAdd { buffer, value, .. } => {
                let size = kernel.buffer_dtype(*buffer).map_or(4, |d| d.size_bytes()) as f64;
                out.bytes += mult * elems(value) * size;
            }
            // A hint: the bytes it names are counted by the load that reads them.
            Op::Prefetch { .. } => {}
            Op::For { start, end, step, body, .. } => {
                let (s, e, st) = (env.get(start).copied(), env.get(end).copied(), env.get(step).copied());
                let trips = match (s, e, st) {
                    (Some(s), Some(e), Some(st)) if st > 0 => ((e - s).max(0) + st - 1) / st,
                    // An unknown bound: assume one step, the least work the loop can stand for.
                    _ => 1,
                };
                if let Some(&induction) = kernel.blocks.get(body.index()).and_then(|b| b.args.first()) {
                    if let Some(s) = s {
                        env.insert(induction, s);
                    }
                }
                if depth < kernel.blocks.len() {
                    walk(kernel, *body, mult * trips as f64, grid, env, out, depth + 1);
                }
            }
            Op::Constant { .. }
            | Op::Arange { .. }
            | Op::Broadcast { .. }
            | Op::Reshape { .. }
            | Op::ExpandDims { .. }
            | Op::Yield { .. } => {}
        }
    }
}

/// Folds a scalar integer op; `min` and `max` with one unknown side take the known side (loop
/// bounds clamped by a length read from memory stay bounded).
fn fold(op: BinaryOp, a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (op, a, b) {
        (BinaryOp::Min | BinaryOp::Max, Some(x), None) | (BinaryOp::Min | BinaryOp::Max, None, Some(x)) => Some(x),
        (_, Some(a), Some(b)) => match op {
            BinaryOp::Add => a.checked_add(b),
            BinaryOp::Sub => a.checked_sub(b),
            BinaryOp::Mul => a.checked_mul(b),
            BinaryOp::Div => a.checked_div(b),
            BinaryOp::Rem => a.checked_rem(b),
            BinaryOp::Min => Some(a.min(b)),
            BinaryOp::Max => Some(a.max(b)),
            BinaryOp::And => Some(a & b),
            BinaryOp::Or => Some(a | b),
            BinaryOp::Xor => Some(a ^ b),
            BinaryOp::Shl => u32::try_from(b).ok().and_then(|b| a.checked_shl(b)),
            BinaryOp::Shr => u32::try_from(b).ok().and_then(|b| a.checked_shr(b)),
        },
        _ => None,
    }
}
