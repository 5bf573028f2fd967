//! A line filter between a socket connection and its MCP server: lines that are not JSON at all get the
//! JSON-RPC parse error and never reach the server, which would otherwise drop them without a word.
//!
//! The server reads and writes one end of an in-memory pipe; two tasks pump the other end. The reader task
//! passes every JSON line on and turns any other line into an error answer; the writer task is the only
//! writer of the socket, so error answers and the server's messages never interleave within a line. The
//! connection goes on after an error answer, as JSON-RPC servers do.

use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The JSON-RPC answer to a line that is not JSON.
pub const PARSE_ERROR: &str =
    r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}"#;

/// A line longer than this is not read into memory: it is answered as a parse error and skipped.
pub const MAX_LINE: usize = 8 << 20;

/// Room in the in-memory pipe, each way.
const PIPE_BYTES: usize = 256 << 10;

/// How long the writer may take to pass on what the server wrote last, once the server has ended.
const FLUSH_GRACE: Duration = Duration::from_secs(1);

/// The pumps of one connection. Dropping it stops reading the connection at once and gives the writer
/// [`FLUSH_GRACE`] to pass on what the server wrote last.
pub struct Pumps {
    reader: JoinHandle<()>,
    writer: Option<JoinHandle<()>>,
}

impl Drop for Pumps {
    fn drop(&mut self) {
        self.reader.abort();
        if let Some(writer) = self.writer.take() {
            let abort = writer.abort_handle();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    if tokio::time::timeout(FLUSH_GRACE, writer).await.is_err() {
                        abort.abort();
                    }
                });
            } else {
                abort.abort();
            }
        }
    }
}

/// What the server gets instead of the connection: its input, its output, and the pumps to keep alive
/// while it runs.
pub type Guarded = (
    tokio::io::ReadHalf<tokio::io::DuplexStream>,
    tokio::io::WriteHalf<tokio::io::DuplexStream>,
    Pumps,
);

/// Puts the line filter between a connection (`input`, `output`) and the server that will use the
/// returned halves.
pub fn guard<R, W>(input: R, output: W) -> Guarded
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (server_side, pump_side) = tokio::io::duplex(PIPE_BYTES);
    let (server_read, server_write) = tokio::io::split(server_side);
    let (from_server, to_server) = tokio::io::split(pump_side);
    let (errors_tx, errors_rx) = mpsc::channel::<&'static str>(16);
    let reader = tokio::spawn(pump_in(input, to_server, errors_tx));
    let writer = tokio::spawn(pump_out(from_server, output, errors_rx));
    (
        server_read,
        server_write,
        Pumps {
            reader,
            writer: Some(writer),
        },
    )
}

/// How a received line is treated.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// JSON: the server reads it.
    Pass,
    /// Nothing but whitespace: not a message, dropped without an answer.
    Skip,
    /// Not JSON: answered with [`PARSE_ERROR`].
    ParseError,
}

pub fn judge(line: &[u8]) -> Verdict {
    if line.iter().all(u8::is_ascii_whitespace) {
        Verdict::Skip
    } else if serde_json::from_slice::<serde::de::IgnoredAny>(line).is_ok() {
        Verdict::Pass
    } else {
        Verdict::ParseError
    }
}

/// Connection → server, line by line.
async fn pump_in<R, W>(input: R, mut to_server: W, errors: mpsc::Sender<&'static str>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut input = BufReader::new(input);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if n > MAX_LINE && !line.ends_with(b"\n") {
            // Too long to hold: answer once, then throw the rest of the line away.
            if errors.send(PARSE_ERROR).await.is_err() || !skip_line(&mut input).await {
                break;
            }
            continue;
        }
        match judge(&line) {
            Verdict::Pass => {
                if !line.ends_with(b"\n") {
                    line.push(b'\n');
                }
                if to_server.write_all(&line).await.is_err() {
                    break;
                }
            }
            Verdict::Skip => {}
            Verdict::ParseError => {
                if errors.send(PARSE_ERROR).await.is_err() {
                    break;
                }
            }
        }
    }
    // End of the connection's input: the server sees it end too.
    let _ = to_server.shutdown().await;
}

/// Reads up to the next newline; false at the end of the input.
async fn skip_line<R: AsyncBufReadExt + Unpin>(input: &mut R) -> bool {
    loop {
        let chunk = match input.fill_buf().await {
            Ok([]) | Err(_) => return false,
            Ok(chunk) => chunk,
        };
        match chunk.iter().position(|b| *b == b'\n') {
            Some(i) => {
                input.consume(i + 1);
                return true;
            }
            None => {
                let len = chunk.len();
                input.consume(len);
            }
        }
    }
}

/// Server and error answers → connection, whole lines only.
async fn pump_out<R, W>(from_server: R, mut output: W, mut errors: mpsc::Receiver<&'static str>)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut from_server = BufReader::new(from_server);
    // Kept across loop turns: `read_until` keeps what it read in this buffer when another branch wins.
    let mut line = Vec::new();
    let mut errors_open = true;
    loop {
        tokio::select! {
            read = from_server.read_until(b'\n', &mut line) => {
                match read {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {
                        if output.write_all(&line).await.is_err() || output.flush().await.is_err() {
                            return;
                        }
                        line.clear();
                    }
                }
            }
            error = errors.recv(), if errors_open => match error {
                Some(text) => {
                    let mut answer = Vec::with_capacity(text.len() + 1);
                    answer.extend_from_slice(text.as_bytes());
                    answer.push(b'\n');
                    if output.write_all(&answer).await.is_err() || output.flush().await.is_err() {
                        return;
                    }
                }
                None => errors_open = false,
            },
        }
    }
    // The server ended: a last partial line is passed on as it is.
    if !line.is_empty() {
        let _ = output.write_all(&line).await;
    }
    let _ = output.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judges_lines() {
        assert_eq!(
            judge(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#),
            Verdict::Pass
        );
        assert_eq!(judge(b"[1,2]\r\n"), Verdict::Pass);
        assert_eq!(judge(b"  \r\n"), Verdict::Skip);
        assert_eq!(judge(b"not json\n"), Verdict::ParseError);
        assert_eq!(judge(br#"{"jsonrpc":"2.0""#), Verdict::ParseError);
    }

    #[tokio::test]
    async fn bad_lines_are_answered_and_good_ones_pass_in_order() {
        let (client, conn) = tokio::io::duplex(64 << 10);
        let (conn_read, conn_write) = tokio::io::split(conn);
        let (mut server_read, mut server_write, _pumps) = guard(conn_read, conn_write);
        let (client_read, mut client_write) = tokio::io::split(client);
        client_write
            .write_all(b"not json\n{\"a\":1}\n\n{\"b\":2}\n")
            .await
            .unwrap();
        let mut got = vec![0u8; 16];
        server_read.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"{\"a\":1}\n{\"b\":2}\n");
        server_write.write_all(b"{\"answer\":1}\n").await.unwrap();
        let mut answers = BufReader::new(client_read).lines();
        assert_eq!(answers.next_line().await.unwrap().unwrap(), PARSE_ERROR);
        assert_eq!(
            answers.next_line().await.unwrap().unwrap(),
            "{\"answer\":1}"
        );
        // The connection ends: the server's input ends too.
        drop(answers);
        drop(client_write);
        let mut rest = Vec::new();
        server_read.read_to_end(&mut rest).await.unwrap();
        assert!(rest.is_empty());
    }
}
