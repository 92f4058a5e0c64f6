//! Alert delivery to webhooks: JSON POSTs signed with HMAC-SHA256, retried with backoff,
//! de-duplicated (the same rule in the same session once per window) and rate limited. Each
//! webhook has its own thread and bounded queue; the detect stage only ever `try_send`s, so a
//! slow or dead receiver costs alerts on that webhook (counted), never capture.

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

impl WebhookConfig {
    /// Problems with this webhook's settings (checked with the configuration), its secret
    /// included.
    pub fn check(&self) -> Result<(), String> {
        self.check_settings()?;
        self.secret().map(|_| ())
    }

    /// Problems with the settings other than the secret.
    fn check_settings(&self) -> Result<(), String> {
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            return Err(format!("url `{}` is not http:// or https://", self.url));
        }
        if self.secret_file.is_some() && self.secret_env.is_some() {
            return Err("set secret_file or secret_env, not both".into());
        }
        if self.max_per_minute == 0 {
            return Err("max_per_minute must be at least 1".into());
        }
        Ok(())
    }

    fn secret(&self) -> Result<Option<Vec<u8>>, String> {
        if let Some(path) = &self.secret_file {
            return std::fs::read(path)
                .map(|s| Some(s.trim_ascii_end().to_vec()))
                .map_err(|e| format!("cannot read secret_file {}: {e}", path.display()));
        }
        if let Some(var) = &self.secret_env {
            return std::env::var(var)
                .map(|s| Some(s.into_bytes()))
                .map_err(|_| format!("secret_env: ${var} is not set"));
        }
        Ok(None)
    }
}

/// `sha256=<hex>` of the body under the secret, as sent in `X-Vigil-Signature`.
pub fn signature(secret: &[u8], body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The senders of every configured webhook.
pub struct Webhooks {
    queues: Vec<(SyncSender<Event>, Severity, String)>,
}

const QUEUE: usize = 1024;

impl Webhooks {
    pub fn start(configs: &[WebhookConfig]) -> Result<Webhooks, String> {
        let mut queues = Vec::new();
        for (i, cfg) in configs.iter().enumerate() {
            let secret = cfg
                .check_settings()
                .and_then(|()| cfg.secret())
                .map_err(|e| format!("alerts.webhooks[{i}]: {e}"))?;
            let (tx, rx) = sync_channel(QUEUE);
            let c = cfg.clone();
            let label = format!("webhook-{i}");
            std::thread::Builder::new()
                .name(format!("vigil-{label}"))
                .spawn({
                    let label = label.clone();
                    move || deliver(rx, c, secret, label)
                })
                .map_err(|e| format!("cannot start the webhook thread: {e}"))?;
            queues.push((tx, cfg.min_severity, label));
        }
        Ok(Webhooks { queues })
    }

    /// Hands an alert to every webhook that wants its severity; never waits.
    pub fn offer(&self, alert: &Event) {
        let EventBody::Alert(a) = &alert.body else {
            return;
        };
        let severity = a.severity;
        for (tx, min, label) in &self.queues {
            if severity < *min {
                continue;
            }
            match tx.try_send(alert.clone()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    metrics::counter!("vigil_webhook_dropped_total", "webhook" => label.clone(), "reason" => "queue_full").increment(1);
                }
            }
        }
    }
}

fn deliver(rx: Receiver<Event>, cfg: WebhookConfig, secret: Option<Vec<u8>>, label: String) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_millis(cfg.timeout_ms))
        .build();
    let mut seen: HashMap<(u32, String), Instant> = HashMap::new();
    let mut sent_at: std::collections::VecDeque<Instant> = Default::default();
    let window = Duration::from_secs(cfg.dedup_seconds);
    let count = |what: &'static str| {
        metrics::counter!("vigil_webhook_alerts_total", "webhook" => label.clone(), "outcome" => what).increment(1);
    };
    while let Ok(event) = rx.recv() {
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
        if sent_at.len() >= cfg.max_per_minute as usize {
            count("rate_limited");
            continue;
        }
        let body = match serde_json::to_vec(&event) {
            Ok(b) => b,
            Err(_) => continue,
        };
        let mut delay = Duration::from_millis(200);
        let mut delivered = false;
        for attempt in 0..=cfg.retries {
            let mut req = agent
                .post(&cfg.url)
                .set("Content-Type", "application/json")
                .set("User-Agent", concat!("vigil/", env!("CARGO_PKG_VERSION")))
                .set("X-Vigil-Delivery", &a.alert_id)
                .set("X-Vigil-Attempt", &(attempt + 1).to_string());
            if let Some(s) = &secret {
                req = req.set("X-Vigil-Signature", &signature(s, &body));
            }
            match req.send_bytes(&body) {
                Ok(_) => {
                    delivered = true;
                    break;
                }
                // 4xx other than 408/429: the receiver refuses it; retrying will not help.
                Err(ureq::Error::Status(code, _))
                    if (400..500).contains(&code) && code != 408 && code != 429 =>
                {
                    tracing::warn!(webhook = %label, code, "webhook refused an alert");
                    break;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
