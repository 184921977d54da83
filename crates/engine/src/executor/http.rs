//! HTTP calls through the outbound policy. The response status and the start of
//! the body (bounded) are recorded in the run's output.

use super::{ExecContext, ExecResult};
use crate::kinds::http::{HttpMethod, HttpSpec};
use crate::outbound::{outbound_cause, OutboundPolicy};
use futures_util::StreamExt as _;
use steward_domain::{RunOutcome, RunStatus};

/// Response bytes recorded in the output; the rest is read and discarded.
const BODY_RECORDED: usize = 64 * 1024;

/// Two clients, built once: redirects followed (each hop re-checked) or not.
#[derive(Clone)]
pub struct HttpExecutor {
    policy: OutboundPolicy,
    follow: reqwest::Client,
    no_follow: reqwest::Client,
}

impl HttpExecutor {
    pub fn new(policy: OutboundPolicy) -> reqwest::Result<Self> {
        let ua = concat!("steward/", env!("CARGO_PKG_VERSION"));
        Ok(Self {
            follow: policy.client(true, ua)?,
            no_follow: policy.client(false, ua)?,
            policy,
        })
    }

    pub async fn execute(&self, spec: &HttpSpec, ctx: &ExecContext) -> ExecResult {
        ctx.note(&format!(
            "http {} {}",
            spec.method.as_str(),
            crate::outbound::redacted(spec.url.as_url())
        ));
        let url = spec.url.as_url().clone();
        if let Err(e) = self.policy.check_url(&url) {
            ctx.note(&e.to_string());
            return ExecResult::failed(e.to_string());
        }
        let client = if spec.follow_redirects {
            &self.follow
        } else {
            &self.no_follow
        };
        let method = match spec.method {
            HttpMethod::Get => reqwest::Method::GET,
            HttpMethod::Head => reqwest::Method::HEAD,
            HttpMethod::Post => reqwest::Method::POST,
            HttpMethod::Put => reqwest::Method::PUT,
            HttpMethod::Patch => reqwest::Method::PATCH,
            HttpMethod::Delete => reqwest::Method::DELETE,
        };
        let mut req = client
            .request(method, url)
            .timeout(spec.timeout.get().min(ctx.timeout));
        for (k, v) in &spec.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        if let Some(body) = &spec.body {
            req = req.body(body.clone());
        }
        let call = async {
            let resp = req.send().await?;
            let status = resp.status().as_u16();
            let mut body = Vec::new();
            let mut total = 0usize;
            let mut stream = resp.bytes_stream();
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                total += chunk.len();
                let room = BODY_RECORDED.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..room.min(chunk.len())]);
            }
            Ok::<_, reqwest::Error>((status, body, total))
        };
        let result = tokio::select! {
            r = call => r,
            () = ctx.cancel.cancelled() => {
                ctx.note("cancelled");
                return ExecResult {
                    status: RunStatus::Cancelled,
                    outcome: RunOutcome { error: Some("cancelled".into()), ..Default::default() },
                };
            }
        };
        match result {
            Ok((status, body, total)) => {
                ctx.note(&format!("response status {status}, {total} body bytes"));
                for line in body.split(|&b| b == b'\n') {
                    ctx.output
                        .push(ctx.clock.now(), crate::output::Stream::Stdout, line);
                }
                if total > body.len() {
                    ctx.note(&format!("body truncated after {BODY_RECORDED} bytes"));
                }
                let ok = spec.accepted_status.iter().any(|r| r.contains(status));
                ExecResult {
                    status: if ok {
                        RunStatus::Succeeded
                    } else {
                        RunStatus::Failed
                    },
                    outcome: RunOutcome {
                        detail: Some(serde_json::json!({ "status": status })),
                        error: (!ok).then(|| format!("status {status} is not in accepted_status")),
                    },
                }
            }
            Err(e) => {
                let (status, msg) = if let Some(o) = outbound_cause(&e) {
                    (RunStatus::Failed, o.to_string())
                } else if e.is_timeout() {
                    (
                        RunStatus::TimedOut,
                        format!("request timed out after {}", spec.timeout),
                    )
                } else {
                    (RunStatus::Failed, describe(&e))
                };
                ctx.note(&msg);
                ExecResult {
                    status,
                    outcome: RunOutcome {
                        error: Some(msg),
                        ..Default::default()
                    },
                }
            }
        }
    }
}

/// The error with its causes, without the URL's query (which may carry tokens).
fn describe(e: &reqwest::Error) -> String {
    let mut msg = e.without_url_ref().to_string();
    let mut cur = std::error::Error::source(e);
    while let Some(c) = cur {
        msg.push_str(": ");
        msg.push_str(&c.to_string());
        cur = c.source();
    }
    msg
}

trait WithoutUrlRef {
    fn without_url_ref(&self) -> String;
}
impl WithoutUrlRef for reqwest::Error {
    fn without_url_ref(&self) -> String {
        let mut s = self.to_string();
        if let Some(u) = self.url() {
            s = s.replace(
                u.as_str(),
                &format!("{}://{}", u.scheme(), u.host_str().unwrap_or("")),
            );
        }
        s
    }
}
