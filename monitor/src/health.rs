//! The daemon's HTTP endpoint (`metrics.listen`): Prometheus metrics at `/metrics`, liveness at
//! `/healthz` (every pipeline stage still running) and readiness at `/readyz` (kernel programs
//! attached and the stages running, not stopping). Both health answers carry a JSON body saying
//! why. ClickHouse being away does not make the daemon unready: the spool absorbs it; the body
//! and the lag metrics show it.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{extract::State, http::StatusCode, response::IntoResponse, routing::get, Json, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::store::shipper::ShipperStatus;

/// A pipeline stage's state, as the health endpoint reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StageState {
    Running,
    Stopped,
    Failed(String),
}

/// What the daemon knows about its own health, shared with the HTTP endpoint.
#[derive(Default)]
pub struct Health {
    ready: AtomicBool,
    stopping: AtomicBool,
    stages: Mutex<BTreeMap<&'static str, StageState>>,
    /// The spool writer's next sequence.
    spool_position: Mutex<Option<Arc<AtomicU64>>>,
    shipper: Mutex<Option<Arc<ShipperStatus>>>,
    /// The response mode and the mechanism in force for each kind of response.
    respond: Mutex<Option<serde_json::Value>>,
}

impl Health {
    pub fn set_ready(&self) {
        self.ready.store(true, Relaxed);
    }

    pub fn set_stopping(&self) {
        self.stopping.store(true, Relaxed);
    }

    pub fn watch_spool(&self, position: Arc<AtomicU64>) {
        if let Ok(mut slot) = self.spool_position.lock() {
            *slot = Some(position);
        }
    }

    pub fn watch_shipper(&self, status: Arc<ShipperStatus>) {
        if let Ok(mut slot) = self.shipper.lock() {
            *slot = Some(status);
        }
    }

    /// Records how responses are enforced here (`/readyz` and `vigil_respond_mechanism`).
    pub fn set_respond(
        &self,
        mode: crate::event::RespondMode,
        mechanisms: &crate::kernel::respond::Mechanisms,
    ) {
        for (action, mechanism) in [
            ("deny_exec", mechanisms.deny_exec),
            ("deny_connect", mechanisms.deny_connect),
            ("session", mechanisms.session),
        ] {
            metrics::gauge!("vigil_respond_mechanism", "action" => action, "mechanism" => mechanism.as_str())
                .set(1.0);
        }
        if let Ok(mut slot) = self.respond.lock() {
            *slot = Some(json!({"mode": mode, "mechanisms": mechanisms}));
        }
    }

    /// Every stage that started is still running (what the systemd watchdog is told).
    pub fn all_running(&self) -> bool {
        self.stages
            .lock()
            .map(|stages| stages.values().all(|s| *s == StageState::Running))
            .unwrap_or(false)
    }

    pub fn set_stage(&self, name: &'static str, state: StageState) {
        if let Ok(mut stages) = self.stages.lock() {
            stages.insert(name, state);
        }
    }

    /// Runs `stage`, recording that it runs and how it ended.
    pub async fn track<T, E: std::fmt::Display>(
        self: Arc<Self>,
        name: &'static str,
        stage: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.set_stage(name, StageState::Running);
        let result = stage.await;
        self.finished(name, &result);
        result
    }

    /// As [`Health::track`], for a stage that runs on a thread of its own.
    pub fn track_blocking<T, E: std::fmt::Display>(
        &self,
        name: &'static str,
        stage: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        self.set_stage(name, StageState::Running);
        let result = stage();
        self.finished(name, &result);
        result
    }

    fn finished<T, E: std::fmt::Display>(&self, name: &'static str, result: &Result<T, E>) {
        self.set_stage(
            name,
            match result {
                Ok(_) => StageState::Stopped,
                // The alternate form: an anyhow error with its causes.
                Err(e) => StageState::Failed(format!("{e:#}")),
            },
        );
    }

    fn stages(&self) -> BTreeMap<&'static str, StageState> {
        self.stages.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Alive: no stage stopped or failed while the daemon is not stopping.
    fn alive(&self) -> bool {
        self.stopping.load(Relaxed) || self.stages().values().all(|s| *s == StageState::Running)
    }

    /// ClickHouse lag: (events written but not shipped, seconds since the last shipped batch
    /// while that is above zero). `None` without ClickHouse.
    fn lag(&self) -> Option<(u64, f64, Option<String>)> {
        let shipper = self.shipper.lock().ok()?.clone()?;
        let written = self
            .spool_position
            .lock()
            .ok()?
            .as_ref()
            .map(|p| p.load(Relaxed))
            .unwrap_or(0);
        let events = written.saturating_sub(shipper.next_seq.load(Relaxed));
        let last_ack = shipper.last_ack_unix_ms.load(Relaxed);
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let seconds = if events == 0 {
            0.0
        } else if last_ack == 0 {
            f64::NAN
        } else {
            now_ms.saturating_sub(last_ack) as f64 / 1000.0
        };
        let error = shipper.last_error.lock().ok().and_then(|e| e.clone());
        Some((events, seconds, error))
    }

    fn report(&self) -> serde_json::Value {
        let stages: BTreeMap<&str, String> = self
            .stages()
            .into_iter()
            .map(|(k, v)| {
                (
                    k,
                    match v {
                        StageState::Running => "running".to_string(),
                        StageState::Stopped => "stopped".to_string(),
                        StageState::Failed(e) => format!("failed: {e}"),
                    },
                )
            })
            .collect();
        let clickhouse = match self.lag() {
            None => json!({"configured": false}),
            Some((events, seconds, error)) => json!({
                "configured": true,
                "lag_events": events,
                "lag_seconds": if seconds.is_finite() { json!(seconds) } else { json!(null) },
                "last_error": error,
            }),
        };
        json!({
            "ready": self.ready.load(Relaxed) && !self.stopping.load(Relaxed),
            "alive": self.alive(),
            "stopping": self.stopping.load(Relaxed),
            "stages": stages,
            "clickhouse": clickhouse,
            "respond": self.respond.lock().ok().and_then(|r| r.clone()),
        })
    }

    /// Publishes the gauges computed from shared state (lag), for each scrape to see fresh.
    fn publish_gauges(&self) {
        if let Some((events, seconds, error)) = self.lag() {
            metrics::gauge!("vigil_clickhouse_lag_events").set(events as f64);
            metrics::gauge!("vigil_clickhouse_lag_seconds").set(if seconds.is_finite() {
                seconds
            } else {
                -1.0
            });
            metrics::gauge!("vigil_clickhouse_up").set(if error.is_none() { 1.0 } else { 0.0 });
        }
        metrics::gauge!("vigil_ready").set(if self.ready.load(Relaxed) { 1.0 } else { 0.0 });
    }
}

#[derive(Clone)]
struct Shared {
    health: Arc<Health>,
    prometheus: PrometheusHandle,
}

async fn metrics_page(State(s): State<Shared>) -> impl IntoResponse {
    s.health.publish_gauges();
    (
        [("content-type", "text/plain; version=0.0.4")],
        s.prometheus.render(),
    )
}

async fn healthz(State(s): State<Shared>) -> impl IntoResponse {
    let status = if s.health.alive() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(s.health.report()))
}

async fn readyz(State(s): State<Shared>) -> impl IntoResponse {
    let h = &s.health;
    let ready = h.ready.load(Relaxed) && !h.stopping.load(Relaxed) && h.alive();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(h.report()))
}

/// HELP texts, and the unlabelled counters at zero so that a scrape (and a dashboard) sees them
/// before the first increment.
fn describe_metrics() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "vigil_kernel_events_total",
        "Kernel events by kind and outcome (emitted, filtered, lost, truncated); filtered counts events of processes the policy leaves out, except syscalls of processes outside every session, which the kernel drops before counting."
    );
    describe_counter!(
        "vigil_events_written_total",
        "Events written to the spool and outputs, by type."
    );
    describe_counter!(
        "vigil_decode_errors_total",
        "Kernel records that could not be decoded (each is also a loss event)."
    );
    describe_counter!(
        "vigil_spool_dropped_total",
        "Events the full spool could not keep (written down as loss events)."
    );
    describe_gauge!("vigil_spool_bytes", "Bytes in the spool.");
    describe_gauge!(
        "vigil_spool_age_seconds",
        "Age of the oldest data the spool holds."
    );
    describe_gauge!(
        "vigil_clickhouse_lag_events",
        "Events spooled but not yet in ClickHouse."
    );
    describe_gauge!(
        "vigil_clickhouse_lag_seconds",
        "Seconds since the last batch reached ClickHouse while events wait (-1: none ever did)."
    );
    describe_gauge!(
        "vigil_clickhouse_up",
        "1 when the last ClickHouse call succeeded."
    );
    describe_counter!(
        "vigil_clickhouse_errors_total",
        "Failed ClickHouse calls (retried; the spool keeps the events)."
    );
    describe_counter!(
        "vigil_clickhouse_batches_total",
        "Batches inserted into ClickHouse."
    );
    describe_counter!("vigil_alerts_total", "Alerts raised, by rule and severity.");
    describe_histogram!(
        "vigil_rule_eval_seconds",
        "Time to evaluate the detection rules on one event (one event in 16 is timed)."
    );
    describe_counter!(
        "vigil_webhook_alerts_total",
        "Webhook deliveries by webhook and outcome."
    );
    describe_counter!(
        "vigil_webhook_dropped_total",
        "Alerts a webhook could not take (queue full, rate limit)."
    );
    describe_counter!(
        "vigil_responses_total",
        "Responses asked for, by action and outcome (done, dry_run, protected, rate_limited, dropped, not_found, unsupported, failed)."
    );
    describe_gauge!(
        "vigil_respond_mechanism",
        "1 for the mechanism in force for each kind of response on this kernel."
    );
    describe_gauge!(
        "vigil_ready",
        "1 when the kernel programs are attached and the stages run."
    );
    for name in [
        "vigil_decode_errors_total",
        "vigil_spool_dropped_total",
        "vigil_clickhouse_errors_total",
        "vigil_clickhouse_batches_total",
        "vigil_rules_reload_errors_total",
    ] {
        metrics::counter!(name).increment(0);
    }
}

/// Installs the Prometheus recorder and serves the endpoint on `addr` until the runtime ends.
pub async fn serve(addr: SocketAddr, health: Arc<Health>) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .context("cannot install the metrics recorder")?;
    describe_metrics();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot serve metrics on {addr} (metrics.listen)"))?;
    // Histograms and summaries need periodic upkeep when the exporter does not run its own
    // listener.
    let upkeep = prometheus.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            upkeep.run_upkeep();
        }
    });
    let app = Router::new()
        .route("/metrics", get(metrics_page))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Shared { health, prometheus });
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(())
}

/// systemd's service notifications (sd_notify(3)), when the daemon runs under it with
/// `Type=notify` (nothing happens otherwise): READY=1 once capturing, STOPPING=1 when it
/// drains, and — with `WatchdogSec=` — WATCHDOG=1 at half the watchdog's period while every
/// stage runs, so that a daemon frozen or wedged is killed and restarted by systemd (and the
/// gap shows in its heartbeats).
pub mod systemd {
    use std::time::Duration;

    use sd_notify::NotifyState;

    pub fn ready() {
        let _ = sd_notify::notify(false, &[NotifyState::Ready]);
    }

    pub fn stopping() {
        let _ = sd_notify::notify(false, &[NotifyState::Stopping]);
    }

    pub fn watchdog_ping() {
        let _ = sd_notify::notify(false, &[NotifyState::Watchdog]);
    }

    /// How often to ping, when systemd's watchdog is on.
    pub fn watchdog_every() -> Option<Duration> {
        let mut usec = 0u64;
        sd_notify::watchdog_enabled(false, &mut usec)
            .then(|| Duration::from_micros(usec / 2).max(Duration::from_millis(100)))
    }
}
