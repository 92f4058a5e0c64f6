//! `vigil verify`: checks a host's trail — from a spool or from ClickHouse — against its hash
//! chain and its signed checkpoints, and says what does not hold.
//!
//! The checker sees one host's records in (epoch, sequence) order, whatever they were read
//! from, and finds:
//! - a record whose chain is not the hash of the one before it and itself (`edited`);
//! - two different records under one sequence (`conflicting_copies`: a row inserted to replace
//!   or forge one);
//! - sequences missing between records of an epoch (`missing`);
//! - a checkpoint whose signature does not hold or whose key is not the host's
//!   (`bad_signature`, `untrusted_key`), or that vouches for another chain than the records
//!   have (`checkpoint_mismatch`: records before it were rewritten, chain and all);
//! - records no checkpoint vouches for although one should have by now (`unsigned`);
//! - a row stored under another host's name than its record says (`host_mismatch`);
//! - a daemon run that ended without its stop checkpoint (`unclean_end`), counters that went
//!   backwards within a run (`counters_reset`), and a host whose heartbeats stopped (`silent`);
//! - what a reader could not read (`damaged`), and records of an older Vigil (`unchained`).

use std::collections::BTreeMap;

use serde::Serialize;

use super::{check_signature, PublicKey};
use crate::{
    event::{CheckpointReason, Event, EventBody},
    spool::{Chain, Epoch},
};

/// The kinds of finding, as one closed vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FindingKind {
    Edited,
    ConflictingCopies,
    Missing,
    CheckpointMismatch,
    BadSignature,
    UntrustedKey,
    Unsigned,
    HostMismatch,
    UncleanEnd,
    CountersReset,
    Silent,
    Damaged,
    Unchained,
}

impl FindingKind {
    /// Findings that only say the trail is older than the chain (not that anything happened).
    pub fn is_informational(self) -> bool {
        matches!(self, FindingKind::Unchained)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub kind: FindingKind,
    pub host: String,
    pub epoch: String,
    /// The sequence it is about (the first, for a range).
    pub seq: Option<u64>,
    pub detail: String,
}

/// One record of a host's trail as read from a store.
#[derive(Debug, Clone)]
pub struct TrailRecord {
    /// The host the store files it under (ClickHouse's `host` column; the spool's own host).
    pub host: String,
    pub epoch: String,
    pub seq: u64,
    /// The chain stored with it; `None` for records of an older Vigil.
    pub chain: Option<[u8; 32]>,
    pub payload: Vec<u8>,
    /// Where it was read (a segment, a table), for findings.
    pub source: String,
}

/// Where a store's epoch is anchored: the chain before a given sequence, when the store knows
/// it (a spool segment's header does; ClickHouse does not).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub epoch: String,
    pub first_seq: u64,
    pub prev_chain: [u8; 32],
    pub source: String,
}

/// What a verification covered and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    pub hosts: BTreeMap<String, HostSummary>,
    pub findings: Vec<Finding>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct HostSummary {
    pub epochs: usize,
    pub records: u64,
    /// Records a valid checkpoint by a trusted key vouches for.
    pub signed: u64,
    pub checkpoints: u64,
    /// Time of the last valid checkpoint (ns since the epoch).
    pub last_checkpoint_ns: Option<i64>,
    /// The key the host signed with.
    pub key: Option<String>,
}

impl Report {
    /// True when nothing but informational findings were made.
    pub fn clean(&self) -> bool {
        self.findings.iter().all(|f| f.kind.is_informational())
    }
}

/// What verification trusts and when it runs.
#[derive(Debug, Clone)]
pub struct Trust {
    /// Keys by host (pinned in configuration, registered in ClickHouse).
    pub keys: BTreeMap<String, Vec<PublicKey>>,
    /// Accept a host's own key when none is known (a spool read on its own host: the key file
    /// beside it), reported in the summary.
    pub now_ns: i64,
    /// Records (and heartbeats) older than this without a checkpoint are findings.
    pub silent_after_ns: i64,
}

/// Checks one host's trail, all of one store: its records (in any order), the chain values the
/// store knows before some sequences (segment headers), and what its reader could not read.
pub fn verify_host(host: &str, trail: HostTrail, trust: &Trust, report: &mut Report) {
    let HostTrail {
        mut records,
        anchors,
        damage,
    } = trail;
    let anchors = anchors.as_slice();
    records.sort_by(|a, b| a.epoch.cmp(&b.epoch).then(a.seq.cmp(&b.seq)));
    let summary = report.hosts.entry(host.to_string()).or_default();
    summary.records += records.len() as u64;
    let mut findings = Vec::new();
    let finding = |kind, epoch: &str, seq: Option<u64>, detail: String| Finding {
        kind,
        host: host.to_string(),
        epoch: epoch.to_string(),
        seq,
        detail,
    };
    for (epoch, detail) in damage {
        findings.push(finding(FindingKind::Damaged, &epoch, None, detail));
    }
    // Group by epoch.
    let mut by_epoch: BTreeMap<String, Vec<TrailRecord>> = BTreeMap::new();
    for r in records {
        by_epoch.entry(r.epoch.clone()).or_default().push(r);
    }
    summary.epochs = by_epoch.len();
    // Per epoch: (first record time, last record time, ended with a stop checkpoint).
    let mut runs: Vec<(i64, String, bool)> = Vec::new();
    for (epoch, mut records) in by_epoch {
        if epoch.is_empty() || records.iter().all(|r| r.chain.is_none()) {
            findings.push(finding(
                FindingKind::Unchained,
                &epoch,
                records.first().map(|r| r.seq),
                format!(
                    "{} records written by an older Vigil carry no chain and are not verified",
                    records.len()
                ),
            ));
            continue;
        }
        // Two copies of one sequence: identical ones are one record shipped twice; different
        // ones are a forgery or a replacement attempt.
        records.dedup_by(|b, a| a.seq == b.seq && a.chain == b.chain && a.payload == b.payload);
        let mut i = 0;
        while i + 1 < records.len() {
            if records[i].seq == records[i + 1].seq {
                findings.push(finding(
                    FindingKind::ConflictingCopies,
                    &epoch,
                    Some(records[i].seq),
                    format!(
                        "two different records under one sequence ({} and {}): one was \
                         inserted later to replace or forge it",
                        records[i].source,
                        records[i + 1].source
                    ),
                ));
                // Keep the one whose chain links with its predecessor's, if either does.
                let prev = i.checked_sub(1).and_then(|p| records[p].chain);
                let keep_second = prev.is_some_and(|p| {
                    records[i + 1].chain.is_some_and(|c| {
                        Chain(p).links(records[i + 1].seq, &records[i + 1].payload, Chain(c))
                    })
                });
                records.remove(if keep_second { i } else { i + 1 });
                continue;
            }
            i += 1;
        }
        let epoch_id = Epoch::from_hex(&epoch);
        let genesis = epoch_id.map(|e| Chain::genesis(&e));
        let mut prev: Option<(u64, Chain)> = None;
        // The stored chain at every sequence, for checkpoints to be compared with.
        let mut stored: BTreeMap<u64, [u8; 32]> = BTreeMap::new();
        let mut signed_upto: Option<u64> = None;
        let mut run_counters: Option<BTreeMap<String, u64>> = None;
        let mut ended_clean = false;
        let mut first_time = None;
        for r in &records {
            let Some(chain) = r.chain.map(Chain) else {
                findings.push(finding(
                    FindingKind::Edited,
                    &epoch,
                    Some(r.seq),
                    format!("record in {} carries no chain", r.source),
                ));
                continue;
            };
            let event: Option<Event> = serde_json::from_slice(&r.payload).ok();
            if let Some(e) = &event {
                first_time.get_or_insert(e.time_ns);
                if !e.host.is_empty() && &*e.host != r.host.as_str() {
                    findings.push(finding(
                        FindingKind::HostMismatch,
                        &epoch,
                        Some(r.seq),
                        format!(
                            "stored under host {:?} but written on {:?} ({})",
                            r.host, e.host, r.source
                        ),
                    ));
                }
            }
            // The link to the record before.
            let expected_prev = match prev {
                Some((p, c)) if p + 1 == r.seq => Some(c),
                Some((p, _)) => {
                    findings.push(finding(
                        FindingKind::Missing,
                        &epoch,
                        Some(p + 1),
                        format!(
                            "records {}..{} are missing (the next one is in {})",
                            p + 1,
                            r.seq,
                            r.source
                        ),
                    ));
                    None
                }
                None => anchors
                    .iter()
                    .find(|a| a.epoch == epoch && a.first_seq == r.seq)
                    .map(|a| Chain(a.prev_chain))
                    .or_else(|| {
                        // The epoch's first record links to its genesis; any other first
                        // record read is where the store's memory starts (older ones deleted
                        // by retention or by a full spool) and is taken as it is.
                        genesis.filter(|g| g.links(r.seq, &r.payload, chain))
                    }),
            };
            if let Some(p) = expected_prev {
                if !p.links(r.seq, &r.payload, chain) {
                    findings.push(finding(
                        FindingKind::Edited,
                        &epoch,
                        Some(r.seq),
                        format!(
                            "record {} in {} does not hash to its chain: its contents or the \
                             chain before it were changed",
                            r.seq, r.source
                        ),
                    ));
                }
            }
            stored.insert(r.seq, chain.0);
            prev = Some((r.seq, chain));
            // Checkpoints.
            let Some(Event {
                body: EventBody::Checkpoint(c),
                time_ns,
                host: written_on,
                ..
            }) = event
            else {
                ended_clean = false;
                continue;
            };
            let signer_host = if written_on.is_empty() {
                r.host.clone()
            } else {
                written_on.to_string()
            };
            if let Err(e) = check_signature(&signer_host, time_ns, &c) {
                findings.push(finding(
                    FindingKind::BadSignature,
                    &epoch,
                    Some(r.seq),
                    format!("checkpoint {} in {}: {e}", r.seq, r.source),
                ));
                continue;
            }
            let trusted = PublicKey::parse(&c.key)
                .ok()
                .is_some_and(|k| trust.keys.get(host).is_some_and(|keys| keys.contains(&k)));
            if !trusted {
                findings.push(finding(
                    FindingKind::UntrustedKey,
                    &epoch,
                    Some(r.seq),
                    format!(
                        "checkpoint {} is signed by {}, which is not a key registered or pinned \
                         for host {host:?}",
                        r.seq, c.key
                    ),
                ));
                continue;
            }
            if c.epoch != epoch {
                findings.push(finding(
                    FindingKind::CheckpointMismatch,
                    &epoch,
                    Some(r.seq),
                    format!("checkpoint {} names epoch {}", r.seq, c.epoch),
                ));
                continue;
            }
            let vouched = match c.covers_seq {
                None => genesis.map(|g| g.hex()) == Some(c.chain.clone()),
                Some(s) => stored.get(&s).map(hex::encode) == Some(c.chain.clone()),
            };
            if !vouched {
                findings.push(finding(
                    FindingKind::CheckpointMismatch,
                    &epoch,
                    Some(r.seq),
                    format!(
                        "checkpoint {} ({}) vouches for a chain the records through {} do not \
                         have: records before it were rewritten",
                        r.seq,
                        c.reason,
                        c.covers_seq
                            .map(|s| s.to_string())
                            .unwrap_or_else(|| "the epoch's start".into())
                    ),
                ));
                continue;
            }
            summary.checkpoints += 1;
            summary.key = Some(c.key.clone());
            summary.last_checkpoint_ns = summary.last_checkpoint_ns.max(Some(time_ns));
            // Everything through the checkpoint itself is vouched for (its own record is what
            // the next checkpoint covers; the checkpoint's contents are signed either way).
            signed_upto = Some(r.seq);
            match c.reason {
                CheckpointReason::Start => run_counters = None,
                CheckpointReason::Heartbeat | CheckpointReason::Stop => {
                    if let Some(before) = &run_counters {
                        for (name, was) in before {
                            let now = c.counters.get(name).copied().unwrap_or(0);
                            if now < *was {
                                findings.push(finding(
                                    FindingKind::CountersReset,
                                    &epoch,
                                    Some(r.seq),
                                    format!(
                                        "counter {name} went from {was} to {now} within one run \
                                         of the daemon"
                                    ),
                                ));
                            }
                        }
                    }
                    run_counters = Some(c.counters.clone());
                }
            }
            ended_clean = c.reason == CheckpointReason::Stop;
        }
        let signed = records
            .iter()
            .filter(|r| signed_upto.is_some_and(|s| r.seq <= s))
            .count() as u64;
        summary.signed += signed;
        // Records after the last checkpoint: expected for the last few seconds of a running
        // daemon, not for records older than a heartbeat interval's worth of slack.
        let tail: Vec<&TrailRecord> = records
            .iter()
            .filter(|r| signed_upto.is_none_or(|s| r.seq > s))
            .collect();
        if let Some(first) = tail.first() {
            let old = tail.iter().any(|r| {
                serde_json::from_slice::<Event>(&r.payload)
                    .map(|e| trust.now_ns - e.time_ns > trust.silent_after_ns)
                    .unwrap_or(true)
            });
            if old {
                findings.push(finding(
                    FindingKind::Unsigned,
                    &epoch,
                    Some(first.seq),
                    format!(
                        "{} records from {} on are vouched for by no checkpoint, and are older \
                         than a heartbeat should leave them",
                        tail.len(),
                        first.seq
                    ),
                ));
            }
        }
        runs.push((first_time.unwrap_or(0), epoch.clone(), ended_clean));
    }
    if runs.is_empty() && trust.keys.contains_key(host) {
        findings.push(finding(
            FindingKind::Silent,
            "",
            None,
            "a key is registered for this host but it has no records at all".into(),
        ));
    }
    // Epochs in time order: every one but the newest should have ended with a stop checkpoint;
    // one that did not (a killed daemon, a lost spool) is what an auditor must know about.
    runs.sort();
    if runs.len() > 1 {
        for (_, epoch, clean) in &runs[..runs.len() - 1] {
            if !clean {
                findings.push(finding(
                    FindingKind::UncleanEnd,
                    epoch,
                    None,
                    "this epoch ends without a stop checkpoint and another began after it: the \
                     daemon was killed, or its spool lost or removed"
                        .into(),
                ));
            }
        }
    }
    if let Some((_, epoch, clean)) = runs.last() {
        let last = summary.last_checkpoint_ns.unwrap_or(0);
        if !clean && trust.now_ns - last > trust.silent_after_ns {
            findings.push(finding(
                FindingKind::Silent,
                epoch,
                None,
                format!(
                    "no checkpoint for {} s and no stop: the daemon is stopped, frozen or cut \
                     off",
                    (trust.now_ns - last) / 1_000_000_000
                ),
            ));
        }
    }
    report.findings.extend(findings);
}

/// One host's trail as a store holds it, ready for [`verify_host`].
#[derive(Debug, Default)]
pub struct HostTrail {
    pub records: Vec<TrailRecord>,
    pub anchors: Vec<Anchor>,
    /// (epoch, what could not be read).
    pub damage: Vec<(String, String)>,
}

/// Reads a spool directory as trails by host (a spool holds one host's, unless copied
/// together from several).
pub fn spool_trails(
    dir: &std::path::Path,
) -> Result<BTreeMap<String, HostTrail>, crate::spool::SpoolError> {
    use crate::spool::frame::{list_segments, scan, Scanned, SegmentFile};
    let mut out: BTreeMap<String, HostTrail> = BTreeMap::new();
    let fallback_host = crate::event::Origin::this_process().host.to_string();
    let mut current_host = fallback_host.clone();
    let listed = list_segments(dir)?;
    let count = listed.len();
    for (i, (first_seq, path)) in listed.into_iter().enumerate() {
        let source = path.display().to_string();
        let mut seg = match SegmentFile::open(&path, first_seq) {
            Ok(Some(seg)) => seg,
            Ok(None) => continue,
            Err(e) => {
                out.entry(current_host.clone())
                    .or_default()
                    .damage
                    .push((String::new(), e.to_string()));
                continue;
            }
        };
        let epoch = if seg.header.format == crate::spool::frame::Format::V2 {
            seg.header.epoch.hex()
        } else {
            String::new()
        };
        let anchor = Anchor {
            epoch: epoch.clone(),
            first_seq,
            prev_chain: seg.header.prev_chain.0,
            source: source.clone(),
        };
        let mut records = Vec::new();
        let mut damage = Vec::new();
        let end = scan(&mut seg, |item| match item {
            Scanned::Record {
                seq,
                chain,
                payload,
                offset,
            } => records.push(TrailRecord {
                host: String::new(),
                epoch: epoch.clone(),
                seq,
                chain: chain.map(|c| c.0),
                payload: payload.to_vec(),
                source: format!("{source} at byte {offset}"),
            }),
            Scanned::Damage { from, to } => {
                damage.push(format!("{source}: bytes {from}..{to} hold no whole record"))
            }
        })?;
        if let Some(from) = end.damage_from(i + 1 == count) {
            damage.push(format!(
                "{source}: no whole record from byte {from} to its end"
            ));
        }
        for mut r in records {
            if let Ok(e) = serde_json::from_slice::<Event>(&r.payload) {
                if !e.host.is_empty() {
                    current_host = e.host.to_string();
                }
            }
            r.host = current_host.clone();
            out.entry(current_host.clone()).or_default().records.push(r);
        }
        let trail = out.entry(current_host.clone()).or_default();
        trail.anchors.push(anchor);
        trail
            .damage
            .extend(damage.into_iter().map(|d| (epoch.clone(), d)));
    }
    Ok(out)
}

/// Renders a report for people: one line per host, then one per finding.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    for (host, s) in &report.hosts {
        out.push_str(&format!(
            "host {}: {} records in {} epochs, {} signed by {} checkpoints{}\n",
            crate::present::terminal_str(host),
            s.records,
            s.epochs,
            s.signed,
            s.checkpoints,
            s.key
                .as_deref()
                .map(|k| format!(" (key {k})"))
                .unwrap_or_default()
        ));
    }
    for f in &report.findings {
        out.push_str(&format!(
            "{:<20} host {} epoch {}{}: {}\n",
            serde_json::to_value(f.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default(),
            crate::present::terminal_str(&f.host),
            f.epoch.get(..8).unwrap_or(&f.epoch),
            f.seq.map(|s| format!(" seq {s}")).unwrap_or_default(),
            crate::present::terminal_str(&f.detail)
        ));
    }
    if report.clean() {
        out.push_str("verified: nothing edited, removed, reordered, forged or silently lost\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        event::{ForkEvent, Process},
        spool::{Spool, SpoolConfig, WhenFull},
        trail::{HostKey, Signer},
    };

    /// A spool written by a signing daemon, read back as trail records (with the key).
    fn trail(n: u32) -> (Vec<TrailRecord>, PublicKey, String) {
        let dir = tempfile::tempdir().unwrap();
        let key = HostKey::generate().unwrap();
        let public = key.public();
        let host = crate::event::Origin::this_process().host.to_string();
        let mut spool = Spool::open_signed(
            SpoolConfig {
                dir: dir.path().to_path_buf(),
                segment_bytes: 1 << 20,
                max_bytes: 1 << 30,
                when_full: WhenFull::DropOldest,
                fsync_interval_ms: 0,
            },
            Some(Signer {
                key,
                host: host.clone(),
            }),
        )
        .unwrap();
        let epoch = spool.epoch().hex();
        for i in 0..n {
            let e = crate::decode::daemon_event(
                Process {
                    pid: i,
                    ..Default::default()
                },
                EventBody::Fork(ForkEvent { child_pid: i }),
            );
            spool.append(&e).unwrap();
            if i % 10 == 9 {
                spool
                    .checkpoint(
                        CheckpointReason::Heartbeat,
                        [("written".into(), i as u64)].into(),
                    )
                    .unwrap();
            }
        }
        spool.close([("written".into(), n as u64)].into()).unwrap();
        let mut out = Vec::new();
        let mut reader = crate::spool::SpoolReader::new(dir.path(), 0);
        let mut got = Vec::new();
        reader.read(100_000, &mut got).unwrap();
        for r in got {
            out.push(TrailRecord {
                host: host.clone(),
                epoch: r.epoch.hex(),
                seq: r.seq,
                chain: r.chain.map(|c| c.0),
                payload: r.payload,
                source: "test".into(),
            });
        }
        assert_eq!(out[0].epoch, epoch);
        (out, public, host)
    }

    fn check(records: Vec<TrailRecord>, key: PublicKey, host: &str) -> Report {
        let trust = Trust {
            keys: [(host.to_string(), vec![key])].into(),
            now_ns: i64::MAX / 2,
            silent_after_ns: i64::MAX / 4,
        };
        let mut report = Report::default();
        verify_host(
            host,
            HostTrail {
                records,
                ..Default::default()
            },
            &trust,
            &mut report,
        );
        report
    }

    fn kinds(r: &Report) -> Vec<FindingKind> {
        r.findings.iter().map(|f| f.kind).collect()
    }

    #[test]
    fn an_untouched_trail_verifies_and_is_all_signed() {
        let (records, key, host) = trail(35);
        let n = records.len() as u64;
        let report = check(records, key, &host);
        assert!(report.findings.is_empty(), "{:?}", report.findings);
        assert_eq!(
            report.hosts[&host].signed, n,
            "the stop checkpoint covers everything"
        );
        assert!(report.hosts[&host].checkpoints >= 5);
    }

    fn edit_payload(r: &mut TrailRecord) {
        let text = String::from_utf8(r.payload.clone()).unwrap();
        r.payload = text
            .replace("\"child_pid\":", "\"child_pid\":1")
            .into_bytes();
    }

    #[test]
    fn an_edited_record_is_found_and_a_rechained_edit_fails_the_checkpoint() {
        let (mut records, key, host) = trail(35);
        edit_payload(&mut records[5]);
        assert!(kinds(&check(records.clone(), key, &host)).contains(&FindingKind::Edited));
        // The insider recomputes every chain after the edit: the links hold, the signed
        // checkpoint after it does not.
        let mut chain = Chain(records[4].chain.unwrap());
        for r in records.iter_mut().skip(5) {
            chain = chain.next(r.seq, &r.payload);
            r.chain = Some(chain.0);
        }
        let k = kinds(&check(records, key, &host));
        assert!(!k.contains(&FindingKind::Edited), "{k:?}");
        assert!(k.contains(&FindingKind::CheckpointMismatch), "{k:?}");
    }

    /// A spool begun by a Vigil that chained payloads whole and continued by one that hashes
    /// processes apart verifies across the change, and an edit on either side is found.
    #[test]
    fn a_chain_across_the_rule_change_verifies() {
        let (mut records, key, host) = trail(12);
        // The stop checkpoint vouches for the chain as written; the rewrite below changes it.
        records.pop();
        let epoch = Epoch::from_hex(&records[0].epoch).unwrap();
        let mut chain = Chain::genesis(&epoch);
        for (i, r) in records.iter_mut().enumerate() {
            chain = if i < 6 {
                chain.next_whole(r.seq, &r.payload)
            } else {
                chain.next(r.seq, &r.payload)
            };
            r.chain = Some(chain.0);
        }
        let k = kinds(&check(records.clone(), key, &host));
        assert!(!k.contains(&FindingKind::Edited), "{k:?}");
        for at in [3, 9] {
            let mut edited = records.clone();
            edit_payload(&mut edited[at]);
            let k = kinds(&check(edited, key, &host));
            assert!(k.contains(&FindingKind::Edited), "record {at}: {k:?}");
        }
    }

    #[test]
    fn deletions_forgeries_and_foreign_keys_are_found() {
        let (records, key, host) = trail(35);
        // A record deleted.
        let mut deleted = records.clone();
        deleted.remove(7);
        assert!(kinds(&check(deleted, key, &host)).contains(&FindingKind::Missing));
        // A second copy of a sequence (an INSERT that would have replaced it).
        let mut forged = records.clone();
        let mut copy = forged[8].clone();
        edit_payload(&mut copy);
        forged.push(copy);
        assert!(kinds(&check(forged, key, &host)).contains(&FindingKind::ConflictingCopies));
        // The whole trail re-signed with another key.
        let other = HostKey::generate().unwrap().public();
        assert!(kinds(&check(records.clone(), other, &host)).contains(&FindingKind::UntrustedKey));
        // The trail filed under another host's name (rows inserted with another `host`).
        let moved: Vec<TrailRecord> = records
            .into_iter()
            .map(|r| TrailRecord {
                host: "elsewhere".into(),
                ..r
            })
            .collect();
        let k = kinds(&check(moved, key, "elsewhere"));
        assert!(k.contains(&FindingKind::HostMismatch), "{k:?}");
    }

    #[test]
    fn a_truncated_trail_is_unsigned_and_silent_once_old() {
        let (mut records, key, host) = trail(35);
        records.truncate(records.len() - 3); // the stop checkpoint and what it covered
        let trust = Trust {
            keys: [(host.clone(), vec![key])].into(),
            now_ns: i64::MAX / 2,
            silent_after_ns: 1,
        };
        let mut report = Report::default();
        verify_host(
            &host,
            HostTrail {
                records,
                ..Default::default()
            },
            &trust,
            &mut report,
        );
        let k = kinds(&report);
        assert!(k.contains(&FindingKind::Unsigned), "{k:?}");
        assert!(k.contains(&FindingKind::Silent), "{k:?}");
    }
}
