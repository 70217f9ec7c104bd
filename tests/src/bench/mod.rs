//! The benchmarks behind `cargo xtask bench` (issue #9): what portguard costs per packet against
//! a program that does nothing, how that cost grows with the policy, and how many packets per
//! second a veth receiver handles with portguard, with the `XDP_DROP` limit, and with nftables.

pub(crate) mod datapath;
pub(crate) mod plot;
pub(crate) mod probe;
pub(crate) mod reload;
pub(crate) mod report;
pub(crate) mod scale;
pub(crate) mod sys;
pub(crate) mod throughput;
