//! The `socket` actor: the Unix socket (mode 0600) where MCP and admin clients connect; one MCP server per connection.

use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::Path;
use std::sync::Arc;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use rmcp::ServiceExt;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::task::AbortOnDropHandle;

use crate::core::Core;
use crate::mcp::server::ControlServer;
use crate::supervisor::ChildMessage;

pub struct SocketActor {
    pub core: Arc<Core>,
}

pub enum SocketMsg {
    Panic,
}

impl ChildMessage for SocketMsg {
    fn injected_panic() -> Self {
        SocketMsg::Panic
    }
}

/// Dropping the state (stop or panic) aborts the accept loop, which ends every connection, and removes
/// the socket file; clients reconnect to the restarted actor.
pub struct SocketState {
    _accept: AbortOnDropHandle<()>,
    path: std::path::PathBuf,
}

impl Drop for SocketState {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Actor for SocketActor {
    type Msg = SocketMsg;
    type State = SocketState;
    type Arguments = ();

    async fn pre_start(
        &self,
        _: ActorRef<SocketMsg>,
        _: (),
    ) -> Result<SocketState, ActorProcessingErr> {
        let path = self.core.config().socket_path.clone();
        let listener = bind_private(&path).await?;
        tracing::info!(target: "televibe.socket", path = %path.display(), "MCP and admin socket listening");
        let core = self.core.clone();
        Ok(SocketState {
            _accept: AbortOnDropHandle::new(tokio::spawn(accept_loop(listener, core))),
            path,
        })
    }

    async fn handle(
        &self,
        _: ActorRef<SocketMsg>,
        msg: SocketMsg,
        _: &mut SocketState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SocketMsg::Panic => panic!("injected panic in socket actor"),
        }
    }
}

/// Binds the socket with mode 0600, refusing to steal it from a live daemon.
async fn bind_private(path: &Path) -> Result<UnixListener, ActorProcessingErr> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(format!("{} is in use by another running daemon", path.display()).into());
        }
        // A stale file from a crashed run: nobody answers on it.
        std::fs::remove_file(path)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    // Bind inside a fresh 0700 directory, make the socket 0600, then move it into place: it is never
    // reachable by others, and the process umask (which agents inherit) is left alone.
    let dir = path.parent().unwrap_or(Path::new("/"));
    // Short, so that the staged path fits a Unix socket address wherever the final one does.
    let private = dir.join(format!(
        ".bind-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    ));
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let staged = private.join("sock");
    let bound =
        UnixListener::bind(&staged).map_err(|e| format!("cannot bind {}: {e}", path.display()));
    let placed = bound.and_then(|listener| {
        std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        std::fs::rename(&staged, path)
            .map_err(|e| format!("cannot move the socket to {}: {e}", path.display()))?;
        Ok(listener)
    });
    let _ = std::fs::remove_dir_all(&private);
    let listener = placed?;
    Ok(listener)
}

async fn accept_loop(listener: UnixListener, core: Arc<Core>) {
    let mut conns = tokio::task::JoinSet::new();
    let shutdown = core.shutdown_token();
    loop {
        let accepted = tokio::select! {
            // Shutdown: no new connection; the ones open finish until the actor stops.
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, _)) => {
                let core = core.clone();
                conns.spawn(serve_connection(stream, core));
            }
            Err(e) => {
                tracing::warn!(target: "televibe.socket", error = %e, "accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        while conns.try_join_next().is_some() {}
    }
    while conns.join_next().await.is_some() {}
}

/// A control connection: MCP for the operator's clients. A job never gets one: its approval server
/// reaches the daemon through the job's own endpoint inside its sandbox, and the peer check below is
/// a second wall behind the sandbox.
async fn serve_connection(stream: UnixStream, core: Arc<Core>) {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    // Decided from the credentials taken when the connection was accepted: a peer that is already gone
    // (it connected, handed the socket to a child and exited) cannot be checked and is refused.
    let peer_pid = stream.peer_cred().ok().and_then(|c| c.pid());
    let refusal = match peer_pid {
        None => Some("peer credentials unavailable"),
        Some(pid) => peer_refusal(&core, pid).await,
    };
    let (read, mut write) = stream.into_split();
    if let Some(why) = refusal {
        tracing::warn!(target: "televibe.socket", pid = peer_pid.unwrap_or(0), reason = why, "Control connection refused");
        let _ = write
            .write_all(
                format!("{{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{{\"code\":-32001,\"message\":\"agents may not use the control socket ({why})\"}}}}\n")
                    .as_bytes(),
            )
            .await;
        return;
    }
    let mut reader = BufReader::new(read);
    let mut first = String::new();
    let read_first = tokio::time::timeout(std::time::Duration::from_secs(30), async {
        // Bounded: a first line is a JSON-RPC message, never megabytes.
        (&mut reader).take(1 << 20).read_line(&mut first).await
    })
    .await;
    if !matches!(read_first, Ok(Ok(n)) if n > 0) {
        return;
    }
    if serde_json::from_str::<serde_json::Value>(&first)
        .is_ok_and(|v| v.get("televibe_job").is_some())
    {
        tracing::warn!(target: "televibe.socket", "Approval connection refused on the control socket: jobs use their own endpoint");
        let _ = write.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":null,\"error\":{\"code\":-32001,\"message\":\"job connections are served on the job's own endpoint\"}}\n").await;
        return;
    }
    let replay = std::io::Cursor::new(first.into_bytes()).chain(reader);
    let (replay, write, _pumps) = crate::mcp::lines::guard(replay, write);
    let running = match ControlServer::new(core).serve((replay, write)).await {
        Ok(r) => {
            let _ = r.waiting().await;
            Ok(())
        }
        Err(e) => Err(e),
    };
    if let Err(e) = running {
        tracing::debug!(target: "televibe.socket", error = %e, "MCP connection ended before initialisation");
    }
}

/// Why peer `pid` may not have a control connection, if it may not: it is gone, it lives in another
/// PID namespace (every sandboxed job does), it descends from the daemon, or it is or descends from a
/// running job's process group.
async fn peer_refusal(core: &Core, pid: i32) -> Option<&'static str> {
    let own_ns = std::fs::read_link("/proc/self/ns/pid").ok();
    let Ok(peer_ns) = std::fs::read_link(format!("/proc/{pid}/ns/pid")) else {
        return Some("the connecting process is gone");
    };
    if own_ns.is_some_and(|ns| ns != peer_ns) {
        return Some("it runs in another PID namespace");
    }
    // The operator's clients are never the daemon's own descendants; its agents (and what they start)
    // are, from the moment they are spawned, before their job row records the process group.
    if crate::procs::descends_from(pid, std::process::id() as i32) {
        return Some("it was started by the daemon");
    }
    from_a_running_job(core, pid)
        .await
        .then_some("it comes from a running job")
}

/// Whether process `pid` is, or descends from, a process of a running job's group.
async fn from_a_running_job(core: &Core, pid: i32) -> bool {
    let groups = crate::procs::lineage_groups(pid);
    core.running_job_groups()
        .await
        .map(|running| running.iter().any(|g| groups.contains(g)))
        .unwrap_or(false)
}
