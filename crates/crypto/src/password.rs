//! Argon2id password hashing with bounded concurrency.
//!
//! Parameters: m = 64 MiB, t = 3, p = 1, 32-byte output, PHC strings (OWASP's
//! first Argon2id profile; the seed documents ask for no less). Each hash holds
//! 64 MiB for its duration, so hashing runs on blocking threads behind a
//! semaphore: a flood of sign-ins queues instead of exhausting memory. A
//! sign-in for an unknown user verifies against a dummy hash made with the same
//! parameters, so it costs the same time as a wrong password.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use secrecy::{ExposeSecret as _, SecretString};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub const MEMORY_KIB: u32 = 64 * 1024;
pub const ITERATIONS: u32 = 3;
pub const PARALLELISM: u32 = 1;
pub const OUTPUT_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("password hashing failed: {0}")]
    Hash(String),
    #[error("password hashing was interrupted")]
    Interrupted,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Right password; `needs_rehash` when the stored hash used other parameters.
    Valid {
        needs_rehash: bool,
    },
    Invalid,
}

#[derive(Clone)]
pub struct PasswordHasher {
    inner: Arc<Inner>,
}

struct Inner {
    params: Params,
    permits: Semaphore,
    /// Made on a background thread at construction, so start-up does not wait
    /// for it; an unknown-user check that comes first waits instead.
    dummy: std::sync::OnceLock<Result<String, String>>,
}

fn argon(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

impl PasswordHasher {
    /// `concurrency` hashes may run at once (each holds 64 MiB). Starts making
    /// the dummy hash for unknown users in the background.
    pub fn new(concurrency: usize) -> Result<Self, PasswordError> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, Some(OUTPUT_LEN))
            .map_err(|e| PasswordError::Hash(e.to_string()))?;
        let inner = Arc::new(Inner {
            params,
            permits: Semaphore::new(concurrency.max(1)),
            dummy: std::sync::OnceLock::new(),
        });
        let warm = inner.clone();
        std::thread::spawn(move || {
            warm.dummy();
        });
        Ok(Self { inner })
    }

    /// One permit per core, at most 8: the CPU is saturated by then anyway,
    /// and memory stays at 64 MiB × permits.
    pub fn sized_to_machine() -> Result<Self, PasswordError> {
        let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
        Self::new(cores.min(8))
    }

    pub async fn hash(&self, password: &SecretString) -> Result<String, PasswordError> {
        let _permit = self
            .inner
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Interrupted)?;
        let inner = self.inner.clone();
        let pw = password.clone();
        tokio::task::spawn_blocking(move || hash_blocking(&inner.params, pw.expose_secret()))
            .await
            .map_err(|_| PasswordError::Interrupted)?
    }

    /// Verifies against `stored`, or against the dummy hash when there is no
    /// user, so both paths cost one Argon2id computation.
    pub async fn verify(&self, stored: Option<&str>, password: &SecretString) -> Verification {
        let Ok(_permit) = self.inner.permits.acquire().await else {
            return Verification::Invalid;
        };
        let inner = self.inner.clone();
        let known = stored.is_some();
        let stored = stored.map(str::to_owned);
        let pw = password.clone();
        let result = tokio::task::spawn_blocking(move || {
            let phc = match stored {
                Some(s) => s,
                None => inner.dummy(),
            };
            let Ok(parsed) = PasswordHash::new(&phc) else {
                return Verification::Invalid;
            };
            // Verify with the parameters the hash was made with (from the PHC string).
            let ok = Argon2::default()
                .verify_password(pw.expose_secret().as_bytes(), &parsed)
                .is_ok();
            if !ok {
                return Verification::Invalid;
            }
            Verification::Valid {
                needs_rehash: !matches_params(&parsed, &inner.params),
            }
        })
        .await
        .unwrap_or(Verification::Invalid);
        if known {
            result
        } else {
            Verification::Invalid
        }
    }
}

impl Inner {
    fn dummy(&self) -> String {
        self.dummy
            .get_or_init(|| {
                hash_blocking(
                    &self.params,
                    &crate::token::sha256_hex(&crate::token::random_bytes::<16>()),
                )
                .map_err(|e| e.to_string())
            })
            .clone()
            // If even that failed, a string that parses as no hash: still invalid.
            .unwrap_or_default()
    }
}

fn hash_blocking(params: &Params, password: &str) -> Result<String, PasswordError> {
    let salt = SaltString::encode_b64(&crate::token::random_bytes::<16>())
        .map_err(|e| PasswordError::Hash(e.to_string()))?;
    argon(params)
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| PasswordError::Hash(e.to_string()))
}

fn matches_params(hash: &PasswordHash<'_>, current: &Params) -> bool {
    let Ok(used) = Params::try_from(hash) else {
        return false;
    };
    hash.algorithm.as_str() == "argon2id"
        && hash.version == Some(Version::V0x13 as u32)
        && used.m_cost() == current.m_cost()
        && used.t_cost() == current.t_cost()
        && used.p_cost() == current.p_cost()
        && hash.hash.map(|h| h.len()) == Some(OUTPUT_LEN)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_verify_and_flag_old_parameters() {
        let h = PasswordHasher::new(2).unwrap();
        let pw = SecretString::from("correct horse battery staple");
        let phc = h.hash(&pw).await.unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=65536,t=3,p=1$"), "{phc}");
        assert_eq!(
            h.verify(Some(&phc), &pw).await,
            Verification::Valid {
                needs_rehash: false
            }
        );
        assert_eq!(
            h.verify(Some(&phc), &SecretString::from("wrong")).await,
            Verification::Invalid
        );
        // No user: always invalid, even for the dummy's own (random) password.
        assert_eq!(h.verify(None, &pw).await, Verification::Invalid);

        // A hash made with weaker parameters still verifies, and asks for a rehash.
        let weak = Params::new(8 * 1024, 1, 1, Some(32)).unwrap();
        let old = hash_blocking(&weak, "correct horse battery staple").unwrap();
        assert_eq!(
            h.verify(Some(&old), &pw).await,
            Verification::Valid { needs_rehash: true }
        );
    }
}
