//! Speculative decoding on small random models (Q4_1 projections, a Q8_0 tied embedding, a
//! vocabulary of 8 tokens so that distributions can be counted):
//!
//! - rejection sampling reproduces target-only sampling: the joint distribution of the second and
//!   third generated tokens over thousands of seeds passes a chi-square test at significance 10⁻³
//!   against the exact distribution computed from the target's logits, for each draft source —
//!   and a deliberately wrong rule (keep every draft) fails the same test;
//! - after every step the target's and the draft's caches hold exactly the committed tokens but
//!   the last (lengths, block tables, no leaked block), and the target's cache contents give the
//!   logits a fresh model gives for the same tokens;
//! - greedy speculative decoding equals target-only greedy decoding for each source;
//! - bad input: a draft with another vocabulary, bad `--draft-layers` / `--ngram`, a `k` larger
//!   than one verification or the remaining output are refused or clamped and said.

use kiln_autotune::lookup::Defaults;
use kiln_runtime::generate::{generate, GenerateOptions};
use kiln_runtime::model::llama::{LlamaModel, Logits, ModelOptions, SeqInput};
use kiln_runtime::model::sampling::{candidates, SamplingParams};
use kiln_runtime::model::tensor::{LlamaConfig, TensorSource};
use kiln_runtime::speculative::accept::{rule_for, AcceptanceRule, Greedy, RejectionSampling, Verdict};
use kiln_runtime::speculative::adaptive::KPolicy;
use kiln_runtime::speculative::decode::{generate_speculative, Speculator};
use kiln_runtime::speculative::draft::{DraftModel, DraftSource, LayerPrefix, NgramDraft, Proposal, SelfDraft};
use kiln_runtime::speculative::SpecError;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::sync::Arc;

fn config(vocab: usize) -> LlamaConfig {
    LlamaConfig {
        n_layers: 2,
        dim: 64,
        ffn_dim: 96,
        n_heads: 1,
        n_kv_heads: 1,
        head_dim: 64,
        vocab_size: vocab,
        context_length: 256,
        rope_base: 1e4,
        rms_eps: 1e-5,
        tied_head: true,
    }
}

/// A random model: Q4_1 projections with zero-mean rows, a Q8_0 embedding scaled by `embd_scale`
/// (larger: more peaked next-token distributions).
fn random_model(seed: u64, vocab: usize, embd_scale: f32) -> MemSource {
    common::random_model::random_model(config(vocab), seed, 0.02..0.06, embd_scale)
}

fn load(src: &dyn TensorSource) -> LlamaModel {
    let options = ModelOptions { max_seq_len: 128, ..ModelOptions::default() };
    LlamaModel::load(src, device(), Arc::new(Defaults::cpu()), options).expect("model loads")
}

const VOCAB: usize = 8;
const PROMPT: [u32; 7] = [3, 1, 4, 1, 5, 2, 6];

/// The three sources for a target built from `src` (the draft model: another random model with
/// the same vocabulary, its own cache).
fn sources(target: &LlamaConfig) -> Vec<Box<dyn DraftSource>> {
    let draft_src = random_model(99, VOCAB, 1.0);
    let draft = DraftModel::new(load(&draft_src), target, "random draft model").unwrap();
    vec![Box::new(draft), Box::new(SelfDraft::new(1, target).unwrap()), Box::new(NgramDraft::new(2).unwrap())]
}

/// Wilson–Hilferty: the chi-square quantile of `df` degrees of freedom at normal quantile `z`.
fn chi2_quantile(df: f64, z: f64) -> f64 {
    let a = 2.0 / (9.0 * df);
    df * (1.0 - a + z * a.sqrt()).powi(3)
}

/// Chi-square statistic and degrees of freedom of `counts` against probabilities `p` (cells with
/// an expected count below 5 pooled).
fn chi2(counts: &[usize], p: &[f64]) -> (f64, f64) {
    let n: usize = counts.iter().sum();
    let (mut stat, mut cells) = (0.0, 0);
    let (mut pool_obs, mut pool_exp) = (0.0, 0.0);
    for (&c, &pi) in counts.iter().zip(p) {
        let e = pi * n as f64;
        if e < 5.0 {
            pool_obs += c as f64;
            pool_exp += e;
        } else {
            stat += (c as f64 - e).powi(2) / e;
            cells += 1;
        }
    }
    if pool_exp > 0.0 {
        stat += (pool_obs - pool_exp).powi(2) / pool_exp.max(1e-12);
        cells += 1;
    }
    (stat, (cells - 1) as f64)
}

/// The target-only sampling distribution of (second, third) generated token after `PROMPT`,
/// exact from the target's logits: Σ over the first token of p(t1) p(t2 | t1) p(t3 | t1 t2).
fn exact_joint(m: &mut LlamaModel, params: &SamplingParams) -> Vec<f64> {
    let mut dist = |tokens: &[u32]| -> Vec<f64> {
        let seq = m.add_sequence();
        let out = m.step(&[SeqInput { seq, tokens, logits: Logits::Last }]).unwrap();
        m.free_sequence(seq).unwrap();
        let mut p = vec![0.0; VOCAB];
        for (t, pt) in candidates(&out[0], params).unwrap() {
            p[t as usize] = pt;
        }
        p
    };
    let mut joint = vec![0.0; VOCAB * VOCAB];
    let p1 = dist(&PROMPT);
    for t1 in 0..VOCAB as u32 {
        let mut ctx = PROMPT.to_vec();
        ctx.push(t1);
        let p2 = dist(&ctx);
        for t2 in 0..VOCAB as u32 {
            ctx.push(t2);
            let p3 = dist(&ctx);
            ctx.pop();
            for t3 in 0..VOCAB {
                joint[t2 as usize * VOCAB + t3] += p1[t1 as usize] * p2[t2 as usize] * p3[t3];
            }
        }
    }
    joint
}

const PARAMS: SamplingParams = SamplingParams { temperature: 1.5, top_k: 0, top_p: 1.0, seed: 0 };
const RUNS: u64 = 2500;

/// Counts of (second, third) token over `RUNS` seeded speculative runs with `k` = 2.
fn sample_joint(
    m: &mut LlamaModel,
    draft: &mut dyn DraftSource,
    rule: &dyn Fn(SamplingParams) -> Box<dyn AcceptanceRule>,
) -> Vec<usize> {
    let mut counts = vec![0; VOCAB * VOCAB];
    for seed in 0..RUNS {
        let params = SamplingParams { seed, ..PARAMS };
        let options = GenerateOptions { max_tokens: 3, sampling: params, stop: vec![] };
        let g = generate_speculative(m, draft, rule(params), KPolicy::fixed(2), &PROMPT, &options, &mut |_| Ok(()))
            .unwrap();
        counts[g.tokens[1] as usize * VOCAB + g.tokens[2] as usize] += 1;
    }
    counts
}

/// The quantile of the test: significance 10⁻³ (z = 3.09).
const Z: f64 = 3.09;

#[test]
fn rejection_sampling_reproduces_the_target_distribution_for_every_source() {
    let src = random_model(7, VOCAB, 1.0);
    let mut m = load(&src);
    let exact = exact_joint(&mut m, &PARAMS);
    let entropy: f64 = exact.iter().filter(|&&p| p > 0.0).map(|p| -p * p.ln()).sum();
    eprintln!("entropy of the exact joint: {entropy:.2} nats of at most {:.2}", (exact.len() as f64).ln());
    for mut draft in sources(&m.config.clone()) {
        let counts = sample_joint(&mut m, draft.as_mut(), &|p| Box::new(RejectionSampling::new(p).unwrap()));
        let (stat, df) = chi2(&counts, &exact);
        let crit = chi2_quantile(df, Z);
        eprintln!("{}: chi-square {stat:.1} on {df} degrees of freedom (critical {crit:.1})", draft.name());
        assert!(stat < crit, "{}: chi-square {stat:.1} ≥ {crit:.1}: the distribution differs", draft.name());
    }
}

/// A wrong rule: keep every draft, then take the target's token after them.
struct KeepEverything(RejectionSampling);

impl AcceptanceRule for KeepEverything {
    fn sample(&mut self, logits: &[f32]) -> Result<u32, SpecError> {
        self.0.sample(logits)
    }
    fn verify(&mut self, rows: &[f32], vocab: usize, proposal: &Proposal) -> Result<Verdict, SpecError> {
        let k = proposal.tokens.len();
        Ok(Verdict { accepted: k, next: self.0.sample(&rows[k * vocab..(k + 1) * vocab])? })
    }
}

#[test]
fn a_wrong_acceptance_rule_fails_the_distribution_test() {
    let src = random_model(7, VOCAB, 1.0);
    let mut m = load(&src);
    let exact = exact_joint(&mut m, &PARAMS);
    let mut draft = SelfDraft::new(1, &m.config).unwrap();
    let counts = sample_joint(&mut m, &mut draft, &|p| Box::new(KeepEverything(RejectionSampling::new(p).unwrap())));
    let (stat, df) = chi2(&counts, &exact);
    let crit = chi2_quantile(df, Z);
    eprintln!("keep-everything rule: chi-square {stat:.1} on {df} degrees of freedom (critical {crit:.1})");
    assert!(stat > crit, "the wrong rule passed: chi-square {stat:.1} < {crit:.1}");
}

/// The rule alone on synthetic logits: one verified position, drafts from a known q. The kept
/// draft or the replacement is distributed as p.
#[test]
fn one_rejection_step_gives_the_target_distribution() {
    let params = SamplingParams { temperature: 1.0, top_k: 0, top_p: 1.0, seed: 5 };
    let target: Vec<f32> = vec![0.3, -1.0, 1.2, 0.0, -0.4];
    let draft: Vec<f32> = vec![1.5, 0.2, -0.5, 0.0, 0.9];
    let p: Vec<f64> = {
        let mut p = vec![0.0; 5];
        candidates(&target, &params).unwrap().into_iter().for_each(|(t, x)| p[t as usize] = x);
        p
    };
    let q = candidates(&draft, &params).unwrap();
    let mut rule = RejectionSampling::new(params).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let mut rows = target.clone();
    rows.extend(&target);
    let n = 100_000;
    let mut counts = [0usize; 5];
    for _ in 0..n {
        // d ~ q
        let u: f64 = rng.random();
        let mut mass = 0.0;
        let d = q.iter().find(|&&(_, w)| {
            mass += w;
            u < mass
        });
        let d = d.map_or(q[q.len() - 1].0, |x| x.0);
        let v = rule.verify(&rows, 5, &Proposal { tokens: vec![d], q: vec![Some(q.clone())] }).unwrap();
        let first = if v.accepted == 1 { d } else { v.next };
        counts[first as usize] += 1;
    }
    let (stat, df) = chi2(&counts, &p);
    assert!(stat < chi2_quantile(df, Z), "chi-square {stat:.1} on {df}");
}

/// The caches between steps: the target's sequence (and the draft's own, if any) holds all
/// committed tokens but the last, in whole blocks, with no block leaked or shared.
fn check_caches(s: &Speculator<'_>) {
    let held = s.tokens.len() - 1;
    let check = |cache: &kiln_runtime::model::kv_cache::KvCache, seq, what: &str| {
        assert_eq!(cache.len(seq).unwrap(), held, "{what}: length");
        let table = cache.block_table(seq).unwrap();
        assert_eq!(table.len(), held.div_ceil(cache.block_size()), "{what}: block table length");
        let mut sorted = table.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), table.len(), "{what}: a block appears twice");
        assert!(table.iter().all(|&b| (b as usize) < cache.n_blocks()), "{what}: block id out of range");
        // One sequence per model here: every other block is free.
        assert_eq!(cache.free_blocks() + table.len(), cache.n_blocks(), "{what}: leaked blocks");
    };
    check(s.model().cache(), s.seq(), "target");
    if let Some((cache, seq)) = s.draft().own_cache() {
        check(cache, seq, "draft");
    }
}

#[test]
fn after_every_step_the_caches_hold_exactly_the_committed_tokens() {
    let src = random_model(8, VOCAB, 1.0);
    let mut m = load(&src);
    let config = m.config.clone();
    for sampling in [SamplingParams::greedy(), SamplingParams { seed: 3, ..PARAMS }] {
        for (mut draft, policy) in
            sources(&config).into_iter().zip([KPolicy::fixed(3), KPolicy::adaptive(6)].iter().cycle())
        {
            let name = draft.name();
            let committed = {
                let rule = rule_for(&sampling).unwrap();
                let mut s = Speculator::new(&mut m, draft.as_mut(), rule, policy.clone(), sampling).unwrap();
                s.start(&PROMPT).unwrap();
                check_caches(&s);
                let (mut proposed, mut rejected) = (0, 0);
                // Blocks of 16 tokens: 60 tokens cross several block boundaries both ways.
                while s.tokens.len() < 60 {
                    let r = s.step(8).unwrap();
                    proposed += r.proposed;
                    rejected += usize::from(r.accepted < r.proposed);
                    check_caches(&s);
                }
                eprintln!("{name}, {sampling:?}: {proposed} drafted, {rejected} steps rolled back");
                assert!(proposed > 0, "{name}: nothing was drafted");
                s.tokens.clone()
            };
            // Freed on drop: nothing left behind.
            assert_eq!(m.cache().free_blocks(), m.cache().n_blocks(), "{name}: blocks leaked after the run");
            // The cache contents are right: the committed tokens' last logits equal a fresh
            // prefill's (self-speculation overwrote its first layers' slots; verification must
            // have rewritten them).
            let seq = m.add_sequence();
            let (head, last) = committed.split_at(committed.len() - 1);
            let mut rng_tokens = head.to_vec();
            m.step(&[SeqInput { seq, tokens: &rng_tokens, logits: Logits::Last }]).unwrap();
            let stepped = m.step(&[SeqInput { seq, tokens: last, logits: Logits::Last }]).unwrap().remove(0);
            m.free_sequence(seq).unwrap();
            rng_tokens.extend_from_slice(last);
            let mut fresh = load(&src);
            let fseq = fresh.add_sequence();
            let want = fresh.step(&[SeqInput { seq: fseq, tokens: &rng_tokens, logits: Logits::Last }]).unwrap();
            let err: f64 = stepped.iter().zip(&want[0]).map(|(a, b)| f64::from(a - b).abs()).fold(0.0, f64::max);
            assert!(err < 1e-3, "{name}: logits after the run differ from a fresh model's by {err}");
        }
    }
}

/// Replays a speculative run's steps, but in a fresh model with the whole committed sequence:
/// the speculative run's own cache must give those same logits. (Covered above; here the greedy
/// tokens themselves.)
#[test]
fn greedy_speculative_decoding_equals_target_only_greedy() {
    let src = random_model(9, 64, 3.0);
    let mut m = load(&src);
    let config = m.config.clone();
    let options = GenerateOptions { max_tokens: 48, sampling: SamplingParams::greedy(), stop: vec![] };
    let prompt: Vec<u32> = (0..12).map(|i| (i * 7 % 64) as u32).collect();
    let want = generate(&mut m, &prompt, &options, &mut |_| Ok(())).unwrap().tokens;
    let draft_src = random_model(98, 64, 3.0);
    let prefix = LayerPrefix { source: &src, layers: 1 };
    let mut drafts: Vec<Box<dyn DraftSource>> = vec![
        Box::new(DraftModel::new(load(&draft_src), &config, "random draft").unwrap()),
        Box::new(DraftModel::new(load(&prefix), &config, "first layer as a model").unwrap()),
        Box::new(SelfDraft::new(1, &config).unwrap()),
        Box::new(NgramDraft::new(3).unwrap()),
    ];
    for draft in drafts.iter_mut() {
        for policy in [KPolicy::fixed(4), KPolicy::adaptive(8)] {
            let g =
                generate_speculative(&mut m, draft.as_mut(), Box::new(Greedy), policy, &prompt, &options, &mut |_| {
                    Ok(())
                })
                .unwrap();
            assert_eq!(g.tokens, want, "{}", draft.name());
            assert!(g.steps < want.len(), "{}: {} steps for {} tokens", draft.name(), g.steps, want.len());
        }
    }
}

#[test]
fn bad_input_is_refused_or_clamped_and_said() {
    let src = random_model(10, VOCAB, 1.0);
    let mut m = load(&src);
    let config = m.config.clone();
    // Another vocabulary.
    let other = random_model(11, 16, 1.0);
    let err = DraftModel::new(load(&other), &config, "other").err().unwrap();
    assert!(matches!(err, SpecError::VocabMismatch { draft: 16, target: 8 }), "{err}");
    assert!(err.to_string().contains("tokenizer"), "{err}");
    // Layer counts and n-gram sizes.
    let err = SelfDraft::new(2, &config).err().unwrap();
    assert!(matches!(err, SpecError::DraftLayers { layers: 2, n_layers: 2 }), "{err}");
    assert!(matches!(SelfDraft::new(0, &config).err().unwrap(), SpecError::DraftLayers { .. }));
    assert!(matches!(NgramDraft::new(0).err().unwrap(), SpecError::Ngram(0)));
    // k beyond one verification step, then beyond the output left: clamped, said, still lossless.
    let options = GenerateOptions { max_tokens: 6, sampling: SamplingParams::greedy(), stop: vec![] };
    let want = generate(&mut m, &PROMPT, &options, &mut |_| Ok(())).unwrap().tokens;
    let mut draft = NgramDraft::new(2).unwrap();
    let g =
        generate_speculative(&mut m, &mut draft, Box::new(Greedy), KPolicy::fixed(40), &PROMPT, &options, &mut |_| {
            Ok(())
        })
        .unwrap();
    assert_eq!(g.tokens, want);
    assert_eq!(g.notes.len(), 2, "{:?}", g.notes);
    assert!(g.notes[0].contains("k 40") && g.notes[0].contains("using 15"), "{:?}", g.notes);
    assert!(g.notes[1].contains("using 5"), "{:?}", g.notes);
    // An over-long request is the generation loop's typed error.
    let long = GenerateOptions { max_tokens: 200, ..options };
    let err =
        generate_speculative(&mut m, &mut draft, Box::new(Greedy), KPolicy::fixed(2), &PROMPT, &long, &mut |_| Ok(()))
            .err()
            .unwrap();
    assert!(err.to_string().contains("--max-tokens"), "{err}");
}

#[test]
fn ngram_lookup_continues_the_latest_longest_match() {
    let d = NgramDraft::new(3).unwrap();
    // Suffix [7, 8] occurred at 1 and 5; the latest is followed by 1, 2.
    assert_eq!(d.lookup(&[0, 7, 8, 9, 4, 7, 8, 1, 2, 7, 8], 2), vec![1, 2]);
    // The longer suffix [2, 7, 8] wins over the latest [7, 8].
    assert_eq!(d.lookup(&[2, 7, 8, 5, 6, 7, 8, 3, 2, 7, 8], 4), vec![5, 6, 7, 8]);
    // At most what the context has after the match; nothing without a match.
    assert_eq!(d.lookup(&[1, 2, 3, 1], 5), vec![2, 3, 1]);
    assert!(d.lookup(&[1, 2, 3], 5).is_empty());
    assert!(d.lookup(&[4], 5).is_empty());
}

mod common;
use common::random_model::{device, MemSource};

/// A tokenizer GGUF: the 256 byte-level characters, `extra` merged tokens and two control tokens.
fn tokenizer_file(extra: &[&str]) -> kiln_runtime::model::tokenizer::Tokenizer {
    use common::gguf_writer::{GgufWriter, Value};
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    let mut tokens: Vec<String> = Vec::new();
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            next += 1;
            char::from_u32(next - 1).unwrap()
        };
        tokens.push(c.to_string());
    }
    tokens.extend(extra.iter().map(|s| s.to_string()));
    tokens.extend(["<|im_end|>", "<|endoftext|>"].map(String::from));
    let mut types = vec![1; 256 + extra.len()];
    types.extend([3, 3]);
    let refs: Vec<&str> = tokens.iter().map(String::as_str).collect();
    let w = GgufWriter::new()
        .meta("tokenizer.ggml.model", Value::str("gpt2"))
        .meta("tokenizer.ggml.pre", Value::str("smollm"))
        .meta("tokenizer.ggml.tokens", Value::strings(&refs))
        .meta("tokenizer.ggml.token_type", Value::i32s(&types))
        .meta("tokenizer.ggml.merges", Value::strings(&[]))
        .meta("tokenizer.ggml.bos_token_id", Value::U32(256 + extra.len() as u32 + 1))
        .meta("tokenizer.ggml.eos_token_id", Value::U32(256 + extra.len() as u32));
    let file = kiln_runtime::model::gguf::GgufFile::from_bytes("tok.gguf", w.write().bytes).unwrap();
    kiln_runtime::model::tokenizer::Tokenizer::from_gguf(&file).unwrap()
}

#[test]
fn a_draft_with_another_tokenizer_is_refused() {
    use kiln_runtime::speculative::draft::check_same_tokenizer;
    let target = tokenizer_file(&["Ġt", "Ġth"]);
    check_same_tokenizer(&target, &tokenizer_file(&["Ġt", "Ġth"])).unwrap();
    // Same size, one token spelled differently.
    let err = check_same_tokenizer(&target, &tokenizer_file(&["Ġt", "Ġta"])).err().unwrap();
    assert!(matches!(err, SpecError::TokenizerMismatch { .. }), "{err}");
    assert!(err.to_string().contains("token 257") && err.to_string().contains("Ġta"), "{err}");
    // Another size.
    let err = check_same_tokenizer(&target, &tokenizer_file(&["Ġt"])).err().unwrap();
    assert!(matches!(err, SpecError::VocabMismatch { draft: 259, target: 260 }), "{err}");
}
