//! `televibe sandbox-relay`, the real binary: the proxy environment it gives its program, its exit code, its
//! signals, and (with curl) the program's traffic carried to the egress proxy: model route, tunnel, refusal.

use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use televibe::egress::{EgressRules, ModelRoute, serve};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, UnixListener};
use tokio::process::Command;
use tokio::sync::mpsc;

use crate::harness::BIN;

const WAIT: Duration = Duration::from_secs(30);

fn relay(socket: &std::path::Path, model: bool, script: &str) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("sandbox-relay").arg("--socket").arg(socket);
    if model {
        cmd.arg("--model");
    }
    cmd.args(["--", "sh", "-c", script])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

const PRINT_ENV: &str = r#"printf '%s\n' "$HTTPS_PROXY" "$HTTP_PROXY" "$https_proxy" "$http_proxy" "$ALL_PROXY" "$NO_PROXY" "$no_proxy" "${ANTHROPIC_BASE_URL-unset}" "$KEEP_ME"; exit 7"#;

#[tokio::test]
async fn relay_sets_the_proxy_environment_and_exits_with_the_program_code() {
    let dir = tempfile::tempdir().unwrap();
    for model in [true, false] {
        let out = tokio::time::timeout(
            WAIT,
            relay(&dir.path().join("none.sock"), model, PRINT_ENV)
                .env("KEEP_ME", "kept")
                .env("ANTHROPIC_BASE_URL", "unset")
                .output(),
        )
        .await
        .unwrap()
        .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = stdout.lines().collect();
        assert_eq!(out.status.code(), Some(7), "model={model}: {out:?}");
        assert_eq!(lines.len(), 9, "{stdout}");
        let url = lines[0];
        let port: u16 = url
            .strip_prefix("http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("a loopback proxy URL: {url}"));
        assert_ne!(port, 0);
        assert!(lines[..5].iter().all(|l| *l == url), "{stdout}");
        assert_eq!(lines[5], "127.0.0.1,localhost,::1");
        assert_eq!(lines[6], "127.0.0.1,localhost,::1");
        assert_eq!(lines[7], if model { url } else { "unset" }, "{stdout}");
        assert_eq!(lines[8], "kept", "the rest of the environment is inherited");
        assert!(
            out.stderr.is_empty(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[tokio::test]
async fn relay_ignores_stop_signals_and_reports_a_signal_death() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("none.sock");
    // SIGTERM to the relay alone: it stays for its program, which ends on its own.
    let child = relay(&sock, false, "sleep 1; exit 4").spawn().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = child.id().unwrap() as libc::pid_t;
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: signalling our own child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    // The program's own signals are the default ones again: a SIGTERM ends it, and the relay says 128+15.
    let out = tokio::time::timeout(WAIT, relay(&sock, false, "kill -TERM $$; sleep 5").output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.status.code(), Some(128 + libc::SIGTERM), "{out:?}");
}

/// A loopback HTTP server that answers every request with `body` (of `content_type`) and hands over each
/// request it read.
async fn fake_http(
    content_type: &'static str,
    body: &'static str,
) -> (u16, mpsc::UnboundedReceiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break i + 4;
                    }
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    match s.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let _ = tx.send(String::from_utf8_lossy(&buf).into_owned());
                let answer = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = s.write_all(answer.as_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    (port, rx)
}

fn have_curl() -> bool {
    std::process::Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

#[tokio::test]
async fn relay_carries_curl_to_the_model_route_a_tunnel_and_a_refusal() {
    if !have_curl() {
        panic!("curl is not installed (Debian package curl; scripts/install-deps installs it)");
    }
    let (model_port, mut model_seen) =
        fake_http("text/event-stream", "event: message_start\ndata: {}\n\n").await;
    let (site_port, mut site_seen) = fake_http("text/plain", "from the site").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("egress.sock");
    let refused = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = refused.clone();
    let proxy = tokio::spawn(serve(
        UnixListener::bind(&sock).unwrap(),
        Arc::new(EgressRules {
            allow: vec![format!("127.0.0.1:{site_port}")],
            model: Some(ModelRoute {
                upstream: format!("http://127.0.0.1:{model_port}"),
                secrets: vec![("PLACEHOLDER".into(), "sk-real-secret".into())],
                ..Default::default()
            }),
        }),
        Arc::new(move |h: &str| seen.lock().unwrap().push(h.to_string())),
    ));
    let script = r#"
curl -sS -H 'x-api-key: PLACEHOLDER' -H 'content-type: application/json' -d '{"stream":true}' "$ANTHROPIC_BASE_URL/v1/messages"; echo "model=$?"
curl -sS -p --noproxy '' -x "$HTTPS_PROXY" "http://127.0.0.1:$SITE_PORT/tunnel"; echo " tunnel=$?"
curl -sS --noproxy '' -x "$HTTP_PROXY" "http://127.0.0.1:$SITE_PORT/plain"; echo " plain=$?"
curl -sS -o /dev/null -w 'connect=%{http_connect}' -p --noproxy '' -x "$HTTPS_PROXY" https://example.org/ 2>/dev/null; echo " refused=$?"
exit 3
"#;
    let out = tokio::time::timeout(
        WAIT,
        relay(&sock, true, script)
            .env("SITE_PORT", site_port.to_string())
            .output(),
    )
    .await
    .expect("the relay finishes")
    .unwrap();
    proxy.abort();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        stdout.contains("event: message_start\ndata: {}\n\nmodel=0"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("from the site tunnel=0"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("from the site plain=0"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("connect=403 refused=56"),
        "{stdout}\n{stderr}"
    );
    assert!(!stderr.contains("televibe sandbox-relay:"), "{stderr}");

    let model_request = model_seen
        .try_recv()
        .expect("the model upstream got a request");
    let lower = model_request.to_lowercase();
    assert!(
        model_request.starts_with("POST /v1/messages HTTP/1.1\r\n"),
        "{model_request}"
    );
    assert!(
        lower.contains("x-api-key: sk-real-secret\r\n"),
        "{model_request}"
    );
    assert!(!model_request.contains("PLACEHOLDER"), "{model_request}");
    assert!(
        lower.contains(&format!("host: 127.0.0.1:{model_port}\r\n")),
        "{model_request}"
    );
    assert!(
        model_request.ends_with(r#"{"stream":true}"#),
        "{model_request}"
    );

    let tunnelled = site_seen
        .try_recv()
        .expect("the site got the tunnelled request");
    assert!(
        tunnelled.starts_with("GET /tunnel HTTP/1.1\r\n"),
        "{tunnelled}"
    );
    let plain = site_seen
        .try_recv()
        .expect("the site got the forwarded request");
    assert!(plain.starts_with("GET /plain HTTP/1.1\r\n"), "{plain}");
    assert!(!plain.to_lowercase().contains("proxy-"), "{plain}");
    assert_eq!(*refused.lock().unwrap(), vec!["example.org"]);
}
