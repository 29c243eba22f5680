//! The SIMT simulator as a device: library launches lowered by the PTX backend and run by
//! `kiln_codegen::ptx::sim` on host buffers, so the conformance suite checks the PTX backend
//! against the interpreter on machines without a GPU.
//!
//! Buffers cross as little-endian bytes (`bool` as one byte, 0 or 1); scalars as the bits of
//! their `.param` (`i8` sign-extended and `u8` / `bool` zero-extended to 32 bits).

use kiln_codegen::ptx::{self, sim, PtxOptions};
use kiln_ir::interp::{Arg, HostBuffer, Scalar};

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
    let mut memory = Vec::new();
    let mut params = Vec::new();
    for arg in args.iter() {
        match arg {
            Arg::Buffer(b) => {
                params.push(sim::buffer_address(memory.len()));
                params.push(b.len() as u64);
                memory.push(to_bytes(b));
            }
            Arg::Scalar(s) => params.push(scalar_bits(*s)),
        }
    }
    sim::run(&thread, grid, &params, &mut memory).map_err(|e| e.to_string())?;
    let mut bytes = memory.into_iter();
    for arg in args.iter_mut() {
        if let Arg::Buffer(b) = arg {
            from_bytes(b, &bytes.next().unwrap_or_default());
        }
    }
    Ok(())
}

fn scalar_bits(s: Scalar) -> u64 {
    match s {
        Scalar::F32(x) => u64::from(x.to_bits()),
        Scalar::F16(x) => u64::from(x.to_bits()),
        Scalar::BF16(x) => u64::from(x.to_bits()),
        Scalar::I32(x) => u64::from(x as u32),
        Scalar::U32(x) => u64::from(x),
        Scalar::I8(x) => u64::from(i32::from(x) as u32),
        Scalar::U8(x) => u64::from(x),
        Scalar::Bool(x) => u64::from(x),
    }
}

fn to_bytes(b: &HostBuffer) -> Vec<u8> {
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

fn from_bytes(b: &mut HostBuffer, bytes: &[u8]) {
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
