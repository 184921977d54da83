//! Sign-in back-off per client address and per account.
//!
//! Each key may fail a few times freely; after that every further failure
//! doubles the wait (1 s, 2 s, 4 s ... up to 15 min) before the next attempt is
//! even checked. A success clears the account's and the address's record.
//! Failures are forgotten an hour after the last one. In memory: a restart
//! forgives, which is acceptable for one node (the audit log keeps the record).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const ACCOUNT_FREE: u32 = 5;
const ADDRESS_FREE: u32 = 20;
const MAX_WAIT: Duration = Duration::from_secs(15 * 60);
const FORGET_AFTER: Duration = Duration::from_secs(3600);
const MAX_KEYS: usize = 100_000;

#[derive(Clone, Copy)]
struct Record {
    failures: u32,
    last: Instant,
    blocked_until: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Account(String),
    Address(IpAddr),
}

#[derive(Default)]
pub struct SignInLimiter {
    records: Mutex<HashMap<Key, Record>>,
}

fn wait_for(failures: u32, free: u32) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    let exp = (failures - free).min(20);
    Duration::from_secs(1u64 << exp).min(MAX_WAIT)
}

impl SignInLimiter {
    fn keys(account: &str, address: Option<IpAddr>) -> Vec<(Key, u32)> {
        let mut k = vec![(Key::Account(account.to_lowercase()), ACCOUNT_FREE)];
        if let Some(a) = address {
            k.push((Key::Address(a), ADDRESS_FREE));
        }
        k
    }

    /// How long the caller must still wait, if at all.
    pub fn check(&self, account: &str, address: Option<IpAddr>, now: Instant) -> Option<Duration> {
        let recs = self.records.lock().ok()?;
        Self::keys(account, address)
            .iter()
            .filter_map(|(k, _)| recs.get(k))
            .filter(|r| r.blocked_until > now)
            .map(|r| r.blocked_until - now)
            .max()
    }

    pub fn failed(&self, account: &str, address: Option<IpAddr>, now: Instant) {
        let Ok(mut recs) = self.records.lock() else {
            return;
        };
        if recs.len() > MAX_KEYS {
            recs.retain(|_, r| now.duration_since(r.last) < FORGET_AFTER);
        }
        for (key, free) in Self::keys(account, address) {
            let r = recs.entry(key).or_insert(Record {
                failures: 0,
                last: now,
                blocked_until: now,
            });
            if now.duration_since(r.last) > FORGET_AFTER {
                r.failures = 0;
            }
            r.failures += 1;
            r.last = now;
            r.blocked_until = now + wait_for(r.failures, free);
        }
    }

    pub fn succeeded(&self, account: &str, address: Option<IpAddr>) {
        if let Ok(mut recs) = self.records.lock() {
            for (k, _) in Self::keys(account, address) {
                recs.remove(&k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn back_off_grows_per_account_and_success_clears_it() {
        let l = SignInLimiter::default();
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        for _ in 0..ACCOUNT_FREE - 1 {
            l.failed("alice", Some(ip), t);
        }
        assert_eq!(l.check("alice", Some(ip), t), None);
        l.failed("alice", Some(ip), t);
        assert_eq!(l.check("Alice", None, t), Some(Duration::from_secs(1)));
        l.failed("alice", Some(ip), t);
        assert_eq!(l.check("alice", None, t), Some(Duration::from_secs(2)));
        // Another account from another address is not affected.
        assert_eq!(l.check("bob", Some("192.0.2.2".parse().unwrap()), t), None);
        l.succeeded("alice", Some(ip));
        assert_eq!(l.check("alice", Some(ip), t), None);
    }

    #[test]
    fn an_address_trying_many_accounts_is_slowed() {
        let l = SignInLimiter::default();
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        for i in 0..ADDRESS_FREE {
            l.failed(&format!("user{i}"), Some(ip), t);
        }
        assert!(l.check("fresh-name", Some(ip), t).is_some());
        assert_eq!(l.check("fresh-name", None, t), None);
    }
}
