//! The SIMT simulator as a device: library launches lowered by the PTX backend and run by
//! `kiln_codegen::ptx::sim` on host buffers, so the conformance suite checks the PTX backend
//! against the interpreter on machines without a GPU.
//!
//! Buffers cross as little-endian bytes (`bool` as one byte, 0 or 1); parameters are packed by
//! [`crate::ptx_abi`], the same code the CUDA device uses.

use crate::ptx_abi::{self, AbiArg, ParamValue};
use kiln_codegen::ptx::{self, sim, PtxOptions, ThreadKernel};
use kiln_ir::interp::{Arg, HostBuffer};
use std::collections::HashMap;
use std::sync::Arc;

/// Runs launches in the SIMT simulator, with lowered kernels cached like the CUDA device's
/// modules: by options (target, warps, the launch's specialisation) and kernel text.
pub struct SimtExecutor {
    pub options: PtxOptions,
    cache: HashMap<String, Arc<ThreadKernel>>,
}

impl SimtExecutor {
    pub fn new(options: PtxOptions) -> SimtExecutor {
        SimtExecutor { options, cache: HashMap::new() }
    }

    /// Lowers `kernel` for a launch with `args` (cached) and runs it.
    pub fn run(&mut self, kernel: &kiln_ir::Kernel, grid: [u32; 3], args: &mut [Arg]) -> Result<(), String> {
        let options = launch_options(&self.options, args);
        let key = format!("{}|{kernel}", options.key());
        let thread = match self.cache.get(&key) {
            Some(t) => t.clone(),
            None => {
                let t = Arc::new(ptx::lower(kernel, &options).map_err(|e| e.to_string())?);
                self.cache.insert(key, t.clone());
                t
            }
        };
        run_lowered(&thread, kernel, grid, args)
    }
}

impl kiln_kernels::check::Executor for SimtExecutor {
    fn name(&self) -> String {
        format!("simt ({}, {} warps)", self.options.sm.name(), self.options.num_warps)
    }

    fn launch(&mut self, launch: &kiln_kernels::Launch, buffers: &mut kiln_kernels::Buffers) -> Result<(), String> {
        kiln_kernels::check::with_args(launch, buffers, |args| self.run(&launch.kernel, launch.grid, args))
    }
}

/// `options` specialised for a launch on `args` (see [`ptx_abi::specialization`]).
pub fn launch_options(options: &PtxOptions, args: &[Arg]) -> PtxOptions {
    options.clone().with_specialization(ptx_abi::specialization(args.iter().map(abi_arg)))
}

fn abi_arg(a: &Arg) -> AbiArg {
    match a {
        Arg::Buffer(b) => AbiArg::Buffer { len: b.len() },
        Arg::Scalar(s) => AbiArg::Scalar(*s),
    }
}

/// Lowers `kernel` for `options`, specialised on the launch's scalars, and runs it in the
/// simulator on `args` (interpreter arguments, checked by the interpreter's launch rules).
pub fn run(kernel: &kiln_ir::Kernel, grid: [u32; 3], args: &mut [Arg], options: &PtxOptions) -> Result<(), String> {
    let thread = ptx::lower(kernel, &launch_options(options, args)).map_err(|e| e.to_string())?;
    run_lowered(&thread, kernel, grid, args)
}

/// Runs an already lowered `thread` kernel (of `kernel`) on `args`.
fn run_lowered(
    thread: &ThreadKernel,
    kernel: &kiln_ir::Kernel,
    grid: [u32; 3],
    args: &mut [Arg],
) -> Result<(), String> {
    kiln_ir::interp::check_launch(kernel, grid, args).map_err(|e| e.to_string())?;
    let params: Vec<u64> = ptx_abi::pack(thread, args.iter().map(abi_arg))?
        .iter()
        .map(|p| match p.value {
            ParamValue::Pointer { buffer } => sim::buffer_address(buffer),
            ParamValue::Word(w) => w,
        })
        .collect();
    let mut memory: Vec<Vec<u8>> =
        args.iter().filter_map(|a| if let Arg::Buffer(b) = a { Some(to_bytes(b)) } else { None }).collect();
    sim::run(thread, grid, &params, &mut memory).map_err(|e| e.to_string())?;
    let mut bytes = memory.into_iter();
    for arg in args.iter_mut() {
        if let Arg::Buffer(b) = arg {
            from_bytes(b, &bytes.next().unwrap_or_default());
        }
    }
    Ok(())
}

pub(crate) fn to_bytes(b: &HostBuffer) -> Vec<u8> {
    match b {
        HostBuffer::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostBuffer::F16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        HostBuffer::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_le_bytes()).collect(),
        HostBuffer::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostBuffer::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        HostBuffer::I8(v) => v.iter().map(|&x| x as u8).collect(),
        HostBuffer::U8(v) => v.clone(),
        HostBuffer::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
    }
}

pub(crate) fn from_bytes(b: &mut HostBuffer, bytes: &[u8]) {
    let two = |c: &[u8]| u16::from_le_bytes([c[0], c[1]]);
    let four = |c: &[u8]| [c[0], c[1], c[2], c[3]];
    match b {
        HostBuffer::F32(v) => {
            v.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(x, c)| *x = f32::from_le_bytes(four(c)))
        }
        HostBuffer::F16(v) => {
            v.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(x, c)| *x = half::f16::from_bits(two(c)))
        }
        HostBuffer::BF16(v) => {
            v.iter_mut().zip(bytes.chunks_exact(2)).for_each(|(x, c)| *x = half::bf16::from_bits(two(c)))
        }
        HostBuffer::I32(v) => {
            v.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(x, c)| *x = i32::from_le_bytes(four(c)))
        }
        HostBuffer::U32(v) => {
            v.iter_mut().zip(bytes.chunks_exact(4)).for_each(|(x, c)| *x = u32::from_le_bytes(four(c)))
        }
        HostBuffer::I8(v) => v.iter_mut().zip(bytes).for_each(|(x, &c)| *x = c as i8),
        HostBuffer::U8(v) => v.iter_mut().zip(bytes).for_each(|(x, &c)| *x = c),
        HostBuffer::Bool(v) => v.iter_mut().zip(bytes).for_each(|(x, &c)| *x = c != 0),
    }
}
