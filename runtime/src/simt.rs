//! The SIMT simulator as a device: library launches lowered by the PTX backend and run by
//! `kiln_codegen::ptx::sim` on host buffers, so the conformance suite checks the PTX backend
//! against the interpreter on machines without a GPU.
//!
//! Buffers cross as little-endian bytes (`bool` as one byte, 0 or 1); parameters are packed by
//! [`crate::ptx_abi`], the same code the CUDA device uses.

use crate::ptx_abi::{self, AbiArg, ParamValue};
use kiln_codegen::ptx::{self, sim, PtxOptions};
use kiln_ir::interp::{Arg, HostBuffer};

/// Runs launches in the SIMT simulator.
pub struct SimtExecutor {
    pub options: PtxOptions,
}

impl kiln_kernels::check::Executor for SimtExecutor {
    fn name(&self) -> String {
        format!("simt ({}, {} warps)", self.options.sm.name(), self.options.num_warps)
    }

    fn launch(&mut self, launch: &kiln_kernels::Launch, buffers: &mut kiln_kernels::Buffers) -> Result<(), String> {
        kiln_kernels::check::with_args(launch, buffers, |args| run(&launch.kernel, launch.grid, args, &self.options))
    }
}

/// Lowers `kernel` for `options` and runs it in the simulator on `args` (interpreter arguments,
/// checked by the interpreter's launch rules).
pub fn run(kernel: &kiln_ir::Kernel, grid: [u32; 3], args: &mut [Arg], options: &PtxOptions) -> Result<(), String> {
    let thread = ptx::lower(kernel, options).map_err(|e| e.to_string())?;
    kiln_ir::interp::check_launch(kernel, grid, args).map_err(|e| e.to_string())?;
    let abi = args.iter().map(|a| match a {
        Arg::Buffer(b) => AbiArg::Buffer { len: b.len() },
        Arg::Scalar(s) => AbiArg::Scalar(*s),
    });
    let params: Vec<u64> = ptx_abi::pack(&thread, abi)?
        .iter()
        .map(|p| match p.value {
            ParamValue::Pointer { buffer } => sim::buffer_address(buffer),
            ParamValue::Word(w) => w,
        })
        .collect();
    let mut memory: Vec<Vec<u8>> =
        args.iter().filter_map(|a| if let Arg::Buffer(b) = a { Some(to_bytes(b)) } else { None }).collect();
    sim::run(&thread, grid, &params, &mut memory).map_err(|e| e.to_string())?;
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
