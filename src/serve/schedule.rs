//! Time rules of a cluster: its drift schedule and its sync windows.
//!
//! Owns: turning a cluster's `Policy` (5-field cron line for drift, allow/deny
//! windows of cron + duration) into values that answer "may we apply at t?", "when
//! may we next apply?" and "when is the next drift check?". Must not: read the
//! clock (every function takes `now`), sleep, or know what a run does.
//!
//! A window is active at `t` when its schedule's last tick `s` satisfies
//! `s <= t < s + duration`. Deny windows win over allow windows; with only deny
//! windows every other time is allowed; with any allow window, only times inside
//! one are. Windows are in UTC.

use crate::fleet::cron::{parse_duration, CronLine};
use crate::model::{Policy, SyncWindow, WindowKind};
use chrono::{DateTime, Duration, Utc};

/// One parsed sync window.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub kind: WindowKind,
    pub schedule: CronLine,
    pub duration: Duration,
}

impl Window {
    pub fn parse(w: &SyncWindow) -> Result<Window, String> {
        let schedule = CronLine::parse(&w.schedule)?;
        let d = parse_duration(&w.duration)?;
        if d.is_zero() {
            return Err(format!("sync window duration `{}` is zero", w.duration));
        }
        let duration =
            Duration::from_std(d).map_err(|_| format!("sync window duration `{}` is too long", w.duration))?;
        Ok(Window { kind: w.kind, schedule, duration })
    }

    /// The start of the opening that covers `t`, if any.
    pub fn active_start(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // The first tick strictly after t - duration is the only candidate: an
        // earlier one ended by t, a later one has not started.
        let tick = self.schedule.next_after(&(t - self.duration))?;
        (tick <= t).then_some(tick)
    }

    pub fn is_active(&self, t: DateTime<Utc>) -> bool {
        self.active_start(t).is_some()
    }
}

/// All sync windows of a cluster. Empty means "always allowed".
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncWindows {
    windows: Vec<Window>,
}

/// How far ahead `next_allowed` looks before saying "never".
const HORIZON_DAYS: i64 = 400;

impl SyncWindows {
    pub fn new(windows: Vec<Window>) -> Self {
        SyncWindows { windows }
    }

    pub fn parse(windows: &[SyncWindow]) -> Result<SyncWindows, String> {
        windows
            .iter()
            .enumerate()
            .map(|(i, w)| Window::parse(w).map_err(|e| format!("sync_windows[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()
            .map(SyncWindows::new)
    }

    pub fn is_empty(&self) -> bool {
        self.windows.is_empty()
    }

    /// Whether applies are allowed at `now`.
    pub fn allows(&self, now: DateTime<Utc>) -> bool {
        if self.windows.iter().any(|w| w.kind == WindowKind::Deny && w.is_active(now)) {
            return false;
        }
        let mut any_allow = false;
        for w in self.windows.iter().filter(|w| w.kind == WindowKind::Allow) {
            if w.is_active(now) {
                return true;
            }
            any_allow = true;
        }
        !any_allow
    }

    /// The first time at or after `now` when applies are allowed (None: not within
    /// the horizon, e.g. a deny window that never closes).
    pub fn next_allowed(&self, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        if self.allows(now) {
            return Some(now);
        }
        let horizon = now + Duration::days(HORIZON_DAYS);
        let mut t = now;
        // Whether applies are allowed changes only where a window opens or closes:
        // walk those instants in order.
        for _ in 0..100_000 {
            let next = self
                .windows
                .iter()
                .flat_map(|w| {
                    let opens = w.schedule.next_after(&t);
                    let closes = w.active_start(t).map(|s| s + w.duration).filter(|end| *end > t);
                    [opens, closes]
                })
                .flatten()
                .min()?;
            if next > horizon {
                return None;
            }
            if self.allows(next) {
                return Some(next);
            }
            t = next;
        }
        None
    }
}

/// The next drift check after `now`.
pub fn next_drift_tick(line: &CronLine, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    line.next_after(&now)
}

/// What the loop needs to know about one cluster's timing.
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterSchedule {
    pub name: String,
    pub drift: Option<CronLine>,
    pub windows: SyncWindows,
}

impl ClusterSchedule {
    /// A cluster with no drift schedule and no windows.
    pub fn unscheduled(name: impl Into<String>) -> Self {
        ClusterSchedule { name: name.into(), drift: None, windows: SyncWindows::default() }
    }

    /// From the cluster's policy in the fleet (already validated by the loader, so
    /// errors here mean the loader and this module disagree).
    pub fn from_policy(name: impl Into<String>, policy: &Policy) -> Result<Self, String> {
        let drift = policy
            .drift_schedule
            .as_deref()
            .map(CronLine::parse)
            .transpose()
            .map_err(|e| format!("drift_schedule: {e}"))?;
        Ok(ClusterSchedule { name: name.into(), drift, windows: SyncWindows::parse(&policy.sync_windows)? })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(d: u32, h: u32, m: u32) -> DateTime<Utc> {
        // November 2026: the 23rd is a Monday, the 28th a Saturday.
        Utc.with_ymd_and_hms(2026, 11, d, h, m, 0).unwrap()
    }

    fn win(kind: WindowKind, schedule: &str, duration: &str) -> SyncWindow {
        SyncWindow { kind, schedule: schedule.into(), duration: duration.into(), description: None }
    }

    #[test]
    fn no_windows_always_allow() {
        let w = SyncWindows::default();
        assert!(w.allows(at(23, 3, 0)));
        assert_eq!(w.next_allowed(at(23, 3, 0)), Some(at(23, 3, 0)));
    }

    #[test]
    fn allow_window_bounds_are_half_open() {
        // Weekdays 22:00 for 2h.
        let w = SyncWindows::parse(&[win(WindowKind::Allow, "0 22 * * 1-5", "2h")]).unwrap();
        assert!(!w.allows(at(23, 21, 59)));
        assert!(w.allows(at(23, 22, 0)));
        assert!(w.allows(at(23, 23, 59)));
        // Past midnight, still inside Monday's window.
        assert!(w.allows(at(24, 0, 0) - Duration::seconds(1)));
        assert!(!w.allows(at(24, 0, 0)));
        // Saturday 22:00 is not a weekday tick.
        assert!(!w.allows(at(28, 22, 30)));
    }

    #[test]
    fn only_deny_windows_allow_everything_else() {
        let w = SyncWindows::parse(&[win(WindowKind::Deny, "0 9 * * 1-5", "8h")]).unwrap();
        assert!(w.allows(at(23, 8, 59)));
        assert!(!w.allows(at(23, 9, 0)));
        assert!(!w.allows(at(23, 16, 59)));
        assert!(w.allows(at(23, 17, 0)));
        assert!(w.allows(at(28, 12, 0)), "weekends are not denied");
    }

    #[test]
    fn deny_wins_over_allow() {
        let w = SyncWindows::parse(&[
            win(WindowKind::Allow, "0 0 * * *", "24h"),
            win(WindowKind::Deny, "0 12 * * *", "1h"),
        ])
        .unwrap();
        assert!(w.allows(at(23, 11, 0)));
        assert!(!w.allows(at(23, 12, 30)));
        assert!(w.allows(at(23, 13, 0)));
    }

    #[test]
    fn next_allowed_finds_openings_and_closings() {
        let allow = SyncWindows::parse(&[win(WindowKind::Allow, "0 22 * * 1-5", "2h")]).unwrap();
        assert_eq!(allow.next_allowed(at(23, 10, 0)), Some(at(23, 22, 0)));
        // From Saturday the next weekday window is Monday night.
        assert_eq!(allow.next_allowed(at(28, 23, 0)), Some(at(30, 22, 0)));

        let deny = SyncWindows::parse(&[win(WindowKind::Deny, "0 9 * * 1-5", "8h")]).unwrap();
        assert_eq!(deny.next_allowed(at(23, 10, 0)), Some(at(23, 17, 0)));

        // Overlapping deny ticks chain: 09:00 and 10:00 for 2h each → free at 12:00.
        let chained = SyncWindows::parse(&[win(WindowKind::Deny, "0 9,10 * * *", "2h")]).unwrap();
        assert_eq!(chained.next_allowed(at(23, 9, 30)), Some(at(23, 12, 0)));

        // Allowed inside the allow window once the deny one inside it closes.
        let both = SyncWindows::parse(&[
            win(WindowKind::Allow, "0 20 * * *", "4h"),
            win(WindowKind::Deny, "0 20 * * *", "1h"),
        ])
        .unwrap();
        assert_eq!(both.next_allowed(at(23, 12, 0)), Some(at(23, 21, 0)));
    }

    #[test]
    fn never_allowed_is_none() {
        let w = SyncWindows::parse(&[win(WindowKind::Deny, "* * * * *", "1h")]).unwrap();
        assert!(!w.allows(at(23, 10, 0)));
        assert_eq!(w.next_allowed(at(23, 10, 0)), None);
    }

    #[test]
    fn bad_windows_are_reported_with_their_index() {
        let err =
            SyncWindows::parse(&[win(WindowKind::Allow, "0 22 * * *", "2h"), win(WindowKind::Allow, "0 22 * *", "2h")])
                .unwrap_err();
        assert!(err.starts_with("sync_windows[1]"), "{err}");
        assert!(SyncWindows::parse(&[win(WindowKind::Allow, "0 22 * * *", "0s")]).is_err());
    }

    #[test]
    fn drift_ticks_and_policy() {
        let line = CronLine::parse("*/30 * * * *").unwrap();
        assert_eq!(next_drift_tick(&line, at(23, 10, 0)), Some(at(23, 10, 30)));
        let policy = Policy {
            drift_schedule: Some("0 * * * *".into()),
            sync_windows: vec![win(WindowKind::Deny, "0 9 * * *", "1h")],
            ..Policy::default()
        };
        let s = ClusterSchedule::from_policy("lab", &policy).unwrap();
        assert_eq!(s.drift.as_ref().and_then(|l| next_drift_tick(l, at(23, 10, 5))), Some(at(23, 11, 0)));
        assert!(!s.windows.allows(at(23, 9, 30)));
    }
}
