//! Count the outcome, report denials to the audit ring, and return the XDP action.

use aya_ebpf::{
    bindings::xdp_action::{XDP_DROP, XDP_PASS},
    helpers::generated::{bpf_ktime_get_coarse_ns, bpf_ktime_get_ns, bpf_xdp_get_buff_len},
    programs::XdpContext,
};
use portguard_common::{
    classify::Outcome,
    config::{DIAG_UNPARSED, MODE_AUDIT},
    event::Event,
    packet::{Kind, L4Kind, Packet},
    reason::Reason,
};

use crate::{
    env::XdpEnv,
    maps::{AUDIT, AUDIT_STATE, REASON_STATS, RULE_STATS},
    mem,
};

/// One audit event costs this many tokens; tokens are scaled so refill needs no division.
const TOKEN: u64 = 1 << 20;
/// Refill is capped at this much elapsed time, so `elapsed * rate` cannot overflow.
const MAX_REFILL_NS: u64 = 10_000_000_000;

/// The program's own diagnostic message (aya-log), for frames the parser gave up on: rare by
/// construction, and only when the site turns diagnostics on.
#[inline(always)]
fn diagnose(ctx: &XdpContext, reason: u32, len: u64) {
    aya_log_ebpf::warn!(
        ctx,
        "portguard: frame of {} bytes not parsed (reason {})",
        len,
        reason
    );
}

#[inline(always)]
pub(crate) fn act(ctx: &XdpContext, env: &XdpEnv<'_>, parsed: &Packet, outcome: Outcome) -> u32 {
    // SAFETY: helper available to XDP since 5.18 (the same kernels that have multi-buffer XDP).
    let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) };
    if ctx.ingress_ifindex() as u32 == env.config.probe_ifindex {
        // The daemon's self-test: the verdict is the program's, the counts are not the host's.
        count(&REASON_STATS, Reason::SelfTest as u32, len);
        return verdict(env, &outcome);
    }
    match outcome {
        Outcome::Allow { slot } => {
            count(&RULE_STATS, slot, len);
            XDP_PASS
        }
        Outcome::Pass(reason) => {
            count(&REASON_STATS, reason as u32, len);
            XDP_PASS
        }
        Outcome::Deny { reason, .. } => {
            count(&REASON_STATS, reason as u32, len);
            if env.config.diagnostics == DIAG_UNPARSED
                && matches!(reason, Reason::Malformed | Reason::TooDeep)
            {
                diagnose(ctx, reason as u32, len);
            }
            report(ctx, env, parsed, outcome, len);
            if env.config.mode == MODE_AUDIT {
                count(&REASON_STATS, Reason::AuditPassed as u32, len);
                XDP_PASS
            } else {
                XDP_DROP
            }
        }
    }
}

/// The XDP action for `outcome` in the policy's mode.
#[inline(always)]
fn verdict(env: &XdpEnv<'_>, outcome: &Outcome) -> u32 {
    match outcome {
        Outcome::Deny { .. } if env.config.mode != MODE_AUDIT => XDP_DROP,
        _ => XDP_PASS,
    }
}

#[inline(always)]
fn count(
    map: &aya_ebpf::maps::PerCpuArray<portguard_common::maps::Counters>,
    index: u32,
    len: u64,
) {
    if let Some(c) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, only this CPU writes it, and XDP runs with preemption off.
        unsafe {
            (*c).packets += 1;
            (*c).bytes += len;
        }
    }
}

/// Emit an audit event if this CPU's token bucket allows; count what is suppressed or lost.
/// Denied path only; the event is written in place in the ring.
#[inline(always)]
fn report(ctx: &XdpContext, env: &XdpEnv<'_>, parsed: &Packet, outcome: Outcome, len: u64) {
    emit(ctx, env, parsed, outcome, len);
    // The verifier refuses a function that returns with one of the stack pointers it was
    // passed still in its return register, which LLVM may leave there when the function
    // returns nothing: give the register a plain value on the way out.
    // SAFETY: writes r0 only, which a function returning nothing leaves undefined anyway.
    #[cfg(target_arch = "bpf")]
    unsafe {
        core::arch::asm!("r0 = 0", out("r0") _, options(nomem, nostack, preserves_flags));
    };
}

/// The body of [`report`].
#[inline(always)]
fn emit(ctx: &XdpContext, env: &XdpEnv<'_>, parsed: &Packet, outcome: Outcome, len: u64) {
    let cfg = env.config;
    let Outcome::Deny { reason, hint } = outcome else {
        return;
    };
    if cfg.audit_rate == 0 {
        return;
    }
    let Some(st) = AUDIT_STATE.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: per-CPU state, only this CPU touches it.
    let st = unsafe { &mut *st };
    // The bucket runs on the coarse clock (the timekeeper's last tick, no clock-source read):
    // a denied packet that is only counted must not pay for a precise timestamp, which costs
    // tens of ns in a VM. Tick resolution (a few ms) is plenty for refilling a rate limit.
    // SAFETY: plain helper call (base helper, Linux 5.11).
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    let elapsed = now.saturating_sub(st.last_ns).min(MAX_REFILL_NS);
    st.last_ns = now;
    // rate events/s = rate * TOKEN per 1e9 ns ~= elapsed * rate * 2^20 / 2^30 (5% generous).
    let cap = u64::from(cfg.audit_burst.max(1)) * TOKEN;
    st.tokens = (st.tokens + ((elapsed * u64::from(cfg.audit_rate)) >> 10)).min(cap);
    if st.tokens < TOKEN {
        st.suppressed += 1;
        return;
    }
    st.tokens -= TOKEN;
    let Some(mut entry) = AUDIT.reserve::<Event>(0) else {
        st.lost += 1;
        return;
    };
    // SAFETY: the reserved entry is ours until submitted; every field is written below.
    let ev = unsafe { &mut *entry.as_mut_ptr() };
    // SAFETY: plain helper call; the precise time only for events actually written.
    ev.time_ns = unsafe { bpf_ktime_get_ns() };
    ev.ifindex = ctx.ingress_ifindex() as u32;
    ev.reason = reason as u32;
    ev.hint = hint;
    ev.len = len as u32;
    ev.would_deny = u8::from(cfg.mode == MODE_AUDIT);
    // Each field written once, from values chosen first: constant zero stores to neighbouring
    // fields would be merged into a call of `memset` (see `mem`).
    let (mut proto, mut family, mut vlan) = (0, 0, 0);
    let (mut sport, mut dport, mut tcp_flags) = (0, 0, 0);
    if parsed.kind == Kind::Ip {
        let p = parsed;
        mem::copy16(&mut ev.src, &p.src);
        mem::copy16(&mut ev.dst, &p.dst);
        proto = p.proto;
        family = p.family as u8;
        vlan = p.vlan;
        match p.l4 {
            L4Kind::Ports => {
                sport = p.sport;
                dport = p.dport;
                tcp_flags = p.tcp_flags;
            }
            L4Kind::Icmp => {
                sport = u16::from(p.icmp_type);
                dport = u16::from(p.icmp_code);
            }
            L4Kind::None | L4Kind::Other => {}
        }
    } else {
        // SAFETY: the fields are plain bytes inside the reserved entry.
        unsafe {
            mem::zero_bytes(ev.src.as_mut_ptr(), 16);
            mem::zero_bytes(ev.dst.as_mut_ptr(), 16);
        }
    }
    // SAFETY: as above.
    unsafe { mem::zero_bytes(ev.pad.as_mut_ptr(), 6) };
    ev.proto = proto;
    ev.family = family;
    ev.vlan = vlan;
    ev.sport = sport;
    ev.dport = dport;
    ev.tcp_flags = tcp_flags;
    entry.submit(0);
    st.emitted += 1;
}
