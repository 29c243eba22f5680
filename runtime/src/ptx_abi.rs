//! The PTX kernel ABI on the host side: how a launch's arguments become the kernel's `.param`
//! values, shared by the SIMT simulator executor (`simt`) and the CUDA device (`cuda`), so the
//! simulator exercises the packing the GPU uses.
//!
//! Parameters follow the thread kernel's order (the printer's order): a buffer is its pointer
//! and its length in elements (two `.u64` params), a scalar one param whose width is the
//! declared type's (`i8` sign- and `u8` / `bool` zero-extended to 32 bits, f16 / bf16 as 16
//! bits). Values are held as `u64` words; on a little-endian host the first `size` bytes of the
//! word are the parameter, which is what `cuLaunchKernel` reads.

use kiln_codegen::ptx::thread::{ThreadKernel, Ty};
use kiln_ir::interp::Scalar;

/// One launch argument as the ABI sees it.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AbiArg {
    /// A buffer of `len` elements; buffers are numbered in argument order from 0.
    Buffer {
        len: usize,
    },
    Scalar(Scalar),
}

/// One packed `.param` value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamValue {
    /// The address of buffer number `buffer` (the executor supplies it).
    Pointer { buffer: usize },
    /// The bits of the value, zero- or sign-extended as the ABI says.
    Word(u64),
}

/// A packed parameter and its size in bytes (from its declared PTX type).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PackedParam {
    pub value: ParamValue,
    pub size: usize,
}

/// Packs `args` (in the tile kernel's parameter order) into `kernel`'s parameters.
pub fn pack(kernel: &ThreadKernel, args: impl IntoIterator<Item = AbiArg>) -> Result<Vec<PackedParam>, String> {
    let mut values = Vec::with_capacity(kernel.params.len());
    let mut buffer = 0;
    for arg in args {
        match arg {
            AbiArg::Buffer { len } => {
                values.push(ParamValue::Pointer { buffer });
                values.push(ParamValue::Word(len as u64));
                buffer += 1;
            }
            AbiArg::Scalar(s) => values.push(ParamValue::Word(scalar_bits(s))),
        }
    }
    if values.len() != kernel.params.len() {
        return Err(format!(
            "`{}` declares {} PTX parameters, the arguments make {}",
            kernel.name,
            kernel.params.len(),
            values.len()
        ));
    }
    values
        .into_iter()
        .zip(&kernel.params)
        .map(|(value, p)| {
            let size = ty_bytes(p.ty);
            match (value, size) {
                (ParamValue::Pointer { .. }, 8) | (ParamValue::Word(_), 2 | 4 | 8) => Ok(PackedParam { value, size }),
                _ => Err(format!("`{}` parameter {} (.{}) cannot take {value:?}", kernel.name, p.name, p.ty.name())),
            }
        })
        .collect()
}

/// The bits of a scalar parameter.
pub fn scalar_bits(s: Scalar) -> u64 {
    match s {
        Scalar::F32(x) => u64::from(x.to_bits()),
        Scalar::F16(x) => u64::from(x.to_bits()),
        Scalar::BF16(x) => u64::from(x.to_bits()),
        Scalar::I32(x) => u64::from(x as u32),
        Scalar::U32(x) => u64::from(x),
        Scalar::I8(x) => u64::from(i32::from(x) as u32),
        Scalar::U8(x) => u64::from(x),
        Scalar::Bool(x) => u64::from(x),
    }
}

/// The size in bytes of a parameter of PTX type `ty`.
pub fn ty_bytes(ty: Ty) -> usize {
    match ty {
        Ty::Pred | Ty::B8 | Ty::U8 | Ty::S8 => 1,
        Ty::B16 | Ty::U16 | Ty::F16 | Ty::Bf16 => 2,
        Ty::B32 | Ty::U32 | Ty::S32 | Ty::F32 => 4,
        Ty::B64 | Ty::U64 | Ty::S64 => 8,
    }
}
