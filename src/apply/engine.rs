//! Running steps in phase order with bounded concurrency and dependencies.
//!
//! Owns: the walk over phases (strictly one after another), running the steps of
//! one phase concurrently up to a limit, never starting a step before the steps
//! it depends on have succeeded, skipping (not failing) a step whose dependency
//! failed or was skipped, and timing each step. Independent work goes on after a
//! failure. Must not: know LXD or what a step does (the runner does).

use futures_util::stream::{FuturesUnordered, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::future::Future;
use std::time::{Duration, Instant};

/// One unit of work for the engine.
#[derive(Debug, Clone)]
pub struct Node<S> {
    pub id: String,
    pub depends_on: Vec<String>,
    /// When set, the step is not run and reported as skipped with this reason.
    pub hold: Option<String>,
    pub work: S,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "status", content = "detail")]
pub enum Outcome {
    Ok,
    Failed(String),
    Skipped(String),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StepResult {
    pub id: String,
    #[serde(flatten)]
    pub outcome: Outcome,
    pub duration_ms: u64,
}

/// Runs `phases` in order. `limit(phase index)` bounds concurrency per phase.
/// `on_done` sees each result as it happens (progress output).
pub async fn run<S, F, Fut>(
    phases: Vec<Vec<Node<S>>>,
    limit: impl Fn(usize) -> usize,
    runner: F,
    mut on_done: impl FnMut(&StepResult),
) -> Vec<StepResult>
where
    F: Fn(S) -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    let mut results: Vec<StepResult> = Vec::new();
    let mut ok: HashSet<String> = HashSet::new();
    let mut not_ok: BTreeMap<String, ()> = BTreeMap::new();
    for (pi, phase) in phases.into_iter().enumerate() {
        let limit = limit(pi).max(1);
        let mut waiting: Vec<Node<S>> = phase;
        let mut running = FuturesUnordered::new();
        let mut in_flight: HashSet<String> = HashSet::new();
        loop {
            // Settle everything that can be decided without running.
            let mut progressed = true;
            while progressed {
                progressed = false;
                let mut i = 0;
                while i < waiting.len() {
                    let n = &waiting[i];
                    let failed_dep = n.depends_on.iter().find(|d| not_ok.contains_key(*d)).cloned();
                    let reason = match (&n.hold, failed_dep) {
                        (Some(h), _) => Some(h.clone()),
                        (None, Some(d)) => Some(format!("skipped: step `{d}` it depends on did not succeed")),
                        _ => None,
                    };
                    if let Some(reason) = reason {
                        let n = waiting.remove(i);
                        let r = StepResult { id: n.id.clone(), outcome: Outcome::Skipped(reason), duration_ms: 0 };
                        on_done(&r);
                        not_ok.insert(n.id, ());
                        results.push(r);
                        progressed = true;
                    } else {
                        i += 1;
                    }
                }
            }
            // Start what is ready, up to the limit, in plan order.
            let mut i = 0;
            while running.len() < limit && i < waiting.len() {
                // A dependency is met when it succeeded, or when this run never had it.
                let ready = waiting[i]
                    .depends_on
                    .iter()
                    .all(|d| ok.contains(d) || !(in_flight.contains(d) || waiting.iter().any(|n| &n.id == d)));
                if ready {
                    let n = waiting.remove(i);
                    let id = n.id.clone();
                    in_flight.insert(id.clone());
                    let fut = runner(n.work);
                    running.push(async move {
                        let start = Instant::now();
                        let r = fut.await;
                        (id, r, start.elapsed())
                    });
                } else {
                    i += 1;
                }
            }
            if running.is_empty() {
                if waiting.is_empty() {
                    break;
                }
                // Dependencies that can never be met inside this phase: report, don't hang.
                for n in waiting.drain(..) {
                    let r = StepResult {
                        id: n.id.clone(),
                        outcome: Outcome::Skipped("skipped: its dependencies cannot run".into()),
                        duration_ms: 0,
                    };
                    on_done(&r);
                    not_ok.insert(n.id, ());
                    results.push(r);
                }
                break;
            }
            if let Some((id, r, elapsed)) = running.next().await {
                in_flight.remove(&id);
                let outcome = match r {
                    Ok(()) => {
                        ok.insert(id.clone());
                        Outcome::Ok
                    }
                    Err(e) => {
                        not_ok.insert(id.clone(), ());
                        Outcome::Failed(e)
                    }
                };
                let r = StepResult { id, outcome, duration_ms: duration_ms(elapsed) };
                on_done(&r);
                results.push(r);
            }
        }
    }
    results
}

fn duration_ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn node(id: &str, deps: &[&str]) -> Node<String> {
        Node { id: id.into(), depends_on: deps.iter().map(|s| s.to_string()).collect(), hold: None, work: id.into() }
    }

    #[tokio::test]
    async fn phases_run_in_order_and_failures_skip_dependents_only() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let l = log.clone();
        let phases =
            vec![vec![node("a", &[]), node("b", &[])], vec![node("c", &["a"]), node("d", &["b"]), node("e", &["d"])]];
        let results = run(
            phases,
            |_| 4,
            move |w: String| {
                let l = l.clone();
                async move {
                    l.lock().unwrap().push(w.clone());
                    if w == "b" {
                        Err("boom".to_string())
                    } else {
                        Ok(())
                    }
                }
            },
            |_| {},
        )
        .await;
        let by: BTreeMap<_, _> = results.iter().map(|r| (r.id.as_str(), r.outcome.clone())).collect();
        assert_eq!(by["a"], Outcome::Ok);
        assert_eq!(by["b"], Outcome::Failed("boom".into()));
        assert_eq!(by["c"], Outcome::Ok);
        assert!(matches!(&by["d"], Outcome::Skipped(r) if r.contains("`b`")));
        assert!(matches!(&by["e"], Outcome::Skipped(r) if r.contains("`d`")));
        let ran = log.lock().unwrap().clone();
        assert!(!ran.contains(&"d".to_string()) && !ran.contains(&"e".to_string()));
        // Phase 1 finished before phase 2 started.
        let pos = |x: &str| ran.iter().position(|y| y == x).unwrap();
        assert!(pos("a") < pos("c") && pos("b") < pos("c"));
    }

    #[tokio::test]
    async fn within_a_phase_dependencies_wait_and_limits_hold() {
        let active = Arc::new(Mutex::new((0usize, 0usize)));
        let order = Arc::new(Mutex::new(Vec::new()));
        let (a2, o2) = (active.clone(), order.clone());
        let phases = vec![vec![node("x", &[]), node("y", &["x"]), node("z", &[]), node("w", &[])]];
        let results = run(
            phases,
            |_| 2,
            move |w: String| {
                let (a, o) = (a2.clone(), o2.clone());
                async move {
                    {
                        let mut g = a.lock().unwrap();
                        g.0 += 1;
                        g.1 = g.1.max(g.0);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    o.lock().unwrap().push(w);
                    a.lock().unwrap().0 -= 1;
                    Ok(())
                }
            },
            |_| {},
        )
        .await;
        assert!(results.iter().all(|r| r.outcome == Outcome::Ok));
        assert_eq!(active.lock().unwrap().1, 2, "at most 2 at once, and 2 were used");
        let o = order.lock().unwrap().clone();
        assert!(o.iter().position(|s| s == "x") < o.iter().position(|s| s == "y"));
    }

    #[tokio::test]
    async fn held_steps_are_skipped_with_their_reason() {
        let mut n = node("r", &[]);
        n.hold = Some("restart needed, policy.allow_restart is false".into());
        let results = run(vec![vec![n, node("s", &["r"])]], |_| 1, |_w: String| async { Ok(()) }, |_| {}).await;
        assert_eq!(results[0].outcome, Outcome::Skipped("restart needed, policy.allow_restart is false".into()));
        assert!(matches!(&results[1].outcome, Outcome::Skipped(_)));
    }
}
