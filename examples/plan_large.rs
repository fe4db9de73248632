//! Plans the large synthetic cluster of `benches/support/large_fleet.rs` and prints
//! timings (min and median of several runs, as the machine may be busy), for a
//! quick check and for measuring peak memory with `/usr/bin/time -v`:
//!
//!     cargo build --release --example plan_large
//!     /usr/bin/time -v target/release/examples/plan_large 1

#[path = "../benches/support/large_fleet.rs"]
mod large_fleet;

use std::time::{Duration, Instant};

fn stats(mut runs: Vec<Duration>) -> String {
    runs.sort();
    format!("min {:?}, median {:?}", runs[0], runs[runs.len() / 2])
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(15);
    let t = Instant::now();
    let (desired, live) = large_fleet::build(10);
    println!("built the fleet in {:?}", t.elapsed());
    if n == 0 {
        // Baseline for memory measurements: the fleet alone, no plan.
        std::hint::black_box((&desired, &live));
        return;
    }
    let mut plans = Vec::new();
    let mut digests = Vec::new();
    let mut last = None;
    for _ in 0..n {
        let t = Instant::now();
        let plan = lxd_gitops::plan::plan(&desired, &live);
        plans.push(t.elapsed());
        last = Some(plan);
        let t = Instant::now();
        std::hint::black_box(lxd_gitops::plan::digest(&live.objects));
        digests.push(t.elapsed());
    }
    let plan = last.expect("at least one run");
    let c = plan.counts();
    println!(
        "plan: {} ({} steps: {} update, {} other; {} warnings)",
        stats(plans),
        plan.steps().count(),
        c.update,
        c.other,
        plan.warnings.len()
    );
    println!("of which the live-state digest alone: {}", stats(digests));
}
