//! Schedules: cron expressions (5 or 6 fields, `L`, `W`, `#`, `@daily`-style
//! aliases) and `@every <duration>`, evaluated in an IANA time zone.
//!
//! DST rules, which the tests pin down:
//! - a local time that does not exist on the spring-forward day (02:30 in Berlin)
//!   fires once, at the first valid instant after the gap (03:00);
//! - a local time that exists twice on the fall-back day fires once, at its first
//!   occurrence; occurrences are strictly increasing, so nothing fires twice.

use crate::duration::DurationSpec;
use crate::error::ValidationError;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex, Weak};

/// Why a schedule expression was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("invalid @every interval {expr:?}: {reason}")]
    Every { expr: String, reason: String },
}

/// A parsed schedule. Keeps the text it was written as, for display and storage.
#[derive(Clone)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

#[derive(Clone)]
enum Kind {
    /// Shared by every schedule of the same text (see [`shared_cron`]).
    Cron(Arc<croner::Cron>),
    Every(std::time::Duration),
}

/// A parsed cron expression is about 400 bytes, and with many jobs most
/// share a handful of expressions (`0 3 * * *`): every schedule of the same
/// text holds one parsed copy, found here while any schedule holds it. This
/// is what keeps 100,000 jobs' schedules small (docs/benchmarks.md).
fn shared_cron(
    text: &str,
    parse: impl FnOnce() -> Result<croner::Cron, ScheduleError>,
) -> Result<Arc<croner::Cron>, ScheduleError> {
    struct Parsed {
        table: HashMap<Box<str>, Weak<croner::Cron>>,
        /// Dead entries are dropped whenever the table has doubled since.
        prune_at: usize,
    }
    static PARSED: LazyLock<Mutex<Parsed>> = LazyLock::new(|| {
        Mutex::new(Parsed {
            table: HashMap::new(),
            prune_at: 64,
        })
    });
    let mut guard = PARSED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let Parsed { table, prune_at } = &mut *guard;
    if let Some(cron) = table.get(text).and_then(Weak::upgrade) {
        return Ok(cron);
    }
    let cron = Arc::new(parse()?);
    table.insert(text.into(), Arc::downgrade(&cron));
    if table.len() >= *prune_at {
        table.retain(|_, w| w.strong_count() > 0);
        *prune_at = (table.len() * 2).max(64);
    }
    Ok(cron)
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Schedule").field(&self.text).finish()
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

/// The smallest `@every` interval accepted.
const MIN_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

impl Schedule {
    pub fn parse(expr: &str) -> Result<Self, ScheduleError> {
        let text = expr.trim().to_owned();
        if let Some(rest) = text.strip_prefix("@every") {
            let rest = rest.trim();
            let d = DurationSpec::parse(rest)
                .map_err(|e| ScheduleError::Every {
                    expr: text.clone(),
                    reason: e.message,
                })?
                .get();
            if d < MIN_EVERY {
                return Err(ScheduleError::Every {
                    expr: text,
                    reason: "the interval must be at least 1s".into(),
                });
            }
            return Ok(Self {
                text,
                kind: Kind::Every(d),
            });
        }
        if text.starts_with('@') {
            const ALIASES: [&str; 6] = [
                "@yearly",
                "@annually",
                "@monthly",
                "@weekly",
                "@daily",
                "@hourly",
            ];
            if !ALIASES.iter().any(|a| a.eq_ignore_ascii_case(&text)) {
                return Err(ScheduleError::Cron {
                    expr: text,
                    reason: "unknown alias (supported: @hourly, @daily, @weekly, @monthly, @yearly, @annually, @every <duration>)".into(),
                });
            }
        }
        let fields = text.split_whitespace().count();
        if !text.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(ScheduleError::Cron {
                expr: text,
                reason: format!("expected 5 or 6 fields, found {fields}"),
            });
        }
        if let Some(reason) = misplaced_special(&text) {
            return Err(ScheduleError::Cron { expr: text, reason });
        }
        let cron = shared_cron(&text, || {
            croner::Cron::new(&text)
                .with_seconds_optional()
                .parse()
                .map_err(|e| ScheduleError::Cron {
                    expr: text.clone(),
                    reason: out_of_range_field(&text).unwrap_or_else(|| e.to_string()),
                })
        })?;
        Ok(Self {
            text,
            kind: Kind::Cron(cron),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The first occurrence strictly after `after`, or `None` if the expression
    /// never matches again (e.g. 30 February).
    pub fn next_after(&self, after: DateTime<Utc>, tz: &TimeZone) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(d) => next_every(after, *d),
            Kind::Cron(cron) => next_cron(cron, after, tz.0),
        }
    }

    /// Up to `n` occurrences after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, tz: &TimeZone, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t, tz) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }
}

/// `L`, `W` and `#` mean something only for days; in a time field the parser
/// accepts them and the expression then never fires, which says nothing useful.
fn misplaced_special(expr: &str) -> Option<String> {
    if expr.starts_with('@') {
        return None;
    }
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let time_fields: &[&str] = if fields.len() == 6 {
        &["second", "minute", "hour"]
    } else {
        &["minute", "hour"]
    };
    fields.iter().zip(time_fields).find_map(|(field, name)| {
        field.contains(['L', 'l', 'W', 'w', '#']).then(|| {
            format!("{name} field {field:?}: L, W and # are allowed only in the day-of-month and day-of-week fields")
        })
    })
}

/// Names the first numeric field outside its range, for a clearer message than
/// the parser's ("Number out of bounds").
fn out_of_range_field(expr: &str) -> Option<String> {
    let fields: Vec<&str> = expr.split_whitespace().collect();
    let names: &[(&str, u32, u32)] = if fields.len() == 6 {
        &[
            ("second", 0, 59),
            ("minute", 0, 59),
            ("hour", 0, 23),
            ("day of month", 1, 31),
            ("month", 1, 12),
            ("day of week", 0, 7),
        ]
    } else {
        &[
            ("minute", 0, 59),
            ("hour", 0, 23),
            ("day of month", 1, 31),
            ("month", 1, 12),
            ("day of week", 0, 7),
        ]
    };
    for (field, (name, lo, hi)) in fields.iter().zip(names) {
        for part in field.split(',') {
            // `range/step` and `day#nth`: only the range (or day) is bounded here.
            let range = part.split(['/', '#']).next().unwrap_or("");
            for n in range
                .split('-')
                .filter_map(|t| t.trim_end_matches(['L', 'W']).parse::<u32>().ok())
            {
                if n < *lo || n > *hi {
                    return Some(format!("{name} field {field:?} is out of range {lo}-{hi}"));
                }
            }
        }
    }
    None
}

/// `@every` intervals are anchored at the Unix epoch, so they land on the same
/// instants across restarts and replicas (`@every 1m` fires at :00 seconds).
fn next_every(after: DateTime<Utc>, d: std::time::Duration) -> Option<DateTime<Utc>> {
    let period = i64::try_from(d.as_millis()).ok()?;
    let ms = after.timestamp_millis();
    let next = (ms.div_euclid(period) + 1).checked_mul(period)?;
    DateTime::from_timestamp_millis(next)
}

fn next_cron(
    cron: &croner::Cron,
    after: DateTime<Utc>,
    tz: chrono_tz::Tz,
) -> Option<DateTime<Utc>> {
    // croner resolves an ambiguous local time to its first instant, which can lie
    // before `after` when `after` is inside the repeated hour; step past those so
    // occurrences are strictly increasing. Bounded: a year has few ambiguous slots.
    let mut from = after.with_timezone(&tz);
    for _ in 0..10_000 {
        let next = cron.find_next_occurrence(&from, false).ok()?;
        let utc = next.with_timezone(&Utc);
        if utc > after {
            return Some(utc);
        }
        from = next;
    }
    None
}

impl TryFrom<String> for Schedule {
    type Error = ScheduleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<Schedule> for String {
    fn from(s: Schedule) -> String {
        s.text
    }
}
impl Serialize for Schedule {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}
impl<'de> Deserialize<'de> for Schedule {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}
impl utoipa::PartialSchema for Schedule {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "Cron expression with 5 or 6 fields (seconds first), L, W, #, @hourly/@daily/@weekly/@monthly/@yearly, or @every <duration>",
            ))
            .examples(["*/5 * * * *"])
            .into()
    }
}
impl utoipa::ToSchema for Schedule {}

/// An IANA time zone such as `Europe/Berlin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeZone(pub chrono_tz::Tz);

impl TimeZone {
    pub const UTC: TimeZone = TimeZone(chrono_tz::UTC);

    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        chrono_tz::Tz::from_str(s.trim()).map(Self).map_err(|_| {
            ValidationError::new(
                "",
                format!(
                    "unknown time zone {s:?} (expected an IANA name such as \"Europe/Berlin\")"
                ),
            )
        })
    }
    pub fn name(&self) -> &'static str {
        self.0.name()
    }
}

impl Default for TimeZone {
    fn default() -> Self {
        Self::UTC
    }
}
impl fmt::Display for TimeZone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.name())
    }
}
impl Serialize for TimeZone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.name())
    }
}
impl<'de> Deserialize<'de> for TimeZone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(|e| serde::de::Error::custom(e.message))
    }
}
impl utoipa::PartialSchema for TimeZone {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some("IANA time zone name"))
            .examples(["Europe/Berlin"])
            .into()
    }
}
impl utoipa::ToSchema for TimeZone {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_of_the_same_text_share_one_parsed_expression() {
        let parsed = |s: &Schedule| match &s.kind {
            Kind::Cron(c) => c.clone(),
            Kind::Every(_) => unreachable!("a cron expression"),
        };
        let a = Schedule::parse("17 4 * * 2").unwrap();
        let b = Schedule::parse(" 17 4 * * 2 ").unwrap();
        let c = Schedule::parse("18 4 * * 2").unwrap();
        assert!(Arc::ptr_eq(&parsed(&a), &parsed(&b)));
        assert!(!Arc::ptr_eq(&parsed(&a), &parsed(&c)));
        // Shared, and still each its own schedule.
        let t = utc("2026-03-02T00:00:00Z");
        let tz = tz("UTC");
        assert_ne!(a.next_after(t, &tz), c.next_after(t, &tz));
        // A bad expression is still refused, also after a good one was shared.
        assert!(Schedule::parse("17 4 * * 9").is_err());
    }
    use chrono::TimeZone as _;

    fn tz(s: &str) -> TimeZone {
        TimeZone::parse(s).unwrap()
    }
    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }
    /// Occurrences in [from, to) as UTC RFC 3339 strings.
    fn between(expr: &str, zone: &str, from: &str, to: &str) -> Vec<String> {
        let s = Schedule::parse(expr).unwrap();
        let end = utc(to);
        let mut t = utc(from) - chrono::Duration::seconds(1);
        let mut out = vec![];
        while let Some(n) = s.next_after(t, &tz(zone)) {
            if n >= end {
                break;
            }
            out.push(n.to_rfc3339());
            t = n;
        }
        out
    }

    #[test]
    fn berlin_spring_forward_0230_runs_once_at_0300() {
        // 2026-03-29: 02:00 CET jumps to 03:00 CEST; 02:30 does not exist.
        let runs = between(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-03-28T12:00:00Z",
            "2026-03-30T12:00:00Z",
        );
        assert_eq!(
            runs,
            vec!["2026-03-29T01:00:00+00:00", "2026-03-30T00:30:00+00:00"]
        );
    }

    #[test]
    fn berlin_fall_back_0230_runs_once() {
        // 2026-10-25: 03:00 CEST falls back to 02:00 CET; 02:30 happens twice.
        let runs = between(
            "30 2 * * *",
            "Europe/Berlin",
            "2026-10-24T12:00:00Z",
            "2026-10-26T12:00:00Z",
        );
        assert_eq!(
            runs,
            vec!["2026-10-25T00:30:00+00:00", "2026-10-26T01:30:00+00:00"]
        );
    }

    #[test]
    fn new_york_change_days() {
        // 2026-03-08: 02:00 EST jumps to 03:00 EDT.
        let runs = between(
            "30 2 * * *",
            "America/New_York",
            "2026-03-07T12:00:00Z",
            "2026-03-09T12:00:00Z",
        );
        assert_eq!(
            runs,
            vec!["2026-03-08T07:00:00+00:00", "2026-03-09T06:30:00+00:00"]
        );
        // 2026-11-01: 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let runs = between(
            "30 1 * * *",
            "America/New_York",
            "2026-10-31T12:00:00Z",
            "2026-11-02T12:00:00Z",
        );
        assert_eq!(
            runs,
            vec!["2026-11-01T05:30:00+00:00", "2026-11-02T06:30:00+00:00"]
        );
    }

    #[test]
    fn inside_repeated_hour_never_goes_backwards() {
        // Start inside the second 02:xx of Berlin's fall-back night.
        let s = Schedule::parse("*/15 * * * *").unwrap();
        let start = utc("2026-10-25T01:10:00Z"); // 02:10 CET, second pass
        let next = s.next_after(start, &tz("Europe/Berlin")).unwrap();
        assert!(next > start, "{next} not after {start}");
    }

    #[test]
    fn last_weekday_nth() {
        let berlin = tz("UTC");
        // Last day of February 2027.
        let s = Schedule::parse("0 0 L * *").unwrap();
        assert_eq!(
            s.next_after(utc("2027-02-01T00:00:00Z"), &berlin).unwrap(),
            utc("2027-02-28T00:00:00Z")
        );
        // Nearest weekday to the 15th of August 2026 (a Saturday) is Friday the 14th.
        let s = Schedule::parse("0 0 15W * *").unwrap();
        assert_eq!(
            s.next_after(utc("2026-08-01T00:00:00Z"), &berlin).unwrap(),
            utc("2026-08-14T00:00:00Z")
        );
        // Second Tuesday of December 2026 is the 8th.
        let s = Schedule::parse("0 0 * * 2#2").unwrap();
        assert_eq!(
            s.next_after(utc("2026-12-01T00:00:00Z"), &berlin).unwrap(),
            utc("2026-12-08T00:00:00Z")
        );
        // Last Friday of November 2026 is the 27th.
        let s = Schedule::parse("0 12 * * 5L").unwrap();
        assert_eq!(
            s.next_after(utc("2026-11-01T00:00:00Z"), &berlin).unwrap(),
            utc("2026-11-27T12:00:00Z")
        );
    }

    #[test]
    fn aliases_seconds_and_every() {
        let u = TimeZone::UTC;
        let t = utc("2026-11-27T10:15:42Z");
        let next = |e: &str| Schedule::parse(e).unwrap().next_after(t, &u).unwrap();
        assert_eq!(next("@hourly"), utc("2026-11-27T11:00:00Z"));
        assert_eq!(next("@daily"), utc("2026-11-28T00:00:00Z"));
        assert_eq!(next("@weekly"), utc("2026-11-29T00:00:00Z"));
        assert_eq!(next("@monthly"), utc("2026-12-01T00:00:00Z"));
        assert_eq!(next("@yearly"), utc("2027-01-01T00:00:00Z"));
        assert_eq!(next("*/10 * * * * *"), utc("2026-11-27T10:15:50Z"));
        assert_eq!(next("@every 1s"), utc("2026-11-27T10:15:43Z"));
        assert_eq!(next("@every 5m"), utc("2026-11-27T10:20:00Z"));
    }

    #[test]
    fn time_zone_shifts_cron() {
        let s = Schedule::parse("0 9 * * *").unwrap();
        let n = s
            .next_after(utc("2026-07-01T00:00:00Z"), &tz("Europe/Berlin"))
            .unwrap();
        assert_eq!(
            n,
            chrono_tz::Europe::Berlin
                .with_ymd_and_hms(2026, 7, 1, 9, 0, 0)
                .unwrap()
                .with_timezone(&Utc)
        );
    }

    #[test]
    fn bad_expressions_explain_themselves() {
        for (expr, needle) in [
            ("61 * * * *", "minute field \"61\" is out of range 0-59"),
            ("* * *", "expected 5 or 6 fields"),
            ("* * * * * * *", "expected 5 or 6 fields"),
            ("@every", "@every"),
            ("@every 0s", "at least 1s"),
            ("@fortnightly", "unknown alias"),
            ("@reboot", "unknown alias"),
            ("0 25 * * *", "hour field \"25\" is out of range 0-23"),
            (
                "L * * * *",
                "minute field \"L\": L, W and # are allowed only",
            ),
            (
                "0 0 L * * *",
                "hour field \"L\": L, W and # are allowed only",
            ),
        ] {
            let e = Schedule::parse(expr).unwrap_err().to_string();
            assert!(e.contains(needle), "{expr}: {e}");
        }
        assert!(TimeZone::parse("Mars/Olympus")
            .unwrap_err()
            .message
            .contains("unknown time zone"));
    }
}
