//! The tuning database: round trip, deterministic bytes, merge by (key, config), atomic writes
//! that leave the old file intact on failure, typed errors for corrupt files and other targets,
//! and lookup: exact bucket, nearest bucket, default — each saying which.

use kiln_autotune::database::{bucket, ir_hash, Database, DbError, Record, KILN_VERSION};
use kiln_autotune::lookup::{ConfigProvider, ConfigSource};
use kiln_autotune::target::Fingerprint;
use kiln_kernels::{Args, KernelId, TargetKind};
use std::path::PathBuf;

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("db-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn target() -> Fingerprint {
    Fingerprint("cpu:test:v64 | Test CPU | threads=2".into())
}

fn gemm_problem(m: u32) -> Args {
    Args::parse(&format!("m={m},n=192,k=576,group=32,act=f32,quant=asym")).unwrap()
}

/// A record of `config` for the dequant GEMM at `m` with the current IR hash and version.
fn record(m: u32, config: &str, median_us: Option<f64>) -> Record {
    let k = KernelId::DequantGemmW4;
    let problem = k.kernel().problem(&gemm_problem(m)).unwrap();
    Record {
        kernel: k.name().into(),
        ir_hash: ir_hash(k).unwrap(),
        bucket: bucket(&problem).to_string(),
        dtypes: "act=f32".into(),
        kiln_version: KILN_VERSION.into(),
        config: config.into(),
        shape: problem.to_string(),
        status: if median_us.is_some() { "ok" } else { "wrong_result" }.into(),
        median_us,
        min_us: median_us.map(|t| t * 0.9),
        max_us: median_us.map(|t| t * 1.2),
        roofline_frac: median_us.map(|t| 10.0 / t),
        rounds: 1,
        default: false,
        detail: if median_us.is_some() { String::new() } else { "out: rel error 1.0e0".into() },
    }
}

const FAST: &str = "block_k=64,block_m=1,block_n=32,gemv=1,row_loop=0,split_k=1,weights_lhs=0";
const SLOW: &str = "block_k=32,block_m=1,block_n=64,gemv=1,row_loop=0,split_k=2,weights_lhs=0";
/// A multi-row GEMV config (m = 2..16) and a dot config (prefill).
const ROWS: &str = "block_k=32,block_m=2,block_n=32,gemv=1,row_loop=0,split_k=1,weights_lhs=0";
const DOT: &str = "block_k=32,block_m=64,block_n=32,gemv=0,row_loop=0,split_k=1,weights_lhs=0";

#[test]
fn round_trip_is_exact_and_bytes_are_deterministic() {
    let dir = scratch("round-trip");
    let path = dir.join("cpu.toml");
    let mut db = Database::new(target());
    db.merge([record(1, SLOW, Some(20.5)), record(1, FAST, Some(10.25)), record(128, FAST, None)]);
    db.save(&path).unwrap();
    let back = Database::open(&path).unwrap();
    assert_eq!(back, db);
    let text = std::fs::read_to_string(&path).unwrap();
    // The same records in another order give the same file.
    let mut other = Database::new(target());
    other.merge([record(128, FAST, None), record(1, FAST, Some(10.25)), record(1, SLOW, Some(20.5))]);
    assert_eq!(other.to_toml().unwrap(), text);
    assert!(text.contains("format = 1") && text.contains("[[record]]"), "{text}");
    // No temporary file is left behind.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn merge_replaces_the_record_of_the_same_key_and_config() {
    let mut db = Database::new(target());
    db.merge([record(1, FAST, Some(10.0)), record(1, SLOW, Some(20.0))]);
    db.merge([record(1, FAST, Some(30.0))]);
    assert_eq!(db.records.len(), 2);
    let fast = db.records.iter().find(|r| r.config == FAST).unwrap();
    assert_eq!(fast.median_us, Some(30.0));
}

#[test]
fn a_failed_write_leaves_the_previous_file_byte_identical() {
    let dir = scratch("atomic");
    let path = dir.join("cpu.toml");
    let mut db = Database::new(target());
    db.merge([record(1, FAST, Some(10.0))]);
    db.save(&path).unwrap();
    let before = std::fs::read(&path).unwrap();

    // A directory cannot be renamed over: the write fails at the last step.
    let blocked = dir.join("blocked.toml");
    std::fs::create_dir(&blocked).unwrap();
    std::fs::write(blocked.join("keep"), "x").unwrap();
    let mut newer = db.clone();
    newer.merge([record(1, SLOW, Some(5.0))]);
    let err = newer.save(&blocked).unwrap_err();
    assert!(matches!(err, DbError::Write { .. }), "{err}");
    assert!(err.to_string().contains("unchanged"), "{err}");

    // A read-only directory: the temporary file cannot be created; the old file stays.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        let result = newer.save(&path);
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        // Root ignores directory permissions; then the save succeeds, which is fine too.
        if result.is_err() {
            assert_eq!(std::fs::read(&path).unwrap(), before);
        }
    }
    let names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.ends_with(".tmp")), "{names:?}");
    if std::fs::read(&path).unwrap() != before {
        // Only the read-only case may have rewritten it (as root), and then to the new records.
        assert_eq!(Database::open(&path).unwrap(), newer);
    }
}

#[test]
fn a_corrupt_file_is_a_typed_error_with_its_line() {
    let dir = scratch("corrupt");
    let path = dir.join("cpu.toml");
    let mut db = Database::new(target());
    db.merge([record(1, FAST, Some(10.0))]);
    let mut text = db.to_toml().unwrap();
    text = text.replace("status = \"ok\"", "status = ok oops");
    std::fs::write(&path, &text).unwrap();
    let line = text.lines().position(|l| l.contains("oops")).unwrap() + 1;
    match Database::open(&path) {
        Err(DbError::Corrupt { line: got, .. }) => assert_eq!(got, line, "{text}"),
        other => panic!("expected a corrupt-file error, got {other:?}"),
    }
    // An unknown field, a missing field, another format: typed errors too.
    std::fs::write(&path, "format = 1\ntarget = \"x\"\n[[record]]\nkernel = \"a\"\n").unwrap();
    let e = Database::open(&path).unwrap_err();
    assert!(matches!(e, DbError::Corrupt { .. }) && e.to_string().contains("ir_hash"), "{e}");
    std::fs::write(&path, "format = 1\ntarget = \"x\"\ncolour = 3\n").unwrap();
    let e = Database::open(&path).unwrap_err();
    assert!(matches!(e, DbError::Corrupt { line: 3, .. }) && e.to_string().contains("colour"), "{e}");
    std::fs::write(&path, "format = 99\ntarget = \"x\"\n").unwrap();
    assert!(matches!(Database::open(&path), Err(DbError::Format { found: 99, .. })));
    std::fs::write(&path, [0xff, 0xfe, 0x00]).unwrap();
    assert!(Database::open(&path).is_err());
}

#[test]
fn a_database_of_another_target_is_refused_unless_forced() {
    let dir = scratch("target");
    let path = dir.join("cpu.toml");
    let mut db = Database::new(target());
    db.merge([record(1, FAST, Some(10.0))]);
    db.save(&path).unwrap();
    let other = Fingerprint("cpu:avx2:v32 | Other CPU | threads=8".into());
    let e = Database::open(&path).unwrap().provider(&path, &other, false).err().unwrap();
    assert!(matches!(e, DbError::WrongTarget { .. }), "{e}");
    assert!(e.to_string().contains("Other CPU") && e.to_string().contains("--force"), "{e}");
    assert!(Database::open(&path).unwrap().provider(&path, &other, true).is_ok());
    assert!(Database::open_for(&path, &other, false).is_err());
    let forced = Database::open_for(&path, &other, true).unwrap();
    assert_eq!(forced.target, other);
    assert!(forced.records.is_empty());
    assert_eq!(Database::open_for(&path, &target(), false).unwrap(), db);
}

#[test]
fn lookup_takes_the_exact_bucket_then_the_nearest_then_the_default() {
    let dir = scratch("lookup");
    let path = dir.join("cpu.toml");
    let mut db = Database::new(target());
    db.merge([
        // m = 1: FAST wins over SLOW; a failed record never wins however "fast".
        record(1, SLOW, Some(20.0)),
        record(1, FAST, Some(10.0)),
        record(1, "block_k=16,block_m=1,block_n=16,gemv=1,row_loop=0,split_k=1,weights_lhs=0", None),
        // m = 4 (bucket 4): a multi-row GEMV.
        record(4, ROWS, Some(15.0)),
        // m = 128 (bucket 128): a dot tile, and SLOW, slower.
        record(128, DOT, Some(40.0)),
        record(128, SLOW, Some(50.0)),
    ]);
    let p = db.provider(&path, &target(), false).unwrap();
    let k = KernelId::DequantGemmW4;

    let c = p.choose(k, &gemm_problem(1)).unwrap();
    assert_eq!((c.config.to_string().as_str(), &c.source), (FAST, &ConfigSource::Exact));
    // m = 100 is in bucket 128.
    let c = p.choose(k, &gemm_problem(100)).unwrap();
    assert_eq!((c.config.to_string().as_str(), &c.source), (DOT, &ConfigSource::Exact));
    // m = 2 (bucket 2): m = 1 and m = 4 are both one step away in log2; m = 1 is another
    // regime (one-token GEMV), so nearest is m = 4.
    let c = p.choose(k, &gemm_problem(2)).unwrap();
    assert_eq!(c.config.to_string(), ROWS);
    let ConfigSource::Nearest { bucket: b } = &c.source else { panic!("{:?}", c.source) };
    assert_eq!(b.get("m"), Some("4"));
    // m = 64: 128 is one step away: nearest is 128.
    let c = p.choose(k, &gemm_problem(64)).unwrap();
    assert_eq!(c.config.to_string(), DOT);
    assert!(matches!(c.source, ConfigSource::Nearest { .. }));
    // Another n: nothing tuned applies: the default, and it says so.
    let other = Args::parse("m=1,n=576,k=576,group=32,act=f32,quant=asym").unwrap();
    let c = p.choose(k, &other).unwrap();
    assert_eq!(c.source, ConfigSource::Default);
    assert_eq!(c.config, k.kernel().target_default(&other, TargetKind::Cpu).unwrap());
    // Another kernel: the default.
    let rms = Args::parse("tokens=1,dim=576").unwrap();
    assert_eq!(p.choose(KernelId::Rmsnorm, &rms).unwrap().source, ConfigSource::Default);
    // A bad problem is the kernel's typed error.
    assert!(p.choose(k, &Args::parse("m=1,n=576").unwrap()).is_err());
}

#[test]
fn lookup_ignores_other_ir_hashes_versions_and_illegal_configs() {
    let path = PathBuf::from("unused.toml");
    let k = KernelId::DequantGemmW4;
    let mut stale = record(1, FAST, Some(1.0));
    stale.ir_hash = "0000000000000000".into();
    let mut old = record(1, FAST, Some(1.0));
    old.kiln_version = "0.0.1".into();
    let mut db = Database::new(target());
    db.merge([stale, old]);
    let p = db.provider(&path, &target(), false).unwrap();
    assert_eq!(p.choose(k, &gemm_problem(1)).unwrap().source, ConfigSource::Default);

    // A config legal at m = 128 (block_m = 128) is not in the space of m = 1 (block_m ≤ 16):
    // the nearest bucket's record is skipped and the default is used.
    let mut db = Database::new(target());
    db.merge([record(128, "block_k=32,block_m=128,block_n=32,gemv=0,row_loop=0,split_k=1,weights_lhs=0", Some(5.0))]);
    let p = db.provider(&path, &target(), false).unwrap();
    assert_eq!(p.choose(k, &gemm_problem(1)).unwrap().source, ConfigSource::Default);
}

#[test]
fn nearest_never_crosses_the_gemv_gemm_boundary() {
    // Only m = 1 was tuned, with a one-token GEMV config, legal for every m. A prefill (m = 128)
    // and a verification step (m = 16) must not inherit it: each gets the kernel's default.
    let path = PathBuf::from("unused.toml");
    let mut db = Database::new(target());
    db.merge([record(1, FAST, Some(10.0))]);
    let p = db.provider(&path, &target(), false).unwrap();
    let k = KernelId::DequantGemmW4;
    for m in [16, 128] {
        let problem = gemm_problem(m);
        assert!(
            k.kernel().space(&problem, &Default::default()).unwrap().contains(&Args::parse(FAST).unwrap()),
            "FAST must be legal at m = {m} for this test to mean anything"
        );
        let c = p.choose(k, &problem).unwrap();
        assert_eq!(c.source, ConfigSource::Default, "m = {m}");
        assert_eq!(c.config, k.kernel().target_default(&problem, TargetKind::Cpu).unwrap());
    }
    // The default at m = 128 is a dot tile, at m = 16 a multi-row GEMV.
    assert_eq!(k.kernel().default_config(&gemm_problem(128)).unwrap().get("gemv"), Some("0"));
    assert_ne!(k.kernel().default_config(&gemm_problem(16)).unwrap().get("block_m"), Some("1"));
    // Within a regime the nearest bucket still serves: m = 2 from a tuned m = 8.
    let mut db = Database::new(target());
    db.merge([record(8, ROWS, Some(10.0))]);
    let p = db.provider(&path, &target(), false).unwrap();
    let c = p.choose(k, &gemm_problem(2)).unwrap();
    assert_eq!(c.config.to_string(), ROWS);
    assert!(matches!(c.source, ConfigSource::Nearest { .. }));
}

#[test]
fn equal_times_break_ties_by_config_text() {
    let path = PathBuf::from("unused.toml");
    let mut db = Database::new(target());
    db.merge([record(1, SLOW, Some(10.0)), record(1, FAST, Some(10.0))]);
    let p = db.provider(&path, &target(), false).unwrap();
    let c = p.choose(KernelId::DequantGemmW4, &gemm_problem(1)).unwrap();
    assert_eq!(c.config.to_string(), FAST.min(SLOW));
}

#[test]
fn buckets_round_m_and_ctx_up_to_powers_of_two() {
    let b = bucket(&Args::parse("m=5,n=576,ctx=300,tokens=9,heads=9").unwrap());
    assert_eq!(b.to_string(), "ctx=512,heads=9,m=8,n=576,tokens=16");
    assert_eq!(bucket(&Args::parse("m=8").unwrap()).get("m"), Some("8"));
    assert_eq!(bucket(&Args::parse("m=1").unwrap()).get("m"), Some("1"));
}

#[test]
fn confirmed_records_outrank_single_measurements() {
    let path = PathBuf::from("unused.toml");
    let mut confirmed = record(1, SLOW, Some(20.0));
    confirmed.rounds = 3;
    let mut db = Database::new(target());
    db.merge([confirmed, record(1, FAST, Some(10.0))]);
    let p = db.provider(&path, &target(), false).unwrap();
    let c = p.choose(KernelId::DequantGemmW4, &gemm_problem(1)).unwrap();
    assert_eq!((c.config.to_string().as_str(), c.source), (SLOW, ConfigSource::Exact));
}
