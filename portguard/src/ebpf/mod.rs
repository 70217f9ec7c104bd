//! The kernel side, seen from userspace: loading the program with a policy's tables
//! ([`datapath`]), laying tables out for it ([`image`]) and switching them ([`policy`]), the
//! pinned program the interfaces share ([`instance`]), the links that keep it attached
//! ([`links`]), and the counters it keeps ([`counters`]). Each kernel object has one module that
//! opens it.

pub mod counters;
pub mod datapath;
pub mod image;
pub mod instance;
pub mod links;
pub mod policy;
pub mod probe;

pub use datapath::{
    Buffers, DROP_PROGRAM, Datapath, DatapathError, EGRESS_PROGRAM, HostView, NOOP_PROGRAM,
    PROGRAM, SINGLE_BUFFER_PROGRAM, build_id, capacity_for, set_local_addrs, sync_pinned_host,
};
