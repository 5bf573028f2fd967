//! Five-field cron schedules (`minute hour day-of-month month day-of-week`, UTC) for the backup timer.

use chrono::{DateTime, Datelike, Duration, Timelike, Utc};

/// A parsed cron expression: for each field, the set of values it matches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CronSchedule {
    minutes: Vec<u32>,
    hours: Vec<u32>,
    days: Vec<u32>,
    months: Vec<u32>,
    weekdays: Vec<u32>,
    days_restricted: bool,
    weekdays_restricted: bool,
}

impl CronSchedule {
    /// Parses `*`, `*/n`, `a`, `a-b`, `a-b/n` and comma lists in each of the five fields.
    pub fn parse(expr: &str) -> Result<CronSchedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "{expr:?} must have five fields: minute hour day-of-month month day-of-week"
            ));
        }
        let field = |i: usize, name: &str, lo: u32, hi: u32| {
            parse_field(fields[i], lo, hi).map_err(|e| format!("{name} field {:?}: {e}", fields[i]))
        };
        let mut weekdays = field(4, "day-of-week", 0, 7)?;
        // Both 0 and 7 mean Sunday.
        if weekdays.contains(&7) {
            weekdays.retain(|d| *d != 7);
            if !weekdays.contains(&0) {
                weekdays.insert(0, 0);
            }
        }
        Ok(CronSchedule {
            minutes: field(0, "minute", 0, 59)?,
            hours: field(1, "hour", 0, 23)?,
            days: field(2, "day-of-month", 1, 31)?,
            months: field(3, "month", 1, 12)?,
            weekdays,
            days_restricted: fields[2] != "*",
            weekdays_restricted: fields[4] != "*",
        })
    }

    fn matches(&self, t: &DateTime<Utc>) -> bool {
        let day_ok = self.days.contains(&t.day());
        let wd_ok = self.weekdays.contains(&t.weekday().num_days_from_sunday());
        // Cron's rule: when both day fields are restricted, either may match.
        let date_ok = match (self.days_restricted, self.weekdays_restricted) {
            (true, true) => day_ok || wd_ok,
            _ => day_ok && wd_ok,
        };
        date_ok
            && self.months.contains(&t.month())
            && self.hours.contains(&t.hour())
            && self.minutes.contains(&t.minute())
    }

    /// The first matching minute strictly after `after`, searching at most about four years ahead.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let mut t = after.with_second(0)?.with_nanosecond(0)? + Duration::minutes(1);
        for _ in 0..(4 * 366 * 24 * 60) {
            if self.matches(&t) {
                return Some(t);
            }
            t += Duration::minutes(1);
        }
        None
    }
}

fn parse_field(text: &str, lo: u32, hi: u32) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => (r, s.parse::<u32>().map_err(|_| format!("bad step {s:?}"))?),
            None => (part, 1),
        };
        if step == 0 {
            return Err("step must be at least 1".into());
        }
        let (a, b) = if range == "*" {
            (lo, hi)
        } else if let Some((a, b)) = range.split_once('-') {
            (num(a)?, num(b)?)
        } else {
            let v = num(range)?;
            (v, if part.contains('/') { hi } else { v })
        };
        if a < lo || b > hi || a > b {
            return Err(format!("values must lie in {lo}..={hi}"));
        }
        out.extend((a..=b).step_by(step as usize));
    }
    out.sort_unstable();
    out.dedup();
    Ok(out)
}

fn num(s: &str) -> Result<u32, String> {
    s.parse::<u32>()
        .map_err(|_| format!("{s:?} is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn every_six_hours() {
        let c = CronSchedule::parse("0 */6 * * *").unwrap();
        let t = Utc.with_ymd_and_hms(2025, 12, 13, 6, 0, 0).unwrap();
        assert_eq!(
            c.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2025, 12, 13, 12, 0, 0).unwrap()
        );
        let t = Utc.with_ymd_and_hms(2025, 12, 13, 23, 59, 30).unwrap();
        assert_eq!(
            c.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2025, 12, 14, 0, 0, 0).unwrap()
        );
    }

    #[test]
    fn rejects_nonsense() {
        for bad in [
            "",
            "* * * *",
            "61 * * * *",
            "*/0 * * * *",
            "a * * * *",
            "5-1 * * * *",
        ] {
            assert!(CronSchedule::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sunday_as_seven() {
        let c = CronSchedule::parse("30 2 * * 7").unwrap();
        // 2025-12-14 is a Sunday.
        let t = Utc.with_ymd_and_hms(2025, 12, 13, 0, 0, 0).unwrap();
        assert_eq!(
            c.next_after(t).unwrap(),
            Utc.with_ymd_and_hms(2025, 12, 14, 2, 30, 0).unwrap()
        );
    }
}
