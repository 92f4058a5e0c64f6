//! One interface for every query a person runs (`vigil sessions`, `session`, `replay`,
//! `export`, `report`, `alerts`), with the local spool and ClickHouse behind it. The CLI only
//! sees [`SessionStore`]; which store answers is the configuration's choice, and a test feeds
//! both the same events and compares every answer, so the SQL and the Rust model cannot drift.

use std::{
    collections::{BTreeMap, BTreeSet},
    path::PathBuf,
};

use crate::{
    event::{Event, SessionKey, SessionSelector},
    query::{self, AlertFilter, SessionFilter, SessionSummary, Timeline, WithDamage},
    spool::SpoolError,
};

use super::{ClickHouseConfig, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read the spool: {0}")]
    Spool(#[from] SpoolError),
    #[error(transparent)]
    ClickHouse(#[from] StoreError),
    #[error("cannot start the async runtime for ClickHouse: {0}")]
    Runtime(#[source] std::io::Error),
    #[error("no session {selector} in {store}")]
    NoSuchSession { selector: String, store: String },
    #[error(
        "{count} sessions match {selector} in {store}: {}; name one by its key (host/boot/id), \
         or add --host or --boot",
        candidates.join(", ")
    )]
    Ambiguous {
        selector: String,
        store: String,
        count: usize,
        /// `key (user, first seen)` of each, oldest first.
        candidates: Vec<String>,
    },
}

/// Where the query commands read. Listing order is the same for every store: oldest first,
/// ties broken by the session key.
pub trait SessionStore {
    /// What is read, for messages: `the spool at /var/lib/vigil/spool`.
    fn source(&self) -> String;

    fn sessions(
        &self,
        filter: &SessionFilter,
    ) -> Result<WithDamage<Vec<SessionSummary>>, ReadError>;

    fn alerts(&self, filter: &AlertFilter) -> Result<WithDamage<Vec<Event>>, ReadError>;

    /// The events of each of `keys`, in time order.
    fn events_of(
        &self,
        keys: &BTreeSet<SessionKey>,
    ) -> Result<WithDamage<BTreeMap<SessionKey, Vec<Event>>>, ReadError>;

    /// The one session `selector` names: an error naming the candidates when it names several.
    fn resolve(&self, selector: &SessionSelector) -> Result<SessionSummary, ReadError> {
        let filter = SessionFilter {
            session: Some(selector.clone()),
            ..Default::default()
        };
        let (mut found, _) = self.sessions(&filter)?;
        match found.len() {
            0 => Err(ReadError::NoSuchSession {
                selector: selector.to_string(),
                store: self.source(),
            }),
            1 => Ok(found.remove(0)),
            count => Err(ReadError::Ambiguous {
                selector: selector.to_string(),
                store: self.source(),
                count,
                candidates: found
                    .iter()
                    .map(|s| {
                        format!(
                            "{} ({}, {})",
                            s.key.escape_debug(),
                            s.user
                                .clone()
                                .unwrap_or_else(|| format!("uid {}", s.loginuid))
                                .escape_debug(),
                            s.first
                        )
                    })
                    .collect(),
            }),
        }
    }

    /// One session, whole: its summary, its events in time order, the damage met reading them.
    fn timeline(&self, selector: &SessionSelector) -> Result<Timeline, ReadError> {
        let summary = self.resolve(selector)?;
        let key = summary.session_key();
        let (mut by_key, damage) = self.events_of(&BTreeSet::from([key.clone()]))?;
        Ok(Timeline {
            summary: Some(summary),
            events: by_key.remove(&key).unwrap_or_default(),
            damage,
        })
    }
}

/// The local spool: this host's events, every boot it outlived.
pub struct SpoolStore {
    pub dir: PathBuf,
}

impl SessionStore for SpoolStore {
    fn source(&self) -> String {
        format!("the spool at {}", self.dir.display())
    }

    fn sessions(
        &self,
        filter: &SessionFilter,
    ) -> Result<WithDamage<Vec<SessionSummary>>, ReadError> {
        Ok(query::sessions(&self.dir, filter)?)
    }

    fn alerts(&self, filter: &AlertFilter) -> Result<WithDamage<Vec<Event>>, ReadError> {
        Ok(query::alerts(&self.dir, filter)?)
    }

    fn events_of(
        &self,
        keys: &BTreeSet<SessionKey>,
    ) -> Result<WithDamage<BTreeMap<SessionKey, Vec<Event>>>, ReadError> {
        Ok(query::events_of_sessions(&self.dir, keys)?)
    }
}

/// A fleet's ClickHouse. One runtime for the whole invocation, driving the async client.
pub struct ClickHouseStore {
    cfg: ClickHouseConfig,
    runtime: tokio::runtime::Runtime,
}

impl ClickHouseStore {
    pub fn new(cfg: ClickHouseConfig) -> Result<Self, ReadError> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(ReadError::Runtime)?;
        Ok(ClickHouseStore { cfg, runtime })
    }
}

impl ClickHouseStore {
    /// Records of `host` (or any) in quarantine: they may belong to what was asked for.
    fn quarantine_damage(&self, host: Option<&str>) -> Result<Vec<Event>, ReadError> {
        Ok(self
            .runtime
            .block_on(super::quarantine_damage(&self.cfg, host))?)
    }
}

impl SessionStore for ClickHouseStore {
    fn source(&self) -> String {
        format!("ClickHouse database {}", self.cfg.database)
    }

    fn sessions(
        &self,
        filter: &SessionFilter,
    ) -> Result<WithDamage<Vec<SessionSummary>>, ReadError> {
        let list = self.runtime.block_on(super::sessions(&self.cfg, filter))?;
        let damage = self.quarantine_damage(filter.host.as_deref())?;
        Ok((list, damage))
    }

    fn alerts(&self, filter: &AlertFilter) -> Result<WithDamage<Vec<Event>>, ReadError> {
        let (alerts, mut damage) = self.runtime.block_on(super::alerts(&self.cfg, filter))?;
        damage.extend(self.quarantine_damage(filter.host.as_deref())?);
        Ok((alerts, damage))
    }

    fn events_of(
        &self,
        keys: &BTreeSet<SessionKey>,
    ) -> Result<WithDamage<BTreeMap<SessionKey, Vec<Event>>>, ReadError> {
        let mut by_key = BTreeMap::new();
        let mut damage = Vec::new();
        for key in keys {
            let (events, lost) = self
                .runtime
                .block_on(super::session_events(&self.cfg, key))?;
            damage.extend(lost);
            by_key.insert(key.clone(), events);
        }
        let hosts: BTreeSet<&str> = keys.iter().map(|k| k.host.as_ref()).collect();
        for host in hosts {
            damage.extend(self.quarantine_damage(Some(host))?);
        }
        Ok((by_key, damage))
    }
}
