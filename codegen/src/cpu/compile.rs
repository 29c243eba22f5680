//! Building rendered C into a shared object: the system C compiler (found through the `cc`
//! crate, `CC` overrides it), fixed flags plus the target's ISA flags, and an on-disk cache keyed
//! by the source, the flags and the compiler's version, so each kernel is compiled once per
//! machine.
//!
//! A compiler that is missing or fails is a [`CompileError`] with the source's path and the exact
//! command that reproduces the failure.

use super::{CSource, CpuTarget};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Flags every kernel is built with. No `-ffast-math`: IEEE semantics hold (NaN, infinities,
/// signed zeros, no reassociation). `-ffp-contract=fast` lets `a * b + c` become one fused
/// multiply-add, rounded once instead of twice: the backend's one allowed deviation in basic
/// arithmetic (results stay within the per-dtype tolerances, and FMA is how the hardware reaches
/// its peak; the roofline's multiply-add kernel measures exactly that peak).
pub const BASE_FLAGS: [&str; 6] = ["-std=gnu11", "-O3", "-fPIC", "-shared", "-ffp-contract=fast", "-fno-math-errno"];

/// Why a kernel could not be built.
#[derive(Debug, thiserror::Error)]
pub enum CompileError {
    #[error("no C compiler found: {why} (install gcc or clang, or set CC)")]
    NoCompiler { why: String },
    #[error("the C compiler failed on {source_path}\n{stderr}\nrepro: {command}")]
    Failed { source_path: PathBuf, command: String, stderr: String },
    #[error("kernel cache at {path}: {source}")]
    Cache { path: PathBuf, source: std::io::Error },
}

/// The C compiler and its identity.
#[derive(Clone, Debug)]
pub struct Compiler {
    pub path: PathBuf,
    /// Flags the `cc` crate says the platform needs (e.g. `-m64`), before ours.
    pub platform_flags: Vec<String>,
    /// First line of `--version`: part of the cache key.
    pub version: String,
}

impl Compiler {
    /// Finds the system C compiler once per process.
    pub fn system() -> Result<&'static Compiler, CompileError> {
        static COMPILER: OnceLock<Result<Compiler, String>> = OnceLock::new();
        COMPILER.get_or_init(find_compiler).as_ref().map_err(|why| CompileError::NoCompiler { why: why.clone() })
    }
}

fn find_compiler() -> Result<Compiler, String> {
    let target = env!("KILN_TARGET_TRIPLE");
    let host = env!("KILN_HOST_TRIPLE");
    let tool = cc::Build::new()
        .target(target)
        .host(host)
        .opt_level(3)
        .cargo_metadata(false)
        .cargo_warnings(false)
        .try_get_compiler()
        .map_err(|e| e.to_string())?;
    let path = tool.path().to_path_buf();
    let output = Command::new(&path).arg("--version").output().map_err(|e| format!("{}: {e}", path.display()))?;
    if !output.status.success() {
        return Err(format!("`{} --version` failed", path.display()));
    }
    let version = String::from_utf8_lossy(&output.stdout).lines().next().unwrap_or("").trim().to_string();
    // cc adds optimisation, debug and PIC flags of its own; keep only the platform's (-m64 ...).
    let platform_flags = tool
        .args()
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .filter(|a| a.starts_with("-m") || a.starts_with("--target"))
        .collect();
    Ok(Compiler { path, platform_flags, version })
}

/// Where compiled kernels are cached: `$KILN_CACHE_DIR`, else `$XDG_CACHE_HOME/kiln`, else
/// `~/.cache/kiln`, else the system temp directory; the CPU backend uses its `cpu/` folder.
pub fn default_cache_dir() -> PathBuf {
    let base = std::env::var_os("KILN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kiln")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("kiln")))
        .unwrap_or_else(|| std::env::temp_dir().join("kiln"));
    base.join("cpu")
}

/// A compiled kernel on disk.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedObject {
    pub path: PathBuf,
    /// The exported entry point (`kiln_NAME`).
    pub entry: String,
    /// Whether this call found it in the cache.
    pub cached: bool,
}

/// The full command line for compiling `source` to `output`.
pub fn command_line(compiler: &Compiler, target: &CpuTarget, source: &Path, output: &Path) -> Vec<String> {
    let mut args: Vec<String> = compiler.platform_flags.clone();
    args.extend(BASE_FLAGS.iter().map(|s| s.to_string()));
    args.extend(target.march_flags());
    args.extend(["-o".to_string(), output.display().to_string(), source.display().to_string(), "-lm".to_string()]);
    args
}

/// Compiles `src` for `target` into `cache_dir`, or returns the cached object.
pub fn compile(src: &CSource, target: &CpuTarget, cache_dir: &Path) -> Result<SharedObject, CompileError> {
    let compiler = Compiler::system()?;
    let cache_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| CompileError::Cache { path, source }
    };
    std::fs::create_dir_all(cache_dir).map_err(cache_err(cache_dir))?;
    let key = cache_key(src, target, compiler);
    let so_path = cache_dir.join(format!("{}-{key}.so", src.name));
    if so_path.exists() {
        return Ok(SharedObject { path: so_path, entry: src.entry.clone(), cached: true });
    }
    let c_path = cache_dir.join(format!("{}-{key}.c", src.name));
    std::fs::write(&c_path, &src.code).map_err(cache_err(&c_path))?;
    // Build under a private name (per process and per call, so threads of one process building
    // the same kernel do not share it either) and rename, so a concurrent or interrupted build
    // never leaves a half-written object under the cached name.
    static BUILDS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let build = BUILDS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp_path = cache_dir.join(format!(".{}-{key}.{}-{build}.so.tmp", src.name, std::process::id()));
    let args = command_line(compiler, target, &c_path, &tmp_path);
    let repro = std::iter::once(compiler.path.display().to_string()).chain(args.iter().cloned()).collect::<Vec<_>>();
    let output = Command::new(&compiler.path)
        .args(&args)
        .output()
        .map_err(|e| CompileError::NoCompiler { why: format!("cannot run {}: {e}", compiler.path.display()) })?;
    if !output.status.success() {
        let _ = std::fs::remove_file(&tmp_path);
        return Err(CompileError::Failed {
            source_path: c_path,
            command: repro.join(" "),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    std::fs::rename(&tmp_path, &so_path).map_err(cache_err(&so_path))?;
    Ok(SharedObject { path: so_path, entry: src.entry.clone(), cached: false })
}

/// Hex SHA-256 (first 20 characters) of everything that can change the object: the source, the
/// flags, the target and the compiler's identity.
fn cache_key(src: &CSource, target: &CpuTarget, compiler: &Compiler) -> String {
    let mut h = Sha256::new();
    for part in [src.code.as_str(), &compiler.version, &compiler.path.display().to_string(), &target.fingerprint()] {
        h.update(part.as_bytes());
        h.update([0u8]);
    }
    for flag in compiler
        .platform_flags
        .iter()
        .map(String::as_str)
        .chain(BASE_FLAGS)
        .chain(target.march_flags().iter().map(String::as_str))
    {
        h.update(flag.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().take(10).map(|b| format!("{b:02x}")).collect()
}
