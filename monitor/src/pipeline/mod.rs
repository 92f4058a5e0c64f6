//! The daemon: capture → enrich → detect → respond → sink, connected by bounded channels, plus
//! a stats task, the respond executor and its control socket.

pub mod batch;
pub mod capture;
pub mod detect;
pub mod enrich;
pub mod respond;
pub mod sink;
pub mod stats;

use std::{
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use anyhow::Context as _;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::watch,
};

use crate::{
    config::Config,
    decode::Clock,
    kernel::{KernelMonitor, LoadOptions},
};

/// A counter shared between stages.
#[derive(Default)]
pub struct Count(AtomicU64);

impl Count {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// What went through the pipeline.
#[derive(Default)]
pub struct PipelineStats {
    pub decoded: Count,
    pub decode_errors: Count,
    pub enriched: Count,
    pub written: Count,
}

impl PipelineStats {
    /// By name, as checkpoints carry them.
    pub fn counters(&self) -> crate::trail::Counters {
        [
            ("decoded", &self.decoded),
            ("decode_errors", &self.decode_errors),
            ("enriched", &self.enriched),
            ("written", &self.written),
        ]
        .into_iter()
        .map(|(name, c)| (name.to_string(), c.get()))
        .collect()
    }
}

#[derive(Debug, Default, Clone)]
pub struct RunOptions {
    /// Written (with the daemon's pid) once every program is attached and the stages run.
    pub ready_file: Option<PathBuf>,
}

/// How often the daemon checks its kernel maps and programs.
const INTEGRITY_EVERY: Duration = Duration::from_secs(2);

/// Runs the daemon until SIGINT or SIGTERM, then drains every stage and detaches.
pub async fn run_daemon(config: Config, opts: RunOptions) -> anyhow::Result<()> {
    // Before anything the configuration names is opened (or created, such as the baselines'
    // lock): without root, that is the one error worth reporting.
    crate::kernel::check_root()?;
    // Stop signals are caught from the first moment: one that arrives while the daemon starts
    // (or the instant it announces readiness) is remembered and drains the pipeline once it
    // runs, instead of taking the default action and killing the process mid-start
    // (`tokio::signal::ctrl_c()` would only install its handler when first polled).
    let mut sigint = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    let health = Arc::new(crate::health::Health::default());
    if let Some(addr) = config.metrics.listen {
        crate::health::serve(addr, health.clone()).await?;
    }
    let stats = Arc::new(PipelineStats::default());
    // What the configuration names (rules, baselines, webhooks, the identity mapping, the
    // Kubernetes API) is opened before the kernel programs load: a mistake there stops the
    // daemon before it captures anything.
    let host = crate::event::Origin::this_process().host.to_string();
    let rules = crate::detect::rules::LiveRules::open(
        config.detection.builtin_rules,
        &config.detection.rules_files,
    )
    .context("cannot load the detection rules (detection.rules_files)")?;
    let baselines = if config.detection.baseline.enabled {
        Some(crate::detect::baseline::Baselines::open(
            config.detection.baseline.clone(),
            &config.spool.dir,
            host.clone(),
        )?)
    } else {
        None
    };
    // Registered now, while the rules are at hand: a file any rule names is never folded.
    let routine_files = if config.capture.fold.enabled {
        let found = crate::fold_files::Registration {
            host_root: &config.identity.host_root,
            sensitive_paths: &config.detection.baseline.sensitive_paths,
            rules: &rules.rules,
        }
        .register(&config.capture.fold.routine);
        tracing::info!(
            files = found.files.len(),
            named_by_rules = found.named,
            not_root_owned_or_writable = found.unsafe_owner,
            over_limit = found.over_limit,
            "routine files registered for folding (capture.fold.routine)"
        );
        if found.over_limit > 0 {
            tracing::warn!(
                over_limit = found.over_limit,
                max = crate::fold_files::MAX_FILES,
                "more routine files than the kernel's table holds: the rest are sent as opens"
            );
        }
        found.files
    } else {
        Vec::new()
    };
    // The files and directories the rules name, as loaded now (a rules file reloaded later with
    // other paths takes effect at the next start).
    let named = crate::watched::NamedByRules::of(rules.rules.iter().map(|r| &r.when));
    let detector = crate::detect::Detector::new(rules, baselines);
    let webhooks = crate::detect::webhook::Webhooks::start(&config.alerts.webhooks)?;
    let pod_api =
        crate::kube_api::PodApiClient::from_config(&config.identity.kubernetes_api, &host, |key| {
            std::env::var(key).ok()
        })
        .context("identity.kubernetes_api")?;
    let directory = match &config.identity.mapping_file {
        Some(path) => crate::directory::LiveDirectory::open(path)
            .context("cannot load the identity mapping (identity.mapping_file)")?,
        None => crate::directory::LiveDirectory::none(),
    };
    // The watched files' inodes, looked up before the programs load: the kernel's never-fold
    // list holds them from the first event on (the enrich stage keeps both fresh after).
    let watched = {
        let patterns = config.detection.baseline.sensitive_paths.clone();
        let host_root = config.identity.host_root.clone();
        tokio::task::spawn_blocking(move || {
            crate::watched::WatchedInodes::new(patterns, named, host_root)
        })
        .await
        .context("looking up the watched files")?
    };
    let mut kernel = KernelMonitor::load(&LoadOptions {
        never_fold: watched.kernel_keys().iter().copied().collect(),
        policy: config.policy(),
        ring_buffer_bytes: config.capture.ring_buffer_bytes,
        ignore_tgids: vec![std::process::id()],
        routine_files,
        sys_exit_from: config.capture.syscall_hook.cheapest(),
    })?;
    // Loading parsed the kernel's BTF twice (ours and aya's, about 25 MiB while they lived) and
    // the kernel object: give the freed pages back before the pipeline's own peak adds to them.
    // SAFETY: malloc_trim only releases free heap memory; no pointer is passed.
    unsafe { libc::malloc_trim(0) };
    tracing::info!(
        hooks = kernel.attached.len(),
        sys_exit = %kernel.sys_exit,
        scope = ?config.capture.scope,
        "kernel programs attached"
    );
    let ring = kernel.take_events().context("ring buffer already taken")?;
    let session_tracker = crate::sessions::SessionTracker::new(
        directory,
        crate::sshd_log::SshdAuthLog::new(&config.identity.sshd_logs),
    );
    // Each stage takes the kernel handle it needs; the rest (programs, links) stays here.
    let kernel_files = kernel
        .take_open_files()
        .context("open-file table already taken")?;
    let kernel_counters = kernel.take_counters().context("counters already taken")?;
    let responder = kernel
        .take_responder()
        .context("response maps already taken")?;

    let capacity = config.pipeline.channel_capacity;
    let (capture_tx, capture_rx) = batch::channel(capacity);
    let (sink_tx, sink_rx) = batch::channel(capacity);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);

    let key_path = config.integrity.key_path(&config.spool.dir);
    let (key, created) = crate::trail::HostKey::load_or_create(&key_path)?;
    if created {
        tracing::warn!(
            path = %key_path.display(),
            public = %key.public(),
            "made a new host key; register it: vigil db register-key --host {host} '{}'",
            key.public()
        );
    }
    let signer = crate::trail::Signer {
        key,
        host: host.clone(),
    };
    let spool = crate::spool::Spool::open_signed(config.spool.clone(), Some(signer)).with_context(
        || {
            format!(
                "cannot open the spool at {} (spool.dir)",
                config.spool.dir.display()
            )
        },
    )?;
    tracing::info!(
        dir = %config.spool.dir.display(),
        next_seq = spool.next_seq(),
        epoch = %spool.epoch(),
        new_epoch = spool.opened().epoch_began.as_deref().unwrap_or(""),
        "spool open"
    );
    let spool_position = spool.position();
    health.watch_spool(spool_position.clone());
    let sink = sink::JsonLinesSink::open(
        Some(spool),
        config.output.stdout,
        config.output.file.as_deref(),
    )?
    .with_checkpoint_hooks(webhooks.clone());
    let sink_stats = stats.clone();
    let sink_health = health.clone();
    let sink_thread = std::thread::Builder::new()
        .name("vigil-sink".into())
        .spawn(move || {
            sink_health.track_blocking("sink", || sink::run(sink_rx, sink, sink_stats))
        })?;

    let mut capture = tokio::spawn(health.clone().track(
        "capture",
        capture::run(
            ring,
            Clock::now(),
            Duration::from_millis(config.capture.poll_interval_ms),
            capture_tx,
            shutdown_rx.clone(),
            stats.clone(),
        ),
    ));
    let (detect_tx, detect_rx) = batch::channel(capacity);
    // The daemon's checks of itself go through detection (an alert, webhooks) like any event.
    let tamper_tx = detect_tx.clone();
    let (respond_tx, respond_rx) = batch::channel(capacity);
    let detect = tokio::spawn(health.clone().track(
        "detect",
        detect::run(detect_rx, respond_tx, detector, webhooks.clone()),
    ));
    // Responses: the stage turns alerts into requests, the executor (a thread: signals and
    // usermod block) carries them out, the control socket takes requests from `vigil respond`.
    let (executor, denied_hashes) = crate::respond::act::Executor::new(
        config.respond.clone(),
        responder,
        config.identity.host_etc.clone(),
        config.identity.host_root.clone(),
        crate::respond::state_path(&config.spool.dir),
    );
    health.set_respond(config.respond.mode, executor.mechanisms());
    tracing::info!(mode = %config.respond.mode, mechanisms = ?executor.mechanisms(), "responses");
    let (jobs_tx, jobs_rx) = std::sync::mpsc::sync_channel(crate::respond::act::QUEUE);
    let executor_out = sink_tx.clone();
    let executor_health = health.clone();
    let executor_thread = std::thread::Builder::new()
        .name("vigil-respond".into())
        .spawn(move || {
            executor_health.track_blocking("respond_executor", || {
                executor.run(jobs_rx, executor_out, webhooks);
                Ok::<(), anyhow::Error>(())
            })
        })?;
    let control = crate::respond::control::bind(&config.respond.control_socket)?;
    let control_task = tokio::spawn(health.clone().track(
        "control_socket",
        crate::respond::control::serve(control, jobs_tx.clone(), shutdown_rx.clone()),
    ));
    let respond = tokio::spawn(health.clone().track(
        "respond",
        respond::run(
            respond_rx,
            sink_tx.clone(),
            jobs_tx,
            respond::Triggers {
                on_risk: config.respond.on_risk.clone(),
                denied_hashes,
            },
        ),
    ));
    let pod_api = pod_api.map(|client| {
        let refresh = Duration::from_secs(config.identity.kubernetes_api.refresh_seconds);
        crate::kube_api::PodApiLookup::spawn(client, refresh)
    });
    let pod_names =
        crate::identity::PodNames::new(config.identity.pod_logs_dir.clone()).with_api(pod_api);
    // Enrich reads /proc, the TCP table and the kernel's open-file table for every event that
    // needs it: blocking work, so it runs on a thread of its own (the runtime's workers keep
    // capture and detection moving) that drives the stage's channels and timer.
    let runtime = tokio::runtime::Handle::current();
    let enrich_health = health.clone();
    let enrich_stats = stats.clone();
    let users = crate::identity::UserNames::new(config.identity.host_etc.clone());
    let host_root = config.identity.host_root.clone();
    let redactor = crate::redact::Redactor::new(&config.redaction).context("redaction.patterns")?;
    let enrich = tokio::task::spawn_blocking(move || {
        enrich_health.track_blocking("enrich", || {
            // Both read the host's files at start: on this thread, not a runtime worker.
            let identities = enrich::Identities {
                users,
                programs: crate::program::Programs::for_host(host_root.clone()),
                watched,
            };
            runtime.block_on(enrich::run(
                capture_rx,
                detect_tx,
                kernel_files,
                enrich_stats,
                session_tracker,
                pod_names,
                identities,
                redactor,
            ))
        })
    });
    let stats_task = tokio::spawn(health.clone().track(
        "stats",
        stats::run(
            kernel_counters,
            sink_tx,
            tamper_tx.clone(),
            stats::Intervals {
                stats: Duration::from_millis(config.pipeline.stats_interval_ms),
                checkpoint: Duration::from_millis(config.integrity.checkpoint_interval_ms),
            },
            shutdown_rx.clone(),
            stats.clone(),
        ),
    ));

    // The shipper stops after the sink, so that its last pass sees every event spooled.
    let (ship_stop_tx, ship_stop_rx) = watch::channel(false);
    let shipper = config.clickhouse.url.is_some().then(|| {
        let status = Arc::new(crate::store::shipper::ShipperStatus::default());
        health.watch_shipper(status.clone());
        tokio::spawn(health.clone().track(
            "clickhouse_shipper",
            crate::store::shipper::run(
                config.clickhouse.clone(),
                config.spool.dir.clone(),
                host.clone(),
                Some(spool_position.clone()),
                status,
                ship_stop_rx,
            ),
        ))
    });

    if let Some(path) = &opts.ready_file {
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write ready file {}", path.display()))?;
    }
    health.set_ready();
    crate::health::systemd::ready();
    tracing::info!("capturing; Ctrl-C to stop");

    // While capturing, every few seconds: do the kernel's maps and programs still hold what
    // the daemon put there? Each finding once.
    let mut integrity = tokio::time::interval(INTEGRITY_EVERY);
    let mut reported = std::collections::HashSet::new();
    let watchdog_every = crate::health::systemd::watchdog_every();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let early = loop {
        tokio::select! {
            _ = sigint.recv() => break None,
            _ = sigterm.recv() => break None,
            ended = &mut capture => break Some(ended),
            _ = watchdog.tick(), if watchdog_every.is_some() => {
                if health.all_running() {
                    crate::health::systemd::watchdog_ping();
                }
            }
            _ = integrity.tick() => {
                for (check, detail) in kernel.check_integrity() {
                    if reported.insert((check, detail.clone())) {
                        tracing::error!(%check, %detail, "the monitor's kernel side was changed");
                        // Waited for: with the pipeline backed up, dropping it would hide the
                        // one report that matters (the pipeline drains meanwhile; a signal is
                        // taken up right after).
                        let event = stats::tamper_event(check, detail);
                        if batch::send_one(&tamper_tx, event, "detect").await.is_err() {
                            tracing::error!(
                                "the detect stage stopped: the report above is in the log only"
                            );
                        }
                    }
                }
            }
        }
    };
    drop(tamper_tx);
    tracing::info!("stopping: draining the pipeline");
    health.set_stopping();
    crate::health::systemd::stopping();
    let _ = shutdown_tx.send(true);
    let capture_result = match early {
        Some(ended) => ended,
        None => capture.await,
    };
    let mut failures = Vec::new();
    for (stage, result) in [
        ("capture", capture_result),
        ("enrich", enrich.await),
        ("detect", detect.await),
        ("respond", respond.await),
        ("control socket", control_task.await),
        ("stats", stats_task.await),
    ] {
        match result {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("{stage}: {e:#}")),
            Err(e) => failures.push(format!("{stage}: {e}")),
        }
    }
    // Its queue closed with the respond stage and the control socket: it has written down
    // every response asked for.
    match executor_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("respond executor: {e:#}")),
        Err(_) => failures.push("respond executor: thread panicked".into()),
    }
    match sink_thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => failures.push(format!("sink: {e:#}")),
        Err(_) => failures.push("sink: thread panicked".into()),
    }
    // After the sink: the spool is complete, and the shipper's last pass can take all of it.
    let _ = ship_stop_tx.send(true);
    if let Some(shipper) = shipper {
        match shipper.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("clickhouse shipper: {e:#}")),
            Err(e) => failures.push(format!("clickhouse shipper: {e}")),
        }
    }

    // (The stats stage logged the kernel's final counters as it stopped.)
    tracing::info!(
        decoded = stats.decoded.get(),
        decode_errors = stats.decode_errors.get(),
        written = stats.written.get(),
        "pipeline counters"
    );
    // Dropping the monitor detaches every program and frees every map.
    drop(kernel);
    tracing::info!("detached");
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("pipeline stages failed: {}", failures.join("; "))
    }
}
