//! Configuration: built-in defaults, then `config.toml`, then `TELEVIBE_*` environment, validated once at start.
//!
//! The raw structs mirror the TOML file one to one and refuse unknown keys; `validate` turns them into typed
//! values (socket addresses, durations, absolute paths) and names the offending key when a value is impossible.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::domain::breaker::{BreakerName, BreakerSettings};
pub use agent::valid_host_pattern;

mod agent;
mod cluster;
mod phone;
mod raw;
mod root;
mod sections;
mod settings;
mod source;
mod store;

pub use cluster::{ClusterSettings, RawCluster};
pub use phone::{FilesSettings, GithubSettings, RawFiles, RawGithub, RawVoice, VoiceSettings};
pub use raw::*;
pub use settings::*;
pub use source::{ConfigSource, MASK, secret_looking};
pub use store::RawStore;

/// The longest root for which a job's approval socket path (`jobs::sandbox::approval_dir`) fits in a Unix socket address (107 bytes):
/// `<root>/run/<12 hex>/approval/sock` adds 31; 44 leaves room.
pub const MAX_ROOT_LEN: usize = 107 - 44;

/// A configuration problem, always naming the key or file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path} does not exist")]
    MissingFile { path: PathBuf },
    #[error("invalid configuration: {0}")]
    Parse(String),
    #[error("invalid value for `{key}`: {reason}")]
    Invalid { key: &'static str, reason: String },
}

fn invalid(key: &'static str, reason: impl std::fmt::Display) -> ConfigError {
    ConfigError::Invalid {
        key,
        reason: reason.to_string(),
    }
}

/// Validated configuration used by the daemon and the clients.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file and environment as written: only `config show` reads it (tests/layering.rs keeps the rest
    /// of `src/` on the typed values below).
    raw: RawConfig,
    pub file: Option<PathBuf>,
    pub root: PathBuf,
    /// `root` was not configured and `/projects` is not writable for this user: the root is their state
    /// directory (`serve` says so at start).
    pub root_is_fallback: bool,
    pub http_listen: SocketAddr,
    pub socket_path: PathBuf,
    pub telegram_token: Option<String>,
    pub breakers: [(BreakerName, BreakerSettings); 6],
    pub supervision: RestartPolicy,
    pub log_filter: String,
    /// Absolute directories besides `<root>/repos` where projects may live.
    pub allowed_roots: Vec<PathBuf>,
    pub agent: AgentSettings,
    pub jobs: JobSettings,
    pub approvals: ApprovalSettings,
    pub telegram: TelegramSettings,
    pub backup: BackupSettings,
    pub logging: LoggingSettings,
    pub sessions: SessionSettings,
    pub http: HttpSettings,
    pub store: StoreSettings,
    pub debug: DebugSettings,
    /// `git.timeout_secs`: the longest a git operation may take.
    pub git_timeout: Duration,
    /// `git.remote_timeout_secs`: the longest one git command talking to a remote (push, clone) may take.
    pub git_remote_timeout: Duration,
    /// `projects.trusted`: projects whose own settings (hooks, MCP servers) the agent may load.
    pub trusted_projects: Vec<String>,
    pub voice: VoiceSettings,
    pub files: FilesSettings,
    pub github: GithubSettings,
    pub cluster: ClusterSettings,
}

fn absolute(p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .map(|d| d.join(p))
            .unwrap_or_else(|_| p.to_path_buf())
    }
}

#[cfg(test)]
mod tests {
    use super::source::{describe_figment_error, toml_string};
    use super::*;
    use figment::Figment;
    use figment::providers::{Format, Serialized, Toml};

    fn from_toml(text: &str) -> Result<Config, ConfigError> {
        let raw: RawConfig = Figment::from(Serialized::defaults(RawConfig::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| ConfigError::Parse(describe_figment_error(e)))?;
        Config::validate(raw)
    }

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let c = from_toml("").unwrap();
        assert_eq!(c.http_listen.to_string(), "127.0.0.1:9464");
        assert_eq!(c.breakers[0].1.failure_threshold, 5);
        assert_eq!(c.breakers[0].1.timeout, Duration::from_secs(300));
        assert_eq!(c.breakers[3].1.timeout, Duration::from_secs(30));
        // Claude Code alone, and the default.
        assert_eq!(c.agent.names(), ["claude"]);
        assert_eq!(c.agent.default, "claude");
        // No root configured: /projects, or this user's state directory when /projects is not theirs.
        assert!(
            c.root == Path::new("/projects") || c.root_is_fallback,
            "{:?}",
            c.root
        );
        assert_eq!(c.socket_path, c.root.join("orchestrator/televibe.sock"));
        let explicit = from_toml("root = \"/srv/tv\"\n").unwrap();
        assert_eq!(
            (explicit.root.as_path(), explicit.root_is_fallback),
            (Path::new("/srv/tv"), false)
        );
        assert!(c.telegram_token.is_none());
    }

    #[test]
    fn shipped_config_toml_documents_the_real_defaults() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/config.toml");
        let shipped: RawConfig = Figment::from(Toml::file_exact(path)).extract().unwrap();
        assert_eq!(toml_string(&shipped), toml_string(&RawConfig::default()));
    }

    #[test]
    fn agents_have_their_own_command_lines_and_the_default_must_be_configured() {
        let c = from_toml(
            "[agent]\ncommand = \"/opt/claude\"\nenv = { A = \"1\" }\n\
             [agents.codex]\nextra_args = [\"-c\", \"model=\\\"m\\\"\"]\nenv = { KEY = \"k\" }\n",
        )
        .unwrap();
        assert_eq!(c.agent.names(), ["claude", "codex"]);
        assert_eq!(c.agent.of("claude").command, "/opt/claude");
        let codex = c.agent.of("codex");
        assert_eq!(codex.command, "codex");
        assert_eq!(codex.extra_args, ["-c", "model=\"m\""]);
        assert_eq!(codex.env.get("KEY").map(String::as_str), Some("k"));
        assert!(!codex.env.contains_key("A"), "[agent] env is Claude Code's");
        // [agents.claude] overrides [agent] and adds to its environment.
        let c = from_toml("[agents.claude]\ncommand = \"/x/claude\"\nenv = { B = \"2\" }\n[agent]\nenv = { A = \"1\" }\n")
            .unwrap();
        let claude = c.agent.of("claude");
        assert_eq!(claude.command, "/x/claude");
        assert_eq!(
            (claude.env["A"].as_str(), claude.env["B"].as_str()),
            ("1", "2")
        );
        let e = from_toml("[agent]\ndefault = \"gemini\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agent.default") && e.contains("claude"), "{e}");
        let e = from_toml("[agents.gemini]\ncommand = \"g\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("gemini"), "{e}");
        let e = from_toml("[agents.codex]\nenv = { TELEVIBE_X = \"1\" }\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("agents.codex.env"), "{e}");
        // Codex as the default is configured by that alone.
        let c = from_toml("[agent]\ndefault = \"codex\"\n").unwrap();
        assert_eq!(c.agent.names(), ["claude", "codex"]);
    }

    #[test]
    fn unknown_key_is_named() {
        let e = from_toml("[http]\nlisten = \"127.0.0.1:1\"\nbogus = 1\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("bogus") && msg.contains("http"), "{msg}");
    }

    #[test]
    fn bad_port_is_named() {
        let e = from_toml("[http]\nlisten = \"127.0.0.1:99999\"\n").unwrap_err();
        assert!(e.to_string().contains("http.listen"), "{e}");
    }

    #[test]
    fn wrong_type_is_named() {
        let e = from_toml("[jobs]\nmax_concurrent = \"three\"\n").unwrap_err();
        assert!(e.to_string().contains("jobs.max_concurrent"), "{e}");
    }

    #[test]
    fn remote_listen_needs_opt_in() {
        assert!(from_toml("[http]\nlisten = \"0.0.0.0:9464\"\n").is_err());
        assert!(from_toml("[http]\nlisten = \"0.0.0.0:9464\"\nallow_remote = true\n").is_ok());
    }

    #[test]
    fn every_secret_looking_value_is_masked() {
        let dir = tempfile::tempdir().unwrap();
        let token_file = dir.path().join("token");
        std::fs::write(&token_file, "123:from-file\n").unwrap();
        let c = from_toml(&format!(
            "[telegram]\ntoken_file = \"{}\"\napi_url = \"https://AKIA5:topsecret6@bucket.example/x\"\n\
             [agent]\nenv = {{ ANTHROPIC_API_KEY = \"sk-live-1\", github_token = \"ghp-2\", \
             Db_Password = \"pw-3\", CLIENT_SECRET = \"cs-4\", EMPTY_KEY = \"\", HOME = \"/home/me\" }}\n",
            token_file.display()
        ))
        .unwrap();
        let out = c.to_masked_toml();
        for secret in ["sk-live-1", "ghp-2", "pw-3", "cs-4", "AKIA5", "topsecret6"] {
            assert!(!out.contains(secret), "{secret} leaked: {out}");
        }
        assert!(out.contains("ANTHROPIC_API_KEY = \"********\""), "{out}");
        assert!(out.contains("EMPTY_KEY = \"\""), "empty stays empty: {out}");
        assert!(out.contains("/home/me"), "ordinary values are shown: {out}");
        assert!(!out.contains("from-file"), "{out}");
        assert!(
            out.contains(&token_file.display().to_string()),
            "a path is not a secret: {out}"
        );
        assert!(out.contains("https://********@bucket.example/x"), "{out}");
        // The masked text is still the configuration, in the file's order.
        let root = out.find("root =").unwrap();
        assert!(root < out.find("[http]").unwrap(), "{out}");
    }

    #[test]
    fn backup_settings_are_checked_at_load() {
        let e = from_toml("[backup]\nremote = \"s3://AKIA5:topsecret6@bucket/x\"\n").unwrap_err();
        let text = e.to_string();
        assert!(text.contains("backup.remote"), "{text}");
        assert!(!text.contains("topsecret6"), "{text}");
        assert!(from_toml("[backup]\nremote = \"s3://bucket/televibe\"\n").is_ok());
        assert!(from_toml("[backup]\nschedule = \"0 */6 * *\"\n").is_err());
        assert!(from_toml("[breakers.backup_remote]\nfailure_threshold = 0\n").is_err());
    }

    /// The typed errors of the parts (sizes, schedules, remote URLs) read exactly as the operator knows them.
    #[test]
    fn typed_part_errors_keep_their_text() {
        for (toml, text) in [
            (
                "[jobs]\nmemory_max = \"12Q\"\n",
                "invalid value for `jobs.memory_max`: \"12Q\": unknown unit (K, M, G or T)",
            ),
            (
                "[jobs]\nmemory_max = \"lots\"\n",
                "invalid value for `jobs.memory_max`: \"lots\" is not a size (bytes, or a number with K, M, G or T)",
            ),
            (
                "[jobs]\nmemory_max = \"99999999999T\"\n",
                "invalid value for `jobs.memory_max`: \"99999999999T\" is too large",
            ),
            (
                "[backup]\nschedule = \"0 */6 * *\"\n",
                "invalid value for `backup.schedule`: \"0 */6 * *\" must have five fields: minute hour day-of-month month day-of-week",
            ),
            (
                "[backup]\nremote = \"s3://AKIA5:topsecret6@bucket/x\"\n",
                "invalid value for `backup.remote`: must not hold credentials; set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY in the daemon's environment instead",
            ),
            (
                "[backup]\nremote = \"file://relative\"\n",
                "invalid value for `backup.remote`: file:// needs an absolute path (file:///srv/backups)",
            ),
            (
                "[backup]\nremote = \"http://bucket/x\"\n",
                "invalid value for `backup.remote`: must start with s3:// or file://",
            ),
            (
                "[backup]\nremote = \"s3:///x\"\n",
                "invalid value for `backup.remote`: expected s3://bucket/prefix",
            ),
        ] {
            assert_eq!(from_toml(toml).unwrap_err().to_string(), text, "{toml}");
        }
    }

    #[test]
    fn the_store_url_is_empty_or_a_postgresql_url() {
        for (url, ok) in [
            ("mysql://tv@db/tv", false),
            ("/var/lib/state.db", false),
            ("postgres://tv@/tv", false),
            ("postgres://db:5432/tv", true),
            ("postgresql://tv@db:5432/tv", true),
            ("", true),
        ] {
            match from_toml(&format!("[store]\nurl = \"{url}\"\n")) {
                Ok(c) => assert!(ok && c.store.url.is_some() != url.is_empty(), "{url}"),
                Err(e) => {
                    let e = e.to_string();
                    assert!(!ok && e.contains("store.url"), "{url}: {e}");
                }
            }
        }
    }

    #[test]
    fn the_store_password_never_rides_in_the_url_and_never_shows() {
        for url in [
            "postgres://tv:hunter2@db:5432/tv",
            "postgresql://tv:@db/tv",
            "postgres://tv@db/tv?sslmode=require&password=hunter2",
        ] {
            let e = from_toml(&format!("[store]\nurl = \"{url}\"\n"))
                .unwrap_err()
                .to_string();
            assert!(e.contains("store.url"), "{e}");
            assert!(e.contains("TELEVIBE_STORE__PASSWORD"), "{e}");
            assert!(e.contains("store.password_file"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
        let c = from_toml("[store]\nurl = \"postgres://tv@db:5432/tv\"\npassword = \"hunter2\"\n")
            .unwrap();
        assert_eq!(c.store.url.as_deref(), Some("postgres://tv@db:5432/tv"));
        assert_eq!(c.store.password.as_deref(), Some("hunter2"));
        let shown = c.to_masked_toml();
        assert!(!shown.contains("hunter2"), "{shown}");
        // The URL shows its host and database (its user information is masked as any URL's is).
        assert!(shown.contains("@db:5432/tv\""), "{shown}");
        assert!(!format!("{c:?}").contains("hunter2"));
        // The file's first line is the password; both ways at once is refused.
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cret\nignored\n").unwrap();
        let c = from_toml(&format!(
            "[store]\nurl = \"postgres://tv@db/tv\"\npassword_file = \"{}\"\n",
            file.display()
        ))
        .unwrap();
        assert_eq!(c.store.password.as_deref(), Some("s3cret"));
        let e = from_toml(&format!(
            "[store]\nurl = \"postgres://tv@db/tv\"\npassword = \"x\"\npassword_file = \"{}\"\n",
            file.display()
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("store.password_file"), "{e}");
        // Without a URL the store is SQLite's file and no password is read.
        let c = from_toml("").unwrap();
        assert_eq!((c.store.url, c.store.password), (None, None));
    }

    #[test]
    fn secret_looking_names() {
        for k in [
            "token",
            "API_KEY",
            "apikey",
            "Secret",
            "db_password",
            "PASSWD",
            "aws_credentials",
        ] {
            assert!(secret_looking(k), "{k}");
        }
        for k in ["token_file", "key_path", "HOME", "api_url", "allowed_users"] {
            assert!(!secret_looking(k), "{k}");
        }
    }

    #[test]
    fn allowed_chats_are_group_ids() {
        let c = from_toml("[telegram]\nallowed_chats = [-1001234]\n").unwrap();
        assert_eq!(c.raw.telegram.allowed_chats, vec![-1001234]);
        let e = from_toml("[telegram]\nallowed_chats = [4242]\n").unwrap_err();
        assert!(e.to_string().contains("telegram.allowed_chats"), "{e}");
    }

    #[test]
    fn token_is_masked() {
        let c = from_toml("[telegram]\ntoken = \"123:secret\"\n").unwrap();
        let out = c.to_masked_toml();
        assert!(!out.contains("secret"), "{out}");
        assert!(out.contains("********"));
    }

    /// Each bound refuses the first value past it, naming its key, and accepts the value on it.
    #[test]
    fn every_bound_is_exact_and_names_its_key() {
        let root_at = |len: usize| format!("root = \"/{}\"\n", "r".repeat(len - 1));
        let socket_at = |len: usize| format!("[socket]\npath = \"/{}\"\n", "s".repeat(len - 1));
        let cases: Vec<(String, Option<&str>)> = vec![
            (root_at(MAX_ROOT_LEN), None),
            (root_at(MAX_ROOT_LEN + 1), Some("root")),
            (socket_at(107), None),
            (socket_at(108), Some("socket.path")),
            (
                "[telegram]\napi_url = \"https://api.example\"\n".into(),
                None,
            ),
            (
                "[telegram]\napi_url = \"http://127.0.0.1:1\"\n".into(),
                None,
            ),
            (
                "[telegram]\napi_url = \"ftp://api.example\"\n".into(),
                Some("telegram.api_url"),
            ),
            ("[jobs]\nkill_grace_secs = 1\n".into(), None),
            ("[jobs]\nkill_grace_secs = 600\n".into(), None),
            (
                "[jobs]\nkill_grace_secs = 601\n".into(),
                Some("jobs.kill_grace_secs"),
            ),
            (
                "[jobs]\nkill_grace_secs = 0\n".into(),
                Some("jobs.kill_grace_secs"),
            ),
            ("[jobs]\nmax_log_bytes = 4096\n".into(), None),
            (
                "[jobs]\nmax_log_bytes = 4095\n".into(),
                Some("jobs.max_log_bytes"),
            ),
            (
                "[agent]\nsandbox_hide = [\"/etc/x\", \"~/y\"]\n".into(),
                None,
            ),
            (
                "[agent]\nsandbox_hide = [\"relative/x\"]\n".into(),
                Some("agent.sandbox_hide"),
            ),
            (
                "[agent]\nsandbox_write = [\"/a\\u0000b\"]\n".into(),
                Some("agent.sandbox_write"),
            ),
            (
                "[agent]\nnetwork = \"wide\"\n".into(),
                Some("agent.network"),
            ),
            (
                "[agent]\nnetwork_allow = [\"http://x.org\"]\n".into(),
                Some("agent.network_allow"),
            ),
            (
                "[agent]\nnetwork_allow = [\"a.org:0\"]\n".into(),
                Some("agent.network_allow"),
            ),
            (
                "[agent]\nnetwork_allow = [\"*.crates.io\", \"pypi.org:443\", \"10.0.0.1\"]\n"
                    .into(),
                None,
            ),
            ("[agent]\nrun_as = \" \"\n".into(), Some("agent.run_as")),
            ("[agent]\nenv = { GOOD = \"1\" }\n".into(), None),
            (
                "[agent]\nenv = { TELEVIBE_X = \"1\" }\n".into(),
                Some("agent.env"),
            ),
            (
                "[agent]\nenv = { \"A=B\" = \"1\" }\n".into(),
                Some("agent.env"),
            ),
            (
                "[agent]\nenv = { \"\" = \"1\" }\n".into(),
                Some("agent.env"),
            ),
            (
                "[sessions]\nmax_per_project = 0\n".into(),
                Some("sessions.max_per_project"),
            ),
            (
                "[sessions]\nmax_total = 0\n".into(),
                Some("sessions.max_per_project"),
            ),
            (
                "[supervision]\nbackoff_initial_ms = 0\n".into(),
                Some("supervision.backoff_max_ms"),
            ),
            (
                "[supervision]\nbackoff_initial_ms = 500\nbackoff_max_ms = 499\n".into(),
                Some("supervision.backoff_max_ms"),
            ),
            (
                "[supervision]\nbackoff_initial_ms = 500\nbackoff_max_ms = 500\n".into(),
                None,
            ),
            (
                "[store]\nintegrity_check_interval_secs = 0\n".into(),
                Some("store.integrity_check_interval_secs"),
            ),
            (
                "[store]\nread_only_probe_secs = 0\n".into(),
                Some("store.integrity_check_interval_secs"),
            ),
            (
                "[store]\nevents_retention_days = 0\n".into(),
                Some("store.jobs_retention_days"),
            ),
            (
                "[store]\njobs_retention_days = 0\n".into(),
                Some("store.jobs_retention_days"),
            ),
            (
                "[store]\nevents_retention_days = 1\njobs_retention_days = 1\n".into(),
                None,
            ),
            (
                "[breakers.claude_code]\nfailure_threshold = 0\n".into(),
                Some("breakers.claude_code"),
            ),
            (
                "[breakers.telegram_api]\nsuccess_threshold = 0\n".into(),
                Some("breakers.telegram_api"),
            ),
            (
                "[breakers.backup_remote]\nhalf_open_requests = 0\n".into(),
                Some("breakers.backup_remote"),
            ),
        ];
        for (toml, refused) in cases {
            match (from_toml(&toml), refused) {
                (Ok(_), None) => {}
                (Err(e), Some(key)) => assert!(
                    matches!(&e, ConfigError::Invalid { key: k, .. } if *k == key),
                    "{toml}: wrong key in {e}"
                ),
                (Ok(_), Some(key)) => panic!("{toml}: accepted, expected a refusal of {key}"),
                (Err(e), None) => panic!("{toml}: refused: {e}"),
            }
        }
    }

    #[test]
    fn the_token_comes_from_the_setting_or_its_file_trimmed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "  123:file \n").unwrap();
        let with_file = format!("[telegram]\ntoken_file = \"{}\"\n", file.display());
        assert_eq!(
            from_toml(&with_file).unwrap().telegram_token.as_deref(),
            Some("123:file")
        );
        assert_eq!(
            from_toml("[telegram]\ntoken = \" 123:inline \"\n")
                .unwrap()
                .telegram_token
                .as_deref(),
            Some("123:inline")
        );
        std::fs::write(&file, " \n").unwrap();
        assert_eq!(from_toml(&with_file).unwrap().telegram_token, None);
        let gone = format!(
            "[telegram]\ntoken_file = \"{}\"\n",
            dir.path().join("absent").display()
        );
        assert!(matches!(
            from_toml(&gone),
            Err(ConfigError::Invalid {
                key: "telegram.token_file",
                ..
            })
        ));
    }

    #[test]
    fn url_credentials_inside_lists_are_masked() {
        let c = from_toml(
            "[agent]\nextra_args = [\"--proxy\", \"https://alice:hunter2@proxy.example:3128\"]\n",
        )
        .unwrap();
        let out = c.to_masked_toml();
        assert!(!out.contains("hunter2") && !out.contains("alice"), "{out}");
        assert!(out.contains("proxy.example:3128"), "{out}");
    }

    #[test]
    fn a_named_file_must_exist_and_is_read_with_the_environment_over_it() {
        let dir = tempfile::tempdir().unwrap();
        let missing = ConfigSource {
            explicit: Some(dir.path().join("absent.toml")),
        };
        assert!(matches!(
            missing.load_raw(),
            Err(ConfigError::MissingFile { .. })
        ));
        let not_a_file = ConfigSource {
            explicit: Some(dir.path().to_path_buf()),
        };
        assert!(matches!(
            not_a_file.load_raw(),
            Err(ConfigError::MissingFile { .. })
        ));
        let file = dir.path().join("config.toml");
        std::fs::write(
            &file,
            "[jobs]\nmax_concurrent = 7\nmax_queued_per_session = 9\n",
        )
        .unwrap();
        // SAFETY: no other unit test reads or writes these variables (only `load_raw` reads TELEVIBE_*,
        // and this is the only unit test that calls it).
        unsafe {
            std::env::set_var("TELEVIBE_JOBS__MAX_QUEUED_PER_SESSION", "11");
            // Set for agents and bridges, never a configuration key: skipped, not refused as unknown.
            std::env::set_var("TELEVIBE_JOB_ID", "not-a-key");
        }
        let loaded = ConfigSource {
            explicit: Some(file.clone()),
        }
        .load_raw();
        unsafe {
            std::env::remove_var("TELEVIBE_JOBS__MAX_QUEUED_PER_SESSION");
            std::env::remove_var("TELEVIBE_JOB_ID");
        }
        let (raw, path) = loaded.unwrap();
        assert_eq!(path, Some(file));
        assert_eq!(raw.jobs.max_concurrent, 7, "from the file");
        assert_eq!(raw.jobs.max_queued_per_session, 11, "the environment wins");
    }

    #[test]
    fn an_approval_reminder_comes_only_before_the_expiry() {
        let d = from_toml("").unwrap();
        assert_eq!(d.approvals.remind_after, Some(Duration::from_secs(600)));
        let at = |remind: u64, timeout: u64| {
            from_toml(&format!(
                "[approvals]\nremind_after_secs = {remind}\ntimeout_secs = {timeout}\n"
            ))
            .unwrap()
            .approvals
            .remind_after
        };
        assert_eq!(at(2, 60), Some(Duration::from_secs(2)));
        assert_eq!(at(0, 60), None, "0: never");
        assert_eq!(at(60, 60), None, "at the expiry: never");
        assert_eq!(at(600, 3), None, "past the expiry: never");
        assert!(from_toml("[approvals]\nremind_after_secs = -1\n").is_err());
    }

    #[test]
    fn typed_sections_carry_the_converted_values() {
        let d = from_toml("").unwrap();
        assert!(d.agent.sandboxed, "bubblewrap by default");
        assert_eq!(d.telegram.token_file, None);
        assert_eq!(
            d.logging.max_size_bytes,
            d.raw.logging.max_size_mb * 1024 * 1024
        );
        let dir = tempfile::tempdir().unwrap();
        let token = dir.path().join("token");
        std::fs::write(&token, "1:t\n").unwrap();
        let c = from_toml(&format!(
            "[agent]\nsandbox = \"none\"\n[logging]\nmax_size_mb = 3\n\
             [jobs]\nhang_timeout_secs = 7\nkill_grace_secs = 9\n[store]\nbusy_timeout_ms = 250\nevents_retention_days = 3\njobs_retention_days = 4\n\
             [telegram]\ntoken_file = \"{}\"\n",
            token.display()
        ))
        .unwrap();
        assert!(!c.agent.sandboxed);
        assert_eq!(c.logging.max_size_bytes, 3 * 1024 * 1024);
        assert_eq!(c.jobs.hang_timeout, Duration::from_secs(7));
        assert_eq!(c.jobs.kill_grace, Duration::from_secs(9));
        assert_eq!(c.store.busy_timeout, Duration::from_millis(250));
        assert_eq!(
            (c.store.events_retention_days, c.store.jobs_retention_days),
            (3, 4)
        );
        assert_eq!(c.telegram.token_file.as_deref(), Some(token.as_path()));
    }
}
