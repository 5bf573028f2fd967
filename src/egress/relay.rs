//! `televibe sandbox-relay`: inside a job's sandbox, a loopback TCP proxy address for the agent that carries
//! each connection to the daemon's egress socket, around the agent program it starts.
//!
//! Plain threads and blocking sockets: two small threads per open connection and no runtime, so the relay
//! stays small next to the agent.

use std::ffi::OsString;
use std::io;
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

/// Stack of each copying thread: a copy loop needs little.
const THREAD_STACK: usize = 128 * 1024;
/// The port the runner gives the relay inside an isolated sandbox (its own network namespace, where the
/// port is free), so an agent that takes its model API's address on its command line can be given it
/// before it starts.
pub const PORT: u16 = 4319;

/// The loopback names the agent reaches directly (the relay itself).
pub const NO_PROXY: &str = "127.0.0.1,localhost,::1";

fn say(msg: &str) {
    eprintln!("televibe sandbox-relay: {msg}");
}

extern "C" fn ignore(_: libc::c_int) {}

/// The relay outlives no signal of its own: SIGTERM, SIGINT and SIGHUP reach the agent (the daemon signals the
/// whole group) and the relay leaves when the agent does. A handler that does nothing, not SIG_IGN, so the
/// program started afterwards gets the default dispositions back at exec.
fn ignore_stop_signals() {
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: a zeroed sigaction with a handler that touches nothing is valid; SA_RESTART keeps blocking
        // calls going.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = ignore as *const () as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            libc::sigaction(sig, &action, std::ptr::null_mut());
        }
    }
}

/// The environment the program gets on top of the relay's own; `model` names the variable that points
/// the agent at its model API (its driver's), set to the relay too.
pub fn proxy_env(port: u16, model: Option<&str>) -> Vec<(String, String)> {
    let url = format!("http://127.0.0.1:{port}");
    let mut env: Vec<(String, String)> = [
        "HTTPS_PROXY",
        "HTTP_PROXY",
        "https_proxy",
        "http_proxy",
        "ALL_PROXY",
    ]
    .into_iter()
    .map(|k| (k.to_string(), url.clone()))
    .collect();
    env.push(("NO_PROXY".into(), NO_PROXY.to_string()));
    env.push(("no_proxy".into(), NO_PROXY.to_string()));
    if let Some(var) = model {
        env.push((var.to_string(), url));
    }
    env
}

/// Copies one way, then tells the other side nothing more is coming.
fn pipe(mut from: impl io::Read, mut to: impl io::Write, close: impl FnOnce()) {
    let _ = io::copy(&mut from, &mut to);
    close();
}

fn carry(tcp: TcpStream, socket: &Path) -> io::Result<()> {
    let unix = UnixStream::connect(socket)?;
    let (tcp_in, unix_out) = (tcp.try_clone()?, unix.try_clone()?);
    std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || {
            let closer = unix_out.try_clone();
            pipe(tcp_in, &unix_out, move || {
                if let Ok(u) = closer {
                    let _ = u.shutdown(Shutdown::Write);
                }
            })
        })?;
    let closer = tcp.try_clone()?;
    pipe(&unix, &tcp, move || {
        let _ = closer.shutdown(Shutdown::Write);
    });
    Ok(())
}

fn accept_loop(listener: TcpListener, socket: PathBuf) {
    for conn in listener.incoming() {
        let tcp = match conn {
            Ok(t) => t,
            Err(e) => {
                say(&format!("accept: {e}"));
                std::thread::sleep(std::time::Duration::from_millis(50));
                continue;
            }
        };
        let socket = socket.clone();
        let spawned = std::thread::Builder::new()
            .stack_size(THREAD_STACK)
            .spawn(move || {
                if let Err(e) = carry(tcp, &socket) {
                    say(&format!("cannot reach {}: {e}", socket.display()));
                }
            });
        if let Err(e) = spawned {
            say(&format!("cannot start a connection thread: {e}"));
        }
    }
}

/// Runs the relay around `program`; returns the program's exit code (128+signal if a signal ended it).
/// Listens on 127.0.0.1:`port` (0: any free port).
pub fn run(socket: &Path, port: u16, model: Option<&str>, program: &[OsString]) -> ExitCode {
    let Some((exe, args)) = program.split_first() else {
        say(
            "no program to run (usage: televibe sandbox-relay --socket PATH [--port N] [--model | --model-env VAR] -- PROGRAM [ARGS…])",
        );
        return ExitCode::from(125);
    };
    ignore_stop_signals();
    let listener = match TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => l,
        Err(e) => {
            say(&format!("cannot listen on 127.0.0.1: {e}"));
            return ExitCode::from(125);
        }
    };
    let port = match listener.local_addr() {
        Ok(a) => a.port(),
        Err(e) => {
            say(&format!("cannot read the listening port: {e}"));
            return ExitCode::from(125);
        }
    };
    let mut command = Command::new(exe);
    command.args(args).envs(proxy_env(port, model));
    let mut child = match command.spawn() {
        Ok(c) => c,
        Err(e) => {
            say(&format!("cannot start {}: {e}", exe.to_string_lossy()));
            return ExitCode::from(if e.kind() == io::ErrorKind::NotFound {
                127
            } else {
                126
            });
        }
    };
    let socket = socket.to_path_buf();
    if let Err(e) = std::thread::Builder::new()
        .stack_size(THREAD_STACK)
        .spawn(move || accept_loop(listener, socket))
    {
        say(&format!("cannot start the relay thread: {e}"));
    }
    match child.wait() {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => ExitCode::from(code as u8),
            (None, Some(sig)) => ExitCode::from((128 + sig) as u8),
            (None, None) => ExitCode::from(125),
        },
        Err(e) => {
            say(&format!("cannot wait for the program: {e}"));
            ExitCode::from(125)
        }
    }
}
