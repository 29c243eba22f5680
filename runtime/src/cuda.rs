//! The CUDA device: PTX from the PTX backend loaded with the driver API (`cuModuleLoadData`),
//! launched on one stream, timed with CUDA events. Built on `cudarc` with dynamic loading, so
//! kiln builds and every test passes on a machine with no CUDA: opening the device there is a
//! [`CudaError::NoDriver`], never a crash.
//!
//! - [`CudaDevice::open`]: probes `libcuda.so` before the first driver call (cudarc's lazy loader
//!   panics on a missing library), creates the primary context and reads the device's limits;
//! - [`CudaDevice::load`]: lowers a tile-IR kernel for PTX options (the device's `sm`, the warps
//!   per block, the launch's scalar [`Specialization`] from [`CudaDevice::launch_options`]) and
//!   loads it, cached per (options, kernel text); a driver rejection saves the PTX and names `ptxas` as the repro;
//! - [`check_resources`] / [`check_registers`]: a config needing more threads, shared memory or
//!   registers than the target allows is refused before launch with the limit named;
//! - [`CudaDevice::launch`]: parameters packed by [`crate::ptx_abi`] (the simulator's packing),
//!   grid = the tile IR's grid, block = `num_warps × 32` threads, static shared memory only; a
//!   launch whose scalars do not satisfy the kernel's specialisation is refused;
//! - [`CudaExecutor`]: the device as the conformance suite's `Executor`.
//!
//! Not verified on hardware in the change that added it: the code paths a GPU needs are
//! exercised here only by the simulator (packing, lowering) and by the no-driver tests.

use crate::ptx_abi::{self, AbiArg, ParamValue};
use crate::simt::{from_bytes, to_bytes};
use cudarc::driver::{sys, CudaContext, CudaEvent, CudaFunction, CudaSlice, CudaStream, DevicePtr, DriverError};
use kiln_codegen::ptx::{self, thread::ThreadKernel, PtxOptions, Sm, Specialization};
use kiln_ir::interp::{Arg, HostBuffer, Scalar};
use kiln_ir::{DType, Kernel};
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// Why the CUDA device failed.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    #[error("no CUDA driver found (libcuda.so): {0}")]
    NoDriver(String),
    #[error("no CUDA device {ordinal}: the driver reports {count} GPU(s)")]
    NoDevice { ordinal: usize, count: i32 },
    #[error("`{0}` is not a CUDA target; write `cuda:N` (e.g. `cuda:0`)")]
    BadTarget(String),
    #[error("CUDA driver call {call} failed: {source}")]
    Driver { call: &'static str, source: DriverError },
    #[error("compute capability {major}.{minor} is not supported: kiln emits PTX for sm_80 and sm_90")]
    Capability { major: i32, minor: i32 },
    #[error(transparent)]
    Lower(#[from] ptx::PtxError),
    #[error("the CUDA driver rejected the PTX of `{kernel}`: {message}\nPTX saved to {ptx_path}\nrepro: {command}")]
    Rejected { kernel: String, message: String, ptx_path: PathBuf, command: String },
    #[error("`{kernel}` needs {needed} {what}, over the {target} limit of {limit}; use a smaller config")]
    Resources { kernel: String, what: &'static str, needed: u64, limit: u64, target: String },
    #[error("`{kernel}`: {message}")]
    BadArgs { kernel: String, message: String },
}

fn driver(call: &'static str) -> impl FnOnce(DriverError) -> CudaError {
    move |source| CudaError::Driver { call, source }
}

/// What a block may use on a target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceLimits {
    /// `sm_90`, or the device's name.
    pub target: String,
    pub max_threads_per_block: u32,
    /// Static `.shared` arrays: 48 KiB on every target.
    pub static_shared_bytes: u32,
    /// Dynamic shared memory after the opt-in attribute (227 KiB on sm_90, 163 KiB on sm_80).
    pub optin_shared_bytes: u32,
    pub registers_per_block: u32,
    pub registers_per_thread: u32,
}

impl DeviceLimits {
    /// The documented limits of a generation (used before a device is open, and in tests).
    pub fn for_sm(sm: Sm) -> DeviceLimits {
        let optin_shared_bytes = match sm {
            Sm::Sm80 => 163 * 1024,
            Sm::Sm90 => 227 * 1024,
        };
        DeviceLimits {
            target: sm.name().to_string(),
            max_threads_per_block: 1024,
            static_shared_bytes: ptx::SHARED_LIMIT_BYTES,
            optin_shared_bytes,
            registers_per_block: 65536,
            registers_per_thread: 255,
        }
    }
}

/// Refuses a lowered kernel that needs more threads or shared memory than `limits` allow.
pub fn check_resources(kernel: &ThreadKernel, limits: &DeviceLimits) -> Result<(), CudaError> {
    let refuse = |what, needed: u32, limit: u32| CudaError::Resources {
        kernel: kernel.name.clone(),
        what,
        needed: u64::from(needed),
        limit: u64::from(limit),
        target: limits.target.clone(),
    };
    if kernel.threads > limits.max_threads_per_block {
        return Err(refuse("threads per block", kernel.threads, limits.max_threads_per_block));
    }
    // The lowering declares static shared memory only.
    if kernel.shared_bytes > limits.static_shared_bytes {
        return Err(refuse("bytes of static shared memory", kernel.shared_bytes, limits.static_shared_bytes));
    }
    Ok(())
}

/// Refuses a loaded kernel whose `registers` per thread (as ptxas or the driver allocated them)
/// exceed the per-thread or per-block register file at `threads` threads per block.
pub fn check_registers(name: &str, registers: u32, threads: u32, limits: &DeviceLimits) -> Result<(), CudaError> {
    let refuse = |what, needed: u64, limit: u32| CudaError::Resources {
        kernel: name.to_string(),
        what,
        needed,
        limit: u64::from(limit),
        target: limits.target.clone(),
    };
    if registers > limits.registers_per_thread {
        return Err(refuse("registers per thread", u64::from(registers), limits.registers_per_thread));
    }
    let per_block = u64::from(registers) * u64::from(threads);
    if per_block > u64::from(limits.registers_per_block) {
        return Err(refuse("registers per block", per_block, limits.registers_per_block));
    }
    Ok(())
}

/// `cuda:N` → `N`.
pub fn parse_target(target: &str) -> Result<usize, CudaError> {
    target.strip_prefix("cuda:").and_then(|n| n.parse().ok()).ok_or_else(|| CudaError::BadTarget(target.to_string()))
}

/// Whether the CUDA driver library can be loaded (no driver call is made).
pub fn driver_present() -> bool {
    // SAFETY: only tries `dlopen` on the candidate names; nothing from the library is called.
    unsafe { sys::is_culib_present() }
}

/// A kernel lowered, loaded and ready to launch.
pub struct CudaKernel {
    pub thread: ThreadKernel,
    /// The options it was lowered with (its specialisation decides which launches may use it).
    pub options: PtxOptions,
    /// Registers per thread, as the driver allocated them.
    pub registers: u32,
    function: CudaFunction,
}

/// A buffer in device memory with the element type and count of its host buffer.
pub struct DeviceBuffer {
    bytes: CudaSlice<u8>,
    pub dtype: DType,
    pub len: usize,
}

/// A launch argument on the device.
pub enum DeviceArg<'a> {
    Buffer(&'a DeviceBuffer),
    /// The `len` elements of `buffer` from element `offset` on, seen by the kernel as a buffer of
    /// its own (its pointer and length parameters), as `CpuDevice::run_views` binds a window.
    View {
        buffer: &'a DeviceBuffer,
        offset: usize,
        len: usize,
    },
    Scalar(Scalar),
}

/// One GPU: its context, stream, limits and module cache.
pub struct CudaDevice {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    pub ordinal: usize,
    pub name: String,
    pub sm: Sm,
    pub limits: DeviceLimits,
    pub sm_count: u32,
    pub l2_bytes: u64,
    /// Warps per block for kernels lowered without an explicit choice.
    pub num_warps: u32,
    /// Where rejected PTX is saved.
    pub ptx_dir: PathBuf,
    modules: Mutex<HashMap<String, Arc<CudaKernel>>>,
}

impl CudaDevice {
    /// Opens device `ordinal`; a typed error (never a panic) when there is no driver or device.
    pub fn open(ordinal: usize) -> Result<CudaDevice, CudaError> {
        if !driver_present() {
            return Err(CudaError::NoDriver(
                "libcuda.so.1 / libcuda.so could not be loaded; install the NVIDIA driver or run on a machine with a GPU"
                    .to_string(),
            ));
        }
        // cudarc's loader panics when a symbol is missing (a driver older than CUDA 12.8's API).
        let opened = std::panic::catch_unwind(|| -> Result<_, CudaError> {
            let count = match CudaContext::device_count() {
                // A driver without a GPU (or with every GPU hidden) fails cuInit this way.
                Err(DriverError(sys::CUresult::CUDA_ERROR_NO_DEVICE)) => 0,
                other => other.map_err(driver("cuInit / cuDeviceGetCount"))?,
            };
            if ordinal >= count.max(0) as usize {
                return Err(CudaError::NoDevice { ordinal, count });
            }
            let ctx = CudaContext::new(ordinal).map_err(driver("cuCtxCreate"))?;
            let attr = |a| ctx.attribute(a).map_err(driver("cuDeviceGetAttribute"));
            use sys::CUdevice_attribute::*;
            let (major, minor) = ctx.compute_capability().map_err(driver("cuDeviceGetAttribute"))?;
            let sm = match major {
                8 => Sm::Sm80,
                m if m >= 9 => Sm::Sm90,
                _ => return Err(CudaError::Capability { major, minor }),
            };
            let name = ctx.name().map_err(driver("cuDeviceGetName"))?;
            let limits = DeviceLimits {
                target: format!("{name} ({})", sm.name()),
                max_threads_per_block: attr(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK)? as u32,
                static_shared_bytes: ptx::SHARED_LIMIT_BYTES,
                optin_shared_bytes: attr(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)? as u32,
                registers_per_block: attr(CU_DEVICE_ATTRIBUTE_MAX_REGISTERS_PER_BLOCK)? as u32,
                registers_per_thread: 255,
            };
            let sm_count = attr(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)? as u32;
            let l2_bytes = attr(CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)? as u64;
            let stream = ctx.default_stream();
            Ok(CudaDevice {
                ctx,
                stream,
                ordinal,
                name,
                sm,
                limits,
                sm_count,
                l2_bytes,
                num_warps: 4,
                ptx_dir: std::env::temp_dir().join("kiln-ptx"),
                modules: Mutex::new(HashMap::new()),
            })
        });
        opened.unwrap_or_else(|panic| {
            let why = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "the driver library could not be used".to_string());
            Err(CudaError::NoDriver(why))
        })
    }

    /// The PTX options this device lowers with, unspecialised.
    pub fn options(&self) -> PtxOptions {
        PtxOptions::new(self.sm).with_warps(self.num_warps)
    }

    /// The options for a launch with `num_warps` warps on `args` (in tile-IR parameter order),
    /// specialised on its integer scalars as the simulator does ([`ptx_abi::specialization`]).
    pub fn launch_options(&self, num_warps: u32, args: impl IntoIterator<Item = AbiArg>) -> PtxOptions {
        PtxOptions::new(self.sm).with_warps(num_warps).with_specialization(ptx_abi::specialization(args))
    }

    /// Lowers `kernel` for `options`, checks its resources, loads its PTX (cached by options and
    /// kernel text) and checks its registers.
    pub fn load(&self, kernel: &Kernel, options: &PtxOptions) -> Result<Arc<CudaKernel>, CudaError> {
        let key = format!("{}|{}", options.key(), kernel);
        if let Some(k) = self.modules.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return Ok(k.clone());
        }
        if !(1..=32).contains(&options.num_warps) {
            return Err(ptx::PtxError::BadOptions(format!("num_warps = {} is not in 1..=32", options.num_warps)).into());
        }
        let thread = ptx::lower(kernel, options)?;
        check_resources(&thread, &self.limits)?;
        let text = ptx::print(&thread, options.sm);
        let function = self
            .ctx
            .load_module(cudarc::nvrtc::Ptx::from_src(text.clone()))
            .and_then(|m| m.load_function(&thread.name))
            .map_err(|e| self.rejected(&thread.name, &text, e.to_string()))?;
        use sys::CUfunction_attribute_enum::CU_FUNC_ATTRIBUTE_NUM_REGS;
        // SAFETY: the function was just loaded from its module, which it keeps alive.
        let registers = unsafe {
            cudarc::driver::result::function::get_function_attribute(function.cu_function(), CU_FUNC_ATTRIBUTE_NUM_REGS)
        }
        .map_err(driver("cuFuncGetAttribute"))? as u32;
        check_registers(&thread.name, registers, thread.threads, &self.limits)?;
        let loaded = Arc::new(CudaKernel { thread, options: options.clone(), registers, function });
        self.modules.lock().unwrap_or_else(|e| e.into_inner()).insert(key, loaded.clone());
        Ok(loaded)
    }

    /// The typed error for PTX the driver refused: the text saved, `ptxas` as the repro.
    fn rejected(&self, kernel: &str, text: &str, message: String) -> CudaError {
        let ptx_path = self.ptx_dir.join(format!("{kernel}.{}.ptx", self.sm.name()));
        let saved = std::fs::create_dir_all(&self.ptx_dir).and_then(|()| std::fs::write(&ptx_path, text));
        let message = match saved {
            Ok(()) => message,
            Err(e) => format!("{message} (and saving the PTX failed: {e})"),
        };
        let command = format!("ptxas -arch={} -v {}", self.sm.name(), ptx_path.display());
        CudaError::Rejected { kernel: kernel.to_string(), message, ptx_path, command }
    }

    /// Copies a host buffer to a new device buffer.
    pub fn upload(&self, buffer: &HostBuffer) -> Result<DeviceBuffer, CudaError> {
        let mut bytes = to_bytes(buffer);
        if bytes.is_empty() {
            // Zero-byte allocations are refused by some drivers; the length param stays 0.
            bytes.push(0);
        }
        let slice = self.stream.clone_htod(&bytes).map_err(driver("cuMemcpyHtoD"))?;
        Ok(DeviceBuffer { bytes: slice, dtype: buffer.dtype(), len: buffer.len() })
    }

    /// Overwrites a device buffer with a host buffer of the same dtype and length.
    pub fn write(&self, buffer: &mut DeviceBuffer, from: &HostBuffer) -> Result<(), CudaError> {
        if from.dtype() != buffer.dtype || from.len() != buffer.len {
            return Err(CudaError::BadArgs {
                kernel: "(host to device copy)".to_string(),
                message: format!(
                    "{} × {} cannot overwrite a device buffer of {} × {}",
                    from.len(),
                    from.dtype(),
                    buffer.len,
                    buffer.dtype
                ),
            });
        }
        if from.is_empty() {
            return Ok(());
        }
        let bytes = to_bytes(from);
        self.stream.memcpy_htod(&bytes, &mut buffer.bytes).map_err(driver("cuMemcpyHtoD"))?;
        // The copy reads `bytes` asynchronously; wait before they are dropped.
        self.synchronize()
    }

    /// Copies a device buffer back into `into` (same dtype and length).
    pub fn download(&self, buffer: &DeviceBuffer, into: &mut HostBuffer) -> Result<(), CudaError> {
        let bytes = self.stream.clone_dtoh(&buffer.bytes).map_err(driver("cuMemcpyDtoH"))?;
        // The copy is asynchronous on the stream; the bytes are read only after it completed.
        self.synchronize()?;
        from_bytes(into, &bytes);
        Ok(())
    }

    /// Enqueues one launch of `kernel` over `grid` (asynchronous; see [`CudaDevice::synchronize`]).
    pub fn launch(&self, kernel: &CudaKernel, grid: [u32; 3], args: &[DeviceArg]) -> Result<(), CudaError> {
        let bad = |message: String| CudaError::BadArgs { kernel: kernel.thread.name.clone(), message };
        // Each buffer argument as (buffer, first element, elements).
        let mut buffers: Vec<(&DeviceBuffer, usize, usize)> = Vec::with_capacity(args.len());
        for a in args {
            match *a {
                DeviceArg::Buffer(b) => buffers.push((b, 0, b.len)),
                DeviceArg::View { buffer, offset, len } => {
                    if offset.checked_add(len).is_none_or(|end| end > buffer.len) {
                        return Err(bad(format!(
                            "a view of {len} elements at {offset} lies outside its buffer of {}",
                            buffer.len
                        )));
                    }
                    buffers.push((buffer, offset, len));
                }
                DeviceArg::Scalar(_) => {}
            }
        }
        let mut views = buffers.iter();
        let abi = args.iter().map(move |a| match a {
            DeviceArg::Buffer(_) | DeviceArg::View { .. } => AbiArg::Buffer { len: views.next().map_or(0, |v| v.2) },
            DeviceArg::Scalar(s) => AbiArg::Scalar(*s),
        });
        let launch_spec: Specialization = ptx_abi::specialization(abi.clone());
        if !kernel.options.specialization.admits(&launch_spec) {
            return Err(bad(format!(
                "the scalars' divisibility ({}) does not satisfy the specialisation the kernel was lowered for ({})",
                launch_spec.key(),
                kernel.options.specialization.key()
            )));
        }
        let packed = ptx_abi::pack(&kernel.thread, abi).map_err(bad)?;
        let mut guards = Vec::with_capacity(buffers.len());
        let mut words: Vec<u64> = Vec::with_capacity(packed.len());
        for p in &packed {
            words.push(match p.value {
                ParamValue::Pointer { buffer } => {
                    let (b, offset, _) = buffers[buffer];
                    let (ptr, guard) = b.bytes.device_ptr(&self.stream);
                    guards.push(guard);
                    ptr + (offset * b.dtype.size_bytes()) as u64
                }
                ParamValue::Word(w) => w,
            });
        }
        if grid.contains(&0) {
            return Ok(());
        }
        // cuLaunchKernel reads each parameter's size from the function's signature, starting at
        // its pointer: the low bytes of a little-endian u64.
        let mut pointers: Vec<*mut c_void> = words.iter_mut().map(|w| (w as *mut u64).cast::<c_void>()).collect();
        let block = (kernel.thread.threads, 1, 1);
        // SAFETY: the function was loaded in this context, the parameters match its signature
        // (checked by `pack`), and the buffers outlive the launch (the guards hold them).
        unsafe {
            cudarc::driver::result::launch_kernel(
                kernel.function.cu_function(),
                (grid[0], grid[1], grid[2]),
                block,
                0,
                self.stream.cu_stream(),
                &mut pointers,
            )
        }
        .map_err(driver("cuLaunchKernel"))?;
        drop(guards);
        Ok(())
    }

    /// Waits for all enqueued work; a kernel fault surfaces here.
    pub fn synchronize(&self) -> Result<(), CudaError> {
        self.stream.synchronize().map_err(driver("cuStreamSynchronize"))
    }

    /// An event that records timing.
    pub fn timing_event(&self) -> Result<CudaEvent, CudaError> {
        self.ctx.new_event(Some(sys::CUevent_flags::CU_EVENT_DEFAULT)).map_err(driver("cuEventCreate"))
    }

    /// Records `event` on the device's stream.
    pub fn record(&self, event: &CudaEvent) -> Result<(), CudaError> {
        event.record(&self.stream).map_err(driver("cuEventRecord"))
    }

    /// Milliseconds between two recorded events (after both completed).
    pub fn elapsed_ms(&self, start: &CudaEvent, end: &CudaEvent) -> Result<f32, CudaError> {
        end.synchronize().map_err(driver("cuEventSynchronize"))?;
        start.elapsed_ms(end).map_err(driver("cuEventElapsedTime"))
    }

    /// `cuda:N`.
    pub fn target(&self) -> String {
        format!("cuda:{}", self.ordinal)
    }
}

/// The CUDA device as the conformance suite's executor: each launch uploads its buffers, runs,
/// waits, and downloads every buffer back.
pub struct CudaExecutor<'a> {
    pub device: &'a CudaDevice,
    /// Warps per block of every launch.
    pub num_warps: u32,
}

impl kiln_kernels::check::Executor for CudaExecutor<'_> {
    fn name(&self) -> String {
        format!("{} ({}, {} warps)", self.device.target(), self.device.sm.name(), self.num_warps)
    }

    fn launch(&mut self, launch: &kiln_kernels::Launch, buffers: &mut kiln_kernels::Buffers) -> Result<(), String> {
        kiln_kernels::check::with_args(launch, buffers, |args| {
            run_host(self.device, self.num_warps, &launch.kernel, launch.grid, args).map_err(|e| e.to_string())
        })
    }
}

/// Runs `kernel` on host arguments: upload, launch, synchronize, download.
pub fn run_host(
    device: &CudaDevice,
    num_warps: u32,
    kernel: &Kernel,
    grid: [u32; 3],
    args: &mut [Arg],
) -> Result<(), CudaError> {
    kiln_ir::interp::check_launch(kernel, grid, args)
        .map_err(|e| CudaError::BadArgs { kernel: kernel.name.clone(), message: e.to_string() })?;
    let options = device.launch_options(
        num_warps,
        args.iter().map(|a| match a {
            Arg::Buffer(b) => AbiArg::Buffer { len: b.len() },
            Arg::Scalar(s) => AbiArg::Scalar(*s),
        }),
    );
    let loaded = device.load(kernel, &options)?;
    let mut uploaded = Vec::new();
    for arg in args.iter() {
        if let Arg::Buffer(b) = arg {
            uploaded.push(device.upload(b)?);
        }
    }
    let mut next = uploaded.iter();
    let device_args: Vec<DeviceArg> = args
        .iter()
        .map(|a| match a {
            Arg::Buffer(_) => next.next().map(DeviceArg::Buffer),
            Arg::Scalar(s) => Some(DeviceArg::Scalar(*s)),
        })
        .collect::<Option<_>>()
        .unwrap_or_default();
    device.launch(&loaded, grid, &device_args)?;
    device.synchronize()?;
    let mut next = uploaded.iter();
    for arg in args.iter_mut() {
        if let Arg::Buffer(b) = arg {
            if let Some(d) = next.next() {
                device.download(d, b)?;
            }
        }
    }
    Ok(())
}
