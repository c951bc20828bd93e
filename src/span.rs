//! Spans of time as admins write them (`30m`, `1h30m`, `2h00m`, `14d`, `2w`, `6mo`,
//! `1y`): the one parser behind `check --max-age`, `forget --keep-within` and the
//! `keep_within` of snap.toml profiles.
//!
//! L0: parsing, printing and calendar arithmetic only; no I/O, no clock. A span is a
//! sequence of a number and a unit; units are `s`, `m`/`min`, `h`, `d`, `w`,
//! `mo`/`month(s)` and `y`/`year(s)` (and the spelled-out `second(s)`, `minute(s)`,
//! `hour(s)`, `day(s)`, `week(s)`). Anything else is an error, never a guess: `M`
//! (months or minutes?), `30x`, the empty string, a number without a unit, and a bare
//! `m` next to a day, week, month or year unit (`1y6m` is restic's "1 year 6 months"
//! but reads as minutes here: write `6mo` or `6min`).
//!
//! Years, months and days count on the calendar of the time they are taken from
//! ([`Span::before`]: `1y` before 2024-02-29 is 2023-02-28, a day across a DST change
//! is 23 or 25 hours); hours, minutes and seconds are exact durations.

use chrono::{DateTime, Days, Months, TimeZone};

/// The units a span accepts, as error messages and help texts name them.
pub const UNITS: &str = "s, m or min, h, d, w, mo or month(s), y or year(s)";

/// A span of time: calendar years, months and days, then exact seconds.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(try_from = "String")]
pub struct Span {
    /// Calendar years.
    pub years: u32,
    /// Calendar months.
    pub months: u32,
    /// Calendar days (a week is seven).
    pub days: u32,
    /// Exact seconds (hours, minutes and seconds).
    pub seconds: u64,
}

/// What a unit adds to a span.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Unit {
    Years,
    Months,
    Days(u32),
    Seconds(u64),
}

/// The unit spelled `u`; `None` if there is none. A bare `m` is minutes.
fn unit(u: &str) -> Option<Unit> {
    Some(match u {
        "s" | "sec" | "secs" | "second" | "seconds" => Unit::Seconds(1),
        "m" | "min" | "mins" | "minute" | "minutes" => Unit::Seconds(60),
        "h" | "hour" | "hours" => Unit::Seconds(3600),
        "d" | "day" | "days" => Unit::Days(1),
        "w" | "week" | "weeks" => Unit::Days(7),
        "mo" | "month" | "months" => Unit::Months,
        "y" | "year" | "years" => Unit::Years,
        _ => return None,
    })
}

impl std::str::FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Span, String> {
        let bad = |why: String| {
            format!("invalid span {s:?}: {why}; write a number and a unit, combined like 1h30m, with the units {UNITS}")
        };
        // Split into (number, unit) pairs first: whether a bare `m` is ambiguous
        // depends on its neighbours.
        let mut parts = Vec::new();
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(bad("expected a number".into()));
            }
            let n: u64 = rest[..digits]
                .parse()
                .map_err(|_| bad("number too large".into()))?;
            rest = &rest[digits..];
            let len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let u = &rest[..len];
            rest = &rest[len..];
            if u.is_empty() {
                return Err(bad(format!("{n} has no unit")));
            }
            parts.push((n, u));
        }
        if parts.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let calendar = |i: usize| {
            parts
                .get(i)
                .and_then(|(_, u)| unit(u))
                .is_some_and(|u| !matches!(u, Unit::Seconds(_)))
        };
        let mut span = Span::default();
        let overflow = || bad("too long".into());
        for (i, &(n, u)) in parts.iter().enumerate() {
            if u == "m" && (calendar(i + 1) || i.checked_sub(1).is_some_and(calendar)) {
                return Err(bad(format!(
                    "`{n}m` beside a calendar unit is ambiguous: write {n}mo for months or {n}min for minutes"
                )));
            }
            let n32 = || u32::try_from(n).map_err(|_| overflow());
            match unit(u) {
                None if u == "M" => {
                    return Err(bad(format!(
                        "`M` is ambiguous: write {n}mo for months or {n}min for minutes"
                    )))
                }
                None => return Err(bad(format!("unknown unit {u:?}"))),
                Some(Unit::Years) => {
                    span.years = span.years.checked_add(n32()?).ok_or_else(overflow)?;
                }
                Some(Unit::Months) => {
                    span.months = span.months.checked_add(n32()?).ok_or_else(overflow)?;
                }
                Some(Unit::Days(k)) => {
                    let d = n32()?.checked_mul(k).ok_or_else(overflow)?;
                    span.days = span.days.checked_add(d).ok_or_else(overflow)?;
                }
                Some(Unit::Seconds(k)) => {
                    let secs = n.checked_mul(k).ok_or_else(overflow)?;
                    span.seconds = span.seconds.checked_add(secs).ok_or_else(overflow)?;
                }
            }
        }
        if span == Span::default() {
            return Err(bad("it is zero".into()));
        }
        Ok(span)
    }
}

impl TryFrom<String> for Span {
    type Error = String;

    fn try_from(s: String) -> Result<Span, String> {
        s.parse()
    }
}

impl std::fmt::Display for Span {
    /// In units [`FromStr`](std::str::FromStr) reads back: `1y6mo`, `14d`, `1h30min`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.seconds;
        for (n, unit) in [
            (u64::from(self.years), "y"),
            (u64::from(self.months), "mo"),
            (u64::from(self.days), "d"),
            (s / 3600, "h"),
            (s / 60 % 60, "min"),
            (s % 60, "s"),
        ] {
            if n > 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl Span {
    /// The time `self` before `t`, years, months and days on `t`'s calendar; `None`
    /// if out of range.
    pub fn before<Tz: TimeZone>(&self, t: &DateTime<Tz>) -> Option<DateTime<Tz>> {
        let months = self.years.checked_mul(12)?.checked_add(self.months)?;
        let secs = i64::try_from(self.seconds).ok()?;
        t.clone()
            .checked_sub_months(Months::new(months))?
            .checked_sub_days(Days::new(self.days.into()))?
            .checked_sub_signed(chrono::TimeDelta::try_seconds(secs)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;
    use proptest::prelude::*;

    fn span(s: &str) -> Span {
        s.parse().unwrap()
    }

    #[test]
    fn units_read_as_admins_write_them() {
        let secs = |n| Span {
            seconds: n,
            ..Default::default()
        };
        assert_eq!(span("30m"), secs(1800));
        assert_eq!(span("30min"), secs(1800));
        assert_eq!(span("1h30m"), secs(5400));
        // What `check` prints as an age.
        assert_eq!(span("2h00m"), secs(7200));
        assert_eq!(span("90s"), secs(90));
        assert_eq!(span("2hours15minutes"), secs(8100));
        assert_eq!(
            span("1d12h30m"),
            Span {
                days: 1,
                ..secs(45000)
            }
        );
        assert_eq!(
            span("2w"),
            Span {
                days: 14,
                ..Default::default()
            }
        );
        assert_eq!(
            span("1y6mo"),
            Span {
                years: 1,
                months: 6,
                ..Default::default()
            }
        );
        assert_eq!(span("3months"), span("3mo"));
        assert_eq!(span("2years"), span("2y"));
    }

    #[test]
    fn unknown_and_ambiguous_units_are_errors_naming_the_value_and_the_units() {
        for bad in [
            "",
            "30x",
            "30M",
            "M",
            "2",
            "d",
            "-1d",
            "1.5d",
            "1d ",
            " 1d",
            "0m",
            "1y6m",
            "6m7d",
            "1d30m",
            "2w5m",
            "30mo5",
            "99999999999999999999s",
            "5000000000d",
        ] {
            let e = bad.parse::<Span>().expect_err(bad);
            assert!(e.contains(&format!("{bad:?}")), "{e}");
            assert!(e.contains(UNITS), "{e}");
        }
        let e = "30M".parse::<Span>().unwrap_err();
        assert!(e.contains("30mo for months or 30min for minutes"), "{e}");
        let e = "1y6m".parse::<Span>().unwrap_err();
        assert!(e.contains("6mo for months or 6min for minutes"), "{e}");
    }

    #[test]
    fn calendar_units_count_on_the_calendar_and_time_units_exactly() {
        // Leap day minus a year: the month has no 29th, so its last day.
        let leap = Berlin.with_ymd_and_hms(2024, 2, 29, 12, 0, 0).unwrap();
        assert_eq!(
            span("1y").before(&leap).unwrap(),
            Berlin.with_ymd_and_hms(2023, 2, 28, 12, 0, 0).unwrap()
        );
        // A day across the spring DST change is 23 hours, not 24; 24h are 24 hours.
        let after = Berlin.with_ymd_and_hms(2025, 3, 30, 12, 0, 0).unwrap();
        assert_eq!((after - span("1d").before(&after).unwrap()).num_hours(), 23);
        assert_eq!(
            (after - span("24h").before(&after).unwrap()).num_hours(),
            24
        );
        assert_eq!(
            (after - span("1h30m").before(&after).unwrap()).num_minutes(),
            90
        );
    }

    proptest! {
        #[test]
        fn display_reads_back(
            years in 0u32..100, months in 0u32..100, days in 0u32..1000, seconds in 0u64..10_000_000
        ) {
            let s = Span { years, months, days, seconds };
            prop_assume!(s != Span::default());
            prop_assert_eq!(s.to_string().parse::<Span>(), Ok(s));
        }
    }
}
