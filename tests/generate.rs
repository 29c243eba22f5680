//! `kiln generate` as a user runs it: the capital-of-France chat prompt answered with Paris
//! (streamed, and as JSON with the expected ids), seeded sampling that repeats, and typed errors
//! that name the fix. The model is fetched with pinned hashes on first use.

use std::process::{Command, Output};

fn kiln(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kiln")).args(args).output().expect("the kiln binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

const QUESTION: &str = "What is the capital of France?";

#[test]
fn the_chat_prompt_is_answered_with_paris_in_json() {
    let o = kiln(&["generate", "--chat", "--prompt", QUESTION, "--max-tokens", "16", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let ids = |key: &str| -> Vec<u64> { v[key].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect() };
    assert_eq!(ids("prompt_tokens"), [1, 4093, 198, 1780, 314, 260, 3575, 282, 4649, 47, 2, 198, 1, 520, 9531, 198]);
    assert_eq!(ids("tokens"), [504, 3575, 282, 4649, 314, 7042, 30, 2]);
    assert_eq!(v["text"], "The capital of France is Paris.");
    assert!(v["prefill_tok_s"].as_f64().unwrap() > 0.0 && v["decode_tok_s"].as_f64().unwrap() > 0.0);
}

#[test]
fn text_streams_then_speeds_follow() {
    let o = kiln(&["generate", "--chat", "--prompt", QUESTION]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(out.starts_with("The capital of France is Paris."), "{out}");
    assert!(out.contains("prefill: 16 tokens at") && out.contains("decode: 8 tokens at"), "{out}");
}

#[test]
fn seeded_sampling_repeats() {
    let run = |seed: &str| {
        let args = ["generate", "--prompt", "Once upon a time", "--max-tokens", "12", "--temperature", "0.9"];
        let o = kiln(&[&args[..], &["--top-p", "0.95", "--top-k", "40", "--seed", seed, "--json"]].concat());
        assert!(o.status.success(), "{}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["tokens"].clone()
    };
    let first = run("5");
    assert_eq!(first.as_array().unwrap().len(), 12);
    assert_eq!(first, run("5"), "the same seed gives the same tokens");
}

#[test]
fn bad_requests_are_errors_that_name_the_fix() {
    let cpu_db = std::env::temp_dir().join(format!("kiln-generate-cpu-db-{}.toml", std::process::id()));
    kiln::autotune::database::Database::new(kiln::autotune::target::Fingerprint::host_cpu(2)).save(&cpu_db).unwrap();
    let cpu_db = cpu_db.to_str().unwrap();
    for (args, needle) in [
        (&["--target", "cuda:x"][..], "write `cuda:N`"),
        (&["--target", "tpu"][..], "use `cpu` or `cuda:N`"),
        (&["--target", "cuda:0", "--db", cpu_db][..], "leave out `--db` on a CUDA target"),
        (&["--db", "/nonexistent/tuning.toml"][..], "cannot read tuning database /nonexistent/tuning.toml"),
        (&["--max-tokens", "9000"][..], "lower --max-tokens"),
        (&["--top-p", "0"][..], "top-p 0 must be in (0, 1]"),
        (&["--temperature=-1"][..], "temperature -1 must be finite"),
        (&["--model", "/nonexistent/model.gguf"][..], "/nonexistent/model.gguf"),
    ] {
        let o = kiln(&[&["generate", "--prompt", "hi"][..], args].concat());
        assert!(!o.status.success(), "{args:?} should fail");
        let err = text(&o.stderr);
        assert!(err.starts_with("error: ") && err.contains(needle), "{args:?}: {err}");
    }
    let _ = std::fs::remove_file(cpu_db);
    // Without a GPU driver, a CUDA target says so before anything is loaded (with one, the
    // CUDA path runs: `forward_simt.rs` checks it in the simulator, `gpu-check` on hardware).
    if !kiln::runtime::cuda::driver_present() {
        for args in
            [&["generate", "--prompt", "hi", "--target", "cuda:0"][..], &["bench-generate", "--target", "cuda:0"]]
        {
            let o = kiln(args);
            let err = text(&o.stderr);
            assert!(!o.status.success() && err.contains("no CUDA driver found"), "{args:?}: {err}");
        }
    }
}

#[test]
fn bench_generate_reports_decode_against_the_roofline() {
    let args =
        ["bench-generate", "--prefill-tokens", "20", "--decode-tokens", "4", "--working-set-mib", "64", "--json"];
    let o = kiln(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON object");
    let num = |k: &str| v[k].as_f64().unwrap_or_else(|| panic!("{k} missing in {v}"));
    assert!(num("decode_tok_s") > 0.0 && num("prefill_tok_s") > 0.0 && num("read_gbps") > 0.0);
    // SmolLM2's weights: ~67 MiB of int4 projections and the 28 MiB Q8_0 head.
    let mib = num("decode_bytes_per_token") / 1048576.0;
    assert!((90.0..100.0).contains(&mib), "{mib} MiB per token");
    let frac = num("decode_roofline_frac");
    assert!(frac > 0.0 && frac < 1.5, "{frac}");
    // A launch of a tiny kernel costs some time, alone on the leader or split over the pool
    // (which hands work to other cores and waits for them), and far less than a decode step.
    for key in ["launch_overhead_us", "pooled_launch_overhead_us"] {
        let us = num(key);
        assert!(us > 0.0 && us < 1e3, "{key} = {us}");
    }
    let profile = v["decode_profile"].as_array().unwrap();
    let launches: u64 = profile.iter().map(|e| e[1].as_u64().unwrap()).sum();
    assert_eq!(launches, num("launches_per_token") as u64, "the profile covers every launch");
    // Each entry's weight bandwidth times its time is the weight bytes it read; over a decode step
    // every weight is read once: the ~91 MiB of the per-token bytes that are not the context's K/V.
    let weight_mib: f64 =
        profile.iter().map(|e| e[2].as_f64().unwrap() * 1e-3 * e[3].as_f64().unwrap() * 1e9).sum::<f64>() / 1048576.0;
    assert!((85.0..mib).contains(&weight_mib), "{weight_mib} MiB of weights in the profile, {mib} MiB per token");
    // The decode head takes its activations as two int8 digits by default (`q8_gemv`, `xq=i8x2`),
    // reading the u8-offset copy of the Q8_0 weights.
    let head = profile.iter().find(|e| e[0] == "q8_gemv_i8x2").expect("the head in the profile");
    let head_mib = head[2].as_f64().unwrap() * 1e-3 * head[3].as_f64().unwrap() * 1e9 / 1048576.0;
    assert!((27.0..29.0).contains(&head_mib), "the Q8_0 head reads {head_mib} MiB");
}
