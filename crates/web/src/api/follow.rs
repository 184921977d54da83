//! Following a run's output as server-sent events, with memory bounded by
//! construction. A follower holds a cursor, not a copy: it pulls one batch at a
//! time from the run's live buffer (or from the stored text, shared by every
//! follower of the same finished run), and only when hyper asks for more, which
//! happens when the client's connection takes it. A follower that never reads
//! therefore costs one batch and a socket. How many may follow is capped per
//! user and in total; the permit travels inside the stream and is returned when
//! the client leaves.

use crate::error::ApiError;
use axum::http::StatusCode;
use axum::response::sse::Event;
use futures_util::stream::{self, StreamExt as _};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use steward_domain::{RunId, UserId};
use steward_engine::output::OutputBuffer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of output one follower takes per pull.
const BATCH_BYTES: usize = 16 * 1024;

pub struct Followers {
    total: Arc<Semaphore>,
    max_total: usize,
    per_user: usize,
    by_user: Arc<Mutex<HashMap<UserId, usize>>>,
    /// The stored output of finished runs being followed, shared while anyone
    /// follows it (weak: dropped with the last follower).
    stored: tokio::sync::Mutex<HashMap<RunId, Weak<str>>>,
}

/// Held by a follower's stream; dropping it frees the places it took.
pub struct FollowPermit {
    _total: OwnedSemaphorePermit,
    user: UserId,
    by_user: Arc<Mutex<HashMap<UserId, usize>>>,
}

impl Drop for FollowPermit {
    fn drop(&mut self) {
        let mut map = self
            .by_user
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.user) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.user);
            }
        }
    }
}

impl Followers {
    pub fn new(max_total: usize, per_user: usize) -> Self {
        Self {
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_user,
            by_user: Arc::default(),
            stored: tokio::sync::Mutex::default(),
        }
    }

    /// A place for one more follower of `user`, or 429 naming the limit.
    pub fn admit(&self, user: UserId) -> Result<FollowPermit, ApiError> {
        let too_many = |what: String| ApiError {
            retry_after: Some(5),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "too_many_followers", what)
        };
        let mut map = self
            .by_user
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mine = map.get(&user).copied().unwrap_or(0);
        if mine >= self.per_user {
            return Err(too_many(format!(
                "you already follow {mine} outputs (api.max_followers_per_user)"
            )));
        }
        let total = self.total.clone().try_acquire_owned().map_err(|_| {
            too_many(format!(
                "Steward already serves {} followers (api.max_followers)",
                self.max_total
            ))
        })?;
        map.insert(user, mine + 1);
        Ok(FollowPermit {
            _total: total,
            user,
            by_user: self.by_user.clone(),
        })
    }

    /// The stored output of a finished run, one copy however many follow it.
    pub async fn stored_output<F, Fut>(&self, run: RunId, load: F) -> Result<Arc<str>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Option<String>, ApiError>>,
    {
        // Held across the load, so followers arriving together load it once.
        let mut map = self.stored.lock().await;
        if let Some(text) = map.get(&run).and_then(Weak::upgrade) {
            return Ok(text);
        }
        let text: Arc<str> = load().await?.unwrap_or_default().into();
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(run, Arc::downgrade(&text));
        Ok(text)
    }
}

fn line(text: &str) -> Event {
    Event::default()
        .event("line")
        .data(text.trim_end_matches('\n'))
}

pub type Events = futures_util::stream::BoxStream<'static, Result<Event, Infallible>>;

/// The lines of a finished run's stored output, then `end` with its status.
pub fn from_stored(text: Arc<str>, status: String, permit: FollowPermit) -> Events {
    let batches = stream::unfold(
        (text, 0usize, Some(permit)),
        |(text, at, permit)| async move {
            let permit = permit?;
            if at >= text.len() {
                return None;
            }
            let from = (at + BATCH_BYTES).min(text.len());
            // Whole lines: extend to the next newline (lines are bounded at
            // capture). Searched in bytes: `from` may fall inside a character,
            // the newline after it never does.
            let end = text.as_bytes()[from..]
                .iter()
                .position(|b| *b == b'\n')
                .map_or(text.len(), |i| from + i + 1);
            let events: Vec<Result<Event, Infallible>> =
                text[at..end].lines().map(|l| Ok(line(l))).collect();
            Some((stream::iter(events), (text, end, Some(permit))))
        },
    )
    .flatten();
    batches
        .chain(stream::once(async move {
            Ok(Event::default().event("end").data(status))
        }))
        .boxed()
}

/// The live output of a running run from its first kept line, following it
/// until the run ends; then `end` with the status `final_status` reads.
pub fn from_live<F, Fut>(buffer: OutputBuffer, permit: FollowPermit, final_status: F) -> Events
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = String> + Send,
{
    enum State<F> {
        Reading(OutputBuffer, u64, FollowPermit, F),
        Done,
    }
    stream::unfold(
        State::Reading(buffer, 0, permit, final_status),
        |state| async move {
            let State::Reading(buffer, cursor, permit, final_status) = state else {
                return None;
            };
            loop {
                let batch = buffer.read_from(cursor, BATCH_BYTES);
                if batch.skipped > 0 || !batch.lines.is_empty() {
                    let mut events = Vec::with_capacity(batch.lines.len() + 1);
                    if batch.skipped > 0 {
                        events.push(Ok(line(&format!(
                            "[steward: {} lines skipped: they were dropped from the kept output before this follower read them]",
                            batch.skipped
                        ))));
                    }
                    events.extend(batch.lines.iter().map(|l| Ok(line(l))));
                    return Some((
                        stream::iter(events),
                        State::Reading(buffer, batch.next, permit, final_status),
                    ));
                }
                if batch.finished {
                    drop(buffer);
                    let status = final_status().await;
                    drop(permit);
                    return Some((
                        stream::iter(vec![Ok(Event::default().event("end").data(status))]),
                        State::Done,
                    ));
                }
                buffer.wait_for_line(batch.next).await;
            }
        },
    )
    .flatten()
    .boxed()
}
