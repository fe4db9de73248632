//! How long planning takes for a large cluster: 10,000 instances in 10 projects on
//! 100 members, 1% drifted (the budget is 100 ms), plus the same without drift
//! and the cost of the live-state digest alone. Fails when the process's peak
//! memory goes over 100 MB.

use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

#[path = "support/large_fleet.rs"]
mod large_fleet;
#[path = "support/peak.rs"]
mod peak;

fn bench(c: &mut Criterion) {
    let (desired, live) = large_fleet::build(10);
    let p = lxd_gitops::plan::plan(&desired, &live);
    assert_eq!(p.steps().count(), 100, "1% of 10,000 instances drifted");

    c.bench_function("plan 10k instances, 1% drift", |b| {
        b.iter(|| lxd_gitops::plan::plan(black_box(&desired), black_box(&live)))
    });
    c.bench_function("digest of 10k-instance live state", |b| {
        b.iter(|| lxd_gitops::plan::digest(black_box(&live.objects)))
    });
    // The fleet, its live state and every plan made from them.
    peak::check("planning 10k instances with 1% drift", 100.0);
    drop((desired, live));
    let (desired0, live0) = large_fleet::build(0);
    c.bench_function("plan 10k instances, no drift", |b| {
        b.iter(|| lxd_gitops::plan::plan(black_box(&desired0), black_box(&live0)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
