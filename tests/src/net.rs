//! Network namespaces and veth pairs for attach-level tests, torn down on drop.

use std::{
    fs::File,
    net::{IpAddr, SocketAddr, UdpSocket},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::Command,
    thread,
    time::Duration,
};

use aya::programs::{SchedClassifier, TcAttachType};

use crate::unique;

/// Run `ip` with these arguments; panics with the command and its error output on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip(8)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A network namespace, deleted on drop (with every device inside it).
#[derive(Debug)]
pub struct Netns {
    /// Its name under /run/netns.
    pub name: String,
}

impl Netns {
    /// A new namespace with loopback up.
    #[must_use]
    pub fn new() -> Self {
        let name = unique("pgns");
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a command inside the namespace, panicking on failure.
    pub fn exec(&self, cmd: &[&str]) {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec");
        assert!(
            out.status.success(),
            "in {}: {}: {}",
            self.name,
            cmd.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Run a command inside the namespace; its output, whatever the exit status.
    #[must_use]
    pub fn output(&self, cmd: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name])
            .args(cmd)
            .output()
            .expect("ip netns exec")
    }

    /// Run `f` on a thread that has entered this namespace (sockets it opens live there).
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path);
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    /// The MAC address of `dev` in this namespace.
    #[must_use]
    pub fn mac(&self, dev: &str) -> [u8; 6] {
        let out = self.output(&["cat", &format!("/sys/class/net/{dev}/address")]);
        let text = String::from_utf8_lossy(&out.stdout);
        let mut m = [0u8; 6];
        for (i, part) in text.trim().split(':').enumerate().take(6) {
            m[i] = u8::from_str_radix(part, 16).expect("hex MAC address");
        }
        m
    }

    /// Spawn `f` on a thread inside this namespace without waiting.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

impl Default for Netns {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// The device of [`KnownRoutes`]'s forwarded prefixes.
pub const FORWARD_DEV: &str = "pgfwd";
/// IPv4 prefix a [`KnownRoutes`] namespace forwards (out of [`FORWARD_DEV`]).
pub const FORWARDED_V4: ([u8; 4], u8) = ([198, 19, 200, 0], 24);
/// IPv6 prefix a [`KnownRoutes`] namespace forwards: `2001:db8:f0::/48`.
pub const FORWARDED_V6: ([u8; 16], u8) = (
    [
        0x20, 0x01, 0x0d, 0xb8, 0, 0xf0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ],
    48,
);

/// A namespace whose routing table is known: forwarding on, [`FORWARDED_V4`] and
/// [`FORWARDED_V6`] routed out of a veth, nothing else. `bpf_fib_lookup` in a program
/// test-run on a thread inside it gets answers the reference environment can mirror (the
/// machine's own table, with its default route, would make every unknown address "forwarded").
#[derive(Debug)]
pub struct KnownRoutes(Netns);

impl KnownRoutes {
    /// Create it.
    #[must_use]
    pub fn new() -> Self {
        let ns = Netns::new();
        ns.exec(&["sysctl", "-qw", "net.ipv4.conf.all.forwarding=1"]);
        ns.exec(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);
        // A veth pair (this kernel may lack the dummy driver); its other end only needs to
        // be up for the route to be.
        let other = format!("{FORWARD_DEV}1");
        ns.exec(&[
            "ip",
            "link",
            "add",
            FORWARD_DEV,
            "type",
            "veth",
            "peer",
            "name",
            &other,
        ]);
        ns.exec(&["ip", "link", "set", &other, "up"]);
        ns.exec(&["ip", "link", "set", FORWARD_DEV, "up"]);
        let v4 = format!(
            "{}/{}",
            std::net::Ipv4Addr::from(FORWARDED_V4.0),
            FORWARDED_V4.1
        );
        let v6 = format!(
            "{}/{}",
            std::net::Ipv6Addr::from(FORWARDED_V6.0),
            FORWARDED_V6.1
        );
        ns.exec(&["ip", "route", "add", &v4, "dev", FORWARD_DEV]);
        ns.exec(&["ip", "-6", "route", "add", &v6, "dev", FORWARD_DEV]);
        KnownRoutes(ns)
    }

    /// Run `f` on a thread inside it.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.0.run(f)
    }

    /// Whether the calling thread is inside a `KnownRoutes` namespace.
    #[must_use]
    pub fn here() -> bool {
        let c = std::ffi::CString::new(FORWARD_DEV).expect("name");
        // SAFETY: a valid NUL-terminated name.
        unsafe { libc::if_nametoindex(c.as_ptr()) != 0 }
    }
}

impl Default for KnownRoutes {
    fn default() -> Self {
        Self::new()
    }
}

/// Move the calling thread into the network namespace at `path`.
pub fn enter(path: &str) {
    let f = File::open(path).expect("open netns");
    // SAFETY: setns on a valid namespace fd affects only the calling thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// Two namespaces joined by a veth pair, with addresses: the usual test topology.
/// `a` is the peer ("client"), `b` the protected host whose veth gets the program.
#[derive(Debug)]
pub struct Pair {
    /// The client side.
    pub a: Netns,
    /// The protected side.
    pub b: Netns,
    /// Interface name in `a`.
    pub a_if: String,
    /// Interface name in `b`.
    pub b_if: String,
    /// IPv4 address of `a`.
    pub a4: IpAddr,
    /// IPv4 address of `b`.
    pub b4: IpAddr,
    /// IPv6 address of `a`.
    pub a6: IpAddr,
    /// IPv6 address of `b`.
    pub b6: IpAddr,
}

impl Pair {
    /// A pair with `198.18.<n>.1/24` (a) and .2 (b), `2001:db8:<n>::1/64` and `::2`, MTU `mtu`.
    #[must_use]
    pub fn new(subnet: u8, mtu: u32) -> Self {
        let a = Netns::new();
        let b = Netns::new();
        let a_if = unique("pga");
        let b_if = unique("pgb");
        ip(&[
            "link", "add", &a_if, "netns", &a.name, "type", "veth", "peer", "name", &b_if, "netns",
            &b.name,
        ]);
        let mtu = mtu.to_string();
        for (ns, dev, last) in [(&a, &a_if, 1), (&b, &b_if, 2)] {
            ns.exec(&["ip", "link", "set", dev, "mtu", &mtu, "up"]);
            ns.exec(&[
                "ip",
                "addr",
                "add",
                &format!("198.18.{subnet}.{last}/24"),
                "dev",
                dev,
            ]);
            ns.exec(&[
                "ip",
                "-6",
                "addr",
                "add",
                &format!("2001:db8:{subnet}::{last}/64"),
                "dev",
                dev,
                "nodad",
            ]);
        }
        Pair {
            a,
            b,
            a_if,
            b_if,
            a4: format!("198.18.{subnet}.1").parse().expect("addr"),
            b4: format!("198.18.{subnet}.2").parse().expect("addr"),
            a6: format!("2001:db8:{subnet}::1").parse().expect("addr"),
            b6: format!("2001:db8:{subnet}::2").parse().expect("addr"),
        }
    }
}

impl Pair {
    /// Send `n` datagrams from the peer (its address of `to`'s family, port `from_port`, 0 for
    /// any) to `to` on the protected side; how many arrived at a socket bound there, counted
    /// until none has arrived for 300 ms.
    #[must_use]
    pub fn udp_delivered(&self, from_port: u16, to: SocketAddr, n: u32) -> u32 {
        let rx = self.b.run(move || UdpSocket::bind(to).expect("bind"));
        rx.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        let from = SocketAddr::new(if to.is_ipv4() { self.a4 } else { self.a6 }, from_port);
        self.a.run(move || {
            let tx = UdpSocket::bind(from).expect("bind sender");
            for i in 0..n {
                tx.send_to(&i.to_be_bytes(), to).expect("send");
            }
        });
        let mut got = 0;
        let mut buf = [0u8; 16];
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
        got
    }
}

/// The addresses a daemon would hand to `Datapath::set_local_addrs` for one namespace.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    /// Unicast addresses of every interface but loopback, both families, link-local included:
    /// a host answers on its link-local addresses too, so they must be judged, not passed as
    /// "not for this host".
    pub unicast: Vec<IpAddr>,
    /// IPv4 directed broadcast addresses of the namespace's subnets.
    pub broadcast: Vec<IpAddr>,
}

impl Netns {
    /// Every address configured in the namespace (see [`LocalAddrs`]), read from `ip -j addr`.
    #[must_use]
    pub fn local_addrs(&self) -> LocalAddrs {
        let out = self.output(&["ip", "-j", "addr", "show"]);
        assert!(out.status.success(), "ip -j addr in {}", self.name);
        let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j addr");
        let mut addrs = LocalAddrs::default();
        for link in links.as_array().into_iter().flatten() {
            if link["ifname"] == "lo" {
                continue;
            }
            for a in link["addr_info"].as_array().into_iter().flatten() {
                let parse = |key: &str| a[key].as_str().and_then(|s| s.parse::<IpAddr>().ok());
                if let Some(ip) = parse("local") {
                    addrs.unicast.push(ip);
                }
                if let Some(ip) = parse("broadcast") {
                    addrs.broadcast.push(ip);
                }
            }
        }
        addrs
    }

    /// Set a sysctl inside the namespace (per-namespace ones only: `net.ipv4.ip_forward`,
    /// `net.ipv6.conf.*`), so the machine's own settings are never touched.
    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec(&["sysctl", "-q", "-w", &format!("{key}={value}")]);
    }
}

/// Give `dev` in `ns` an IPv4 and an IPv6 address (`/24`, `/64`, IPv6 without duplicate
/// address detection so it is usable at once).
pub fn add_addrs(ns: &Netns, dev: &str, v4: IpAddr, v6: IpAddr) {
    ns.exec(&["ip", "addr", "add", &format!("{v4}/24"), "dev", dev]);
    ns.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        &format!("{v6}/64"),
        "dev",
        dev,
        "nodad",
    ]);
}

/// Addresses `198.18.<subnet>.<last>` and `2001:db8:<subnet>::<last>`.
#[must_use]
pub fn test_addrs(subnet: u8, last: u8) -> (IpAddr, IpAddr) {
    (
        format!("198.18.{subnet}.{last}").parse().expect("addr"),
        format!("2001:db8:{subnet}::{last}").parse().expect("addr"),
    )
}

/// VLAN tags on the wire from `pair.a` to `pair.b` without the 8021q module, which this
/// project's kernels do not have (no VLAN sub-interfaces, no bridge VLAN filtering, no tc vlan
/// action): a tc program on the peer's egress pushes the tags onto every frame it sends, and one
/// on the protected side's ingress pops them after XDP has judged the tagged frame, where a VLAN
/// sub-interface would untag it. Frames from `b` to `a` stay untagged. Both programs are a few
/// instructions loaded directly (no object file, no compiler), detached when this is dropped.
#[derive(Debug)]
pub struct VlanTags {
    /// Dropped first: their links go with them.
    _progs: Vec<SchedClassifier>,
    _pins: crate::PinDir,
}

/// `struct bpf_insn` opcodes used by the tag programs.
mod insn {
    /// `BPF_ALU64 | BPF_MOV | BPF_X`: dst = src.
    pub(super) const MOV_REG: u8 = 0xbf;
    /// `BPF_ALU64 | BPF_MOV | BPF_K`: dst = imm.
    pub(super) const MOV_IMM: u8 = 0xb7;
    /// `BPF_JMP | BPF_CALL`: call helper imm.
    pub(super) const CALL: u8 = 0x85;
    /// `BPF_JMP | BPF_EXIT`.
    pub(super) const EXIT: u8 = 0x95;
    /// Helper `bpf_skb_vlan_push` (uapi `BPF_FUNC_skb_vlan_push`).
    pub(super) const SKB_VLAN_PUSH: i32 = 18;
    /// Helper `bpf_skb_vlan_pop`.
    pub(super) const SKB_VLAN_POP: i32 = 19;

    /// One instruction: opcode, destination and source register, immediate.
    pub(super) fn op(code: u8, dst: u8, src: u8, imm: i32) -> [u8; 8] {
        let i = imm.to_le_bytes();
        [code, (src << 4) | dst, 0, 0, i[0], i[1], i[2], i[3]]
    }
}

impl VlanTags {
    /// Tag every frame `pair.a` sends on `pair.a_if` with `tags` (outermost first: (TPID, VLAN
    /// id)), and untag them on `pair.b_if` after XDP. With `in_frame`, the peer's veth stops
    /// offloading tag insertion, so the tags are bytes in the frame the program parses; without
    /// it the tags travel as packet metadata, the way a NIC with VLAN offload hands them over.
    #[must_use]
    pub fn new(pair: &Pair, tags: &[(u16, u16)], in_frame: bool) -> Self {
        if in_frame {
            pair.a.exec(&[
                "ethtool",
                "-K",
                &pair.a_if,
                "txvlan",
                "off",
                "tx-vlan-stag-hw-insert",
                "off",
            ]);
        }
        let pins = crate::PinDir::new();
        let mut push = vec![insn::op(insn::MOV_REG, 6, 1, 0)];
        // Innermost first: each push moves the tag pushed before it into the frame.
        for (tpid, vid) in tags.iter().rev() {
            push.extend([
                insn::op(insn::MOV_REG, 1, 6, 0),
                // A __be16 argument: the TPID in network order, as the CPU reads it.
                insn::op(insn::MOV_IMM, 2, 0, i32::from(tpid.to_be())),
                insn::op(insn::MOV_IMM, 3, 0, i32::from(*vid)),
                insn::op(insn::CALL, 0, 0, insn::SKB_VLAN_PUSH),
            ]);
        }
        let mut pop = vec![insn::op(insn::MOV_REG, 6, 1, 0)];
        for _ in 0..2 {
            pop.extend([
                insn::op(insn::MOV_REG, 1, 6, 0),
                insn::op(insn::CALL, 0, 0, insn::SKB_VLAN_POP),
            ]);
        }
        for p in [&mut push, &mut pop] {
            p.extend([
                insn::op(insn::MOV_IMM, 0, 0, 0), // TC_ACT_OK
                insn::op(insn::EXIT, 0, 0, 0),
            ]);
        }
        let progs = vec![
            attach_tc(
                &pair.a,
                &pair.a_if,
                &push,
                &pins.0.join("push"),
                TcAttachType::Egress,
            ),
            attach_tc(
                &pair.b,
                &pair.b_if,
                &pop,
                &pins.0.join("pop"),
                TcAttachType::Ingress,
            ),
        ];
        VlanTags {
            _progs: progs,
            _pins: pins,
        }
    }
}

/// Load `insns` as a `sched_cls` program, pin it at `pin` (aya opens programs it did not load
/// only from a pin), and attach it to `dev` inside `ns`.
fn attach_tc(
    ns: &Netns,
    dev: &str,
    insns: &[[u8; 8]],
    pin: &std::path::Path,
    at: TcAttachType,
) -> SchedClassifier {
    let license = c"GPL";
    let mut log = vec![0u8; 1 << 16];
    // `union bpf_attr` for BPF_PROG_LOAD: prog_type, insn_cnt, insns, license, log_level,
    // log_size, log_buf; the rest zero.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&3u32.to_ne_bytes()); // BPF_PROG_TYPE_SCHED_CLS
    attr[4..8].copy_from_slice(&(insns.len() as u32).to_ne_bytes());
    attr[8..16].copy_from_slice(&(insns.as_ptr() as u64).to_ne_bytes());
    attr[16..24].copy_from_slice(&(license.as_ptr() as u64).to_ne_bytes());
    attr[24..28].copy_from_slice(&1u32.to_ne_bytes());
    attr[28..32].copy_from_slice(&(log.len() as u32).to_ne_bytes());
    attr[32..40].copy_from_slice(&(log.as_mut_ptr() as u64).to_ne_bytes());
    attr[48..55].copy_from_slice(b"pg_vlan");
    // SAFETY: BPF_PROG_LOAD (5) reads `attr` and the buffers it points to, all alive here.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 5, attr.as_ptr(), attr.len()) };
    assert!(
        fd >= 0,
        "load tc program: {}\n{}",
        std::io::Error::last_os_error(),
        String::from_utf8_lossy(&log).trim_end_matches('\0')
    );
    // SAFETY: the syscall returned a new file descriptor that nothing else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let path = std::ffi::CString::new(pin.as_os_str().as_encoded_bytes()).expect("pin path");
    // `union bpf_attr` for BPF_OBJ_PIN: pathname, bpf_fd.
    let mut attr = [0u8; 24];
    attr[0..8].copy_from_slice(&(path.as_ptr() as u64).to_ne_bytes());
    attr[8..12].copy_from_slice(&fd.as_raw_fd().cast_unsigned().to_ne_bytes());
    // SAFETY: BPF_OBJ_PIN (6) reads `attr` and the path, alive here.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, 6, attr.as_ptr(), attr.len()) };
    assert_eq!(rc, 0, "pin tc program: {}", std::io::Error::last_os_error());
    let mut prog = SchedClassifier::from_pin(pin).expect("open pinned tc program");
    let dev = dev.to_owned();
    ns.run(move || {
        // Before tcx (Linux 6.6) a tc program hangs off the clsact qdisc, which must exist
        // first; with tcx the qdisc is unused. An existing one is fine either way.
        let _ = aya::programs::tc::qdisc_add_clsact(&dev);
        prog.attach(&dev, at)
            .unwrap_or_else(|e| panic!("attach tc program to {dev}: {e:?}"));
        prog
    })
}

/// A [`Pair`] whose protected side is a virtualization host: `pair.b_if` is a port of a Linux
/// bridge that carries the host's own addresses (`pair.b4`, `pair.b6` move from the veth to the
/// bridge), and a second veth pair connects the bridge to a `vm` namespace standing for a guest.
/// The program goes on `pair.b_if`, the physical-side port, as it would on a real bridged NIC.
#[derive(Debug)]
pub struct Bridged {
    /// Peer and protected host; `pair.b_if` is now a bridge port without addresses.
    pub pair: Pair,
    /// The bridge in `pair.b`.
    pub bridge: String,
    /// The guest's namespace.
    pub vm: Netns,
    /// The guest's interface.
    pub vm_if: String,
    /// The bridge port facing the guest, in `pair.b`.
    pub tap_if: String,
    /// IPv4 address of the guest (same subnet as the peer and the host).
    pub vm4: IpAddr,
    /// IPv6 address of the guest.
    pub vm6: IpAddr,
}

impl Bridged {
    /// The topology on `198.18.<subnet>.0/24` and `2001:db8:<subnet>::/64`: peer .1, host .2
    /// (on the bridge), guest .3.
    #[must_use]
    pub fn new(subnet: u8, mtu: u32) -> Self {
        let pair = Pair::new(subnet, mtu);
        let vm = Netns::new();
        let bridge = unique("pgbr");
        let vm_if = unique("pgvm");
        let tap_if = unique("pgtp");
        let b = &pair.b;
        b.exec(&["ip", "link", "add", &bridge, "type", "bridge"]);
        b.exec(&["ip", "addr", "flush", "dev", &pair.b_if]);
        b.exec(&["ip", "link", "set", &pair.b_if, "master", &bridge]);
        ip(&[
            "link", "add", &tap_if, "netns", &b.name, "type", "veth", "peer", "name", &vm_if,
            "netns", &vm.name,
        ]);
        let mtu = mtu.to_string();
        b.exec(&[
            "ip", "link", "set", &tap_if, "mtu", &mtu, "master", &bridge, "up",
        ]);
        b.exec(&["ip", "link", "set", &bridge, "up"]);
        add_addrs(b, &bridge, pair.b4, pair.b6);
        vm.exec(&["ip", "link", "set", &vm_if, "mtu", &mtu, "up"]);
        let (vm4, vm6) = test_addrs(subnet, 3);
        add_addrs(&vm, &vm_if, vm4, vm6);
        Bridged {
            pair,
            bridge,
            vm,
            vm_if,
            tap_if,
            vm4,
            vm6,
        }
    }
}

/// Three namespaces in a line, `peer` -- `router` -- `host`, with an MTU step inside the
/// path: every interface has `mtu` except the router's interface towards the peer, which has
/// `step_mtu`. Neither end sees the step on its own link (the peer advertises an MSS for `mtu`),
/// like a tunnel or an overlay in the middle of a path, so the host learns it only from the
/// router's ICMP errors. The host's program sits on `host_if`.
///
/// Host side: `198.18.<subnet>.0/24` and `2001:db8:<subnet>::/64` (router .1, host .2); far
/// side: `198.19.<subnet>.0/24` and `2001:db8:<subnet>:1::/64` (router .1, peer .2). Large
/// packets from the peer are dropped at the step without an error (a veth delivers only what
/// fits the receiver's MTU): test large transfers from the host.
#[derive(Debug)]
pub struct Routed {
    /// The far end.
    pub peer: Netns,
    /// Forwards between the two links.
    pub router: Netns,
    /// The protected host.
    pub host: Netns,
    /// The host's interface (gets the program).
    pub host_if: String,
    /// The peer's interface.
    pub peer_if: String,
    /// Host IPv4 address.
    pub host4: IpAddr,
    /// Host IPv6 address.
    pub host6: IpAddr,
    /// Peer IPv4 address.
    pub peer4: IpAddr,
    /// Peer IPv6 address.
    pub peer6: IpAddr,
    /// The router's address on the host's link (source of its ICMP errors to the host).
    pub router4: IpAddr,
    /// The router's IPv6 address on the host's link.
    pub router6: IpAddr,
}

impl Routed {
    /// Build the line; routes both ways through the router, forwarding on in `router` only.
    #[must_use]
    pub fn new(subnet: u8, mtu: u32, step_mtu: u32) -> Self {
        let peer = Netns::new();
        let router = Netns::new();
        let host = Netns::new();
        let host_if = unique("pgh");
        let near_if = unique("pgrh");
        let far_if = unique("pgrp");
        let peer_if = unique("pgp");
        ip(&[
            "link",
            "add",
            &host_if,
            "netns",
            &host.name,
            "type",
            "veth",
            "peer",
            "name",
            &near_if,
            "netns",
            &router.name,
        ]);
        ip(&[
            "link",
            "add",
            &peer_if,
            "netns",
            &peer.name,
            "type",
            "veth",
            "peer",
            "name",
            &far_if,
            "netns",
            &router.name,
        ]);
        let (mtu, step) = (mtu.to_string(), step_mtu.to_string());
        for (ns, dev, mtu) in [
            (&host, &host_if, &mtu),
            (&router, &near_if, &mtu),
            (&router, &far_if, &step),
            (&peer, &peer_if, &mtu),
        ] {
            ns.exec(&["ip", "link", "set", dev, "mtu", mtu, "up"]);
        }
        let (router4, router6) = test_addrs(subnet, 1);
        let (host4, host6) = test_addrs(subnet, 2);
        let far4: IpAddr = format!("198.19.{subnet}.1").parse().expect("addr");
        let far6: IpAddr = format!("2001:db8:{subnet}:1::1").parse().expect("addr");
        let peer4: IpAddr = format!("198.19.{subnet}.2").parse().expect("addr");
        let peer6: IpAddr = format!("2001:db8:{subnet}:1::2").parse().expect("addr");
        add_addrs(&router, &near_if, router4, router6);
        add_addrs(&router, &far_if, far4, far6);
        add_addrs(&host, &host_if, host4, host6);
        add_addrs(&peer, &peer_if, peer4, peer6);
        router.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv6.conf.all.forwarding", "1");
        for (ns, via4, via6) in [(&host, router4, router6), (&peer, far4, far6)] {
            ns.exec(&["ip", "route", "add", "default", "via", &via4.to_string()]);
            ns.exec(&[
                "ip",
                "-6",
                "route",
                "add",
                "default",
                "via",
                &via6.to_string(),
            ]);
        }
        Routed {
            peer,
            router,
            host,
            host_if,
            peer_if,
            host4,
            host6,
            peer4,
            peer6,
            router4,
            router6,
        }
    }
}
