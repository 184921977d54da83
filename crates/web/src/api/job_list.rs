//! The rendered body of `GET /api/v1/jobs`, reused while it cannot have changed.
//!
//! The list depends on the job catalog (a new snapshot on every job change)
//! and on the clock only through each job's next occurrence, which stays the
//! same until the earliest of them passes. So a body built at `t` from
//! snapshot `S` is exactly what would be built again for any `now` in
//! `[t, earliest next_run_at)` with the same `S`. Not an approximation: the
//! test suite compares against a fresh rendering.

use super::views::{JobList, JobView};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use steward_domain::TimeZone;
use steward_store::Job;

struct Rendered {
    snapshot: Arc<Vec<Arc<Job>>>,
    built_at: DateTime<Utc>,
    valid_until: Option<DateTime<Utc>>,
    body: Bytes,
}

#[derive(Default)]
pub struct JobListCache {
    last: Mutex<Option<Rendered>>,
}

impl JobListCache {
    pub fn body(
        &self,
        snapshot: Arc<Vec<Arc<Job>>>,
        tz: TimeZone,
        now: DateTime<Utc>,
    ) -> serde_json::Result<Bytes> {
        if let Ok(last) = self.last.lock() {
            if let Some(r) = last.as_ref() {
                let fresh = Arc::ptr_eq(&r.snapshot, &snapshot)
                    && now >= r.built_at
                    && r.valid_until.is_none_or(|until| now < until);
                if fresh {
                    return Ok(r.body.clone());
                }
            }
        }
        let list = JobList {
            items: snapshot.iter().map(|j| JobView::of(j, tz, now)).collect(),
        };
        let valid_until = list.items.iter().filter_map(|v| v.next_run_at).min();
        let body = Bytes::from(serde_json::to_vec(&list)?);
        drop(list);
        if let Ok(mut last) = self.last.lock() {
            *last = Some(Rendered {
                snapshot,
                built_at: now,
                valid_until,
                body: body.clone(),
            });
        }
        Ok(body)
    }
}
