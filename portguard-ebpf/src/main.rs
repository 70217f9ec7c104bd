//! portguard's XDP program: parse, classify, count, act.
//!
//! One entry point, attached to each protected interface. It judges only what is addressed to
//! this host; frames for guests bridged behind the NIC pass untouched (see `classify`).
#![no_std]
#![no_main]
// Inline asm for BPF is still behind a gate; the BPF build uses build-std, so needs a
// nightly (or RUSTC_BOOTSTRAP) compiler anyway. Used only for a register barrier in parse.rs.
#![feature(asm_experimental_arch)]
// Every function is inlined on purpose, so the program is one BPF function: the verifier rejects
// packet pointers passed into BPF subprograms, and verifiers before Linux 6.4 treat every scalar
// as precise in a program with subprograms, which stops state pruning (Linux 6.1 then gives up
// after a million instructions). `mem` keeps `memset`/`memmove` calls out too; docs/kernels.md
// has the check.
#![expect(
    clippy::inline_always,
    reason = "packet pointers must not cross BPF calls"
)]
// aya-ebpf's map methods take keys by reference on the BPF side; clippy, checking this crate
// for the host, sees a generic that would also take values.
#![expect(
    clippy::needless_borrows_for_generic_args,
    reason = "keys are passed as the BPF map API expects them"
)]

mod act;
mod egress;
mod env;
mod maps;
mod mem;
mod parse;

use aya_ebpf::{
    macros::{classifier, xdp},
    programs::{TcContext, XdpContext},
};
use portguard_common::{classify::classify, packet::Packet};

/// The XDP entry point. `frags`: the program accepts multi-buffer frames, so it can be attached
/// to interfaces with jumbo MTUs (storage and migration networks); headers are read from the
/// first buffer only.
#[xdp(frags)]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the xdp macro's entry signature"
)]
fn portguard(ctx: XdpContext) -> u32 {
    judge(&ctx)
}

/// The same program without multi-buffer support, for kernels before 5.18 (which refuse the
/// `xdp.frags` load flag) or when the admin asks for it (`run --no-xdp-frags`).
#[xdp]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the xdp macro's entry signature"
)]
fn portguard_single(ctx: XdpContext) -> u32 {
    judge(&ctx)
}

/// Parse, classify, count, act.
#[inline(always)]
fn judge(ctx: &XdpContext) -> u32 {
    let mut packet = Packet::EMPTY;
    parse::parse(ctx, &mut packet);
    let env = env::XdpEnv::new(ctx);
    let outcome = classify(&env, &packet);
    act::act(ctx, &env, &packet, outcome)
}

/// A no-op program that passes everything: the baseline of the benchmarks, loaded from the same
/// object so both are built by the same compiler with the same flags.
#[xdp(frags)]
fn portguard_noop(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_PASS
}

/// A no-op program that drops everything: the throughput limit of the benchmarks.
#[xdp(frags)]
fn portguard_drop(_ctx: XdpContext) -> u32 {
    aya_ebpf::bindings::xdp_action::XDP_DROP
}

#[cfg(not(test))]
/// The egress recorder (tc): remembers UDP this host sends, for `Env::owns_flow`. Never drops.
#[classifier]
#[expect(
    clippy::needless_pass_by_value,
    reason = "the classifier macro's entry signature"
)]
fn portguard_egress(ctx: TcContext) -> i32 {
    egress::record(&ctx)
}

#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // A reachable panic becomes an infinite loop, which the verifier rejects: no panic can hide
    // in the data path.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
