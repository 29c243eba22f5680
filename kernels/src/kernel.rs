//! The contract every kernel of the library fulfils ([`TileKernel`]), and its object-safe face
//! ([`DynKernel`]) that the registry, the CLI and (later) the autotuner use.

use crate::args::Args;
use crate::plan::{Buffers, Plan, Reference, Role};
use crate::registry::KernelId;
use crate::KernelError;
use kiln_ir::DType;

/// A problem: shapes, dtypes and layout choices, validated on construction.
pub trait Problem: Clone + std::fmt::Debug + Sized {
    /// Reads and validates the problem; unknown keys and broken constraints are errors.
    fn from_args(args: &Args) -> Result<Self, KernelError>;
    /// The keys and values that recreate this problem.
    fn to_args(&self) -> Args;
}

/// A tile configuration: the values of a kernel's knobs.
pub trait Config: Clone + std::fmt::Debug + PartialEq + Sized {
    fn from_args(args: &Args) -> Result<Self, KernelError>;
    fn to_args(&self) -> Args;
}

/// A tunable knob and the values it may take in general (the legal space for a problem is
/// narrower: see [`TileKernel::space`]).
#[derive(Clone, Debug, PartialEq)]
pub struct Knob {
    pub name: &'static str,
    pub values: Vec<i64>,
    pub help: &'static str,
}

/// Limits of the target a config space is made for. Kernels know no backends; the autotuner
/// fills this from a target description and prunes further by measuring.
#[derive(Clone, Debug, PartialEq)]
pub struct SpaceLimits {
    /// Largest tile (in elements) one value of a program may have.
    pub max_tile_elements: u64,
}

impl Default for SpaceLimits {
    fn default() -> SpaceLimits {
        SpaceLimits { max_tile_elements: 1 << 16 }
    }
}

/// The kind of machine a default config is meant for. Kernels know no backend's code, only that
/// the same IR wants different tile shapes on a CPU core (tiles its vector registers and L1 hold,
/// programs that each walk a long stretch of memory) and on a GPU (enough threads per program,
/// enough programs per SM). Tuning records, when there are any, are per target and override
/// either default.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    /// A CPU backend (the C code generator).
    Cpu,
    /// A GPU backend (PTX, the SIMT simulator, CUDA).
    Gpu,
}

/// One kernel of the library.
pub trait TileKernel: Sync + 'static {
    type Problem: Problem;
    type Config: Config;

    fn id(&self) -> KernelId;
    /// A small valid problem, used when a caller gives no shape (and merged under partial ones).
    fn example_problem(&self) -> Args;
    fn knobs(&self) -> Vec<Knob>;
    /// A config that is legal for `problem` and reasonable everywhere.
    fn default_config(&self, problem: &Self::Problem) -> Self::Config;
    /// The default config on a `target` kind of machine: [`TileKernel::default_config`] unless
    /// the kernel knows a better one there (it must be legal for `problem` and in its space).
    fn target_default(&self, problem: &Self::Problem, _target: TargetKind) -> Self::Config {
        self.default_config(problem)
    }
    /// Every legal config for `problem` under `limits`; contains the default config.
    fn space(&self, problem: &Self::Problem, limits: &SpaceLimits) -> Vec<Self::Config>;
    /// The buffers and launches that compute `problem` with `config`; a config that does not fit
    /// the problem is a [`KernelError::Constraint`].
    fn plan(&self, problem: &Self::Problem, config: &Self::Config) -> Result<Plan, KernelError>;
    /// Fresh random inputs (every `Input` and `InOut` buffer of the plan), from `seed`.
    fn inputs(&self, problem: &Self::Problem, seed: u64) -> Buffers;
    /// The naive f64 reference, written without the IR: expected contents of every `Output` and
    /// `InOut` buffer.
    fn reference(&self, problem: &Self::Problem, inputs: &Buffers) -> Reference;
    /// Largest allowed relative error norm ‖out − ref‖ / ‖ref‖ for an output of `dtype`.
    fn tolerance(&self, _problem: &Self::Problem, dtype: DType) -> f64 {
        default_tolerance(dtype)
    }
    /// The work of one run, for benchmarks' GB/s, GFLOP/s and roofline fraction. The default
    /// counts every buffer of the plan once (in-out buffers twice) and no flops; kernels that
    /// compute, or that touch only part of a buffer, say so.
    fn cost(&self, _problem: &Self::Problem, plan: &Plan, _inputs: &Buffers) -> Cost {
        Cost::from_buffers(plan)
    }
    /// Which regime `problem` falls in, for kernels whose best configs differ in kind between
    /// problem sizes (a GEMV for one token, a multi-row GEMV for a few, a tiled `dot` for many).
    /// A config tuned in one regime is no sensible fallback for a problem of another: the tuning
    /// database's nearest-bucket lookup never crosses regimes. One regime by default.
    fn regime(&self, _problem: &Self::Problem) -> u32 {
        0
    }
}

/// Bytes moved and floating-point operations of one run of a kernel.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Cost {
    pub bytes: u64,
    pub flops: u64,
}

impl Cost {
    /// Every input and output byte of `plan` once, in-out buffers twice, scratch not at all.
    pub fn from_buffers(plan: &Plan) -> Cost {
        let bytes = plan
            .buffers
            .iter()
            .map(|b| {
                let size = b.len as u64 * b.dtype.size_bytes() as u64;
                match b.role {
                    Role::Input | Role::Output => size,
                    Role::InOut => 2 * size,
                    Role::Scratch => 0,
                }
            })
            .sum();
        Cost { bytes, flops: 0 }
    }
}

/// Per-dtype tolerances of the relative error norm, for outputs computed from inputs of the same
/// precision with f32 accumulation.
pub fn default_tolerance(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => 1e-5,
        DType::F16 => 2e-3,
        DType::BF16 => 1.6e-2,
        DType::I32 | DType::U32 | DType::I8 | DType::U8 | DType::Bool => 0.0,
    }
}

/// The object-safe face of a [`TileKernel`]: problems and configs as [`Args`].
pub trait DynKernel: Sync {
    fn id(&self) -> KernelId;
    fn example_problem(&self) -> Args;
    fn knobs(&self) -> Vec<Knob>;
    /// Parses and validates a problem, returning its canonical form.
    fn problem(&self, shape: &Args) -> Result<Args, KernelError>;
    /// The portable default config ([`TileKernel::default_config`]).
    fn default_config(&self, shape: &Args) -> Result<Args, KernelError>;
    /// The default config on a `target` kind of machine ([`TileKernel::target_default`]): what
    /// a runtime, a benchmark or the tuner runs when nothing was tuned.
    fn target_default(&self, shape: &Args, target: TargetKind) -> Result<Args, KernelError>;
    fn space(&self, shape: &Args, limits: &SpaceLimits) -> Result<Vec<Args>, KernelError>;
    fn plan(&self, shape: &Args, config: &Args) -> Result<Plan, KernelError>;
    fn inputs(&self, shape: &Args, seed: u64) -> Result<Buffers, KernelError>;
    fn reference(&self, shape: &Args, inputs: &Buffers) -> Result<Reference, KernelError>;
    fn tolerance(&self, shape: &Args, dtype: DType) -> Result<f64, KernelError>;
    fn cost(&self, shape: &Args, plan: &Plan, inputs: &Buffers) -> Result<Cost, KernelError>;
    /// See [`TileKernel::regime`].
    fn regime(&self, shape: &Args) -> Result<u32, KernelError>;
}

impl<K: TileKernel> DynKernel for K {
    fn id(&self) -> KernelId {
        TileKernel::id(self)
    }
    fn example_problem(&self) -> Args {
        TileKernel::example_problem(self)
    }
    fn knobs(&self) -> Vec<Knob> {
        TileKernel::knobs(self)
    }
    fn problem(&self, shape: &Args) -> Result<Args, KernelError> {
        Ok(K::Problem::from_args(shape)?.to_args())
    }
    fn default_config(&self, shape: &Args) -> Result<Args, KernelError> {
        let p = K::Problem::from_args(shape)?;
        Ok(TileKernel::default_config(self, &p).to_args())
    }
    fn target_default(&self, shape: &Args, target: TargetKind) -> Result<Args, KernelError> {
        let p = K::Problem::from_args(shape)?;
        Ok(TileKernel::target_default(self, &p, target).to_args())
    }
    fn space(&self, shape: &Args, limits: &SpaceLimits) -> Result<Vec<Args>, KernelError> {
        let p = K::Problem::from_args(shape)?;
        Ok(TileKernel::space(self, &p, limits).iter().map(Config::to_args).collect())
    }
    fn plan(&self, shape: &Args, config: &Args) -> Result<Plan, KernelError> {
        let p = K::Problem::from_args(shape)?;
        // Keys the caller leaves out take the default config's values.
        let config = TileKernel::default_config(self, &p).to_args().overlaid(config);
        let c = K::Config::from_args(&config)?;
        TileKernel::plan(self, &p, &c)
    }
    fn inputs(&self, shape: &Args, seed: u64) -> Result<Buffers, KernelError> {
        Ok(TileKernel::inputs(self, &K::Problem::from_args(shape)?, seed))
    }
    fn reference(&self, shape: &Args, inputs: &Buffers) -> Result<Reference, KernelError> {
        Ok(TileKernel::reference(self, &K::Problem::from_args(shape)?, inputs))
    }
    fn tolerance(&self, shape: &Args, dtype: DType) -> Result<f64, KernelError> {
        Ok(TileKernel::tolerance(self, &K::Problem::from_args(shape)?, dtype))
    }
    fn cost(&self, shape: &Args, plan: &Plan, inputs: &Buffers) -> Result<Cost, KernelError> {
        Ok(TileKernel::cost(self, &K::Problem::from_args(shape)?, plan, inputs))
    }
    fn regime(&self, shape: &Args) -> Result<u32, KernelError> {
        Ok(TileKernel::regime(self, &K::Problem::from_args(shape)?))
    }
}
