//! Peak memory of the bench process, for the memory budgets (< 100 MB).

/// The process's resident-set high-water mark (`VmHWM`), in MB.
pub fn peak_rss_mb() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status");
    kb / 1024.0
}

/// Prints the peak and fails the bench when it is over `budget_mb`.
pub fn check(what: &str, budget_mb: f64) {
    let mb = peak_rss_mb();
    println!("peak memory, {what}: {mb:.0} MB (budget < {budget_mb:.0} MB)");
    assert!(mb < budget_mb, "{what}: peak memory {mb:.0} MB is over the {budget_mb:.0} MB budget");
}
