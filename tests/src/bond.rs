//! A virtualization host on a bond, as oVirt (`ovirtmgmt`) and Proxmox VE (`vmbr0`) build it:
//! two veths bonded (active-backup or 802.3ad), a Linux bridge on the bond carrying the host's
//! addresses, a guest bridged behind it, and optionally VLAN 100 on the bond with a bridge and
//! a guest of its own. The far ends of the two links are the "switch" in the peer namespace: a
//! Linux bridge for active-backup (any port may carry the active link), a bond in 802.3ad mode
//! for LACP (a partner that answers LACPDUs). Needs the `bonding` and `8021q` modules, which
//! this project's own kernel lacks: `cargo xtask test --kernel` boots one that has them.
//!
//! Untagged: `198.18.<subnet>.0/24`, `2001:db8:<subnet>::/64`; VLAN 100: `198.19.<subnet>.0/24`,
//! `2001:db8:<subnet>:100::/64`. Peer .1, host .2, guest .3 on each.

use std::{
    net::IpAddr,
    thread,
    time::{Duration, Instant},
};

use crate::{
    net::{Netns, add_addrs, ip},
    unique,
};

/// The bonding mode of the host's bond.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BondMode {
    /// One link carries everything, the other waits (mode 1).
    ActiveBackup,
    /// IEEE 802.3ad link aggregation with LACP (mode 4), fast LACPDUs.
    Lacp,
}

impl BondMode {
    /// The `mode` argument of `ip link add ... type bond`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            BondMode::ActiveBackup => "active-backup",
            BondMode::Lacp => "802.3ad",
        }
    }
}

/// One layer-2 network of the host: the bridge that carries the host's addresses on it, and a
/// guest bridged behind it.
#[derive(Debug)]
pub struct Segment {
    /// The host's bridge (oVirt's `ovirtmgmt`, Proxmox's `vmbr0`).
    pub bridge: String,
    /// The guest's namespace.
    pub vm: Netns,
    /// The guest's interface.
    pub vm_if: String,
    /// The peer's interface on this network (switch bridge or bond, or a VLAN on it).
    pub peer_if: String,
    /// Host addresses (on `bridge`).
    pub host4: IpAddr,
    /// Host IPv6 address.
    pub host6: IpAddr,
    /// Peer addresses.
    pub peer4: IpAddr,
    /// Peer IPv6 address.
    pub peer6: IpAddr,
    /// Guest addresses.
    pub vm4: IpAddr,
    /// Guest IPv6 address.
    pub vm6: IpAddr,
}

/// The host, its bond, the switch, and one or two networks (see the module doc).
#[derive(Debug)]
pub struct BondedHost {
    /// The host's bonding mode.
    pub mode: BondMode,
    /// The switch side.
    pub peer: Netns,
    /// The protected host.
    pub host: Netns,
    /// The bond in `host`.
    pub bond: String,
    /// The bond's slaves in `host`.
    pub slaves: [String; 2],
    /// The far ends of the slaves, in `peer`, same order.
    pub ports: [String; 2],
    /// The untagged network (bridge directly on the bond).
    pub untagged: Segment,
    /// VLAN 100: the VLAN device on the bond, and the network bridged on it.
    pub vlan: Option<(String, Segment)>,
}

/// The VLAN id of the tagged network.
pub const VLAN: u16 = 100;

impl BondedHost {
    /// Build the topology; `vlan` adds VLAN 100 on the bond. Waits until the bond carries
    /// traffic (a slave active, or both slaves in one LACP aggregator).
    #[must_use]
    pub fn new(mode: BondMode, subnet: u8, vlan: bool) -> Self {
        let peer = Netns::new();
        let host = Netns::new();
        let slaves = [unique("pgsl"), unique("pgsl")];
        let ports = [unique("pgpt"), unique("pgpt")];
        for (s, p) in slaves.iter().zip(&ports) {
            ip(&[
                "link", "add", s, "netns", &host.name, "type", "veth", "peer", "name", p, "netns",
                &peer.name,
            ]);
        }
        let bond = unique("pgbd");
        host.exec(&bond_add(&bond, mode));
        for s in &slaves {
            host.exec(&["ip", "link", "set", s, "master", &bond]);
        }
        host.exec(&["ip", "link", "set", &bond, "up"]);
        // The switch: a bridge, or for LACP a bond that answers LACPDUs.
        let switch = unique("pgsw");
        match mode {
            BondMode::ActiveBackup => peer.exec(&["ip", "link", "add", &switch, "type", "bridge"]),
            BondMode::Lacp => peer.exec(&bond_add(&switch, mode)),
        }
        for p in &ports {
            peer.exec(&["ip", "link", "set", p, "master", &switch]);
            peer.exec(&["ip", "link", "set", p, "up"]);
        }
        peer.exec(&["ip", "link", "set", &switch, "up"]);
        let untagged = segment(&host, &peer, &bond, &switch, subnet, false);
        let vlan = vlan.then(|| {
            let host_vlan = unique("pgvl");
            let peer_vlan = unique("pgvl");
            let id = VLAN.to_string();
            host.exec(&[
                "ip", "link", "add", "link", &bond, "name", &host_vlan, "type", "vlan", "id", &id,
            ]);
            peer.exec(&[
                "ip", "link", "add", "link", &switch, "name", &peer_vlan, "type", "vlan", "id", &id,
            ]);
            host.exec(&["ip", "link", "set", &host_vlan, "up"]);
            peer.exec(&["ip", "link", "set", &peer_vlan, "up"]);
            let seg = segment(&host, &peer, &host_vlan, &peer_vlan, subnet, true);
            (host_vlan, seg)
        });
        let h = BondedHost {
            mode,
            peer,
            host,
            bond,
            slaves,
            ports,
            untagged,
            vlan,
        };
        h.wait_bond_ready();
        h
    }

    /// `/proc/net/bonding/<bond>` of the host's bond.
    #[must_use]
    pub fn bond_state(&self) -> String {
        let out = self
            .host
            .output(&["cat", &format!("/proc/net/bonding/{}", self.bond)]);
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The slave that carries traffic in active-backup mode.
    #[must_use]
    pub fn active_slave(&self) -> Option<String> {
        self.bond_state()
            .lines()
            .find_map(|l| l.strip_prefix("Currently Active Slave: "))
            .map(str::to_owned)
            .filter(|s| s != "None")
    }

    /// Wait (at most 60 s: LACP under an emulated CPU is slow) until the bond carries traffic.
    fn wait_bond_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let state = self.bond_state();
            let ready = match self.mode {
                BondMode::ActiveBackup => self.active_slave().is_some(),
                // Both slaves in the active aggregator, with the partner's system id known.
                BondMode::Lacp => {
                    state.contains("Number of ports: 2")
                        && !state.contains("Partner Mac Address: 00:00:00:00:00:00")
                }
            };
            if ready {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "bond {} ({}) never became ready:\n{state}",
                self.bond,
                self.mode.name()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// Take the link of `slave` down from the switch's side (a cable pulled) and wait until
    /// the bond noticed and, in active-backup mode, chose another slave.
    pub fn pull_cable(&self, slave: usize) {
        self.peer
            .exec(&["ip", "link", "set", &self.ports[slave], "down"]);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let state = self.bond_state();
            let gone = state
                .split("Slave Interface: ")
                .find(|s| s.starts_with(&self.slaves[slave]))
                .is_some_and(|s| s.contains("MII Status: down"));
            let moved = self.mode == BondMode::Lacp
                || self.active_slave().is_some_and(|a| a != self.slaves[slave]);
            if gone && moved {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the bond never noticed the pulled cable of {}:\n{state}",
                self.slaves[slave]
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// `ip link add <name> type bond mode <mode> miimon 100` (LACP: fast LACPDUs, so a partner is
/// found in seconds rather than a minute).
fn bond_add(name: &str, mode: BondMode) -> Vec<&str> {
    let mut cmd = vec![
        "ip",
        "link",
        "add",
        name,
        "type",
        "bond",
        "mode",
        mode.name(),
        "miimon",
        "100",
    ];
    if mode == BondMode::Lacp {
        cmd.extend(["lacp_rate", "fast"]);
    }
    cmd
}

/// A network of the host on `lower` (the bond, or a VLAN on it): a bridge with the host's
/// addresses and a guest, and the peer's addresses on `peer_if`.
fn segment(
    host: &Netns,
    peer: &Netns,
    lower: &str,
    peer_if: &str,
    subnet: u8,
    tagged: bool,
) -> Segment {
    let bridge = unique("pgbr");
    host.exec(&["ip", "link", "add", &bridge, "type", "bridge"]);
    host.exec(&["ip", "link", "set", lower, "master", &bridge]);
    host.exec(&["ip", "link", "set", &bridge, "up"]);
    let vm = Netns::new();
    let vm_if = unique("pgvm");
    let tap = unique("pgtp");
    ip(&[
        "link", "add", &tap, "netns", &host.name, "type", "veth", "peer", "name", &vm_if, "netns",
        &vm.name,
    ]);
    host.exec(&["ip", "link", "set", &tap, "master", &bridge, "up"]);
    vm.exec(&["ip", "link", "set", &vm_if, "up"]);
    let addr = |last: u8| -> (IpAddr, IpAddr) {
        let (v4, v6) = if tagged {
            (
                format!("198.19.{subnet}.{last}"),
                format!("2001:db8:{subnet}:{VLAN}::{last}"),
            )
        } else {
            (
                format!("198.18.{subnet}.{last}"),
                format!("2001:db8:{subnet}::{last}"),
            )
        };
        (v4.parse().expect("addr"), v6.parse().expect("addr"))
    };
    let ((peer4, peer6), (host4, host6), (vm4, vm6)) = (addr(1), addr(2), addr(3));
    add_addrs(peer, peer_if, peer4, peer6);
    add_addrs(host, &bridge, host4, host6);
    add_addrs(&vm, &vm_if, vm4, vm6);
    Segment {
        bridge,
        vm,
        vm_if,
        peer_if: peer_if.to_owned(),
        host4,
        host6,
        peer4,
        peer6,
        vm4,
        vm6,
    }
}

/// The MAC address of `dev` in `ns`.
#[must_use]
pub fn mac(ns: &Netns, dev: &str) -> String {
    let out = ns.output(&["ip", "-j", "link", "show", "dev", dev]);
    let links: serde_json::Value = serde_json::from_slice(&out.stdout).expect("ip -j link");
    links[0]["address"]
        .as_str()
        .unwrap_or_else(|| panic!("no MAC for {dev}: {links}"))
        .to_owned()
}
