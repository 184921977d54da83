//! Unknown query parameters are refused, never ignored: a client that sends
//! `?tag=x` to a route without such a filter would otherwise silently get
//! everything. The accepted names come from the OpenAPI document itself, so
//! the document and the server cannot disagree about them.

use crate::extract::invalid_parameter;
use axum::extract::{MatchedPath, Request};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::OnceLock;

type Table = HashMap<(String, String), Vec<String>>;

/// (METHOD, route pattern) → the query parameter names its operation declares,
/// read from the served document.
fn table() -> &'static Table {
    static TABLE: OnceLock<Table> = OnceLock::new();
    TABLE.get_or_init(|| {
        let doc = crate::api::document::document();
        let mut t = Table::new();
        for (path, item) in doc["paths"].as_object().into_iter().flatten() {
            for (method, op) in item.as_object().into_iter().flatten() {
                let names = op["parameters"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|p| p["in"] == "query")
                    .filter_map(|p| p["name"].as_str().map(str::to_owned))
                    .collect();
                t.insert((method.to_uppercase(), path.clone()), names);
            }
        }
        t
    })
}

/// Route layer: refuses a query parameter the matched operation does not
/// declare (routes outside the document, like `/healthz`, declare none).
pub async fn refuse_unknown(req: Request, next: Next) -> Response {
    let Some(query) = req.uri().query().filter(|q| !q.is_empty()) else {
        return next.run(req).await;
    };
    let Some(path) = req.extensions().get::<MatchedPath>() else {
        return next.run(req).await;
    };
    let method = if req.method() == axum::http::Method::HEAD {
        "GET"
    } else {
        req.method().as_str()
    };
    let known: &[String] = table()
        .get(&(method.to_owned(), path.as_str().to_owned()))
        .map_or(&[], Vec::as_slice);
    for (name, _) in url::form_urlencoded::parse(query.as_bytes()) {
        if !known.iter().any(|k| *k == name) {
            let accepted = if known.is_empty() {
                "this route takes no query parameters".to_owned()
            } else {
                format!("this route accepts {}", known.join(", "))
            };
            let mut e = invalid_parameter(
                name.into_owned(),
                format!("unknown query parameter; {accepted}"),
            );
            e.code = "unknown_parameter";
            return e.into_response();
        }
    }
    next.run(req).await
}
