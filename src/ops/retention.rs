//! Retention policies: which snapshots `forget` keeps, with restic's semantics.
//!
//! Snapshots are taken newest first. `--keep-last N` keeps the N newest. Each calendar
//! rule (`--keep-hourly N` ... `--keep-yearly N`) keeps the newest snapshot of each of
//! the N most recent periods that have one; periods are taken in the local time zone,
//! weeks are ISO weeks (2024-12-30 is in week 1 of 2025), and an hour repeated when
//! daylight saving time ends counts as two hours. While a calendar rule has periods
//! left, it keeps the oldest snapshot too (restic 0.16's rule: the longest history the
//! counts allow). `--keep-within SPAN` keeps every snapshot newer than SPAN ([`Span`])
//! before the newest one not dated after now (a host whose clock runs fast does not
//! move the span), its years, months and days counted on the calendar (`1y` before
//! 2024-02-29 is 2023-02-28). `--keep-tag T` keeps every snapshot tagged T, and
//! `--keep-tag a,b` every one tagged both. A snapshot is kept when any rule keeps it,
//! and the reasons are reported.
//!
//! [`plan`] applies a policy to a repository's snapshots as `forget` does: grouped by
//! host and sources by default (as restic groups by host and paths), or by any of
//! host, sources and tags ([`GroupBy`]), each group judged alone. Two consequences
//! surprise users, so a removed snapshot's [`Decision::notes`] say why it went: with
//! `daily` (or any calendar rule) only the newest snapshot of each day counts, so
//! earlier runs of the same day are removed; and a profile whose sources change starts
//! a new group, whose counts start again while the old group keeps its own.

use chrono::{DateTime, Datelike, Offset, TimeZone, Timelike, Utc};

use std::collections::BTreeMap;

use crate::error::{Refusal, Result, Usage};
use crate::format::id::SnapshotId;
use crate::format::snapshot::Snapshot;
use crate::span::Span;

/// What to keep.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Policy {
    /// The newest N.
    pub last: u32,
    /// The newest of each of the last N hours that have one.
    pub hourly: u32,
    /// ... days.
    pub daily: u32,
    /// ... ISO weeks.
    pub weekly: u32,
    /// ... months.
    pub monthly: u32,
    /// ... years.
    pub yearly: u32,
    /// Everything newer than this before the newest snapshot not after now.
    pub within: Option<Span>,
    /// Everything with one of these tags (`a,b`: both).
    pub tags: Vec<String>,
}

impl Policy {
    /// Whether the policy keeps nothing at all (which `forget` refuses).
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// The verdict on one snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    /// Kept or removed.
    pub keep: bool,
    /// Why it is kept (`daily snapshot`, `tagged monthly`, ...); empty when removed.
    pub reasons: Vec<String>,
    /// Why a removed snapshot is not kept by the calendar and `last` rules (`a newer
    /// snapshot of the same day is kept`, `beyond the 7 days kept`); empty when kept.
    pub notes: Vec<String>,
}

/// A period key: the rule's bucket of a time.
type Period = (i32, u32, u32, u32, i32);

const RULES: [&str; 5] = ["hourly", "daily", "weekly", "monthly", "yearly"];
/// The period of each rule, as the notes name it.
const PERIODS: [&str; 5] = ["hour", "day", "week", "month", "year"];

fn period<Tz: TimeZone>(rule: usize, t: &DateTime<Tz>) -> Period {
    match rule {
        // The offset tells the repeated hour of a DST change from the first one.
        0 => (
            t.year(),
            t.ordinal(),
            t.hour(),
            0,
            t.offset().fix().local_minus_utc(),
        ),
        1 => (t.year(), t.ordinal(), 0, 0, 0),
        2 => (t.iso_week().year(), t.iso_week().week(), 0, 0, 0),
        3 => (t.year(), t.month(), 0, 0, 0),
        _ => (t.year(), 0, 0, 0, 0),
    }
}

/// Decides which of the snapshots (time, tags), given in any order, `policy` keeps,
/// with calendar periods in `tz`, `now` being now. One decision per input, in input
/// order.
pub fn apply<Tz: TimeZone>(
    snaps: &[(DateTime<Utc>, Vec<String>)],
    policy: &Policy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Result<Vec<Decision>> {
    if policy.is_empty() {
        return Err(Refusal::NoPolicy.into());
    }
    let mut order: Vec<usize> = (0..snaps.len()).collect();
    // Newest first; equal times keep input order.
    order.sort_by(|&a, &b| snaps[b].0.cmp(&snaps[a].0));
    let mut out = vec![
        Decision {
            keep: false,
            reasons: Vec::new(),
            notes: Vec::new(),
        };
        snaps.len()
    ];
    let counts = [
        policy.hourly,
        policy.daily,
        policy.weekly,
        policy.monthly,
        policy.yearly,
    ];
    let mut left = counts;
    let mut last: [Option<Period>; 5] = [None; 5];
    let newest = order
        .iter()
        .map(|&i| snaps[i].0)
        .find(|t| *t <= now)
        .map(|t| t.with_timezone(tz));
    let cutoff = match (&policy.within, &newest) {
        (Some(span), Some(n)) => Some(span.before(n).ok_or(Usage::KeepWithin)?),
        // Every snapshot is dated ahead: none is older than the span (as in restic).
        (Some(_), None) => Some(DateTime::<Utc>::MIN_UTC.with_timezone(tz)),
        _ => None,
    };
    for (rank, &i) in order.iter().enumerate() {
        let oldest = rank + 1 == order.len();
        let (time, tags) = &snaps[i];
        let local = time.with_timezone(tz);
        let Decision { reasons, notes, .. } = &mut out[i];
        if (rank as u64) < u64::from(policy.last) {
            reasons.push("last snapshot".to_string());
        } else if policy.last > 0 {
            notes.push(format!("beyond the last {}", policy.last));
        }
        for (r, rule) in RULES.iter().enumerate() {
            if counts[r] == 0 {
                continue;
            }
            let p = period(r, &local);
            let again = last[r] == Some(p);
            if again && !(oldest && left[r] > 0) {
                notes.push(format!(
                    "a newer snapshot of the same {} is kept",
                    PERIODS[r]
                ));
            } else if left[r] == 0 {
                notes.push(format!("beyond the {} {}s kept", counts[r], PERIODS[r]));
            } else {
                last[r] = Some(p);
                left[r] -= 1;
                let which = if again { "oldest " } else { "" };
                reasons.push(format!("{which}{rule} snapshot"));
            }
        }
        if let Some(c) = &cutoff {
            if local > *c {
                reasons.push("within span".to_string());
            }
        }
        for t in &policy.tags {
            if t.split(',').all(|one| tags.iter().any(|have| have == one)) {
                reasons.push(format!("tagged {t}"));
            }
        }
        out[i].keep = !reasons.is_empty();
        if out[i].keep {
            out[i].notes.clear();
        }
    }
    Ok(out)
}

/// What snapshots are grouped by before a policy judges each group alone: restic's
/// `--group-by host,paths,tags`. The default is host and sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupBy {
    /// By host.
    pub host: bool,
    /// By sources ([`Snapshot::group_key`]).
    pub paths: bool,
    /// By the set of tags.
    pub tags: bool,
}

impl Default for GroupBy {
    fn default() -> Self {
        GroupBy {
            host: true,
            paths: true,
            tags: false,
        }
    }
}

impl std::str::FromStr for GroupBy {
    type Err = Usage;

    /// `host,paths`, `host`, `tags`, ...; an empty string puts every snapshot in one
    /// group.
    fn from_str(s: &str) -> std::result::Result<Self, Usage> {
        let mut g = GroupBy {
            host: false,
            paths: false,
            tags: false,
        };
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match part {
                "host" => g.host = true,
                "paths" | "path" | "sources" => g.paths = true,
                "tags" | "tag" => g.tags = true,
                other => {
                    return Err(Usage::GroupBy {
                        given: other.to_string(),
                    })
                }
            }
        }
        Ok(g)
    }
}

/// What a group's snapshots share: each part `None` when not grouped by it.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct GroupKey {
    /// Their host.
    pub host: Option<String>,
    /// Their sources ([`Snapshot::group_key`]).
    pub sources: Option<Vec<String>>,
    /// Their tags, sorted.
    pub tags: Option<Vec<String>>,
}

impl GroupKey {
    fn of(s: &Snapshot, by: GroupBy) -> GroupKey {
        let mut tags = s.tags.clone();
        tags.sort_unstable();
        tags.dedup();
        GroupKey {
            host: by.host.then(|| s.host.clone()),
            sources: by.paths.then(|| Snapshot::group_key(&s.sources)),
            tags: by.tags.then_some(tags),
        }
    }
}

/// Snapshots that share a [`GroupKey`], judged together.
#[derive(Clone, Debug)]
pub struct Group {
    /// What they share.
    pub key: GroupKey,
    /// Each snapshot with its verdict, oldest first.
    pub snapshots: Vec<(SnapshotId, Snapshot, Decision)>,
}

/// What `forget` with a policy keeps and removes, and why: computed before anything
/// changes, so that a dry run prints the plan and a real run carries it out.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    /// The groups, by host and sources.
    pub groups: Vec<Group>,
}

impl Plan {
    /// The snapshots the plan removes, group by group, newest first.
    pub fn remove(&self) -> Vec<SnapshotId> {
        self.groups
            .iter()
            .flat_map(|g| g.snapshots.iter().rev())
            .filter(|(_, _, d)| !d.keep)
            .map(|(id, _, _)| *id)
            .collect()
    }
}

/// Applies `policy` to `snapshots` (the caller chooses them, as by a
/// [`SnapshotFilter`](crate::ops::select::SnapshotFilter)), each group that `by` makes
/// alone, with calendar periods in `tz`, `now` being now.
pub fn plan<Tz: TimeZone>(
    snapshots: Vec<(SnapshotId, Snapshot)>,
    policy: &Policy,
    by: GroupBy,
    tz: &Tz,
    now: DateTime<Utc>,
) -> Result<Plan> {
    let mut groups: BTreeMap<GroupKey, Vec<(SnapshotId, Snapshot)>> = BTreeMap::new();
    for (id, s) in snapshots {
        groups
            .entry(GroupKey::of(&s, by))
            .or_default()
            .push((id, s));
    }
    let mut plan = Plan::default();
    for (key, snaps) in groups {
        let input: Vec<_> = snaps
            .iter()
            .map(|(_, s)| (s.time, s.tags.clone()))
            .collect();
        let decisions = apply(&input, policy, tz, now)?;
        plan.groups.push(Group {
            key,
            snapshots: snaps
                .into_iter()
                .zip(decisions)
                .map(|((id, s), d)| (id, s, d))
                .collect(),
        });
    }
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono_tz::Europe::Berlin;

    fn utc(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    fn kept(times: &[&str], p: &Policy) -> Vec<bool> {
        let snaps: Vec<_> = times.iter().map(|t| (utc(t), Vec::new())).collect();
        apply(&snaps, p, &Berlin, Utc::now())
            .unwrap()
            .into_iter()
            .map(|d| d.keep)
            .collect()
    }

    #[test]
    fn an_empty_policy_is_refused() {
        assert!(apply(
            &[(utc("2026-01-01T00:00:00Z"), vec![])],
            &Policy::default(),
            &Utc,
            Utc::now()
        )
        .is_err());
    }

    #[test]
    fn last_and_daily_keep_the_newest_of_each_day() {
        let times = [
            "2026-11-20T08:00:00Z",
            "2026-11-20T20:00:00Z",
            "2026-11-21T01:00:00Z",
            "2026-11-21T22:00:00Z",
            "2026-11-19T23:30:00Z", // 00:30 on the 20th in Berlin
        ];
        // Two days, both used: the oldest is not kept as such.
        let daily = Policy {
            daily: 2,
            ..Default::default()
        };
        // 21st: 22:00Z is 23:00 local, still the 21st; 19th 23:30Z is the 20th locally.
        assert_eq!(kept(&times, &daily), [false, true, false, true, false]);
        let p = Policy {
            last: 2,
            daily: 1,
            ..Default::default()
        };
        assert_eq!(kept(&times, &p), [false, false, true, true, false]);
        let snaps: Vec<_> = times.iter().map(|t| (utc(t), Vec::new())).collect();
        let d = apply(&snaps, &p, &Berlin, Utc::now()).unwrap();
        assert_eq!(d[3].reasons, ["last snapshot", "daily snapshot"]);
        assert_eq!(d[2].reasons, ["last snapshot"]);
    }

    #[test]
    fn the_repeated_hour_at_the_end_of_dst_is_two_hours() {
        // 2025-10-26 in Berlin: 02:30 CEST is 00:30Z, 02:30 CET is 01:30Z.
        let times = ["2025-10-26T00:30:00Z", "2025-10-26T01:30:00Z"];
        let hourly = Policy {
            hourly: 5,
            ..Default::default()
        };
        assert_eq!(kept(&times, &hourly), [true, true]);
        let daily = Policy {
            daily: 1,
            ..Default::default()
        };
        assert_eq!(kept(&times, &daily), [false, true], "one 25-hour day");
    }

    #[test]
    fn iso_weeks_cross_the_year_boundary() {
        // Mon 2024-12-30 and Thu 2025-01-02 are both in ISO week 2025-W01;
        // Sun 2024-12-29 is in 2024-W52.
        let times = [
            "2024-12-29T12:00:00Z",
            "2024-12-30T12:00:00Z",
            "2025-01-02T12:00:00Z",
        ];
        let weekly = Policy {
            weekly: 5,
            ..Default::default()
        };
        assert_eq!(kept(&times, &weekly), [true, false, true]);
        let yearly = Policy {
            yearly: 2,
            ..Default::default()
        };
        assert_eq!(kept(&times, &yearly), [false, true, true]);
        // New Year's Eve 23:30Z is already next year in Berlin.
        let eve = ["2025-12-31T23:30:00Z", "2025-12-31T12:00:00Z"];
        assert_eq!(kept(&eve, &yearly), [true, true]);
        let monthly = Policy {
            monthly: 5,
            ..Default::default()
        };
        assert_eq!(kept(&eve, &monthly), [true, true]);
    }

    #[test]
    fn counts_limit_periods_not_snapshots() {
        // Leap day and its neighbours: three months, two snapshots in February.
        let times = [
            "2024-01-31T12:00:00Z",
            "2024-02-01T12:00:00Z",
            "2024-02-29T12:00:00Z",
            "2024-03-01T12:00:00Z",
        ];
        let monthly = Policy {
            monthly: 2,
            ..Default::default()
        };
        assert_eq!(kept(&times, &monthly), [false, false, true, true]);
    }

    #[test]
    fn within_and_tags() {
        let times = [
            ("2024-02-29T12:00:00Z", vec![]),
            ("2023-02-28T13:00:00Z", vec![]),
            ("2023-02-28T11:00:00Z", vec!["keep".to_string()]),
            ("2023-02-27T11:00:00Z", vec![]),
        ];
        let snaps: Vec<_> = times.iter().map(|(t, g)| (utc(t), g.clone())).collect();
        let p = Policy {
            within: Some("1y".parse().unwrap()),
            tags: vec!["keep".into()],
            ..Default::default()
        };
        let d = apply(&snaps, &p, &Berlin, Utc::now()).unwrap();
        let keep: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(keep, [true, true, true, false]);
        assert_eq!(d[2].reasons, ["tagged keep"]);
    }

    /// restic 0.16's rule: a calendar rule with periods left keeps the oldest too.
    #[test]
    fn a_rule_with_periods_left_keeps_the_oldest() {
        let times = [
            "2024-02-01T10:00:00Z",
            "2024-02-20T10:00:00Z",
            "2024-03-01T10:00:00Z",
        ];
        let monthly = |n| Policy {
            monthly: n,
            ..Default::default()
        };
        assert_eq!(kept(&times, &monthly(12)), [true, true, true]);
        assert_eq!(kept(&times, &monthly(2)), [false, true, true]);
        let snaps: Vec<_> = times.iter().map(|t| (utc(t), Vec::new())).collect();
        let d = apply(&snaps, &monthly(12), &Berlin, Utc::now()).unwrap();
        assert_eq!(d[0].reasons, ["oldest monthly snapshot"]);
    }

    /// A snapshot dated ahead of now (a host whose clock runs fast) does not move the
    /// span of `within`: as in restic, the newest one not after now sets it.
    #[test]
    fn within_counts_from_the_newest_snapshot_not_ahead_of_now() {
        let now = utc("2024-04-01T00:00:00Z");
        let times = [
            "2024-03-01T10:00:00Z",
            "2024-03-20T10:00:00Z",
            "2031-01-01T00:00:00Z",
        ];
        let snaps: Vec<_> = times.iter().map(|t| (utc(t), Vec::new())).collect();
        let p = Policy {
            within: Some("30d".parse().unwrap()),
            ..Default::default()
        };
        let keep = |now| -> Vec<bool> {
            apply(&snaps, &p, &Berlin, now)
                .unwrap()
                .iter()
                .map(|d| d.keep)
                .collect()
        };
        assert_eq!(keep(now), [true, true, true]);
        // Every one ahead: none is older than the span.
        assert_eq!(keep(utc("2020-01-01T00:00:00Z")), [true, true, true]);
        assert_eq!(keep(utc("2032-01-01T00:00:00Z")), [false, false, true]);
    }

    /// `--keep-tag a,b` keeps what has both tags, as the `--tag a,b` filter selects.
    #[test]
    fn a_tag_list_keeps_what_has_every_tag() {
        let snaps = [
            (
                utc("2024-03-01T10:00:00Z"),
                vec!["a".to_string(), "b".to_string()],
            ),
            (utc("2024-03-02T10:00:00Z"), vec!["a".to_string()]),
            (utc("2024-03-03T10:00:00Z"), vec![]),
        ];
        let p = Policy {
            last: 1,
            tags: vec!["b,a".into()],
            ..Default::default()
        };
        let d = apply(&snaps, &p, &Berlin, Utc::now()).unwrap();
        let keep: Vec<bool> = d.iter().map(|d| d.keep).collect();
        assert_eq!(keep, [true, false, true]);
        assert_eq!(d[0].reasons, ["tagged b,a"]);
    }
}
