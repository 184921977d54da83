//! A run's captured output: stdout and stderr interleaved in arrival order, each
//! line timestamped and tagged, bounded by keeping the head and the tail with a
//! marker saying how much was dropped between them. Followers receive lines live.

use chrono::{DateTime, SecondsFormat, Utc};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

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

/// One rendered line with its sequence number (for de-duplicating a snapshot
/// against the live stream).
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
}

/// Shared between the executor (writer) and any number of followers.
#[derive(Clone)]
pub struct OutputBuffer {
    inner: Arc<Mutex<Inner>>,
    live: broadcast::Sender<Line>,
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
        let (live, _) = broadcast::channel(1024);
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
            })),
            live,
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
            g.append(line.clone());
            drop(g);
            // No receivers is fine: nobody is following.
            let _ = self.live.send(line);
        }
    }

    /// Lines kept so far and the sequence number the live stream continues from.
    pub fn snapshot(&self) -> (String, u64) {
        match self.inner.lock() {
            Ok(g) => (g.render(), g.next_seq),
            Err(_) => (String::new(), 0),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Line> {
        self.live.subscribe()
    }

    pub fn finish(&self) -> Captured {
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
        let c = b.finish();
        assert!(c.truncated);
        assert!(c.text.len() <= 4096 + 100, "{}", c.text.len());
        assert!(c.text.contains("line 0000"));
        assert!(c.text.contains("line 0999"));
        assert!(!c.text.contains("line 0500"));
        assert!(c.text.contains("output truncated"));
    }

    #[test]
    fn small_output_is_whole_and_tagged() {
        let b = OutputBuffer::new(4096);
        let t = DateTime::from_timestamp(0, 0).unwrap();
        b.push(t, Stream::Stdout, b"hello");
        b.push(t, Stream::Stderr, b"oops\r");
        let c = b.finish();
        assert!(!c.truncated);
        assert_eq!(
            c.text,
            "1970-01-01T00:00:00.000Z out hello\n1970-01-01T00:00:00.000Z err oops\n"
        );
    }
}
