//! The executor: runs one program instance of a verified kernel, instruction by instruction.
//!
//! Values live in an environment indexed by value id. Loop bodies overwrite their values on each
//! iteration; the verifier's scoping rules guarantee nothing reads a value before it is written.

use super::host::{Arg, HostBuffer};
use super::value::{Data, Int, Kind};
use super::{elementwise, memory, shape, Fault, InterpError};
use crate::entities::{Block, Inst, Param, Value};
use crate::kernel::{Kernel, ParamKind};
use crate::op::Op;

/// `memory::store` or `memory::atomic_add`.
type WriteFn = fn(&mut HostBuffer, &[Option<usize>], &Data) -> Result<(), Fault>;

pub(crate) struct Machine<'k, 'a> {
    kernel: &'k Kernel,
    grid: [u32; 3],
    program: [u32; 3],
    env: Vec<Option<Data>>,
    args: &'a mut [Arg],
}

impl<'k, 'a> Machine<'k, 'a> {
    /// A machine for `kernel` over `args`, which `run` has checked against the signature.
    pub(crate) fn new(kernel: &'k Kernel, grid: [u32; 3], args: &'a mut [Arg]) -> Self {
        Machine { kernel, grid, program: [0; 3], env: vec![None; kernel.values.len()], args }
    }

    /// Runs program instance `program` to completion.
    pub(crate) fn run_program(&mut self, program: [u32; 3]) -> Result<(), InterpError> {
        self.program = program;
        for (param, arg) in self.kernel.params.iter().zip(self.args.iter()) {
            if let (ParamKind::Scalar { value }, Arg::Scalar(s)) = (&param.kind, arg) {
                self.env[value.index()] = Some(s.to_data());
            }
        }
        self.exec_block(self.kernel.entry).map(|_| ())
    }

    /// Runs the instructions of `block`; returns the yielded values if it ends in `yield`.
    fn exec_block(&mut self, block: Block) -> Result<Vec<Data>, InterpError> {
        let kernel = self.kernel;
        for &inst in &kernel.block(block).insts {
            if let Some(yielded) = self.exec_inst(inst)? {
                return Ok(yielded);
            }
        }
        Ok(Vec::new())
    }

    /// Runs one instruction and binds its results. `Some` carries what a `yield` passes on.
    fn exec_inst(&mut self, inst: Inst) -> Result<Option<Vec<Data>>, InterpError> {
        let kernel = self.kernel;
        let data = kernel.inst(inst);
        let fault = |f: Fault| self.fault(inst, f);
        let results: Vec<Data> = match &data.op {
            Op::ProgramId { axis } => vec![self.grid_scalar(self.program, *axis).map_err(fault)?],
            Op::NumPrograms { axis } => vec![self.grid_scalar(self.grid, *axis).map_err(fault)?],
            Op::Arange { start, end } => {
                vec![Data::I(Int::I32, (i64::from(*start)..i64::from(*end)).collect())]
            }
            Op::Constant { value, ty } => {
                let n =
                    usize::try_from(ty.shape.numel()).map_err(|_| fault(Fault::Internal("huge constant".into())))?;
                vec![Kind::of(ty.dtype).splat_literal(*value, n)]
            }
            Op::Unary { op, arg } => vec![elementwise::unary(*op, self.get(*arg)?).map_err(fault)?],
            Op::Binary { op, lhs, rhs } => {
                vec![elementwise::binary(*op, self.get(*lhs)?, self.get(*rhs)?).map_err(fault)?]
            }
            Op::Compare { pred, lhs, rhs } => {
                vec![elementwise::compare(*pred, self.get(*lhs)?, self.get(*rhs)?).map_err(fault)?]
            }
            Op::Select { cond, on_true, on_false } => {
                let (c, t, f) = (self.get(*cond)?, self.get(*on_true)?, self.get(*on_false)?);
                vec![elementwise::select(c, t, f).map_err(fault)?]
            }
            Op::Cast { arg, to } => vec![elementwise::cast(self.get(*arg)?, Kind::of(*to))],
            Op::Bitcast { arg, to } => {
                vec![elementwise::bitcast(self.get(*arg)?, Kind::of(*to)).map_err(fault)?]
            }
            Op::Broadcast { arg, shape } => {
                let from = &kernel.ty(*arg).shape;
                vec![shape::broadcast(self.get(*arg)?, from.dims(), shape.dims()).map_err(fault)?]
            }
            // Row-major data does not move when dims are regrouped or a 1 is inserted.
            Op::Reshape { arg, .. } | Op::ExpandDims { arg, .. } => vec![self.get(*arg)?.clone()],
            Op::Reduce { op, arg, axis } => {
                let dims = kernel.ty(*arg).shape.dims();
                vec![shape::reduce(*op, self.get(*arg)?, dims, *axis as usize).map_err(fault)?]
            }
            Op::Dot { lhs, rhs, acc } => {
                let (l, r) = (kernel.ty(*lhs).shape.dims(), kernel.ty(*rhs).shape.dims());
                let (Some(&m), Some(&k), Some(&n)) = (l.first(), l.get(1), r.get(1)) else {
                    return Err(fault(Fault::Internal("dot of operands that are not rank 2".into())));
                };
                vec![shape::dot(self.get(*lhs)?, self.get(*rhs)?, self.get(*acc)?, [m, k, n]).map_err(fault)?]
            }
            Op::Load { buffer, offsets, mask, other } => {
                let buf = self.buffer(inst, *buffer)?;
                let mask = mask.map(|m| self.get(m)).transpose()?;
                let other = other.map(|o| self.get(o)).transpose()?;
                let lanes =
                    memory::lanes(self.get(*offsets)?, mask, buf.len()).map_err(|f| self.fault_at(inst, *buffer, f))?;
                vec![memory::load(buf, &lanes, other).map_err(fault)?]
            }
            Op::Store { buffer, offsets, value, mask } => {
                self.write(inst, *buffer, *offsets, *value, *mask, memory::store)?;
                Vec::new()
            }
            Op::AtomicAdd { buffer, offsets, value, mask } => {
                self.write(inst, *buffer, *offsets, *value, *mask, memory::atomic_add)?;
                Vec::new()
            }
            // A hint with no effect: memory is not touched, so no offset can be out of bounds.
            Op::Prefetch { .. } => Vec::new(),
            Op::For { start, end, step, init, body } => {
                let (start, end) = (self.get_i64(*start)?, self.get_i64(*end)?);
                let step = self.get_i64(*step)?;
                if step <= 0 {
                    return Err(InterpError::BadStep { inst: self.describe(inst), step, program: self.program });
                }
                let args = &kernel.block(*body).args;
                let Some((&induction, carried_args)) = args.split_first() else {
                    return Err(fault(Fault::Internal("loop body without an induction variable".into())));
                };
                let mut carried: Vec<Data> = init.iter().map(|v| self.get(*v).cloned()).collect::<Result<_, _>>()?;
                // i64 so that `i += step` cannot overflow near i32::MAX.
                let mut i = start;
                while i < end {
                    self.env[induction.index()] = Some(Data::I(Int::I32, vec![i]));
                    for (a, c) in carried_args.iter().zip(carried) {
                        self.env[a.index()] = Some(c);
                    }
                    carried = self.exec_block(*body)?;
                    i += step;
                }
                carried
            }
            Op::Yield { values } => {
                let values = values.iter().map(|v| self.get(*v).cloned()).collect::<Result<_, _>>()?;
                return Ok(Some(values));
            }
        };
        if results.len() != data.results.len() {
            return Err(self
                .fault(inst, Fault::Internal(format!("{} results for {} values", results.len(), data.results.len()))));
        }
        for (v, d) in data.results.iter().zip(results) {
            self.env[v.index()] = Some(d);
        }
        Ok(None)
    }

    /// `store` or `atomic_add`: checks the lanes, then lets `apply` write them.
    fn write(
        &mut self,
        inst: Inst,
        buffer: Param,
        offsets: Value,
        value: Value,
        mask: Option<Value>,
        apply: WriteFn,
    ) -> Result<(), InterpError> {
        let len = self.buffer(inst, buffer)?.len();
        let mask = mask.map(|m| self.get(m)).transpose()?;
        let lanes = memory::lanes(self.get(offsets)?, mask, len).map_err(|f| self.fault_at(inst, buffer, f))?;
        // Borrow the environment and the arguments apart: the value is read while the buffer is
        // written.
        let value = lookup(&self.env, self.kernel, value)?;
        let done = match self.args.get_mut(buffer.index()).and_then(Arg::buffer_mut) {
            Some(buf) => apply(buf, &lanes, value),
            None => Err(Fault::Internal(format!("{buffer} is not bound to a buffer"))),
        };
        done.map_err(|f| self.fault(inst, f))
    }

    /// The value bound to `v`.
    fn get(&self, v: Value) -> Result<&Data, InterpError> {
        lookup(&self.env, self.kernel, v)
    }

    /// The value of an integer scalar.
    fn get_i64(&self, v: Value) -> Result<i64, InterpError> {
        match self.get(v)? {
            Data::I(_, x) if x.len() == 1 => Ok(x[0]),
            other => Err(InterpError::Internal {
                inst: format!("%{}", self.kernel.value_name(v)),
                message: format!("expected an integer scalar, found {} {} elements", other.len(), other.kind_name()),
            }),
        }
    }

    fn grid_scalar(&self, of: [u32; 3], axis: u8) -> Result<Data, Fault> {
        let x = of.get(axis as usize).ok_or_else(|| Fault::Internal(format!("grid axis {axis}")))?;
        Ok(Data::I(Int::I32, vec![i64::from(*x)]))
    }

    fn buffer(&self, inst: Inst, p: Param) -> Result<&HostBuffer, InterpError> {
        self.args
            .get(p.index())
            .and_then(Arg::buffer)
            .ok_or_else(|| self.fault(inst, Fault::Internal(format!("{p} is not bound to a buffer"))))
    }

    /// `%5 = load (inst3)`, as the verifier renders instructions.
    fn describe(&self, inst: Inst) -> String {
        let data = self.kernel.inst(inst);
        let results: Vec<String> = data.results.iter().map(|r| format!("%{}", self.kernel.value_name(*r))).collect();
        if results.is_empty() {
            format!("{} ({inst})", data.op.name())
        } else {
            format!("{} = {} ({inst})", results.join(", "), data.op.name())
        }
    }

    fn fault(&self, inst: Inst, fault: Fault) -> InterpError {
        let inst_name = self.describe(inst);
        match fault {
            Fault::DivisionByZero => InterpError::DivisionByZero { inst: inst_name, program: self.program },
            Fault::OutOfBounds { index, len } => {
                InterpError::OutOfBounds { inst: inst_name, buffer: String::new(), index, len, program: self.program }
            }
            Fault::Internal(message) => InterpError::Internal { inst: inst_name, message },
        }
    }

    /// Like [`Machine::fault`], naming the buffer of a memory op.
    fn fault_at(&self, inst: Inst, buffer: Param, fault: Fault) -> InterpError {
        match self.fault(inst, fault) {
            InterpError::OutOfBounds { inst, index, len, program, .. } => {
                let buffer =
                    self.kernel.params.get(buffer.index()).map_or_else(|| buffer.to_string(), |p| p.name.clone());
                InterpError::OutOfBounds { inst, buffer, index, len, program }
            }
            other => other,
        }
    }
}

/// The value bound to `v` in `env`.
fn lookup<'e>(env: &'e [Option<Data>], kernel: &Kernel, v: Value) -> Result<&'e Data, InterpError> {
    env.get(v.index()).and_then(Option::as_ref).ok_or_else(|| InterpError::Internal {
        inst: format!("%{}", kernel.value_name(v)),
        message: "read before it was computed".into(),
    })
}
