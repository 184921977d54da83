//! Steward's cryptography, behind small interfaces: the keyring and sealed
//! values ([`keyring`]), password hashing ([`password`]) and random bearer
//! secrets ([`token`]). No other crate touches a cipher or a hash parameter.
#![forbid(unsafe_code)]

pub mod keyring;
pub mod password;
pub mod token;

pub use keyring::{Aad, Keyring, KeyringError};
pub use password::{PasswordHasher, Verification};
pub use token::{sha256, BearerSecret};
