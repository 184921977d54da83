//! Following a run's output as server-sent events, with memory bounded by
//! construction. A follower holds a cursor, not a copy: it pulls one batch at a
//! time from the run's live buffer (or from the stored text, shared by every
//! follower of the same finished run), and only when hyper asks for more, which
//! happens when the client's connection takes it. A follower that never reads
//! therefore costs one batch and a socket. How many may follow is capped per
//! user and in total; the permit travels inside the stream and is returned when
//! the client leaves. All followers together send at most
//! `api.follow_bytes_per_second`, so a crowd reading at full speed cannot take
//! the machine from the rest of the API.

use crate::error::ApiError;
use axum::http::StatusCode;
use bytes::Bytes;
use futures_util::stream::{self, StreamExt as _};
use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, Weak};
use steward_domain::{RunId, UserId};
use steward_engine::output::OutputBuffer;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of output one follower takes per pull. Small on purpose: hyper
/// queues up to 16 frames per connection whatever their size, so this bounds
/// what a follower that does not read holds (about 16 × 5 KiB).
const BATCH_BYTES: usize = 4 * 1024;

/// Bytes per second for all followers together (cells of 1 KiB).
pub type Budget = Option<Arc<governor::DefaultDirectRateLimiter>>;

/// Waits until `bytes` may be sent.
async fn spend(budget: &Budget, bytes: usize) {
    if let Some(b) = budget {
        let cells = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .max(1);
        if let Some(n) = std::num::NonZeroU32::new(cells) {
            // A frame is never larger than the burst (BATCH_BYTES ≪ 256 KiB).
            let _ = b.until_n_ready(n).await;
        }
    }
}

pub struct Followers {
    total: Arc<Semaphore>,
    budget: Budget,
    max_total: usize,
    per_user: usize,
    by_user: Arc<Mutex<HashMap<UserId, usize>>>,
    /// The stored output of finished runs being followed, shared while anyone
    /// follows it (weak: dropped with the last follower).
    stored: tokio::sync::Mutex<HashMap<RunId, Weak<str>>>,
}

/// Held by a follower's stream; dropping it frees the places it took.
pub struct FollowPermit {
    total: OwnedSemaphorePermit,
    max_total: usize,
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
        drop(map);
        // The last follower leaving (this permit is still held): the crowd's
        // buffers are free now, so hand them back to the system.
        if self.total.semaphore().available_permits() + 1 >= self.max_total {
            crate::memory::release_freed_memory();
        }
    }
}

impl Followers {
    pub fn new(max_total: usize, per_user: usize, bytes_per_second: u64) -> Self {
        let kib = u32::try_from(bytes_per_second / 1024).unwrap_or(u32::MAX);
        let budget = std::num::NonZeroU32::new(kib).map(|per_second| {
            let burst = std::num::NonZeroU32::new(256).unwrap_or(per_second);
            Arc::new(governor::RateLimiter::direct(
                governor::Quota::per_second(per_second)
                    .allow_burst(burst.min(per_second.max(burst))),
            ))
        });
        Self {
            budget,
            total: Arc::new(Semaphore::new(max_total)),
            max_total,
            per_user,
            by_user: Arc::default(),
            stored: tokio::sync::Mutex::default(),
        }
    }

    /// The shared sending budget, for the streams.
    pub fn budget(&self) -> Budget {
        self.budget.clone()
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
            total,
            max_total: self.max_total,
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

/// A comment line every so often keeps proxies from closing an idle stream.
const KEEP_ALIVE: std::time::Duration = std::time::Duration::from_secs(15);

/// Appends one `line` event. Captured lines never contain a newline (they
/// are split at capture), so each is exactly one `data:` field.
fn push_line(frame: &mut Vec<u8>, text: &str) {
    frame.extend_from_slice(b"event: line\ndata: ");
    frame.extend_from_slice(text.trim_end_matches(['\n', '\r']).as_bytes());
    frame.extend_from_slice(b"\n\n");
}

pub fn end_frame(status: &str) -> Bytes {
    Bytes::from(format!("event: end\ndata: {status}\n\n"))
}

/// One write per batch: the events of a whole batch in one frame, so a
/// follower costs the connection a few large writes, not one per line.
pub type Events = futures_util::stream::BoxStream<'static, Result<Bytes, Infallible>>;

/// The response for a stream of frames.
pub fn response(events: Events) -> axum::response::Response {
    axum::response::Response::builder()
        .header(axum::http::header::CONTENT_TYPE, "text/event-stream")
        .body(axum::body::Body::from_stream(events))
        .unwrap_or_default()
}

/// The lines of a finished run's stored output, then `end` with its status.
pub fn from_stored(text: Arc<str>, status: String, permit: FollowPermit, budget: Budget) -> Events {
    let batches = stream::unfold((text, 0usize, Some(permit)), move |(text, at, permit)| {
        let budget = budget.clone();
        async move {
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
            let mut frame = Vec::with_capacity(end - at + (end - at) / 4);
            for l in text[at..end].lines() {
                push_line(&mut frame, l);
            }
            spend(&budget, frame.len()).await;
            Some((Ok(Bytes::from(frame)), (text, end, Some(permit))))
        }
    });
    batches
        .chain(stream::once(async move { Ok(end_frame(&status)) }))
        .boxed()
}

/// The live output of a running run from its first kept line, following it
/// until the run ends; then `end` with the status `final_status` reads.
pub fn from_live<F, Fut>(
    buffer: OutputBuffer,
    permit: FollowPermit,
    budget: Budget,
    final_status: F,
) -> Events
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
        move |state| {
            let budget = budget.clone();
            async move {
            let State::Reading(buffer, cursor, permit, final_status) = state else {
                return None;
            };
            loop {
                let batch = buffer.read_from(cursor, BATCH_BYTES);
                if batch.skipped > 0 || !batch.lines.is_empty() {
                    let mut frame = Vec::with_capacity(BATCH_BYTES + BATCH_BYTES / 4);
                    if batch.skipped > 0 {
                        push_line(&mut frame, &format!(
                            "[steward: {} lines skipped: they were dropped from the kept output before this follower read them]",
                            batch.skipped
                        ));
                    }
                    for l in &batch.lines {
                        push_line(&mut frame, l);
                    }
                    spend(&budget, frame.len()).await;
                    return Some((
                        Ok(Bytes::from(frame)),
                        State::Reading(buffer, batch.next, permit, final_status),
                    ));
                }
                if batch.finished {
                    drop(buffer);
                    let status = final_status().await;
                    drop(permit);
                    return Some((Ok(end_frame(&status)), State::Done));
                }
                if tokio::time::timeout(KEEP_ALIVE, buffer.wait_for_line(batch.next))
                    .await
                    .is_err()
                {
                    return Some((
                        Ok(Bytes::from_static(b":\n\n")),
                        State::Reading(buffer, cursor, permit, final_status),
                    ));
                }
            }
            }
        },
    )
    .boxed()
}
