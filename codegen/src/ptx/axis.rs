//! Offset analysis: what is known about the integer values of a kernel, per axis, so that the
//! lowering can prove a run of elements contiguous and aligned and use vector memory accesses.
//!
//! For every value and every axis `d` (one entry for a scalar) three facts hold for every fixed
//! choice of the other coordinates (the model is Triton's AxisInfo):
//! - **contiguity** `c`: split the axis into groups of `c` starting at multiples of `c`; inside a
//!   group the values go up by one from element to element;
//! - **divisibility** `div`: the first value of every contiguity group is a multiple of `div`
//!   (with `c = 1` that is every value); a power of two, [`MAX_DIVISIBILITY`] for zero;
//! - **constancy** `k`: inside groups of `k` starting at multiples of `k` the values are equal.
//!
//! Facts come from `arange`, constants, `program_id`, the [`Specialization`] of the scalar
//! arguments (an argument known to be a multiple of 32, 16, 8 or 4) and loop induction variables,
//! and flow through broadcast, reshape / expand_dims, casts between integers, `+ - ×`, `/` and
//! `%` by powers of two, shifts by constants, min / max and comparisons (which is how a mask
//! such as `offsets < n` is proved constant over a run). Anything else is unknown: `c = 1`,
//! `div = 1`, `k = 1`, which is always true.
//!
//! Architecture Invariant: every rule is sound for non-negative integer values (what offsets
//! and sizes are); a negative offset is out of bounds or masked, and a masked run is either
//! constant (every element off) or falls back to scalar accesses.

use kiln_ir::{BinaryOp, CmpPred, DType, Kernel, Literal, Op, ParamKind, Shape, Value};
use std::collections::HashMap;

/// The divisibility of zero (and the cap of every product).
pub const MAX_DIVISIBILITY: u64 = 1 << 30;

/// The facts along one axis (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AxisFacts {
    pub contiguity: u64,
    pub divisibility: u64,
    pub constancy: u64,
}

impl AxisFacts {
    /// Nothing known.
    pub const UNKNOWN: AxisFacts = AxisFacts { contiguity: 1, divisibility: 1, constancy: 1 };

    /// A divisibility that holds for every element, not only for group starts.
    pub fn element_divisibility(&self) -> u64 {
        if self.contiguity > 1 {
            1
        } else {
            self.divisibility
        }
    }

    /// The divisibility of the values at positions that are multiples of `c`: group starts when
    /// `c` is a multiple of the contiguity, else a start plus a multiple of `gcd(c, contiguity)`.
    pub fn divisibility_at(&self, c: u64) -> u64 {
        if c.is_multiple_of(self.contiguity) {
            self.divisibility
        } else {
            gcd(self.divisibility, gcd(c, self.contiguity))
        }
    }
}

/// The facts of one value: one [`AxisFacts`] per axis (one for a scalar), and its value when it
/// is a known integer constant splatted over the tile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ValueFacts {
    pub axes: Vec<AxisFacts>,
    pub constant: Option<i64>,
}

impl ValueFacts {
    fn unknown(shape: &Shape) -> ValueFacts {
        ValueFacts { axes: vec![AxisFacts::UNKNOWN; shape.rank().max(1)], constant: None }
    }

    /// The facts along the fastest (last) axis.
    pub fn last(&self) -> AxisFacts {
        self.axes.last().copied().unwrap_or(AxisFacts::UNKNOWN)
    }

    /// The best divisibility that holds for every element.
    fn element_divisibility(&self) -> u64 {
        self.axes.iter().map(AxisFacts::element_divisibility).max().unwrap_or(1)
    }
}

/// What the launch's integer scalar arguments are known to be multiples of, by tile-IR
/// parameter index: the lowering is specialised on it (like Triton's `divisibility=16`), so a
/// launch must use a variant whose key its values satisfy (see [`Specialization::of_values`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Specialization {
    /// Per tile-IR parameter: 32, 16, 8, 4 or 1 (buffers and non-integer scalars: 1). Missing
    /// entries are 1, so the empty specialisation assumes nothing.
    pub divisibility: Vec<u32>,
}

/// The divisors a scalar argument is specialised on, largest first. 16 is Triton's choice; 32
/// is kept too because packed int4 rows are `k / 2` bytes long, so `k` must be known to be a
/// multiple of 32 for the rows to start 16-byte aligned.
pub const SPECIALIZED_DIVISORS: [u32; 4] = [32, 16, 8, 4];

impl Specialization {
    /// The key for a launch: for each tile-IR parameter its integer value (`None` for buffers
    /// and non-integer scalars). Zero counts as a multiple of 32.
    pub fn of_values(values: &[Option<i64>]) -> Specialization {
        let divisibility = values
            .iter()
            .map(|v| match v {
                Some(x) => SPECIALIZED_DIVISORS.into_iter().find(|&d| x % i64::from(d) == 0).unwrap_or(1),
                None => 1,
            })
            .collect();
        Specialization { divisibility }
    }

    /// The divisibility known for parameter `index`.
    pub fn of(&self, index: usize) -> u64 {
        u64::from(self.divisibility.get(index).copied().unwrap_or(1).max(1))
    }

    /// Whether a launch whose arguments have the specialisation `launch` may run PTX lowered
    /// for `self`: every divisor assumed here divides the launch's.
    pub fn admits(&self, launch: &Specialization) -> bool {
        (0..self.divisibility.len()).all(|i| launch.of(i).is_multiple_of(self.of(i)))
    }

    /// A short text form for cache keys and names: the divisors joined by `.` (`1.16.4`).
    pub fn key(&self) -> String {
        self.divisibility.iter().map(|d| d.to_string()).collect::<Vec<_>>().join(".")
    }
}

pub fn gcd(a: u64, b: u64) -> u64 {
    let (mut a, mut b) = (a, b);
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// The largest power of two dividing `v` ([`MAX_DIVISIBILITY`] for zero).
fn pow2_divisor(v: i64) -> u64 {
    if v == 0 {
        MAX_DIVISIBILITY
    } else {
        (1u64 << v.unsigned_abs().trailing_zeros().min(30)).min(MAX_DIVISIBILITY)
    }
}

fn capped_product(a: u64, b: u64) -> u64 {
    a.saturating_mul(b).min(MAX_DIVISIBILITY)
}

/// A positive power of two.
fn power_of_two(v: Option<i64>) -> Option<u64> {
    v.filter(|&x| x > 0 && (x as u64).is_power_of_two()).map(|x| x as u64)
}

/// The facts of every integer and bool value of `kernel` (a verified kernel), under `spec`.
/// Values missing from the map (floats, loop-carried tiles, loads) know nothing.
pub fn analyze(kernel: &Kernel, spec: &Specialization) -> HashMap<Value, ValueFacts> {
    let mut facts: HashMap<Value, ValueFacts> = HashMap::new();
    for (i, p) in kernel.params.iter().enumerate() {
        if let ParamKind::Scalar { value } = &p.kind {
            if kernel.ty(*value).dtype.is_int() {
                let f = AxisFacts { contiguity: 1, divisibility: spec.of(i), constancy: 1 };
                facts.insert(*value, ValueFacts { axes: vec![f], constant: None });
            }
        }
    }
    for (inst, _) in kernel.walk() {
        let data = kernel.inst(inst);
        let Some(&result) = data.results.first() else {
            if let Op::For { .. } = &data.op {
                // Loops without results still have a body with an induction variable.
                loop_variable(kernel, &data.op, &mut facts);
            }
            continue;
        };
        let shape = kernel.ty(result).shape.clone();
        let get = |facts: &HashMap<Value, ValueFacts>, v: Value| {
            facts.get(&v).cloned().unwrap_or_else(|| ValueFacts::unknown(&kernel.ty(v).shape))
        };
        let out = match &data.op {
            Op::ProgramId { .. } | Op::NumPrograms { .. } => None,
            Op::Arange { start, end } => Some(ValueFacts {
                axes: vec![AxisFacts {
                    contiguity: (i64::from(*end) - i64::from(*start)).max(1) as u64,
                    divisibility: pow2_divisor((*start).into()),
                    constancy: 1,
                }],
                constant: None,
            }),
            Op::Constant { value, ty } => match value {
                Literal::Int(v) if ty.dtype.is_int() => Some(splat(&shape, pow2_divisor(*v), Some(*v))),
                _ => Some(splat(&shape, 1, None)),
            },
            Op::Binary { op, lhs, rhs } if kernel.ty(*lhs).dtype.is_int() => {
                Some(binary(*op, &get(&facts, *lhs), &get(&facts, *rhs)))
            }
            Op::Binary { lhs, rhs, .. } => Some(constancy_only(&[&get(&facts, *lhs), &get(&facts, *rhs)])),
            Op::Compare { pred, lhs, rhs } => Some(compare(*pred, &get(&facts, *lhs), &get(&facts, *rhs))),
            Op::Select { cond, on_true, on_false } => {
                let (c, t, f) = (get(&facts, *cond), get(&facts, *on_true), get(&facts, *on_false));
                let mut out = constancy_only(&[&c, &t, &f]);
                let div = gcd(t.element_divisibility(), f.element_divisibility());
                out.axes.iter_mut().for_each(|a| a.divisibility = div);
                Some(out)
            }
            Op::Unary { arg, .. } => Some(constancy_only(&[&get(&facts, *arg)])),
            Op::Cast { arg, to } => {
                let a = get(&facts, *arg);
                let from = kernel.ty(*arg).dtype;
                // Casts among i32 and u32 keep the value of non-negative integers.
                if matches!((from, to), (DType::I32 | DType::U32, DType::I32 | DType::U32)) {
                    Some(a)
                } else {
                    Some(constancy_only(&[&a]))
                }
            }
            Op::Bitcast { arg, .. } => Some(constancy_only(&[&get(&facts, *arg)])),
            Op::Broadcast { arg, shape: to } => Some(broadcast(&get(&facts, *arg), &kernel.ty(*arg).shape, to)),
            Op::Reshape { arg, shape: to } => Some(reshape(&get(&facts, *arg), &kernel.ty(*arg).shape, to)),
            Op::ExpandDims { arg, axis } => {
                let a = get(&facts, *arg);
                let mut axes = if kernel.ty(*arg).shape.rank() == 0 { Vec::new() } else { a.axes.clone() };
                let inserted = AxisFacts { contiguity: 1, divisibility: a.element_divisibility(), constancy: 1 };
                axes.insert((*axis as usize).min(axes.len()), inserted);
                Some(ValueFacts { axes, constant: a.constant })
            }
            Op::For { .. } => {
                loop_variable(kernel, &data.op, &mut facts);
                None
            }
            Op::Reduce { .. } | Op::Dot { .. } | Op::Load { .. } => None,
            Op::Store { .. } | Op::AtomicAdd { .. } | Op::Prefetch { .. } | Op::Yield { .. } => None,
        };
        if let Some(out) = out {
            if out.axes.len() == shape.rank().max(1) {
                facts.insert(result, out);
            }
        }
    }
    facts
}

/// The induction variable of a loop: a multiple of the gcd of its start and step.
fn loop_variable(kernel: &Kernel, op: &Op, facts: &mut HashMap<Value, ValueFacts>) {
    let Op::For { start, step, body, .. } = op else { return };
    let div = |v: &Value| facts.get(v).map(ValueFacts::element_divisibility).unwrap_or(1);
    let d = gcd(div(start), div(step));
    if let Some(&iv) = kernel.block(*body).args.first() {
        facts.insert(
            iv,
            ValueFacts { axes: vec![AxisFacts { contiguity: 1, divisibility: d, constancy: 1 }], constant: None },
        );
    }
}

/// A splat over `shape`: constant along every axis.
fn splat(shape: &Shape, divisibility: u64, constant: Option<i64>) -> ValueFacts {
    let dims: Vec<u64> = if shape.rank() == 0 { vec![1] } else { shape.dims().iter().map(|&d| u64::from(d)).collect() };
    let axes = dims.iter().map(|&d| AxisFacts { contiguity: 1, divisibility, constancy: d.max(1) }).collect();
    ValueFacts { axes, constant }
}

/// Only the constancy of the operands survives (the values themselves are unknown).
fn constancy_only(args: &[&ValueFacts]) -> ValueFacts {
    let rank = args[0].axes.len();
    let axes = (0..rank)
        .map(|d| AxisFacts {
            contiguity: 1,
            divisibility: 1,
            constancy: args.iter().map(|a| a.axes[d].constancy).reduce(gcd).unwrap_or(1),
        })
        .collect();
    ValueFacts { axes, constant: None }
}

fn binary(op: BinaryOp, a: &ValueFacts, b: &ValueFacts) -> ValueFacts {
    let constant = match (a.constant, b.constant) {
        (Some(x), Some(y)) => match op {
            BinaryOp::Add => x.checked_add(y),
            BinaryOp::Sub => x.checked_sub(y),
            BinaryOp::Mul => x.checked_mul(y),
            BinaryOp::Div => x.checked_div(y),
            BinaryOp::Rem => x.checked_rem(y),
            BinaryOp::Min => Some(x.min(y)),
            BinaryOp::Max => Some(x.max(y)),
            BinaryOp::And | BinaryOp::Or | BinaryOp::Xor | BinaryOp::Shl | BinaryOp::Shr => None,
        },
        _ => None,
    };
    if let Some(v) = constant {
        let mut out = a.clone();
        for (o, (x, y)) in out.axes.iter_mut().zip(a.axes.iter().zip(&b.axes)) {
            *o = AxisFacts { contiguity: 1, divisibility: pow2_divisor(v), constancy: gcd(x.constancy, y.constancy) };
        }
        out.constant = Some(v);
        return out;
    }
    let axes = a.axes.iter().zip(&b.axes).map(|(x, y)| binary_axis(op, x, y, b.constant, a.constant)).collect();
    ValueFacts { axes, constant: None }
}

/// One axis of `a op b`; `b_value` / `a_value` are the operands' values when known constants.
fn binary_axis(op: BinaryOp, a: &AxisFacts, b: &AxisFacts, b_value: Option<i64>, a_value: Option<i64>) -> AxisFacts {
    let constancy = gcd(a.constancy, b.constancy);
    match op {
        BinaryOp::Add => {
            let c = gcd(a.contiguity, b.constancy).max(gcd(b.contiguity, a.constancy));
            AxisFacts { contiguity: c, divisibility: gcd(a.divisibility_at(c), b.divisibility_at(c)), constancy }
        }
        BinaryOp::Sub => {
            let c = gcd(a.contiguity, b.constancy);
            AxisFacts { contiguity: c, divisibility: gcd(a.divisibility_at(c), b.divisibility_at(c)), constancy }
        }
        BinaryOp::Mul => {
            if b_value == Some(1) {
                return AxisFacts { constancy, ..*a };
            }
            if a_value == Some(1) {
                return AxisFacts { constancy, ..*b };
            }
            let divisibility = capped_product(a.element_divisibility(), b.element_divisibility());
            AxisFacts { contiguity: 1, divisibility, constancy }
        }
        BinaryOp::Div | BinaryOp::Shr => {
            let p = match op {
                BinaryOp::Shr => b_value.filter(|s| (0..31).contains(s)).map(|s| 1u64 << s),
                _ => power_of_two(b_value),
            };
            let Some(p) = p else { return AxisFacts { contiguity: 1, divisibility: 1, constancy } };
            // A run of `g` consecutive values starting at a multiple of `g`, with `g | p`, has
            // one quotient.
            let g = gcd(a.contiguity, gcd(p, a.divisibility));
            let divisibility = if a.contiguity == 1 && a.divisibility >= p { a.divisibility / p } else { 1 };
            AxisFacts { contiguity: 1, divisibility, constancy: constancy.max(if a.contiguity > 1 { g } else { 1 }) }
        }
        BinaryOp::Rem => {
            let Some(p) = power_of_two(b_value) else { return AxisFacts { contiguity: 1, divisibility: 1, constancy } };
            // Runs that never cross a multiple of `p` stay consecutive.
            let c = gcd(a.contiguity, gcd(p, a.divisibility));
            AxisFacts { contiguity: c, divisibility: gcd(a.divisibility_at(c), p), constancy: a.constancy }
        }
        BinaryOp::Shl => match b_value.filter(|s| (0..31).contains(s)) {
            Some(0) => AxisFacts { constancy, ..*a },
            Some(s) => {
                AxisFacts { contiguity: 1, divisibility: capped_product(a.element_divisibility(), 1 << s), constancy }
            }
            None => AxisFacts { contiguity: 1, divisibility: 1, constancy },
        },
        BinaryOp::Min | BinaryOp::Max => AxisFacts {
            contiguity: 1,
            divisibility: gcd(a.element_divisibility(), b.element_divisibility()),
            constancy,
        },
        BinaryOp::And | BinaryOp::Or | BinaryOp::Xor => AxisFacts { contiguity: 1, divisibility: 1, constancy },
    }
}

fn compare(pred: CmpPred, a: &ValueFacts, b: &ValueFacts) -> ValueFacts {
    let axes = a
        .axes
        .iter()
        .zip(&b.axes)
        .map(|(x, y)| {
            let mut constancy = gcd(x.constancy, y.constancy);
            // `a < b` / `a >= b` with `a` consecutive from a multiple of `g` and `b` a multiple of
            // `g` held over the run: the run lies wholly below or wholly at-or-above `b`.
            if matches!(pred, CmpPred::Lt | CmpPred::Ge) && x.contiguity > 1 {
                let g = gcd(gcd(x.contiguity, y.constancy), gcd(x.divisibility, y.element_divisibility()));
                constancy = constancy.max(g);
            }
            AxisFacts { contiguity: 1, divisibility: 1, constancy }
        })
        .collect();
    ValueFacts { axes, constant: None }
}

fn broadcast(a: &ValueFacts, from: &Shape, to: &Shape) -> ValueFacts {
    if to.rank() == 0 {
        return a.clone();
    }
    let pad = to.rank() - from.rank().min(to.rank());
    let axes = (0..to.rank())
        .map(|d| {
            let target = u64::from(to.dims()[d]);
            let source = if d < pad { 1 } else { u64::from(from.dims()[d - pad]) };
            if source == 1 {
                let div = if d < pad { a.element_divisibility() } else { a.axes[d - pad].element_divisibility() };
                AxisFacts { contiguity: 1, divisibility: div, constancy: target.max(1) }
            } else {
                a.axes[d - pad]
            }
        })
        .collect();
    ValueFacts { axes, constant: a.constant }
}

/// Only the last axis is carried through a reshape, when the new last axis divides the old one
/// or merges whole old rows; every other axis keeps what holds for every element.
fn reshape(a: &ValueFacts, from: &Shape, to: &Shape) -> ValueFacts {
    let elementwise = AxisFacts { contiguity: 1, divisibility: a.element_divisibility(), constancy: 1 };
    let mut axes = vec![elementwise; to.rank().max(1)];
    if from.rank() > 0 && to.rank() > 0 {
        let old = a.last();
        let old_len = u64::from(*from.dims().last().unwrap_or(&1));
        let new_len = u64::from(*to.dims().last().unwrap_or(&1));
        let span = if old_len % new_len == 0 {
            Some(new_len)
        } else if new_len % old_len == 0 {
            Some(old_len)
        } else {
            None
        };
        if let Some(span) = span {
            let c = gcd(old.contiguity, span);
            let last = axes.len() - 1;
            axes[last] =
                AxisFacts { contiguity: c, divisibility: old.divisibility_at(c), constancy: gcd(old.constancy, span) };
        }
    }
    ValueFacts { axes, constant: a.constant }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_ir::text::parse;

    fn facts_of(src: &str, spec: &Specialization, name: &str) -> ValueFacts {
        let k = parse(src).expect("the test kernel parses");
        let facts = analyze(&k, spec);
        let v = (0..k.values.len() as u32).map(Value).find(|&v| k.value_name(v) == name).expect("named value");
        facts.get(&v).cloned().unwrap_or_else(|| ValueFacts::unknown(&k.ty(v).shape))
    }

    fn axis(c: u64, div: u64, k: u64) -> AxisFacts {
        AxisFacts { contiguity: c, divisibility: div, constancy: k }
    }

    const BLOCK: &str = "kernel t(@x: ptr<f32>, %n: i32) {
  %pid: i32 = program_id 0
  %bs: i32 = const 256
  %base: i32 = mul %pid, %bs
  %r: i32[256] = arange 0, 256
  %bb: i32[256] = broadcast %base
  %offs: i32[256] = add %bb, %r
  %nb: i32[256] = broadcast %n
  %mask: bool[256] = cmp lt %offs, %nb
  %one: i32 = const 1
  %oneb: i32[256] = broadcast %one
  %shifted: i32[256] = add %offs, %oneb
  %two: i32 = const 2
  %twob: i32[256] = broadcast %two
  %strided: i32[256] = mul %offs, %twob
  %eight: i32 = const 8
  %eightb: i32[256] = broadcast %eight
  %q: i32[256] = div %offs, %eightb
  %rm: i32[256] = rem %offs, %eightb
  %v: f32[256] = load @x[%offs], mask %mask
}";

    #[test]
    fn a_block_of_consecutive_offsets_is_contiguous_and_aligned() {
        let none = Specialization::default();
        assert_eq!(facts_of(BLOCK, &none, "r").axes, vec![axis(256, MAX_DIVISIBILITY, 1)]);
        assert_eq!(facts_of(BLOCK, &none, "base").axes, vec![axis(1, 256, 1)]);
        assert_eq!(facts_of(BLOCK, &none, "bb").axes, vec![axis(1, 256, 256)]);
        assert_eq!(facts_of(BLOCK, &none, "offs").axes, vec![axis(256, 256, 1)]);
        // Adding one keeps the run but breaks the alignment.
        assert_eq!(facts_of(BLOCK, &none, "shifted").axes, vec![axis(256, 1, 1)]);
        // A stride of two is not contiguous; every element is even.
        assert_eq!(facts_of(BLOCK, &none, "strided").axes, vec![axis(1, 2, 1)]);
        // Division by 8 holds runs of 8 equal values; the remainder restarts every 8.
        assert_eq!(facts_of(BLOCK, &none, "q").axes, vec![axis(1, 1, 8)]);
        assert_eq!(facts_of(BLOCK, &none, "rm").axes, vec![axis(8, 8, 1)]);
    }

    #[test]
    fn a_mask_against_a_size_is_constant_over_runs_only_when_the_size_is_specialised() {
        let none = Specialization::default();
        assert_eq!(facts_of(BLOCK, &none, "mask").axes, vec![axis(1, 1, 1)]);
        let by16 = Specialization::of_values(&[None, Some(16 * 257)]);
        assert_eq!(by16.divisibility, vec![1, 16]);
        assert_eq!(facts_of(BLOCK, &by16, "nb").axes, vec![axis(1, 16, 256)]);
        assert_eq!(facts_of(BLOCK, &by16, "mask").axes, vec![axis(1, 1, 16)]);
        let by4 = Specialization::of_values(&[None, Some(20)]);
        assert_eq!(by4.divisibility, vec![1, 4]);
        assert_eq!(facts_of(BLOCK, &by4, "mask").axes, vec![axis(1, 1, 4)]);
        assert_eq!(Specialization::of_values(&[Some(7), None, Some(0), Some(64)]).divisibility, vec![1, 1, 32, 32]);
    }

    const ROWS: &str = "kernel t(@x: ptr<f32>, %stride: i32) {
  %rows: i32[4] = arange 0, 4
  %rows2: i32[4, 1] = expand_dims %rows, 1
  %sb: i32[4, 1] = broadcast %stride
  %rowoff: i32[4, 1] = mul %rows2, %sb
  %cols: i32[64] = arange 0, 64
  %cols2: i32[1, 64] = expand_dims %cols, 0
  %a: i32[4, 64] = broadcast %rowoff
  %b: i32[4, 64] = broadcast %cols2
  %offs: i32[4, 64] = add %a, %b
  %flat: i32[256] = reshape %offs
  %split: i32[4, 16, 4] = reshape %offs
  %lo: i32 = const 0
  %hi: i32 = const 1024
  %step: i32 = const 64
  for %k = %lo to %hi step %step {
    %kb: i32[4, 64] = broadcast %k
    %inner: i32[4, 64] = add %offs, %kb
    %v: f32[4, 64] = load @x[%inner]
  }
}";

    #[test]
    fn rows_of_a_strided_tile_are_contiguous_along_the_last_axis() {
        let spec = Specialization::of_values(&[None, Some(16 * 257)]);
        let offs = facts_of(ROWS, &spec, "offs");
        // Down a column the values are `stride · row + column`: only the rows are known.
        assert_eq!(offs.axes, vec![axis(1, 1, 1), axis(64, 16, 1)]);
        // Without the specialisation the row starts are unaligned.
        assert_eq!(facts_of(ROWS, &Specialization::default(), "offs").last(), axis(64, 1, 1));
        // Flattening merges whole rows: runs of 64 stay; splitting the row keeps runs of 4.
        assert_eq!(facts_of(ROWS, &spec, "flat").last(), axis(64, 16, 1));
        assert_eq!(facts_of(ROWS, &spec, "split").last(), axis(4, 4, 1));
        // The induction variable steps by 64 from 0.
        assert_eq!(facts_of(ROWS, &spec, "inner").last(), axis(64, 16, 1));
    }
}
