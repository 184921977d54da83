//! Retry policy: how many more attempts after a failure, and how long to wait.

use crate::duration::DurationSpec;
use crate::error::ValidationError;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Retries after a failed, timed-out or abandoned (its node stopped) attempt. Delay before retry `n` (1-based) is
/// `delay * backoff^(n-1)`, capped at `max_delay`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Extra attempts after the first one (0 = no retries, at most 100).
    pub count: u32,
    /// Delay before the first retry.
    pub delay: DurationSpec,
    /// Multiplier applied to the delay for each further retry (1.0 to 10.0).
    pub backoff: f64,
    /// Upper bound for any delay.
    pub max_delay: DurationSpec,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            count: 0,
            delay: DurationSpec::from_secs(10),
            backoff: 2.0,
            max_delay: DurationSpec::from_secs(3600),
        }
    }
}

impl RetryPolicy {
    pub fn validate(&self) -> Result<(), ValidationError> {
        if self.count > 100 {
            return Err(ValidationError::new("count", "at most 100 retries"));
        }
        if !(1.0..=10.0).contains(&self.backoff) {
            return Err(ValidationError::new(
                "backoff",
                "must be between 1.0 and 10.0",
            ));
        }
        if self.max_delay.get().as_secs() > 7 * 24 * 3600 {
            return Err(ValidationError::new("max_delay", "must be at most 7 days"));
        }
        if self.max_delay < self.delay {
            return Err(ValidationError::new(
                "max_delay",
                "must not be shorter than delay",
            ));
        }
        Ok(())
    }

    /// The delay before the attempt numbered `next_attempt` (the first attempt is 1),
    /// or `None` when no retry is left.
    pub fn delay_before(&self, next_attempt: u32) -> Option<Duration> {
        let retry_no = next_attempt.checked_sub(1)?;
        if retry_no == 0 || retry_no > self.count {
            return None;
        }
        let factor = self
            .backoff
            .powi(i32::try_from(retry_no - 1).unwrap_or(i32::MAX));
        let secs = self.delay.get().as_secs_f64() * factor;
        let capped = secs.min(self.max_delay.get().as_secs_f64());
        Some(Duration::from_secs_f64(capped.max(0.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exponential_backoff_capped() {
        let p = RetryPolicy {
            count: 5,
            delay: DurationSpec::from_secs(10),
            backoff: 3.0,
            max_delay: DurationSpec::from_secs(200),
        };
        let d: Vec<_> = (1..=7)
            .map(|a| p.delay_before(a).map(|d| d.as_secs()))
            .collect();
        assert_eq!(
            d,
            vec![
                None,
                Some(10),
                Some(30),
                Some(90),
                Some(200),
                Some(200),
                None
            ]
        );
    }

    #[test]
    fn no_retries_by_default() {
        assert_eq!(RetryPolicy::default().delay_before(2), None);
    }

    #[test]
    fn validation() {
        let mut p = RetryPolicy {
            count: 101,
            ..Default::default()
        };
        assert_eq!(p.validate().unwrap_err().field, "count");
        p.count = 1;
        p.backoff = 0.5;
        assert_eq!(p.validate().unwrap_err().field, "backoff");
    }
}
