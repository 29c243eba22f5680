//! Sampling: greedy is the argmax; top-k and top-p keep exactly the right set (computed here
//! independently by sorting); draws follow the kept distribution and are reproducible by seed.

use kiln_runtime::model::sampling::{argmax, candidates, SampleError, Sampler, SamplingParams};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn random_logits(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-4.0..4.0)).collect()
}

fn params(temperature: f64, top_k: usize, top_p: f64, seed: u64) -> SamplingParams {
    SamplingParams { temperature, top_k, top_p, seed }
}

/// Softmax at `t` in f64, indices sorted by probability (descending).
fn sorted_probs(logits: &[f32], t: f64) -> Vec<(u32, f64)> {
    let max = logits.iter().map(|&x| f64::from(x)).fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&x| ((f64::from(x) - max) / t).exp()).collect();
    let total: f64 = e.iter().sum();
    let mut p: Vec<(u32, f64)> = e.iter().enumerate().map(|(i, &v)| (i as u32, v / total)).collect();
    p.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap());
    p
}

#[test]
fn greedy_is_the_first_argmax() {
    let mut logits = random_logits(1, 1000);
    logits[321] = 9.0;
    logits[654] = 9.0;
    assert_eq!(argmax(&logits).unwrap(), 321);
    let mut s = Sampler::new(SamplingParams::greedy()).unwrap();
    assert_eq!(s.sample(&logits).unwrap(), 321);
}

#[test]
fn top_k_keeps_exactly_the_k_most_likely() {
    for seed in 0..20 {
        let logits = random_logits(seed, 500);
        let k = 1 + seed as usize * 7;
        let kept = candidates(&logits, &params(0.8, k, 1.0, 0)).unwrap();
        let want: Vec<u32> = sorted_probs(&logits, 0.8).iter().take(k).map(|p| p.0).collect();
        assert_eq!(kept.iter().map(|p| p.0).collect::<Vec<_>>(), want);
        let total: f64 = kept.iter().map(|p| p.1).sum();
        assert!((total - 1.0).abs() < 1e-12);
    }
}

#[test]
fn top_p_keeps_the_smallest_prefix_reaching_p() {
    for seed in 0..20 {
        let logits = random_logits(100 + seed, 300);
        let p = 0.05 + 0.045 * seed as f64;
        let kept = candidates(&logits, &params(1.3, 0, p, 0)).unwrap();
        let sorted = sorted_probs(&logits, 1.3);
        // The kept set reaches p, and without its last member it would not.
        let n = kept.len();
        let mass = |k: usize| sorted[..k].iter().map(|x| x.1).sum::<f64>();
        assert!(mass(n) >= p - 1e-12, "kept mass {} below p = {p}", mass(n));
        assert!(n == 1 || mass(n - 1) < p, "one fewer token already reaches p = {p}");
        assert_eq!(kept.iter().map(|x| x.0).collect::<Vec<_>>(), sorted[..n].iter().map(|x| x.0).collect::<Vec<_>>());
        // Renormalised: the kept probabilities keep their ratios.
        let ratio = kept[0].1 / sorted[0].1;
        for (k, s) in kept.iter().zip(&sorted) {
            assert!((k.1 / s.1 - ratio).abs() < 1e-9);
        }
    }
}

#[test]
fn top_k_then_top_p() {
    let logits = random_logits(7, 200);
    let kept = candidates(&logits, &params(1.0, 10, 0.5, 0)).unwrap();
    let sorted = sorted_probs(&logits, 1.0);
    let top10: f64 = sorted[..10].iter().map(|x| x.1).sum();
    let mut mass = 0.0;
    let mut n = 0;
    while mass < 0.5 {
        mass += sorted[n].1 / top10;
        n += 1;
    }
    assert_eq!(kept.len(), n);
    assert!(n <= 10);
}

#[test]
fn draws_follow_the_kept_distribution_and_repeat_by_seed() {
    let logits: Vec<f32> = vec![2.0, 1.0, 0.5, 0.0, -1.0, -3.0];
    let prm = params(1.0, 4, 1.0, 42);
    let kept = candidates(&logits, &prm).unwrap();
    let mut s = Sampler::new(prm).unwrap();
    let draws: Vec<u32> = (0..20_000).map(|_| s.sample(&logits).unwrap()).collect();
    for &(tok, p) in &kept {
        let freq = draws.iter().filter(|&&d| d == tok).count() as f64 / draws.len() as f64;
        // 20000 draws: the standard error of a frequency is at most 0.0036; 5 of them.
        assert!((freq - p).abs() < 0.018, "token {tok}: frequency {freq}, probability {p}");
    }
    assert!(draws.iter().all(|&d| d < 4), "a token outside the top 4 was drawn");
    let mut again = Sampler::new(prm).unwrap();
    let repeat: Vec<u32> = (0..20_000).map(|_| again.sample(&logits).unwrap()).collect();
    assert_eq!(draws, repeat, "same seed, same draws");
    let mut other = Sampler::new(params(1.0, 4, 1.0, 43)).unwrap();
    let differ: Vec<u32> = (0..200).map(|_| other.sample(&logits).unwrap()).collect();
    assert_ne!(&draws[..200], differ.as_slice(), "another seed, other draws");
}

#[test]
fn bad_parameters_and_logits_are_typed_errors() {
    assert!(matches!(Sampler::new(params(-1.0, 0, 1.0, 0)), Err(SampleError::BadParam(_))));
    assert!(matches!(Sampler::new(params(f64::NAN, 0, 1.0, 0)), Err(SampleError::BadParam(_))));
    assert!(matches!(Sampler::new(params(1.0, 0, 0.0, 0)), Err(SampleError::BadParam(_))));
    assert!(matches!(Sampler::new(params(1.0, 0, 1.5, 0)), Err(SampleError::BadParam(_))));
    let mut s = Sampler::new(params(1.0, 0, 1.0, 0)).unwrap();
    assert_eq!(s.sample(&[]).unwrap_err(), SampleError::Empty);
    assert!(matches!(s.sample(&[0.0, f32::NAN]), Err(SampleError::NonFinite { index: 1, .. })));
    assert!(matches!(argmax(&[f32::INFINITY]), Err(SampleError::NonFinite { index: 0, .. })));
}

#[test]
fn unfiltered_draws_follow_the_softmax() {
    let logits: Vec<f32> = vec![2.0, 1.0, 0.5, 0.0, -1.0, -3.0];
    let mut s = Sampler::new(params(0.7, 0, 1.0, 9)).unwrap();
    let draws: Vec<u32> = (0..20_000).map(|_| s.sample(&logits).unwrap()).collect();
    for (tok, p) in sorted_probs(&logits, 0.7) {
        let freq = draws.iter().filter(|&&d| d == tok).count() as f64 / draws.len() as f64;
        assert!((freq - p).abs() < 0.018, "token {tok}: frequency {freq}, probability {p}");
    }
}

#[test]
fn top_p_over_a_flat_vocabulary_of_smollm2_s_size() {
    // A flat distribution needs tens of thousands of tokens to reach p: the partial selection
    // must keep growing until it holds the nucleus, and still keep exactly the sorted prefix.
    let logits = random_logits(5, 49152).iter().map(|x| x / 4.0).collect::<Vec<f32>>();
    for p in [0.3, 0.9, 0.999] {
        let kept = candidates(&logits, &params(1.0, 0, p, 0)).unwrap();
        let sorted = sorted_probs(&logits, 1.0);
        let mut mass = 0.0;
        let n = sorted.iter().take_while(|x| {
            let before = mass;
            mass += x.1;
            before < p
        });
        let want: Vec<u32> = n.map(|x| x.0).collect();
        assert_eq!(kept.len(), want.len(), "p = {p}");
        assert_eq!(kept.iter().map(|x| x.0).collect::<Vec<_>>(), want);
    }
}
