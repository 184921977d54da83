//! The keyring: versioned 256-bit data keys kept in a key file, and sealing
//! with XChaCha20-Poly1305.
//!
//! A sealed value is `v<version>.<base64url(nonce ‖ ciphertext ‖ tag)>` with a
//! random 192-bit nonce. The associated data names the owning table, column and
//! row, so a sealed value copied into another row or column does not open.
//!
//! The key file holds one `key <version> <base64>` line per key; the highest
//! version seals, every listed version opens. It is created with mode 0600 and
//! refused if group or others may read it.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use zeroize::Zeroizing;

#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("key file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("sealed value was made with key version {0}, which the key file does not hold")]
    UnknownVersion(u32),
    #[error("sealed value is malformed")]
    Malformed,
    /// Wrong key, wrong row/column, or tampered ciphertext: indistinguishable on purpose.
    #[error("sealed value does not open (wrong key, moved to another row, or altered)")]
    Open,
}

/// Where a sealed value lives: bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct Aad<'a> {
    pub table: &'a str,
    pub column: &'a str,
    pub row: &'a str,
}

impl std::fmt::Debug for Keyring {
    /// Versions and path only: a key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keyring")
            .field("path", &self.path)
            .field("versions", &self.versions())
            .finish()
    }
}

impl Aad<'_> {
    fn bytes(&self) -> Vec<u8> {
        format!("steward/{}/{}/{}", self.table, self.column, self.row).into_bytes()
    }
}

pub struct Keyring {
    keys: BTreeMap<u32, Zeroizing<[u8; 32]>>,
    path: PathBuf,
}

const HEADER: &str = "# Steward key file: the keys that seal stored credentials.\n\
# Keep it secret and back it up with the database; without it nothing sealed can be opened.\n";

impl Keyring {
    /// Reads the key file at `path`, creating it with one new key when it does
    /// not exist and `create` is true.
    pub fn load_or_create(path: &Path, create: bool) -> Result<Self, KeyringError> {
        let err = |message: String| KeyringError::File {
            path: path.to_owned(),
            message,
        };
        match std::fs::metadata(path) {
            Ok(meta) => {
                let mode = meta.permissions().mode() & 0o777;
                if mode & 0o077 != 0 {
                    return Err(err(format!(
                        "is readable by other users (mode {mode:03o}); run `chmod 600 {}`",
                        path.display()
                    )));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
                let ring = Self {
                    keys: BTreeMap::from([(1, Zeroizing::new(crate::token::random_bytes::<32>()))]),
                    path: path.to_owned(),
                };
                ring.write_new(path)?;
                return Ok(ring);
            }
            Err(e) => return Err(err(format!("cannot be read: {e}"))),
        }
        let text = Zeroizing::new(
            std::fs::read_to_string(path).map_err(|e| err(format!("cannot be read: {e}")))?,
        );
        let mut keys = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bad = || {
                err(format!(
                    "line {} is not `key <version> <base64 32 bytes>`",
                    n + 1
                ))
            };
            let mut parts = line.split_whitespace();
            if parts.next() != Some("key") {
                return Err(bad());
            }
            let version: u32 = parts.next().and_then(|v| v.parse().ok()).ok_or_else(bad)?;
            let raw = Zeroizing::new(
                STANDARD
                    .decode(parts.next().ok_or_else(bad)?)
                    .map_err(|_| bad())?,
            );
            let key: [u8; 32] = raw.as_slice().try_into().map_err(|_| bad())?;
            if keys.insert(version, Zeroizing::new(key)).is_some() {
                return Err(err(format!("version {version} is listed twice")));
            }
        }
        if keys.is_empty() {
            return Err(err("holds no key".into()));
        }
        Ok(Self {
            keys,
            path: path.to_owned(),
        })
    }

    pub fn current_version(&self) -> u32 {
        self.keys.keys().next_back().copied().unwrap_or(0)
    }

    pub fn versions(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn seal(&self, plaintext: &[u8], aad: Aad<'_>) -> String {
        let version = self.current_version();
        let key = &self.keys[&version];
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        let nonce_bytes = crate::token::random_bytes::<24>();
        let nonce = XNonce::from_slice(&nonce_bytes);
        let aad = aad.bytes();
        // Encryption with a valid key and in-memory buffers cannot fail.
        let ct = cipher
            .encrypt(
                nonce,
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .unwrap_or_default();
        let mut out = nonce_bytes.to_vec();
        out.extend_from_slice(&ct);
        format!("v{version}.{}", URL_SAFE_NO_PAD.encode(out))
    }

    pub fn open(&self, sealed: &str, aad: Aad<'_>) -> Result<Zeroizing<Vec<u8>>, KeyringError> {
        let version = Self::version_of(sealed).ok_or(KeyringError::Malformed)?;
        let key = self
            .keys
            .get(&version)
            .ok_or(KeyringError::UnknownVersion(version))?;
        let body = sealed
            .split_once('.')
            .map(|(_, b)| b)
            .ok_or(KeyringError::Malformed)?;
        let raw = URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|_| KeyringError::Malformed)?;
        if raw.len() < 24 + 16 {
            return Err(KeyringError::Malformed);
        }
        let (nonce, ct) = raw.split_at(24);
        let cipher = XChaCha20Poly1305::new(key.as_ref().into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ct,
                    aad: &aad.bytes(),
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| KeyringError::Open)
    }

    /// The key version a sealed value was made with.
    pub fn version_of(sealed: &str) -> Option<u32> {
        sealed.strip_prefix('v')?.split_once('.')?.0.parse().ok()
    }

    /// Adds a new current key and writes the file (atomically, 0600) before it
    /// is used, so nothing is ever sealed under a key that is not on disk.
    pub fn add_key(&mut self) -> Result<u32, KeyringError> {
        let version = self.current_version() + 1;
        let mut next = self.keys.clone();
        next.insert(version, Zeroizing::new(crate::token::random_bytes::<32>()));
        let candidate = Self {
            keys: next,
            path: self.path.clone(),
        };
        candidate.replace_file()?;
        self.keys = candidate.keys;
        Ok(version)
    }

    /// Drops keys nothing is sealed under any more (the caller says which are
    /// still used); the current key always stays.
    pub fn retire_unused(&mut self, in_use: &[u32]) -> Result<Vec<u32>, KeyringError> {
        let current = self.current_version();
        let retired: Vec<u32> = self
            .keys
            .keys()
            .copied()
            .filter(|v| *v != current && !in_use.contains(v))
            .collect();
        if retired.is_empty() {
            return Ok(retired);
        }
        let mut next = self.keys.clone();
        for v in &retired {
            next.remove(v);
        }
        let candidate = Self {
            keys: next,
            path: self.path.clone(),
        };
        candidate.replace_file()?;
        self.keys = candidate.keys;
        Ok(retired)
    }

    fn render(&self) -> Zeroizing<String> {
        let mut s = Zeroizing::new(String::from(HEADER));
        for (v, k) in &self.keys {
            s.push_str(&format!("key {v} {}\n", STANDARD.encode(k.as_ref())));
        }
        s
    }

    fn write_new(&self, path: &Path) -> Result<(), KeyringError> {
        let err = |e: std::io::Error| KeyringError::File {
            path: path.to_owned(),
            message: format!("cannot be written: {e}"),
        };
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(err)?;
        f.write_all(self.render().as_bytes()).map_err(err)?;
        f.sync_all().map_err(err)
    }

    fn replace_file(&self) -> Result<(), KeyringError> {
        let tmp = self.path.with_extension("new");
        let _ = std::fs::remove_file(&tmp);
        self.write_new(&tmp)?;
        std::fs::rename(&tmp, &self.path).map_err(|e| KeyringError::File {
            path: self.path.clone(),
            message: format!("cannot be replaced: {e}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const AAD: Aad<'static> = Aad {
        table: "secrets",
        column: "value",
        row: "DB",
    };

    #[test]
    fn seals_opens_and_binds_to_the_row() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let ring = Keyring::load_or_create(&path, true).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let sealed = ring.seal(b"hunter2", AAD);
        assert!(!sealed.contains("hunter2"));
        assert_eq!(ring.open(&sealed, AAD).unwrap().as_slice(), b"hunter2");
        let other_row = Aad {
            row: "OTHER",
            ..AAD
        };
        assert!(matches!(
            ring.open(&sealed, other_row),
            Err(KeyringError::Open)
        ));
        let other_col = Aad { column: "x", ..AAD };
        assert!(ring.open(&sealed, other_col).is_err());
        // Flip one ciphertext character.
        let mut tampered = sealed.clone().into_bytes();
        let last = tampered.len() - 2;
        tampered[last] = if tampered[last] == b'A' { b'B' } else { b'A' };
        assert!(ring
            .open(std::str::from_utf8(&tampered).unwrap(), AAD)
            .is_err());
        // Reloaded from disk, the same key opens it.
        let again = Keyring::load_or_create(&path, false).unwrap();
        assert_eq!(again.open(&sealed, AAD).unwrap().as_slice(), b"hunter2");
    }

    #[test]
    fn rotation_keeps_old_values_openable_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        let mut ring = Keyring::load_or_create(&path, true).unwrap();
        let old = ring.seal(b"a", AAD);
        assert_eq!(ring.add_key().unwrap(), 2);
        let new = ring.seal(b"a", AAD);
        assert_eq!(Keyring::version_of(&new), Some(2));
        assert!(ring.open(&old, AAD).is_ok());
        assert_eq!(ring.retire_unused(&[1]).unwrap(), Vec::<u32>::new());
        assert_eq!(ring.retire_unused(&[]).unwrap(), vec![1]);
        let reloaded = Keyring::load_or_create(&path, false).unwrap();
        assert_eq!(reloaded.versions(), vec![2]);
        assert!(matches!(
            reloaded.open(&old, AAD),
            Err(KeyringError::UnknownVersion(1))
        ));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn refuses_readable_or_missing_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key");
        assert!(Keyring::load_or_create(&path, false)
            .unwrap_err()
            .to_string()
            .contains("cannot be read"));
        Keyring::load_or_create(&path, true).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = Keyring::load_or_create(&path, true)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("readable by other users") && e.contains("chmod 600"),
            "{e}"
        );
    }
}
