//! Failure drills: one per row of the operations spec's failure table and per degraded mode, against the
//! real daemon with the fake Bot API, the fake model API and the real Claude Code CLI. Each asserts
//! detection, what the user sees, recovery and that nothing was lost, and records its times in
//! `target/drills/drills.{md,json}` beside the spec's RTO.
#![allow(dead_code)]

#[path = "../it/fake_model.rs"]
mod fake_model;
#[path = "../it/fake_telegram.rs"]
mod fake_telegram;
#[path = "../it/harness.rs"]
mod harness;
#[path = "../it/pg.rs"]
mod pg;

mod agent;
mod common;
mod disk;
mod process;
mod record;
mod telegram;
