//! Ops that move elements between positions: broadcast, reductions along an axis, and `dot`.
//!
//! Shapes come from the kernel's static types; each function checks that the data it is given
//! has the element count its shape says, so a mismatch is an error rather than a panic.

use super::elementwise::max_num;
use super::value::Data;
use super::Fault;
use crate::op::ReduceOp;

fn numel(dims: &[u32]) -> usize {
    dims.iter().map(|&d| d as usize).product()
}

fn check_numel(data: &Data, dims: &[u32], what: &str) -> Result<(), Fault> {
    if data.len() != numel(dims) {
        return Err(Fault::Internal(format!(
            "{what} holds {} elements, its shape {dims:?} says {}",
            data.len(),
            numel(dims)
        )));
    }
    Ok(())
}

/// Numpy broadcast of `data` (shape `from`) to shape `to`: dims are aligned from the right and a
/// source dim of 1 repeats along the target dim.
pub(crate) fn broadcast(data: &Data, from: &[u32], to: &[u32]) -> Result<Data, Fault> {
    check_numel(data, from, "broadcast operand")?;
    let Some(offset) = to.len().checked_sub(from.len()) else {
        return Err(Fault::Internal(format!("broadcast from rank {} to rank {}", from.len(), to.len())));
    };
    // Source stride of each target dim; 0 where the source repeats.
    let mut strides = vec![0usize; to.len()];
    let mut stride = 1usize;
    for (i, &d) in from.iter().enumerate().rev() {
        if d != 1 {
            strides[i + offset] = stride;
        }
        stride *= d as usize;
    }
    let n = numel(to);
    let mut index = vec![0u32; to.len()];
    let mut source = 0usize;
    let mut sources = Vec::with_capacity(n);
    for _ in 0..n {
        sources.push(source);
        // Step the row-major multi-index, keeping `source` in step with it.
        for axis in (0..to.len()).rev() {
            index[axis] += 1;
            source += strides[axis];
            if index[axis] < to[axis] {
                break;
            }
            source -= strides[axis] * to[axis] as usize;
            index[axis] = 0;
        }
    }
    Ok(data.gather(&sources))
}

/// Reduces `axis` of `data` (shape `dims`) away.
pub(crate) fn reduce(op: ReduceOp, data: &Data, dims: &[u32], axis: usize) -> Result<Data, Fault> {
    check_numel(data, dims, "reduce operand")?;
    if axis >= dims.len() {
        return Err(Fault::Internal(format!("reduce axis {axis} of rank {}", dims.len())));
    }
    let outer = numel(&dims[..axis]);
    let len = dims[axis] as usize;
    let inner = numel(&dims[axis + 1..]);
    // Element `k` along the axis for output position (o, i).
    let at = |o: usize, k: usize, i: usize| (o * len + k) * inner + i;
    match data {
        Data::F(f, v) => {
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                let mut acc: Vec<f64> = match op {
                    ReduceOp::Sum => vec![0.0; inner],
                    ReduceOp::Max if len == 0 => vec![f64::NEG_INFINITY; inner],
                    ReduceOp::Max => (0..inner).map(|i| v[at(o, 0, i)]).collect(),
                };
                let first = match op {
                    ReduceOp::Sum => 0,
                    ReduceOp::Max => 1,
                };
                // Index order along the axis, in f64; rounded once below.
                for k in first..len {
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = v[at(o, k, i)];
                        *a = match op {
                            ReduceOp::Sum => *a + x,
                            ReduceOp::Max => max_num(*a, x),
                        };
                    }
                }
                out.extend(acc.into_iter().map(|a| f.round(a)));
            }
            Ok(Data::F(*f, out))
        }
        Data::I(t, v) => {
            let mut out = Vec::with_capacity(outer * inner);
            for o in 0..outer {
                let mut acc = match op {
                    ReduceOp::Sum => vec![0i64; inner],
                    ReduceOp::Max => vec![t.range().0; inner],
                };
                for k in 0..len {
                    for (i, a) in acc.iter_mut().enumerate() {
                        let x = v[at(o, k, i)];
                        *a = match op {
                            ReduceOp::Sum => a.wrapping_add(x),
                            ReduceOp::Max => (*a).max(x),
                        };
                    }
                }
                out.extend(acc.into_iter().map(|a| t.wrap(a)));
            }
            Ok(Data::I(*t, out))
        }
        Data::B(_) => Err(Fault::Internal(format!("reduce_{} of bool", op.name()))),
    }
}

/// `acc + lhs · rhs` for `lhs: [m, k]`, `rhs: [k, n]`, `acc: [m, n]`.
///
/// Each output starts from `acc` and adds the products in `k` order; the products are exact in
/// `f64` (or `i64`), and the result is rounded to the accumulator's dtype once.
pub(crate) fn dot(lhs: &Data, rhs: &Data, acc: &Data, [m, k, n]: [u32; 3]) -> Result<Data, Fault> {
    check_numel(lhs, &[m, k], "dot lhs")?;
    check_numel(rhs, &[k, n], "dot rhs")?;
    check_numel(acc, &[m, n], "dot accumulator")?;
    let (m, k, n) = (m as usize, k as usize, n as usize);
    // Row i of the output gathers rhs rows in k order, so each output element still sums its
    // products in k order while the inner loop walks memory contiguously.
    fn matmul<T: Copy>(
        a: &[T],
        b: &[T],
        out: &mut [T],
        (m, k, n): (usize, usize, usize),
        mul_add: impl Fn(T, T, T) -> T,
    ) {
        for i in 0..m {
            let row = &mut out[i * n..(i + 1) * n];
            for kk in 0..k {
                let x = a[i * k + kk];
                for (o, &y) in row.iter_mut().zip(&b[kk * n..(kk + 1) * n]) {
                    *o = mul_add(*o, x, y);
                }
            }
        }
    }
    match (lhs, rhs, acc) {
        (Data::F(_, a), Data::F(_, b), Data::F(f, c)) => {
            let mut out = c.clone();
            matmul(a, b, &mut out, (m, k, n), |o, x, y| o + x * y);
            Ok(Data::F(*f, out.into_iter().map(|x| f.round(x)).collect()))
        }
        (Data::I(_, a), Data::I(_, b), Data::I(t, c)) => {
            // Operands are 8-bit and k at most 2^24, so the sum is exact in i64 before the wrap.
            let mut out = c.clone();
            matmul(a, b, &mut out, (m, k, n), |o, x, y| o.wrapping_add(x.wrapping_mul(y)));
            Ok(Data::I(*t, out.into_iter().map(|x| t.wrap(x)).collect()))
        }
        (Data::F(..) | Data::I(..) | Data::B(_), _, _) => Err(Fault::Internal(format!(
            "dot of {}, {} and {} values",
            lhs.kind_name(),
            rhs.kind_name(),
            acc.kind_name()
        ))),
    }
}
