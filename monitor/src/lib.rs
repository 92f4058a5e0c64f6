//! Vigil: kernel-level privileged-session monitor.
//!
//! The daemon reads like its data flow: [`kernel`] loads and attaches the programs, [`decode`]
//! turns kernel records into [`event`] types once, and [`pipeline`] runs capture → enrich → sink.

pub mod bench;
pub mod config;
pub mod decode;
pub mod detect;
pub mod directory;
pub mod durable;
pub mod event;
pub mod fold_files;
pub mod health;
pub mod identity;
pub mod kernel;
pub mod kube_api;
pub mod pipeline;
pub mod present;
pub mod program;
pub mod progress;
pub mod query;
pub mod redact;
pub mod replay;
pub mod report;
pub mod respond;
pub mod sessions;
pub mod spool;
pub mod sshd_log;
pub mod store;
pub mod trail;
pub mod watch;
pub mod watched;

/// A map keyed by a kernel id (pid, uid, gid, cgroup or audit session id) that the pipeline
/// looks up on every event: foldhash instead of the standard SipHash, which was most of the
/// cost of those lookups. Randomly seeded per map like the standard one; not for keys an
/// insider writes freely (paths, names), which keep the standard hasher.
pub type IdMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;
/// The set of [`IdMap`].
pub type IdSet<K> = std::collections::HashSet<K, foldhash::fast::RandomState>;
