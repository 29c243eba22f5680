//! Test-only build and run of rendered C: `gcc` invoked directly, the shared object loaded with
//! `libloading`, a `kiln_args` built from interpreter host buffers, every program run in order on
//! one thread (with the 64 MiB stack the runtime gives its workers). The real compile step and
//! runtime live elsewhere; this exists so the renderer is checked before they land.

#![allow(dead_code)]

use kiln_codegen::cpu::{render, CSource, CpuTarget};
use kiln_ir::interp::{Arg, HostBuffer, Scalar};
use kiln_ir::Kernel;
use std::collections::HashMap;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Mutex, OnceLock};

/// Whether `gcc` runs here; says loudly when it does not.
pub fn have_gcc() -> bool {
    static HAVE: OnceLock<bool> = OnceLock::new();
    *HAVE.get_or_init(|| {
        let ok = Command::new("gcc").arg("--version").output().is_ok_and(|o| o.status.success());
        if !ok {
            eprintln!("!!!!!!!! gcc not found: SKIPPING the C compile and run checks of the CPU renderer !!!!!!!!");
        }
        ok
    })
}

fn work_dir() -> PathBuf {
    // Cargo's scratch directory for integration tests, so nothing is left in /tmp.
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("cpu-render");
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn hash(s: &str) -> u64 {
    // FNV-1a: stable and dependency-free; only names files within one test run.
    s.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3))
}

/// Compiles `src` for `target` into a shared object, as the compile step will (plus `-Wall
/// -Werror`). Returns its path or the compiler's complaint with a repro command.
pub fn compile(src: &CSource, target: &CpuTarget) -> Result<PathBuf, String> {
    static CACHE: OnceLock<Mutex<HashMap<u64, PathBuf>>> = OnceLock::new();
    let flags = target.march_flags();
    let key = hash(&format!("{}{}", src.code, flags.join(" ")));
    if let Some(p) = CACHE.get_or_init(Default::default).lock().unwrap().get(&key) {
        return Ok(p.clone());
    }
    static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = work_dir();
    // Tests run in parallel and may build the same source at once: each build writes files of
    // its own and renames the library into place, so no test loads a half-written one.
    let unique = format!("{}.{}", std::process::id(), COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
    let c = dir.join(format!("{}-{key:016x}.{unique}.c", src.name));
    let built = dir.join(format!("{}-{key:016x}.{unique}.so", src.name));
    let so = dir.join(format!("{}-{key:016x}.so", src.name));
    std::fs::write(&c, &src.code).map_err(|e| e.to_string())?;
    let mut cmd = Command::new("gcc");
    cmd.args(["-std=gnu11", "-O2", "-fPIC", "-shared", "-Wall", "-Werror", "-ffp-contract=off"])
        .args(&flags)
        .arg("-o")
        .arg(&built)
        .arg(&c)
        .arg("-lm");
    let out = cmd.output().map_err(|e| format!("cannot run gcc: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "gcc failed on {}:\n{}\nrepro: {:?}",
            c.display(),
            String::from_utf8_lossy(&out.stderr),
            cmd
        ));
    }
    std::fs::rename(&built, &so).map_err(|e| format!("cannot move {} into place: {e}", built.display()))?;
    let _ = std::fs::rename(&c, dir.join(format!("{}-{key:016x}.c", src.name)));
    CACHE.get_or_init(Default::default).lock().unwrap().insert(key, so.clone());
    Ok(so)
}

#[repr(C)]
#[derive(Clone, Copy)]
union KilnScalar {
    i32: i32,
    u32: u32,
    f32: f32,
    u16: u16,
    i8: i8,
    u8: u8,
}

#[repr(C)]
struct KilnArgs {
    buffers: *const *mut std::ffi::c_void,
    buffer_lens: *const i64,
    scalars: *const KilnScalar,
    grid: [i32; 3],
}

/// Mirror of `kiln_error`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KilnError {
    pub code: i32,
    pub inst: i32,
    pub param: i32,
    pub pad: i32,
    pub index: i64,
    pub len: i64,
    pub program: i64,
}

type Entry = unsafe extern "C" fn(*const KilnArgs, i64, i64, *mut KilnError) -> i32;

/// A buffer as the bytes the ABI expects.
fn to_bytes(b: &HostBuffer) -> Vec<u8> {
    match b {
        HostBuffer::F32(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
        HostBuffer::F16(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
        HostBuffer::BF16(v) => v.iter().flat_map(|x| x.to_bits().to_ne_bytes()).collect(),
        HostBuffer::I32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        HostBuffer::U32(v) => v.iter().flat_map(|x| x.to_ne_bytes()).collect(),
        HostBuffer::I8(v) => v.iter().map(|&x| x as u8).collect(),
        HostBuffer::U8(v) => v.clone(),
        HostBuffer::Bool(v) => v.iter().map(|&x| u8::from(x)).collect(),
    }
}

fn from_bytes(like: &HostBuffer, bytes: &[u8]) -> HostBuffer {
    let w4 = || bytes.chunks_exact(4).map(|c| [c[0], c[1], c[2], c[3]]);
    let w2 = || bytes.chunks_exact(2).map(|c| u16::from_ne_bytes([c[0], c[1]]));
    match like {
        HostBuffer::F32(_) => HostBuffer::F32(w4().map(|b| f32::from_bits(u32::from_ne_bytes(b))).collect()),
        HostBuffer::F16(_) => HostBuffer::F16(w2().map(half::f16::from_bits).collect()),
        HostBuffer::BF16(_) => HostBuffer::BF16(w2().map(half::bf16::from_bits).collect()),
        HostBuffer::I32(_) => HostBuffer::I32(w4().map(i32::from_ne_bytes).collect()),
        HostBuffer::U32(_) => HostBuffer::U32(w4().map(u32::from_ne_bytes).collect()),
        HostBuffer::I8(_) => HostBuffer::I8(bytes.iter().map(|&x| x as i8).collect()),
        HostBuffer::U8(_) => HostBuffer::U8(bytes.to_vec()),
        HostBuffer::Bool(_) => HostBuffer::Bool(bytes.iter().map(|&x| x != 0).collect()),
    }
}

fn scalar(s: &Scalar) -> KilnScalar {
    match *s {
        Scalar::F32(x) => KilnScalar { f32: x },
        Scalar::F16(x) => KilnScalar { u16: x.to_bits() },
        Scalar::BF16(x) => KilnScalar { u16: x.to_bits() },
        Scalar::I32(x) => KilnScalar { i32: x },
        Scalar::U32(x) => KilnScalar { u32: x },
        Scalar::I8(x) => KilnScalar { i8: x },
        Scalar::U8(x) => KilnScalar { u8: x },
        Scalar::Bool(x) => KilnScalar { u8: u8::from(x) },
    }
}

/// Renders, compiles and runs `kernel` over `grid` on `args` (updated in place), programs in
/// linear order on one thread. `Err` is a kiln error the kernel reported.
pub fn run(kernel: &Kernel, target: &CpuTarget, grid: [u32; 3], args: &mut [Arg]) -> Result<(), KilnError> {
    let src = render(kernel, target).expect("kernel renders");
    let so = compile(&src, target).unwrap_or_else(|e| panic!("{e}"));
    // Buffers as bytes, 64-byte aligned by over-allocating u64 words (alignment the runtime will
    // give too; the code does not rely on it).
    let mut bufs: Vec<Vec<u64>> = Vec::new();
    let mut lens = Vec::new();
    let mut scalars = Vec::new();
    for a in args.iter() {
        match a {
            Arg::Buffer(b) => {
                let bytes = to_bytes(b);
                let mut words = vec![0u64; bytes.len().div_ceil(8).max(1)];
                // SAFETY: `words` holds at least `bytes.len()` bytes.
                unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), words.as_mut_ptr() as *mut u8, bytes.len()) };
                bufs.push(words);
                lens.push(b.len() as i64);
                scalars.push(KilnScalar { u32: 0 });
            }
            Arg::Scalar(s) => {
                bufs.push(Vec::new());
                lens.push(0);
                scalars.push(scalar(s));
            }
        }
    }
    let entry = src.entry.clone();
    let total = i64::from(grid[0]) * i64::from(grid[1]) * i64::from(grid[2]);
    let (bufs, result) = std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || {
            let mut bufs = bufs;
            let ptrs: Vec<*mut std::ffi::c_void> = bufs
                .iter_mut()
                .map(|b| if b.is_empty() { std::ptr::null_mut() } else { b.as_mut_ptr() as *mut std::ffi::c_void })
                .collect();
            let kargs = KilnArgs {
                buffers: ptrs.as_ptr(),
                buffer_lens: lens.as_ptr(),
                scalars: scalars.as_ptr(),
                grid: [grid[0] as i32, grid[1] as i32, grid[2] as i32],
            };
            let mut err = KilnError::default();
            // SAFETY: the library was just built from a kiln kernel whose ABI is mirrored above;
            // every pointer stays alive for the call.
            let rc = unsafe {
                let lib = libloading::Library::new(&so).expect("load the shared object");
                let f: libloading::Symbol<Entry> = lib.get(entry.as_bytes()).expect("entry symbol");
                f(&kargs, 0, total, &mut err)
            };
            assert_eq!(rc, err.code, "the return code is the error code");
            (bufs, if rc == 0 { Ok(()) } else { Err(err) })
        })
        .expect("spawn")
        .join()
        .expect("the kernel thread panicked");
    for (a, words) in args.iter_mut().zip(&bufs) {
        if let Arg::Buffer(b) = a {
            let n = to_bytes(b).len();
            // SAFETY: `words` holds at least `n` bytes.
            let bytes = unsafe { std::slice::from_raw_parts(words.as_ptr() as *const u8, n) };
            *b = from_bytes(b, bytes);
        }
    }
    result
}
