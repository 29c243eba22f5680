//! The CPU device: renders a kernel to C, compiles it (cached on disk), loads the shared object
//! with `libloading`, and runs the grid on its own pool of spinning workers ([`pool`]).
//!
//! Programs are split into contiguous ranges of linear program index; each thread runs its own
//! block of ranges, then takes what the others left (see [`pool`]). The generated entry point
//! runs a range (see `codegen/src/cpu/abi.h`). Every thread that runs programs has a large stack
//! because generated code keeps tiles in local arrays: the workers, and the *leader* thread that
//! [`CpuDevice::install`] runs its closure on (a launch made from any other thread is handed to
//! the leader first, unless that thread was started by [`on_kernel_stack`]).

mod guard;
mod pool;

pub use guard::GuardSide;

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
    /// Guarded buffers (`KILN_GUARD_BUFFERS`, see [`GuardSide`]) could not be set up.
    #[error("guarded buffers: {0}")]
    Guard(String),
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
    /// The workers that run a grid's ranges beside the leader.
    pool: pool::Pool,
    /// One thread, the leader: [`CpuDevice::install`] runs closures there.
    leader: rayon::ThreadPool,
    modules: Mutex<HashMap<String, Arc<CpuModule>>>,
    /// Run every launch on guarded copies of its buffers (`KILN_GUARD_BUFFERS`, tests).
    guard: Option<GuardSide>,
}

impl CpuModule {
    /// The tile-IR kernel the module was rendered from.
    pub fn kernel(&self) -> &Kernel {
        &self.kernel
    }

    /// The IR kernel's name.
    pub fn kernel_name(&self) -> &str {
        &self.kernel.name
    }
}

impl CpuDevice {
    /// A device for the running CPU with `threads` workers (all cores if `None`).
    pub fn host(threads: Option<usize>) -> Result<CpuDevice, CpuError> {
        let threads = match threads {
            Some(0) => return Err(CpuError::Pool("0 threads asked for; give at least 1".into())),
            Some(n) => n,
            None => std::thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let leader = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .thread_name(|_| "kiln-cpu-leader".into())
            .stack_size(WORKER_STACK_BYTES)
            .start_handler(|_| ON_KERNEL_STACK.with(|l| l.set(true)))
            .build()
            .map_err(|e| CpuError::Pool(e.to_string()))?;
        let pool = pool::Pool::new(threads, WORKER_STACK_BYTES).map_err(|e| CpuError::Pool(e.to_string()))?;
        let guard = GuardSide::from_env().map_err(CpuError::Guard)?;
        Ok(CpuDevice {
            target: CpuTarget::host(),
            cache_dir: cpu::compile::default_cache_dir(),
            pool,
            leader,
            modules: Mutex::new(HashMap::new()),
            guard,
        })
    }

    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs `f` on the device's leader thread, so that the launches `f` makes start their
    /// programs right there: no hand-off from an outside thread per launch, and a launch of one
    /// program runs on the leader alone. A model step's few hundred launches go through here.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        if ON_KERNEL_STACK.with(|l| l.get()) {
            f()
        } else {
            self.leader.install(f)
        }
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
        self.dispatch(module, grid, &buffers, &lens, &scalars)
    }

    /// Runs `module` over `grid` with buffer arguments that are windows ([`View`]s) of `buffers`:
    /// a kernel parameter then sees `len` elements starting at element `offset`, as if they were a
    /// buffer of their own. Several views of one buffer may be bound to one launch (the slices of
    /// a fused projection's output) as long as they do not overlap, so that no two parameters
    /// alias. Every view is checked against its buffer's length and the parameter's dtype.
    pub fn run_views(
        &self,
        module: &CpuModule,
        grid: [u32; 3],
        buffers: &mut [HostBuffer],
        args: &[ViewArg],
    ) -> Result<(), CpuError> {
        let kernel = &module.kernel;
        let bad = |message: String| CpuError::BadArgs { kernel: kernel.name.clone(), message };
        check_views(kernel, grid, buffers, args).map_err(bad)?;
        let n = kernel.params.len();
        // Few parameters: fixed arrays keep a launch free of allocations.
        let mut ptrs = [std::ptr::null_mut::<c_void>(); MAX_VIEW_PARAMS];
        let mut lens = [0i64; MAX_VIEW_PARAMS];
        let mut scalars = [0u32; MAX_VIEW_PARAMS];
        for (i, arg) in args.iter().enumerate() {
            match arg {
                ViewArg::Buffer(v) => {
                    let b = &mut buffers[v.buffer];
                    let base = buffer_ptr(b).cast::<u8>();
                    // SAFETY: `check_views` proved `offset + len <= b.len()`, so the window lies
                    // inside the buffer's allocation.
                    ptrs[i] = unsafe { base.add(v.offset * b.dtype().size_bytes()) }.cast();
                    lens[i] = v.len as i64;
                }
                ViewArg::Scalar(s) => scalars[i] = scalar_bits(s),
            }
        }
        self.dispatch(module, grid, &ptrs[..n], &lens[..n], &scalars[..n])
    }

    /// Runs the programs of `grid` on checked argument arrays: a grid of at most
    /// [`INLINE_PROGRAMS`] programs on the calling thread, a larger one split into a few ranges
    /// per worker of the pool.
    fn dispatch(
        &self,
        module: &CpuModule,
        grid: [u32; 3],
        buffers: &[*mut c_void],
        lens: &[i64],
        scalars: &[u32],
    ) -> Result<(), CpuError> {
        let kernel = &module.kernel;
        let guarded = match self.guard {
            Some(side) => Some(guard_buffers(kernel, buffers, lens, side)?),
            None => None,
        };
        let guarded_ptrs: Vec<*mut c_void>;
        let buffers = match &guarded {
            Some(copies) => {
                guarded_ptrs =
                    buffers.iter().zip(copies).map(|(&p, copy)| copy.as_ref().map_or(p, |c| c.ptr)).collect();
                &guarded_ptrs[..]
            }
            None => buffers,
        };
        let c_args = KilnArgs {
            buffers: buffers.as_ptr(),
            buffer_lens: lens.as_ptr(),
            scalars: scalars.as_ptr(),
            grid: grid.map(|g| g as i32),
        };
        let total = grid.iter().map(|&g| g as i64).product::<i64>();
        let entry = module.entry;
        let errors: Vec<KilnError> = if total <= INLINE_PROGRAMS {
            let mut err = KilnError::default();
            // SAFETY: as below; one thread runs every program.
            let code = unsafe { entry(&c_args, 0, total, &mut err) };
            if code != 0 {
                vec![err]
            } else {
                Vec::new()
            }
        } else {
            // A few ranges per thread, taken one at a time, balance uneven programs and a thread
            // that starts late without much call overhead. The ranges differ by at most one
            // program.
            let chunks = (self.threads() as i64 * RANGES_PER_THREAD).clamp(1, total);
            let shared = SharedArgs(&c_args);
            let failed = Mutex::new(Vec::new());
            let run = |c: i64| {
                let (begin, end) = (c * total / chunks, (c + 1) * total / chunks);
                let mut err = KilnError::default();
                // SAFETY: the arguments were checked against the kernel's signature; buffers
                // outlive the call; generated code bounds-checks every access and programs write
                // disjoint or atomically updated memory as the IR's semantics require.
                let code = unsafe { entry(shared.get(), begin, end, &mut err) };
                if code != 0 {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).push(err);
                }
            };
            self.install(|| self.pool.run(chunks, &run));
            failed.into_inner().unwrap_or_else(|p| p.into_inner())
        };
        for copy in guarded.iter().flatten().flatten() {
            copy.write_back();
        }
        match errors.into_iter().min_by_key(|e| e.program) {
            None => Ok(()),
            Some(e) => {
                Err(CpuError::Kernel { kernel: kernel.name.clone(), program: e.program, message: describe(kernel, &e) })
            }
        }
    }
}

/// A grid is cut into this many ranges per thread (fewer if it has fewer programs). Finer ranges
/// balance uneven programs (attention over sequences of different lengths: 2.65-2.96 ms against
/// 2.85-3.52 ms with 8 per thread at batch 16, ctx 2048); a thread claims its own ranges from an
/// uncontended word, so each costs tens of nanoseconds.
const RANGES_PER_THREAD: i64 = 32;

thread_local! {
    /// Whether this thread may run programs itself: a device's leader thread, or one started by
    /// [`on_kernel_stack`] (see [`CpuDevice::install`]).
    static ON_KERNEL_STACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Runs `f` on a new thread with the stack generated kernels need, from which every device's
/// launches start right there: [`CpuDevice::install`] runs inline instead of handing `f` to the
/// device's leader thread, which costs 12 µs back to back and 45-60 µs once the leader has
/// slept (2-vCPU host, slow phase), twice per decoded token. The `kiln` and `autotune` binaries
/// run their commands this way; a library user may too.
pub fn on_kernel_stack<R: Send>(f: impl FnOnce() -> R + Send) -> Result<R, CpuError> {
    std::thread::scope(|scope| {
        let thread = std::thread::Builder::new()
            .name("kiln-main".into())
            .stack_size(WORKER_STACK_BYTES)
            .spawn_scoped(scope, || {
                ON_KERNEL_STACK.with(|l| l.set(true));
                f()
            })
            .map_err(|e| {
                CpuError::Pool(format!("cannot start a thread with a {WORKER_STACK_BYTES}-byte stack: {e}"))
            })?;
        thread.join().map_err(|panic| std::panic::resume_unwind(panic))
    })
}

/// Grids of at most this many programs run on the calling thread: handing a program or two to
/// the pool costs more than it saves.
const INLINE_PROGRAMS: i64 = 1;

/// Most parameters a kernel run through [`CpuDevice::run_views`] may have.
pub const MAX_VIEW_PARAMS: usize = 16;

/// `len` elements of buffer `buffer` (an index into the slice given to
/// [`CpuDevice::run_views`]) starting at element `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct View {
    pub buffer: usize,
    pub offset: usize,
    pub len: usize,
}

impl View {
    /// Whether the two views share an element.
    pub fn overlaps(&self, other: &View) -> bool {
        self.buffer == other.buffer && self.offset < other.offset + other.len && other.offset < self.offset + self.len
    }
}

/// One argument of [`CpuDevice::run_views`], in parameter order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ViewArg {
    Buffer(View),
    Scalar(kiln_ir::interp::Scalar),
}

/// The launch checks of `kiln_ir::interp::check_launch` for views, plus each view inside its
/// buffer and no two views overlapping.
pub(crate) fn check_views(
    kernel: &Kernel,
    grid: [u32; 3],
    buffers: &[HostBuffer],
    args: &[ViewArg],
) -> Result<(), String> {
    use kiln_ir::ParamKind;
    if grid.iter().any(|&d| d == 0 || d > i32::MAX as u32) {
        return Err(format!("grid {grid:?} has an empty or too large dimension"));
    }
    if args.len() != kernel.params.len() {
        return Err(format!("{} parameters, {} arguments", kernel.params.len(), args.len()));
    }
    if args.len() > MAX_VIEW_PARAMS {
        return Err(format!("{} parameters; views take at most {MAX_VIEW_PARAMS}", args.len()));
    }
    for (i, (param, arg)) in kernel.params.iter().zip(args).enumerate() {
        match (&param.kind, arg) {
            (ParamKind::Buffer { dtype }, ViewArg::Buffer(v)) => {
                let b = buffers
                    .get(v.buffer)
                    .ok_or_else(|| format!("`{}`: buffer {} of {} bound", param.name, v.buffer, buffers.len()))?;
                if b.dtype() != *dtype {
                    return Err(format!("`{}` takes {dtype}, bound to a {} buffer", param.name, b.dtype()));
                }
                if v.offset.checked_add(v.len).is_none_or(|end| end > b.len()) {
                    return Err(format!(
                        "`{}`: view of {} elements at {} past the end of a buffer of {}",
                        param.name,
                        v.len,
                        v.offset,
                        b.len()
                    ));
                }
                let earlier = args[..i].iter().zip(&kernel.params).find_map(|(a, p)| match a {
                    ViewArg::Buffer(w) if w.overlaps(v) => Some(&p.name),
                    _ => None,
                });
                if let Some(other) = earlier {
                    return Err(format!("`{}` overlaps `{other}` in the same buffer", param.name));
                }
            }
            (ParamKind::Scalar { value }, ViewArg::Scalar(s)) => {
                let dtype = kernel.ty(*value).dtype;
                if s.dtype() != dtype {
                    return Err(format!("scalar `{}` takes {dtype}, got {}", param.name, s.dtype()));
                }
            }
            (ParamKind::Buffer { .. }, ViewArg::Scalar(_)) => {
                return Err(format!("`{}` is a buffer, bound to a scalar", param.name))
            }
            (ParamKind::Scalar { .. }, ViewArg::Buffer(_)) => {
                return Err(format!("`{}` is a scalar, bound to a buffer", param.name))
            }
        }
    }
    Ok(())
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

/// Guarded copies of a launch's buffer arguments (`None` for its scalars), see [`GuardSide`].
fn guard_buffers(
    kernel: &Kernel,
    buffers: &[*mut c_void],
    lens: &[i64],
    side: GuardSide,
) -> Result<Vec<Option<guard::GuardedCopy>>, CpuError> {
    kernel
        .params
        .iter()
        .zip(buffers.iter().zip(lens))
        .map(|(param, (&ptr, &len))| match param.kind {
            kiln_ir::ParamKind::Buffer { dtype } => {
                let bytes = usize::try_from(len).unwrap_or(0) * dtype.size_bytes();
                // SAFETY: the launch's checks proved `ptr` holds `len` elements of `dtype`, and
                // the buffer outlives the launch, which writes the copy back before it returns.
                unsafe { guard::GuardedCopy::new(ptr, bytes, side) }.map(Some).map_err(CpuError::Guard)
            }
            kiln_ir::ParamKind::Scalar { .. } => Ok(None),
        })
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn install_runs_inline_on_a_kernel_stack_and_hands_off_elsewhere() {
        let device = CpuDevice::host(Some(2)).unwrap();
        let here = std::thread::current().id();
        assert_ne!(device.install(|| std::thread::current().id()), here, "a plain thread hands off to the leader");
        let (outer, inner) =
            on_kernel_stack(|| (std::thread::current().id(), device.install(|| std::thread::current().id()))).unwrap();
        assert_eq!(outer, inner, "a thread on a kernel stack runs the closure itself");
        assert_ne!(outer, here);
    }

    #[test]
    fn zero_threads_is_a_typed_error() {
        assert!(matches!(CpuDevice::host(Some(0)), Err(CpuError::Pool(m)) if m.contains("at least 1")));
    }
}
