//! The measurement seam: the tuner asks a [`Measure`] (implemented by the runtime for each
//! device) to prepare candidates (compile; may run in parallel) and to measure them (one at a
//! time). Failures are data ([`MeasureError`]), recorded in the database like timings.
//!
//! Architecture Invariant: an implementation checks every candidate's output against the kernel's
//! reference before returning a [`Measurement`]; a wrong result is a `MeasureError::WrongResult`,
//! never a timing, so it can never win.

use kiln_kernels::{Args, KernelId};

/// The machine's measured ceilings, for the roofline fraction and the cost model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Roofline {
    /// Streaming read bandwidth, GB/s (10^9 bytes).
    pub gbps: f64,
    /// Peak f32 multiply-add throughput, GFLOP/s.
    pub gflops: f64,
}

impl Roofline {
    /// The roofline time of `bytes` and `flops`, in seconds.
    pub fn time(&self, bytes: u64, flops: u64) -> f64 {
        (bytes as f64 / (self.gbps * 1e9)).max(flops as f64 / (self.gflops * 1e9))
    }
}

/// One successful measurement of a candidate whose output matched the reference.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Measurement {
    /// Median of the timed runs, seconds.
    pub median_s: f64,
    /// Fastest and slowest timed run, seconds (the spread).
    pub min_s: f64,
    pub max_s: f64,
    /// Roofline time over the median (1.0 = at the roofline).
    pub roofline_frac: f64,
}

/// Why a candidate has no timing. Every variant is recorded; only `Unavailable` stops a run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum MeasureError {
    /// The config needs more of the device than it has (shared memory, registers, stack).
    #[error("out of resources: {0}")]
    OutOfResources(String),
    /// Building the plan or compiling one of its kernels failed.
    #[error("compile error: {0}")]
    Compile(String),
    /// The output did not match the reference within the kernel's tolerance.
    #[error("wrong result: {0}")]
    WrongResult(String),
    /// The kernel failed while running (bad access, launch refused).
    #[error("launch error: {0}")]
    Launch(String),
    /// The device itself is unusable; the tuning run stops and writes nothing for this shape.
    #[error("device unavailable: {0}")]
    Unavailable(String),
}

impl MeasureError {
    /// The status word stored in the database.
    pub fn status(&self) -> &'static str {
        match self {
            MeasureError::OutOfResources(_) => "out_of_resources",
            MeasureError::Compile(_) => "compile_error",
            MeasureError::WrongResult(_) => "wrong_result",
            MeasureError::Launch(_) => "launch_error",
            MeasureError::Unavailable(_) => "unavailable",
        }
    }

    pub fn detail(&self) -> &str {
        match self {
            MeasureError::OutOfResources(d)
            | MeasureError::Compile(d)
            | MeasureError::WrongResult(d)
            | MeasureError::Launch(d)
            | MeasureError::Unavailable(d) => d,
        }
    }
}

/// A device the tuner can measure on.
///
/// `prepare` is called from several threads at once (compilation is the slow part of trying a
/// config and parallelises); `measure` is called one candidate at a time so that timings do not
/// disturb each other.
pub trait Measure: Sync {
    /// A compiled candidate, ready to be timed.
    type Prepared: Send;

    /// The device's ceilings, measured once.
    fn roofline(&self) -> Roofline;
    /// Worker threads (CPU) or streaming multiprocessors (GPU): the parallelism the cost model
    /// spreads programs over.
    fn parallelism(&self) -> usize;
    /// Builds the plan of `kernel` for `shape` with `config` and compiles its kernels.
    fn prepare(&self, kernel: KernelId, shape: &Args, config: &Args) -> Result<Self::Prepared, MeasureError>;
    /// Runs the candidate, checks its output against the reference, then times it.
    fn measure(&self, prepared: &Self::Prepared) -> Result<Measurement, MeasureError>;
}
