//! Running a plan and checking it against the reference: the conformance check every backend
//! instantiates. Outputs are poisoned before the run, inputs are fresh random data, and each
//! compared buffer must be within the kernel's tolerance of the naive reference by relative error
//! norm, with no non-finite value where the reference is finite.

use crate::args::Args;
use crate::kernel::DynKernel;
use crate::plan::{Binding, Buffers, Launch, Plan, Role};
use crate::KernelError;
use kiln_ir::interp::{self, Arg, HostBuffer};
use kiln_ir::DType;

/// Runs launches on some device. The interpreter is the first; the CPU and PTX backends add
/// theirs.
pub trait Executor {
    /// A short name for reports (`interp`, `cpu`, `cuda:0`).
    fn name(&self) -> String;
    fn launch(&mut self, launch: &Launch, buffers: &mut Buffers) -> Result<(), String>;
}

/// Runs launches in the tile-IR interpreter, the definition of the semantics.
#[derive(Default)]
pub struct Interpreter;

impl Executor for Interpreter {
    fn name(&self) -> String {
        "interp".to_string()
    }

    fn launch(&mut self, launch: &Launch, buffers: &mut Buffers) -> Result<(), String> {
        with_args(launch, buffers, |args| interp::run(&launch.kernel, launch.grid, args).map_err(|e| e.to_string()))
    }
}

/// Moves the buffers a launch binds into an argument list in parameter order, runs `f` on it, and
/// moves them back (also when `f` fails), so executors copy nothing.
pub fn with_args(
    launch: &Launch,
    buffers: &mut Buffers,
    f: impl FnOnce(&mut [Arg]) -> Result<(), String>,
) -> Result<(), String> {
    let mut args = Vec::with_capacity(launch.args.len());
    let mut missing = None;
    for b in &launch.args {
        match b {
            Binding::Buffer(name) => match buffers.remove(name) {
                Some(buf) => args.push(Arg::Buffer(buf)),
                None => {
                    missing = Some(format!("buffer `{name}` is bound twice or does not exist"));
                    break;
                }
            },
            Binding::Scalar(s) => args.push(Arg::Scalar(*s)),
        }
    }
    let result = match missing {
        Some(m) => Err(m),
        None => f(&mut args),
    };
    for (b, arg) in launch.args.iter().zip(args) {
        if let (Binding::Buffer(name), Arg::Buffer(buf)) = (b, arg) {
            buffers.insert(name.clone(), buf);
        }
    }
    result
}

/// The value written into `Output` and `Scratch` buffers before a run, so that elements a kernel
/// forgets to write are caught.
pub fn poison(dtype: DType, len: usize) -> HostBuffer {
    match dtype {
        DType::F32 | DType::F16 | DType::BF16 => HostBuffer::from_f64(dtype, &vec![f64::NAN; len]),
        DType::I32 => HostBuffer::I32(vec![-0x5A5A_5A5A; len]),
        DType::U32 => HostBuffer::U32(vec![0xA5A5_A5A5; len]),
        DType::I8 => HostBuffer::I8(vec![-0x5B; len]),
        DType::U8 => HostBuffer::U8(vec![0xA5; len]),
        DType::Bool => HostBuffer::Bool(vec![true; len]),
    }
}

/// Sets up every buffer of `plan`: inputs from `inputs` (checked against their declarations),
/// outputs and scratch poisoned.
pub fn prepare_buffers(kernel: &'static str, plan: &Plan, inputs: &Buffers) -> Result<Buffers, KernelError> {
    let mut buffers = Buffers::new();
    for spec in &plan.buffers {
        let buf = match spec.role {
            Role::Input | Role::InOut => {
                let Some(buf) = inputs.get(&spec.name) else {
                    return Err(KernelError::MissingBuffer { kernel, buffer: spec.name.clone() });
                };
                if buf.dtype() != spec.dtype || buf.len() != spec.len {
                    return Err(KernelError::BufferMismatch {
                        kernel,
                        buffer: spec.name.clone(),
                        expected_dtype: spec.dtype,
                        expected_len: spec.len,
                        got_dtype: buf.dtype(),
                        got_len: buf.len(),
                    });
                }
                buf.clone()
            }
            Role::Output | Role::Scratch => poison(spec.dtype, spec.len),
        };
        buffers.insert(spec.name.clone(), buf);
    }
    Ok(buffers)
}

/// Runs every launch of `plan` in order.
pub fn run_plan(
    kernel: &'static str,
    plan: &Plan,
    exec: &mut dyn Executor,
    buffers: &mut Buffers,
) -> Result<(), KernelError> {
    for (i, launch) in plan.launches.iter().enumerate() {
        exec.launch(launch, buffers).map_err(|message| KernelError::Launch {
            kernel,
            launch: i,
            ir_name: launch.kernel.name.clone(),
            message,
        })?;
    }
    Ok(())
}

/// The comparison of one buffer with its reference.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    pub buffer: String,
    pub dtype: DType,
    /// ‖out − ref‖ / ‖ref‖ (‖out − ref‖ alone when the reference is all zeros).
    pub rel_error: f64,
    pub tolerance: f64,
    /// Elements that are NaN or infinite where the reference is finite (e.g. never written).
    pub non_finite: usize,
    /// The element with the largest absolute error: (index, got, expected).
    pub worst: Option<(usize, f64, f64)>,
}

impl Comparison {
    pub fn passed(&self) -> bool {
        self.non_finite == 0 && self.rel_error <= self.tolerance
    }
}

/// Compares `got` with `want` by relative error norm.
pub fn compare(buffer: &str, got: &HostBuffer, want: &[f64], tolerance: f64) -> Comparison {
    let got_f = got.to_f64();
    let mut err2 = 0.0;
    let mut ref2 = 0.0;
    let mut non_finite = got_f.len().abs_diff(want.len());
    let mut worst: Option<(usize, f64, f64)> = None;
    for (i, (&g, &w)) in got_f.iter().zip(want).enumerate() {
        if !g.is_finite() && w.is_finite() {
            non_finite += 1;
            if worst.is_none_or(|(_, wg, ww)| (wg - ww).is_finite()) {
                worst = Some((i, g, w));
            }
            continue;
        }
        if !w.is_finite() {
            // A non-finite reference (an -inf mask value) must be matched exactly.
            if g != w && !(g.is_nan() && w.is_nan()) {
                non_finite += 1;
            }
            continue;
        }
        let d = g - w;
        err2 += d * d;
        ref2 += w * w;
        if worst.is_none_or(|(_, wg, ww)| (wg - ww).is_finite() && d.abs() > (wg - ww).abs()) {
            worst = Some((i, g, w));
        }
    }
    let rel_error = if ref2 > 0.0 { (err2 / ref2).sqrt() } else { err2.sqrt() };
    Comparison { buffer: buffer.to_string(), dtype: got.dtype(), rel_error, tolerance, non_finite, worst }
}

/// What a conformance check found.
#[derive(Clone, Debug)]
pub struct CheckReport {
    pub kernel: &'static str,
    pub shape: Args,
    pub config: Args,
    pub executor: String,
    pub comparisons: Vec<Comparison>,
}

impl CheckReport {
    pub fn passed(&self) -> bool {
        self.comparisons.iter().all(Comparison::passed)
    }
}

impl std::fmt::Display for CheckReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} on {} [{}] [{}]:", self.kernel, self.executor, self.shape, self.config)?;
        for c in &self.comparisons {
            let verdict = if c.passed() { "ok" } else { "MISMATCH" };
            write!(
                f,
                "\n  {} ({}): rel error {:.3e} (tolerance {:.1e}), {} non-finite: {verdict}",
                c.buffer, c.dtype, c.rel_error, c.tolerance, c.non_finite
            )?;
            if let (false, Some((i, g, w))) = (c.passed(), c.worst) {
                write!(f, "; worst at [{i}]: got {g}, expected {w}")?;
            }
        }
        Ok(())
    }
}

/// Plans `kernel` for `shape` and `config`, runs it on `exec` with fresh inputs from `seed` and
/// poisoned outputs, and compares every output and in-out buffer with the naive reference.
pub fn check(
    kernel: &dyn DynKernel,
    shape: &Args,
    config: &Args,
    exec: &mut dyn Executor,
    seed: u64,
) -> Result<CheckReport, KernelError> {
    let name = kernel.id().name();
    let plan = kernel.plan(shape, config)?;
    let inputs = kernel.inputs(shape, seed)?;
    let mut buffers = prepare_buffers(name, &plan, &inputs)?;
    run_plan(name, &plan, exec, &mut buffers)?;
    let reference = kernel.reference(shape, &inputs)?;
    let mut comparisons = Vec::new();
    for spec in plan.buffers.iter().filter(|b| matches!(b.role, Role::Output | Role::InOut)) {
        let Some(want) = reference.get(&spec.name) else {
            return Err(KernelError::MissingBuffer {
                kernel: name,
                buffer: format!("{} (in the reference)", spec.name),
            });
        };
        let got = &buffers[&spec.name];
        comparisons.push(compare(&spec.name, got, want, kernel.tolerance(shape, spec.dtype)?));
    }
    let full_config = kernel.default_config(shape)?.overlaid(config);
    Ok(CheckReport {
        kernel: name,
        shape: kernel.problem(shape)?,
        config: full_config,
        executor: exec.name(),
        comparisons,
    })
}

/// Checks `kernel` on `shape` with its default config and up to `max_configs - 1` more configs
/// spread evenly over its legal space, each with its own seed.
pub fn sweep(
    kernel: &dyn DynKernel,
    shape: &Args,
    exec: &mut dyn Executor,
    seed: u64,
    max_configs: usize,
) -> Result<Vec<CheckReport>, KernelError> {
    let default = kernel.default_config(shape)?;
    let space = kernel.space(shape, &crate::SpaceLimits::default())?;
    let mut configs = vec![default.clone()];
    let extra = max_configs.saturating_sub(1);
    if extra > 0 && !space.is_empty() {
        let stride = space.len().div_ceil(extra).max(1);
        configs.extend(space.iter().step_by(stride).filter(|c| **c != default).take(extra).cloned());
    }
    configs
        .iter()
        .enumerate()
        .map(|(i, config)| check(kernel, shape, config, exec, seed.wrapping_add(i as u64)))
        .collect()
}

/// Shapes each kernel is checked on by the conformance suite (`tests/conformance.rs`) and
/// `kiln gpu-check`, by backend-independent problem keys; ragged sizes on purpose.
pub fn conformance_shapes(id: crate::KernelId) -> &'static [&'static str] {
    match id {
        crate::KernelId::DequantGemmW4 => &[
            "m=1,n=45,k=256,group=32,quant=sym,act=f32",
            "m=3,n=70,k=384,group=128,quant=asym,act=f16",
            // Multi-row GEMV: m ragged against its 8-row default tile.
            "m=5,n=40,k=192,group=32,quant=sym,act=f32",
            "m=11,n=36,k=128,group=64,quant=asym,act=f16",
            "m=17,n=33,k=128,group=64,quant=asym,act=f32",
            "m=1,n=45,k=256,group=32,quant=sym,act=f32,xq=i8",
            "m=2,n=70,k=384,group=128,quant=asym,act=f16,xq=i8",
            // The CPU's one-token default is the int8 row loop (a row per vector at k = 256,
            // two rows at k = 192); two digits per activation too.
            "m=1,n=37,k=192,group=32,quant=asym,act=f32,xq=i8",
            "m=1,n=45,k=256,group=32,quant=sym,act=f32,xq=i8x2",
            "m=3,n=40,k=384,group=64,quant=asym,act=f16,xq=i8x2",
        ],
        crate::KernelId::Q8Gemv => &[
            "m=1,n=77,k=96,act=f32",
            "m=5,n=40,k=160,act=f16,out=f16",
            "m=9,n=33,k=128,act=f32",
            // The integer paths, masked (ragged n, k not a whole step) and unmasked.
            "m=1,n=45,k=96,act=f32,xq=i8",
            "m=1,n=64,k=576,act=f32,xq=i8x2",
            "m=2,n=37,k=160,act=f16,xq=i8x2",
        ],
        crate::KernelId::Embedding => &["tokens=5,vocab=37,dim=96,dtype=f32", "tokens=3,vocab=10,dim=64,dtype=f16"],
        crate::KernelId::PagedKvAppend => &[
            "tokens=7,kv_heads=3,head_dim=64,block=16,n_blocks=4",
            "tokens=5,kv_heads=2,head_dim=128,block=5,n_blocks=9,dtype=f32",
        ],
        crate::KernelId::PagedKvGather => &[
            "batch=3,ctx=37,kv_heads=3,head_dim=64,block=16",
            "batch=2,ctx=20,kv_heads=1,head_dim=128,block=8,dtype=f32",
        ],
        crate::KernelId::AttentionDecodePaged => &[
            "batch=2,q_len=1,ctx=70,heads=9,kv_heads=3,head_dim=64,block=16",
            "batch=1,q_len=4,ctx=45,heads=4,kv_heads=1,head_dim=128,block=8,dtype=f32",
            "batch=3,q_len=3,ctx=33,heads=8,kv_heads=2,head_dim=64,block=5",
        ],
        crate::KernelId::AttentionPrefill => &[
            "batch=3,seq=37,heads=9,kv_heads=3,head_dim=64",
            "batch=1,seq=20,heads=4,kv_heads=4,head_dim=128,dtype=f32",
        ],
        crate::KernelId::Rmsnorm => {
            &["tokens=3,dim=100,dtype=f32", "tokens=2,dim=576,dtype=f16,fused=1", "tokens=1,dim=65,dtype=bf16"]
        }
        crate::KernelId::Rope => &[
            "tokens=3,heads=9,kv_heads=3,head_dim=64,max_pos=40,base=100000,variant=adjacent",
            "tokens=2,heads=4,kv_heads=2,head_dim=32,max_pos=9,variant=half,dtype=f16",
        ],
        crate::KernelId::SiluMul => &["tokens=3,dim=100,dtype=f16", "tokens=2,dim=1000,dtype=bf16"],
        crate::KernelId::Argmax => &["rows=3,vocab=1000,dtype=f32", "rows=2,vocab=77,dtype=f16"],
        crate::KernelId::Softmax => &["rows=3,vocab=1000,dtype=f32,temperature=0.7", "rows=2,vocab=77,dtype=f16"],
    }
}
