//! The tuning database: one TOML file per target, one record per (key, config).
//!
//! ```toml
//! format = 1
//! target = "cpu:avx512:v64:vnni:f16c:fma | AMD EPYC | threads=2"
//!
//! [[record]]
//! kernel = "dequant_gemm_w4"
//! ir_hash = "3f1c09a2b7d4e611"
//! bucket = "act=f32,group=32,k=576,m=1,n=576,quant=asym"
//! dtypes = "act=f32"
//! kiln_version = "0.1.0"
//! config = "block_k=128,block_m=1,block_n=128,split_k=1"
//! shape = "act=f32,group=32,k=576,m=1,n=576,quant=asym"
//! status = "ok"
//! median_us = 41.2
//! ...
//! ```
//!
//! The key holds everything that can change the answer: the kernel name and the hash of its IR
//! ([`ir_hash`]), the problem bucket ([`bucket`]), its dtypes, the target fingerprint (once per
//! file: a file is for one target) and the kiln version. Records of other IR hashes or versions
//! stay in the file but are never chosen. Files are written atomically ([`Database::save`]);
//! records are kept sorted, so the same results give the same bytes.
//!
//! Lookup ([`DbProvider`], a [`ConfigProvider`]): the best `ok` record of the exact bucket, else
//! of the nearest tuned bucket of the same kernel (same keys outside the bucketed ones) and of the
//! same regime ([`kiln_kernels::TileKernel::regime`]: never a one-token GEMV config for a prefill),
//! else the kernel's default config. Best means ([`rank`]): confirmed over several rounds before measured
//! once, then the fastest median, then the smaller config text. A chosen config must be in the
//! kernel's legal space for the actual problem, or the next option is taken.

use crate::lookup::{Choice, ConfigProvider, ConfigSource};
use crate::target::Fingerprint;
use kiln_kernels::{Args, KernelError, KernelId, SpaceLimits};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The file format version this code writes and reads.
pub const FORMAT: u32 = 1;

/// The kiln version recorded in (and required of) records.
pub const KILN_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Problem keys rounded up to a power of two in the bucket; every other key is kept exact.
pub const BUCKETED_KEYS: [&str; 3] = ["m", "ctx", "tokens"];

/// Why a database could not be read, written or used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("cannot read tuning database {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error(
        "tuning database {path} is corrupt at line {line}: {message} (fix the line, or delete the file to start over)"
    )]
    Corrupt { path: PathBuf, line: usize, message: String },
    #[error("tuning database {path} has format {found}, this kiln reads format {FORMAT}; re-tune into a new file")]
    Format { path: PathBuf, found: u32 },
    #[error(
        "tuning database {path} was made for target `{found}`, not this one (`{expected}`); \
         tune into another file, or force it (`--force`) to use or replace it anyway"
    )]
    WrongTarget { path: PathBuf, found: String, expected: String },
    #[error("cannot write tuning database {path}: {source} (the previous file, if any, is unchanged)")]
    Write { path: PathBuf, source: std::io::Error },
    #[error("cannot encode the tuning database: {0}")]
    Encode(String),
}

/// One measurement of one config for one key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Record {
    pub kernel: String,
    pub ir_hash: String,
    pub bucket: String,
    #[serde(default)]
    pub dtypes: String,
    pub kiln_version: String,
    pub config: String,
    /// The exact problem the measurement ran on.
    #[serde(default)]
    pub shape: String,
    /// `ok`, or the failure: `out_of_resources`, `compile_error`, `wrong_result`, `launch_error`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub median_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub roofline_frac: Option<f64>,
    /// Measurement rounds behind the figures: more than one for the candidates the tuner's
    /// confirmation rounds re-measured, which outrank single measurements in lookup.
    #[serde(default = "one")]
    pub rounds: u32,
    /// Whether this was the kernel's default config for the shape.
    #[serde(default)]
    pub default: bool,
    /// What went wrong, for failures.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Record {
    fn key(&self) -> (&str, &str, &str, &str, &str, &str) {
        (&self.kernel, &self.ir_hash, &self.bucket, &self.dtypes, &self.kiln_version, &self.config)
    }

    pub fn is_ok(&self) -> bool {
        self.status == "ok" && self.median_us.is_some_and(f64::is_finite)
    }

    /// Whether the figures were confirmed over several rounds.
    pub fn confirmed(&self) -> bool {
        self.rounds > 1
    }
}

fn one() -> u32 {
    1
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: u32,
    target: String,
    #[serde(default, rename = "record")]
    records: Vec<Record>,
}

/// A tuning database in memory.
#[derive(Clone, Debug, PartialEq)]
pub struct Database {
    pub target: Fingerprint,
    pub records: Vec<Record>,
}

impl Database {
    pub fn new(target: Fingerprint) -> Database {
        Database { target, records: Vec::new() }
    }

    /// Reads a database file.
    pub fn open(path: &Path) -> Result<Database, DbError> {
        let text = std::fs::read_to_string(path).map_err(|source| DbError::Read { path: path.into(), source })?;
        Database::parse(&text, path)
    }

    /// Parses database text; `path` is for messages.
    pub fn parse(text: &str, path: &Path) -> Result<Database, DbError> {
        let file: File = toml::from_str(text).map_err(|e| DbError::Corrupt {
            path: path.into(),
            line: e.span().map_or(1, |s| text[..s.start.min(text.len())].matches('\n').count() + 1),
            message: e.message().to_string(),
        })?;
        if file.format != FORMAT {
            return Err(DbError::Format { path: path.into(), found: file.format });
        }
        Ok(Database { target: Fingerprint(file.target), records: file.records })
    }

    /// Opens `path` for tuning `target`: a missing file is a new database; a file of another
    /// target is refused unless `force`, which starts it over for this target.
    pub fn open_for(path: &Path, target: &Fingerprint, force: bool) -> Result<Database, DbError> {
        if !path.exists() {
            return Ok(Database::new(target.clone()));
        }
        let db = Database::open(path)?;
        match db.check_target(path, target) {
            Ok(()) => Ok(db),
            Err(_) if force => Ok(Database::new(target.clone())),
            Err(e) => Err(e),
        }
    }

    fn check_target(&self, path: &Path, target: &Fingerprint) -> Result<(), DbError> {
        if self.target == *target {
            Ok(())
        } else {
            Err(DbError::WrongTarget { path: path.into(), found: self.target.0.clone(), expected: target.0.clone() })
        }
    }

    /// Adds or replaces (same key and config) records.
    pub fn merge(&mut self, records: impl IntoIterator<Item = Record>) {
        for r in records {
            match self.records.iter_mut().find(|old| old.key() == r.key()) {
                Some(old) => *old = r,
                None => self.records.push(r),
            }
        }
        self.records.sort_by(|a, b| a.key().cmp(&b.key()));
    }

    /// The TOML text of the database.
    pub fn to_toml(&self) -> Result<String, DbError> {
        let mut records = self.records.clone();
        records.sort_by(|a, b| a.key().cmp(&b.key()));
        let file = File { format: FORMAT, target: self.target.0.clone(), records };
        toml::to_string(&file).map_err(|e| DbError::Encode(e.to_string()))
    }

    /// Writes the database atomically: a temporary file in the same directory, flushed to disk,
    /// then renamed over `path`. A failure at any step leaves the previous file as it was.
    pub fn save(&self, path: &Path) -> Result<(), DbError> {
        let text = self.to_toml()?;
        let write_err = |source| DbError::Write { path: path.into(), source };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "db".into());
        let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
        let result = (|| {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            std::fs::rename(&tmp, path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result.map_err(write_err)
    }

    /// The fastest `ok` record per bucket of `kernel` (current IR hash and version), ties by
    /// config text.
    pub fn best_per_bucket(&self, kernel: KernelId, ir_hash: &str) -> Vec<&Record> {
        let mut best: std::collections::BTreeMap<&str, &Record> = Default::default();
        for r in self.records.iter().filter(|r| {
            r.kernel == kernel.name() && r.ir_hash == ir_hash && r.kiln_version == KILN_VERSION && r.is_ok()
        }) {
            let slot = best.entry(&r.bucket).or_insert(r);
            if better(r, slot) {
                *slot = r;
            }
        }
        best.into_values().collect()
    }

    /// A [`ConfigProvider`] over this database for `target`; refused for another target unless
    /// `force`. `path` is for messages.
    pub fn provider(self, path: &Path, target: &Fingerprint, force: bool) -> Result<DbProvider, DbError> {
        if !force {
            self.check_target(path, target)?;
        }
        Ok(DbProvider { db: self, hashes: Mutex::new(HashMap::new()) })
    }
}

/// Opens the database at `path` for the host CPU run with `threads` workers (what the runtime's
/// CPU device uses) as a [`ConfigProvider`]; a database of another target is refused.
pub fn open_host_cpu(path: &Path, threads: usize) -> Result<DbProvider, DbError> {
    Database::open(path)?.provider(path, &Fingerprint::host_cpu(threads), false)
}

/// Whether `a` wins over `b`: a confirmed record over a single measurement, then the faster,
/// then the smaller config text (a deterministic tie-break).
pub fn better(a: &Record, b: &Record) -> bool {
    rank(a) < rank(b)
}

/// The lookup order of records: correct before failed, confirmed before single, faster first,
/// then by config text.
pub fn rank(r: &Record) -> (bool, bool, f64, &str) {
    let t = if r.is_ok() { r.median_us.unwrap_or(f64::INFINITY) } else { f64::INFINITY };
    (!r.is_ok(), !r.confirmed(), t, r.config.as_str())
}

/// Orders records as lookup prefers them (see [`rank`]); figures are finite or infinite, never NaN.
pub fn lookup_order(a: &Record, b: &Record) -> std::cmp::Ordering {
    rank(a).partial_cmp(&rank(b)).unwrap_or(std::cmp::Ordering::Equal)
}

/// A problem's bucket: the canonical problem with [`BUCKETED_KEYS`] rounded up to a power of two.
pub fn bucket(problem: &Args) -> Args {
    let mut out = problem.clone();
    for key in BUCKETED_KEYS {
        if let Some(v) = problem.get(key).and_then(|v| v.parse::<u64>().ok()) {
            out.set(key, v.max(1).next_power_of_two());
        }
    }
    out
}

/// The problem keys whose values name dtypes, `key=dtype,...`.
pub fn dtypes(problem: &Args) -> String {
    let mut out = Args::new();
    for (k, v) in problem.iter() {
        if kiln_ir::DType::from_name(v).is_some() {
            out.set(k, v);
        }
    }
    out.to_string()
}

/// A short hash of the kernel's IR: the printed launches of its plan for its example problem
/// with the default config, and its knobs. Changes whenever the kernel's code or knobs change,
/// which retires older tuning records.
pub fn ir_hash(kernel: KernelId) -> Result<String, KernelError> {
    let k = kernel.kernel();
    let problem = k.problem(&k.example_problem())?;
    let plan = k.plan(&problem, &k.default_config(&problem)?)?;
    let mut h = Sha256::new();
    for launch in &plan.launches {
        h.update(kiln_ir::text::print(&launch.kernel).as_bytes());
    }
    for knob in k.knobs() {
        h.update(format!("{}={:?};", knob.name, knob.values).as_bytes());
    }
    Ok(h.finalize().iter().take(8).map(|b| format!("{b:02x}")).collect())
}

/// Distance between two buckets of the same kernel: `None` unless every key outside
/// [`BUCKETED_KEYS`] is equal; else the sum of |log2| differences of the bucketed keys.
fn bucket_distance(a: &Args, b: &Args) -> Option<u32> {
    let keys: std::collections::BTreeSet<&str> = a.iter().chain(b.iter()).map(|(k, _)| k).collect();
    let mut d = 0;
    for key in keys {
        let (x, y) = (a.get(key), b.get(key));
        if BUCKETED_KEYS.contains(&key) {
            let (Some(x), Some(y)) = (x.and_then(|v| v.parse::<u64>().ok()), y.and_then(|v| v.parse::<u64>().ok()))
            else {
                return None;
            };
            d += x.max(1).ilog2().abs_diff(y.max(1).ilog2());
        } else if x != y {
            return None;
        }
    }
    Some(d)
}

/// The tuning database as a [`ConfigProvider`].
pub struct DbProvider {
    db: Database,
    hashes: Mutex<HashMap<KernelId, String>>,
}

impl DbProvider {
    pub fn database(&self) -> &Database {
        &self.db
    }

    fn hash(&self, kernel: KernelId) -> Result<String, KernelError> {
        let mut hashes = self.hashes.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = hashes.get(&kernel) {
            return Ok(h.clone());
        }
        let h = ir_hash(kernel)?;
        hashes.insert(kernel, h.clone());
        Ok(h)
    }
}

impl ConfigProvider for DbProvider {
    fn choose(&self, kernel: KernelId, problem: &Args) -> Result<Choice, KernelError> {
        let k = kernel.kernel();
        let problem = k.problem(problem)?;
        let want = bucket(&problem);
        let hash = self.hash(kernel)?;
        let legal = k.space(&problem, &SpaceLimits::default())?;
        let regime = k.regime(&problem)?;
        let mut options: Vec<(u32, &Record, Args)> = self
            .db
            .best_per_bucket(kernel, &hash)
            .into_iter()
            .filter_map(|r| {
                let b = Args::parse(&r.bucket).ok()?;
                let distance = bucket_distance(&want, &b)?;
                // A nearer bucket of another regime (a GEMV tuned at m = 1 for a prefill at
                // m = 128) is legal but no sensible fallback: the default serves better.
                let same_regime = distance == 0 || k.regime(&b).is_ok_and(|r| r == regime);
                same_regime.then_some((distance, r, b))
            })
            .collect();
        options.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.2.cmp(&b.2)));
        for (distance, record, b) in options {
            let Ok(config) = Args::parse(&record.config) else { continue };
            if !legal.contains(&config) {
                continue;
            }
            let source = if distance == 0 { ConfigSource::Exact } else { ConfigSource::Nearest { bucket: b } };
            return Ok(Choice { config, source });
        }
        Ok(Choice { config: k.target_default(&problem, self.db.target.kind())?, source: ConfigSource::Default })
    }
}
