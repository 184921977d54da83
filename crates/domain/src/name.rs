//! Validated names: job names, tags and environment variable names.

use crate::error::ValidationError;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Letters, digits, `.`, `_` and `-`, starting with a letter or digit, 1 to `max` bytes.
fn check_slug(kind: &str, s: &str, max: usize) -> Result<(), ValidationError> {
    if s.is_empty() {
        return Err(ValidationError::new(
            "",
            format!("{kind} must not be empty"),
        ));
    }
    if s.len() > max {
        return Err(ValidationError::new(
            "",
            format!("{kind} is longer than {max} characters"),
        ));
    }
    let mut chars = s.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphanumeric()) {
        return Err(ValidationError::new(
            "",
            format!("{kind} must start with a letter or digit"),
        ));
    }
    if let Some(bad) = s
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(ValidationError::new(
            "",
            format!("{kind} may contain only letters, digits, '.', '_' and '-' (found {bad:?})"),
        ));
    }
    Ok(())
}

macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl TryFrom<String> for $name {
            type Error = ValidationError;
            fn try_from(s: String) -> Result<Self, Self::Error> {
                Self::parse(&s)
            }
        }
        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }
    };
}

/// A job's unique name: 1-64 characters of letters, digits, `.`, `_`, `-`.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "nightly-backup")]
pub struct JobName(String);

impl JobName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_slug("job name", s, 64)?;
        if s.bytes().all(|b| b.is_ascii_digit()) {
            // The API addresses jobs by id or name; an all-digit name would be ambiguous.
            return Err(ValidationError::new("", "job name must not be all digits"));
        }
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(JobName);

/// A free-form label on a job, same character rules as a name, up to 32 characters.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "backup")]
pub struct Tag(String);

impl Tag {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        check_slug("tag", s, 32)?;
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(Tag);

/// The name of a resource lock jobs share (`restic:offsite`, `pg:main`): the
/// slug characters plus `:` and `/`, so a lock can be named after what it
/// guards; 1 to 64 characters.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "restic:offsite")]
pub struct LockName(String);

impl LockName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        // ':' and '/' separate parts; the rest are the slug rules.
        check_slug("lock name", &s.replace([':', '/'], "-"), 64)?;
        Ok(Self(s.to_owned()))
    }
}
string_newtype!(LockName);

/// A POSIX environment variable name: `[A-Za-z_][A-Za-z0-9_]*`, up to 128 bytes.
#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema,
)]
#[serde(try_from = "String", into = "String")]
#[schema(value_type = String, example = "PGHOST")]
pub struct EnvName(String);

impl EnvName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let ok = !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && s.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(Self(s.to_owned()))
        } else {
            Err(ValidationError::new(
                "",
                format!("{s:?} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)"),
            ))
        }
    }
}
string_newtype!(EnvName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names() {
        assert!(LockName::parse("restic:offsite").is_ok());
        assert!(LockName::parse("pg:main/replica-1").is_ok());
        for bad in ["", ":x", "a b", "a;b", &"x".repeat(65)] {
            assert!(LockName::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn job_names() {
        assert!(JobName::parse("nightly-backup_1.db").is_ok());
        for bad in ["", "-x", "a b", "a/b", "é", &"x".repeat(65), "../etc", "42"] {
            assert!(JobName::parse(bad).is_err(), "{bad:?} accepted");
        }
        let msg = JobName::parse("a b").unwrap_err().to_string();
        assert!(msg.contains("job name"), "{msg}");
    }

    #[test]
    fn env_names() {
        assert!(EnvName::parse("_A1").is_ok());
        assert!(EnvName::parse("1A").is_err());
        assert!(EnvName::parse("A-B").is_err());
    }
}
