//! The MCP front: the tool server on the daemon's socket, the stdio bridge, and the client used by admin commands.
//!
//! Only this module knows MCP types.

pub mod bridge;
pub mod client;
pub mod errors;
pub mod job;
pub mod lines;
pub mod server;
pub mod socket;
pub mod tools;
pub mod tools_jobs;
