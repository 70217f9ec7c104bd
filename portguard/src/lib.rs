//! portguard: the documented port matrices of virtualization products, enforced with XDP.

pub mod audit;
pub mod cli;
pub mod compile;
pub mod daemon;
pub mod ebpf;
pub mod host;
pub mod lab;
pub mod paths;
pub mod policy;
pub mod report;
pub mod stats;

/// The compiled XDP object (built by build.rs).
pub const EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/portguard"));
