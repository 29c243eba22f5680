//! Where a model's launches run: the CPU device, a CUDA GPU, or the SIMT simulator (the CUDA
//! path run on the host, for tests on machines without a GPU).
//!
//! The forward pass ([`super::llama`]) keeps one host [`HostBuffer`] per store buffer and resolves
//! every launch into `View`s of those buffers; this module is the only place that knows what a
//! view becomes on a device:
//!
//! - **CPU**: the host buffers are the memory; a launch is `CpuDevice::run_views`.
//! - **CUDA**: each store buffer has a device copy ([`DeviceMemory`]); a view is the copy's
//!   address plus its offset and its length (the PTX ABI's pointer and length parameters), so a
//!   view of a fused projection's rows or of one block of a fused activation costs nothing, as
//!   on the CPU. The host copy of a buffer is written to the device when the host changed it
//!   ([`DeviceMemory::upload_dirty`]: weights once, the step's metadata per pass) and read back
//!   when the host needs it ([`DeviceMemory::download`]: the logits, a gathered head row).
//! - **SIMT**: the same as CUDA, with the simulator's memory (one byte vector per store buffer,
//!   addressed as `kiln_codegen::ptx::sim::buffer_address(index) + offset`) for device memory:
//!   the lowering, the specialisation, the parameter packing and the view addresses the GPU gets.
//!
//! A kernel for a PTX device is lowered per launch of a plan, specialised on that launch's
//! integer scalars (as `kiln bench --target cuda:N` does) with the warps per block of the
//! config's `num_warps` (default 4; the knob is the launch's, not the kernel's).

use crate::cpu::{check_views, CpuDevice, CpuError, CpuModule, ViewArg};
use crate::cuda::{CudaDevice, CudaError, CudaKernel, DeviceArg, DeviceBuffer};
use crate::cuda_bench::GpuConfig;
use crate::ptx_abi::{self, AbiArg, ParamValue};
use crate::simt::{from_bytes, to_bytes};
use kiln_codegen::ptx::{self, sim, PtxOptions, ThreadKernel};
use kiln_ir::interp::HostBuffer;
use kiln_ir::Kernel;
use kiln_kernels::{Args, Binding, Launch};
use std::sync::Arc;

/// Why a launch or a copy on a model's device failed.
#[derive(Debug, thiserror::Error)]
pub enum DeviceError {
    #[error(transparent)]
    Cpu(#[from] CpuError),
    #[error(transparent)]
    Cuda(#[from] CudaError),
    #[error("SIMT simulator: {0}")]
    Simt(String),
    #[error("config {config}: {message}")]
    Config { config: String, message: String },
    /// A broken invariant of the model's device memory, reported instead of panicking.
    #[error("device memory: {0}")]
    Memory(String),
}

/// The device a model runs on.
#[derive(Clone)]
pub enum ModelDevice {
    Cpu(Arc<CpuDevice>),
    Cuda(Arc<CudaDevice>),
    /// The SIMT simulator with these options (target and default warps per block): the CUDA
    /// path on the host, for tests. Slow: small models only.
    Simt(PtxOptions),
}

impl From<Arc<CpuDevice>> for ModelDevice {
    fn from(device: Arc<CpuDevice>) -> ModelDevice {
        ModelDevice::Cpu(device)
    }
}

impl From<Arc<CudaDevice>> for ModelDevice {
    fn from(device: Arc<CudaDevice>) -> ModelDevice {
        ModelDevice::Cuda(device)
    }
}

/// A launch's kernel, loaded for its device.
pub enum Module {
    Cpu(Arc<CpuModule>),
    Cuda { kernel: Arc<Kernel>, loaded: Arc<CudaKernel> },
    Simt { kernel: Arc<Kernel>, thread: Arc<ThreadKernel> },
}

impl Module {
    /// The tile-IR kernel.
    pub fn kernel(&self) -> &Kernel {
        match self {
            Module::Cpu(m) => m.kernel(),
            Module::Cuda { kernel, .. } | Module::Simt { kernel, .. } => kernel,
        }
    }
}

impl ModelDevice {
    /// `cpu, N threads`, `cuda:N NAME` or `simt (sm_90)`, for reports.
    pub fn name(&self) -> String {
        match self {
            ModelDevice::Cpu(d) => format!("cpu, {} threads", d.threads()),
            ModelDevice::Cuda(d) => format!("{} {}", d.target(), d.name),
            ModelDevice::Simt(o) => format!("simt ({})", o.sm.name()),
        }
    }

    /// Host threads running the grid (the CPU's workers; 1 for a GPU, whose host thread only
    /// enqueues).
    pub fn threads(&self) -> usize {
        match self {
            ModelDevice::Cpu(d) => d.threads(),
            _ => 1,
        }
    }

    /// The kernel config of a provider's `config` for this device: on a PTX device,
    /// `num_warps` split off (it is the launch's knob) and returned beside it.
    pub fn split_config(&self, config: &Args) -> Result<(Args, u32), DeviceError> {
        let default = match self {
            ModelDevice::Cpu(_) => return Ok((config.clone(), 0)),
            ModelDevice::Cuda(d) => d.num_warps,
            ModelDevice::Simt(o) => o.num_warps,
        };
        let split = GpuConfig::split(config, default)
            .map_err(|e| DeviceError::Config { config: config.to_string(), message: e.to_string() })?;
        Ok((split.kernel, split.num_warps))
    }

    /// Loads the kernel of one plan launch: rendered and compiled for the CPU, or lowered for a
    /// PTX device with `num_warps` warps, specialised on the launch's integer scalars.
    pub fn load(&self, launch: &Launch, num_warps: u32) -> Result<Module, DeviceError> {
        let abi = || {
            launch.args.iter().map(|b| match b {
                Binding::Buffer(_) => AbiArg::Buffer { len: 0 },
                Binding::Scalar(s) => AbiArg::Scalar(*s),
            })
        };
        match self {
            ModelDevice::Cpu(d) => Ok(Module::Cpu(d.load(&launch.kernel)?)),
            ModelDevice::Cuda(d) => {
                let options = d.launch_options(num_warps, abi());
                let loaded = d.load(&launch.kernel, &options)?;
                Ok(Module::Cuda { kernel: Arc::new(launch.kernel.clone()), loaded })
            }
            ModelDevice::Simt(o) => {
                let options = o.clone().with_warps(num_warps).with_specialization(ptx_abi::specialization(abi()));
                let thread = ptx::lower(&launch.kernel, &options)
                    .map_err(|e| DeviceError::Simt(format!("lowering `{}`: {e}", launch.kernel.name)))?;
                Ok(Module::Simt { kernel: Arc::new(launch.kernel.clone()), thread: Arc::new(thread) })
            }
        }
    }

    /// Runs `f` where this device's launches should be made from: the CPU device's leader
    /// thread (see `CpuDevice::install`); the calling thread elsewhere.
    pub fn install<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        match self {
            ModelDevice::Cpu(d) => d.install(f),
            _ => f(),
        }
    }

    /// Waits for every enqueued launch (a GPU's launches are asynchronous; elsewhere a no-op).
    pub fn synchronize(&self) -> Result<(), DeviceError> {
        match self {
            ModelDevice::Cuda(d) => Ok(d.synchronize()?),
            _ => Ok(()),
        }
    }
}

/// The device copies of a model's store buffers, by store index (empty on the CPU, whose host
/// buffers are the memory), and which host buffers changed since they were last written there.
#[derive(Default)]
pub struct DeviceMemory {
    cuda: Vec<Option<DeviceBuffer>>,
    simt: Vec<Vec<u8>>,
    dirty: Vec<bool>,
}

impl DeviceMemory {
    /// Marks store buffer `index` as changed on the host.
    pub fn touch(&mut self, index: usize) {
        if self.dirty.len() <= index {
            self.dirty.resize(index + 1, false);
        }
        self.dirty[index] = true;
    }

    /// Writes every host buffer changed since its last upload to `device` (nothing on the CPU).
    pub fn upload_dirty(&mut self, device: &ModelDevice, host: &[HostBuffer]) -> Result<(), DeviceError> {
        if self.dirty.len() < host.len() {
            self.dirty.resize(host.len(), true);
        }
        match device {
            ModelDevice::Cpu(_) => {}
            ModelDevice::Cuda(d) => {
                self.cuda.resize_with(host.len(), || None);
                for (i, buf) in host.iter().enumerate().filter(|&(i, _)| self.dirty[i]) {
                    match &mut self.cuda[i] {
                        Some(copy) if copy.len == buf.len() && copy.dtype == buf.dtype() => d.write(copy, buf)?,
                        slot => *slot = Some(d.upload(buf)?),
                    }
                }
            }
            ModelDevice::Simt(_) => {
                self.simt.resize_with(host.len(), Vec::new);
                for (i, buf) in host.iter().enumerate().filter(|&(i, _)| self.dirty[i]) {
                    self.simt[i] = to_bytes(buf);
                }
            }
        }
        self.dirty.iter_mut().for_each(|d| *d = false);
        Ok(())
    }

    /// Reads store buffer `index` back from `device` into `into` (nothing on the CPU).
    pub fn download(&self, device: &ModelDevice, index: usize, into: &mut HostBuffer) -> Result<(), DeviceError> {
        let missing = || DeviceError::Memory(format!("store buffer {index} was never uploaded"));
        match device {
            ModelDevice::Cpu(_) => Ok(()),
            ModelDevice::Cuda(d) => {
                let copy = self.cuda.get(index).and_then(Option::as_ref).ok_or_else(missing)?;
                Ok(d.download(copy, into)?)
            }
            ModelDevice::Simt(_) => {
                from_bytes(into, self.simt.get(index).ok_or_else(missing)?);
                Ok(())
            }
        }
    }

    /// Runs one launch whose buffer arguments are views of the store's buffers: on the host
    /// buffers on the CPU, on their device copies elsewhere (uploaded first: see
    /// [`DeviceMemory::upload_dirty`]). Views of PTX launches are checked when the launch is
    /// resolved ([`check_resolved`]).
    pub fn launch(
        &mut self,
        device: &ModelDevice,
        module: &Module,
        grid: [u32; 3],
        host: &mut [HostBuffer],
        args: &[ViewArg],
    ) -> Result<(), DeviceError> {
        match (device, module) {
            (ModelDevice::Cpu(d), Module::Cpu(m)) => Ok(d.run_views(m, grid, host, args)?),
            (ModelDevice::Cuda(d), Module::Cuda { loaded, .. }) => {
                let mut device_args = Vec::with_capacity(args.len());
                for arg in args {
                    device_args.push(match *arg {
                        ViewArg::Buffer(v) => {
                            let buffer = self.cuda.get(v.buffer).and_then(Option::as_ref).ok_or_else(|| {
                                DeviceError::Memory(format!("store buffer {} was never uploaded", v.buffer))
                            })?;
                            DeviceArg::View { buffer, offset: v.offset, len: v.len }
                        }
                        ViewArg::Scalar(s) => DeviceArg::Scalar(s),
                    });
                }
                Ok(d.launch(loaded, grid, &device_args)?)
            }
            (ModelDevice::Simt(_), Module::Simt { kernel, thread }) => {
                let abi = args.iter().map(|a| match *a {
                    ViewArg::Buffer(v) => AbiArg::Buffer { len: v.len },
                    ViewArg::Scalar(s) => AbiArg::Scalar(s),
                });
                let packed = ptx_abi::pack(thread, abi).map_err(DeviceError::Simt)?;
                let views: Vec<_> =
                    args.iter().filter_map(|a| if let ViewArg::Buffer(v) = a { Some(*v) } else { None }).collect();
                let params: Vec<u64> = packed
                    .iter()
                    .map(|p| match p.value {
                        ParamValue::Pointer { buffer } => {
                            let v = views[buffer];
                            sim::buffer_address(v.buffer) + (v.offset * host[v.buffer].dtype().size_bytes()) as u64
                        }
                        ParamValue::Word(w) => w,
                    })
                    .collect();
                sim::run(thread, grid, &params, &mut self.simt)
                    .map_err(|e| DeviceError::Simt(format!("`{}`: {e}", kernel.name)))
            }
            _ => Err(DeviceError::Memory("a module loaded for another device".to_string())),
        }
    }
}

/// The checks `CpuDevice::run_views` makes at every launch (grid, parameter kinds and dtypes,
/// each view inside its buffer, no two views overlapping), made once when a PTX device's launch
/// is resolved against the store: its arguments never change afterwards, and the GPU would not
/// catch a view past its buffer.
pub fn check_resolved(
    module: &Module,
    grid: [u32; 3],
    host: &[HostBuffer],
    args: &[ViewArg],
) -> Result<(), DeviceError> {
    if let Module::Cpu(_) = module {
        return Ok(());
    }
    let kernel = module.kernel();
    check_views(kernel, grid, host, args)
        .map_err(|message| DeviceError::Cpu(CpuError::BadArgs { kernel: kernel.name.clone(), message }))
}
