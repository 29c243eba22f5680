//! The tuner on the real CPU device, kept tiny: a guided run over a small dequant GEMM measures
//! checked candidates, writes a database, and the runtime's lookup gets the tuned config back,
//! which then runs correctly on the device.

use kiln_autotune::database::Database;
use kiln_autotune::lookup::{ConfigProvider, ConfigSource};
use kiln_autotune::measure::Roofline;
use kiln_autotune::shapes::TuneShape;
use kiln_autotune::space::TargetLimits;
use kiln_autotune::strategy::Strategy;
use kiln_autotune::target::Fingerprint;
use kiln_autotune::tuner::{tune_shape, Event, TuneOptions};
use kiln_kernels::{check, Args, KernelId};
use kiln_runtime::cpu::{CpuDevice, CpuExecutor};
use kiln_runtime::measure::{CpuMeasure, MeasureOptions};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

#[test]
fn a_tuned_config_is_found_by_lookup_and_runs_correctly() {
    let device = CpuDevice::host(Some(2)).unwrap();
    let options =
        MeasureOptions { warmup: 1, min_repeats: 3, max_repeats: 7, target_seconds: 0.002, working_set_bytes: 4 << 20 };
    // A fixed roofline keeps the test short; the fraction is then only indicative.
    let measure = CpuMeasure::with_roofline(&device, options, Roofline { gbps: 10.0, gflops: 100.0 });
    let k = KernelId::DequantGemmW4;
    let shape = k.kernel().problem(&Args::parse("m=2,n=64,k=64,group=32,act=f32,quant=asym").unwrap()).unwrap();
    let target = TuneShape { kernel: k, shape: shape.clone() };
    let events = AtomicUsize::new(0);
    let on_event = |e: Event<'_>| {
        if let Event::Measured { .. } = e {
            events.fetch_add(1, Ordering::SeqCst);
        }
    };
    let tune = TuneOptions::new(Strategy::guided(), TargetLimits::cpu());
    let deadline = Instant::now() + Duration::from_secs(60);
    let r = tune_shape(&measure, &target, &tune, deadline, &on_event).unwrap();
    assert_eq!(events.load(Ordering::SeqCst), r.measured);
    assert!(r.measured >= 2 && r.measured * 4 <= r.legal, "{} of {}", r.measured, r.legal);
    assert_eq!(r.failed, 0, "{:?}", r.records.iter().filter(|x| x.status != "ok").collect::<Vec<_>>());
    assert!(r.default.is_ok());
    let (best, m) = r.best.clone().unwrap();
    assert!(m.median_s > 0.0 && m.median_s <= r.default.as_ref().unwrap().median_s);

    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("autotune-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("cpu.toml");
    let fingerprint = Fingerprint::host_cpu(device.threads());
    let mut db = Database::open_for(&path, &fingerprint, false).unwrap();
    db.merge(r.records.clone());
    db.save(&path).unwrap();

    // What the runtime does: open the host CPU's database and ask for configs.
    let provider = Database::open(&path).unwrap().provider(&path, &fingerprint, false).unwrap();
    let choice = provider.choose(k, &shape).unwrap();
    assert_eq!(choice.source, ConfigSource::Exact);
    assert_eq!(choice.config, best);
    // m = 1 falls in bucket 1, next to the tuned bucket 2.
    let near = provider.choose(k, &shape.clone().with("m", 1)).unwrap();
    assert!(matches!(near.source, ConfigSource::Nearest { .. } | ConfigSource::Default), "{:?}", near.source);
    let mut exec = CpuExecutor { device: &device };
    let report = check::check(k.kernel(), &shape, &choice.config, &mut exec, 11).unwrap();
    assert!(report.passed(), "{report}");
}
