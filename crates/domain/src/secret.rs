//! Named secrets and the `${secret:NAME}` references jobs make to them.
//!
//! A definition holds only references; values are opened at run time by the
//! engine and substituted into the argv, environment, URL or headers of that
//! one run.

use crate::error::ValidationError;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt;

/// `[A-Za-z_][A-Za-z0-9_]{0,63}`: the shape of an environment variable, so the
/// same name reads naturally in `${secret:DB_PASSWORD}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SecretName(String);

impl SecretName {
    pub fn parse(s: &str) -> Result<Self, ValidationError> {
        let mut chars = s.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
        if !first_ok || s.len() > 64 || !chars.all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(ValidationError::new(
                "",
                "a secret name is 1 to 64 letters, digits and '_', not starting with a digit",
            ));
        }
        Ok(Self(s.to_owned()))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for SecretName {
    type Error = ValidationError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}
impl From<SecretName> for String {
    fn from(v: SecretName) -> String {
        v.0
    }
}
impl fmt::Display for SecretName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

const OPEN: &str = "${secret:";
/// The same reference after URL parsing percent-encoded its braces (in a path).
const OPEN_ENCODED: &str = "$%7Bsecret:";
const CLOSE_ENCODED: &str = "%7D";

/// Rewrites percent-encoded references back to their plain form, for URLs.
pub fn decode_url_references(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(start) = rest.find(OPEN_ENCODED) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN_ENCODED.len()..];
        match after.find(CLOSE_ENCODED) {
            Some(end) => {
                out.push_str(OPEN);
                out.push_str(&after[..end]);
                out.push('}');
                rest = &after[end + CLOSE_ENCODED.len()..];
            }
            None => {
                out.push_str(OPEN_ENCODED);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

/// Every secret a text refers to. A malformed reference (`${secret:` without a
/// valid name and `}`) is an error, not silently literal text.
pub fn references(text: &str) -> Result<BTreeSet<SecretName>, ValidationError> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        let after = &rest[start + OPEN.len()..];
        let end = after.find('}').ok_or_else(|| {
            ValidationError::new("", "a ${secret:NAME} reference is not closed with '}'")
        })?;
        let name = SecretName::parse(&after[..end]).map_err(|e| {
            ValidationError::new("", format!("in a ${{secret:...}} reference, {}", e.message))
        })?;
        out.insert(name);
        rest = &after[end + 1..];
    }
    Ok(out)
}

/// Replaces every reference with its value from `lookup`. References were
/// checked at save time; one that no longer resolves is an error naming it.
pub fn substitute(
    text: &str,
    lookup: &dyn Fn(&SecretName) -> Option<String>,
) -> Result<String, String> {
    if !text.contains(OPEN) {
        return Ok(text.to_owned());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        out.push_str(&rest[..start]);
        let after = &rest[start + OPEN.len()..];
        let end = after
            .find('}')
            .ok_or_else(|| "unclosed ${secret:...} reference".to_owned())?;
        let name = SecretName::parse(&after[..end]).map_err(|e| e.message)?;
        let value = lookup(&name).ok_or_else(|| format!("secret {name} does not exist"))?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_and_substitutes_references() {
        let refs = references("user=${secret:DB_USER} pw=${secret:DB_PW} ${secret:DB_PW}").unwrap();
        assert_eq!(
            refs.iter().map(SecretName::as_str).collect::<Vec<_>>(),
            vec!["DB_PW", "DB_USER"]
        );
        let out = substitute("a${secret:X}b", &|n| {
            (n.as_str() == "X").then(|| "v".into())
        })
        .unwrap();
        assert_eq!(out, "avb");
        assert!(substitute("${secret:Y}", &|_| None)
            .unwrap_err()
            .contains("Y"));
    }

    #[test]
    fn url_encoded_references_are_found() {
        let u = crate::HttpUrl::parse("https://hc.example/ping/${secret:UUID}?k=${secret:KEY}")
            .unwrap();
        let text = decode_url_references(u.as_url().as_str());
        let refs = references(&text).unwrap();
        assert_eq!(refs.len(), 2, "{text}");
    }

    #[test]
    fn malformed_references_are_errors() {
        assert!(references("${secret:NAME").is_err());
        assert!(references("${secret:1BAD}").is_err());
        assert!(references("${secret:}").is_err());
        assert!(references("$HOME ${other:x}").unwrap().is_empty());
    }
}
