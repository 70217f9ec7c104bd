//! Audit events: what the XDP program reports about a denied (or would-deny) packet.

/// One denied packet, written to the `AUDIT` ring buffer (rate-limited per CPU).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Event {
    /// `bpf_ktime_get_ns` at the decision (`CLOCK_MONOTONIC`).
    pub time_ns: u64,
    /// Source address (IPv4 in the first 4 bytes).
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Ingress interface index.
    pub ifindex: u32,
    /// [`crate::reason::Reason`] discriminant.
    pub reason: u32,
    /// Rule slot + 1 of the rule that opens this port to other sources, 0 = none.
    pub hint: u32,
    /// Frame length.
    pub len: u32,
    /// Source port, or ICMP type.
    pub sport: u16,
    /// Destination port, or ICMP code.
    pub dport: u16,
    /// Innermost VLAN id, 0 = untagged.
    pub vlan: u16,
    /// IP protocol (0 when the packet is not IP).
    pub proto: u8,
    /// 4, 6, or 0 for non-IP.
    pub family: u8,
    /// TCP flags.
    pub tcp_flags: u8,
    /// 1 when the policy is in audit mode and the packet was passed.
    pub would_deny: u8,
    /// Explicit padding.
    pub pad: [u8; 6],
}

/// Per-CPU audit rate limiter and loss accounting, in the `AUDIT_STATE` per-CPU array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AuditState {
    /// Tokens left, scaled by 2^20 so refill needs no division.
    pub tokens: u64,
    /// Time of the last refill.
    pub last_ns: u64,
    /// Events written to the ring.
    pub emitted: u64,
    /// Denied packets not reported because the bucket was empty.
    pub suppressed: u64,
    /// Events dropped because the ring buffer was full.
    pub lost: u64,
}

const _: () = assert!(size_of::<Event>() == 72);
const _: () = assert!(size_of::<AuditState>() == 40);

#[cfg(feature = "user")]
mod pod {
    use super::{AuditState, Event};

    // SAFETY: repr(C), integers and byte arrays only, no implicit padding (asserted above).
    unsafe impl aya::Pod for Event {}
    // SAFETY: as above.
    unsafe impl aya::Pod for AuditState {}
}
