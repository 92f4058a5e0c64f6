//! Alert delivery to webhooks: JSON POSTs signed with HMAC-SHA256, retried with backoff,
//! de-duplicated (the same rule in the same session once per window) and rate limited. Each
//! webhook has its own thread and bounded queues; the detect stage only ever `try_send`s, so a
//! slow or dead receiver costs alerts on that webhook (counted), never capture.
//!
//! Critical alerts have a queue of their own, delivered first, and the rate limit never applies
//! to them: a burst of lesser alerts cannot crowd out the one that matters. The signature covers
//! `X-Vigil-Timestamp`, `X-Vigil-Delivery` and the body (`HMAC-SHA256(secret, "<timestamp>.
//! <delivery>.<body>")`), so a receiver can refuse a replayed delivery ([`verify`]).

use std::{
    collections::HashMap,
    path::PathBuf,
    sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError},
    time::{Duration, Instant},
};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;

use super::rules::Severity;
use crate::event::{Event, EventBody};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    pub url: String,
    /// The signing secret, from a file or an environment variable (never in the config).
    #[serde(default)]
    pub secret_file: Option<PathBuf>,
    #[serde(default)]
    pub secret_env: Option<String>,
    #[serde(default = "default_min_severity")]
    pub min_severity: Severity,
    #[serde(default = "default_per_minute")]
    pub max_per_minute: u32,
    #[serde(default = "default_dedup")]
    pub dedup_seconds: u64,
    #[serde(default = "default_retries")]
    pub retries: u32,
    #[serde(default = "default_timeout")]
    pub timeout_ms: u64,
    /// Also post the trail's signed checkpoints here (a copy of them off the host, whatever
    /// happens to the spool or ClickHouse).
    #[serde(default)]
    pub checkpoints: bool,
}

fn default_min_severity() -> Severity {
    Severity::Medium
}
fn default_per_minute() -> u32 {
    60
}
fn default_dedup() -> u64 {
    600
}
fn default_retries() -> u32 {
    5
}
fn default_timeout() -> u64 {
    5000
}

/// What is wrong with a webhook's settings.
#[derive(Debug, thiserror::Error)]
pub enum WebhookConfigError {
    #[error("url `{0}` is not http:// or https://")]
    Scheme(String),
    #[error("no secret (secret_file or secret_env): a receiver could not tell Vigil's alerts from anyone's")]
    NoSecret,
    #[error("set secret_file or secret_env, not both")]
    TwoSecrets,
    #[error("max_per_minute must be at least 1")]
    NoRate,
    #[error("cannot read secret_file {path}: {source}")]
    SecretFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("secret_env: ${0} is not set")]
    SecretEnv(String),
    #[error("the secret is empty: anyone could sign alerts with it")]
    EmptySecret,
    #[error("cannot start the webhook thread: {0}")]
    Thread(#[source] std::io::Error),
}

/// A webhook that cannot start: which one, and why.
#[derive(Debug, thiserror::Error)]
#[error("alerts.webhooks[{index}]: {source}")]
pub struct WebhookStartError {
    pub index: usize,
    #[source]
    pub source: WebhookConfigError,
}

impl WebhookConfig {
    /// Problems with this webhook's settings (checked with the configuration), its secret
    /// included.
    pub fn check(&self) -> Result<(), WebhookConfigError> {
        self.check_settings()?;
        self.secret().map(|_| ())
    }

    /// Problems with the settings other than the secret.
    fn check_settings(&self) -> Result<(), WebhookConfigError> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(WebhookConfigError::Scheme(self.url.clone()));
        }
        if self.secret_file.is_none() && self.secret_env.is_none() {
            return Err(WebhookConfigError::NoSecret);
        }
        if self.secret_file.is_some() && self.secret_env.is_some() {
            return Err(WebhookConfigError::TwoSecrets);
        }
        if self.max_per_minute == 0 {
            return Err(WebhookConfigError::NoRate);
        }
        Ok(())
    }

    fn secret(&self) -> Result<Vec<u8>, WebhookConfigError> {
        let secret = if let Some(path) = &self.secret_file {
            std::fs::read(path)
                .map(|s| s.trim_ascii_end().to_vec())
                .map_err(|source| WebhookConfigError::SecretFile {
                    path: path.clone(),
                    source,
                })?
        } else if let Some(var) = &self.secret_env {
            std::env::var(var)
                .map(|s| s.into_bytes())
                .map_err(|_| WebhookConfigError::SecretEnv(var.clone()))?
        } else {
            return Err(WebhookConfigError::NoSecret);
        };
        if secret.is_empty() {
            return Err(WebhookConfigError::EmptySecret);
        }
        Ok(secret)
    }
}

/// `sha256=<hex>` of `<timestamp>.<delivery>.<body>` under the secret, as sent in
/// `X-Vigil-Signature`.
pub fn signature(secret: &[u8], timestamp: u64, delivery: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(format!("{timestamp}.{delivery}.").as_bytes());
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// What a receiver checks: the signature, and that the delivery is recent (`tolerance_s`) —
/// with the delivery ids it has seen, that it is not a replay.
pub fn verify(
    secret: &[u8],
    timestamp: u64,
    delivery: &str,
    body: &[u8],
    signature_header: &str,
    now: u64,
    tolerance_s: u64,
) -> bool {
    use subtle::ConstantTimeEq as _;
    let expected = signature(secret, timestamp, delivery, body);
    now.abs_diff(timestamp) <= tolerance_s
        && bool::from(expected.as_bytes().ct_eq(signature_header.as_bytes()))
}

/// One webhook's queues: critical alerts (and checkpoints), and the rest.
#[derive(Clone)]
struct Queues {
    critical: SyncSender<Event>,
    other: SyncSender<Event>,
    min: Severity,
    label: String,
    checkpoints: bool,
}

/// The senders of every configured webhook.
#[derive(Clone)]
pub struct Webhooks {
    queues: Vec<Queues>,
}

const QUEUE: usize = 1024;

impl Webhooks {
    pub fn start(configs: &[WebhookConfig]) -> Result<Webhooks, WebhookStartError> {
        let mut queues = Vec::new();
        for (i, cfg) in configs.iter().enumerate() {
            let secret = cfg
                .check_settings()
                .and_then(|()| cfg.secret())
                .map_err(|source| WebhookStartError { index: i, source })?;
            if cfg.url.starts_with("http://") {
                tracing::warn!(
                    webhook = i,
                    url = %cfg.url,
                    "alerts go to this webhook unencrypted (http://): anyone on the path reads them"
                );
            }
            let (critical, critical_rx) = sync_channel(QUEUE);
            let (other, other_rx) = sync_channel(QUEUE);
            let c = cfg.clone();
            let label = format!("webhook-{i}");
            std::thread::Builder::new()
                .name(format!("vigil-{label}"))
                .spawn({
                    let label = label.clone();
                    move || deliver(critical_rx, other_rx, c, secret, label)
                })
                .map_err(|e| WebhookStartError {
                    index: i,
                    source: WebhookConfigError::Thread(e),
                })?;
            queues.push(Queues {
                critical,
                other,
                min: cfg.min_severity,
                label,
                checkpoints: cfg.checkpoints,
            });
        }
        Ok(Webhooks { queues })
    }

    /// Hands a signed checkpoint to every webhook that takes them; never waits.
    pub fn offer_checkpoint(&self, checkpoint: &Event) {
        for q in self.queues.iter().filter(|q| q.checkpoints) {
            if q.critical.try_send(checkpoint.clone()).is_err() {
                metrics::counter!("vigil_webhook_dropped_total", "webhook" => q.label.clone(), "reason" => "queue_full").increment(1);
                tracing::warn!(webhook = %q.label, "webhook queue full: checkpoint not sent there");
            }
        }
    }

    /// Hands a response to every webhook (on the critical queue: an action taken, or refused,
    /// is never held behind alerts); never waits.
    pub fn offer_response(&self, response: &Event) {
        for q in &self.queues {
            if q.critical.try_send(response.clone()).is_err() {
                metrics::counter!("vigil_webhook_dropped_total", "webhook" => q.label.clone(), "reason" => "queue_full").increment(1);
                tracing::warn!(webhook = %q.label, "webhook queue full: response not sent there");
            }
        }
    }

    /// Hands an alert to every webhook that wants its severity; never waits.
    pub fn offer(&self, alert: &Event) {
        let EventBody::Alert(a) = &alert.body else {
            return;
        };
        let severity = a.severity;
        for q in &self.queues {
            if severity < q.min {
                continue;
            }
            let tx = if severity == Severity::Critical {
                &q.critical
            } else {
                &q.other
            };
            match tx.try_send(alert.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    metrics::counter!("vigil_webhook_dropped_total", "webhook" => q.label.clone(), "reason" => "queue_full").increment(1);
                    tracing::warn!(webhook = %q.label, rule = %a.rule, %severity, "webhook queue full: alert not sent there");
                }
            }
        }
    }
}

/// The next alert: a critical one whenever one waits; `None` when both queues are closed.
fn next_alert(critical: &Receiver<Event>, other: &Receiver<Event>) -> Option<Event> {
    use std::sync::mpsc::{RecvTimeoutError, TryRecvError};
    let mut critical_open = true;
    loop {
        if critical_open {
            match critical.try_recv() {
                Ok(e) => return Some(e),
                Err(TryRecvError::Empty) => {}
                Err(TryRecvError::Disconnected) => critical_open = false,
            }
        }
        match other.recv_timeout(Duration::from_millis(50)) {
            Ok(e) => return Some(e),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) if critical_open => {
                return critical.recv().ok();
            }
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    }
}

fn deliver(
    critical: Receiver<Event>,
    other: Receiver<Event>,
    cfg: WebhookConfig,
    secret: Vec<u8>,
    label: String,
) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .build();
    let mut seen: HashMap<(u32, String), Instant> = HashMap::new();
    let mut sent_at: std::collections::VecDeque<Instant> = Default::default();
    let window = Duration::from_secs(cfg.dedup_seconds);
    let count = |what: &'static str| {
        metrics::counter!("vigil_webhook_alerts_total", "webhook" => label.clone(), "outcome" => what).increment(1);
    };
    while let Some(event) = next_alert(&critical, &other) {
        // Checkpoints (once a minute at most) and responses (limited where they are made) go
        // every time: no de-duplication, no rate limit.
        let always = match &event.body {
            EventBody::Checkpoint(c) => Some((
                format!(
                    "checkpoint:{}:{}:{}",
                    c.epoch,
                    c.covers_seq
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "-".into()),
                    c.reason
                ),
                ("checkpoint_delivered", "checkpoint_failed"),
            )),
            EventBody::Response(r) => Some((
                format!("response:{}", r.action_id),
                ("response_delivered", "response_failed"),
            )),
            _ => None,
        };
        if let Some((delivery, (delivered, failed))) = always {
            if let Ok(body) = serde_json::to_vec(&event) {
                let ok = post(&agent, &cfg, &secret, &delivery, &body, &label);
                count(if ok { delivered } else { failed });
            }
            continue;
        }
        let EventBody::Alert(a) = &event.body else {
            continue;
        };
        let key = (event.process.sessionid.unwrap_or(0), a.rule.clone());
        seen.retain(|_, t| t.elapsed() < window);
        if seen.contains_key(&key) {
            count("deduplicated");
            continue;
        }
        while sent_at
            .front()
            .is_some_and(|t| t.elapsed() >= Duration::from_secs(60))
        {
            sent_at.pop_front();
        }
        // The limit is for lesser alerts; a critical one always goes (and counts toward it).
        if sent_at.len() >= cfg.max_per_minute as usize && a.severity != Severity::Critical {
            count("rate_limited");
            continue;
        }
        let body = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let delivered = post(&agent, &cfg, &secret, &a.alert_id, &body, &label);
        if delivered {
            seen.insert(key, Instant::now());
            sent_at.push_back(Instant::now());
            count("delivered");
        } else {
            count("failed");
            tracing::warn!(webhook = %label, rule = %a.rule, "alert not delivered to the webhook");
        }
    }
}

/// POSTs `body` with its signature, retrying with backoff; true once the receiver took it.
fn post(
    agent: &ureq::Agent,
    cfg: &WebhookConfig,
    secret: &[u8],
    delivery: &str,
    body: &[u8],
    label: &str,
) -> bool {
    let mut delay = Duration::from_millis(200);
    for attempt in 0..=cfg.retries {
        let timestamp = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let req = agent
            .post(&cfg.url)
            .set("Content-Type", "application/json")
            .set("User-Agent", concat!("vigil/", env!("CARGO_PKG_VERSION")))
            .set("X-Vigil-Delivery", delivery)
            .set("X-Vigil-Attempt", &(attempt + 1).to_string())
            .set("X-Vigil-Timestamp", &timestamp.to_string())
            .set(
                "X-Vigil-Signature",
                &signature(secret, timestamp, delivery, body),
            );
        match req.send_bytes(body) {
            Ok(_) => return true,
            // 4xx other than 408/429: the receiver refuses it; retrying will not help.
            Err(ureq::Error::Status(code, _))
                if (400..500).contains(&code) && code != 408 && code != 429 =>
            {
                tracing::warn!(webhook = %label, code, "webhook refused a delivery");
                return false;
            }
            Err(e) => {
                tracing::debug!(webhook = %label, attempt, "webhook delivery failed: {e}");
                if attempt < cfg.retries {
                    std::thread::sleep(delay);
                    delay = (delay * 2).min(Duration::from_secs(30));
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex_over_timestamp_delivery_and_body() {
        // RFC 4231 test case 2, with the signed prefix in the message.
        let message = b"what do ya want for nothing?";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"1700000000.a1.");
        mac.update(message);
        let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert_eq!(signature(b"Jefe", 1_700_000_000, "a1", message), want);
        let sig = signature(b"Jefe", 1_700_000_000, "a1", message);
        assert!(verify(
            b"Jefe",
            1_700_000_000,
            "a1",
            message,
            &sig,
            1_700_000_100,
            300
        ));
        // Replayed later, under another delivery id, or with another body: refused.
        assert!(!verify(
            b"Jefe",
            1_700_000_000,
            "a1",
            message,
            &sig,
            1_700_001_000,
            300
        ));
        assert!(!verify(
            b"Jefe",
            1_700_000_000,
            "a2",
            message,
            &sig,
            1_700_000_100,
            300
        ));
        assert!(!verify(
            b"Jefe",
            1_700_000_000,
            "a1",
            b"other",
            &sig,
            1_700_000_100,
            300
        ));
    }

    fn config(yaml: &str) -> WebhookConfig {
        yaml_serde::from_str(yaml).unwrap()
    }

    #[test]
    fn a_webhook_without_a_secret_or_with_an_empty_one_is_refused() {
        let none = config("url: https://hooks.example/x");
        assert!(matches!(none.check(), Err(WebhookConfigError::NoSecret)));
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("secret");
        std::fs::write(&empty, "\n").unwrap();
        let c = config(&format!(
            "url: https://hooks.example/x\nsecret_file: {}",
            empty.display()
        ));
        assert!(matches!(c.check(), Err(WebhookConfigError::EmptySecret)));
    }

    #[test]
    fn critical_alerts_are_taken_first() {
        let (ctx, crx) = sync_channel(4);
        let (otx, orx) = sync_channel(4);
        let alert = |n: u32| {
            crate::decode::daemon_event(
                crate::event::Process {
                    pid: n,
                    ..Default::default()
                },
                EventBody::Fork(crate::event::ForkEvent { child_pid: n }),
            )
        };
        otx.send(alert(1)).unwrap();
        otx.send(alert(2)).unwrap();
        ctx.send(alert(9)).unwrap();
        assert_eq!(next_alert(&crx, &orx).unwrap().process.pid, 9);
        assert_eq!(next_alert(&crx, &orx).unwrap().process.pid, 1);
        drop(ctx);
        drop(otx);
        assert_eq!(next_alert(&crx, &orx).unwrap().process.pid, 2);
        assert!(next_alert(&crx, &orx).is_none());
    }
}
