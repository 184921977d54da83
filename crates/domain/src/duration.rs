//! Durations written by people: `"90s"`, `"1h 30m"`, or a whole number of seconds.

use crate::error::ValidationError;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// A non-negative duration, written as a humantime string (`"30s"`, `"1h"`) or as
/// an integer number of seconds. Serialised back as a humantime string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct DurationSpec(Duration);

impl DurationSpec {
    pub const fn from_secs(s: u64) -> Self {
        Self(Duration::from_secs(s))
    }
    pub const fn get(self) -> Duration {
        self.0
    }
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let t = s.trim();
        if t.starts_with('-') {
            return Err(ValidationError::new(
                "",
                format!("duration {s:?} must not be negative"),
            ));
        }
        if let Ok(secs) = t.parse::<u64>() {
            return Ok(Self(Duration::from_secs(secs)));
        }
        humantime::parse_duration(t).map(Self).map_err(|e| {
            ValidationError::new(
                "",
                format!("{s:?} is not a duration like \"30s\" or \"1h 30m\": {e}"),
            )
        })
    }
}

impl From<Duration> for DurationSpec {
    fn from(d: Duration) -> Self {
        Self(d)
    }
}

impl fmt::Display for DurationSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        humantime::format_duration(self.0).fmt(f)
    }
}

impl Serialize for DurationSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DurationSpec {
    /// A number of seconds or a text like `1h30m`. A visitor, not an
    /// untagged enum: that would buffer each value and format an error for
    /// every form it is not (measured: a tenth of loading 100,000 jobs).
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = DurationSpec;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration: seconds, or a text like \"90s\", \"1h30m\"")
            }

            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(DurationSpec(Duration::from_secs(v)))
            }

            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Self::Value, E> {
                u64::try_from(v)
                    .map(|s| DurationSpec(Duration::from_secs(s)))
                    .map_err(|_| E::custom(format!("duration {v} must not be negative")))
            }

            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Duration::try_from_secs_f64(v)
                    .map(DurationSpec)
                    .map_err(|_| {
                        E::custom(format!(
                            "duration {v} must be a non-negative number of seconds in range"
                        ))
                    })
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Self::Value, E> {
                DurationSpec::parse(v).map_err(E::custom)
            }
        }
        d.deserialize_any(Visitor)
    }
}

impl utoipa::PartialSchema for DurationSpec {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "A duration such as \"30s\", \"5m\", \"1h 30m\" (an integer means seconds)",
            ))
            .examples(["1h"])
            .into()
    }
}
impl utoipa::ToSchema for DurationSpec {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_forms() {
        assert_eq!(
            DurationSpec::parse("90").unwrap().get(),
            Duration::from_secs(90)
        );
        assert_eq!(
            DurationSpec::parse("1h 30m").unwrap().get(),
            Duration::from_secs(5400)
        );
        assert!(DurationSpec::parse("-5s")
            .unwrap_err()
            .message
            .contains("negative"));
        assert!(DurationSpec::parse("soon").is_err());
        let v: DurationSpec = serde_json::from_str("-3")
            .map(|d: DurationSpec| d)
            .unwrap_or_default();
        assert_eq!(v, DurationSpec::default());
        assert!(serde_json::from_str::<DurationSpec>("-3").is_err());
        assert_eq!(
            serde_json::to_string(&DurationSpec::from_secs(3600)).unwrap(),
            "\"1h\""
        );
        assert!(serde_json::from_str::<DurationSpec>("1e30").is_err());
        assert!(serde_json::from_str::<DurationSpec>("-0.5").is_err());
        for (json, secs) in [("90", 90.0), ("1.5", 1.5), ("\"2m\"", 120.0)] {
            let d: DurationSpec = serde_json::from_str(json).unwrap();
            assert_eq!(d.get().as_secs_f64(), secs, "{json}");
        }
        for bad in ["true", "[1]", "{}", "\"2 parsecs\""] {
            let e = serde_json::from_str::<DurationSpec>(bad).unwrap_err();
            assert!(e.to_string().contains("duration"), "{bad}: {e}");
        }
    }
}
