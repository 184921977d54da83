//! Random bearer secrets (session ids, API tokens, reset links) and their
//! stored form. Only the SHA-256 of a secret is ever stored: a copy of the
//! database does not let anyone sign in. SHA-256 (not Argon2) is right here
//! because the secrets are 256 random bits, not human passwords.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::RngCore as _;
use sha2::{Digest, Sha256};

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

pub fn sha256_hex(data: &[u8]) -> String {
    sha256(data).iter().map(|b| format!("{b:02x}")).collect()
}

pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    rand::rng().fill_bytes(&mut b);
    b
}

/// A freshly made secret: the text handed out once, and the hash to store.
pub struct BearerSecret {
    pub text: String,
    pub hash: [u8; 32],
}

impl BearerSecret {
    /// `prefix` followed by 32 random bytes in URL-safe base64 (43 characters).
    pub fn generate(prefix: &str) -> Self {
        let text = format!("{prefix}{}", URL_SAFE_NO_PAD.encode(random_bytes::<32>()));
        let hash = sha256(text.as_bytes());
        Self { text, hash }
    }

    /// The stored form of a presented secret, for lookup.
    pub fn hash_of(presented: &str) -> [u8; 32] {
        sha256(presented.as_bytes())
    }
}

/// A value derived from a secret under a purpose label, so one secret can back
/// another (the CSRF token of a session) without the stored hash revealing it.
pub fn derive(purpose: &str, secret: &str) -> String {
    let mut h = Sha256::new();
    h.update(b"steward:");
    h.update(purpose.as_bytes());
    h.update([0]);
    h.update(secret.as_bytes());
    URL_SAFE_NO_PAD.encode(h.finalize())
}

/// Equality that takes the same time wherever the inputs differ (only the
/// length may show, and the values compared here are of fixed or public length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq as _;
    a.ct_eq(b).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_prefixed_random_and_hashed() {
        let a = BearerSecret::generate("stw_");
        let b = BearerSecret::generate("stw_");
        assert!(a.text.starts_with("stw_"));
        assert_eq!(a.text.len(), 4 + 43);
        assert_ne!(a.text, b.text);
        assert_eq!(BearerSecret::hash_of(&a.text), a.hash);
        assert_ne!(derive("csrf", &a.text), derive("other", &a.text));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
    }
}
