//! Structured logs: JSON lines in the spec's format to `orchestrator.log` (daily and size rotation), and to stderr.
//!
//! Each line carries `timestamp` (UTC, milliseconds, `Z`), `level` (`debug`, `info`, `warning`, `error`,
//! `critical`), `logger` (the event target with dots), `message`, `context` (span and event fields),
//! `trace_id` and `span_id`. An event logged with the field `critical = true` at error level is `critical`.
//!
//! A line about a job (a `job_id` field of its own or of a span it is in) carries the job's trace id, the
//! job id's 32 hex digits (`job_trace_id`): whichever actor logs about the job, before or after a restart,
//! its lines share one `trace_id`. `job_span` opens a span of that trace. Other spans inherit their parent's
//! trace id or start a random one. Lines of other crates (targets not under `televibe`) are filtered at
//! `logging.third_party_level` (`daemon_filter`).

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use chrono::{NaiveDate, Utc};
use serde_json::{Map, Value};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, Registry};

/// Keeps the background log writers alive; drop it last.
pub struct LogGuard {
    _guards: Vec<tracing_appender::non_blocking::WorkerGuard>,
}

/// Sets up logging for the daemon: JSON to `<dir>/orchestrator.log`, and stderr per `stderr_mode`.
pub fn init_daemon(
    dir: &Path,
    filter: &str,
    stderr_mode: &str,
    max_size_bytes: u64,
) -> io::Result<LogGuard> {
    let file = RotatingFile::open(dir, "orchestrator.log", max_size_bytes)?;
    let (file_writer, file_guard) = tracing_appender::non_blocking(file);
    let mut guards = vec![file_guard];
    let file_layer = JsonLayer::new(file_writer);
    let human = match stderr_mode {
        "human" => true,
        "auto" => io::stderr().is_terminal(),
        _ => false,
    };
    let stderr_json = match stderr_mode {
        "json" => true,
        "auto" => !io::stderr().is_terminal(),
        _ => false,
    };
    let (err_writer, err_guard) = tracing_appender::non_blocking(io::stderr());
    guards.push(err_guard);
    let human_layer = human.then(|| {
        tracing_subscriber::fmt::layer()
            .with_writer(err_writer.clone())
            .with_target(true)
    });
    let json_err_layer = stderr_json.then(|| JsonLayer::follower(err_writer));
    Registry::default()
        .with(EnvFilter::new(filter))
        .with(file_layer)
        .with(human_layer)
        .with(json_err_layer)
        .try_init()
        .map_err(io::Error::other)?;
    Ok(LogGuard { _guards: guards })
}

/// Sets up logging for short-lived clients (bridge, admin): warnings and errors to stderr only,
/// because stdout belongs to the protocol or the printed result.
pub fn init_client() {
    let _ = Registry::default()
        .with(EnvFilter::new("warn"))
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(io::stderr)
                .with_target(false),
        )
        .try_init();
}

/// Ids kept in a span's extensions.
struct SpanInfo {
    trace_id: String,
    span_id: String,
    fields: Map<String, Value>,
}

/// The spec-format JSON layer.
pub struct JsonLayer<W> {
    make_writer: W,
    /// Only one layer per registry updates span fields, so values are recorded once.
    records_spans: bool,
}

impl<W> JsonLayer<W> {
    pub fn new(make_writer: W) -> Self {
        JsonLayer {
            make_writer,
            records_spans: true,
        }
    }

    /// A second JSON layer on the same registry: it reads span data but leaves recording to the first.
    pub fn follower(make_writer: W) -> Self {
        JsonLayer {
            make_writer,
            records_spans: false,
        }
    }
}

/// The trace id of every line about job `job_id`: its UUID's 32 hex digits (lowercase, no dashes). `None`
/// for anything that is not a job id (a prefix, an empty field).
pub fn job_trace_id(job_id: &str) -> Option<String> {
    uuid::Uuid::parse_str(job_id)
        .ok()
        .map(|u| u.simple().to_string())
}

/// A span of job `job_id`'s trace (its lines get the job's `trace_id`, a span id of their own, and the
/// span's fields in `context`).
pub fn job_span(job_id: &str) -> tracing::Span {
    tracing::info_span!(target: "televibe.jobs", "job", job_id = %job_id)
}

/// The trace id a `job_id` field gives: its job's, when it names one.
fn trace_of(fields: &Map<String, Value>) -> Option<String> {
    fields
        .get("job_id")
        .and_then(Value::as_str)
        .and_then(job_trace_id)
}

/// The levels `logging.level` and `logging.third_party_level` may name, as the filter spells them.
fn level_directive(level: &str) -> Option<&'static str> {
    Some(match level {
        "off" => "off",
        "error" => "error",
        "warning" | "warn" => "warn",
        "info" => "info",
        "debug" => "debug",
        "trace" => "trace",
        _ => return None,
    })
}

/// The daemon's filter: the lines of other crates at `third_party` (a level), the daemon's own at `level`
/// (a level, or a filter such as `info,televibe::store=debug,rmcp=info`: its bare levels apply to the
/// daemon's own lines, its targeted directives as written, so a crate can still be turned up by name).
/// An error names the key at fault (`logging.level` or `logging.third_party_level`) and why.
pub fn daemon_filter(level: &str, third_party: &str) -> Result<String, (&'static str, String)> {
    let third = level_directive(third_party).ok_or_else(|| {
        (
            "logging.third_party_level",
            format!(
                "{third_party:?} is not a level: use off, error, warning, info, debug or trace"
            ),
        )
    })?;
    let mut parts = vec![third.to_string()];
    for part in level.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match level_directive(part) {
            Some(own) => parts.push(format!("televibe={own}")),
            None if part.contains('=') => parts.push(part.to_string()),
            None => {
                return Err((
                    "logging.level",
                    format!(
                        "{part:?} is neither a level (off, error, warning, info, debug, trace) nor a target=level directive"
                    ),
                ));
            }
        }
    }
    let filter = parts.join(",");
    EnvFilter::try_new(&filter).map_err(|e| ("logging.level", e.to_string()))?;
    Ok(filter)
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::fill(&mut buf[..]);
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

struct FieldVisitor<'a> {
    fields: &'a mut Map<String, Value>,
    message: Option<String>,
}

impl Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = Some(text);
        } else {
            self.fields.insert(field.name().into(), Value::String(text));
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.into());
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        // Several JSON layers (file and stderr) share one registry; the first one records the span.
        if span.extensions().get::<SpanInfo>().is_some() {
            return;
        }
        let mut fields = Map::new();
        attrs.record(&mut FieldVisitor {
            fields: &mut fields,
            message: None,
        });
        let trace_id = trace_of(&fields)
            .or_else(|| {
                span.parent()
                    .and_then(|p| p.extensions().get::<SpanInfo>().map(|i| i.trace_id.clone()))
            })
            .unwrap_or_else(|| random_hex(16));
        span.extensions_mut().insert(SpanInfo {
            trace_id,
            span_id: random_hex(8),
            fields,
        });
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if self.records_spans
            && let Some(span) = ctx.span(id)
            && let Some(info) = span.extensions_mut().get_mut::<SpanInfo>()
        {
            values.record(&mut FieldVisitor {
                fields: &mut info.fields,
                message: None,
            });
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut context = Map::new();
        let mut trace_id = None;
        let mut span_id = None;
        if let Some(scope) = ctx.event_scope(event) {
            for span in scope.from_root() {
                if let Some(info) = span.extensions().get::<SpanInfo>() {
                    for (k, v) in &info.fields {
                        context.insert(k.clone(), v.clone());
                    }
                    trace_id = Some(info.trace_id.clone());
                    span_id = Some(info.span_id.clone());
                }
            }
        }
        let mut visitor = FieldVisitor {
            fields: &mut context,
            message: None,
        };
        event.record(&mut visitor);
        let message = visitor.message.take().unwrap_or_default();
        // A line naming a job is in the job's trace, whatever span it was logged in.
        if let Some(job_trace) = trace_of(&context) {
            trace_id = Some(job_trace);
        }
        let critical = context.remove("critical") == Some(Value::Bool(true));
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR if critical => "critical",
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            _ => "debug",
        };
        let line = serde_json::json!({
            "timestamp": Utc::now().format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
            "level": level,
            "logger": meta.target().replace("::", "."),
            "message": message,
            "context": Value::Object(context),
            // An event outside any span is a trace of its own.
            "trace_id": trace_id.unwrap_or_else(|| random_hex(16)),
            "span_id": span_id.unwrap_or_else(|| random_hex(8)),
        });
        let mut text = line.to_string();
        text.push('\n');
        let _ = self.make_writer.make_writer().write_all(text.as_bytes());
    }
}

/// `orchestrator.log` that rotates to `orchestrator.log.<date>` at UTC midnight and past `max_size` bytes.
pub struct RotatingFile {
    dir: PathBuf,
    name: String,
    max_size: u64,
    state: Arc<Mutex<FileState>>,
}

struct FileState {
    file: File,
    date: NaiveDate,
    size: u64,
}

impl RotatingFile {
    pub fn open(dir: &Path, name: &str, max_size: u64) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(name);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let meta = file.metadata()?;
        let date = meta
            .modified()
            .ok()
            .map(|t| chrono::DateTime::<Utc>::from(t).date_naive())
            .unwrap_or_else(|| Utc::now().date_naive());
        Ok(RotatingFile {
            dir: dir.to_path_buf(),
            name: name.to_string(),
            max_size,
            state: Arc::new(Mutex::new(FileState {
                file,
                date,
                size: meta.len(),
            })),
        })
    }

    fn rotate(&self, st: &mut FileState) -> io::Result<()> {
        let current = self.dir.join(&self.name);
        let base = format!("{}.{}", self.name, st.date.format("%Y-%m-%d"));
        let mut target = self.dir.join(&base);
        let mut n = 1;
        while target.exists() {
            target = self.dir.join(format!("{base}.{n}"));
            n += 1;
        }
        std::fs::rename(&current, &target)?;
        st.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&current)?;
        st.size = 0;
        st.date = Utc::now().date_naive();
        Ok(())
    }
}

impl RotatingFile {
    /// Writes `buf` as on the UTC day `today`: the file rotates first if it holds an earlier day's lines or
    /// would pass the size limit.
    fn write_on(&mut self, buf: &[u8], today: NaiveDate) -> io::Result<usize> {
        let state = self.state.clone();
        let mut st = state.lock().unwrap_or_else(|p| p.into_inner());
        if (today != st.date || st.size + buf.len() as u64 > self.max_size) && st.size > 0 {
            self.rotate(&mut st)?;
        }
        st.date = today;
        let n = st.file.write(buf)?;
        st.size += n as u64;
        Ok(n)
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_on(buf, Utc::now().date_naive())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .file
            .flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    #[test]
    fn lines_have_the_spec_shape() {
        let buf = Buf::default();
        let sub = Registry::default().with(JsonLayer::new(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            let span = tracing::info_span!("job", job_id = "550e8400", session_id = "S12");
            let _g = span.enter();
            tracing::info!(target: "televibe::runner", instruction_preview = "implement login", "Job started");
            tracing::warn!("slow");
            tracing::error!(critical = true, "database error");
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        let l = &lines[0];
        assert_eq!(l["level"], "info");
        assert_eq!(l["logger"], "televibe.runner");
        assert_eq!(l["message"], "Job started");
        assert_eq!(l["context"]["job_id"], "550e8400");
        assert_eq!(l["context"]["instruction_preview"], "implement login");
        let ts = l["timestamp"].as_str().unwrap();
        assert!(ts.ends_with('Z') && ts.len() == 24, "{ts}");
        assert_eq!(lines[1]["level"], "warning");
        assert_eq!(lines[2]["level"], "critical");
        assert_eq!(l["trace_id"], lines[1]["trace_id"], "same span, same trace");
        assert_eq!(l["span_id"].as_str().unwrap().len(), 16);
    }

    fn lines_of(buf: &Buf) -> Vec<Value> {
        String::from_utf8(buf.0.lock().unwrap().clone())
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    #[test]
    fn every_line_about_a_job_carries_the_job_trace() {
        let job = "550e8400-e29b-41d4-a716-446655440000";
        let other = "6ba7b810-9dad-41d1-80b4-00c04fd430c8";
        let buf = Buf::default();
        let sub = Registry::default().with(JsonLayer::new(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            // Outside any span, from two "actors", and inside the job's span.
            tracing::info!(target: "televibe.jobs", job_id = %job, "Job queued");
            tracing::info!(target: "televibe.runner", job_id = %job, "Job started");
            {
                let _g = job_span(job).entered();
                tracing::info!(target: "televibe.approvals", "Approval needed");
                // A span inside the job's span keeps its trace.
                let _inner = tracing::info_span!("tool").entered();
                tracing::debug!(target: "televibe.runner", "tool ran");
            }
            // A line naming another job inside an unrelated span is that job's.
            let _g = tracing::info_span!("sweep").entered();
            tracing::info!(target: "televibe.runner", job_id = %other, "Job finished");
            tracing::info!(target: "televibe.runner", "not about a job");
        });
        let lines = lines_of(&buf);
        assert_eq!(lines.len(), 6);
        let trace = "550e8400e29b41d4a716446655440000";
        for l in &lines[..4] {
            assert_eq!(l["trace_id"], trace, "{l}");
        }
        assert_eq!(
            lines[2]["context"]["job_id"], job,
            "the span's field is in context"
        );
        assert_eq!(lines[4]["trace_id"], "6ba7b8109dad41d180b400c04fd430c8");
        assert_ne!(lines[5]["trace_id"], trace);
        // Span ids are per span: the two lines outside any span differ, the span's line has its own.
        assert_ne!(lines[0]["span_id"], lines[1]["span_id"]);
        assert_ne!(lines[2]["span_id"], lines[3]["span_id"]);
        assert_eq!(job_trace_id("550e8400"), None, "a prefix is no job id");
    }

    #[test]
    fn the_daemon_filter_keeps_other_crates_at_their_own_level() {
        assert_eq!(
            daemon_filter("info", "warning").unwrap(),
            "warn,televibe=info"
        );
        assert_eq!(
            daemon_filter("info,televibe::store=debug,rmcp=info", "error").unwrap(),
            "error,televibe=info,televibe::store=debug,rmcp=info"
        );
        assert_eq!(
            daemon_filter("warning", "off").unwrap(),
            "off,televibe=warn"
        );
        assert_eq!(
            daemon_filter("info", "loud").unwrap_err().0,
            "logging.third_party_level"
        );
        assert_eq!(
            daemon_filter("chatty", "warn").unwrap_err().0,
            "logging.level"
        );
        assert_eq!(
            daemon_filter("info,x=nope", "warn").unwrap_err().0,
            "logging.level"
        );
        // What the filter lets through: the daemon's info lines (both target spellings), another
        // crate's warnings, not its info lines.
        let buf = Buf::default();
        let sub = Registry::default()
            .with(EnvFilter::new(daemon_filter("info", "warning").unwrap()))
            .with(JsonLayer::new(buf.clone()));
        tracing::subscriber::with_default(sub, || {
            tracing::info!(target: "televibe.store", "own, dotted");
            tracing::info!(target: "televibe::jobs::api", "own, module path");
            tracing::info!(target: "rmcp::service", "third-party info");
            tracing::warn!(target: "rmcp::service", "third-party warning");
            tracing::debug!(target: "televibe.store", "own debug");
        });
        let messages: Vec<String> = lines_of(&buf)
            .iter()
            .map(|l| {
                format!(
                    "{} {}",
                    l["logger"].as_str().unwrap(),
                    l["message"].as_str().unwrap()
                )
            })
            .collect();
        assert_eq!(
            messages,
            [
                "televibe.store own, dotted",
                "televibe.jobs.api own, module path",
                "rmcp.service third-party warning"
            ]
        );
    }

    /// Every logger the daemon names itself is a dotted module name (`televibe.store`, never
    /// `televibe.store()`).
    #[test]
    fn every_explicit_logger_name_is_dotted() {
        fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
            for e in std::fs::read_dir(dir).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        let mut files = Vec::new();
        walk(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
            &mut files,
        );
        let mut seen = 0;
        let mut bad = Vec::new();
        // This file's own tests spell targets both ways on purpose.
        for f in files.into_iter().filter(|f| !f.ends_with("src/logging.rs")) {
            let text = std::fs::read_to_string(&f).unwrap();
            for (i, _) in text.match_indices("target: \"televibe") {
                let name: String = text[i + 9..].chars().take_while(|c| *c != '"').collect();
                seen += 1;
                let dotted = name.strip_prefix("televibe").is_some_and(|rest| {
                    !rest.is_empty()
                        && rest.split('.').skip(1).all(|p| {
                            !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase() || c == '_')
                        })
                        && rest.starts_with('.')
                });
                if !dotted {
                    bad.push(format!("{}: {name}", f.display()));
                }
            }
        }
        assert!(seen > 50, "found only {seen} logger names");
        assert!(bad.is_empty(), "malformed logger names: {bad:?}");
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn rotates_at_midnight_under_the_day_it_holds() {
        let dir = tempfile::tempdir().unwrap();
        let day = |d: u32| NaiveDate::from_ymd_opt(2026, 3, d).unwrap();
        let mut f = RotatingFile::open(dir.path(), "orchestrator.log", 1 << 20).unwrap();
        f.write_on(b"first day\n", day(1)).unwrap();
        f.write_on(b"still the first\n", day(1)).unwrap();
        assert_eq!(names(dir.path()), ["orchestrator.log"]);
        f.write_on(b"second day\n", day(2)).unwrap();
        assert_eq!(
            names(dir.path()),
            ["orchestrator.log", "orchestrator.log.2026-03-01"]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("orchestrator.log.2026-03-01")).unwrap(),
            "first day\nstill the first\n"
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("orchestrator.log")).unwrap(),
            "second day\n"
        );
        // A day with two rotations (size, then midnight) keeps both files apart.
        let dir = tempfile::tempdir().unwrap();
        let mut small = RotatingFile::open(dir.path(), "orchestrator.log", 12).unwrap();
        small.write_on(b"0123456789", day(2)).unwrap();
        small.write_on(b"abcdef", day(2)).unwrap();
        small.write_on(b"day 3\n", day(3)).unwrap();
        assert_eq!(
            names(dir.path()),
            [
                "orchestrator.log",
                "orchestrator.log.2026-03-02",
                "orchestrator.log.2026-03-02.1"
            ]
        );
        assert_eq!(
            std::fs::read_to_string(dir.path().join("orchestrator.log.2026-03-02.1")).unwrap(),
            "abcdef"
        );
    }

    #[test]
    fn a_file_left_from_an_earlier_day_rotates_at_the_first_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("orchestrator.log");
        std::fs::write(&path, b"from before the restart\n").unwrap();
        let two_days = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 86_400);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(two_days)
            .unwrap();
        let then = chrono::DateTime::<Utc>::from(two_days).date_naive();
        let mut f = RotatingFile::open(dir.path(), "orchestrator.log", 1 << 20).unwrap();
        f.write_all(b"today\n").unwrap();
        let rotated = format!("orchestrator.log.{}", then.format("%Y-%m-%d"));
        assert_eq!(
            std::fs::read_to_string(dir.path().join(&rotated)).unwrap(),
            "from before the restart\n"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "today\n");
    }

    #[test]
    fn rotates_past_the_size_limit() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = RotatingFile::open(dir.path(), "orchestrator.log", 100).unwrap();
        f.write_all(&[b'a'; 80]).unwrap();
        f.write_all(&[b'b'; 80]).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert_eq!(
            std::fs::read(dir.path().join("orchestrator.log")).unwrap(),
            vec![b'b'; 80]
        );
    }
}
