//! The `http` actor: hyper serving `/health/live`, `/health/ready` and `/metrics`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::task::AbortOnDropHandle;

use crate::core::Core;
use crate::supervisor::ChildMessage;
use crate::telemetry::CONTENT_TYPE;

pub struct HttpActor {
    pub core: Arc<Core>,
}

pub enum HttpMsg {
    Panic,
}

impl ChildMessage for HttpMsg {
    fn injected_panic() -> Self {
        HttpMsg::Panic
    }
}

/// The server task dies with the state, so a panicked actor never leaves a listener behind.
pub struct HttpState {
    _server: AbortOnDropHandle<()>,
}

impl Actor for HttpActor {
    type Msg = HttpMsg;
    type State = HttpState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<HttpMsg>,
        _: (),
    ) -> Result<HttpState, ActorProcessingErr> {
        let addr = self.core.config().http_listen;
        let listener = bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} (http.listen): {e}"))?;
        let bound = listener.local_addr()?;
        std::fs::write(self.core.layout().http_addr_file(), bound.to_string())?;
        tracing::info!(target: "televibe.http", address = %bound, "HTTP probes and metrics listening");
        let core = self.core.clone();
        let server = AbortOnDropHandle::new(tokio::spawn(serve(listener, core)));
        Ok(HttpState { _server: server })
    }

    async fn handle(
        &self,
        _: ActorRef<HttpMsg>,
        msg: HttpMsg,
        _: &mut HttpState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            HttpMsg::Panic => panic!("injected panic in http actor"),
        }
    }
}

/// Binds, retrying briefly while a previous incarnation's listener is being torn down.
async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(addr).await {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && tries < 20 => {
                tries += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => return other,
        }
    }
}

/// Serves connections, each under a header-read timeout and within a cap on connections at once, so slow or
/// numerous clients cannot hold the daemon's file descriptors and tasks: a client that does not finish its
/// request head in `http.header_read_timeout_secs` is disconnected, and one beyond `http.max_connections`
/// is closed as soon as it is accepted.
async fn serve(listener: TcpListener, core: Arc<Core>) {
    let header_timeout = core.config().http.header_read_timeout;
    let slots = Arc::new(Semaphore::new(core.config().http.max_connections));
    let mut refused_warned: Option<std::time::Instant> = None;
    let mut conns = tokio::task::JoinSet::new();
    loop {
        let (stream, _peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!(target: "televibe.http", error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        while conns.try_join_next().is_some() {}
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            drop(stream);
            if refused_warned.is_none_or(|t| t.elapsed() >= std::time::Duration::from_secs(60)) {
                refused_warned = Some(std::time::Instant::now());
                tracing::warn!(target: "televibe.http", max_connections = core.config().http.max_connections, "HTTP connection refused: too many at once");
            }
            continue;
        };
        let core = core.clone();
        conns.spawn(async move {
            let _permit = permit;
            let svc = service_fn(move |req| route(req, core.clone()));
            let _ = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_timeout)
                .serve_connection(TokioIo::new(stream), svc)
                .await;
        });
    }
}

fn respond(status: StatusCode, content_type: &str, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| Response::new(Full::new(Bytes::new())))
}

async fn route(
    req: Request<Incoming>,
    core: Arc<Core>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    const JSON: &str = "application/json";
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Ok(respond(
            StatusCode::METHOD_NOT_ALLOWED,
            JSON,
            r#"{"error":"method not allowed"}"#.into(),
        ));
    }
    Ok(match req.uri().path() {
        "/health/live" => match core.liveness().await {
            Ok(()) => respond(StatusCode::OK, JSON, r#"{"status":"alive"}"#.into()),
            Err(reason) => respond(
                StatusCode::SERVICE_UNAVAILABLE,
                JSON,
                serde_json::json!({"status": "dead", "reason": reason}).to_string(),
            ),
        },
        "/health/ready" => {
            let r = core.readiness().await;
            let code = if r.status == "ready" {
                StatusCode::OK
            } else {
                StatusCode::SERVICE_UNAVAILABLE
            };
            respond(code, JSON, serde_json::to_string(&r).unwrap_or_default())
        }
        "/metrics" => {
            core.breakers().refresh();
            respond(StatusCode::OK, CONTENT_TYPE, core.metrics().encode())
        }
        _ => respond(
            StatusCode::NOT_FOUND,
            JSON,
            r#"{"error":"not found"}"#.into(),
        ),
    })
}

/// The address the running daemon's HTTP server bound, read from its runtime file.
pub fn bound_address(core_root: &std::path::Path) -> Option<SocketAddr> {
    std::fs::read_to_string(crate::layout::Layout::new(core_root).http_addr_file())
        .ok()?
        .trim()
        .parse()
        .ok()
}
