//! Figures, percentiles, and the JSON and markdown the benchmark writes.

use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    /// The figure as read, e.g. `p50 3.1 ms · p99 4.0 ms`.
    pub value: String,
    /// What it compares with, measured in the same run.
    pub reference: String,
    /// The goal, when there is one.
    pub target: String,
    /// Whether the goal was met (None: no goal, or not measured).
    pub met: Option<bool>,
    /// The numbers behind it.
    pub data: Value,
}

impl Figure {
    pub fn new(name: &str, value: String, reference: String) -> Figure {
        Figure {
            name: name.into(),
            value,
            reference,
            target: String::new(),
            met: None,
            data: Value::Null,
        }
    }

    pub fn target(mut self, target: &str, met: bool) -> Figure {
        self.target = target.into();
        self.met = Some(met);
        self
    }

    pub fn data(mut self, data: Value) -> Figure {
        self.data = data;
        self
    }

    /// A figure that could not be measured here, and why.
    pub fn missing(name: &str, why: &str) -> Figure {
        Figure::new(name, format!("not measured: {why}"), "-".into())
    }
}

/// Milliseconds, sorted, with percentiles.
#[derive(Debug, Clone)]
pub struct Samples(Vec<f64>);

impl Samples {
    pub fn of(durations: &[Duration]) -> Samples {
        Samples::ms(durations.iter().map(|d| d.as_secs_f64() * 1000.0).collect())
    }

    pub fn ms(mut v: Vec<f64>) -> Samples {
        v.sort_by(f64::total_cmp);
        Samples(v)
    }

    /// Nearest-rank percentile (`p` in 0..=100).
    pub fn p(&self, p: f64) -> f64 {
        if self.0.is_empty() {
            return f64::NAN;
        }
        let rank = ((p / 100.0) * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn p50(&self) -> f64 {
        self.p(50.0)
    }
    pub fn p99(&self) -> f64 {
        self.p(99.0)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// `p50 3.1 ms · p99 4.0 ms (n=40)`.
    pub fn show(&self) -> String {
        format!(
            "p50 {} · p99 {} (n={})",
            ms(self.p50()),
            ms(self.p99()),
            self.len()
        )
    }

    pub fn json(&self) -> Value {
        json!({"n": self.len(), "p50_ms": self.p50(), "p99_ms": self.p99(),
               "min_ms": self.0.first(), "max_ms": self.0.last()})
    }
}

pub fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else if v < 10.0 {
        format!("{v:.2} ms")
    } else if v < 10_000.0 {
        format!("{v:.0} ms")
    } else {
        format!("{:.1} s", v / 1000.0)
    }
}

pub fn mb(bytes: u64) -> String {
    format!("{:.1} MB", bytes as f64 / 1_000_000.0)
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<u64>().ok())
        })
        .map(|kb| format!("{:.0} GiB", kb as f64 / 1024.0 / 1024.0))
        .unwrap_or_default();
    format!("{cpu}, {cores} cores, {mem}")
}

pub fn markdown(figures: &[Figure]) -> String {
    let mut out = format!(
        "Measured {} on {} (televibe {}).\n\n| figure | televibe | reference (same run) | target | met |\n|---|---|---|---|---|\n",
        chrono::Utc::now().format("%Y-%m-%d"),
        machine(),
        env!("CARGO_PKG_VERSION"),
    );
    for f in figures {
        let met = match f.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            f.name, f.value, f.reference, f.target, met
        ));
    }
    out
}

pub fn write(figures: &[Figure], json_path: &Path, md_path: &Path) {
    let doc = json!({
        "date": chrono::Utc::now().to_rfc3339(),
        "machine": machine(),
        "version": env!("CARGO_PKG_VERSION"),
        "figures": figures,
    });
    std::fs::write(json_path, serde_json::to_string_pretty(&doc).unwrap()).expect("JSON written");
    std::fs::write(md_path, markdown(figures)).expect("markdown written");
}
