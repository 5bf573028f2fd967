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
