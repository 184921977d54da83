//! Secrets at run time: the engine never stores a value; a [`SecretSource`]
//! (the vault, wired by the binary) opens the references an attempt makes
//! (found and filled in by `kinds::fields`), and their values are masked in
//! the attempt's output.

use secrecy::{ExposeSecret as _, SecretString};
pub use steward_vault::{NoSecrets, SecretSource};

/// What to mask for one opened value: the value, and the forms it takes
/// once written into a URL's path or query or into JSON text (a kind may
/// print the URL it called, a server may echo a request): as many as differ.
pub fn mask_forms(value: &SecretString) -> Vec<SecretString> {
    let v = value.expose_secret();
    let mut forms = vec![v.to_owned()];
    let mut path = url::Url::parse("http://steward.invalid/").ok();
    if let Some(u) = path.as_mut() {
        u.set_path(v);
        forms.push(u.path().trim_start_matches('/').to_owned());
    }
    forms.push(url::form_urlencoded::byte_serialize(v.as_bytes()).collect());
    if let Ok(json) = serde_json::to_string(v) {
        forms.push(json.trim_matches('"').to_owned());
    }
    forms.sort();
    forms.dedup();
    forms.into_iter().map(SecretString::from).collect()
}

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

    #[test]
    fn a_value_is_masked_as_urls_and_json_write_it_too() {
        let forms = mask_forms(&SecretString::from("p@ss wörd\"x"));
        let text = "GET /a/p@ss%20w%C3%B6rd%22x?k=p%40ss+w%C3%B6rd%22x json \"p@ss wörd\\\"x\"";
        assert_eq!(
            mask(text, &forms),
            "GET /a/[secret]?k=[secret] json \"[secret]\""
        );
    }
}
