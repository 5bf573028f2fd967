//! The alert rules shipped in `deploy/prometheus/` are valid and behave as their unit tests say.

use std::process::Command;

use crate::harness::required_tool;

#[test]
fn alert_rules_check_and_unit_tests_pass() {
    let promtool = required_tool(
        "promtool",
        "install the Debian package prometheus (scripts/test does)",
    );
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yml"],
        ["test", "rules", "alerts.test.yml"],
    ] {
        let out = Command::new(&promtool)
            .args(args)
            .current_dir(dir)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("SUCCESS"),
            "promtool {args:?}: {text}"
        );
    }
}

/// Every alert has a unit test that expects it to fire, and the spec's alerts (with those that tell a full
/// disk from corruption and catch crash loops) are all there.
#[test]
fn every_alert_has_a_unit_test_that_fires_it() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    let rules = std::fs::read_to_string(format!("{dir}/alerts.yml")).unwrap();
    let tests = std::fs::read_to_string(format!("{dir}/alerts.test.yml")).unwrap();
    let alerts: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert: "))
        .collect();
    for spec in [
        "OrchestratorDown",
        "DatabaseCorruption",
        "JobStuckRunning",
        "HighApprovalBacklog",
        "CircuitBreakerOpen",
        "DiskSpaceLow",
        "HighJobFailureRate",
        "SessionLongIdle",
        "DatabaseReadOnly",
        "BackupStale",
        "DatabaseDiskFull",
        "OrchestratorCrashLooping",
        "ActorRestartLoop",
    ] {
        assert!(alerts.contains(&spec), "{spec} missing from alerts.yml");
    }
    // A test "fires" an alert when an `alertname:` line is followed by a non-empty `exp_alerts:`.
    let lines: Vec<&str> = tests.lines().map(str::trim).collect();
    for alert in &alerts {
        let fired = lines
            .windows(2)
            .any(|w| w[0] == format!("alertname: {alert}") && w[1] == "exp_alerts:");
        assert!(
            fired,
            "no unit test in alerts.test.yml expects {alert} to fire"
        );
    }
}

/// Every series an alert reads is one the daemon exports (its own families and `process_*`), so a renamed
/// metric cannot leave an alert silently reading nothing.
#[test]
fn every_metric_an_alert_reads_is_exported() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/prometheus");
    let rules = std::fs::read_to_string(format!("{dir}/alerts.yml")).unwrap();
    let exposition = televibe::telemetry::Metrics::new().encode();
    let exported: Vec<&str> = exposition
        .lines()
        .filter_map(|l| match l.strip_prefix("# TYPE ") {
            Some(rest) => rest.split(' ').next(),
            None if !l.starts_with('#') => l.split(['{', ' ']).next(),
            None => None,
        })
        .collect();
    let mut read = Vec::new();
    let mut in_expr = false;
    for line in rules.lines() {
        let t = line.trim_start();
        if t.starts_with("expr:") {
            in_expr = true;
        } else if t.starts_with("for:") || t.starts_with("- alert:") {
            in_expr = false;
        }
        if !in_expr || t.starts_with('#') {
            continue;
        }
        for word in t.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("televibe_") || word.starts_with("process_") {
                read.push(word.to_string());
            }
        }
    }
    for name in [
        "televibe_database_read_only_reason",
        "process_start_time_seconds",
        "televibe_actor_restarts_total",
    ] {
        assert!(
            read.iter().any(|r| r == name),
            "{name} not found in alerts.yml: {read:?}"
        );
    }
    for name in &read {
        assert!(
            exported.contains(&name.as_str()),
            "alerts.yml reads {name}, which the daemon does not export:\n{exposition}"
        );
    }
}
