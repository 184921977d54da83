//! Secrets at run time: which `${secret:NAME}` references a job makes, opening
//! them just before an attempt, substituting them into that attempt's spec, and
//! the values to mask in its output. The engine never stores a value; a
//! [`SecretSource`] (the vault, wired by the binary) opens them.

use secrecy::{ExposeSecret as _, SecretString};
use std::collections::{BTreeSet, HashMap};
use steward_domain::secret::{decode_url_references, references, substitute};
use steward_domain::{HttpUrl, JobSpec, SecretName, ValidationError};
pub use steward_vault::{NoSecrets, SecretSource};

/// Every reference in the places a spec may carry one, with the field it is in.
pub fn spec_references(spec: &JobSpec) -> Result<BTreeSet<SecretName>, ValidationError> {
    let mut out = BTreeSet::new();
    let mut scan = |field: String, text: &str| -> Result<(), ValidationError> {
        out.extend(references(text).map_err(|e| ValidationError::new(field, e.message))?);
        Ok(())
    };
    match spec {
        JobSpec::Command(c) => {
            for (i, a) in c.argv.iter().enumerate() {
                scan(format!("spec.argv[{i}]"), a)?;
            }
            for (k, v) in &c.env {
                scan(format!("spec.env.{k}"), v)?;
            }
        }
        JobSpec::Http(h) => {
            scan(
                "spec.url".into(),
                &decode_url_references(h.url.as_url().as_str()),
            )?;
            for (k, v) in &h.headers {
                scan(format!("spec.headers.{k}"), v)?;
            }
            if let Some(b) = &h.body {
                scan("spec.body".into(), b)?;
            }
        }
    }
    Ok(out)
}

/// The spec of one attempt with its references replaced by values.
pub fn substitute_spec(
    spec: &JobSpec,
    values: &HashMap<SecretName, SecretString>,
) -> Result<JobSpec, String> {
    let lookup = |n: &SecretName| values.get(n).map(|v| v.expose_secret().to_owned());
    let sub = |t: &str| substitute(t, &lookup);
    Ok(match spec {
        JobSpec::Command(c) => {
            let mut c = c.clone();
            for a in &mut c.argv {
                *a = sub(a)?;
            }
            for v in c.env.values_mut() {
                *v = sub(v)?;
            }
            JobSpec::Command(c)
        }
        JobSpec::Http(h) => {
            let mut h = h.clone();
            let url = sub(&decode_url_references(h.url.as_url().as_str()))?;
            // The error of a URL that no longer parses must not quote it.
            h.url = HttpUrl::parse(&url)
                .map_err(|_| "the URL is invalid once its secrets are filled in".to_owned())?;
            for v in h.headers.values_mut() {
                *v = sub(v)?;
            }
            if let Some(b) = &mut h.body {
                *b = sub(b)?;
            }
            JobSpec::Http(h)
        }
    })
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
}
