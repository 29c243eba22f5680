//! The CPU device: renders a kernel to C, compiles it (cached on disk), loads the shared object
//! with `libloading`, and runs the grid on a rayon pool.
//!
//! Programs are split into contiguous ranges of linear program index, one task per range; the
//! generated entry point runs a range (see `codegen/src/cpu/abi.h`). Worker threads get large
//! stacks because generated code keeps tiles in local arrays.

use kiln_codegen::cpu::{self, CpuTarget};
use kiln_ir::interp::{Arg, HostBuffer};
use kiln_ir::Kernel;
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Stack size of the worker threads: tiles live in local arrays of the generated code.
const WORKER_STACK_BYTES: usize = 64 << 20;

/// Why a CPU launch failed.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("rendering `{kernel}` to C failed: {message}")]
    Render { kernel: String, message: String },
    #[error(transparent)]
    Compile(#[from] cpu::compile::CompileError),
    #[error("loading {path}: {message}")]
    Load { path: PathBuf, message: String },
    #[error("cannot start the CPU thread pool: {0}")]
    Pool(String),
    #[error("`{kernel}`: {message}")]
    BadArgs { kernel: String, message: String },
    /// The kernel itself reported a failure (out-of-bounds access, division by zero, bad step).
    #[error("`{kernel}` program {program}: {message}")]
    Kernel { kernel: String, program: i64, message: String },
}

/// The `kiln_args` struct of the C ABI.
#[repr(C)]
struct KilnArgs {
    buffers: *const *mut c_void,
    buffer_lens: *const i64,
    /// `kiln_scalar` is a 4-byte union: one u32 per parameter.
    scalars: *const u32,
    grid: [i32; 3],
}

/// The `kiln_error` struct of the C ABI.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct KilnError {
    code: i32,
    inst: i32,
    param: i32,
    _pad: i32,
    index: i64,
    len: i64,
    program: i64,
}

type EntryFn = unsafe extern "C" fn(*const KilnArgs, i64, i64, *mut KilnError) -> i32;

/// A compiled, loaded kernel.
pub struct CpuModule {
    kernel: Kernel,
    entry: EntryFn,
    /// Keeps the shared object mapped while `entry` may be called.
    _library: libloading::Library,
    /// Where the object lives (for diagnostics).
    pub path: PathBuf,
}

/// The CPU device: a target, a cache directory and a thread pool.
pub struct CpuDevice {
    pub target: CpuTarget,
    pub cache_dir: PathBuf,
    pool: rayon::ThreadPool,
    modules: Mutex<HashMap<String, Arc<CpuModule>>>,
}

impl CpuModule {
    /// The IR kernel's name.
    pub fn kernel_name(&self) -> &str {
        &self.kernel.name
    }
}

impl CpuDevice {
    /// A device for the running CPU with `threads` workers (all cores if `None`).
    pub fn host(threads: Option<usize>) -> Result<CpuDevice, CpuError> {
        let mut builder = rayon::ThreadPoolBuilder::new().stack_size(WORKER_STACK_BYTES);
        if let Some(n) = threads {
            builder = builder.num_threads(n);
        }
        let pool = builder.build().map_err(|e| CpuError::Pool(e.to_string()))?;
        Ok(CpuDevice {
            target: CpuTarget::host(),
            cache_dir: cpu::compile::default_cache_dir(),
            pool,
            modules: Mutex::new(HashMap::new()),
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// Runs `f` on a worker of the device's pool, so that the launches `f` makes start their
    /// programs from inside the pool: no hand-off from an outside thread per launch, and a launch
    /// of one program runs right there. A model step's few hundred launches go through here.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        self.pool.install(f)
    }

    /// Renders, compiles (or finds in the cache) and loads `kernel`; loaded modules are reused.
    pub fn load(&self, kernel: &Kernel) -> Result<Arc<CpuModule>, CpuError> {
        let src = cpu::render(kernel, &self.target)
            .map_err(|e| CpuError::Render { kernel: kernel.name.clone(), message: e.to_string() })?;
        if let Some(m) = self.modules.lock().unwrap_or_else(|p| p.into_inner()).get(&src.code) {
            return Ok(m.clone());
        }
        let object = cpu::compile::compile(&src, &self.target, &self.cache_dir)?;
        let load_err = |message: String| CpuError::Load { path: object.path.clone(), message };
        // SAFETY: the object was produced by kiln's renderer and compiler for this process's
        // target; loading it runs no initialisers of its own.
        let library = unsafe { libloading::Library::new(&object.path) }.map_err(|e| load_err(e.to_string()))?;
        // SAFETY: the symbol has the signature of the ABI header that every generated source
        // includes.
        let entry: EntryFn =
            unsafe { *library.get::<EntryFn>(object.entry.as_bytes()).map_err(|e| load_err(e.to_string()))? };
        let module = Arc::new(CpuModule { kernel: kernel.clone(), entry, _library: library, path: object.path });
        self.modules.lock().unwrap_or_else(|p| p.into_inner()).insert(src.code, module.clone());
        Ok(module)
    }

    /// Runs `module` over `grid` on `args` (in parameter order, as the interpreter takes them).
    pub fn run(&self, module: &CpuModule, grid: [u32; 3], args: &mut [Arg]) -> Result<(), CpuError> {
        let kernel = &module.kernel;
        let bad = |message: String| CpuError::BadArgs { kernel: kernel.name.clone(), message };
        kiln_ir::interp::check_launch(kernel, grid, args).map_err(|e| bad(e.to_string()))?;
        let n = kernel.params.len();
        let mut buffers: Vec<*mut c_void> = vec![std::ptr::null_mut(); n];
        let mut lens = vec![0i64; n];
        let mut scalars = vec![0u32; n];
        for (i, arg) in args.iter_mut().enumerate() {
            match arg {
                Arg::Buffer(b) => {
                    lens[i] = b.len() as i64;
                    buffers[i] = buffer_ptr(b);
                }
                Arg::Scalar(s) => scalars[i] = scalar_bits(s),
            }
        }
        let c_args = KilnArgs {
            buffers: buffers.as_ptr(),
            buffer_lens: lens.as_ptr(),
            scalars: scalars.as_ptr(),
            grid: grid.map(|g| g as i32),
        };
        let total = grid.iter().map(|&g| g as i64).product::<i64>();
        // A few ranges per thread balance uneven programs without much call overhead.
        let chunks = (self.threads() as i64 * 4).clamp(1, total.max(1));
        let per = (total + chunks - 1) / chunks;
        let shared = SharedArgs(&c_args);
        let entry = module.entry;
        let errors: Vec<KilnError> = self.pool.install(|| {
            use rayon::prelude::*;
            (0..chunks)
                .into_par_iter()
                .filter_map(|c| {
                    let (begin, end) = (c * per, ((c + 1) * per).min(total));
                    if begin >= end {
                        return None;
                    }
                    let mut err = KilnError::default();
                    // SAFETY: the arguments were checked against the kernel's signature; buffers
                    // outlive the call; generated code bounds-checks every access and programs
                    // write disjoint or atomically updated memory as the IR's semantics require.
                    let code = unsafe { entry(shared.get(), begin, end, &mut err) };
                    (code != 0).then_some(err)
                })
                .collect()
        });
        match errors.into_iter().min_by_key(|e| e.program) {
            None => Ok(()),
            Some(e) => {
                Err(CpuError::Kernel { kernel: kernel.name.clone(), program: e.program, message: describe(kernel, &e) })
            }
        }
    }
}

/// Lets the argument block cross into worker threads.
struct SharedArgs<'a>(&'a KilnArgs);
// SAFETY: the pointed-to buffers are only accessed by generated code following the IR's
// memory model (distinct programs write distinct elements, or atomically).
unsafe impl Sync for SharedArgs<'_> {}
impl SharedArgs<'_> {
    fn get(&self) -> *const KilnArgs {
        self.0
    }
}

fn buffer_ptr(b: &mut HostBuffer) -> *mut c_void {
    // f16/bf16 are `repr(transparent)` over u16 and `bool` is one byte holding 0 or 1, which is
    // exactly the ABI's representation.
    match b {
        HostBuffer::F32(v) => v.as_mut_ptr().cast(),
        HostBuffer::F16(v) => v.as_mut_ptr().cast(),
        HostBuffer::BF16(v) => v.as_mut_ptr().cast(),
        HostBuffer::I32(v) => v.as_mut_ptr().cast(),
        HostBuffer::U32(v) => v.as_mut_ptr().cast(),
        HostBuffer::I8(v) => v.as_mut_ptr().cast(),
        HostBuffer::U8(v) => v.as_mut_ptr().cast(),
        HostBuffer::Bool(v) => v.as_mut_ptr().cast(),
    }
}

/// The bytes of a `kiln_scalar` union (little-endian layout of its member).
fn scalar_bits(s: &kiln_ir::interp::Scalar) -> u32 {
    use kiln_ir::interp::Scalar;
    match *s {
        Scalar::F32(v) => v.to_bits(),
        Scalar::F16(v) => v.to_bits().into(),
        Scalar::BF16(v) => v.to_bits().into(),
        Scalar::I32(v) => v as u32,
        Scalar::U32(v) => v,
        Scalar::I8(v) => (v as u8).into(),
        Scalar::U8(v) => v.into(),
        Scalar::Bool(v) => v.into(),
    }
}

/// Renders a `kiln_error` the way the interpreter words its errors.
fn describe(kernel: &Kernel, e: &KilnError) -> String {
    let inst = usize::try_from(e.inst).ok().filter(|&i| i < kernel.insts.len());
    let op = inst.map(|i| kernel.insts[i].op.name()).unwrap_or("?");
    match e.code {
        1 => {
            let buffer = usize::try_from(e.param).ok().and_then(|p| kernel.params.get(p)).map_or("?", |p| &p.name);
            format!(
                "{op} (inst{}) out of bounds: index {} of buffer `{buffer}` with {} elements",
                e.inst, e.index, e.len
            )
        }
        2 => format!("{op} (inst{}): integer division by zero", e.inst),
        3 => format!("{op} (inst{}): loop step {} is not positive", e.inst, e.index),
        code => format!("unknown failure code {code} at inst{}", e.inst),
    }
}

/// Runs library launches on the CPU device: the conformance suite's executor.
pub struct CpuExecutor<'d> {
    pub device: &'d CpuDevice,
}

impl kiln_kernels::check::Executor for CpuExecutor<'_> {
    fn name(&self) -> String {
        format!("cpu ({:?}, {} threads)", self.device.target.isa, self.device.threads())
    }

    fn launch(&mut self, launch: &kiln_kernels::Launch, buffers: &mut kiln_kernels::Buffers) -> Result<(), String> {
        let module = self.device.load(&launch.kernel).map_err(|e| e.to_string())?;
        kiln_kernels::check::with_args(launch, buffers, |args| {
            self.device.run(&module, launch.grid, args).map_err(|e| e.to_string())
        })
    }
}
