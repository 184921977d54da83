//! Extractors whose rejections are JSON errors naming what was wrong. Handlers
//! take input only through these (clippy forbids axum's own `Path` and `Query`
//! outside this module), so every malformed request gets the same error shape.

use crate::error::ApiError;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use bytes::Bytes;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use serde_json::Value;

/// A JSON body: `application/json` required, size bounded by the router's body
/// limit, exactly one JSON object (nothing after it; no array read by position
/// in place of an object, at any depth), unknown fields refused by the target
/// types, errors carry the JSON path.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "expected Content-Type: application/json",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "body_too_large",
                    "request body is larger than the limit",
                )
            } else {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_body",
                    "could not read the request body",
                )
            }
        })?;
        parse_object(&bytes).map(Self)
    }
}

/// The body as `T`, through the rules of [`ApiJson`].
pub fn parse_object<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // `from_slice` insists on the end of input after the value: trailing
    // garbage is a syntax error, not ignored.
    let value: Value = serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("malformed JSON: {e}"),
        )
    })?;
    // Parsing into a value keeps the last of repeated keys; refuse them, so no
    // two readers of one body can disagree on what it says.
    if let Err(e) = serde_json::from_slice::<NoRepeatedKeys>(bytes) {
        return Err(ApiError::invalid("", e.to_string()));
    }
    if !value.is_object() {
        return Err(ApiError::invalid(
            "",
            format!("the body must be one JSON object, not {}", describe(&value)),
        ));
    }
    // No text Steward stores may hold NUL: PostgreSQL's text refuses it, C
    // strings end at it, and no name, argument or message needs one.
    if let Some(field) = first_nul(&value, String::new()) {
        return Err(ApiError::invalid(field, "must not contain NUL bytes"));
    }
    steward_domain::strict::from_value(&value).map_err(|e| ApiError::invalid(e.field, e.message))
}

/// The path (`spec.argv[1]`, `spec.env.X`) of the first string or key holding
/// a NUL character.
fn first_nul(v: &Value, path: String) -> Option<String> {
    match v {
        Value::String(s) if s.contains('\0') => Some(path),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| first_nul(item, format!("{path}[{i}]"))),
        Value::Object(map) => map.iter().find_map(|(k, item)| {
            let here = if path.is_empty() {
                k.clone()
            } else {
                format!("{path}.{k}")
            };
            if k.contains('\0') {
                Some(here)
            } else {
                first_nul(item, here)
            }
        }),
        _ => None,
    }
}

/// Walks a JSON document and fails on the first object with a repeated key.
struct NoRepeatedKeys;

impl<'de> serde::Deserialize<'de> for NoRepeatedKeys {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = NoRepeatedKeys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("JSON")
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
                    if !seen.insert(key.clone()) {
                        return Err(de::Error::custom(format!("the key {key:?} appears twice")));
                    }
                    map.next_value::<NoRepeatedKeys>()?;
                }
                Ok(NoRepeatedKeys)
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<NoRepeatedKeys>()?.is_some() {}
                Ok(NoRepeatedKeys)
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(NoRepeatedKeys)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(NoRepeatedKeys)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(NoRepeatedKeys)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(NoRepeatedKeys)
            }
            fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
                Ok(NoRepeatedKeys)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(NoRepeatedKeys)
            }
        }
        d.deserialize_any(V)
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// Path parameters; a value of the wrong type is a JSON error naming the parameter.
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        #[allow(clippy::disallowed_types)] // wrapped here, and only here
        let r = axum::extract::Path::<T>::from_request_parts(parts, state).await;
        // A single parameter read as a plain value is reported without its
        // name; take the name from the route.
        let names: Vec<String> = axum::extract::RawPathParams::from_request_parts(parts, state)
            .await
            .map(|raw| raw.iter().map(|(k, _)| k.to_owned()).collect())
            .unwrap_or_default();
        let only_name = names
            .first()
            .filter(|_| names.len() == 1)
            .cloned()
            .unwrap_or_default();
        if let Ok(raw) = axum::extract::RawPathParams::from_request_parts(parts, state).await {
            if let Some((k, _)) = raw.iter().find(|(_, v)| v.contains('\0')) {
                return Err(invalid_parameter(k, "must not contain NUL bytes"));
            }
        }
        match r {
            Ok(axum::extract::Path(v)) => Ok(Self(v)),
            Err(axum::extract::rejection::PathRejection::FailedToDeserializePathParams(e)) => {
                use axum::extract::path::ErrorKind;
                let (key, message) = match e.kind() {
                    ErrorKind::ParseErrorAtKey {
                        key, expected_type, ..
                    } => (
                        Some(key.clone()),
                        format!("must be {}", type_words(expected_type)),
                    ),
                    ErrorKind::ParseError { expected_type, .. }
                    | ErrorKind::ParseErrorAtIndex { expected_type, .. } => {
                        (None, format!("must be {}", type_words(expected_type)))
                    }
                    ErrorKind::InvalidUtf8InPathParam { key } => {
                        (Some(key.clone()), "is not valid UTF-8".to_owned())
                    }
                    _ => (None, "malformed path parameter".to_owned()),
                };
                let field = key.unwrap_or(only_name);
                Err(invalid_parameter(field, message))
            }
            Err(_) => Err(invalid_parameter("", "malformed path parameter")),
        }
    }
}

fn type_words(rust_type: &str) -> &'static str {
    if rust_type.starts_with('i') || rust_type.starts_with('u') {
        "an integer"
    } else {
        "a valid value"
    }
}

/// 400 `invalid_parameter`: a path or query parameter that cannot be read.
pub fn invalid_parameter(field: impl Into<String>, message: impl Into<String>) -> ApiError {
    let field = field.into();
    let message = message.into();
    ApiError {
        message: if field.is_empty() {
            message
        } else {
            format!("{field}: {message}")
        },
        field: (!field.is_empty()).then_some(field),
        ..ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", "")
    }
}

/// Query parameters; malformed ones are refused with a JSON error (unknown
/// names are refused for every route by [`crate::params`], from the document).
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let q = parts.uri.query().unwrap_or("");
        let uri = format!("/?{q}")
            .parse()
            .map_err(|_| invalid_parameter("", "malformed query string"))?;
        // Decoded the way the values will be; none may hold NUL (see parse_object).
        if let Some((k, _)) =
            url::form_urlencoded::parse(q.as_bytes()).find(|(_, v)| v.contains('\0'))
        {
            return Err(invalid_parameter(
                k.into_owned(),
                "must not contain NUL bytes",
            ));
        }
        #[allow(clippy::disallowed_types)] // wrapped here, and only here
        let r = axum::extract::Query::<T>::try_from_uri(&uri);
        r.map(|axum::extract::Query(v)| Self(v)).map_err(|e| {
            let text = e.body_text();
            let text = text.trim_start_matches("Failed to deserialize query string: ");
            // serde_urlencoded names the field first: "limit: invalid digit ...".
            match text.split_once(": ") {
                Some((field, msg)) if !field.contains(' ') => invalid_parameter(field, msg),
                _ => invalid_parameter("query", text),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Inner {
        a: u32,
    }
    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
        list: Option<Vec<String>>,
    }

    #[test]
    fn one_object_with_known_fields_only() {
        let ok: Outer =
            parse_object(br#"{"name": "x", "inner": {"a": 1}, "list": ["p"]}"#).unwrap();
        assert_eq!(ok.inner, Some(Inner { a: 1 }));
        // trailing garbage, a top-level array, a nested array in place of an object
        let e = parse_object::<Outer>(br#"{"name": "x"} trailing"#).unwrap_err();
        assert_eq!(e.code, "invalid_json");
        let e = parse_object::<Outer>(br#"["x", null, null]"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("an array"), "{}", e.message);
        let e = parse_object::<Outer>(br#"{"name": "x", "inner": [1]}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inner"));
        let e = parse_object::<Outer>(br#"{"name": "x", "extra": 1}"#).unwrap_err();
        assert!(e.message.contains("extra"), "{}", e.message);
        let e = parse_object::<Outer>(br#"{"name": 5}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"));
        let e = parse_object::<Outer>(br#"{}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("name"), "{}", e.message);
        let e = parse_object::<Outer>(br#"{"name": "x", "inner": {}}"#).unwrap_err();
        assert_eq!(e.field.as_deref(), Some("inner.a"), "{}", e.message);
        let e = parse_object::<Outer>(br#"{"name": "x", "name": "y"}"#).unwrap_err();
        assert!(e.message.contains("appears twice"), "{}", e.message);
        // The real job body: a tagged spec or policies given by position.
        let ok = br#"{"name": "x", "spec": {"kind": "command", "argv": ["true"]}}"#;
        parse_object::<steward_domain::JobDefinition>(ok).unwrap();
        for bad in [
            &br#"{"name": "x", "spec": ["command", ["true"]]}"#[..],
            br#"{"name": "x", "spec": {"kind": "command", "argv": ["true"]}, "policies": ["1h"]}"#,
            br#"["x", {"kind": "command", "argv": ["true"]}]"#,
        ] {
            assert!(
                parse_object::<steward_domain::JobDefinition>(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
