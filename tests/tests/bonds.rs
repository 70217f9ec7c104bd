//! Bonds and VLANs (issue #17 part 8): the real `portguard run` on a host whose NICs are bonded
//! under a bridge (oVirt `ovirtmgmt`, Proxmox `vmbr0`), with a guest bridged behind it, attached
//! to the bond or to its slaves; VLAN 100 on the bond with a bridge of its own; tags in the
//! frame or offloaded. Each case checks that an allowed flow passes, a flow outside the matrix
//! is dropped (and counted as such), the host's own outgoing connection gets its replies, and
//! the guests keep working; the audit records say what the program saw (which interface,
//! which VLAN).
//!
//! The kernels this project develops on have neither `bonding` nor `8021q`: these tests are
//! ignored on the host and run by `cargo xtask test --kernel 6.12`, which boots a Debian
//! kernel that has both and runs them with `--include-ignored`.

use std::{
    io::{ErrorKind, Read as _, Write as _},
    net::{SocketAddr, TcpListener, TcpStream},
    path::PathBuf,
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    bond::{BondMode, BondedHost, Segment, VLAN, mac},
    daemon::Daemon,
    net::Netns,
    unique,
};

/// RHV-H10 (VDSM): open to the peer, which is the RHV Manager of the site.
const ALLOWED: u16 = 54321;
/// No rule opens it; a listener waits there, so only the program can keep a SYN out.
const CLOSED: u16 = 5999;
/// A guest's service: not the host's, so not the host's policy.
const GUEST: u16 = 3389;
/// An allowed connection may take this long (an emulated CPU is slow).
const CONNECT: Duration = Duration::from_secs(5);
/// A SYN that is dropped gets no answer within this (one retransmission included).
const REFUSE: Duration = Duration::from_millis(1500);

// ---------------------------------------------------------------------------------------------
// Site, traffic, counters

/// A site file for `h`: the peer's addresses on every network are the RHV Manager and an RHV
/// host, the program goes on `interfaces`.
fn site(h: &BondedHost, interfaces: &[&str]) -> PathBuf {
    let mut peers = vec![h.untagged.peer4, h.untagged.peer6];
    if let Some((_, v)) = &h.vlan {
        peers.extend([v.peer4, v.peer6]);
    }
    let roles: Vec<String> = peers.iter().map(|a| format!("\"{a}\"")).collect();
    let ifaces: Vec<String> = interfaces.iter().map(|i| format!("\"{i}\"")).collect();
    let text = format!(
        r#"products = ["rhv"]
features = ["ovn"]
disabled_features = ["rhv-host-ssh"]
mode = "enforce"

[roles]
"rhv.manager" = [{roles}]
"rhv.host" = [{roles}]

[audit]
rate = 1000
burst = 1000

[failsafe]
ssh_from = ["198.18.250.0/24"]

[host]
roles = ["rhv.host"]
interfaces = [{ifaces}]
"#,
        roles = roles.join(", "),
        ifaces = ifaces.join(", "),
    );
    let dir = std::env::temp_dir().join(unique("pg-bond-site-"));
    std::fs::create_dir_all(&dir).expect("site dir");
    let path = dir.join("site.toml");
    std::fs::write(&path, text).expect("write site");
    path
}

/// A TCP server in `ns` on `addr` (port 0: any) that echoes what it reads; its address.
fn echo(ns: &Netns, addr: SocketAddr) -> SocketAddr {
    let l = ns.run(move || TcpListener::bind(addr).expect("bind"));
    let addr = l.local_addr().expect("local addr");
    thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let mut b = [0u8; 64];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || s.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    addr
}

/// Whether a connection from `ns` to `to` opens and carries a round trip.
fn talks(ns: &Netns, to: SocketAddr) -> bool {
    ns.run(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&to, CONNECT) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(CONNECT));
        let mut b = [0u8; 5];
        s.write_all(b"hello").is_ok() && s.read_exact(&mut b).is_ok() && &b == b"hello"
    })
}

/// Whether a connection from `ns` to `to` gets no answer at all: the SYN was dropped on the
/// way (a SYN the host's stack saw would be answered, by a SYN-ACK or a reset).
fn syn_dropped(ns: &Netns, to: SocketAddr) -> bool {
    ns.run(move || match TcpStream::connect_timeout(&to, REFUSE) {
        Ok(_) => false,
        Err(e) => matches!(e.kind(), ErrorKind::TimedOut | ErrorKind::WouldBlock),
    })
}

/// Packets counted for reason `name` (`port-not-open`, `reply`, `not-for-host`...).
fn reason(d: &Daemon, name: &str) -> u64 {
    let s = d.status();
    s["reasons"]
        .as_array()
        .expect("reasons")
        .iter()
        .find(|r| r["reason"] == name)
        .unwrap_or_else(|| panic!("no reason {name} in status: {s}"))["packets"]
        .as_u64()
        .expect("packets")
}

/// Poll `f` for up to five seconds (counters move when the receiving softirq ran).
fn eventually(mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if f() {
            return true;
        }
        if start.elapsed() > Duration::from_secs(5) {
            return false;
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// The audit flow records of denied packets to `dst` port `port`, once there are `n`.
fn denied_flows(d: &Daemon, dst: SocketAddr, n: usize) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let recs: Vec<serde_json::Value> = d
            .audit_records()
            .into_iter()
            .filter(|r| {
                r["kind"] == "flow" && r["dst"] == dst.ip().to_string() && r["dport"] == dst.port()
            })
            .collect();
        if recs.len() >= n {
            return recs;
        }
        assert!(
            Instant::now() < deadline,
            "no audit record for {dst}: {:#?}\n{}",
            d.audit_records(),
            d.log_text()
        );
        thread::sleep(Duration::from_millis(250));
    }
}

/// Servers for the checks of [`Services::check`] on one network of the host, started once
/// (a test checks again after a failover).
struct Services {
    /// On the host, RHV-H10's port.
    allowed: [SocketAddr; 2],
    /// On the host, a port no rule opens.
    closed: [SocketAddr; 2],
    /// On the peer, for the host's own connections and the guest's.
    peer: [SocketAddr; 2],
    /// On the guest.
    guest: [SocketAddr; 2],
}

impl Services {
    fn start(h: &BondedHost, seg: &Segment) -> Self {
        Services {
            allowed: [seg.host4, seg.host6].map(|a| echo(&h.host, SocketAddr::new(a, ALLOWED))),
            closed: [seg.host4, seg.host6].map(|a| echo(&h.host, SocketAddr::new(a, CLOSED))),
            peer: [seg.peer4, seg.peer6].map(|a| echo(&h.peer, SocketAddr::new(a, 0))),
            guest: [seg.vm4, seg.vm6].map(|a| echo(&seg.vm, SocketAddr::new(a, GUEST))),
        }
    }

    /// The four things a protected virtualization host must keep doing on `seg`: the allowed
    /// flow passes and its rule counts it, the flow outside the matrix is dropped and counted,
    /// the host's own connections get their replies, the guest is reachable and reaches out.
    /// `what` names the case in failures.
    fn check(&self, h: &BondedHost, seg: &Segment, d: &Daemon, what: &str) {
        self.check_guests_seen(h, seg, d, what, true);
    }

    /// [`Services::check`], where `sees_guests` says whether the program is where the
    /// guest's frames pass (it is not on the bridge itself, which forwards them below its own
    /// receive path).
    fn check_guests_seen(
        &self,
        h: &BondedHost,
        seg: &Segment,
        d: &Daemon,
        what: &str,
        sees_guests: bool,
    ) {
        let rule_before = d.rule_packets("RHV-H10");
        for to in self.allowed {
            assert!(
                talks(&h.peer, to),
                "{what}: peer -> host {to} (RHV-H10) must pass\n{}",
                d.log_text()
            );
        }
        assert!(
            d.rule_packets("RHV-H10") >= rule_before + 6,
            "{what}: the allowed connections crossed the program and its rule"
        );
        let denied_before = reason(d, "port-not-open");
        for to in self.closed {
            assert!(
                syn_dropped(&h.peer, to),
                "{what}: peer -> host {to}: a port no rule opens must not answer"
            );
        }
        assert!(
            eventually(|| reason(d, "port-not-open") >= denied_before + 2),
            "{what}: the dropped SYNs are counted as port-not-open"
        );
        let replies_before = reason(d, "reply");
        for to in self.peer {
            assert!(
                talks(&h.host, to),
                "{what}: host -> peer {to}: the replies must come back"
            );
        }
        assert!(
            reason(d, "reply") > replies_before,
            "{what}: the replies passed as replies"
        );
        let guest_before = reason(d, "not-for-host");
        for to in self.guest {
            assert!(
                talks(&h.peer, to),
                "{what}: peer -> guest {to} behind {} must pass",
                seg.bridge
            );
        }
        assert!(
            talks(&seg.vm, self.peer[0]),
            "{what}: guest -> peer {} must work",
            self.peer[0]
        );
        let guest_after = reason(d, "not-for-host");
        if sees_guests {
            assert!(
                guest_after > guest_before,
                "{what}: the guest's traffic passed as not-for-host"
            );
        } else {
            assert_eq!(
                guest_after, guest_before,
                "{what}: the guest's traffic never reaches the program"
            );
        }
    }
}

/// The interface names the audit records give for denied packets to `seg`'s closed port.
fn seen_on(d: &Daemon, seg: &Segment) -> Vec<(String, Option<u64>)> {
    denied_flows(d, SocketAddr::new(seg.host4, CLOSED), 1)
        .iter()
        .map(|r| {
            (
                r["interface"].as_str().unwrap_or("?").to_owned(),
                r["vlan"].as_u64(),
            )
        })
        .collect()
}

/// How the daemon attached to `ifname` (`driver` or `generic`), from `status`.
fn attach_mode(d: &Daemon, ifname: &str) -> String {
    let s = d.status();
    s["interfaces"]
        .as_array()
        .expect("interfaces")
        .iter()
        .find(|i| i["name"] == ifname)
        .unwrap_or_else(|| panic!("{ifname} not attached: {s}"))["mode"]
        .as_str()
        .unwrap_or("?")
        .to_owned()
}

// ---------------------------------------------------------------------------------------------
// The program on the bond

/// Attach to the bond: XDP on a bond is installed on every slave (Linux 5.15); the frames a
/// program sees are the slaves' frames, before the bond and the bridge take them.
fn on_the_bond(mode: BondMode, subnet: u8) {
    let h = BondedHost::new(mode, subnet, false);
    let d = Daemon::start(&h.host, &site(&h, &[&h.bond]), &[]);
    let what = format!("{} bond, program on the bond", mode.name());
    assert_eq!(
        attach_mode(&d, &h.bond),
        "driver",
        "{what}: native XDP on a bond of veths"
    );
    let services = Services::start(&h, &h.untagged);
    services.check(&h, &h.untagged, &d, &what);
    let seen = seen_on(&d, &h.untagged);
    println!("{what}: denied frames seen on {seen:?}");
    assert!(
        seen.iter()
            .all(|(i, vlan)| h.slaves.contains(i) && vlan.is_none()),
        "{what}: the program runs on the slaves: records name a slave, untagged: {seen:?}"
    );
    // The slaves all carry the bond's MAC; frames for the host carry the bridge's (the lowest
    // of its ports' unless set), frames for a guest the guest's: the program on a slave gets
    // all of them, and tells the host's from the guests' by destination address, not MAC.
    let bond_mac = mac(&h.host, &h.bond);
    for s in &h.slaves {
        assert_eq!(mac(&h.host, s), bond_mac, "{what}: slave {s}");
    }
    println!(
        "{what}: bond and slaves {bond_mac}, bridge {}, guest {}",
        mac(&h.host, &h.untagged.bridge),
        mac(&h.untagged.vm, &h.untagged.vm_if)
    );
    // A cable pulled: the other slave carries everything, and the program is there too.
    let first = match mode {
        BondMode::ActiveBackup => h
            .slaves
            .iter()
            .position(|s| Some(s) == h.active_slave().as_ref())
            .expect("active slave"),
        BondMode::Lacp => 0,
    };
    h.pull_cable(first);
    services.check(&h, &h.untagged, &d, &format!("{what}, after failover"));
}

#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn active_backup_bond_under_a_bridge_with_the_program_on_the_bond() {
    on_the_bond(BondMode::ActiveBackup, 81);
}

#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn lacp_bond_under_a_bridge_with_the_program_on_the_bond() {
    on_the_bond(BondMode::Lacp, 82);
}

// ---------------------------------------------------------------------------------------------
// The program on the slaves

/// Attach to each slave instead: the same frames, one link per program; every slave must be
/// listed, or a failover moves the traffic to an unprotected link.
fn on_the_slaves(mode: BondMode, subnet: u8) {
    let h = BondedHost::new(mode, subnet, false);
    let d = Daemon::start(&h.host, &site(&h, &[&h.slaves[0], &h.slaves[1]]), &[]);
    let what = format!("{} bond, program on the slaves", mode.name());
    for s in &h.slaves {
        assert_eq!(attach_mode(&d, s), "driver", "{what}: {s}");
    }
    let services = Services::start(&h, &h.untagged);
    services.check(&h, &h.untagged, &d, &what);
    let seen = seen_on(&d, &h.untagged);
    println!("{what}: denied frames seen on {seen:?}");
    assert!(
        seen.iter().all(|(i, _)| h.slaves.contains(i)),
        "{what}: records name a slave: {seen:?}"
    );
    h.pull_cable(0);
    services.check(&h, &h.untagged, &d, &format!("{what}, after failover"));
}

#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn active_backup_bond_with_the_program_on_the_slaves() {
    on_the_slaves(BondMode::ActiveBackup, 83);
}

#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn lacp_bond_with_the_program_on_the_slaves() {
    on_the_slaves(BondMode::Lacp, 84);
}

/// Only the active slave listed (as an admin might, looking at where traffic flows today): after
/// a failover the traffic arrives on the slave without the program, and a port no rule opens
/// answers. What the advice "attach to the bond, or list every slave" is about.
#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn a_slave_left_out_is_unprotected_after_a_failover() {
    let h = BondedHost::new(BondMode::ActiveBackup, 90, false);
    let active = h.active_slave().expect("active slave");
    let d = Daemon::start(&h.host, &site(&h, &[&active]), &[]);
    let what = format!("program on the active slave {active} only");
    let services = Services::start(&h, &h.untagged);
    services.check(&h, &h.untagged, &d, &what);
    let index = h
        .slaves
        .iter()
        .position(|s| *s == active)
        .expect("active is a slave");
    h.pull_cable(index);
    assert!(
        talks(&h.peer, services.closed[0]),
        "{what}: after the failover to {}, the closed port answers",
        h.slaves[1 - index]
    );
}

// ---------------------------------------------------------------------------------------------
// VLANs on the bond

/// VLAN 100 on the bond with a bridge and a guest of its own, next to the untagged network;
/// the program on the bond. `in_frame`: the veths stop offloading tag insertion (`ethtool -K
/// txvlan off`), so tags are bytes in the frames the program parses; otherwise they travel as
/// packet metadata, as a NIC with VLAN offload hands them over, and the program sees untagged
/// frames.
fn vlan_on_the_bond(mode: BondMode, in_frame: bool, subnet: u8) {
    let h = BondedHost::new(mode, subnet, true);
    let offload = if in_frame { "off" } else { "on" };
    for p in &h.ports {
        h.peer.exec(&["ethtool", "-K", p, "txvlan", offload]);
    }
    for s in &h.slaves {
        h.host.exec(&["ethtool", "-K", s, "txvlan", offload]);
    }
    let d = Daemon::start(&h.host, &site(&h, &[&h.bond]), &[]);
    let what = format!("{} bond, VLAN {VLAN}, txvlan {offload}", mode.name());
    let (vlan_dev, tagged) = h.vlan.as_ref().expect("vlan");
    Services::start(&h, tagged).check(&h, tagged, &d, &format!("{what}, tagged network"));
    Services::start(&h, &h.untagged).check(
        &h,
        &h.untagged,
        &d,
        &format!("{what}, untagged network"),
    );
    let seen = seen_on(&d, tagged);
    println!("{what}: denied tagged frames seen on {seen:?} (VLAN device {vlan_dev})");
    let expected = in_frame.then_some(u64::from(VLAN));
    assert!(
        seen.iter()
            .all(|(i, vlan)| h.slaves.contains(i) && *vlan == expected),
        "{what}: the program on the slaves sees the tag iff it is in the frame: {seen:?}"
    );
    let untagged = seen_on(&d, &h.untagged);
    assert!(
        untagged.iter().all(|(_, vlan)| vlan.is_none()),
        "{what}: untagged frames carry no VLAN: {untagged:?}"
    );
}

#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn vlan_on_an_active_backup_bond_with_tags_in_the_frame() {
    vlan_on_the_bond(BondMode::ActiveBackup, true, 85);
}

#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn vlan_on_an_active_backup_bond_with_tag_offload() {
    vlan_on_the_bond(BondMode::ActiveBackup, false, 86);
}

#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn vlan_on_a_lacp_bond_with_tags_in_the_frame() {
    vlan_on_the_bond(BondMode::Lacp, true, 87);
}

/// The program on the VLAN device only: native XDP is refused there (VLAN devices have no
/// driver hook), generic XDP runs on frames already untagged and only those of that VLAN. The
/// host's untagged network is not protected at all: a port no rule opens answers there.
#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn the_program_on_a_vlan_device_protects_that_vlan_only() {
    let h = BondedHost::new(BondMode::ActiveBackup, 88, true);
    let (vlan_dev, tagged) = h.vlan.as_ref().expect("vlan");
    let d = Daemon::start(&h.host, &site(&h, &[vlan_dev]), &[]);
    let what = format!("program on VLAN device {vlan_dev}");
    assert_eq!(
        attach_mode(&d, vlan_dev),
        "generic",
        "{what}: VLAN devices have no native XDP"
    );
    Services::start(&h, tagged).check(&h, tagged, &d, &what);
    let seen = seen_on(&d, tagged);
    println!("{what}: denied frames seen on {seen:?}");
    assert!(
        seen.iter().all(|(i, vlan)| i == vlan_dev && vlan.is_none()),
        "{what}: the program sees untagged frames on the VLAN device: {seen:?}"
    );
    let open = echo(&h.host, SocketAddr::new(h.untagged.host4, CLOSED));
    assert!(
        talks(&h.peer, open),
        "{what}: the untagged network bypasses the program"
    );
    // So that the assertion above cannot be passing for a broken topology: the same port on
    // the tagged network stays closed.
    assert!(syn_dropped(&h.peer, SocketAddr::new(tagged.host4, CLOSED)));
}

/// The program on the bridge that carries the host's addresses (`ovirtmgmt`, `vmbr0`), where
/// an admin might put it because the address is there: generic XDP on a bridge runs only on
/// frames the bridge passes up to the host, never on frames it forwards to guests. The host is
/// protected on that network; guests are untouched (not even counted); every other network
/// of the host (here VLAN 100, bridged on the bond's VLAN device) is not protected.
#[test]
#[ignore = "needs the bonding and 8021q modules: run with cargo xtask test --kernel 6.12"]
fn the_program_on_the_hosts_bridge_protects_that_bridge_only() {
    let h = BondedHost::new(BondMode::ActiveBackup, 89, true);
    let (_, tagged) = h.vlan.as_ref().expect("vlan");
    let bridge = &h.untagged.bridge;
    let d = Daemon::start(&h.host, &site(&h, &[bridge]), &[]);
    let what = format!("program on the host's bridge {bridge}");
    assert_eq!(
        attach_mode(&d, bridge),
        "generic",
        "{what}: bridges have no native XDP"
    );
    Services::start(&h, &h.untagged).check_guests_seen(&h, &h.untagged, &d, &what, false);
    let seen = seen_on(&d, &h.untagged);
    println!("{what}: denied frames seen on {seen:?}");
    assert!(
        seen.iter().all(|(i, vlan)| i == bridge && vlan.is_none()),
        "{what}: the program sees untagged frames on the bridge: {seen:?}"
    );
    let open = echo(&h.host, SocketAddr::new(tagged.host4, CLOSED));
    assert!(
        talks(&h.peer, open),
        "{what}: the host's VLAN {VLAN} network bypasses the program"
    );
}
