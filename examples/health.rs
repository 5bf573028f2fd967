//! Connects to a running daemon's socket as an MCP client and prints `get_health`.
//!
//! `cargo run --example health -- /projects/orchestrator/televibe.sock`

use televibe::mcp::client::DaemonClient;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let socket = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/projects/orchestrator/televibe.sock".into());
    let client = DaemonClient::connect(std::path::Path::new(&socket)).await?;
    let health = client.call("get_health", serde_json::json!({})).await?;
    println!("{}", serde_json::to_string_pretty(&health)?);
    client.close().await;
    Ok(())
}
