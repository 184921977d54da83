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
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Float(f64),
            Str(String),
        }
        match Raw::deserialize(d)? {
            Raw::Int(i) if i < 0 => Err(serde::de::Error::custom(format!(
                "duration {i} must not be negative"
            ))),
            Raw::Int(i) => Ok(Self(Duration::from_secs(i.unsigned_abs()))),
            Raw::Float(f) => Duration::try_from_secs_f64(f).map(Self).map_err(|_| {
                serde::de::Error::custom(format!(
                    "duration {f} must be a non-negative number of seconds in range"
                ))
            }),
            Raw::Str(s) => Self::parse(&s).map_err(serde::de::Error::custom),
        }
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
    }
}
