//! `classify::Env` over the program's maps and the kernel's socket lookup helpers.

use core::{mem::MaybeUninit, ptr};

use aya_ebpf::{
    bindings::{
        BPF_F_CURRENT_NETNS, BPF_FIB_LKUP_RET_FRAG_NEEDED, BPF_FIB_LKUP_RET_NO_NEIGH,
        BPF_FIB_LKUP_RET_SUCCESS, BPF_FIB_LKUP_RET_UNSUPP_LWT, bpf_fib_lookup, bpf_sock,
        bpf_sock_tuple, xdp_md,
    },
    helpers::generated::{
        bpf_fib_lookup as fib_lookup, bpf_ktime_get_coarse_ns, bpf_sk_lookup_udp, bpf_sk_release,
        bpf_skc_lookup_tcp,
    },
    maps::lpm_trie::Key,
    programs::XdpContext,
};
use portguard_common::{
    classify::Env,
    config::Config,
    image::{self, CHUNK_WORDS, Chunk, SRC4_DIR, TRIE_KEY_BYTES, TRIE_TAG_BITS, Words},
    maps::{
        FragKey, LOCAL_FAST_V4, LOCAL_FAST_V6, LOCAL_OVERFLOW, LocalSet, MacKey, UDP_OUT_TTL_NS,
        UdpOutKey,
    },
    packet::{Family, Packet, ipproto},
};

use crate::{
    maps::{
        FRAGS, HOST_MACS, LOCAL_FAST, LOCAL_V4, LOCAL_V6, POLICY, SRC_TRIE0, SRC_TRIE1, UDP_OUT,
    },
    mem,
};

/// `AF_INET` and `AF_INET6`, the families `bpf_fib_lookup` takes.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;

/// Size of `bpf_fib_lookup`'s parameter block as the helper takes it (64 bytes).
#[expect(
    clippy::cast_possible_wrap,
    clippy::cast_possible_truncation,
    reason = "a 64-byte struct"
)]
const FIB_PARAMS_LEN: i32 = size_of::<bpf_fib_lookup>() as i32;

/// `TCP_LISTEN` in `bpf_sock.state` (`include/net/tcp_states.h`).
const TCP_LISTEN: u32 = 10;

/// The socket lookup helpers' `netns` argument for "the namespace of the receiving device":
/// `BPF_F_CURRENT_NETNS` (-1) sign-extended to 64 bits.
const CURRENT_NETNS: u64 = (BPF_F_CURRENT_NETNS as i64).cast_unsigned();

/// The live generation of the policy image: where its chunks start in `POLICY`.
#[derive(Clone, Copy)]
pub(crate) struct Generation {
    /// Chunk index of the generation's first chunk (its config).
    base: u32,
    /// 0 or 1: which trie goes with it.
    live: u32,
}

impl Words for Generation {
    #[inline(always)]
    fn word(&self, at: u32) -> u32 {
        // A chunk past the array's end reads as zero: no class, no rule (fail closed).
        POLICY
            .get(self.base.wrapping_add(at >> 4))
            .map_or(0, |c| c.0[(at & (CHUNK_WORDS - 1)) as usize])
    }
}

pub(crate) struct XdpEnv<'a> {
    ctx: &'a XdpContext,
    /// The live generation's config, read in place: the classifier and the action both need it.
    pub(crate) config: &'static Config,
    policy: Generation,
}

/// What a missing config chunk reads as (it cannot be missing from a well-formed array):
/// enforce, nothing open.
static NO_CONFIG: Config = Config {
    policy_version: 0,
    mode: 0,
    broadcast: 0,
    non_ip: 0,
    not_for_host: 0,
    port_classes: 0,
    audit_rate: 0,
    audit_burst: 0,
    diagnostics: 0,
    probe_ifindex: 0,
    src4: 0,
    groups_at: 0,
    ports_at: 0,
    decisions_at: 0,
    pad: 0,
};

impl<'a> XdpEnv<'a> {
    #[inline(always)]
    pub(crate) fn new(ctx: &'a XdpContext) -> Self {
        // The control chunk says which generation is live; everything after is read from that
        // one generation, so a packet is judged wholly by the old or wholly by the new tables.
        // Missing chunks cannot happen with a well-formed array; they read as an all-zero
        // config (enforce, nothing open).
        let (live, half) = POLICY.get(0).map_or((0, 0), |c| (c.0[0] & 1, c.0[1]));
        let policy = Generation {
            base: 1 + live * half,
            live,
        };
        let config = POLICY.get(policy.base).map_or(&NO_CONFIG, Chunk::as_config);
        XdpEnv {
            ctx,
            config,
            policy,
        }
    }
}

fn v4(addr: &[u8; 16]) -> [u8; 4] {
    [addr[0], addr[1], addr[2], addr[3]]
}

/// The two halves of an address as the `LocalSet` stores them.
#[inline(always)]
fn halves(addr: &[u8; 16]) -> [u64; 2] {
    // SAFETY: [u8; 16] and [u64; 2] have the same size; any bytes are valid u64s.
    unsafe { core::mem::transmute::<[u8; 16], [u64; 2]>(*addr) }
}

/// The live `LocalSet`, read from the entry entry 0 names.
#[inline(always)]
fn local_set() -> Option<&'static LocalSet> {
    let first = LOCAL_FAST.get(0)?;
    if first.live == 0 {
        Some(first)
    } else {
        LOCAL_FAST.get(1)
    }
}

impl Env for XdpEnv<'_> {
    #[inline(always)]
    fn config(&self) -> &Config {
        self.config
    }

    #[inline(always)]
    fn local(&self, family: Family, addr: &[u8; 16]) -> Option<u32> {
        let set = local_set();
        match family {
            Family::V4 => {
                let a = u32::from_ne_bytes(v4(addr));
                if let Some(set) = set
                    && set.n4 != LOCAL_OVERFLOW
                {
                    for i in 0..LOCAL_FAST_V4 {
                        // Entries are filled from the first; the first unused one has
                        // kind 0 and ends the list. Not `i >= n4`: LLVM turns that into a
                        // trip count read from the map, which 6.1's verifier cannot bound.
                        let kind = set.v4_kind[i];
                        if kind == 0 {
                            return None;
                        }
                        if set.v4[i] == a {
                            return Some(u32::from(kind));
                        }
                    }
                    return None;
                }
                // SAFETY: the value is a plain u32 copied out at once.
                unsafe { LOCAL_V4.get(&v4(addr)).copied() }
            }
            Family::V6 => {
                let a = halves(addr);
                if let Some(set) = set
                    && set.n6 != LOCAL_OVERFLOW
                {
                    for i in 0..LOCAL_FAST_V6 {
                        // Entries are filled from the first; the first unused one has
                        // kind 0 and ends the list. Not `i >= n6`: LLVM turns that into a
                        // trip count read from the map, which 6.1's verifier cannot bound.
                        let kind = set.v6_kind[i];
                        if kind == 0 {
                            return None;
                        }
                        if set.v6[i] == a {
                            return Some(u32::from(kind));
                        }
                    }
                    return None;
                }
                // SAFETY: the value is a plain u32 copied out at once.
                unsafe { LOCAL_V6.get(addr).copied() }
            }
        }
    }

    #[inline(always)]
    fn src_class(&self, family: Family, addr: &[u8; 16]) -> u32 {
        if family == Family::V4 && self.config.src4 == SRC4_DIR {
            return image::src4_class(
                &self.policy,
                self.config.groups_at,
                u32::from_be_bytes(v4(addr)),
            );
        }
        src_trie(self.policy.live, family, addr)
    }

    #[inline(always)]
    fn port_class(&self, index: u32) -> u32 {
        image::u16_at(&self.policy, self.config.ports_at, index)
    }

    #[inline(always)]
    fn decision(&self, index: u32) -> u32 {
        image::u16_at(&self.policy, self.config.decisions_at, index)
    }

    #[inline(always)]
    fn host_mac(&self, mac: &[u8; 6]) -> bool {
        let key = MacKey {
            mac: *mac,
            pad: [0; 2],
        };
        // SAFETY: only the presence of the entry is read.
        unsafe { HOST_MACS.get(&key).is_some() }
    }

    #[inline(always)]
    fn fib_local(&self, p: &Packet) -> bool {
        fib_local(self.ctx.ctx, p)
    }

    #[inline(always)]
    fn frag_get(&self, key: &FragKey) -> Option<u32> {
        // SAFETY: the value is a plain u32 copied out at once.
        unsafe { FRAGS.get(key).copied() }
    }

    #[inline(always)]
    fn frag_put(&self, key: &FragKey, verdict: u32) {
        // A full LRU evicts the oldest datagram; its later fragments are then dropped and counted.
        let _ = FRAGS.insert(key, &verdict, 0);
    }

    #[inline(always)]
    fn owns_flow(&self, p: &Packet) -> bool {
        let mut slot = MaybeUninit::uninit();
        let tuple = tuple(&mut slot, p.family, &p.src, p.sport, &p.dst, p.dport);
        sk_owns(self.ctx.ctx, tuple, p.family == Family::V6, p.proto)
    }

    #[inline(always)]
    fn owns_quoted(&self, p: &Packet) -> bool {
        let mut slot = MaybeUninit::uninit();
        let tuple = tuple(
            &mut slot,
            p.family,
            &p.quote_remote,
            p.quote_rport,
            &p.dst,
            p.quote_lport,
        );
        sk_owns(self.ctx.ctx, tuple, p.family == Family::V6, p.quote_proto)
    }
}

/// The source class of `addr` in generation `live`'s trie: IPv6, or a huge IPv4 prefix set.
#[inline(always)]
fn src_trie(live: u32, family: Family, addr: &[u8; 16]) -> u32 {
    let bits = if family == Family::V4 { 32 } else { 128 };
    let key = Key::new(TRIE_TAG_BITS + bits, image::trie_key(family as u8, addr));
    let class = if live == 0 {
        SRC_TRIE0.get(&key)
    } else {
        SRC_TRIE1.get(&key)
    };
    class.copied().unwrap_or(0)
}

const _: () = assert!(TRIE_KEY_BYTES == 20);

/// Whether the kernel would deliver `p` to this host (or drop it) rather than forward it: asks
/// the routing table through `bpf_fib_lookup` (4.18) as the packet's ingress interface. Only
/// frames for this host's MACs (or for groups) whose address the local map does not know get
/// here: routed traffic, an address added a moment ago, one on `lo`. Only a route the kernel
/// would forward on counts as not local; every other answer (local, broadcast, no route,
/// forwarding disabled on the interface: then the kernel forwards nothing) is judged by the
/// rules.
#[inline(always)]
fn fib_local(md: *mut xdp_md, p: &Packet) -> bool {
    let mut slot = MaybeUninit::<bpf_fib_lookup>::uninit();
    // SAFETY: an all-zero parameter block is valid; the fields used are filled in below.
    let params = unsafe { mem::zeroed(&mut slot) };
    // SAFETY: reading the context's ingress interface index, a plain field.
    params.ifindex = unsafe { (*md).ingress_ifindex };
    params.l4_protocol = p.proto;
    params.sport = p.sport.to_be();
    params.dport = p.dport.to_be();
    // SAFETY: writing the address members of the parameter union, by family.
    unsafe {
        match p.family {
            Family::V4 => {
                params.family = AF_INET;
                params.__bindgen_anon_3.ipv4_src = u32::from_ne_bytes(v4(&p.src));
                params.__bindgen_anon_4.ipv4_dst = u32::from_ne_bytes(v4(&p.dst));
            }
            Family::V6 => {
                params.family = AF_INET6;
                params.__bindgen_anon_3.ipv6_src =
                    core::mem::transmute::<[u8; 16], [u32; 4]>(p.src);
                params.__bindgen_anon_4.ipv6_dst =
                    core::mem::transmute::<[u8; 16], [u32; 4]>(p.dst);
            }
        }
    }
    // SAFETY: helper available to XDP since 4.18; params is a valid block of its size.
    let rc = unsafe { fib_lookup(md.cast(), &raw mut *params, FIB_PARAMS_LEN, 0) };
    !matches!(
        u32::try_from(rc),
        Ok(BPF_FIB_LKUP_RET_SUCCESS
            | BPF_FIB_LKUP_RET_NO_NEIGH
            | BPF_FIB_LKUP_RET_FRAG_NEEDED
            | BPF_FIB_LKUP_RET_UNSUPP_LWT)
    )
}

/// The lookup tuple of an incoming packet `remote:rport -> local:lport`, in network order.
#[inline(always)]
/// Built in the caller's `slot`: a tuple returned by value is copied, and LLVM makes a call of
/// `memset` of the copy (see `mem`).
fn tuple<'a>(
    slot: &'a mut MaybeUninit<bpf_sock_tuple>,
    family: Family,
    remote: &[u8; 16],
    rport: u16,
    local: &[u8; 16],
    lport: u16,
) -> &'a mut bpf_sock_tuple {
    // SAFETY: an all-zero tuple is a valid value of this plain-data union.
    let tuple = unsafe { mem::zeroed(slot) };
    match family {
        Family::V4 => {
            // SAFETY: writing plain integers into the union's IPv4 member.
            let t = unsafe { &mut tuple.__bindgen_anon_1.ipv4 };
            t.saddr = u32::from_ne_bytes(v4(remote));
            t.daddr = u32::from_ne_bytes(v4(local));
            t.sport = rport.to_be();
            t.dport = lport.to_be();
        }
        Family::V6 => {
            // SAFETY: writing plain integers into the union's IPv6 member.
            let t = unsafe { &mut tuple.__bindgen_anon_1.ipv6 };
            // SAFETY: [u8; 16] and [u32; 4] have the same size; byte order is kept.
            t.saddr = unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*remote) };
            // SAFETY: as above.
            t.daddr = unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(*local) };
            t.sport = rport.to_be();
            t.dport = lport.to_be();
        }
    }
    tuple
}

/// Whether the socket table has a connected socket for `tuple` (see `Env::owns_flow`).
/// Only denied packets get here.
#[inline(always)]
fn sk_owns(md: *mut xdp_md, tuple: &mut bpf_sock_tuple, v6: bool, proto: u8) -> bool {
    // SAFETY: the union's members are plain data; taking their size only.
    let size = unsafe {
        if v6 {
            size_of_val(&tuple.__bindgen_anon_1.ipv6)
        } else {
            size_of_val(&tuple.__bindgen_anon_1.ipv4)
        }
    } as u32;
    match proto {
        ipproto::TCP => tcp_owns(md, tuple, size),
        ipproto::UDP => udp_owns(md, tuple, size),
        _ => false,
    }
}

/// Whether a TCP connection of this host, in any state but LISTEN, has `tuple`.
///
/// `bpf_skc_lookup_tcp` (5.2), not `bpf_sk_lookup_tcp`: the latter returns full sockets only,
/// and a connection this host closed first lives on as a timewait socket (`TIME_WAIT`, and
/// `FIN_WAIT2` once the application has closed it). The peer's FIN and retransmissions would
/// be dropped, leaving the peer's socket stuck in `LAST_ACK`. Request sockets (a handshake
/// whose SYN the listener accepted) count too: the SYN already passed.
///
/// Kept apart from [`udp_owns`]: the verifier refuses one load instruction used with two
/// pointer types (`sock_common` here, `sock` there), which is what LLVM may make of a shared
/// field read.
#[inline(always)]
fn tcp_owns(md: *mut xdp_md, tuple: &mut bpf_sock_tuple, size: u32) -> bool {
    // SAFETY: helper available to XDP since 5.2; the returned socket is released below.
    let sk: *mut bpf_sock = unsafe { bpf_skc_lookup_tcp(md.cast(), tuple, size, CURRENT_NETNS, 0) };
    if sk.is_null() {
        return false;
    }
    // SAFETY: sk is a valid sock_common reference until released; `state` is one of the
    // fields a sock_common has.
    let state = unsafe { ptr::read(&raw const (*sk).state) };
    // SAFETY: releasing the reference taken by the lookup, exactly once.
    unsafe { bpf_sk_release(sk.cast()) };
    state != TCP_LISTEN
}

/// Whether `tuple` answers UDP this host sent: a connected UDP socket of this host has it, or
/// the egress recorder saw the host send a datagram on it in the last 180 s. Unconnected
/// sockets (servers bound to a port, and clients using `sendto`) have no peer in the socket
/// table; only the recorder can tell a client's answer from a datagram to a server.
#[inline(always)]
fn udp_owns(md: *mut xdp_md, tuple: &mut bpf_sock_tuple, size: u32) -> bool {
    // SAFETY: helper available to XDP since 5.2; the returned socket is released below.
    let sk: *mut bpf_sock = unsafe { bpf_sk_lookup_udp(md.cast(), tuple, size, CURRENT_NETNS, 0) };
    if !sk.is_null() {
        // SAFETY: sk is a valid socket reference until released.
        let dst_port = unsafe { ptr::read(&raw const (*sk).dst_port) };
        // SAFETY: releasing the reference taken by the lookup, exactly once.
        unsafe { bpf_sk_release(sk.cast()) };
        if dst_port != 0 {
            return true;
        }
    }
    sent_by_host(tuple, size == V6_TUPLE_SIZE)
}

/// Size of the IPv6 member of `bpf_sock_tuple`: how `udp_owns` tells the families apart.
const V6_TUPLE_SIZE: u32 = 36;

/// Whether the egress recorder saw this host send UDP on `tuple` (reversed) recently.
#[inline(always)]
fn sent_by_host(tuple: &bpf_sock_tuple, v6: bool) -> bool {
    let mut slot = MaybeUninit::<UdpOutKey>::uninit();
    // SAFETY: UdpOutKey is plain integers and byte arrays.
    let key = unsafe { mem::zeroed(&mut slot) };
    // SAFETY: reading the union member the caller filled in, by its family.
    unsafe {
        if v6 {
            let t = &tuple.__bindgen_anon_1.ipv6;
            key.remote = core::mem::transmute::<[u32; 4], [u8; 16]>(t.saddr);
            key.local = core::mem::transmute::<[u32; 4], [u8; 16]>(t.daddr);
            key.rport = u16::from_be(t.sport);
            key.lport = u16::from_be(t.dport);
            key.family = 6;
        } else {
            let t = &tuple.__bindgen_anon_1.ipv4;
            let (remote, local) = (t.saddr.to_ne_bytes(), t.daddr.to_ne_bytes());
            for i in 0..4 {
                key.remote.as_mut_ptr().add(i).write_volatile(remote[i]);
                key.local.as_mut_ptr().add(i).write_volatile(local[i]);
            }
            key.rport = u16::from_be(t.sport);
            key.lport = u16::from_be(t.dport);
            key.family = 4;
        }
    }
    // SAFETY: the value is read at once, before anything else can change the LRU entry.
    let Some(sent) = (unsafe { UDP_OUT.get(key) }).copied() else {
        return false;
    };
    // SAFETY: plain helper call (base helper, Linux 5.11).
    let now = unsafe { bpf_ktime_get_coarse_ns() };
    now.saturating_sub(sent) < UDP_OUT_TTL_NS
}

const _: () = assert!(size_of::<bpf_sock_tuple>() >= 36);
const _: () = assert!(V6_TUPLE_SIZE == 36);
