//! A plan: the buffers a kernel works on and the launches that compute it.
//!
//! Most kernels are one launch; split-K and split-KV add a second (a combine or a zero-fill).
//! Buffers are named, so references, input generators and executors agree on them without
//! positional conventions.

use kiln_ir::interp::{HostBuffer, Scalar};
use kiln_ir::{DType, Kernel};
use std::collections::BTreeMap;

/// What the caller does with a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read only; provided by the input generator.
    Input,
    /// Provided by the input generator and updated in place (a KV cache); compared afterwards.
    InOut,
    /// Written by the plan; poisoned before it runs and compared afterwards.
    Output,
    /// Written and read by the plan's launches (split-K partials); poisoned, not compared.
    Scratch,
}

#[derive(Clone, Debug, PartialEq)]
pub struct BufferSpec {
    pub name: String,
    pub dtype: DType,
    pub len: usize,
    pub role: Role,
}

/// How one kernel parameter is bound.
#[derive(Clone, Debug, PartialEq)]
pub enum Binding {
    /// The plan buffer of this name.
    Buffer(String),
    Scalar(Scalar),
}

/// One kernel launch: IR, grid and one binding per kernel parameter, in order.
#[derive(Clone, Debug, PartialEq)]
pub struct Launch {
    pub kernel: Kernel,
    pub grid: [u32; 3],
    pub args: Vec<Binding>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub buffers: Vec<BufferSpec>,
    pub launches: Vec<Launch>,
}

impl Plan {
    pub fn buffer(&self, name: &str) -> Option<&BufferSpec> {
        self.buffers.iter().find(|b| b.name == name)
    }
}

/// Host buffers by name.
pub type Buffers = BTreeMap<String, HostBuffer>;

/// Expected contents of the compared buffers (outputs and in-out buffers), by name, in f64.
pub type Reference = BTreeMap<String, Vec<f64>>;

/// Binds the plan buffer `name`.
pub fn buf(name: &str) -> Binding {
    Binding::Buffer(name.to_string())
}

pub fn i32_arg(v: i64) -> Binding {
    Binding::Scalar(Scalar::I32(v as i32))
}

pub fn f32_arg(v: f64) -> Binding {
    Binding::Scalar(Scalar::F32(v as f32))
}
