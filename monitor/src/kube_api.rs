//! Pod names and namespaces from the Kubernetes API server, for the pods of this node that the
//! kubelet's log directory does not name (for example when `/var/log/pods` is not mounted).
//!
//! The daemon lists only its own node's pods (`fieldSelector=spec.nodeName=<node>`), with the
//! in-cluster service account the chart grants (`get`/`list`/`watch` on pods, nothing else).
//! Lookups never block the pipeline: the enrich stage reads a shared map and, on a miss, wakes a
//! background thread that lists the node's pods again, at most once per refresh interval. Events
//! of a pod not yet known still carry its UID; its name appears on later events.
//!
//! Written on ureq (already used for webhooks) rather than the `kube` crate: one paginated GET
//! does not justify kube's client stack and its build time.

use std::{
    collections::HashMap,
    io::Read,
    path::{Path, PathBuf},
    sync::{
        mpsc::{self, RecvTimeoutError, SyncSender},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use serde::Deserialize;

use crate::identity::PodName;

/// In-cluster service account files, as the kubelet mounts them in every pod.
const SERVICE_ACCOUNT_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";
/// A node runs at most a few hundred pods; a page of 500 is usually the whole list.
const PAGE_SIZE: u32 = 500;
/// Bound on one response body: a page of 500 full pod objects is a few MiB.
const MAX_BODY_BYTES: u64 = 64 << 20;
/// Pods ever named are kept (late events of a finished pod still need its name) up to this many.
const MAX_KNOWN_PODS: usize = 20_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KubernetesApiMode {
    /// Used when the daemon runs in a pod: `KUBERNETES_SERVICE_HOST` is set and the service
    /// account token is mounted.
    Auto,
    /// Always used; missing settings stop the daemon at start with the reason.
    Always,
    Never,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesApiConfig {
    pub mode: KubernetesApiMode,
    /// Base URL of the API server; unset: `https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT`.
    pub url: Option<String>,
    /// Bearer token, read again for every request (projected tokens rotate). Unset: the
    /// service account's.
    pub token_file: Option<PathBuf>,
    /// CA bundle (PEM) the API server's certificate must chain to. Unset: the service account's.
    pub ca_file: Option<PathBuf>,
    /// Least time between two listings of the node's pods.
    pub refresh_seconds: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum KubeApiError {
    #[error("no API server URL: identity.kubernetes_api.url is unset and KUBERNETES_SERVICE_HOST is not in the environment")]
    NoServiceHost,
    #[error("cannot read the API token {path}: {source}")]
    Token {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the API token file {path} is empty")]
    EmptyToken { path: PathBuf },
    #[error("cannot read the API server's CA bundle {path}: {detail}")]
    Ca { path: PathBuf, detail: String },
    #[error("the API server's CA bundle {path} holds no usable certificate")]
    NoCertificates { path: PathBuf },
    #[error("TLS set-up: {0}")]
    Tls(String),
    /// `detail` is ureq's message, which names the URL with its query.
    #[error("listing pods: {detail}")]
    Request { detail: String },
    #[error("listing pods at {url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("listing pods at {url}: the answer is not a PodList: {detail}")]
    Decode { url: String, detail: String },
}

/// One paginated listing of a node's pods.
pub struct PodApiClient {
    agent: ureq::Agent,
    base: String,
    token_file: PathBuf,
    node: String,
}

#[derive(Deserialize)]
struct PodList {
    #[serde(default)]
    items: Vec<Pod>,
    #[serde(default)]
    metadata: ListMeta,
}

#[derive(Deserialize, Default)]
struct ListMeta {
    #[serde(rename = "continue", default)]
    continue_token: Option<String>,
}

#[derive(Deserialize)]
struct Pod {
    metadata: PodMeta,
}

#[derive(Deserialize)]
struct PodMeta {
    uid: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
}

impl PodApiClient {
    /// The client the configuration asks for, or `None` when the API is not to be used.
    /// `env` reads the process environment (a parameter so tests need not change it).
    pub fn from_config(
        cfg: &KubernetesApiConfig,
        node: &str,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<PodApiClient>, KubeApiError> {
        let token_file = cfg
            .token_file
            .clone()
            .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT_DIR).join("token"));
        let ca_file = cfg
            .ca_file
            .clone()
            .unwrap_or_else(|| Path::new(SERVICE_ACCOUNT_DIR).join("ca.crt"));
        let service_host = env("KUBERNETES_SERVICE_HOST").filter(|h| !h.trim().is_empty());
        match cfg.mode {
            KubernetesApiMode::Never => return Ok(None),
            KubernetesApiMode::Auto
                if (cfg.url.is_none() && service_host.is_none()) || !token_file.exists() =>
            {
                return Ok(None)
            }
            _ => {}
        }
        let base = match &cfg.url {
            Some(url) => url.trim_end_matches('/').to_string(),
            None => {
                let host = service_host.ok_or(KubeApiError::NoServiceHost)?;
                let port = env("KUBERNETES_SERVICE_PORT").unwrap_or_else(|| "443".into());
                let host = host.trim();
                if host.contains(':') {
                    format!("https://[{host}]:{}", port.trim())
                } else {
                    format!("https://{host}:{}", port.trim())
                }
            }
        };
        // Fail at start, with the file named, rather than at the first lookup.
        read_token(&token_file)?;
        let tls = tls_config(&ca_file)?;
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(10))
            .tls_config(Arc::new(tls))
            .build();
        Ok(Some(PodApiClient {
            agent,
            base,
            token_file,
            node: node.to_string(),
        }))
    }

    /// This node's pods by UID, every page of them.
    pub fn list_node_pods(&self) -> Result<HashMap<String, PodName>, KubeApiError> {
        let url = format!("{}/api/v1/pods", self.base);
        let selector = format!("spec.nodeName={}", self.node);
        let limit = PAGE_SIZE.to_string();
        let mut pods = HashMap::new();
        let mut continue_token: Option<String> = None;
        loop {
            let token = read_token(&self.token_file)?;
            let mut request = self
                .agent
                .get(&url)
                .set("Authorization", &format!("Bearer {token}"))
                .set("Accept", "application/json")
                .query("fieldSelector", &selector)
                .query("limit", &limit);
            if let Some(c) = &continue_token {
                request = request.query("continue", c);
            }
            let response = match request.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(status, r)) => {
                    let mut body = String::new();
                    let _ = r.into_reader().take(512).read_to_string(&mut body);
                    return Err(KubeApiError::Status {
                        url,
                        status,
                        body: body.trim().to_string(),
                    });
                }
                Err(e) => {
                    return Err(KubeApiError::Request {
                        detail: e.to_string(),
                    })
                }
            };
            let list: PodList = serde_json::from_reader(
                response.into_reader().take(MAX_BODY_BYTES),
            )
            .map_err(|e| KubeApiError::Decode {
                url: url.clone(),
                detail: e.to_string(),
            })?;
            for pod in list.items {
                let m = pod.metadata;
                if let (Some(uid), Some(name), Some(namespace)) = (m.uid, m.name, m.namespace) {
                    pods.insert(uid, PodName { namespace, name });
                }
            }
            match list.metadata.continue_token.filter(|c| !c.is_empty()) {
                Some(c) => continue_token = Some(c),
                None => return Ok(pods),
            }
        }
    }
}

fn read_token(path: &Path) -> Result<String, KubeApiError> {
    let token = std::fs::read_to_string(path).map_err(|source| KubeApiError::Token {
        path: path.to_path_buf(),
        source,
    })?;
    let token = token.trim();
    if token.is_empty() {
        return Err(KubeApiError::EmptyToken {
            path: path.to_path_buf(),
        });
    }
    Ok(token.to_string())
}

fn tls_config(ca_file: &Path) -> Result<rustls::ClientConfig, KubeApiError> {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let ca_error = |detail: String| KubeApiError::Ca {
        path: ca_file.to_path_buf(),
        detail,
    };
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(ca_file).map_err(|e| ca_error(e.to_string()))? {
        let cert = cert.map_err(|e| ca_error(e.to_string()))?;
        roots.add(cert).map_err(|e| ca_error(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(KubeApiError::NoCertificates {
            path: ca_file.to_path_buf(),
        });
    }
    // The same provider ureq is built with (ring), so no second crypto library is linked.
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| KubeApiError::Tls(e.to_string()))
        .map(|b| b.with_root_certificates(roots).with_no_client_auth())
}

/// The pods the API server named so far, refreshed in the background on demand.
pub struct PodApiLookup {
    known: Arc<Mutex<HashMap<String, PodName>>>,
    wake: SyncSender<()>,
}

impl PodApiLookup {
    /// Starts the background thread; it lists the node's pods once right away.
    pub fn spawn(client: PodApiClient, refresh: Duration) -> PodApiLookup {
        let known: Arc<Mutex<HashMap<String, PodName>>> = Arc::default();
        // One pending wake-up is enough: a listing answers every miss before it.
        let (wake, asked) = mpsc::sync_channel::<()>(1);
        let shared = known.clone();
        let _ = wake.try_send(());
        std::thread::Builder::new()
            .name("vigil-pod-api".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                loop {
                    match asked.recv_timeout(Duration::from_secs(600)) {
                        Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                        Err(RecvTimeoutError::Disconnected) => return,
                    }
                    if let Some(wait) = last.and_then(|t| refresh.checked_sub(t.elapsed())) {
                        std::thread::sleep(wait);
                    }
                    last = Some(Instant::now());
                    match client.list_node_pods() {
                        Ok(pods) => {
                            metrics::counter!("vigil_kubernetes_api_lists_total", "outcome" => "ok")
                                .increment(1);
                            let Ok(mut known) = shared.lock() else { return };
                            if known.len() + pods.len() > MAX_KNOWN_PODS {
                                known.clear();
                            }
                            known.extend(pods);
                        }
                        Err(e) => {
                            metrics::counter!("vigil_kubernetes_api_lists_total", "outcome" => "error")
                                .increment(1);
                            tracing::warn!(error = %e, "pod names from the Kubernetes API");
                        }
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(
                |e| tracing::warn!(error = %e, "cannot start the Kubernetes API lookup thread"),
            );
        PodApiLookup { known, wake }
    }

    /// The pod's name if the API server named it; on a miss, asks for a new listing.
    pub fn get(&self, pod_uid: &str) -> Option<PodName> {
        let found = self.known.lock().ok()?.get(pod_uid).cloned();
        if found.is_none() {
            let _ = self.wake.try_send(());
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(mode: KubernetesApiMode) -> KubernetesApiConfig {
        KubernetesApiConfig {
            mode,
            url: None,
            token_file: Some("/nonexistent/token".into()),
            ca_file: Some("/nonexistent/ca.crt".into()),
            refresh_seconds: 10,
        }
    }

    #[test]
    fn auto_is_off_outside_a_cluster_and_always_says_what_is_missing() {
        let none = |_: &str| None;
        let auto = PodApiClient::from_config(&config(KubernetesApiMode::Auto), "n1", none);
        assert!(matches!(auto, Ok(None)));
        let never = PodApiClient::from_config(&config(KubernetesApiMode::Never), "n1", |_| {
            Some("10.0.0.1".into())
        });
        assert!(matches!(never, Ok(None)));
        let always = PodApiClient::from_config(&config(KubernetesApiMode::Always), "n1", none);
        assert!(
            matches!(always, Err(KubeApiError::NoServiceHost)),
            "{:?}",
            always.err()
        );
        let env = |k: &str| (k == "KUBERNETES_SERVICE_HOST").then(|| "10.96.0.1".to_string());
        let always = PodApiClient::from_config(&config(KubernetesApiMode::Always), "n1", env);
        let err = always.err().expect("no token file").to_string();
        assert!(err.contains("/nonexistent/token"), "{err}");
    }

    #[test]
    fn a_pod_list_page_decodes_and_skips_incomplete_items() {
        let page = r#"{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"7","continue":"abc"},
            "items":[{"metadata":{"name":"api-1","namespace":"payments","uid":"u-1","labels":{"a":"b"}},"spec":{"nodeName":"n1"}},
                     {"metadata":{"name":"nameless-uid"}}]}"#;
        let list: PodList = serde_json::from_str(page).unwrap();
        assert_eq!(list.metadata.continue_token.as_deref(), Some("abc"));
        assert_eq!(list.items.len(), 2);
        assert_eq!(list.items[0].metadata.uid.as_deref(), Some("u-1"));
        assert!(list.items[1].metadata.uid.is_none());
    }
}
