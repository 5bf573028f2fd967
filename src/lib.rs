//! televibe: drive coding agents from a phone, supervised and observable.
//!
//! Layout:
//! - `cli` parses commands; `daemon` boots and stops `televibe serve`.
//! - `config` loads and validates settings; `layout` names the files under `root`.
//! - `supervisor` is the one-for-one supervisor; `actors/` holds the root's children (store, breakers, http, janitor, backup, socket).
//! - `core` is the shared handle the fronts call; `store` owns SQLite (only it imports sea-orm).
//! - `backup` takes, lists and uploads backups of `state.db`; `backup_cmd` is `televibe backup …`.
//! - `breaker` implements circuit breakers; `telemetry` the Prometheus families; `logging` the JSON log format.
//! - `mcp` is the MCP front (server, stdio bridge, admin client); `telegram` the Telegram edge; `admin` the operator views.

pub mod actors;
pub mod admin;
pub mod agent_path;
pub mod approvals;
pub mod audit;
pub mod backup;
pub mod backup_cmd;
pub mod breaker;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod doctor;
pub mod domain;
pub mod errors;
pub mod events;
pub mod git;
pub mod jobs;
pub mod layout;
pub mod lock;
pub mod logging;
pub mod mcp;
pub mod procs;
pub mod projects;
pub mod reconstruct;
pub mod sdnotify;
pub mod sessions;
pub mod store;
pub mod supervisor;
pub mod telegram;
pub mod telemetry;
pub mod text;
