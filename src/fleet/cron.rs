//! Standard 5-field cron lines (`minute hour day-of-month month day-of-week`).
//!
//! Owns: parsing the cron lines operators write (as in crontab(5): day-of-week 0-7
//! with 0 and 7 for Sunday, names, ranges, steps, `@daily`-style macros, and the
//! rule that when both day fields are restricted a time matches either) into
//! something that yields the next tick. The `cron` crate wants 6 or 7 fields with
//! seconds and numbers Sunday 1, so lines are translated, never passed through.
//! Must not: read clocks (callers pass `after`).

use chrono::{DateTime, Utc};
use std::str::FromStr;

/// A parsed 5-field cron line.
#[derive(Debug, Clone)]
pub struct CronLine {
    text: String,
    /// One schedule, or two when both day fields are restricted (crontab ORs them).
    schedules: Vec<cron::Schedule>,
}

impl PartialEq for CronLine {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl CronLine {
    pub fn parse(line: &str) -> Result<CronLine, String> {
        let text = line.trim();
        let expanded = match text {
            "@yearly" | "@annually" => "0 0 1 1 *",
            "@monthly" => "0 0 1 * *",
            "@weekly" => "0 0 * * 0",
            "@daily" | "@midnight" => "0 0 * * *",
            "@hourly" => "0 * * * *",
            t if t.starts_with('@') => return Err(format!("unknown cron macro `{t}`")),
            t => t,
        };
        let fields: Vec<&str> = expanded.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "a cron line has 5 fields (minute hour day-of-month month day-of-week), this one has {}",
                fields.len()
            ));
        }
        let (min, hour, dom, mon, dow) = (fields[0], fields[1], fields[2], fields[3], fields[4]);
        let dow_names = translate_dow(dow)?;
        let build = |dom: &str, dow: &str| -> Result<cron::Schedule, String> {
            cron::Schedule::from_str(&format!("0 {min} {hour} {dom} {mon} {dow}"))
                .map_err(|e| format!("invalid cron line `{text}`: {e}"))
        };
        let schedules = if dom != "*" && dow != "*" {
            vec![build(dom, "*")?, build("*", &dow_names)?]
        } else {
            vec![build(dom, &dow_names)?]
        };
        Ok(CronLine { text: text.to_string(), schedules })
    }

    /// The first tick strictly after `after`.
    pub fn next_after(&self, after: &DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.schedules.iter().filter_map(|s| s.after(after).next()).min()
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

const DAY_NAMES: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];

/// Turns a crontab day-of-week field into a list of day names the `cron` crate reads.
fn translate_dow(field: &str) -> Result<String, String> {
    if field == "*" {
        return Ok("*".into());
    }
    let mut days = [false; 7];
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((r, s)) => (r, s.parse::<usize>().map_err(|_| format!("bad step `{s}` in day-of-week"))?),
            None => (item, 1),
        };
        if step == 0 {
            return Err("a step of 0 in day-of-week".into());
        }
        let (lo, hi) = if range == "*" {
            (0, 6)
        } else if let Some((a, b)) = range.split_once('-') {
            (day_number(a)?, day_number(b)?)
        } else {
            let d = day_number(range)?;
            (d, if item.contains('/') { 6 } else { d })
        };
        if lo > hi {
            return Err(format!("day-of-week range `{range}` runs backwards"));
        }
        for d in (lo..=hi).step_by(step) {
            days[d % 7] = true;
        }
    }
    let names: Vec<&str> = (0..7).filter(|d| days[*d]).map(|d| DAY_NAMES[d]).collect();
    Ok(names.join(","))
}

fn day_number(s: &str) -> Result<usize, String> {
    if let Ok(n) = s.parse::<usize>() {
        return if n <= 7 { Ok(n) } else { Err(format!("day-of-week `{n}` is out of range 0-7")) };
    }
    DAY_NAMES.iter().position(|d| d.eq_ignore_ascii_case(s)).ok_or_else(|| format!("`{s}` is not a day of the week"))
}

/// Parses durations such as `90s`, `30m`, `2h`, `1h30m`, `1d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("invalid duration `{s}`: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    #[test]
    fn five_fields_every_quarter_hour() {
        let c = CronLine::parse("*/15 * * * *").unwrap();
        assert_eq!(c.next_after(&at(2026, 11, 23, 10, 1)), Some(at(2026, 11, 23, 10, 15)));
    }

    #[test]
    fn sunday_is_zero_and_seven() {
        // 2026-11-23 is a Monday.
        let zero = CronLine::parse("0 3 * * 0").unwrap();
        let seven = CronLine::parse("0 3 * * 7").unwrap();
        let sun = CronLine::parse("0 3 * * sun").unwrap();
        let expect = Some(at(2026, 11, 29, 3, 0));
        assert_eq!(zero.next_after(&at(2026, 11, 23, 0, 0)), expect);
        assert_eq!(seven.next_after(&at(2026, 11, 23, 0, 0)), expect);
        assert_eq!(sun.next_after(&at(2026, 11, 23, 0, 0)), expect);
    }

    #[test]
    fn weekday_ranges_mean_monday_to_friday() {
        let c = CronLine::parse("0 9 * * 1-5").unwrap();
        // Saturday 2026-11-28 -> next Monday 2026-11-30.
        assert_eq!(c.next_after(&at(2026, 11, 28, 0, 0)), Some(at(2026, 11, 30, 9, 0)));
        assert_eq!(c.next_after(&at(2026, 11, 23, 8, 0)), Some(at(2026, 11, 23, 9, 0)));
    }

    #[test]
    fn both_day_fields_restricted_match_either() {
        // The 1st of the month OR any Sunday: from Mon 2026-11-23 the next is Sun 11-29.
        let c = CronLine::parse("0 0 1 * 0").unwrap();
        assert_eq!(c.next_after(&at(2026, 11, 23, 0, 0)), Some(at(2026, 11, 29, 0, 0)));
        assert_eq!(c.next_after(&at(2026, 11, 29, 1, 0)), Some(at(2026, 12, 1, 0, 0)));
    }

    #[test]
    fn macros_and_errors() {
        assert!(CronLine::parse("@daily").is_ok());
        assert!(CronLine::parse("@often").unwrap_err().contains("macro"));
        assert!(CronLine::parse("* * * *").unwrap_err().contains("5 fields"));
        assert!(CronLine::parse("61 * * * *").is_err());
        assert!(CronLine::parse("0 0 * * 8").unwrap_err().contains("out of range"));
        assert!(CronLine::parse("0 0 * * 5-1").unwrap_err().contains("backwards"));
        assert!(CronLine::parse("0 0 * * 1 2 3").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h30m").unwrap().as_secs(), 5400);
        assert!(parse_duration("soon").is_err());
    }
}
