//! kiln's tile IR: Triton-like block programs with static tile shapes.
//!
//! A [`Kernel`] runs once per program instance of a 1-3D grid. Values are scalars or tiles of a
//! [`DType`] and a static [`Shape`]; memory is reached only through `load` / `store` /
//! `atomic_add` with integer offset tiles into buffer parameters. Pieces:
//!
//! - [`dtype`], [`types`], [`entities`], [`op`], [`kernel`]: the data model;
//! - [`builder`]: writing kernels in Rust with operator overloading;
//! - [`infer`]: typing rules, shared by builder and verifier;
//! - [`verify`]: every invariant a kernel must satisfy, with located, collected errors;
//! - [`text`]: the printer and parser of the `.tir` text form;
//! - [`interp`]: the interpreter, which defines what every op means.

pub mod builder;
pub mod dtype;
pub mod entities;
pub mod infer;
pub mod interp;
pub mod kernel;
pub mod op;
pub mod text;
pub mod types;
pub mod verify;

pub use builder::{Buf, BuildError, KernelBuilder, Tile};
pub use dtype::DType;
pub use entities::{Block, Inst, Param, Value};
pub use kernel::{BlockData, InstData, Kernel, ParamData, ParamKind, ValueData, ValueDef};
pub use op::{BinaryOp, CmpPred, Literal, Op, ReduceOp, UnaryOp};
pub use types::{Shape, Type};
pub use verify::{verify, Location, VerifyError, VerifyErrors};
