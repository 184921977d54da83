//! Sign-in back-off per client address and per account.
//!
//! Each key may fail a few times freely; after that every further failure
//! doubles the wait (1 s, 2 s, 4 s ... up to 15 min) before the next attempt is
//! even checked. Against an account, an attempt counts as a failure when it
//! begins, so a burst of parallel guesses cannot all slip through before the
//! first is judged; a success clears the account's record. Against an
//! address, only judged failures count: fifty colleagues behind one NAT
//! signing in at nine o'clock are not a burst of guesses (put Steward behind
//! a trusted proxy to tell them apart), while one address trying many
//! accounts still slows down.
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
        // User names are at most 64 characters; a longer "name" must not cost more memory.
        let account: String = account.chars().take(64).collect::<String>().to_lowercase();
        let mut k = vec![(Key::Account(account), ACCOUNT_FREE)];
        if let Some(a) = address {
            k.push((Key::Address(a), ADDRESS_FREE));
        }
        k
    }

    /// Starts an attempt: `Err(wait)` while the account or the address is
    /// blocked; else the attempt is counted against the account until
    /// [`Self::succeeded`] clears it.
    pub fn begin(
        &self,
        account: &str,
        address: Option<IpAddr>,
        now: Instant,
    ) -> Result<(), Duration> {
        let Ok(mut recs) = self.records.lock() else {
            return Ok(());
        };
        let keys = Self::keys(account, address);
        let wait = keys
            .iter()
            .filter_map(|(k, _)| recs.get(k))
            .filter(|r| r.blocked_until > now)
            .map(|r| r.blocked_until - now)
            .max();
        if let Some(w) = wait {
            return Err(w);
        }
        Self::prune(&mut recs, now);
        if let Some((key, free)) = keys.into_iter().next() {
            Self::count(&mut recs, key, free, now);
        }
        Ok(())
    }

    /// A judged failure: counts against the address (the account was counted
    /// when the attempt began).
    pub fn failed(&self, address: Option<IpAddr>, now: Instant) {
        let (Ok(mut recs), Some(a)) = (self.records.lock(), address) else {
            return;
        };
        Self::prune(&mut recs, now);
        Self::count(&mut recs, Key::Address(a), ADDRESS_FREE, now);
    }

    fn count(recs: &mut HashMap<Key, Record>, key: Key, free: u32, now: Instant) {
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

    fn prune(recs: &mut HashMap<Key, Record>, now: Instant) {
        if recs.len() > MAX_KEYS {
            recs.retain(|_, r| now.duration_since(r.last) < FORGET_AFTER);
            if recs.len() > MAX_KEYS {
                // Still full (a flood of fresh keys): keep only live blocks.
                recs.retain(|_, r| r.blocked_until > now);
            }
        }
    }

    /// Clears the account's record after a successful sign-in.
    pub fn succeeded(&self, account: &str) {
        if let Ok(mut recs) = self.records.lock() {
            if let Some((k, _)) = Self::keys(account, None).into_iter().next() {
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
            l.begin("alice", Some(ip), t).unwrap();
        }
        l.begin("alice", Some(ip), t).unwrap();
        // The fifth failure blocks the next attempt for a second, then two.
        assert_eq!(l.begin("Alice", None, t), Err(Duration::from_secs(1)));
        let later = t + Duration::from_secs(1);
        l.begin("alice", Some(ip), later).unwrap();
        assert_eq!(l.begin("alice", None, later), Err(Duration::from_secs(2)));
        // Another account from another address is not affected.
        assert!(l
            .begin("bob", Some("192.0.2.2".parse().unwrap()), t)
            .is_ok());
        l.succeeded("alice");
        assert!(l.begin("alice", Some(ip), later).is_ok());
    }

    #[test]
    fn parallel_attempts_are_counted_as_they_begin() {
        let l = SignInLimiter::default();
        let t = Instant::now();
        let admitted = (0..30)
            .filter(|_| l.begin("carol", None, t).is_ok())
            .count();
        assert_eq!(admitted as u32, ACCOUNT_FREE);
    }

    #[test]
    fn an_address_trying_many_accounts_is_slowed() {
        let l = SignInLimiter::default();
        let t = Instant::now();
        let ip: IpAddr = "192.0.2.9".parse().unwrap();
        // Concurrent attempts on many accounts are not failures yet...
        for i in 0..ADDRESS_FREE {
            l.begin(&format!("user{i}"), Some(ip), t).unwrap();
        }
        assert!(l.begin("fresh-name", Some(ip), t).is_ok());
        // ...judged failures are.
        for _ in 0..ADDRESS_FREE {
            l.failed(Some(ip), t);
        }
        assert!(l.begin("another-name", Some(ip), t).is_err());
        assert!(l.begin("fresh-name", None, t).is_ok());
        // A huge "user name" is stored as at most 64 characters.
        l.begin(&"x".repeat(100_000), None, t).unwrap();
        let recs = l.records.lock().unwrap();
        assert!(recs.keys().all(|k| match k {
            Key::Account(a) => a.len() <= 64,
            Key::Address(_) => true,
        }));
    }
}
