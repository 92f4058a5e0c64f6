//! The end-to-end tests on the real kernel, one module per area, in one test binary: nineteen
//! binaries linked the same dependencies nineteen times, which CI paid for in every run.
//! Run one area with `cargo test --release -p vigil-e2e -- --test-threads=1 capture::`.

mod baseline;
mod boots;
mod capture;
mod clickhouse;
mod containers;
mod detect;
mod evasion;
mod fold;
mod hostile;
mod logins;
mod migrate;
mod operations;
mod quarantine;
mod redaction;
mod replay;
mod respond;
mod sessions;
mod spool;
mod tamper;
mod trail;
