//! Memory ops on host buffers: `load`, `store` and `atomic_add`.
//!
//! Each op first turns its offsets and mask into lanes ([`lanes`]): per lane, the element index it
//! touches, or `None` where the mask is false. Bounds are checked there, for active lanes only and
//! in row-major lane order, before any memory is touched, so a failing op writes nothing.

use super::host::HostBuffer;
use super::value::{Data, Float, Kind};
use super::Fault;
use half::{bf16, f16};

/// Per lane, the index into a buffer of `len` elements, or `None` for a masked-off lane.
pub(crate) fn lanes(offsets: &Data, mask: Option<&Data>, len: usize) -> Result<Vec<Option<usize>>, Fault> {
    let Data::I(_, offsets) = offsets else {
        return Err(Fault::Internal(format!("offsets hold {} elements", offsets.kind_name())));
    };
    let mask = match mask {
        None => None,
        Some(Data::B(m)) if m.len() == offsets.len() => Some(m),
        Some(m) => return Err(Fault::Internal(format!("mask of {} {} elements", m.len(), m.kind_name()))),
    };
    offsets
        .iter()
        .enumerate()
        .map(|(lane, &index)| {
            if mask.is_some_and(|m| !m[lane]) {
                return Ok(None);
            }
            // i32 offsets are held sign-extended and u32 ones non-negative, so this reads each
            // with its own signedness.
            match usize::try_from(index) {
                Ok(i) if i < len => Ok(Some(i)),
                Ok(_) | Err(_) => Err(Fault::OutOfBounds { index, len }),
            }
        })
        .collect()
}

/// Reads active lanes; masked-off lanes take `other` (splatted if scalar) or zero.
pub(crate) fn load(buf: &HostBuffer, lanes: &[Option<usize>], other: Option<&Data>) -> Result<Data, Fault> {
    let n = lanes.len();
    let mut out = match other {
        None => Kind::of(buf.dtype()).zeros(n),
        Some(o) if o.len() == 1 => o.gather(&vec![0; n]),
        Some(o) if o.len() == n => o.clone(),
        Some(o) => return Err(Fault::Internal(format!("load `other` of {} elements for {n} lanes", o.len()))),
    };
    match (buf, &mut out) {
        (HostBuffer::F32(v), Data::F(_, out)) => fill(out, lanes, |i| Float::F32.decode(v[i].to_bits())),
        (HostBuffer::F16(v), Data::F(_, out)) => fill(out, lanes, |i| Float::F16.decode(v[i].to_bits().into())),
        (HostBuffer::BF16(v), Data::F(_, out)) => fill(out, lanes, |i| Float::BF16.decode(v[i].to_bits().into())),
        (HostBuffer::I32(v), Data::I(_, out)) => fill(out, lanes, |i| v[i].into()),
        (HostBuffer::U32(v), Data::I(_, out)) => fill(out, lanes, |i| v[i].into()),
        (HostBuffer::I8(v), Data::I(_, out)) => fill(out, lanes, |i| v[i].into()),
        (HostBuffer::U8(v), Data::I(_, out)) => fill(out, lanes, |i| v[i].into()),
        (HostBuffer::Bool(v), Data::B(out)) => fill(out, lanes, |i| v[i]),
        (buf, out) => {
            return Err(Fault::Internal(format!("load from a {} buffer into {} values", buf.dtype(), out.kind_name())))
        }
    }
    Ok(out)
}

fn fill<T>(out: &mut [T], lanes: &[Option<usize>], read: impl Fn(usize) -> T) {
    for (o, lane) in out.iter_mut().zip(lanes) {
        if let Some(i) = *lane {
            *o = read(i);
        }
    }
}

/// Writes active lanes in row-major lane order, so a later lane wins on a repeated index.
pub(crate) fn store(buf: &mut HostBuffer, lanes: &[Option<usize>], value: &Data) -> Result<(), Fault> {
    if value.len() != lanes.len() {
        return Err(Fault::Internal(format!("store of {} values to {} lanes", value.len(), lanes.len())));
    }
    match (buf, value) {
        (HostBuffer::F32(v), Data::F(_, x)) => scatter(v, lanes, x, |x| f32::from_bits(Float::F32.encode(x))),
        (HostBuffer::F16(v), Data::F(_, x)) => scatter(v, lanes, x, |x| f16::from_bits(Float::F16.encode(x) as u16)),
        (HostBuffer::BF16(v), Data::F(_, x)) => scatter(v, lanes, x, |x| bf16::from_bits(Float::BF16.encode(x) as u16)),
        (HostBuffer::I32(v), Data::I(_, x)) => scatter(v, lanes, x, |x| x as i32),
        (HostBuffer::U32(v), Data::I(_, x)) => scatter(v, lanes, x, |x| x as u32),
        (HostBuffer::I8(v), Data::I(_, x)) => scatter(v, lanes, x, |x| x as i8),
        (HostBuffer::U8(v), Data::I(_, x)) => scatter(v, lanes, x, |x| x as u8),
        (HostBuffer::Bool(v), Data::B(x)) => scatter(v, lanes, x, |x| x),
        (buf, value) => {
            return Err(Fault::Internal(format!("store of {} values into a {} buffer", value.kind_name(), buf.dtype())))
        }
    }
    Ok(())
}

fn scatter<T, S: Copy>(dst: &mut [T], lanes: &[Option<usize>], src: &[S], convert: impl Fn(S) -> T) {
    for (lane, &x) in lanes.iter().zip(src) {
        if let Some(i) = *lane {
            dst[i] = convert(x);
        }
    }
}

/// Adds active lanes in row-major lane order: `f32` rounds after each add, integers wrap.
pub(crate) fn atomic_add(buf: &mut HostBuffer, lanes: &[Option<usize>], value: &Data) -> Result<(), Fault> {
    if value.len() != lanes.len() {
        return Err(Fault::Internal(format!("atomic_add of {} values to {} lanes", value.len(), lanes.len())));
    }
    match (buf, value) {
        (HostBuffer::F32(v), Data::F(_, x)) => accumulate(v, lanes, x, |old, x| {
            let f = Float::F32;
            f32::from_bits(f.encode(f.round(f.decode(old.to_bits()) + x)))
        }),
        (HostBuffer::I32(v), Data::I(_, x)) => accumulate(v, lanes, x, |old, x| old.wrapping_add(x as i32)),
        (HostBuffer::U32(v), Data::I(_, x)) => accumulate(v, lanes, x, |old, x| old.wrapping_add(x as u32)),
        (buf, value) => {
            return Err(Fault::Internal(format!(
                "atomic_add of {} values into a {} buffer",
                value.kind_name(),
                buf.dtype()
            )))
        }
    }
    Ok(())
}

fn accumulate<T: Copy, S: Copy>(dst: &mut [T], lanes: &[Option<usize>], src: &[S], add: impl Fn(T, S) -> T) {
    for (lane, &x) in lanes.iter().zip(src) {
        if let Some(i) = *lane {
            dst[i] = add(dst[i], x);
        }
    }
}
