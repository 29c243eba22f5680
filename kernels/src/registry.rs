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

    /// The kernel's implementation; `None` while a kernel of the list is not written yet.
    pub fn kernel(self) -> Option<&'static dyn DynKernel> {
        match self {
            KernelId::DequantGemmW4 => None,
            KernelId::Q8Gemv => Some(&crate::q8::gemv::Q8Gemv),
            KernelId::Embedding => Some(&crate::q8::embedding::Embedding),
            KernelId::PagedKvAppend => None,
            KernelId::PagedKvGather => None,
            KernelId::AttentionDecodePaged => None,
            KernelId::AttentionPrefill => None,
            KernelId::Rmsnorm => Some(&crate::transformer::rmsnorm::Rmsnorm),
            KernelId::Rope => Some(&crate::transformer::rope::Rope),
            KernelId::SiluMul => Some(&crate::transformer::silu_mul::SiluMul),
            KernelId::Argmax => Some(&crate::transformer::argmax::Argmax),
            KernelId::Softmax => Some(&crate::transformer::softmax::Softmax),
        }
    }
}

impl fmt::Display for KernelId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Looks a kernel up by name; a name of the list that is not implemented yet is an error too.
pub fn lookup(name: &str) -> Result<&'static dyn DynKernel, KernelError> {
    let id = KernelId::from_name(name)?;
    id.kernel().ok_or_else(|| KernelError::UnknownKernel {
        name: format!("{name} (listed but not implemented yet)"),
        known: implemented().map(|k| k.id().name()).collect::<Vec<_>>().join(", "),
    })
}

/// Every implemented kernel.
pub fn implemented() -> impl Iterator<Item = &'static dyn DynKernel> {
    KernelId::ALL.into_iter().filter_map(KernelId::kernel)
}
