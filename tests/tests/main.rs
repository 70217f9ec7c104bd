//! portguard's privileged integration tests, one module per subject, in one binary. The
//! harness they share (pin directories, namespaces, veth pairs, frames, addresses, table rules,
//! the daemon runner) is this crate's library.
//!
//! They load XDP programs and create network namespaces: run them as root, through
//! `cargo xtask test [FILTER]` (which runs them two at a time). A module's tests are named
//! `<module>::<test>`, so `cargo xtask test hostile::` runs one module.

mod ansible;
mod attach;
mod audit;
mod bonds;
mod daemon;
mod daemon_audit;
mod datapath;
mod differential;
mod doctor;
mod fail_open;
mod faults;
mod host_safety;
mod hostile;
mod journal;
mod lab;
mod metrics;
mod packages;
mod packaging;
mod prometheus_rules;
mod suggest;
mod tools;
