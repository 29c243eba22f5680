//! The `autotune` binary as a user runs it: bad input gives typed errors that list the valid
//! names, a database of another target or a corrupt one is refused and left byte-identical, and a
//! tiny tuning run writes a database that `autotune show` prints.

use std::path::PathBuf;
use std::process::{Command, Output};

fn autotune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_autotune")).args(args).output().expect("the autotune binary runs")
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("autotune-cli-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn help_explains_targets_shapes_budget_strategy_and_show() {
    let (out, _) = text(&autotune(&["--help"]));
    for word in
        ["--target", "cuda:N", "--kernels", "smollm2", "llama-8b", "--budget", "exhaustive", "guided", "--db", "show"]
    {
        assert!(out.contains(word), "`{word}` in\n{out}");
    }
}

#[test]
fn bad_targets_kernels_and_shape_sets_are_explained() {
    let dir = scratch("bad");
    let db = dir.join("db.toml");
    let db = db.to_str().unwrap();
    let (_, err) = text(&autotune(&["--target", "cuda:0", "--db", db]));
    assert!(err.contains("no CUDA backend") && err.contains("--target cpu"), "{err}");
    let (_, err) = text(&autotune(&["--target", "tpu", "--db", db]));
    assert!(err.contains("valid targets: cpu, cuda:N"), "{err}");
    let (_, err) = text(&autotune(&["--kernels", "dequant_gemm_w5", "--db", db]));
    assert!(err.contains("dequant_gemm_w5") && err.contains("attention_decode_paged"), "{err}");
    let (_, err) = text(&autotune(&["--shapes", "gpt-5", "--db", db]));
    assert!(err.contains("smollm2, llama-8b"), "{err}");
    let shapes = dir.join("shapes.toml");
    std::fs::write(&shapes, "[[shape]]\nkernel = \"rmsnorm\"\nshape = \"tokens=1,dim=64,epsilon=1\"\n").unwrap();
    let o = autotune(&["--shapes", shapes.to_str().unwrap(), "--db", db]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("`shape` field") && err.contains("epsilon"), "{err}");
    let o = autotune(&["--budget", "-1", "--db", db]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!std::path::Path::new(db).exists(), "nothing was written");
}

#[test]
fn corrupt_and_foreign_databases_are_refused_and_left_intact() {
    let dir = scratch("refused");
    let shapes = dir.join("shapes.toml");
    std::fs::write(&shapes, "[[shape]]\nkernel = \"rmsnorm\"\nshape = \"tokens=1,dim=64\"\n").unwrap();
    let shapes = shapes.to_str().unwrap();

    let corrupt = dir.join("corrupt.toml");
    std::fs::write(&corrupt, "format = 1\ntarget = \"x\"\n[[record]\n").unwrap();
    let before = std::fs::read(&corrupt).unwrap();
    let (_, err) = text(&autotune(&["--shapes", shapes, "--db", corrupt.to_str().unwrap()]));
    assert!(err.contains("corrupt at line 3"), "{err}");
    assert_eq!(std::fs::read(&corrupt).unwrap(), before);
    let (_, err) = text(&autotune(&["show", corrupt.to_str().unwrap()]));
    assert!(err.contains("corrupt at line 3"), "{err}");

    let foreign = dir.join("foreign.toml");
    std::fs::write(&foreign, "format = 1\ntarget = \"cuda:sm_90 | H100 | driver 550\"\n").unwrap();
    let before = std::fs::read(&foreign).unwrap();
    let o = autotune(&["--shapes", shapes, "--db", foreign.to_str().unwrap()]);
    let (_, err) = text(&o);
    assert_eq!(o.status.code(), Some(1));
    assert!(err.contains("made for target `cuda:sm_90") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read(&foreign).unwrap(), before);
}

#[test]
fn a_small_run_writes_a_database_that_show_prints() {
    let dir = scratch("run");
    let shapes = dir.join("shapes.toml");
    std::fs::write(&shapes, "[[shape]]\nkernel = \"rmsnorm\"\nshape = \"tokens=2,dim=256,dtype=f32\"\n").unwrap();
    let db = dir.join("cpu.toml");
    let o = autotune(&[
        "--shapes",
        shapes.to_str().unwrap(),
        "--budget",
        "5",
        "--threads",
        "1",
        "--db",
        db.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "{out}\n{err}");
    assert!(out.contains("rmsnorm") && out.contains("dim=256") && out.contains("best config"), "{out}");
    assert!(out.contains("threads=1"), "{out}");
    let o = autotune(&["show", db.to_str().unwrap()]);
    let (shown, err) = text(&o);
    assert!(o.status.success(), "{err}");
    assert!(shown.contains("rmsnorm") && shown.contains("best") && shown.contains("default"), "{shown}");
    // No temporary files beside the database.
    let names: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names.len(), 2, "{names:?}");
}
