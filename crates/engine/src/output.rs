//! A run's captured output: stdout and stderr interleaved in arrival order, each
//! line timestamped and tagged, bounded by keeping the head and the tail with a
//! marker saying how much was dropped between them.
//!
//! Followers do not get a queue of their own: each keeps a cursor (a line's
//! sequence number) and pulls a bounded batch from the shared buffer when its
//! connection can take more. A follower that does not read costs one batch, and
//! one that falls behind the kept tail skips ahead with a marker.

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::watch;

/// Where a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// Lines Steward writes itself (what was run, why it stopped).
    Steward,
}

impl Stream {
    fn tag(self) -> &'static str {
        match self {
            Self::Stdout => "out",
            Self::Stderr => "err",
            Self::Steward => "sys",
        }
    }
}

/// One rendered line with its sequence number (a follower's cursor).
#[derive(Debug, Clone)]
pub struct Line {
    pub seq: u64,
    pub text: Arc<str>,
}

struct Inner {
    limit: usize,
    head: Vec<Line>,
    head_bytes: usize,
    tail: VecDeque<Line>,
    tail_bytes: usize,
    dropped_bytes: u64,
    dropped_lines: u64,
    next_seq: u64,
    finished: bool,
}

/// Shared between the executor (writer) and any number of followers.
#[derive(Clone)]
pub struct OutputBuffer {
    inner: Arc<Mutex<Inner>>,
    /// The next sequence number and whether the run has ended; followers wait
    /// on it for new lines.
    progress: Arc<watch::Sender<(u64, bool)>>,
    /// Values of the secrets this run opened; replaced before a line is kept or sent.
    masks: Arc<std::sync::OnceLock<Vec<secrecy::SecretString>>>,
}

/// The final text and whether anything was dropped.
pub struct Captured {
    pub text: String,
    pub truncated: bool,
}

/// A single line longer than this is split; keeps one line from being the whole budget.
const MAX_LINE: usize = 16 * 1024;

impl OutputBuffer {
    pub fn new(limit: usize) -> Self {
        Self {
            inner: Arc::new(Mutex::new(Inner {
                limit: limit.max(1024),
                head: Vec::new(),
                head_bytes: 0,
                tail: VecDeque::new(),
                tail_bytes: 0,
                dropped_bytes: 0,
                dropped_lines: 0,
                next_seq: 0,
                finished: false,
            })),
            progress: Arc::new(watch::Sender::new((0, false))),
            masks: Arc::default(),
        }
    }

    /// Sets the secret values to mask (once, before the attempt writes anything).
    pub fn set_masks(&self, values: Vec<secrecy::SecretString>) {
        let _ = self.masks.set(values);
    }

    /// `text` with this run's secret values masked.
    pub fn mask(&self, text: &str) -> String {
        match self.masks.get() {
            Some(m) if !m.is_empty() => crate::secrets::mask(text, m),
            _ => text.to_owned(),
        }
    }

    /// Appends one line (without its newline). Invalid UTF-8 is replaced, not dropped.
    pub fn push(&self, at: DateTime<Utc>, stream: Stream, raw: &[u8]) {
        let masked;
        let raw = match self.masks.get() {
            Some(m) if !m.is_empty() => {
                masked = crate::secrets::mask(&String::from_utf8_lossy(raw), m);
                masked.as_bytes()
            }
            _ => raw,
        };
        let empty: &[u8] = &[];
        let chunks: Vec<&[u8]> = if raw.is_empty() {
            vec![empty]
        } else {
            raw.chunks(MAX_LINE).collect()
        };
        for chunk in chunks {
            let body = String::from_utf8_lossy(chunk);
            let body = body.trim_end_matches('\r');
            let text: Arc<str> = format!(
                "{} {} {}\n",
                at.to_rfc3339_opts(SecondsFormat::Millis, true),
                stream.tag(),
                body
            )
            .into();
            let Ok(mut g) = self.inner.lock() else { return };
            let line = Line {
                seq: g.next_seq,
                text,
            };
            g.next_seq += 1;
            g.append(line);
            let next = g.next_seq;
            drop(g);
            self.progress.send_replace((next, false));
        }
    }

    /// The lines kept so far, rendered (with the truncation marker).
    pub fn snapshot(&self) -> Captured {
        match self.inner.lock() {
            Ok(g) => Captured {
                text: g.render(),
                truncated: g.dropped_lines > 0,
            },
            Err(_) => Captured {
                text: String::new(),
                truncated: true,
            },
        }
    }

    /// How many lines were pushed so far: a cheap "changed since" check.
    pub fn lines_pushed(&self) -> u64 {
        self.progress.borrow().0
    }

    /// Ends the output: followers see the end once they have read everything.
    /// Called after the run's final record is written, so what they read
    /// back then is the final status.
    pub fn close(&self) {
        if let Ok(mut g) = self.inner.lock() {
            g.finished = true;
        }
        self.progress.send_modify(|p| p.1 = true);
    }

    /// Up to `max_bytes` of kept lines from sequence number `from` on (at least
    /// one line if any is there). Lines dropped from the middle meanwhile are
    /// counted in `skipped` and the batch continues at the oldest kept line.
    pub fn read_from(&self, from: u64, max_bytes: usize) -> Batch {
        let Ok(g) = self.inner.lock() else {
            return Batch {
                lines: vec![],
                skipped: 0,
                next: from,
                finished: true,
            };
        };
        let mut batch = Batch {
            lines: vec![],
            skipped: 0,
            next: from,
            finished: false,
        };
        let mut bytes = 0;
        let mut take = |batch: &mut Batch, line: &Line| {
            if !batch.lines.is_empty() && bytes + line.text.len() > max_bytes {
                return false;
            }
            bytes += line.text.len();
            batch.lines.push(line.text.clone());
            batch.next = line.seq + 1;
            true
        };
        let head_end = g.head.len() as u64;
        if batch.next < head_end {
            for line in &g.head[usize::try_from(batch.next).unwrap_or(usize::MAX)..] {
                if !take(&mut batch, line) {
                    return batch;
                }
            }
        }
        if let Some(first) = g.tail.front() {
            if batch.next < first.seq {
                batch.skipped = first.seq - batch.next;
                batch.next = first.seq;
            }
            let skip = usize::try_from(batch.next - first.seq).unwrap_or(usize::MAX);
            for line in g.tail.iter().skip(skip) {
                if !take(&mut batch, line) {
                    return batch;
                }
            }
        }
        // Lines dropped from between the kept head and tail, with nothing kept
        // after them (a line longer than half the limit is dropped whole).
        if batch.lines.is_empty() && batch.next < g.next_seq {
            batch.skipped += g.next_seq - batch.next;
            batch.next = g.next_seq;
        }
        batch.finished = g.finished && batch.next >= g.next_seq;
        batch
    }

    /// Waits until line `seq` exists or the run has ended.
    pub async fn wait_for_line(&self, seq: u64) {
        let mut rx = self.progress.subscribe();
        let _ = rx
            .wait_for(|(next, finished)| *next > seq || *finished)
            .await;
    }
}

/// What a follower reads in one go.
#[derive(Debug)]
pub struct Batch {
    pub lines: Vec<Arc<str>>,
    /// Lines dropped (head and tail kept) between the cursor and `lines`.
    pub skipped: u64,
    /// The cursor for the next read.
    pub next: u64,
    /// The run has ended and everything was read.
    pub finished: bool,
}

impl Inner {
    fn append(&mut self, line: Line) {
        let len = line.text.len();
        let half = self.limit / 2;
        if self.tail.is_empty() && self.head_bytes + len <= half {
            self.head_bytes += len;
            self.head.push(line);
            return;
        }
        self.tail_bytes += len;
        self.tail.push_back(line);
        while self.tail_bytes > self.limit - half {
            let Some(old) = self.tail.pop_front() else {
                break;
            };
            self.tail_bytes -= old.text.len();
            self.dropped_bytes += old.text.len() as u64;
            self.dropped_lines += 1;
        }
    }

    fn render(&self) -> String {
        let mut out = String::with_capacity(self.head_bytes + self.tail_bytes + 96);
        for l in &self.head {
            out.push_str(&l.text);
        }
        if self.dropped_lines > 0 {
            out.push_str(&format!(
                "[steward: output truncated, {} lines ({} bytes) omitted]\n",
                self.dropped_lines, self.dropped_bytes
            ));
        }
        for l in &self.tail {
            out.push_str(&l.text);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_head_and_tail_within_limit() {
        let b = OutputBuffer::new(4096);
        let t = DateTime::from_timestamp(0, 0).unwrap();
        for i in 0..1000 {
            b.push(t, Stream::Stdout, format!("line {i:04}").as_bytes());
        }
        let c = b.snapshot();
        assert!(c.truncated);
        assert!(c.text.len() <= 4096 + 100, "{}", c.text.len());
        assert!(c.text.contains("line 0000"));
        assert!(c.text.contains("line 0999"));
        assert!(!c.text.contains("line 0500"));
        assert!(c.text.contains("output truncated"));
    }

    #[test]
    fn followers_read_in_bounded_batches_and_skip_what_was_dropped() {
        let b = OutputBuffer::new(4096);
        let t = DateTime::from_timestamp(0, 0).unwrap();
        for i in 0..10 {
            b.push(t, Stream::Stdout, format!("line {i:04}").as_bytes());
        }
        let first = b.read_from(0, 100); // each line is 39 bytes
        assert_eq!(first.lines.len(), 2);
        assert_eq!((first.next, first.skipped, first.finished), (2, 0, false));
        let rest = b.read_from(first.next, 1 << 20);
        assert_eq!(rest.lines.len(), 8);
        assert!(rest.lines[7].contains("line 0009"));
        // A slow follower: its place was dropped from the middle.
        for i in 10..1000 {
            b.push(t, Stream::Stdout, format!("line {i:04}").as_bytes());
        }
        let late = b.read_from(rest.next, 1 << 20);
        assert!(late.skipped > 0, "{late:?}");
        assert!(late.lines.last().unwrap().contains("line 0999"));
        assert!(!late.finished);
        b.close();
        let end = b.read_from(late.next, 1 << 20);
        assert!(end.lines.is_empty() && end.finished, "{end:?}");
    }

    #[test]
    fn a_follower_past_everything_kept_skips_to_the_end() {
        // With a small limit a long line is dropped whole: nothing is kept
        // after the head, and a follower must not wait forever for it.
        let b = OutputBuffer::new(1024);
        let t = DateTime::from_timestamp(0, 0).unwrap();
        b.push(t, Stream::Stdout, b"short");
        b.push(t, Stream::Stdout, &[b'x'; 900]);
        let first = b.read_from(0, 1 << 20);
        assert_eq!(first.lines.len(), 1);
        let rest = b.read_from(first.next, 1 << 20);
        assert!(rest.skipped > 0 || !rest.lines.is_empty(), "{rest:?}");
        b.close();
        assert!(b.read_from(rest.next, 1 << 20).finished);
    }

    #[test]
    fn small_output_is_whole_and_tagged() {
        let b = OutputBuffer::new(4096);
        let t = DateTime::from_timestamp(0, 0).unwrap();
        b.push(t, Stream::Stdout, b"hello");
        b.push(t, Stream::Stderr, b"oops\r");
        let c = b.snapshot();
        assert!(!c.truncated);
        assert_eq!(
            c.text,
            "1970-01-01T00:00:00.000Z out hello\n1970-01-01T00:00:00.000Z err oops\n"
        );
    }
}
