//! The Grafana dashboard in `deploy/grafana/` is well formed, reads only metrics the daemon exports, and its PromQL parses.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use televibe::telemetry::{
    EventTypeLabel, JobLabel, Metrics, ProjectLabel, ProjectStateLabel, ProjectStatusLabel,
    ScopeLabel, ScopeResultLabel, SessionLabel,
};

use crate::harness::*;

const DASHBOARD: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/grafana/televibe.json");

/// Grafana's grid is 24 columns wide.
const GRID_WIDTH: i64 = 24;

/// Values for Grafana's built-in variables when an expression is checked outside Grafana.
const BUILTIN_VARIABLES: [(&str, &str); 5] = [
    ("__rate_interval", "5m"),
    ("__interval", "1m"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__interval_ms", "60000"),
];

/// One PromQL expression of the dashboard, with where it comes from for messages.
struct Query {
    origin: String,
    expr: String,
}

#[test]
fn grafana_dashboard_is_well_formed_and_reads_exported_metrics() {
    let promtool = required_tool(
        "promtool",
        "install the Debian package prometheus (scripts/test does)",
    );
    let text = std::fs::read_to_string(DASHBOARD)
        .unwrap_or_else(|e| panic!("cannot read {DASHBOARD}: {e}"));
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{DASHBOARD} is not JSON: {e}"));

    let mut problems = Vec::new();
    let queries = check_structure(&dashboard, &mut problems);

    // The authority on names is the daemon: what a running one exposes (its process_* series among them),
    // plus every family of its registry with one child each, since prometheus-client leaves empty families out.
    let env = Env::new("");
    let daemon = env.start();
    let (code, exposition) = daemon.get("/metrics");
    assert_eq!(code, 200, "{exposition}");
    drop(daemon);
    let mut exported = exported_names(&exposition);
    exported.extend(exported_names(&every_family_touched().encode()));
    assert!(
        exported.contains("televibe_jobs_total")
            && exported.contains("televibe_job_duration_seconds_bucket"),
        "the exposition parser missed families: {exported:?}"
    );
    for q in &queries {
        for name in metric_names(&q.expr) {
            if !exported.contains(&name) {
                problems.push(format!(
                    "{}: `{name}` is not exported by the daemon (expr `{}`)",
                    q.origin, q.expr
                ));
            }
        }
    }

    let variables = variables(&dashboard);
    let mut expanded = Vec::new();
    for q in &queries {
        match expand(&q.expr, &variables) {
            Ok(expr) => expanded.push((q.origin.as_str(), expr)),
            Err(e) => problems.push(format!("{}: {e} (expr `{}`)", q.origin, q.expr)),
        }
    }
    if let Err(e) = promtool_check(&promtool, &expanded) {
        problems.push(e);
    }

    assert!(
        problems.is_empty(),
        "{DASHBOARD}:\n  {}",
        problems.join("\n  ")
    );
}

/// Checks the dashboard's shape and returns every PromQL expression in it (panel targets and query variables).
fn check_structure(dashboard: &Value, problems: &mut Vec<String>) -> Vec<Query> {
    if dashboard["title"] != "TeleVibeCode" {
        problems.push(format!(
            "title is {}, not \"TeleVibeCode\"",
            dashboard["title"]
        ));
    }
    if dashboard["uid"] != "televibe" {
        problems.push(format!("uid is {}, not \"televibe\"", dashboard["uid"]));
    }
    match dashboard["schemaVersion"].as_i64() {
        Some(v) if v >= 36 => {}
        _ => problems.push(format!(
            "schemaVersion {} is not a number >= 36",
            dashboard["schemaVersion"]
        )),
    }

    let datasources = prometheus_datasource_refs(dashboard);
    if datasources.is_empty() {
        problems.push(
            "no Prometheus data source to choose: neither a `datasource` variable with query \"prometheus\" nor a prometheus `__inputs` entry"
                .into(),
        );
    }
    let check_datasource = |origin: &str, ds: &Value, problems: &mut Vec<String>| {
        if ds.is_null() {
            return;
        }
        let uid = ds["uid"].as_str().unwrap_or_default();
        if ds["type"] != "prometheus" || !datasources.contains(uid) {
            problems.push(format!(
                "{origin}: data source {ds} is not the dashboard's Prometheus data source variable"
            ));
        }
    };

    let mut queries = Vec::new();
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, [i64; 4])> = Vec::new();
    let top = dashboard["panels"].as_array().cloned().unwrap_or_default();
    if top.is_empty() {
        problems.push("no panels".into());
    }
    // Panels inside collapsed rows are laid out as if the row were open, so only the top level must not overlap.
    let mut all: Vec<(bool, Value)> = Vec::new();
    for p in top {
        let nested = p["panels"].as_array().cloned().unwrap_or_default();
        all.push((true, p));
        all.extend(nested.into_iter().map(|n| (false, n)));
    }
    for (top_level, p) in &all {
        let title = p["title"].as_str().unwrap_or_default();
        let origin = format!("panel {} {title:?}", p["id"]);
        match p["id"].as_i64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => problems.push(format!("{origin}: id {id} is used twice")),
            None => problems.push(format!("{origin}: no numeric id")),
        }
        let kind = p["type"].as_str().unwrap_or_default();
        if kind.is_empty() {
            problems.push(format!("{origin}: no type"));
        }
        if title.trim().is_empty() {
            problems.push(format!("{origin}: no title"));
        }
        let pos = &p["gridPos"];
        let field = |k: &str| pos[k].as_i64();
        match (field("x"), field("y"), field("w"), field("h")) {
            (Some(x), Some(y), Some(w), Some(h))
                if x >= 0 && y >= 0 && w >= 1 && h >= 1 && x + w <= GRID_WIDTH =>
            {
                if *top_level {
                    for (other, b) in &boxes {
                        if x < b[0] + b[2] && b[0] < x + w && y < b[1] + b[3] && b[1] < y + h {
                            problems.push(format!("{origin}: overlaps {other}"));
                        }
                    }
                    boxes.push((origin.clone(), [x, y, w, h]));
                }
            }
            _ => problems.push(format!(
                "{origin}: gridPos {pos} is not x, y, w, h within a {GRID_WIDTH}-wide grid"
            )),
        }
        if kind == "row" {
            continue;
        }
        check_datasource(&origin, &p["datasource"], problems);
        let targets = p["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{origin}: no targets"));
        }
        let mut ref_ids = BTreeSet::new();
        for t in &targets {
            let ref_id = t["refId"].as_str().unwrap_or_default();
            let origin = format!("{origin} target {ref_id:?}");
            if ref_id.is_empty() || !ref_ids.insert(ref_id.to_string()) {
                problems.push(format!("{origin}: refId missing or used twice"));
            }
            check_datasource(&origin, &t["datasource"], problems);
            if kind == "heatmap" && t["format"] != "heatmap" {
                problems.push(format!(
                    "{origin}: a heatmap target needs format \"heatmap\""
                ));
            }
            match t["expr"].as_str() {
                Some(expr) if !expr.trim().is_empty() => queries.push(Query {
                    origin,
                    expr: expr.to_string(),
                }),
                _ => problems.push(format!("{origin}: no expr")),
            }
        }
    }

    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] != "query" {
            continue;
        }
        let origin = format!("variable {}", v["name"]);
        check_datasource(&origin, &v["datasource"], problems);
        let query = v["query"]["query"]
            .as_str()
            .or(v["query"].as_str())
            .unwrap_or_default();
        // `label_values(m, l)` and friends are Grafana's, not PromQL: only the series selector inside is checked.
        let inside = |f: &str| {
            query
                .trim()
                .strip_prefix(f)
                .and_then(|r| r.strip_prefix('('))
                .and_then(|r| r.strip_suffix(')'))
        };
        let promql = if let Some(args) = inside("label_values") {
            args.rsplit_once(',').map_or("", |(selector, _)| selector)
        } else if let Some(expr) = inside("query_result") {
            expr
        } else if inside("label_names").is_some() || inside("metrics").is_some() {
            ""
        } else {
            query
        };
        if !promql.trim().is_empty() {
            queries.push(Query {
                origin,
                expr: promql.trim().to_string(),
            });
        }
    }
    queries
}

/// The `uid`s (`${name}`, `$name`) a panel may use for a Prometheus data source chosen at import or view time.
fn prometheus_datasource_refs(dashboard: &Value) -> BTreeSet<String> {
    let mut names = Vec::new();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        if v["type"] == "datasource" && v["query"] == "prometheus" {
            names.extend(v["name"].as_str().map(str::to_string));
        }
    }
    for i in dashboard["__inputs"].as_array().into_iter().flatten() {
        if i["type"] == "datasource" && i["pluginId"] == "prometheus" {
            names.extend(i["name"].as_str().map(str::to_string));
        }
    }
    names
        .into_iter()
        .flat_map(|n| [format!("${{{n}}}"), format!("${n}")])
        .collect()
}

/// Every dashboard variable with the value it is checked with: its current value, or a placeholder.
fn variables(dashboard: &Value) -> BTreeMap<String, String> {
    let mut vars: BTreeMap<String, String> = BUILTIN_VARIABLES
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let Some(name) = v["name"].as_str() else {
            continue;
        };
        let current = &v["current"]["value"];
        let value = current
            .as_str()
            .or_else(|| current.get(0).and_then(Value::as_str))
            .filter(|s| !s.is_empty() && !s.starts_with('$'))
            .unwrap_or("placeholder");
        vars.insert(name.to_string(), value.to_string());
    }
    vars
}

/// `expr` with `$name`, `${name}`, `${name:format}` and `[[name]]` replaced; an unknown variable is an error.
fn expand(expr: &str, vars: &BTreeMap<String, String>) -> Result<String, String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find(['$', '[']) {
        out.push_str(&rest[..i]);
        let tail = &rest[i..];
        let (name, len) = if let Some(braced) = tail.strip_prefix("${") {
            let end = braced
                .find('}')
                .ok_or_else(|| format!("unclosed `${{` in `{expr}`"))?;
            let inner = &braced[..end];
            (inner.split(':').next().unwrap_or(inner), end + 3)
        } else if let Some(bracketed) = tail.strip_prefix("[[") {
            let end = bracketed
                .find("]]")
                .ok_or_else(|| format!("unclosed `[[` in `{expr}`"))?;
            let inner = &bracketed[..end];
            (inner.split(':').next().unwrap_or(inner), end + 4)
        } else if let Some(name) = tail.strip_prefix('$') {
            let end = name.find(|c| !is_ident(c)).unwrap_or(name.len());
            (&name[..end], end + 1)
        } else {
            // A plain `[`, as in a range selector.
            out.push('[');
            rest = &tail[1..];
            continue;
        };
        let value = vars
            .get(name)
            .ok_or_else(|| format!("unknown variable `{name}`"))?;
        out.push_str(value);
        rest = &tail[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The metric names of the daemon (`televibe_*`) and of its process (`process_*`) an expression reads,
/// outside string literals.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut chars = expr.char_indices().peekable();
    let mut prev = ' ';
    while let Some((i, c)) = chars.next() {
        if matches!(c, '"' | '\'' | '`') {
            // Skip the literal (label values, regexes), escapes included.
            let mut escaped = false;
            for (_, d) in chars.by_ref() {
                if escaped {
                    escaped = false;
                } else if d == '\\' && c != '`' {
                    escaped = true;
                } else if d == c {
                    break;
                }
            }
            prev = c;
            continue;
        }
        if is_name(c) && !is_name(prev) {
            let mut end = i + c.len_utf8();
            while let Some(&(j, d)) = chars.peek() {
                if !is_name(d) {
                    break;
                }
                end = j + d.len_utf8();
                chars.next();
            }
            let token = &expr[i..end];
            if token.starts_with("televibe_") || token.starts_with("process_") {
                names.insert(token.to_string());
            }
            prev = 'a';
            continue;
        }
        prev = c;
    }
    names
}

/// A registry of the daemon's metrics in which every labelled family has a child, so each is encoded.
fn every_family_touched() -> Metrics {
    let m = Metrics::new();
    let project = ProjectLabel {
        project_id: "p".into(),
    };
    let project_state = ProjectStateLabel {
        project_id: "p".into(),
        state: "idle".into(),
    };
    let project_status = ProjectStatusLabel {
        project_id: "p".into(),
        status: "done".into(),
    };
    let session = SessionLabel {
        session_id: "s".into(),
    };
    let job = JobLabel { job_id: "j".into() };
    let scope = ScopeLabel {
        scope: "shell".into(),
    };
    let event = EventTypeLabel {
        event_type: "job_done".into(),
    };
    m.sessions_total.get_or_create(&project).inc();
    m.sessions_active.get_or_create(&project_state).set(0);
    m.session_duration_seconds
        .get_or_create(&project)
        .observe(1.0);
    m.session_last_activity_timestamp
        .get_or_create(&session)
        .set(0);
    m.jobs_total.get_or_create(&project_status).inc();
    m.jobs_active.get_or_create(&project).set(0);
    m.job_duration_seconds
        .get_or_create(&project_status)
        .observe(1.0);
    m.job_queue_size.get_or_create(&session).set(0);
    m.job_start_timestamp.get_or_create(&job).set(0);
    m.approvals_total
        .get_or_create(&ScopeResultLabel {
            scope: "shell".into(),
            result: "approved".into(),
        })
        .inc();
    m.approval_response_seconds
        .get_or_create(&scope)
        .observe(1.0);
    m.events_total.get_or_create(&event).inc();
    m.event_delivery_seconds.get_or_create(&event).observe(1.0);
    m.workspace_disk_bytes.get_or_create(&session).set(0);
    m.set_log_bytes("j", 0);
    m.register_actor("store");
    m.set_health("database", true);
    m.backup_result("success");
    m
}

/// Every series name an exposition can hold: its samples, plus the series each `# TYPE` implies, so a family
/// with no labelled child yet (a histogram before its first observation) still counts.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut words = rest.split_whitespace();
            let (Some(name), Some(kind)) = (words.next(), words.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "histogram" => &["_bucket", "_sum", "_count"],
                "summary" => &["", "_sum", "_count"],
                _ => &[""],
            };
            names.extend(suffixes.iter().map(|s| format!("{name}{s}")));
        } else if !line.starts_with('#') && !line.trim().is_empty() {
            let end = line.find(['{', ' ']).unwrap_or(line.len());
            names.insert(line[..end].to_string());
        }
    }
    names
}

/// Parses every expression with `promtool check rules`, as recording rules of one group.
fn promtool_check(promtool: &std::path::Path, exprs: &[(&str, String)]) -> Result<(), String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rules = String::from("groups:\n  - name: grafana_dashboard\n    rules:\n");
    for (i, (origin, expr)) in exprs.iter().enumerate() {
        // A JSON string is a YAML double-quoted scalar; the comment names the panel in promtool's report.
        rules.push_str(&format!(
            "      # {}\n      - record: dashboard:query_{i}\n        expr: {}\n",
            origin.replace('\n', " "),
            serde_json::to_string(expr).expect("a string serialises")
        ));
    }
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(&file, &rules).expect("write the rules file");
    let out = Command::new(promtool)
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e}", promtool.display()));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() && text.contains("SUCCESS") {
        Ok(())
    } else {
        Err(format!(
            "promtool check rules rejects the dashboard's PromQL:\n{text}\nrules checked:\n{rules}"
        ))
    }
}
