//! systemd notification protocol (`READY=1`, `WATCHDOG=1`, `STOPPING=1`) over `$NOTIFY_SOCKET`.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// Sends one notification; false when not under systemd or the send failed.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let path = path.to_string_lossy().to_string();
    let addr = if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(&path)
    };
    let Ok(addr) = addr else { return false };
    let Ok(sock) = UnixDatagram::unbound() else {
        return false;
    };
    sock.send_to_addr(state.as_bytes(), &addr).is_ok()
}

/// The watchdog ping interval (half of `WATCHDOG_USEC`) when systemd asked this process for pings.
pub fn watchdog_interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Ok(pid) = std::env::var("WATCHDOG_PID")
        && pid.parse::<u32>().ok() != Some(std::process::id())
    {
        return None;
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}
