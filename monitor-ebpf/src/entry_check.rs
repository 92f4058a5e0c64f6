//! The `entry-check` object: every program of the daemon's object (src/main.rs) and the twins
//! of its fexit programs (src/entry_twins.rs), for the unit test that puts them through the
//! verifier where the kernel refuses fexit. Never embedded in the daemon.
#![no_std]
#![no_main]
#![allow(internal_features)]
#![feature(core_intrinsics)]

include!("programs.rs");

mod entry_twins;
