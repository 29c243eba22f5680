//! `silu_mul`: the SwiGLU gate, `out[t, i] = silu(gate[t, i]) · up[t, i]` with
//! `silu(x) = x / (1 + e^-x)`, computed in f32 whatever the activation dtype.
//!
//! One program per (`block` columns, token); columns past `dim` are masked.
//!
//! With `deinterleave=1` the kernel also writes `out` in the layout the one-token row-loop GEMV
//! of `dequant_gemm_w4` reads (as `rmsnorm`'s `deinterleave=1` does, see there): per block of 32
//! columns the even ones, then the odd ones, as f32 in `xd` `[tokens, dim]`, and their sum in
//! `xs` `[tokens, dim / 32]`, the same bits as the GEMV's own launch would make of `out`.

use crate::args::{parse_dtype, Args, ArgsKind, Reader};
use crate::kernel::{default_tolerance, Config, Knob, Problem, SpaceLimits, TileKernel};
use crate::plan::{buf, i32_arg, BufferSpec, Buffers, Launch, Plan, Reference, Role};
use crate::random;
use crate::registry::KernelId;
use crate::transformer::row_loop_x::{self, Blocks, XD_BLOCK};
use crate::{ensure, KernelError};
use kiln_ir::{DType, KernelBuilder};

const NAME: &str = "silu_mul";

#[derive(Clone, Debug, PartialEq)]
pub struct SiluMulProblem {
    pub tokens: u32,
    pub dim: u32,
    /// Activation dtype of `gate`, `up` and `out`: f32, f16 or bf16.
    pub dtype: DType,
    /// Whether `out` is also written de-interleaved, to `xd` and `xs` (see the module doc).
    pub deinterleave: bool,
}

impl Problem for SiluMulProblem {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Shape, args);
        let p = SiluMulProblem {
            tokens: r.get("tokens")?,
            dim: r.get("dim")?,
            dtype: parse_dtype(
                NAME,
                "dtype",
                &r.get_or("dtype", "f32".to_string())?,
                &[DType::F32, DType::F16, DType::BF16],
            )?,
            deinterleave: false,
        };
        let deinterleave: u32 = r.get_or("deinterleave", 0)?;
        r.finish()?;
        ensure(NAME, deinterleave <= 1, || format!("deinterleave = {deinterleave} is not 0 or 1"))?;
        ensure(NAME, deinterleave == 0 || p.dim.is_multiple_of(XD_BLOCK as u32), || {
            format!("deinterleave = 1 needs dim to be a multiple of {XD_BLOCK}, not {}", p.dim)
        })?;
        let p = SiluMulProblem { deinterleave: deinterleave == 1, ..p };
        ensure(NAME, p.tokens >= 1 && p.dim >= 1, || "tokens and dim must be at least 1".into())?;
        ensure(NAME, p.tokens <= 65_535, || format!("tokens = {} exceeds the grid limit 65535", p.tokens))?;
        Ok(p)
    }

    fn to_args(&self) -> Args {
        let args = Args::new().with("tokens", self.tokens).with("dim", self.dim).with("dtype", self.dtype);
        // Written only when set, so the keys (and tuning buckets) of plain problems stay as they were.
        if self.deinterleave {
            args.with("deinterleave", 1)
        } else {
            args
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct SiluMulConfig {
    /// Columns per program.
    pub block: u32,
}

impl Config for SiluMulConfig {
    fn from_args(args: &Args) -> Result<Self, KernelError> {
        let mut r = Reader::new(NAME, ArgsKind::Config, args);
        let c = SiluMulConfig { block: r.one_of("block", &BLOCKS)? };
        r.finish()?;
        Ok(c)
    }

    fn to_args(&self) -> Args {
        Args::new().with("block", self.block)
    }
}

const BLOCKS: [u32; 5] = [64, 128, 256, 512, 1024];

pub struct SiluMul;

impl TileKernel for SiluMul {
    type Problem = SiluMulProblem;
    type Config = SiluMulConfig;

    fn id(&self) -> KernelId {
        KernelId::SiluMul
    }

    fn example_problem(&self) -> Args {
        Args::new().with("tokens", 3).with("dim", 1536).with("dtype", "f32")
    }

    fn knobs(&self) -> Vec<Knob> {
        vec![Knob { name: "block", values: BLOCKS.map(i64::from).to_vec(), help: "columns per program" }]
    }

    fn default_config(&self, p: &SiluMulProblem) -> SiluMulConfig {
        // The smallest block covering the row, capped at 512.
        let block = BLOCKS.into_iter().find(|&b| b >= p.dim.min(512)).unwrap_or(512);
        SiluMulConfig { block }
    }

    fn space(&self, p: &SiluMulProblem, limits: &SpaceLimits) -> Vec<SiluMulConfig> {
        // Blocks much wider than the row only mask work away; keep one that covers it.
        let cover = BLOCKS.into_iter().find(|&b| b >= p.dim).unwrap_or(1024);
        let mut space: Vec<SiluMulConfig> = BLOCKS
            .into_iter()
            .filter(|&b| b <= cover && b as u64 <= limits.max_tile_elements)
            .map(|block| SiluMulConfig { block })
            .collect();
        let default = self.default_config(p);
        if !space.contains(&default) {
            space.push(default);
        }
        space
    }

    fn plan(&self, p: &SiluMulProblem, c: &SiluMulConfig) -> Result<Plan, KernelError> {
        let b = KernelBuilder::new(NAME);
        let (gate, up, out) = (b.buffer("gate", p.dtype), b.buffer("up", p.dtype), b.buffer("out", p.dtype));
        let deinterleaved = p.deinterleave.then(|| row_loop_x::buffers(&b));
        let dim = b.scalar("dim", DType::I32);
        let cols = b.program_id(0) * c.block as i32 + b.arange(0, c.block as i32);
        let mask = cols.lt(dim);
        let offs = b.program_id(1) * dim + cols;
        let g = b.load_masked(gate, offs, mask, 0.0).cast(DType::F32);
        let u = b.load_masked(up, offs, mask, 0.0).cast(DType::F32);
        let silu = g / ((-g).exp() + 1.0);
        b.store_masked(out, offs, (silu * u).cast(p.dtype), mask);
        if let Some(outputs) = deinterleaved {
            // The program's blocks, numbered in the row.
            let blk = b.program_id(0) * (c.block as i32 / XD_BLOCK) + b.arange(0, c.block as i32 / XD_BLOCK);
            let tile = Blocks::new(&b, blk * XD_BLOCK, dim);
            let row = b.program_id(1) * dim;
            let at = tile.at(row);
            let g = b.load_masked(gate, at, tile.ok, 0.0).cast(DType::F32);
            let u = b.load_masked(up, at, tile.ok, 0.0).cast(DType::F32);
            let y = (g / ((-g).exp() + 1.0) * u).cast(p.dtype).cast(DType::F32);
            tile.store(&b, outputs, b.program_id(1), row, blk, dim, y);
        }
        let kernel = b.finish().map_err(|source| KernelError::Build { kernel: NAME, source })?;

        let len = p.tokens as usize * p.dim as usize;
        let spec = |name: &str, role| BufferSpec { name: name.into(), dtype: p.dtype, len, role };
        let mut buffers = vec![spec("gate", Role::Input), spec("up", Role::Input), spec("out", Role::Output)];
        let mut args = vec![buf("gate"), buf("up"), buf("out")];
        if p.deinterleave {
            row_loop_x::push_outputs(len, &mut buffers, &mut args);
        }
        args.push(i32_arg(p.dim as i64));
        Ok(Plan { buffers, launches: vec![Launch { kernel, grid: [p.dim.div_ceil(c.block), p.tokens, 1], args }] })
    }

    fn inputs(&self, p: &SiluMulProblem, seed: u64) -> Buffers {
        let mut rng = random::rng(seed);
        let len = p.tokens as usize * p.dim as usize;
        Buffers::from([
            ("gate".to_string(), random::uniform(&mut rng, p.dtype, len, -6.0, 6.0)),
            ("up".to_string(), random::uniform(&mut rng, p.dtype, len, -2.0, 2.0)),
        ])
    }

    fn tolerance(&self, p: &SiluMulProblem, dtype: DType) -> f64 {
        // `xd` and `xs` are f32 but hold `out`'s values, rounded to the problem's dtype.
        default_tolerance(dtype).max(default_tolerance(p.dtype))
    }

    fn reference(&self, p: &SiluMulProblem, inputs: &Buffers) -> Reference {
        let gate = inputs["gate"].to_f64();
        let up = inputs["up"].to_f64();
        let out: Vec<f64> = gate.iter().zip(&up).map(|(&g, &u)| g / (1.0 + (-g).exp()) * u).collect();
        let mut r = Reference::new();
        if p.deinterleave {
            row_loop_x::insert_reference(&out, &mut r);
        }
        r.insert("out".to_string(), out);
        r
    }
}
