//! The egress proxy against real loopback servers through a real Unix socket.

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener, UnixStream};
use tokio::sync::oneshot;

use super::rules::{forbidden_address, listed_literally};
use super::*;

const WAIT: Duration = Duration::from_secs(10);

struct Proxy {
    _dir: tempfile::TempDir,
    socket: PathBuf,
    refused: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn start(rules: EgressRules) -> Proxy {
    let dir = tempfile::tempdir().expect("temp dir");
    let socket = dir.path().join("egress.sock");
    let listener = UnixListener::bind(&socket).expect("bind the proxy socket");
    let refused = Arc::new(Mutex::new(Vec::new()));
    let seen = refused.clone();
    let task = tokio::spawn(serve(
        listener,
        Arc::new(rules),
        Arc::new(move |host: &str| seen.lock().unwrap().push(host.to_string())),
    ));
    Proxy {
        _dir: dir,
        socket,
        refused,
        task,
    }
}

fn rules(allow: &[&str]) -> EgressRules {
    EgressRules {
        allow: allow.iter().map(|s| s.to_string()).collect(),
        model: None,
    }
}

/// Reads until the head of a response is in (`\r\n\r\n`) and returns everything read so far.
async fn read_head(stream: &mut UnixStream) -> String {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("a response head in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a head: {:?}",
            String::from_utf8_lossy(&buf)
        );
        buf.extend_from_slice(&chunk[..n]);
    }
    String::from_utf8_lossy(&buf).into_owned()
}

async fn read_to_end(stream: &mut UnixStream) -> String {
    let mut buf = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut buf))
        .await
        .expect("the end in time")
        .expect("read");
    String::from_utf8_lossy(&buf).into_owned()
}

/// A TCP server that echoes every byte.
async fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    port
}

/// A one-request HTTP server: hands over the request it read (head and `Content-Length` body), answers with
/// `first`, then waits for `finish` before sending `rest` and closing.
async fn http_server(
    first: &'static str,
    rest: &'static str,
) -> (u16, oneshot::Receiver<String>, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (got_tx, got_rx) = oneshot::channel();
    let (finish_tx, finish_rx) = oneshot::channel::<()>();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "upstream: closed before a head");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "upstream: closed before the body");
            buf.extend_from_slice(&chunk[..n]);
        }
        let _ = got_tx.send(String::from_utf8_lossy(&buf).into_owned());
        s.write_all(first.as_bytes()).await.unwrap();
        s.flush().await.unwrap();
        let _ = finish_rx.await;
        s.write_all(rest.as_bytes()).await.unwrap();
        let _ = s.shutdown().await;
    });
    (port, got_rx, finish_tx)
}

#[test]
fn allow_list_matches_hosts_ports_and_wildcards() {
    let r = rules(&[
        "api.github.com",
        "registry.npmjs.org:443",
        "*.pypi.org",
        "127.0.0.1:8080",
        "[::1]:9000",
    ]);
    assert!(allowed(&r, "api.github.com", 443));
    assert!(
        allowed(&r, "API.GitHub.com.", 22),
        "any port, case and trailing dot"
    );
    assert!(allowed(&r, "registry.npmjs.org", 443));
    assert!(!allowed(&r, "registry.npmjs.org", 80), "port pinned");
    assert!(allowed(&r, "files.pypi.org", 443));
    assert!(allowed(&r, "a.b.pypi.org", 443));
    assert!(
        !allowed(&r, "pypi.org", 443),
        "a wildcard covers names under the domain only"
    );
    assert!(!allowed(&r, "evilpypi.org", 443));
    assert!(!allowed(&r, "github.com", 443));
    assert!(allowed(&r, "127.0.0.1", 8080), "a literal loopback entry");
    assert!(!allowed(&r, "127.0.0.1", 9464), "metrics stay unreachable");
    assert!(allowed(&r, "[::1]", 9000));
    assert!(!allowed(&r, "::1", 9001));
    assert!(
        !allowed(&r, "localhost", 8080),
        "only the literal name counts"
    );
    let wild = rules(&["*.localhost", "*.0.0.127.in-addr.arpa"]);
    assert!(
        !allowed(&wild, "foo.localhost", 80),
        "no loopback through a wildcard"
    );
    assert!(listed_literally(&r, "127.0.0.1", 8080));
    assert!(!listed_literally(&r, "files.pypi.org", 443));
    assert!(!allowed(&rules(&[]), "api.github.com", 443));
}

#[test]
fn loopback_link_local_and_unspecified_addresses_are_forbidden() {
    for ip in [
        "127.0.0.1",
        "127.3.4.5",
        "::1",
        "169.254.169.254",
        "fe80::1",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
        "::ffff:169.254.1.1",
    ] {
        assert!(forbidden_address(ip.parse::<IpAddr>().unwrap()), "{ip}");
    }
    for ip in [
        "93.184.216.34",
        "10.0.0.1",
        "2606:4700::1111",
        "::ffff:8.8.8.8",
    ] {
        assert!(!forbidden_address(ip.parse::<IpAddr>().unwrap()), "{ip}");
    }
}

#[test]
fn placeholders_are_replaced_in_every_header_value() {
    let mut h = hyper::HeaderMap::new();
    h.insert("x-api-key", "PH_KEY".parse().unwrap());
    h.insert(
        "authorization",
        "Bearer PH_TOKEN and PH_KEY".parse().unwrap(),
    );
    h.insert("user-agent", "agent/1".parse().unwrap());
    let secrets = vec![
        ("PH_KEY".to_string(), "sk-real".to_string()),
        ("PH_TOKEN".to_string(), "tok-real".to_string()),
        (String::new(), "never".to_string()),
    ];
    proxy::insert_secrets(&mut h, &secrets);
    assert_eq!(h["x-api-key"], "sk-real");
    assert!(h["x-api-key"].is_sensitive());
    assert_eq!(h["authorization"], "Bearer tok-real and sk-real");
    assert_eq!(h["user-agent"], "agent/1");
    assert!(!h["user-agent"].is_sensitive());
}

#[test]
fn model_urls_join_the_base_and_keep_the_query() {
    let route = |u: &str| ModelRoute {
        upstream: u.to_string(),
        ..Default::default()
    };
    let uri: hyper::Uri = "/v1/messages?beta=true".parse().unwrap();
    assert_eq!(
        proxy::model_url(&route("https://api.anthropic.com"), &uri)
            .unwrap()
            .as_str(),
        "https://api.anthropic.com/v1/messages?beta=true"
    );
    assert_eq!(
        proxy::model_url(&route("http://127.0.0.1:4567/prefix/"), &uri)
            .unwrap()
            .as_str(),
        "http://127.0.0.1:4567/prefix/v1/messages?beta=true"
    );
    let absolute: hyper::Uri = "http://127.0.0.1:3000/v1/models".parse().unwrap();
    assert_eq!(
        proxy::model_url(&route("http://up:1"), &absolute)
            .unwrap()
            .as_str(),
        "http://up:1/v1/models"
    );
}

#[tokio::test]
async fn connect_to_an_allowed_loopback_server_tunnels_both_ways() {
    let port = echo_server().await;
    let proxy = start(rules(&[&format!("127.0.0.1:{port}")]));
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(
        format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(
        head.starts_with("HTTP/1.1 200 Connection established\r\n"),
        "{head}"
    );
    assert!(
        head.ends_with("\r\n\r\n"),
        "nothing after the head yet: {head:?}"
    );
    s.write_all(b"ping through the tunnel").await.unwrap();
    let mut back = [0u8; 23];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&back, b"ping through the tunnel");
    assert!(proxy.refused.lock().unwrap().is_empty());
}

#[tokio::test]
async fn connect_to_an_unlisted_host_is_refused_and_reported() {
    let port = echo_server().await;
    // The echo server runs, but it is loopback and not listed literally (a wildcard does not count).
    let proxy = start(rules(&["*.example.com", "127.0.0.1:1"]));
    for (target, host) in [
        ("example.org:443".to_string(), "example.org"),
        (format!("127.0.0.1:{port}"), "127.0.0.1"),
        (format!("localhost:{port}"), "localhost"),
    ] {
        let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 403 "), "{target}: {head}");
        assert!(
            head.contains(&format!("{host} is not on agent.network_allow")),
            "{target}: {head}"
        );
    }
    assert_eq!(
        *proxy.refused.lock().unwrap(),
        vec!["example.org", "127.0.0.1", "localhost"]
    );
}

#[tokio::test]
async fn absolute_form_get_is_forwarded_to_the_origin() {
    let (port, got, finish) = http_server(
        "HTTP/1.1 200 OK\r\nContent-Length: 11\r\nX-Origin: yes\r\n\r\nhello ",
        "world",
    )
    .await;
    let proxy = start(rules(&[&format!("127.0.0.1:{port}")]));
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(
        format!(
            "GET http://127.0.0.1:{port}/path?q=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\
             Proxy-Authorization: Basic Zm9v\r\nProxy-Connection: keep-alive\r\nAccept: text/plain\r\n\
             Connection: close\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let request = tokio::time::timeout(WAIT, got).await.unwrap().unwrap();
    finish.send(()).unwrap();
    let answer = read_to_end(&mut s).await;
    assert!(
        request.starts_with("GET /path?q=1 HTTP/1.1\r\n"),
        "{request}"
    );
    let lower = request.to_lowercase();
    assert!(
        lower.contains(&format!("host: 127.0.0.1:{port}\r\n")),
        "{request}"
    );
    assert!(lower.contains("accept: text/plain\r\n"), "{request}");
    assert!(
        !lower.contains("proxy-"),
        "proxy headers dropped: {request}"
    );
    assert!(answer.starts_with("HTTP/1.1 200 OK\r\n"), "{answer}");
    assert!(answer.to_lowercase().contains("x-origin: yes"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nhello world"), "{answer}");
}

#[tokio::test]
async fn absolute_form_to_an_unlisted_host_is_refused() {
    let proxy = start(rules(&["api.github.com"]));
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(b"GET http://evil.example/x HTTP/1.1\r\nHost: evil.example\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert_eq!(*proxy.refused.lock().unwrap(), vec!["evil.example"]);
}

#[tokio::test]
async fn model_route_replaces_placeholders_and_streams_events() {
    let (up, got, finish) = http_server(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n\
         14\r\nevent: a\ndata: one\n\n\r\n",
        "14\r\nevent: b\ndata: two\n\n\r\n0\r\n\r\n",
    )
    .await;
    let proxy = start(EgressRules {
        allow: vec![],
        model: Some(ModelRoute {
            upstream: format!("http://127.0.0.1:{up}/prefix"),
            secrets: vec![("PLACEHOLDER".into(), "sk-real-secret".into())],
            ..Default::default()
        }),
    });
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    let body = r#"{"model":"m","stream":true}"#;
    s.write_all(
        format!(
            "POST /v1/messages?beta=true HTTP/1.1\r\nHost: 127.0.0.1:40000\r\nx-api-key: PLACEHOLDER\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let request = tokio::time::timeout(WAIT, got).await.unwrap().unwrap();
    let lower = request.to_lowercase();
    assert!(
        request.starts_with("POST /prefix/v1/messages?beta=true HTTP/1.1\r\n"),
        "{request}"
    );
    assert!(lower.contains("x-api-key: sk-real-secret\r\n"), "{request}");
    assert!(!request.contains("PLACEHOLDER"), "{request}");
    assert!(
        lower.contains(&format!("host: 127.0.0.1:{up}\r\n")),
        "{request}"
    );
    assert!(request.ends_with(body), "{request}");
    // The first event must arrive while the upstream still holds the rest of the body back.
    let mut seen = String::new();
    let mut chunk = [0u8; 4096];
    while !seen.contains("data: one") {
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut chunk))
            .await
            .expect("the first event before the upstream finished: the answer is buffered")
            .unwrap();
        assert!(n > 0, "closed early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&chunk[..n]));
    }
    assert!(seen.starts_with("HTTP/1.1 200 OK\r\n"), "{seen}");
    assert!(
        seen.to_lowercase()
            .contains("content-type: text/event-stream"),
        "{seen}"
    );
    assert!(!seen.contains("data: two"), "{seen}");
    finish.send(()).unwrap();
    seen.push_str(&read_to_end(&mut s).await);
    assert!(seen.contains("data: two"), "{seen}");
    assert!(proxy.refused.lock().unwrap().is_empty());
}

#[tokio::test]
async fn without_a_model_route_origin_form_is_forbidden() {
    let proxy = start(rules(&["api.anthropic.com"]));
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(
        b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1:40000\r\nContent-Length: 0\r\n\r\n",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert!(head.contains("no model route"), "{head}");
}

#[tokio::test]
async fn malformed_and_oversized_heads_are_rejected() {
    let proxy = start(rules(&[]));
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(b"NOT HTTP AT ALL\r\n\r\n").await.unwrap();
    let answer = read_to_end(&mut s).await;

    assert!(answer.starts_with("HTTP/1.1 400 "), "{answer}");

    // Just over the bound (held by the proxy), and far over it (hyper's buffer gives up).
    for size in [MAX_HEAD + 1024, 4 * MAX_HEAD] {
        let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
            "a".repeat(size)
        );
        let _ = s.write_all(big.as_bytes()).await;
        let mut buf = Vec::new();
        let end = tokio::time::timeout(WAIT, s.read_to_end(&mut buf))
            .await
            .expect("closed in time");
        let answer = String::from_utf8_lossy(&buf);
        // hyper closes with our bytes unread: the kernel may turn its answer into a reset.
        let reset = end.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset);
        assert!(
            answer.starts_with("HTTP/1.1 431 ") || (size > MAX_HEAD * 2 && reset && buf.is_empty()),
            "{size}: {answer}"
        );
    }
    // A head just under the bound is served (here: no model route).
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    let fits = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: {}\r\n\r\n",
        "a".repeat(MAX_HEAD - 200)
    );
    s.write_all(fits.as_bytes()).await.unwrap();
    let answer = read_to_end(&mut s).await;
    assert!(answer.starts_with("HTTP/1.1 403 "), "{answer}");
}

#[tokio::test]
async fn aborting_serve_closes_open_tunnels() {
    let port = echo_server().await;
    let proxy = start(rules(&[&format!("127.0.0.1:{port}")]));
    let mut s = UnixStream::connect(&proxy.socket).await.unwrap();
    s.write_all(format!("CONNECT 127.0.0.1:{port} HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    proxy.task.abort();
    let mut rest = Vec::new();
    // End of stream or a reset: either way the tunnel is gone instead of open.
    let _ = tokio::time::timeout(WAIT, s.read_to_end(&mut rest))
        .await
        .expect("the tunnel closes when serve is aborted");
}

#[test]
fn a_429_names_its_reset_in_its_headers() {
    let headers = |pairs: &[(&str, &str)]| {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                hyper::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    };
    let now = 1_800_000_000;
    assert_eq!(
        super::reset_of_429(
            &headers(&[
                ("retry-after", "40"),
                ("anthropic-ratelimit-unified-reset", "1800000045")
            ]),
            now
        ),
        Some(1_800_000_045)
    );
    assert_eq!(
        super::reset_of_429(&headers(&[("retry-after", "40")]), now),
        Some(now + 40)
    );
    assert_eq!(
        super::reset_of_429(&headers(&[("x-codex-primary-reset-at", "1800000300")]), now),
        Some(1_800_000_300)
    );
    assert_eq!(
        super::reset_of_429(
            &headers(&[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")]),
            now
        ),
        Some(1_792_567_680)
    );
    assert_eq!(
        super::reset_of_429(
            &headers(&[
                ("x-codex-primary-used-percent", "40"),
                ("x-codex-primary-reset-at", "1800000300"),
                ("x-codex-secondary-used-percent", "100"),
                ("x-codex-secondary-reset-at", "1800500000"),
            ]),
            now
        ),
        Some(1_800_500_000),
        "the used-up window's reset"
    );
    assert_eq!(
        super::reset_of_429(
            &headers(&[
                ("anthropic-ratelimit-unified-reset", "inf"),
                ("retry-after", "30")
            ]),
            now
        ),
        Some(now + 30),
        "a reset that is no number is not believed"
    );
    assert_eq!(
        super::reset_of_429(&headers(&[("retry-after", "soon")]), now),
        None
    );
    assert_eq!(super::reset_of_429(&headers(&[]), now), None);
}
