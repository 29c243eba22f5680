//! Every kernel of the library, by a typed id.

use crate::kernel::DynKernel;
use crate::KernelError;
use std::fmt;

/// The kernels of the library. The name is what the CLI and the tuning database use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KernelId {
    DequantGemmW4,
    Q8Gemv,
    Embedding,
    PagedKvAppend,
    PagedKvGather,
    AttentionDecodePaged,
    AttentionPrefill,
    Rmsnorm,
    Rope,
    SiluMul,
    Argmax,
    Softmax,
}

impl KernelId {
    pub const ALL: [KernelId; 12] = [
        KernelId::DequantGemmW4,
        KernelId::Q8Gemv,
        KernelId::Embedding,
        KernelId::PagedKvAppend,
        KernelId::PagedKvGather,
        KernelId::AttentionDecodePaged,
        KernelId::AttentionPrefill,
        KernelId::Rmsnorm,
        KernelId::Rope,
        KernelId::SiluMul,
        KernelId::Argmax,
        KernelId::Softmax,
    ];

    pub fn name(self) -> &'static str {
        match self {
            KernelId::DequantGemmW4 => "dequant_gemm_w4",
            KernelId::Q8Gemv => "q8_gemv",
            KernelId::Embedding => "embedding",
            KernelId::PagedKvAppend => "paged_kv_append",
            KernelId::PagedKvGather => "paged_kv_gather",
            KernelId::AttentionDecodePaged => "attention_decode_paged",
            KernelId::AttentionPrefill => "attention_prefill",
            KernelId::Rmsnorm => "rmsnorm",
            KernelId::Rope => "rope",
            KernelId::SiluMul => "silu_mul",
            KernelId::Argmax => "argmax",
            KernelId::Softmax => "softmax",
        }
    }

    pub fn from_name(name: &str) -> Result<KernelId, KernelError> {
        KernelId::ALL.into_iter().find(|k| k.name() == name).ok_or_else(|| KernelError::UnknownKernel {
            name: name.to_string(),
            known: KernelId::ALL.map(KernelId::name).join(", "),
        })
    }

    /// The kernel's implementation.
    pub fn kernel(self) -> &'static dyn DynKernel {
        match self {
            KernelId::DequantGemmW4 => &crate::dequant_gemm_w4::DequantGemmW4,
            KernelId::Q8Gemv => &crate::q8::gemv::Q8Gemv,
            KernelId::Embedding => &crate::q8::embedding::Embedding,
            KernelId::PagedKvAppend => &crate::paged::append::PagedKvAppend,
            KernelId::PagedKvGather => &crate::paged::gather::PagedKvGather,
            KernelId::AttentionDecodePaged => &crate::paged::decode_attention::AttentionDecodePaged,
            KernelId::AttentionPrefill => &crate::attention_prefill::AttentionPrefill,
            KernelId::Rmsnorm => &crate::transformer::rmsnorm::Rmsnorm,
            KernelId::Rope => &crate::transformer::rope::Rope,
            KernelId::SiluMul => &crate::transformer::silu_mul::SiluMul,
            KernelId::Argmax => &crate::transformer::argmax::Argmax,
            KernelId::Softmax => &crate::transformer::softmax::Softmax,
        }
    }
}

impl fmt::Display for KernelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Looks a kernel up by name.
pub fn lookup(name: &str) -> Result<&'static dyn DynKernel, KernelError> {
    Ok(KernelId::from_name(name)?.kernel())
}

/// Every kernel of the library, in `KernelId::ALL` order.
pub fn all() -> impl Iterator<Item = &'static dyn DynKernel> {
    KernelId::ALL.into_iter().map(KernelId::kernel)
}
