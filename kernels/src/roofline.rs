//! The kernels that measure a machine's roofline, written in the tile IR like every other kernel
//! so the ceilings are what kiln's own code generation reaches: a streaming read of a large
//! buffer (bandwidth) and a chain-parallel multiply-add loop with no memory traffic (peak FLOP/s).

use crate::plan::{buf, f32_arg, i32_arg, BufferSpec, Launch, Plan, Role};
use crate::KernelError;
use kiln_ir::{DType, KernelBuilder};

const STREAM: &str = "roofline_stream_read";
const FMA: &str = "roofline_fma";

/// Elements each stream program adds per loop step.
pub const STREAM_BLOCK: u32 = 4096;

/// Sums `x` in `programs` contiguous chunks of `chunk` f32 elements (a multiple of
/// [`STREAM_BLOCK`]); each program writes its `STREAM_BLOCK` partial sums to `out`, so nothing
/// can be optimised away. Bytes moved: `4 · programs · chunk`.
pub fn stream_read(programs: u32, chunk: u32) -> Result<Plan, KernelError> {
    crate::ensure(STREAM, chunk > 0 && chunk.is_multiple_of(STREAM_BLOCK), || {
        format!("chunk = {chunk} must be a positive multiple of {STREAM_BLOCK}")
    })?;
    let total = programs as u64 * chunk as u64;
    crate::ensure(STREAM, total <= i32::MAX as u64, || format!("{total} elements exceed i32 offsets"))?;
    let b = KernelBuilder::new(STREAM);
    let (x, out) = (b.buffer("x", DType::F32), b.buffer("out", DType::F32));
    let chunk_len = b.scalar("chunk", DType::I32);
    let lanes = b.arange(0, STREAM_BLOCK as i32);
    let base = b.program_id(0) * chunk_len;
    let [acc] = b.for_range(0, chunk_len, STREAM_BLOCK as i32, [b.zeros(&[STREAM_BLOCK], DType::F32)], |i, [acc]| {
        [acc + b.load(x, base + i + lanes)]
    });
    b.store(out, b.program_id(0) * STREAM_BLOCK as i32 + lanes, acc);
    let kernel = b.finish().map_err(|source| KernelError::Build { kernel: STREAM, source })?;
    Ok(Plan {
        buffers: vec![
            BufferSpec { name: "x".into(), dtype: DType::F32, len: total as usize, role: Role::Input },
            BufferSpec {
                name: "out".into(),
                dtype: DType::F32,
                len: (programs * STREAM_BLOCK) as usize,
                role: Role::Output,
            },
        ],
        launches: vec![Launch {
            kernel,
            grid: [programs, 1, 1],
            args: vec![buf("x"), buf("out"), i32_arg(chunk as i64)],
        }],
    })
}

/// Independent multiply-add chains of the FMA kernel, each a tile of [`FMA_WIDTH`] lanes: enough
/// chains to cover the latency of the multiply-add units of current CPUs, each small enough to
/// live in one vector register.
pub const FMA_CHAINS: usize = 16;
/// Lanes of one chain (one 512-bit register of f32).
pub const FMA_WIDTH: u32 = 16;
/// Independent accumulator lanes in all.
pub const FMA_LANES: u32 = FMA_CHAINS as u32 * FMA_WIDTH;

/// Each of `programs` programs runs `iters` steps of `acc = acc · a + b` on [`FMA_LANES`]
/// independent lanes and stores them. Flops: `2 · FMA_LANES · iters · programs`.
pub fn fma_peak(programs: u32, iters: u32) -> Result<Plan, KernelError> {
    crate::ensure(FMA, iters > 0 && programs > 0, || "programs and iters must be positive".into())?;
    let b = KernelBuilder::new(FMA);
    let out = b.buffer("out", DType::F32);
    let (steps, a, c) = (b.scalar("iters", DType::I32), b.scalar("a", DType::F32), b.scalar("c", DType::F32));
    let lanes = b.arange(0, FMA_WIDTH as i32);
    let init: [_; FMA_CHAINS] =
        std::array::from_fn(|i| (lanes + (i as u32 * FMA_WIDTH) as i32).cast(DType::F32) * 1e-3);
    let accs = b.for_range(0, steps, 1, init, |_, accs| accs.map(|acc| acc * a + c));
    for (i, acc) in accs.into_iter().enumerate() {
        let offs = b.program_id(0) * FMA_LANES as i32 + (i as u32 * FMA_WIDTH) as i32 + lanes;
        b.store(out, offs, acc);
    }
    let kernel = b.finish().map_err(|source| KernelError::Build { kernel: FMA, source })?;
    Ok(Plan {
        buffers: vec![BufferSpec {
            name: "out".into(),
            dtype: DType::F32,
            len: (programs * FMA_LANES) as usize,
            role: Role::Output,
        }],
        launches: vec![Launch {
            kernel,
            grid: [programs, 1, 1],
            // a < 1 keeps the chains finite however long they run.
            args: vec![buf("out"), i32_arg(iters as i64), f32_arg(0.999), f32_arg(1e-3)],
        }],
    })
}
