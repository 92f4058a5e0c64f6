//! Vigil's kernel programs.
//!
//! One module per event source; every program asks [`scope::check`] first, so processes outside the
//! monitored sessions pay one policy lookup, one task read and one per-CPU counter increment, and
//! emit nothing. Records follow the schema in `vigil-common`.
#![no_std]
#![no_main]
// atomic_xadd: the bpf target has no core::sync::atomic (max atomic width 0), but the instruction
// set has atomic add, which the intrinsic lowers to.
#![allow(internal_features)]
#![feature(core_intrinsics)]

include!("programs.rs");
