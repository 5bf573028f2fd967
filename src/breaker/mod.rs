//! Circuit breakers: closed → open → half-open → closed, with the spec's thresholds and the state gauge.
//!
//! A breaker is a small synchronous state machine behind a mutex; callers ask for a permit before the guarded
//! operation and report its outcome. Time-driven transitions (open → half-open) are computed from tokio's clock,
//! so tests drive them with paused time.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tokio::time::Instant;

use crate::telemetry::Metrics;

pub use crate::domain::breaker::{BreakerName, BreakerSettings, BreakerState};

#[derive(Debug)]
enum Inner {
    Closed {
        consecutive_failures: u32,
    },
    Open {
        until: Instant,
    },
    HalfOpen {
        probes_in_flight: u32,
        successes: u32,
    },
}

/// Refusal while the breaker is open (or its half-open probes are all taken).
#[derive(Debug, Clone, thiserror::Error)]
#[error("circuit breaker {name} is open; retry in {retry_in_secs} s")]
pub struct BreakerOpen {
    pub name: BreakerName,
    pub retry_in_secs: u64,
}

/// A snapshot for `get_breakers` and `televibe admin breakers`.
#[derive(Debug, Clone, Serialize)]
pub struct BreakerStatus {
    pub name: BreakerName,
    pub state: BreakerState,
    pub consecutive_failures: u32,
    pub failure_threshold: u32,
    pub success_threshold: u32,
    pub timeout_seconds: u64,
    pub half_open_requests: u32,
    /// Seconds until an open breaker lets a probe through.
    pub retry_in_secs: Option<u64>,
    /// Outages so far: openings from closed (a failed half-open probe continues the outage).
    #[serde(skip)]
    pub outages: u64,
}

/// One circuit breaker.
pub struct CircuitBreaker {
    name: BreakerName,
    settings: BreakerSettings,
    inner: Mutex<Inner>,
    metrics: Arc<Metrics>,
    /// Openings from closed, counted when they happen: an outage shorter than any observer's poll is
    /// still seen.
    outages: std::sync::atomic::AtomicU64,
}

impl CircuitBreaker {
    pub fn new(name: BreakerName, settings: BreakerSettings, metrics: Arc<Metrics>) -> Self {
        metrics.set_breaker_state(name, BreakerState::Closed);
        CircuitBreaker {
            name,
            settings,
            inner: Mutex::new(Inner::Closed {
                consecutive_failures: 0,
            }),
            metrics,
            outages: std::sync::atomic::AtomicU64::new(0),
        }
    }

    pub fn name(&self) -> BreakerName {
        self.name
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A poisoned lock only means a panic elsewhere while holding it; the state itself is always whole.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies the time-driven transition open → half-open, and returns the current state.
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        self.tick(&mut inner);
        public_state(&inner)
    }

    fn tick(&self, inner: &mut Inner) {
        if let Inner::Open { until } = *inner
            && Instant::now() >= until
        {
            *inner = Inner::HalfOpen {
                probes_in_flight: 0,
                successes: 0,
            };
            tracing::warn!(target: "televibe.breaker", breaker = self.name.as_str(), "Circuit breaker HALF-OPEN for {}", self.name.title());
            self.metrics
                .set_breaker_state(self.name, BreakerState::HalfOpen);
        }
    }

    /// Asks to run one guarded operation. Closed: always. Half-open: at most `half_open_requests` at a time.
    /// Answers whether the operation is a half-open probe.
    pub fn try_acquire(&self) -> Result<bool, BreakerOpen> {
        let mut inner = self.lock();
        self.tick(&mut inner);
        match &mut *inner {
            Inner::Closed { .. } => Ok(false),
            Inner::Open { until } => Err(BreakerOpen {
                name: self.name,
                retry_in_secs: until.saturating_duration_since(Instant::now()).as_secs() + 1,
            }),
            Inner::HalfOpen {
                probes_in_flight, ..
            } => {
                if *probes_in_flight < self.settings.half_open_requests {
                    *probes_in_flight += 1;
                    Ok(true)
                } else {
                    Err(BreakerOpen {
                        name: self.name,
                        retry_in_secs: 1,
                    })
                }
            }
        }
    }

    /// Reports a guarded operation that succeeded. Only probes move a half-open breaker.
    pub fn record_success(&self, probe: bool) {
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed {
                consecutive_failures,
            } => *consecutive_failures = 0,
            Inner::Open { .. } => {}
            Inner::HalfOpen { .. } if !probe => {}
            Inner::HalfOpen {
                probes_in_flight,
                successes,
            } => {
                *probes_in_flight = probes_in_flight.saturating_sub(1);
                *successes += 1;
                if *successes >= self.settings.success_threshold {
                    *inner = Inner::Closed {
                        consecutive_failures: 0,
                    };
                    self.on_close();
                }
            }
        }
    }

    /// Reports a guarded operation that failed in a way the breaker counts.
    pub fn record_failure(&self) {
        self.metrics.breaker_failure(self.name);
        let mut inner = self.lock();
        match &mut *inner {
            Inner::Closed {
                consecutive_failures,
            } => {
                *consecutive_failures += 1;
                if *consecutive_failures >= self.settings.failure_threshold {
                    self.open(&mut inner);
                }
            }
            Inner::Open { .. } => {}
            Inner::HalfOpen { .. } => self.open(&mut inner),
        }
    }

    /// Gives a half-open probe permit back without an outcome (the operation never ran or said nothing).
    pub fn release(&self, probe: bool) {
        if !probe {
            return;
        }
        if let Inner::HalfOpen {
            probes_in_flight, ..
        } = &mut *self.lock()
        {
            *probes_in_flight = probes_in_flight.saturating_sub(1);
        }
    }

    /// Lets an open breaker probe at once: something outside the guarded calls (a successful unguarded
    /// reachability check) showed the service is back, so waiting out the rest of the timeout only delays
    /// recovery. The next guarded call is the half-open probe and decides, as after a timeout.
    pub fn probe_now(&self) {
        let mut inner = self.lock();
        if let Inner::Open { until } = &mut *inner {
            *until = Instant::now();
            self.tick(&mut inner);
        }
    }

    /// Closes the breaker by hand (admin reset).
    pub fn reset(&self) {
        let mut inner = self.lock();
        let was_closed = matches!(*inner, Inner::Closed { .. });
        *inner = Inner::Closed {
            consecutive_failures: 0,
        };
        if !was_closed {
            self.on_close();
        }
    }

    fn open(&self, inner: &mut Inner) {
        if matches!(*inner, Inner::Closed { .. }) {
            self.outages
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        *inner = Inner::Open {
            until: Instant::now() + self.settings.timeout,
        };
        tracing::warn!(target: "televibe.breaker", breaker = self.name.as_str(), notify_admin = true, "Circuit breaker OPEN for {}", self.name.title());
        self.metrics
            .set_breaker_state(self.name, BreakerState::Open);
    }

    fn on_close(&self) {
        tracing::info!(target: "televibe.breaker", breaker = self.name.as_str(), "Circuit breaker CLOSED for {}", self.name.title());
        self.metrics
            .set_breaker_state(self.name, BreakerState::Closed);
    }

    pub fn status(&self) -> BreakerStatus {
        let mut inner = self.lock();
        self.tick(&mut inner);
        let (consecutive_failures, retry_in_secs) = match &*inner {
            Inner::Closed {
                consecutive_failures,
            } => (*consecutive_failures, None),
            Inner::Open { until } => (
                self.settings.failure_threshold,
                Some(until.saturating_duration_since(Instant::now()).as_secs()),
            ),
            Inner::HalfOpen { .. } => (self.settings.failure_threshold, None),
        };
        BreakerStatus {
            name: self.name,
            state: public_state(&inner),
            consecutive_failures,
            failure_threshold: self.settings.failure_threshold,
            success_threshold: self.settings.success_threshold,
            timeout_seconds: self.settings.timeout.as_secs(),
            half_open_requests: self.settings.half_open_requests,
            retry_in_secs,
            outages: self.outages.load(std::sync::atomic::Ordering::SeqCst),
        }
    }
}

fn public_state(inner: &Inner) -> BreakerState {
    match inner {
        Inner::Closed { .. } => BreakerState::Closed,
        Inner::Open { .. } => BreakerState::Open,
        Inner::HalfOpen { .. } => BreakerState::HalfOpen,
    }
}

/// The daemon's breakers.
pub struct Breakers {
    all: Vec<CircuitBreaker>,
}

impl Breakers {
    pub fn new(settings: &[(BreakerName, BreakerSettings)], metrics: Arc<Metrics>) -> Self {
        Breakers {
            all: settings
                .iter()
                .map(|(n, s)| CircuitBreaker::new(*n, *s, metrics.clone()))
                .collect(),
        }
    }

    pub fn get(&self, name: BreakerName) -> &CircuitBreaker {
        self.all
            .iter()
            .find(|b| b.name == name)
            .expect("every named breaker exists")
    }

    /// A permit for one guarded operation; it gives itself back when dropped without an outcome.
    pub fn acquire(self: &Arc<Self>, name: BreakerName) -> Result<BreakerPermit, BreakerOpen> {
        let probe = self.get(name).try_acquire()?;
        Ok(BreakerPermit {
            breakers: self.clone(),
            name,
            probe,
            done: false,
        })
    }

    /// Applies due time-driven transitions so the gauge is current.
    pub fn refresh(&self) {
        for b in &self.all {
            b.state();
        }
    }

    pub fn statuses(&self) -> Vec<BreakerStatus> {
        self.all.iter().map(CircuitBreaker::status).collect()
    }
}

/// Permission for one guarded operation. Report its outcome with `success` or `failure`; dropping it
/// without one (crash, cancel) returns a half-open probe slot, so probes never leak.
pub struct BreakerPermit {
    breakers: Arc<Breakers>,
    name: BreakerName,
    probe: bool,
    done: bool,
}

impl BreakerPermit {
    /// The breaker it was taken from.
    pub fn name(&self) -> BreakerName {
        self.name
    }

    pub fn is_probe(&self) -> bool {
        self.probe
    }

    pub fn success(mut self) {
        self.done = true;
        self.breakers.get(self.name).record_success(self.probe);
    }

    pub fn failure(mut self) {
        self.done = true;
        self.breakers.get(self.name).record_failure();
    }
}

impl Drop for BreakerPermit {
    fn drop(&mut self) {
        if !self.done {
            self.breakers.get(self.name).release(self.probe);
        }
    }
}

impl std::fmt::Debug for BreakerPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BreakerPermit({}, probe: {})", self.name, self.probe)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn breaker(f: u32, s: u32, secs: u64) -> (CircuitBreaker, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let b = CircuitBreaker::new(
            BreakerName::GitOperations,
            BreakerSettings {
                failure_threshold: f,
                success_threshold: s,
                timeout: Duration::from_secs(secs),
                half_open_requests: 1,
            },
            metrics.clone(),
        );
        (b, metrics)
    }

    #[tokio::test(start_paused = true)]
    async fn opens_after_threshold_and_probes_after_timeout() {
        let (b, m) = breaker(3, 1, 30);
        assert_eq!(m.breaker_gauge(BreakerName::GitOperations), 1.0);
        for _ in 0..3 {
            assert!(!b.try_acquire().unwrap());
            b.record_failure();
        }
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(m.breaker_gauge(BreakerName::GitOperations), 0.0);
        assert!(b.try_acquire().is_err());
        tokio::time::advance(Duration::from_secs(30)).await;
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(m.breaker_gauge(BreakerName::GitOperations), 0.5);
        assert!(b.try_acquire().unwrap(), "a probe");
        assert!(b.try_acquire().is_err(), "exactly one probe in half-open");
        b.record_success(false);
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "a non-probe success proves nothing"
        );
        b.record_success(true);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(m.breaker_gauge(BreakerName::GitOperations), 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_probe_reopens_and_success_resets_the_count() {
        let (b, _) = breaker(2, 2, 10);
        b.record_failure();
        b.record_success(false);
        b.record_failure();
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "failures must be consecutive"
        );
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_acquire().unwrap());
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_acquire().unwrap());
        b.release(true);
        assert!(
            b.try_acquire().unwrap(),
            "a released probe slot is free again"
        );
        b.record_success(true);
        assert_eq!(b.state(), BreakerState::HalfOpen, "needs two successes");
        assert!(b.try_acquire().unwrap());
        b.record_success(true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    fn breakers(f: u32, s: u32, secs: u64, probes: u32) -> (Arc<Breakers>, Arc<Metrics>) {
        let metrics = Arc::new(Metrics::new());
        let settings = BreakerSettings {
            failure_threshold: f,
            success_threshold: s,
            timeout: Duration::from_secs(secs),
            half_open_requests: probes,
        };
        let all = BreakerName::ALL.map(|n| (n, settings));
        (Arc::new(Breakers::new(&all, metrics.clone())), metrics)
    }

    #[test]
    fn names_are_the_spec_labels_and_titles() {
        let expected = [
            (BreakerName::ClaudeCode, "claude_code", "Claude Code"),
            (BreakerName::Codex, "codex", "Codex"),
            (BreakerName::TelegramApi, "telegram_api", "Telegram API"),
            (
                BreakerName::GitOperations,
                "git_operations",
                "Git Operations",
            ),
            (BreakerName::BackupRemote, "backup_remote", "Backup Remote"),
        ];
        for (name, label, title) in expected {
            assert_eq!((name.as_str(), name.title()), (label, title));
            assert_eq!(name.to_string(), label);
            assert_eq!(BreakerName::parse(label), Some(name));
        }
        assert_eq!(BreakerName::parse("Claude Code"), None);
        assert_eq!(BreakerName::parse(""), None);
    }

    #[tokio::test(start_paused = true)]
    async fn an_open_breaker_says_when_to_retry_and_never_says_zero() {
        let (b, _) = breaker(1, 1, 30);
        b.record_failure();
        let e = b.try_acquire().unwrap_err();
        assert_eq!(
            e.to_string(),
            "circuit breaker git_operations is open; retry in 31 s"
        );
        assert_eq!(b.status().retry_in_secs, Some(30));
        tokio::time::advance(Duration::from_millis(29_500)).await;
        assert_eq!(b.try_acquire().unwrap_err().retry_in_secs, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn status_reports_state_counts_and_settings() {
        let (b, _) = breaker(3, 2, 30);
        b.record_failure();
        b.record_failure();
        let s = b.status();
        assert_eq!(
            (s.name, s.state, s.consecutive_failures, s.retry_in_secs),
            (BreakerName::GitOperations, BreakerState::Closed, 2, None)
        );
        assert_eq!(
            (
                s.failure_threshold,
                s.success_threshold,
                s.timeout_seconds,
                s.half_open_requests
            ),
            (3, 2, 30, 1)
        );
        b.record_failure();
        let s = b.status();
        assert_eq!((s.state, s.consecutive_failures), (BreakerState::Open, 3));
        tokio::time::advance(Duration::from_secs(30)).await;
        let s = b.status();
        assert_eq!(
            (s.state, s.consecutive_failures, s.retry_in_secs),
            (BreakerState::HalfOpen, 3, None)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn reset_closes_by_hand() {
        let (b, m) = breaker(2, 1, 300);
        b.record_failure();
        b.record_failure();
        assert_eq!(b.state(), BreakerState::Open);
        b.reset();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(m.breaker_gauge(BreakerName::GitOperations), 1.0);
        assert!(!b.try_acquire().unwrap());
        b.record_failure();
        b.reset();
        b.record_failure();
        assert_eq!(
            b.state(),
            BreakerState::Closed,
            "a reset also forgets the failures counted so far"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_the_configured_number_of_probes() {
        let (bs, _) = breakers(1, 2, 10, 2);
        let b = bs.get(BreakerName::ClaudeCode);
        b.record_failure();
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(b.try_acquire().unwrap());
        assert!(b.try_acquire().unwrap());
        assert!(b.try_acquire().is_err(), "two probes at most");
        b.record_success(true);
        assert!(b.try_acquire().unwrap(), "a finished probe frees its slot");
        b.record_success(true);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[tokio::test(start_paused = true)]
    async fn permits_report_outcomes_and_give_back_unused_probes() {
        let (bs, m) = breakers(1, 1, 10, 1);
        let name = BreakerName::TelegramApi;
        let p = bs.acquire(name).unwrap();
        assert!(!p.is_probe());
        p.failure();
        assert_eq!(bs.get(name).state(), BreakerState::Open);
        assert_eq!(
            bs.get(BreakerName::ClaudeCode).state(),
            BreakerState::Closed,
            "breakers are independent"
        );
        assert!(bs.acquire(name).is_err());
        tokio::time::advance(Duration::from_secs(10)).await;
        bs.refresh();
        assert_eq!(m.breaker_gauge(name), 0.5, "refresh updates the gauge");
        let p = bs.acquire(name).unwrap();
        assert!(p.is_probe());
        assert!(bs.acquire(name).is_err(), "one probe at a time");
        drop(p);
        let p = bs
            .acquire(name)
            .expect("a permit dropped without an outcome gives its probe back");
        p.success();
        assert_eq!(bs.get(name).state(), BreakerState::Closed);
        let names: Vec<BreakerName> = bs.statuses().iter().map(|s| s.name).collect();
        assert_eq!(names, BreakerName::ALL);
    }
}
