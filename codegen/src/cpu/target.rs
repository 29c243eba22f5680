//! What the C renderer needs to know about a CPU: its vector ISA, the vector width the emitted
//! GCC vector types use, and the optional features (F16C, VNNI) that select intrinsics.
//!
//! [`CpuTarget::host`] reads the running CPU; the explicit constructors let one machine render
//! (and, for x86 targets it can run, test) the code of every width. The compile step turns
//! [`CpuTarget::march_flags`] into compiler flags, and caches and tuning databases key on
//! [`CpuTarget::fingerprint`].

use std::fmt;

/// The vector instruction set the emitted code is written for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CpuIsa {
    /// x86-64 with AVX-512 (F, BW, VL): 64-byte vectors.
    Avx512,
    /// x86-64 with AVX2 and FMA: 32-byte vectors.
    Avx2,
    /// AArch64 Advanced SIMD: 16-byte vectors.
    Neon,
    /// Any C11 compiler and CPU: 16-byte GCC vectors, no intrinsics.
    Generic,
}

impl CpuIsa {
    pub fn name(self) -> &'static str {
        match self {
            CpuIsa::Avx512 => "avx512",
            CpuIsa::Avx2 => "avx2",
            CpuIsa::Neon => "neon",
            CpuIsa::Generic => "generic",
        }
    }

    /// Whether the ISA is an x86 one (so `<immintrin.h>` exists).
    pub fn is_x86(self) -> bool {
        match self {
            CpuIsa::Avx512 | CpuIsa::Avx2 => true,
            CpuIsa::Neon | CpuIsa::Generic => false,
        }
    }
}

impl fmt::Display for CpuIsa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A CPU the renderer targets.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct CpuTarget {
    pub isa: CpuIsa,
    /// Bytes per vector register, the `vector_size` of the emitted vector types.
    pub vector_bytes: u32,
    /// 8-bit dot-product instructions (AVX-512 VNNI or AVX-VNNI).
    pub vnni: bool,
    /// Hardware f16 ↔ f32 conversion (x86 F16C); without it conversions are bit manipulation.
    pub f16c: bool,
    /// FMA units. The renderer never contracts `a * b + c` (results must round like the
    /// interpreter's), so this only records the CPU for the fingerprint.
    pub fma: bool,
}

impl CpuTarget {
    /// AVX-512 (F, BW, VL, VNNI) with F16C and FMA: the x86 server parts kiln runs on.
    pub fn avx512() -> CpuTarget {
        CpuTarget { isa: CpuIsa::Avx512, vector_bytes: 64, vnni: true, f16c: true, fma: true }
    }

    /// AVX2 with F16C and FMA (Haswell and later), no VNNI.
    pub fn avx2() -> CpuTarget {
        CpuTarget { isa: CpuIsa::Avx2, vector_bytes: 32, vnni: false, f16c: true, fma: true }
    }

    /// AArch64 NEON.
    pub fn neon() -> CpuTarget {
        CpuTarget { isa: CpuIsa::Neon, vector_bytes: 16, vnni: false, f16c: false, fma: true }
    }

    /// Portable C: no intrinsics, 16-byte vectors.
    pub fn generic() -> CpuTarget {
        CpuTarget { isa: CpuIsa::Generic, vector_bytes: 16, vnni: false, f16c: false, fma: false }
    }

    /// The CPU this process runs on.
    pub fn host() -> CpuTarget {
        host_target()
    }

    /// Extra compiler flags that enable the target's instructions (GCC / Clang spelling).
    pub fn march_flags(&self) -> Vec<String> {
        let flags: &[&str] = match self.isa {
            // 512-bit vectors for every loop, as the emitted vector types: with GCC's default
            // preference for 256 bits, a loop mixing u8 and f32 writes a row in two halves that a
            // 64-byte vector load right after cannot forward from.
            CpuIsa::Avx512 => {
                &["-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx2", "-mfma", "-mf16c", "-mprefer-vector-width=512"]
            }
            CpuIsa::Avx2 => &["-mavx2", "-mfma", "-mf16c"],
            // NEON is part of the AArch64 baseline; nothing to enable.
            CpuIsa::Neon | CpuIsa::Generic => &[],
        };
        let mut out: Vec<String> = flags.iter().map(|s| s.to_string()).collect();
        if self.vnni {
            match self.isa {
                CpuIsa::Avx512 => out.push("-mavx512vnni".into()),
                CpuIsa::Avx2 => out.push("-mavxvnni".into()),
                CpuIsa::Neon | CpuIsa::Generic => {}
            }
        }
        if self.f16c && !out.iter().any(|f| f == "-mf16c") {
            out.push("-mf16c".into());
        }
        out
    }

    /// A stable one-line identity of everything here that changes the emitted code or its
    /// flags, e.g. `cpu:avx512:v64:vnni:f16c:fma`.
    pub fn fingerprint(&self) -> String {
        let mut s = format!("cpu:{}:v{}", self.isa, self.vector_bytes);
        for (on, name) in [(self.vnni, "vnni"), (self.f16c, "f16c"), (self.fma, "fma")] {
            if on {
                s.push(':');
                s.push_str(name);
            }
        }
        s
    }
}

#[cfg(target_arch = "x86_64")]
fn host_target() -> CpuTarget {
    let f16c = std::arch::is_x86_feature_detected!("f16c");
    let fma = std::arch::is_x86_feature_detected!("fma");
    let avx512 = std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
        && std::arch::is_x86_feature_detected!("avx512vl");
    if avx512 {
        let vnni = std::arch::is_x86_feature_detected!("avx512vnni");
        CpuTarget { isa: CpuIsa::Avx512, vector_bytes: 64, vnni, f16c, fma }
    } else if std::arch::is_x86_feature_detected!("avx2") && fma {
        // AVX-VNNI is not detectable through std on every toolchain kiln supports; leave it off.
        CpuTarget { isa: CpuIsa::Avx2, vector_bytes: 32, vnni: false, f16c, fma }
    } else {
        // Plain x86-64 (SSE2): F16C without AVX2 is not used, its intrinsics need AVX.
        CpuTarget { isa: CpuIsa::Generic, vector_bytes: 16, vnni: false, f16c: false, fma: false }
    }
}

#[cfg(target_arch = "aarch64")]
fn host_target() -> CpuTarget {
    CpuTarget::neon()
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn host_target() -> CpuTarget {
    CpuTarget::generic()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_and_fingerprints_differ_per_target() {
        assert!(CpuTarget::avx512().march_flags().contains(&"-mavx512vnni".to_string()));
        assert_eq!(CpuTarget::avx2().march_flags(), ["-mavx2", "-mfma", "-mf16c"]);
        assert!(CpuTarget::neon().march_flags().is_empty());
        assert_eq!(CpuTarget::avx512().fingerprint(), "cpu:avx512:v64:vnni:f16c:fma");
        assert_eq!(CpuTarget::generic().fingerprint(), "cpu:generic:v16");
        let host = CpuTarget::host();
        assert!(host.vector_bytes >= 16);
    }
}
