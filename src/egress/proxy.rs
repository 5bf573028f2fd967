//! The requests of one proxy connection: CONNECT tunnels, absolute-form forwarding, and the model route.

use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Incoming};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::upgrade::OnUpgrade;
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::connect::{ConnectError, connect};
use super::rules::{is_loopback_name, listed_literally, normalize_host};
use super::{CONNECT_TIMEOUT, EgressRules, MAX_HEAD, ModelRoute, Refused};

type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every answer's body: a short text of ours, or an upstream's body streamed as it arrives.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// A CONNECT that succeeded, waiting for its connection to hand over the client side.
pub(crate) struct OpenTunnel {
    upgrade: OnUpgrade,
    upstream: TcpStream,
    host: String,
}

impl OpenTunnel {
    /// Copies both ways until either side closes.
    pub(crate) async fn run(mut self) {
        match self.upgrade.await {
            Ok(client) => {
                let mut client = TokioIo::new(client);
                match tokio::io::copy_bidirectional(&mut client, &mut self.upstream).await {
                    Ok((up, down)) => {
                        tracing::debug!(host = %self.host, up, down, "egress: tunnel closed")
                    }
                    Err(e) => {
                        tracing::debug!(host = %self.host, error = %e, "egress: tunnel ended")
                    }
                }
            }
            Err(e) => tracing::debug!(host = %self.host, error = %e, "egress: no upgrade"),
        }
    }
}

/// Where a connection's CONNECT leaves its tunnel for the connection task to run.
#[derive(Clone, Default)]
pub(crate) struct TunnelSlot(Arc<Mutex<Option<OpenTunnel>>>);

impl TunnelSlot {
    pub(crate) fn take(&self) -> Option<OpenTunnel> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).take()
    }
    fn put(&self, tunnel: OpenTunnel) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = Some(tunnel);
    }
}

pub(crate) struct Proxy {
    rules: Arc<EgressRules>,
    refused: Refused,
}

fn text(status: StatusCode, msg: &str) -> Response<ProxyBody> {
    let mut resp = Response::new(
        Full::new(Bytes::from(format!("{msg}\n")))
            .map_err(|never| match never {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

/// Headers that belong to one hop (and `Proxy-*`), removed both ways.
fn strip_hop_headers(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
    let proxy: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with("proxy-"))
        .cloned()
        .collect();
    for name in proxy {
        headers.remove(name);
    }
}

fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(needle) {
            out.extend_from_slice(with);
            i += needle.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

/// Replaces each placeholder by its secret in every header value; a value that now holds a secret is marked
/// sensitive.
pub(crate) fn insert_secrets(headers: &mut HeaderMap, secrets: &[(String, String)]) {
    for value in headers.values_mut() {
        let mut bytes = value.as_bytes().to_vec();
        let mut changed = false;
        for (placeholder, secret) in secrets {
            if placeholder.is_empty()
                || !bytes
                    .windows(placeholder.len())
                    .any(|w| w == placeholder.as_bytes())
            {
                continue;
            }
            bytes = replace_all(&bytes, placeholder.as_bytes(), secret.as_bytes());
            changed = true;
        }
        if changed && let Ok(mut new) = HeaderValue::from_bytes(&bytes) {
            new.set_sensitive(true);
            *value = new;
        }
    }
}

/// The model route's client: no proxy, no redirects, shared by every job (one connection pool).
fn model_client() -> Result<&'static frankenstein::reqwest::Client, String> {
    static CLIENT: OnceLock<Result<frankenstein::reqwest::Client, String>> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            frankenstein::reqwest::Client::builder()
                .no_proxy()
                .redirect(frankenstein::reqwest::redirect::Policy::none())
                .connect_timeout(CONNECT_TIMEOUT)
                .build()
                .map_err(|e| format!("cannot build the model client: {e}"))
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// The upstream URL of a model request: the route's base joined with the request's path and query.
pub(crate) fn model_url(route: &ModelRoute, uri: &Uri) -> Option<frankenstein::reqwest::Url> {
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let path = if path.starts_with('/') { path } else { "/" };
    frankenstein::reqwest::Url::parse(&format!("{}{path}", route.upstream.trim_end_matches('/')))
        .ok()
}

impl Proxy {
    pub(crate) fn new(rules: Arc<EgressRules>, refused: Refused) -> Self {
        Proxy { rules, refused }
    }

    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        tunnel: &TunnelSlot,
    ) -> Response<ProxyBody> {
        // hyper stops reading a head near its buffer's size; this holds the exact bound.
        if head_size(&req) > MAX_HEAD {
            let mut resp = text(
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "televibe egress: request head too large",
            );
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            return resp;
        }
        if req.method() == Method::CONNECT {
            return self.connect(req, tunnel).await;
        }
        let Some(authority) = req.uri().authority().cloned() else {
            return self.model(req).await;
        };
        if req.uri().scheme_str() != Some("http") {
            return text(
                StatusCode::BAD_REQUEST,
                "televibe egress: absolute form is for http:// only; use CONNECT for https",
            );
        }
        let host = normalize_host(authority.host());
        let port = authority.port_u16().unwrap_or(80);
        if is_loopback_name(&host) && !listed_literally(&self.rules, &host, port) {
            return self.model(req).await;
        }
        self.forward(req, &host, port).await
    }

    fn refuse(&self, host: &str, why: &str) -> Response<ProxyBody> {
        tracing::debug!(host, "egress: refused");
        (self.refused)(host);
        text(StatusCode::FORBIDDEN, why)
    }

    fn failed(host: &str, why: &str) -> Response<ProxyBody> {
        tracing::debug!(host, error = why, "egress: upstream failed");
        text(StatusCode::BAD_GATEWAY, &format!("televibe egress: {why}"))
    }

    async fn connect(
        &self,
        mut req: Request<Incoming>,
        tunnel: &TunnelSlot,
    ) -> Response<ProxyBody> {
        let Some((host, port)) = req
            .uri()
            .authority()
            .and_then(|a| Some((normalize_host(a.host()), a.port_u16()?)))
        else {
            return text(
                StatusCode::BAD_REQUEST,
                "televibe egress: CONNECT needs host:port",
            );
        };
        let upstream = match connect(&self.rules, &host, port).await {
            Ok(s) => s,
            Err(ConnectError::Refused(why)) => return self.refuse(&host, &why),
            Err(ConnectError::Failed(why)) => return Self::failed(&host, &why),
        };
        tracing::debug!(host, port, "egress: tunnel");
        tunnel.put(OpenTunnel {
            upgrade: hyper::upgrade::on(&mut req),
            upstream,
            host,
        });
        let mut resp = Response::new(empty());
        resp.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(
                b"Connection established",
            ));
        resp
    }

    /// Forwards an absolute-form plain http request to its origin and streams the answer back.
    async fn forward(&self, req: Request<Incoming>, host: &str, port: u16) -> Response<ProxyBody> {
        let upstream = match connect(&self.rules, host, port).await {
            Ok(s) => s,
            Err(ConnectError::Refused(why)) => return self.refuse(host, &why),
            Err(ConnectError::Failed(why)) => return Self::failed(host, &why),
        };
        tracing::debug!(host, port, "egress: forward");
        let (mut parts, body) = req.into_parts();
        let authority = parts
            .uri
            .authority()
            .map(|a| a.as_str().rsplit('@').next().unwrap_or("").to_string());
        let path = parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        parts.uri = match path.parse() {
            Ok(u) => u,
            Err(_) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    "televibe egress: bad request target",
                );
            }
        };
        parts.version = hyper::Version::HTTP_11;
        strip_hop_headers(&mut parts.headers);
        if let Some(Ok(h)) = authority.map(|a| HeaderValue::from_str(&a)) {
            parts.headers.insert(header::HOST, h);
        }
        let (mut sender, conn) =
            match hyper::client::conn::http1::handshake(TokioIo::new(upstream)).await {
                Ok(pair) => pair,
                Err(e) => return Self::failed(host, &e.to_string()),
            };
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "egress: upstream connection ended");
            }
        });
        match sender.send_request(Request::from_parts(parts, body)).await {
            Ok(resp) => {
                let (mut parts, body) = resp.into_parts();
                strip_hop_headers(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(e) => Self::failed(host, &e.to_string()),
        }
    }

    /// Sends a request to the model route with its secrets in place and streams the answer back.
    async fn model(&self, req: Request<Incoming>) -> Response<ProxyBody> {
        let Some(route) = &self.rules.model else {
            return text(
                StatusCode::FORBIDDEN,
                "televibe egress: this job has no model route",
            );
        };
        let Some(url) = model_url(route, req.uri()) else {
            return text(
                StatusCode::BAD_GATEWAY,
                "televibe egress: the model upstream is not a valid URL",
            );
        };
        let client = match model_client() {
            Ok(c) => c,
            Err(why) => return Self::failed("model", &why),
        };
        let (mut parts, body) = req.into_parts();
        strip_hop_headers(&mut parts.headers);
        parts.headers.remove(header::HOST);
        let mut secrets = route.secrets.clone();
        for (placeholder, login) in &route.fresh {
            if let Some(token) = login.access_token().await {
                secrets.push((placeholder.clone(), token));
            }
        }
        insert_secrets(&mut parts.headers, &secrets);
        let upstream_host = url.host_str().unwrap_or("model").to_string();
        let mut request = client.request(parts.method, url).headers(parts.headers);
        if !body.is_end_stream() {
            request = request.body(frankenstein::reqwest::Body::wrap(body));
        }
        tracing::debug!(host = %upstream_host, "egress: model request");
        match request.send().await {
            Ok(resp) => {
                let resp: Response<frankenstein::reqwest::Body> = resp.into();
                let (mut parts, body) = resp.into_parts();
                if parts.status == StatusCode::TOO_MANY_REQUESTS {
                    let now = chrono::Utc::now().timestamp();
                    let reset = super::reset_of_429(&parts.headers, now);
                    tracing::info!(host = %upstream_host, reset, "egress: the model API answered 429");
                    if reset.is_some() {
                        *route.limit_reset.lock().unwrap_or_else(|p| p.into_inner()) = reset;
                    }
                }
                parts.version = hyper::Version::HTTP_11;
                strip_hop_headers(&mut parts.headers);
                Response::from_parts(parts, body.map_err(BoxError::from).boxed_unsync())
            }
            Err(e) => Self::failed(&upstream_host, &without_url(&e)),
        }
    }
}

/// An upstream error's text without its URL (the query could carry a secret).
fn without_url(e: &frankenstein::reqwest::Error) -> String {
    let mut text = e.to_string();
    if let Some(url) = e.url() {
        text = text.replace(url.as_str(), "the model upstream");
    }
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

/// The bytes a request head took on the wire, near enough: request line and `name: value\r\n` lines.
fn head_size<B>(req: &Request<B>) -> usize {
    let line = req.method().as_str().len() + req.uri().to_string().len() + 12;
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + line
        + 2
}

fn empty() -> ProxyBody {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed_unsync()
}
