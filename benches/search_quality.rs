//! Search quality of the guided strategy on the real CPU (issue 6, item 5): per shape of
//! `autotune/bench/search_quality.toml`, tune exhaustively and guided, then measure the two
//! winners again side by side (interleaved rounds, so background load hits both alike) and report
//! the guided winner's time over the exhaustive winner's, and the fraction of legal candidates the
//! guided search measured. Criterion: ratio ≤ 1.05 and fraction ≤ 0.25.
//!
//! Run: `flock /tmp/kiln-bench.lock cargo bench --bench search_quality [-- SHAPES.toml]`.

use kiln_autotune::measure::Measure;
use kiln_autotune::shapes;
use kiln_autotune::space::TargetLimits;
use kiln_autotune::strategy::{GuidedOptions, Strategy};
use kiln_autotune::tuner::{tune_shape, TuneOptions};
use kiln_runtime::cpu::CpuDevice;
use kiln_runtime::measure::{CpuMeasure, MeasureOptions};
use std::time::{Duration, Instant};

/// Interleaved rounds of the side-by-side comparison.
const ROUNDS: usize = 7;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file = std::env::args()
        .skip(1)
        .find(|a| a.ends_with(".toml"))
        .unwrap_or_else(|| format!("{}/autotune/bench/search_quality.toml", env!("CARGO_MANIFEST_DIR")));
    let set = shapes::from_file(std::path::Path::new(&file))?;
    let device = CpuDevice::host(None)?;
    let measure = CpuMeasure::new(&device, MeasureOptions::default())?;
    let r = measure.roofline();
    println!("roofline {:.1} GB/s, {:.1} GFLOP/s, {} threads", r.gbps, r.gflops, device.threads());
    let far = || Instant::now() + Duration::from_secs(3600);
    let exhaustive = TuneOptions::new(Strategy::Exhaustive, TargetLimits::cpu());
    // Never stop early on the roofline: the comparison is about the search itself.
    let guided = TuneOptions::new(
        Strategy::Guided(GuidedOptions { stop_at_roofline: f64::INFINITY, ..GuidedOptions::default() }),
        TargetLimits::cpu(),
    );
    let mut met = true;
    println!(
        "{:24} {:62} {:>5} {:>7} {:>5} {:>9} {:>9} {:>6} {:>6}",
        "kernel", "shape", "legal", "guided", "frac", "ex µs", "guided µs", "ratio", "s ex/gd"
    );
    for s in &set {
        let t0 = Instant::now();
        let e = tune_shape(&measure, s, &exhaustive, far(), &|_| {})?;
        let t1 = Instant::now();
        let g = tune_shape(&measure, s, &guided, far(), &|_| {})?;
        let t2 = Instant::now();
        let (Some((ec, _)), Some((gc, _))) = (&e.best, &g.best) else {
            println!("{} {}: no correct candidate", s.kernel, s.shape);
            met = false;
            continue;
        };
        let (mut te, mut tg) = (Vec::new(), Vec::new());
        let pe = measure.prepare(s.kernel, &e.shape, ec)?;
        let pg = measure.prepare(s.kernel, &g.shape, gc)?;
        for _ in 0..ROUNDS {
            te.push(measure.measure(&pe)?.median_s);
            tg.push(measure.measure(&pg)?.median_s);
        }
        te.sort_by(f64::total_cmp);
        tg.sort_by(f64::total_cmp);
        let (te, tg) = (te[ROUNDS / 2], tg[ROUNDS / 2]);
        let ratio = if ec == gc { 1.0 } else { tg / te };
        let frac = g.measured as f64 / g.legal as f64;
        met &= ratio <= 1.05 && frac <= 0.25;
        println!(
            "{:24} {:62} {:5} {:7} {:5.2} {:9.1} {:9.1} {:6.3} {:3.0}/{:<3.0}\n{:24} exhaustive {ec}\n{:24} guided     {gc}",
            s.kernel.name(),
            s.shape.to_string(),
            g.legal,
            g.measured,
            frac,
            te * 1e6,
            tg * 1e6,
            ratio,
            (t1 - t0).as_secs_f64(),
            (t2 - t1).as_secs_f64(),
            "",
            ""
        );
    }
    println!(
        "criterion (guided within 5% of exhaustive, measuring at most 25%): {}",
        if met { "met" } else { "NOT met" }
    );
    Ok(())
}
