//! Integration tests: the real `televibe` binary on a temp root, real SQLite, real sockets, real MCP clients.

mod alerts;
mod approvals;
mod approvals_read_only;
mod backup;
mod cgroups;
mod config_cli;
mod containment;
mod dashboard;
mod doctor;
mod egress_relay;
mod fake_model;
mod fake_telegram;
mod harness;
mod jobs;
mod logs;
mod mcp_bridge;
mod probes;
mod recovery;
mod restarts;
mod retention;
mod service_unit;
mod sessions;
mod supervision;
mod telegram;
mod telegram_faults;
mod waiting;
