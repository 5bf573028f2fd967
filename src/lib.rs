//! televibe: drive coding agents from a phone, supervised and observable.
//!
//! Every module, by layer (`tests/layering.rs` enforces the order: a module names only its own layer or an
//! earlier one; `actors.md` walks a request through them).
//!
//! Foundation:
//! - `domain`: ids and their validation, the records (projects, sessions, jobs, approvals, events, audit).
//! - `errors`: the error codes every front shows; `text`: cutting, hidden characters, previews.
//! - `config`: defaults, `config.toml` and `TELEVIBE_*`, validated into typed sections; `layout`: paths under `root`.
//! - `agents`: coding agents behind one trait (`AgentDriver`): argv, output, verdict, approval answers, state
//!   and credential files, tool names; one folder per agent (`agents/claude/`).
//! - `store`: the store the services speak to (only it names sea-orm; SQLite sits behind it in
//!   `store/sqlite/`); `git`: repositories and worktrees (only it names gix).
//! - `policy`: the approval rules and their shell lexer.
//! - `forge`: code hosts behind one trait (`Forge`: which origins are its repositories, opening a pull
//!   request); one module per forge (`forge/github.rs`).
//! - `breaker`: circuit breakers; `telemetry`: the Prometheus families; `logging`: the JSON log format.
//! - `backup`: verified copies of `state.db`, their schedule and uploads; `audit`: the audit log.
//! - `supervisor`: the one-for-one supervisor; `procs`: processes as `/proc` shows them; `cgroup`: jobs'
//!   cgroups (CPU of everything a job started, its memory limit, one kill); `lock`: the daemon's
//!   lock; `sdnotify`: systemd notifications; `agent_path`: finding programs on `PATH`; `memtrim`: giving
//!   idle memory back.
//!
//! Core:
//! - `core`: the handle every front and actor shares, and its services, each a folder or file of it:
//!   `core::events` (the typed events and their one emitter, audit included), `core::projects`,
//!   `core::sessions` (the session actor is the one writer of a session), `core::jobs` (the runner),
//!   `core::approvals`, `core::schedules` (scheduled instructions).
//! - `actors`: the root's children besides the fronts (store, breakers, janitor, backup, scheduler;
//!   `http` is a front).
//!
//! Fronts: `telegram` (poller, commands, notifier), `mcp` (tool server, control socket, stdio bridge, admin
//! client), `actors::http` (probes and metrics). They call the core and never the store.
//!
//! Entry points: `cli` parses commands; `daemon` boots and stops `televibe serve`; `admin`, `doctor`,
//! `backup_cmd` and `reconstruct` are the operator's commands.

pub mod actors;
pub mod admin;
pub mod agent_path;
pub mod agents;
pub mod audit;
pub mod backup;
pub mod backup_cmd;
pub mod breaker;
pub mod cgroup;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod core;
pub mod daemon;
pub mod doctor;
pub mod domain;
pub mod egress;
pub mod errors;
pub mod forge;
pub mod git;
pub mod layout;
pub mod lock;
pub mod logging;
pub mod mcp;
pub mod memtrim;
pub mod policy;
pub mod process_metrics;
pub mod procs;
pub mod reconstruct;
pub mod safe_fs;
pub mod sdnotify;
pub mod store;
pub mod supervisor;
pub mod telegram;
pub mod telemetry;
pub mod text;
