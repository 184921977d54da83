//! Secrets at run time: the engine never stores a value; a [`SecretSource`]
//! (the vault, wired by the binary) opens the references an attempt makes
//! (found and filled in by `kinds::fields`), and their values are masked in
//! the attempt's output.

use secrecy::{ExposeSecret as _, SecretString};
pub use steward_vault::{NoSecrets, SecretSource};

/// Replaces every occurrence of a secret value (and of each of its lines) in `text`.
pub fn mask(text: &str, values: &[SecretString]) -> String {
    let mut out = text.to_owned();
    for v in values {
        let v = v.expose_secret();
        for part in std::iter::once(v).chain(v.lines().filter(|l| l.len() >= 4)) {
            if !part.is_empty() && out.contains(part) {
                out = out.replace(part, "[secret]");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_values_and_their_lines() {
        let vals = vec![
            SecretString::from("hunter2"),
            SecretString::from("line-one\nline-two"),
        ];
        assert_eq!(mask("pw=hunter2 x", &vals), "pw=[secret] x");
        assert_eq!(mask("got line-two", &vals), "got [secret]");
    }
}
