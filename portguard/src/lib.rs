//! portguard: the documented port matrices of virtualization products, enforced with XDP.
//!
//! Layers, from the top down (nothing imports a layer above it): `cli` (one verb a file) ->
//! `daemon`, `lab` and `suggest` -> `state`, `audit`, `compile`, `lockout`, `doctor` ->
//! `policy`, `ebpf`, `host`, `paths` -> `portguard_common`.

pub mod audit;
pub mod cli;
pub mod compile;
pub mod daemon;
pub mod doctor;
pub mod ebpf;
pub mod host;
pub mod lab;
pub mod lockout;
pub mod paths;
pub mod policy;
pub mod state;
pub mod suggest;

/// An error and its causes on one line, as logs, reports and the state file show them.
#[must_use]
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        out.push_str(": ");
        out.push_str(&c.to_string());
        cause = c.source();
    }
    out
}

/// The compiled XDP object (built by build.rs).
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portguard"));
