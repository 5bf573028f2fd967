//! The layering of `src/`, read from the source: which file may name which, which crate belongs to which
//! module, and which import cycles exist. `actors.md` ("Layers") says the same in prose; this test fails on
//! the first import that breaks it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Every file of `src/` belongs to one layer. A file may name files of its own layer and of the layers
/// before it, never of a later one. The longest matching prefix places a file.
const LAYERS: &[(&str, &[&str])] = &[
    (
        "foundation",
        &[
            "domain/",
            "errors.rs",
            "text.rs",
            "procs.rs",
            "cgroup.rs",
            "layout.rs",
            "lock.rs",
            "logging.rs",
            "memtrim.rs",
            "process_metrics.rs",
            "sdnotify.rs",
            "agent_path.rs",
            "safe_fs.rs",
            "safe_fs/",
            "telemetry/",
            "breaker/",
            "config/",
            "store/",
            "git/",
            "backup/",
            "audit.rs",
            "supervisor/",
            // The approval rules' parser and its shell lexer are pure: the configuration checks rules with them.
            "policy/",
            // The egress proxy of the sandboxes and its in-sandbox relay: sockets and HTTP only.
            "egress/",
            // Coding agents behind one trait, one folder per agent: protocol knowledge, no daemon state.
            "agents/",
            // Code hosts behind one trait (pull requests), one module per forge: HTTP only.
            "forge/",
        ],
    ),
    ("core", &["core/", "actors/"]),
    ("front", &["telegram/", "mcp/", "actors/http.rs"]),
    (
        "entry",
        &[
            "lib.rs",
            "main.rs",
            "cli.rs",
            "daemon.rs",
            "admin.rs",
            "cleanup.rs",
            "doctor/",
            "backup_cmd.rs",
            "reconstruct.rs",
        ],
    ),
];

/// External crates and the only place that may name each.
const OWNERS: &[(&str, &[&str])] = &[
    ("sea_orm", &["store/"]),
    ("gix", &["git/"]),
    ("rmcp", &["mcp/"]),
    // The egress proxy's model route is HTTPS through the reqwest that frankenstein carries.
    ("frankenstein", &["telegram/", "egress/"]),
    ("hyper", &["actors/http.rs", "egress/"]),
    // The forges speak HTTPS through the reqwest frankenstein carries (named directly, same version and
    // features); the Telegram client and the egress proxy reach it as `frankenstein::reqwest`.
    ("reqwest", &["forge/", "telegram/", "egress/"]),
];

/// Import cycles that exist on purpose, each with its files and its reason (`actors.md` repeats them). None
/// today. Any other cycle fails, and so does a listed one that no longer exists (the list stays true).
const ALLOWED_CYCLES: &[(&[&str], &str)] = &[];

/// The tree under test: this crate's `src/`, or `LAYERING_SRC` to measure another checkout.
fn src() -> PathBuf {
    std::env::var_os("LAYERING_SRC")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/`-relative path with `/` separators.
fn rel(path: &Path) -> String {
    path.strip_prefix(src())
        .expect("under src/")
        .to_string_lossy()
        .replace('\\', "/")
}

/// The module path of a file: `jobs/mod.rs` → `[jobs]`, `jobs/runner.rs` → `[jobs, runner]`.
fn module_of(rel: &str) -> Vec<String> {
    let mut parts: Vec<String> = rel
        .trim_end_matches(".rs")
        .split('/')
        .map(String::from)
        .collect();
    if matches!(
        parts.last().map(String::as_str),
        Some("mod" | "lib" | "main")
    ) {
        parts.pop();
    }
    parts
}

/// Production code only: comments removed, and everything from the first `#[cfg(test)]` module on
/// (unit tests sit at the end of a file) or a whole file of tests.
fn production_code(rel: &str, text: &str) -> String {
    if rel.ends_with("/tests.rs") {
        return String::new();
    }
    let mut out = String::new();
    let mut rest = text;
    if let Some(i) = find_test_module(rest) {
        rest = &rest[..i];
    }
    for line in rest.lines() {
        let code = match line.find("//") {
            // A `//` inside a string literal is rare in imports; the line is cut there all the same.
            Some(i) => &line[..i],
            None => line,
        };
        out.push_str(code);
        out.push('\n');
    }
    out
}

fn find_test_module(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(i) = text[from..].find("#[cfg(test)]") {
        let at = from + i;
        let after = text[at + "#[cfg(test)]".len()..].trim_start();
        if after.starts_with("mod ") || after.starts_with("pub mod ") {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The paths of a use tree or expression path starting at `s` (after `crate::` or `super::`).
fn paths_at(s: &str, prefix: Vec<String>, out: &mut Vec<Vec<String>>) -> usize {
    let bytes: Vec<char> = s.chars().collect();
    let mut i = 0;
    let mut path = prefix;
    loop {
        while i < bytes.len() && bytes[i].is_whitespace() {
            i += 1;
        }
        if i < bytes.len() && bytes[i] == '{' {
            i += 1;
            loop {
                while i < bytes.len() && (bytes[i].is_whitespace() || bytes[i] == ',') {
                    i += 1;
                }
                if i >= bytes.len() || bytes[i] == '}' {
                    return i + 1;
                }
                let rest: String = bytes[i..].iter().collect();
                let used = paths_at(&rest, path.clone(), out);
                i += used.max(1);
            }
        }
        let start = i;
        while i < bytes.len() && is_ident(bytes[i]) {
            i += 1;
        }
        if start == i {
            out.push(path);
            return i;
        }
        let seg: String = bytes[start..i].iter().collect();
        if seg != "self" {
            path.push(seg);
        }
        if i + 1 < bytes.len() && bytes[i] == ':' && bytes[i + 1] == ':' {
            i += 2;
        } else {
            out.push(path);
            // A rename (` as Name`) ends this path.
            let mut j = i;
            while j < bytes.len() && bytes[j].is_whitespace() {
                j += 1;
            }
            if bytes[j..].starts_with(&['a', 's'])
                && bytes.get(j + 2).is_some_and(|c| c.is_whitespace())
            {
                j += 2;
                while j < bytes.len() && bytes[j].is_whitespace() {
                    j += 1;
                }
                while j < bytes.len() && is_ident(bytes[j]) {
                    j += 1;
                }
                return j;
            }
            return i;
        }
    }
}

struct Source {
    rel: String,
    module: Vec<String>,
    code: String,
}

fn sources() -> Vec<Source> {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    files.sort();
    files
        .iter()
        .map(|p| {
            let rel = rel(p);
            let text = std::fs::read_to_string(p).expect("readable source");
            Source {
                module: module_of(&rel),
                code: production_code(&rel, &text),
                rel,
            }
        })
        .collect()
}

/// The files each file names through `crate::` and `super::` paths.
fn imports(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let by_module: BTreeMap<Vec<String>, String> = sources
        .iter()
        .map(|s| (s.module.clone(), s.rel.clone()))
        .collect();
    let resolve = |path: &[String]| -> Option<String> {
        (1..=path.len())
            .rev()
            .find_map(|n| by_module.get(&path[..n]).cloned())
    };
    let mut graph = BTreeMap::new();
    for s in sources {
        let mut deps = BTreeSet::new();
        for (key, base) in [
            ("crate::", Vec::new()),
            ("super::", {
                // A file `x/mod.rs` is module `x`; its `super` is x's parent. A file `x/y.rs` is `x::y`.
                let mut m = s.module.clone();
                m.pop();
                m
            }),
        ] {
            let mut from = 0;
            while let Some(i) = s.code[from..].find(key) {
                let at = from + i;
                from = at + key.len();
                if s.code[..at].chars().next_back().is_some_and(is_ident) {
                    continue;
                }
                let mut paths = Vec::new();
                // A use tree is short; the reader looks at what follows, not at the rest of the file.
                let window: String = s.code[from..].chars().take(4000).collect();
                paths_at(&window, base.clone(), &mut paths);
                for p in paths {
                    if let Some(file) = resolve(&p)
                        && file != s.rel
                    {
                        deps.insert(file);
                    }
                }
            }
        }
        graph.insert(s.rel.clone(), deps);
    }
    graph
}

fn place<'a>(rel: &str, table: &'a [(&'a str, &'a [&'a str])]) -> Option<(usize, &'a str)> {
    table
        .iter()
        .enumerate()
        .flat_map(|(rank, (name, prefixes))| prefixes.iter().map(move |p| (rank, *name, *p)))
        .filter(|(_, _, p)| {
            if p.ends_with('/') {
                rel.starts_with(p)
            } else {
                rel == *p
            }
        })
        .max_by_key(|(_, _, p)| p.len())
        .map(|(rank, name, _)| (rank, name))
}

#[test]
fn every_file_has_a_layer_and_names_no_later_layer() {
    let sources = sources();
    let graph = imports(&sources);
    let mut wrong = Vec::new();
    for (file, deps) in &graph {
        let Some((rank, layer)) = place(file, LAYERS) else {
            wrong.push(format!(
                "{file} is in no layer: add it to LAYERS in tests/layering.rs and to actors.md"
            ));
            continue;
        };
        for dep in deps {
            let (dep_rank, dep_layer) = place(dep, LAYERS).unwrap_or((usize::MAX, "no layer"));
            if dep_rank > rank {
                wrong.push(format!("{file} ({layer}) names {dep} ({dep_layer})"));
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

/// Claude Code's protocol: its flags, output format, approval answer, state and credential files and
/// variables, its OAuth client and package. Production code names them only in `src/agents/claude/`; the
/// rest of the daemon reaches Claude Code through the `AgentDriver` trait. (Configuration defaults such as
/// the command `claude` and the hidden `~/.claude` are the operator's settings, not protocol.)
const CLAUDE_PROTOCOL: &[&str] = &[
    "--output-format",
    "stream-json",
    "--permission-prompt-tool",
    "--resume",
    "--mcp-config",
    "--strict-mcp-config",
    "--setting-sources",
    "mcpServers",
    "mcp__televibe__",
    "\"behavior\"",
    "updatedInput",
    ".credentials.json",
    "settings.json",
    "CLAUDE_CONFIG_DIR",
    "CLAUDE_CODE_OAUTH_TOKEN",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "claudeAiOauth",
    "9d1c250a-e61b-44d9-88ed-5944d1962f5e",
    "@anthropic-ai/claude-code",
];

/// What only Codex's driver may say: its app-server protocol, its state and credential files, its model
/// provider's settings and variables, its package.
const CODEX_PROTOCOL: &[&str] = &[
    "app-server",
    "thread/start",
    "thread/resume",
    "turn/start",
    "requestApproval",
    "codexErrorInfo",
    "CODEX_HOME",
    "auth.json",
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "model_providers",
    "@openai/codex",
];

/// Every needle of `protocol` is named in `folder` (the check reads what it should) and nowhere else.
fn named_in_its_agent_folder_only(folder: &str, agent: &str, protocol: &[&str]) {
    let mut wrong = Vec::new();
    for s in sources() {
        if s.rel.starts_with(folder) {
            continue;
        }
        for needle in protocol {
            if s.code.contains(needle) {
                wrong.push(format!(
                    "{} names {agent}'s {needle:?}: ask the agent's driver (src/agents/)",
                    s.rel
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let own: String = sources()
        .into_iter()
        .filter(|s| s.rel.starts_with(folder))
        .map(|s| s.code)
        .collect();
    let missing: Vec<_> = protocol.iter().filter(|n| !own.contains(**n)).collect();
    assert!(missing.is_empty(), "not in src/{folder}: {missing:?}");
}

#[test]
fn claude_code_protocol_is_named_in_its_agent_folder_only() {
    named_in_its_agent_folder_only("agents/claude/", "Claude Code", CLAUDE_PROTOCOL);
}

#[test]
fn codex_protocol_is_named_in_its_agent_folder_only() {
    named_in_its_agent_folder_only("agents/codex/", "Codex", CODEX_PROTOCOL);
}

/// What only the SQLite engine of the store may say: its dialect, pragmas, bookkeeping tables and online
/// copy. The services speak to `Store`; a second engine would be a sibling of `src/store/sqlite/`.
const SQLITE_ONLY: &[&str] = &[
    "DbBackend::Sqlite",
    // (`sqlite://` URLs cannot be checked: the reader cuts a line at `//`.)
    "sqlx::sqlite",
    "PRAGMA ",
    "VACUUM INTO",
    "sqlite_sequence",
    "sqlite_master",
    "wal_checkpoint",
];

#[test]
fn sqlite_is_named_behind_the_store_seam_only() {
    let mut wrong = Vec::new();
    for s in sources() {
        if s.rel.starts_with("store/sqlite/") {
            continue;
        }
        for needle in SQLITE_ONLY {
            if s.code.contains(needle) {
                wrong.push(format!(
                    "{} names SQLite's {needle:?}: put it behind the store (src/store/sqlite/)",
                    s.rel
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let engine: String = sources()
        .into_iter()
        .filter(|s| s.rel.starts_with("store/sqlite/"))
        .map(|s| s.code)
        .collect();
    let missing: Vec<_> = SQLITE_ONLY
        .iter()
        .filter(|n| !engine.contains(**n))
        .collect();
    assert!(missing.is_empty(), "not in src/store/sqlite/: {missing:?}");
}

/// What only the PostgreSQL engine of the store may say: its dialect, driver, catalogs, sequences, locks
/// and tools.
const POSTGRES_ONLY: &[&str] = &[
    "DbBackend::Postgres",
    "sqlx::postgres",
    "pg_advisory",
    "pg_get_serial_sequence",
    "pg_sequence_last_value",
    "pg_extension",
    "bt_index_check",
    "information_schema",
    "nextval",
    "setval",
    "default_transaction_read_only",
    "SQLSTATE",
];

/// Words of PostgreSQL's and the only places outside the engine's folder that may name them: the store's seam
/// picks the engine (`postgres::`) and tells the operator which tools back a PostgreSQL store up; its
/// notifications and queue reads (`LISTEN`, `NOTIFY`, `SKIP LOCKED`) stay inside the engine. (`is_postgres`
/// and `store.url`'s `postgres://` scheme are the engine's name, not its dialect.)
const POSTGRES_NAMED: &[(&str, &[&str])] = &[
    ("postgres::", &["store/"]),
    ("pg_dump", &["store/"]),
    ("pg_restore", &["store/"]),
    ("SKIP LOCKED", &[]),
    ("LISTEN ", &[]),
    ("NOTIFY ", &[]),
];

#[test]
fn postgresql_is_named_behind_the_store_seam_only() {
    let mut wrong = Vec::new();
    for s in sources() {
        if s.rel.starts_with("store/postgres/") {
            continue;
        }
        for needle in POSTGRES_ONLY {
            if s.code.contains(needle) {
                wrong.push(format!(
                    "{} names PostgreSQL's {needle:?}: put it behind the store (src/store/postgres/)",
                    s.rel
                ));
            }
        }
        for (needle, allowed) in POSTGRES_NAMED {
            if s.code.contains(needle) && !allowed.iter().any(|a| s.rel.starts_with(a)) {
                wrong.push(format!(
                    "{} names PostgreSQL's {needle:?}: put it behind the store (src/store/postgres/)",
                    s.rel
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let engine: String = sources()
        .into_iter()
        .filter(|s| s.rel.starts_with("store/postgres/"))
        .map(|s| s.code)
        .collect();
    let missing: Vec<_> = POSTGRES_ONLY
        .iter()
        .filter(|n| !engine.contains(**n))
        .collect();
    assert!(
        missing.is_empty(),
        "not in src/store/postgres/: {missing:?}"
    );
}

#[test]
fn the_agents_seam_names_no_core_and_no_agent_outside_its_folder() {
    let mut wrong = Vec::new();
    for s in sources() {
        if !s.rel.starts_with("agents/") {
            continue;
        }
        if s.code.contains("crate::core") {
            wrong.push(format!("{} names the core", s.rel));
        }
        if !s.rel.starts_with("agents/claude/")
            && s.code.contains("claude::")
            && s.rel != "agents/mod.rs"
        {
            wrong.push(format!("{} names the Claude driver's insides", s.rel));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The most lines a file of `src/` may have before its unit tests (doc comments count: they are read too).
const MAX_FILE_LINES: usize = 500;

#[test]
fn no_file_is_longer_than_a_reader_can_hold() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for path in files {
        let rel = rel(&path);
        if rel.ends_with("/tests.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("readable source");
        let code = &text[..find_test_module(&text).unwrap_or(text.len())];
        let lines = code.lines().count();
        if lines > MAX_FILE_LINES {
            long.push(format!("{rel}: {lines} lines before its tests (at most {MAX_FILE_LINES}): split it by concern"));
        }
    }
    assert!(long.is_empty(), "{}", long.join("\n"));
}

#[test]
fn the_fronts_call_the_core_and_never_the_store() {
    let mut wrong = Vec::new();
    for s in sources() {
        if place(&s.rel, LAYERS).map(|(_, l)| l) != Some("front") {
            continue;
        }
        for needle in ["crate::store", "core.store", "Store::"] {
            if s.code.contains(needle) {
                wrong.push(format!("{} names the store (`{needle}`)", s.rel));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[test]
fn each_external_crate_is_named_by_its_owner_only() {
    let mut wrong = Vec::new();
    for s in sources() {
        for (krate, owners) in OWNERS {
            let owned = owners.iter().any(|o| {
                if o.ends_with('/') {
                    s.rel.starts_with(o)
                } else {
                    s.rel == *o
                }
            });
            let names = s.code.match_indices(krate).any(|(i, _)| {
                !s.code[..i].chars().next_back().is_some_and(is_ident)
                    && s.code[i + krate.len()..].starts_with("::")
            });
            if names && !owned {
                wrong.push(format!("{} names {krate} (only {owners:?} may)", s.rel));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Strongly connected components with more than one file (Tarjan).
fn cycles(graph: &BTreeMap<String, BTreeSet<String>>) -> Vec<BTreeSet<String>> {
    struct Walk<'a> {
        graph: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        found: Vec<BTreeSet<String>>,
    }
    impl<'a> Walk<'a> {
        fn visit(&mut self, v: &'a str) {
            let n = self.index.len();
            self.index.insert(v, n);
            self.low.insert(v, n);
            self.stack.push(v);
            self.on_stack.insert(v);
            for w in self.graph.get(v).into_iter().flatten() {
                let w = w.as_str();
                if !self.index.contains_key(w) {
                    self.visit(w);
                    let lw = self.low[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(lw);
                } else if self.on_stack.contains(w) {
                    let iw = self.index[w];
                    let lv = self.low.get_mut(v).expect("visited");
                    *lv = (*lv).min(iw);
                }
            }
            if self.low[v] == self.index[v] {
                let mut scc = BTreeSet::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack.remove(w);
                    scc.insert(w.to_string());
                    if w == v {
                        break;
                    }
                }
                if scc.len() > 1 {
                    self.found.push(scc);
                }
            }
        }
    }
    let mut walk = Walk {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        found: Vec::new(),
    };
    for v in graph.keys() {
        if !walk.index.contains_key(v.as_str()) {
            walk.visit(v);
        }
    }
    walk.found
}

#[test]
fn import_cycles_are_the_written_down_ones() {
    let graph = imports(&sources());
    let found: BTreeSet<BTreeSet<String>> = cycles(&graph)
        .into_iter()
        .map(|c| c.into_iter().map(|f| format!("src/{f}")).collect())
        .collect();
    let allowed: BTreeSet<BTreeSet<String>> = ALLOWED_CYCLES
        .iter()
        .map(|(files, _)| files.iter().map(|f| f.to_string()).collect())
        .collect();
    let new: Vec<_> = found.difference(&allowed).collect();
    let gone: Vec<_> = allowed.difference(&found).collect();
    assert!(
        new.is_empty() && gone.is_empty(),
        "import cycles not written down: {new:#?}\nwritten-down cycles that no longer exist (or changed): {gone:#?}"
    );
}

#[test]
fn the_reader_finds_a_cycle_and_a_forbidden_import() {
    // The checks above are only as good as the reader: it must see grouped, nested and `super` imports.
    let mut paths = Vec::new();
    paths_at("{a::{b, c::D}, e as F};", Vec::new(), &mut paths);
    assert_eq!(
        paths,
        [
            vec!["a".to_string(), "b".into()],
            vec!["a".into(), "c".into(), "D".into()],
            vec!["e".into()]
        ]
    );
    let graph: BTreeMap<String, BTreeSet<String>> = [
        ("a.rs", vec!["b.rs"]),
        ("b.rs", vec!["c.rs"]),
        ("c.rs", vec!["a.rs"]),
        ("d.rs", vec!["a.rs"]),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.into_iter().map(String::from).collect()))
    .collect();
    let found = cycles(&graph);
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].len(), 3);
    assert_eq!(
        place("telegram/front.rs", LAYERS).map(|p| p.1),
        Some("front")
    );
    assert_eq!(place("actors/http.rs", LAYERS).map(|p| p.1), Some("front"));
    assert_eq!(
        place("actors/janitor.rs", LAYERS).map(|p| p.1),
        Some("core")
    );
    assert_eq!(
        place("policy/mod.rs", LAYERS).map(|p| p.1),
        Some("foundation")
    );
    assert_eq!(place("nowhere.rs", LAYERS), None);
}

/// The module graph: for every file that names another, the two sibling modules under their nearest common
/// parent (`jobs/api.rs` naming `sessions/actor.rs` gives `crate: jobs → sessions`; `jobs/api.rs` naming
/// `jobs/runner/mod.rs` gives `jobs: api → runner`). A parent naming its child, or a child its parent, is
/// no edge: that is how a module is built.
fn module_graph(sources: &[Source]) -> BTreeMap<String, BTreeSet<String>> {
    let module: BTreeMap<&str, &Vec<String>> = sources
        .iter()
        .map(|s| (s.rel.as_str(), &s.module))
        .collect();
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (file, deps) in imports(sources) {
        let from = module[file.as_str()];
        for dep in deps {
            let to = module[dep.as_str()];
            let common = from
                .iter()
                .zip(to.iter())
                .take_while(|(a, b)| a == b)
                .count();
            let (Some(a), Some(b)) = (from.get(common), to.get(common)) else {
                continue;
            };
            let parent = if common == 0 {
                "crate".to_string()
            } else {
                from[..common].join("::")
            };
            graph
                .entry(format!("{parent}::{a}"))
                .or_default()
                .insert(format!("{parent}::{b}"));
        }
    }
    graph
}

#[test]
fn modules_form_no_cycle() {
    let found = cycles(&module_graph(&sources()));
    let shown: Vec<String> = found
        .iter()
        .map(|c| c.iter().cloned().collect::<Vec<_>>().join(" ↔ "))
        .collect();
    assert!(
        found.is_empty(),
        "module cycles (each module of a set names another of it, directly or not):\n{}",
        shown.join("\n")
    );
}

/// The most lines a function may have, its signature and closing brace included (unit tests too).
const MAX_FN_LINES: usize = 150;

/// Every function of a text with its first line and its length in lines. Braces inside strings, chars
/// and comments do not count; a function without a body (a trait's declaration) is skipped.
fn functions(text: &str) -> Vec<(String, usize, usize)> {
    let chars: Vec<char> = text.chars().collect();
    let mut line_of = Vec::with_capacity(chars.len());
    let mut line = 1;
    for &c in &chars {
        line_of.push(line);
        if c == '\n' {
            line += 1;
        }
    }
    // Code only: strings, chars and comments blanked (newlines kept).
    let mut code = chars.clone();
    let mut i = 0;
    let blank = |code: &mut Vec<char>, from: usize, to: usize| {
        for c in &mut code[from..to.min(chars.len())] {
            if *c != '\n' {
                *c = ' ';
            }
        }
    };
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            let end = (i..chars.len())
                .find(|&j| chars[j] == '\n')
                .unwrap_or(chars.len());
            blank(&mut code, i, end);
            i = end;
        } else if c == '/' && next == Some('*') {
            let end = (i + 2..chars.len())
                .find(|&j| chars[j] == '*' && chars.get(j + 1) == Some(&'/'))
                .map_or(chars.len(), |j| j + 2);
            blank(&mut code, i, end);
            i = end;
        } else if c == 'r'
            && (next == Some('"') || next == Some('#'))
            && !(i > 0 && is_ident(chars[i - 1]))
        {
            let hashes = chars[i + 1..].iter().take_while(|&&c| c == '#').count();
            if chars.get(i + 1 + hashes) != Some(&'"') {
                i += 1;
                continue;
            }
            let close: String = std::iter::once('"')
                .chain(std::iter::repeat_n('#', hashes))
                .collect();
            let body = i + 2 + hashes;
            let rest: String = chars[body..].iter().collect();
            let end = rest.find(&close).map_or(chars.len(), |k| {
                body + rest[..k].chars().count() + close.len()
            });
            blank(&mut code, i, end);
            i = end;
        } else if c == '"' {
            let mut j = i + 1;
            while j < chars.len() && chars[j] != '"' {
                j += if chars[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut code, i, j + 1);
            i = j + 1;
        } else if c == '\'' {
            // A char literal ('x', '\n', '{'), not a lifetime ('a).
            let len = if next == Some('\\') {
                (i + 2..chars.len())
                    .find(|&j| chars[j] == '\'')
                    .map(|j| j - i + 1)
            } else if chars.get(i + 2) == Some(&'\'') {
                Some(3)
            } else {
                None
            };
            match len {
                Some(n) => {
                    blank(&mut code, i, i + n);
                    i += n;
                }
                None => i += 1,
            }
        } else {
            i += 1;
        }
    }
    let code: String = code.into_iter().collect();
    let code: Vec<char> = code.chars().collect();
    let mut found = Vec::new();
    let mut k = 0;
    while k + 3 < code.len() {
        let is_fn = code[k] == 'f'
            && code[k + 1] == 'n'
            && code[k + 2] == ' '
            && !(k > 0 && is_ident(code[k - 1]));
        if !is_fn {
            k += 1;
            continue;
        }
        let name: String = code[k + 3..].iter().take_while(|c| is_ident(**c)).collect();
        // The body starts at the first `{` at depth 0 of the signature; a `;` first means no body.
        let mut j = k + 3;
        let mut depth = 0i32;
        let mut body = None;
        while j < code.len() {
            match code[j] {
                '(' | '[' | '<' => depth += 1,
                ')' | ']' => depth -= 1,
                '>' if code[j - 1] != '-' && code[j - 1] != '=' => depth -= 1,
                '{' if depth <= 0 => {
                    body = Some(j);
                    break;
                }
                ';' if depth <= 0 => break,
                _ => {}
            }
            j += 1;
        }
        let Some(open) = body else {
            k = j;
            continue;
        };
        let mut braces = 0;
        let mut end = open;
        for (m, &c) in code.iter().enumerate().skip(open) {
            if c == '{' {
                braces += 1;
            } else if c == '}' {
                braces -= 1;
                if braces == 0 {
                    end = m;
                    break;
                }
            }
        }
        found.push((name, line_of[k], line_of[end] - line_of[k] + 1));
        k += 3;
    }
    found
}

#[test]
fn no_function_is_longer_than_a_reader_can_hold() {
    let mut files = Vec::new();
    rust_files(&src(), &mut files);
    let mut long = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).expect("readable source");
        for (name, line, lines) in functions(&text) {
            if lines > MAX_FN_LINES {
                long.push(format!(
                    "src/{}:{line} fn {name}: {lines} lines (at most {MAX_FN_LINES})",
                    rel(&path)
                ));
            }
        }
    }
    assert!(long.is_empty(), "functions too long:\n{}", long.join("\n"));
}

#[test]
fn the_function_reader_measures_bodies_not_strings() {
    let text = "fn a() {\n    let s = \"}\";\n    let c = '{';\n    // }\n}\ntrait T {\n    fn b(&self) -> Vec<u8>;\n}\nfn c<'a>(x: &'a str) -> impl Fn() -> u8 {\n    let r = r#\"{\"#;\n    || 1\n}\n";
    let found = functions(text);
    assert_eq!(
        found,
        [("a".to_string(), 1, 5), ("c".to_string(), 9, 4)],
        "{found:?}"
    );
}

/// The core is one folder: `impl Core` blocks live there only, and in at most this many of its files.
const MAX_CORE_IMPL_FILES: usize = 3;

#[test]
fn the_core_is_implemented_in_its_own_folder_only() {
    let mut inside = Vec::new();
    let mut outside = Vec::new();
    for s in sources() {
        if s.code.contains("impl Core {") || s.code.contains("impl Core{") {
            if s.rel.starts_with("core/") {
                inside.push(s.rel);
            } else {
                outside.push(s.rel);
            }
        }
    }
    assert!(
        outside.is_empty(),
        "`impl Core` outside src/core/: {outside:?} (give the methods to the service that owns the state)"
    );
    assert!(
        inside.len() <= MAX_CORE_IMPL_FILES,
        "`impl Core` in {} files of src/core/ (at most {MAX_CORE_IMPL_FILES}): {inside:?}",
        inside.len()
    );
}
