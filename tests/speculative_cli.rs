//! `kiln generate --speculative` as a user runs it on SmolLM2: the `--json` object carries the
//! speculative fields and the same tokens as plain greedy decoding, a draft with another
//! vocabulary is refused with an error that names the fix, and a `--k` larger than the tokens left
//! is clamped and said. The model is fetched with pinned hashes on first use.

#[path = "../runtime/tests/common/gguf_writer.rs"]
#[allow(dead_code)]
mod gguf_writer;

use std::path::PathBuf;
use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("the kiln binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A prompt whose answer repeats its input, so n-gram drafts are accepted.
const PROMPT: &str = "Repeat exactly: one two three four five six seven eight nine ten";

fn json(args: &[&str]) -> serde_json::Value {
    let o = kiln(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{args:?}: not one JSON object ({e})"))
}

#[test]
fn ngram_speculation_gives_the_greedy_tokens_and_its_figures_in_json() {
    let base = ["generate", "--chat", "--prompt", PROMPT, "--max-tokens", "24", "--json"];
    let plain = json(&base);
    let spec = json(&[&base[..], &["--speculative", "--ngram", "3"]].concat());
    let tokens = spec["tokens"].as_array().expect("tokens");
    assert!(!tokens.is_empty());
    assert_eq!(spec["tokens"], plain["tokens"], "speculative greedy decoding must equal plain greedy decoding");
    assert_eq!(spec["text"], plain["text"]);
    let num = |k: &str| spec[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {spec}"));
    let acceptance = num("acceptance_rate");
    assert!((0.0..=1.0).contains(&acceptance), "acceptance_rate {acceptance}");
    assert!(num("mean_accepted") >= 0.0);
    assert!(num("tokens_per_s") > 0.0 && num("baseline_tokens_per_s") > 0.0);
    let speedup = num("speedup");
    let expected = num("tokens_per_s") / num("baseline_tokens_per_s");
    assert!((speedup - expected).abs() <= 1e-6 * expected.max(1.0), "speedup {speedup} vs {expected}");
}

/// A GGUF holding only a GPT-2 tokenizer of 256 byte tokens and two control tokens.
fn tiny_tokenizer_gguf(path: &PathBuf) {
    use gguf_writer::{GgufWriter, Value};
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    let mut tokens: Vec<String> = (0..=255u8)
        .map(|b| {
            if printable(b) {
                char::from(b).to_string()
            } else {
                next += 1;
                char::from_u32(next - 1).unwrap().to_string()
            }
        })
        .collect();
    tokens.extend(["<|im_end|>", "<|endoftext|>"].map(String::from));
    let mut types = vec![1; 256];
    types.extend([3, 3]);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let w = GgufWriter::new()
        .meta("general.architecture", Value::str("llama"))
        .meta("tokenizer.ggml.model", Value::str("gpt2"))
        .meta("tokenizer.ggml.pre", Value::str("smollm"))
        .meta("tokenizer.ggml.tokens", Value::strings(&refs))
        .meta("tokenizer.ggml.token_type", Value::i32s(&types))
        .meta("tokenizer.ggml.merges", Value::strings(&[]))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(257))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(256));
    std::fs::write(path, w.write().bytes).unwrap();
}

#[test]
fn a_draft_with_another_vocabulary_is_refused() {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("speculative-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let draft = dir.join("other-vocab.gguf");
    tiny_tokenizer_gguf(&draft);
    let o =
        kiln(&["generate", "--prompt", "hi", "--max-tokens", "4", "--speculative", "--draft", draft.to_str().unwrap()]);
    assert!(!o.status.success(), "a draft with 258 tokens must be refused");
    let err = text(&o.stderr);
    assert!(err.starts_with("error: "), "{err}");
    assert!(err.contains("vocabulary of 258 tokens") && err.contains("49152"), "{err}");
    assert!(err.contains("--draft-layers or --ngram"), "the error names the fix: {err}");
}

#[test]
fn a_k_past_the_tokens_left_is_clamped_and_said() {
    let o = kiln(&["generate", "--prompt", PROMPT, "--max-tokens", "4", "--speculative", "--ngram", "3", "--k", "10"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(
        err.contains("note: k 10 is more than the 3 tokens the generation has left after the first; using 3"),
        "{err}"
    );
    // Above what one verification can score (q_len ≤ 16): clamped to 15 and said.
    let o = kiln(&["generate", "--prompt", PROMPT, "--max-tokens", "40", "--speculative", "--ngram", "3", "--k", "20"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    assert!(err.contains("note: k 20 is more than the 15 drafts one verification step scores"), "{err}");
}
