//! The MCP front: the tool server on the daemon's control socket (its tools by domain: `server` for health
//! and operations, `projects_and_sessions`, `jobs_and_approvals`,
//! `schedules`, `pull_requests`), the control socket itself, the approval
//! endpoint each job's agent reaches, the stdio bridge, and the client used by admin commands.
//!
//! Only this module knows MCP types.

pub mod approval_endpoint;
pub mod bridge;
pub mod client;
pub mod errors;
pub mod jobs_and_approvals;
pub mod lines;
pub mod projects_and_sessions;
pub mod pull_requests;
pub mod schedules;
pub mod server;
pub mod socket;
