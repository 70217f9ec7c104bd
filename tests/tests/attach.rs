//! Attach-level tests: the program on a veth in a namespace of the test's own, real TCP and UDP
//! from the peer namespace, in native (Driver) and generic (Skb) mode.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::Duration,
};

use aya::programs::XdpMode;
use integration_tests::{PinDir, net::Pair, reason_packets};
use portguard::{
    compile::tables::{TableRule, build},
    ebpf::Datapath,
    policy::{Match, Proto},
};
use portguard_common::{config::Config, reason::Reason};

const OPEN_TCP: u16 = 5001;
const CLOSED_TCP: u16 = 5002;
const OPEN_UDP: u16 = 6081;
const CLOSED_UDP: u16 = 6082;

fn tables(pair: &Pair) -> portguard_common::tables::Tables {
    let peer = vec![ipnet::IpNet::from(pair.a4), ipnet::IpNet::from(pair.a6)];
    let rules = [
        TableRule {
            slot: 0,
            sources: peer.clone(),
            protos: vec![Proto::Tcp],
            matches: Match::Ports(vec![OPEN_TCP..=OPEN_TCP]),
        },
        TableRule {
            slot: 1,
            sources: peer,
            protos: vec![Proto::Udp],
            matches: Match::Ports(vec![OPEN_UDP..=OPEN_UDP]),
        },
        // Neighbour discovery, as essentials.toml opens it.
        TableRule {
            slot: 2,
            sources: vec!["::/0".parse().unwrap()],
            protos: vec![Proto::Icmpv6],
            matches: Match::Icmp {
                types: vec![133..=137],
                code: None,
            },
        },
    ];
    build(&rules, Config::default()).unwrap()
}

/// Accept connections on `port` in the protected namespace and echo one byte back.
fn tcp_echo(pair: &Pair, addr: SocketAddr) -> std::thread::JoinHandle<()> {
    let listener = pair.b.run(move || TcpListener::bind(addr).expect("bind"));
    std::thread::spawn(move || {
        for mut s in listener.incoming().flatten() {
            let mut b = [0u8; 1];
            if s.read_exact(&mut b).is_ok() {
                let _ = s.write_all(&b);
            }
        }
    })
}

fn connects(pair: &Pair, to: SocketAddr) -> bool {
    pair.a.run(move || {
        let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_millis(700)) else {
            return false;
        };
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut b = [7u8];
        s.write_all(&b).is_ok() && s.read_exact(&mut b).is_ok() && b == [7]
    })
}

fn check_mode(mode: XdpMode, subnet: u8) {
    let pair = Pair::new(subnet, 1500);
    let pins = PinDir::new();
    let (b_if, b4, b6, ns) = (
        pair.b_if.clone(),
        pair.b4,
        pair.b6,
        format!("/run/netns/{}", pair.b.name),
    );
    let t = tables(&pair);
    let pin_dir = pins.0.clone();
    // Load and attach from inside the protected namespace; the link lives with `dp`.
    let dp = std::thread::spawn(move || {
        integration_tests::net::enter(&ns);
        let mut dp = Datapath::load(&t, &pin_dir).expect("load");
        dp.set_local_addrs(&[b4, b6], &[]).unwrap();
        dp.program().unwrap().attach(&b_if, mode).expect("attach");
        dp
    })
    .join()
    .unwrap();
    let listener4 = tcp_echo(&pair, (pair.b4, OPEN_TCP).into());
    let _l6 = tcp_echo(&pair, (pair.b6, OPEN_TCP).into());
    let _c = tcp_echo(&pair, (pair.b4, CLOSED_TCP).into());
    assert!(
        connects(&pair, (pair.b4, OPEN_TCP).into()),
        "{mode:?}: allowed IPv4 TCP must connect"
    );
    assert!(
        connects(&pair, (pair.b6, OPEN_TCP).into()),
        "{mode:?}: allowed IPv6 TCP must connect"
    );
    assert!(
        !connects(&pair, (pair.b4, CLOSED_TCP).into()),
        "{mode:?}: TCP to a closed port must not connect"
    );
    assert_eq!(
        pair.udp_delivered(0, (pair.b4, OPEN_UDP).into(), 20),
        20,
        "{mode:?}: allowed UDP"
    );
    assert_eq!(
        pair.udp_delivered(0, (pair.b4, CLOSED_UDP).into(), 20),
        0,
        "{mode:?}: denied UDP"
    );
    let udp = dp.rule_counters(1).unwrap().packets;
    assert_eq!(udp, 20, "{mode:?}: one count per allowed datagram");
    let tcp = dp.rule_counters(0).unwrap().packets;
    assert!(
        tcp >= 8,
        "{mode:?}: two connections' packets counted on the TCP rule, got {tcp}"
    );
    let port_not_open = reason_packets(&dp, Reason::PortNotOpen);
    // 20 datagrams plus the SYN and its retransmissions within the connect timeout.
    assert!(
        port_not_open >= 21,
        "{mode:?}: denied packets counted, got {port_not_open}"
    );
    drop(listener4);
    drop(dp);
}

#[test]
fn enforces_on_veth_in_driver_mode() {
    check_mode(XdpMode::Driver, 10);
}

#[test]
fn enforces_on_veth_in_skb_mode() {
    check_mode(XdpMode::Skb, 11);
}
