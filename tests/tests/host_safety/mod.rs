//! Host-safety tests (issue #5): real traffic between namespaces through the program attached
//! inside the protected namespace, with essentials and failsafe compiled from the real files in
//! `policies/`.
//!
//! Each test checks three things: the traffic that must work works, the traffic that must not
//! work does not, and the counter that says why moved. A test that only checked connectivity
//! would also pass with no program attached; the counters tie the result to the datapath.
//!
//! [`policy`] compiles the site files, [`attached`] loads and attaches the program and reads its
//! counters, [`traffic`] makes the traffic; the tests are here.

mod attached;
mod policy;
mod traffic;

use std::net::{IpAddr, TcpStream};

use aya::programs::XdpMode;
use integration_tests::{
    DROP, PASS, TestDp,
    frames::{Frame, L4},
    net::{Bridged, Netns, Pair, Routed, VlanTags, add_addrs, test_addrs},
};
use portguard::policy::Proto;
use portguard_common::{
    config::{DROP as CFG_DROP, JUDGE},
    event::Event,
    reason::Reason,
};

use self::{
    attached::Attached,
    policy::{Compiled, ELSEWHERE, compile, open, site},
    traffic::{
        CONNECT, TcpServer, UdpEcho, assert_syn_dropped, connect, eventually, exchange, ping,
        settle, sock, tcp_call, udp_client, udp_received, udp_request, udp_send, udp_sink,
    },
};

// ---------------------------------------------------------------------------------------------
// 1. Replies to the host's own connections

fn replies_and_unsolicited(mode: XdpMode, subnet: u8) {
    let pair = Pair::new(subnet, 1500);
    // Nothing opened on the host but what essentials open; the failsafe is elsewhere.
    let c = compile(&site(&[ELSEWHERE], ""), &[], &[]);
    let servers = [
        TcpServer::start(&pair.a, sock(pair.a4, 0)),
        TcpServer::start(&pair.a, sock(pair.a6, 0)),
    ];
    let echoes = [
        UdpEcho::start(&pair.a, sock(pair.a4, 0)),
        UdpEcho::start(&pair.a, sock(pair.a6, 0)),
    ];
    // Connections opened before the program exists: no state was recorded for them.
    let mut before: Vec<TcpStream> = servers
        .iter()
        .map(|s| connect(&pair.b, s.addr, CONNECT).expect("connect before attach"))
        .collect();
    let mut at = Attached::new(&pair.b, &pair.b_if, &c, mode);
    for (s, srv) in before.iter_mut().zip(&servers) {
        exchange(s, 1000, 300_000).unwrap_or_else(|e| {
            panic!(
                "{mode:?}: connection opened before attach to {}: {e}",
                srv.addr
            )
        });
    }
    drop(before);
    for srv in &servers {
        tcp_call(&pair.b, srv.addr, 20_000, 1_000_000)
            .unwrap_or_else(|e| panic!("{mode:?}: outbound TCP to {}: {e}", srv.addr));
    }
    for (echo, local) in echoes.iter().zip([pair.b4, pair.b6]) {
        let client = udp_client(&pair.b, local, echo.addr);
        assert!(
            udp_request(&client, 1200),
            "{mode:?}: UDP request/response with {}",
            echo.addr
        );
    }
    // Each server saw its two exchanges end (the host closed first); the peer's closing FIN
    // then went to a host socket that was already in TIME_WAIT.
    assert!(servers.iter().all(|s| s.wait_served(2)), "exchanges ended");
    settle();
    assert!(at.reason(Reason::Reply) > 100, "{mode:?}: replies counted");
    assert_eq!(
        at.drops(),
        [],
        "{mode:?}: nothing of the host's own traffic may be dropped"
    );

    // Unsolicited: a SYN from the peer to the port of a live outbound connection.
    let mut live: Vec<TcpStream> = servers
        .iter()
        .map(|s| connect(&pair.b, s.addr, CONNECT).expect("live connection"))
        .collect();
    for s in &live {
        let port = s.local_addr().expect("local").port();
        let target = sock(s.local_addr().expect("local").ip(), port);
        assert_syn_dropped(&pair.a, target, "SYN to the host's ephemeral port");
    }
    assert!(
        at.reason(Reason::PortNotOpen) >= 2,
        "{mode:?}: the SYNs are counted as port-not-open: {:?}",
        at.drops()
    );
    let events = at.events();
    for s in &live {
        let port = s.local_addr().expect("local").port();
        assert!(
            events.iter().any(|e| e.dport == port
                && e.reason == Reason::PortNotOpen as u32
                && e.tcp_flags == 0x02),
            "{mode:?}: an audit event names the SYN to port {port}: {events:?}"
        );
    }
    // Unsolicited UDP to the port of the host's connected UDP socket, from another peer port.
    let client = udp_client(&pair.b, pair.b4, echoes[0].addr);
    let before_udp = at.reason(Reason::PortNotOpen);
    udp_send(
        &pair.a,
        pair.a4,
        client.local_addr().expect("local"),
        100,
        3,
    );
    eventually(|| at.reason(Reason::PortNotOpen) >= before_udp + 3);
    assert_eq!(
        at.reason(Reason::PortNotOpen),
        before_udp + 3,
        "{mode:?}: datagrams from another peer port are not replies"
    );
    // The connections whose ports were probed are unharmed.
    for s in &mut live {
        exchange(s, 10, 10).expect("live connection still works");
    }
}

#[test]
fn replies_to_own_connections_pass_and_unsolicited_syns_are_dropped_driver() {
    replies_and_unsolicited(XdpMode::Driver, 20);
}

#[test]
fn replies_to_own_connections_pass_and_unsolicited_syns_are_dropped_skb() {
    replies_and_unsolicited(XdpMode::Skb, 21);
}

// ---------------------------------------------------------------------------------------------
// 2. A guest bridged behind the protected NIC

#[test]
fn a_bridged_guest_keeps_full_connectivity_while_the_host_is_protected() {
    let br = Bridged::new(22, 1500);
    let pair = &br.pair;
    let c = compile(&site(&[ELSEWHERE], ""), &[], &[]);
    let at = Attached::new(&pair.b, &pair.b_if, &c, XdpMode::Driver);
    // Arbitrary ports on the guest, none of them in the host's policy.
    let guest_tcp = [
        TcpServer::start(&br.vm, sock(br.vm4, 3389)),
        TcpServer::start(&br.vm, sock(br.vm6, 40123)),
    ];
    let guest_udp = [
        UdpEcho::start(&br.vm, sock(br.vm4, 5353)),
        UdpEcho::start(&br.vm, sock(br.vm6, 161)),
    ];
    let peer_tcp = TcpServer::start(&pair.a, sock(pair.a4, 0));
    let host_tcp = TcpServer::start(&pair.b, sock(pair.b4, 3389));
    for srv in &guest_tcp {
        tcp_call(&pair.a, srv.addr, 100_000, 100_000)
            .unwrap_or_else(|e| panic!("peer -> guest TCP {}: {e}", srv.addr));
    }
    for (echo, local) in guest_udp.iter().zip([pair.a4, pair.a6]) {
        assert!(
            udp_request(&udp_client(&pair.a, local, echo.addr), 500),
            "peer -> guest UDP {}",
            echo.addr
        );
    }
    for to in [br.vm4, br.vm6] {
        assert!(ping(&pair.a, to), "peer pings guest {to}");
    }
    assert!(ping(&br.vm, pair.a4), "guest pings peer");
    tcp_call(&br.vm, peer_tcp.addr, 1000, 100_000).expect("guest -> peer TCP");
    assert!(
        at.reason(Reason::NotForHost) > 50,
        "guest traffic passed as not-for-host"
    );
    // The same port on the host itself is closed.
    assert_syn_dropped(&pair.a, host_tcp.addr, "peer -> host tcp/3389");
    assert!(at.reason(Reason::PortNotOpen) >= 1, "host port judged");
}

// ---------------------------------------------------------------------------------------------
// 3. ARP and neighbour discovery after the caches are flushed

fn neighbours_recover(broadcast: &str, subnet: u8) {
    let pair = Pair::new(subnet, 1500);
    let extra = [("TEST-TCP", open(&[pair.a4, pair.a6], Proto::Tcp, 8080))];
    let c = compile(&site(&[ELSEWHERE], broadcast), &[], &extra);
    let at = Attached::new(&pair.b, &pair.b_if, &c, XdpMode::Driver);
    let host = [
        TcpServer::start(&pair.b, sock(pair.b4, 8080)),
        TcpServer::start(&pair.b, sock(pair.b6, 8080)),
    ];
    let peer = [
        TcpServer::start(&pair.a, sock(pair.a4, 0)),
        TcpServer::start(&pair.a, sock(pair.a6, 0)),
    ];
    for round in 0..2 {
        let what = format!("{broadcast} round {round}");
        for ns in [&pair.a, &pair.b] {
            ns.exec(&["ip", "neigh", "flush", "all"]);
        }
        // The host resolves the peer first (its ARP reply and neighbour advertisement come in
        // through the program), then the peer resolves the host.
        for srv in &peer {
            tcp_call(&pair.b, srv.addr, 10, 10)
                .unwrap_or_else(|e| panic!("{what}: host -> {}: {e}", srv.addr));
        }
        for ns in [&pair.a, &pair.b] {
            ns.exec(&["ip", "neigh", "flush", "all"]);
        }
        for srv in &host {
            tcp_call(&pair.a, srv.addr, 10, 10)
                .unwrap_or_else(|e| panic!("{what}: peer -> {}: {e}", srv.addr));
        }
    }
    // At least one ARP frame reaches the host per round; how many more depends on whether a
    // side learned the other's address from its request before the flush took effect.
    assert!(at.reason(Reason::Arp) >= 2, "{broadcast}: ARP passed");
    assert!(
        at.hits(c.slot("ESS-ICMPV6-NS-NA")) >= 2,
        "{broadcast}: neighbour advertisements to the host matched the essentials rule"
    );
    assert!(
        at.hits(c.slot("TEST-TCP")) > 0,
        "{broadcast}: the open port was used"
    );
    settle();
    assert_eq!(at.drops(), [], "{broadcast}: nothing dropped");
}

#[test]
fn arp_and_neighbour_discovery_recover_after_flush() {
    neighbours_recover("", 23);
}

#[test]
fn arp_and_neighbour_discovery_recover_after_flush_with_judged_multicast() {
    neighbours_recover("[datapath]\nbroadcast = \"judge\"\n", 24);
}

// ---------------------------------------------------------------------------------------------
// 4. Ping

/// The protected host is an RHV Manager; the peer an RHV host, which RHV-M1/M1v6 allow to
/// ping the Manager. `disabled`: essentials features the site turns off.
fn rhv_manager(pair: &Pair, disabled: &str) -> Compiled {
    let site_toml = format!(
        "products = [\"rhv\"]\nmode = \"enforce\"\ndisabled_features = [{disabled}]\n\
         [roles]\n\"rhv.host\" = [\"{}/32\", \"{}/128\"]\n\
         [failsafe]\nssh_from = [\"{ELSEWHERE}\"]\n\
         [host]\nroles = [\"rhv.manager\"]\n",
        pair.a4, pair.a6
    );
    compile(&site_toml, &["rhv.manager"], &[])
}

#[test]
fn ping_of_an_allowed_host_works_both_ways() {
    let pair = Pair::new(25, 1500);
    let c = rhv_manager(&pair, "");
    let at = Attached::new(&pair.b, &pair.b_if, &c, XdpMode::Driver);
    for to in [pair.b4, pair.b6] {
        assert!(ping(&pair.a, to), "peer -> host echo to {to}");
    }
    assert!(
        at.hits(c.slot("RHV-M1")) >= 3,
        "echo requests matched RHV-M1"
    );
    assert!(
        at.hits(c.slot("RHV-M1v6")) >= 3,
        "echo requests matched RHV-M1v6"
    );
    for to in [pair.a4, pair.a6] {
        assert!(
            ping(&pair.b, to),
            "host -> peer echo to {to}: replies must come back"
        );
    }
    assert!(at.hits(c.slot("ESS-ICMP-ECHO-REPLY")) >= 3, "echo replies");
    assert!(
        at.hits(c.slot("ESS-ICMPV6-ECHO-REPLY")) >= 3,
        "ICMPv6 echo replies"
    );
    settle();
    assert_eq!(at.drops(), [], "nothing dropped");
}

#[test]
fn without_the_echo_reply_essentials_the_host_cannot_ping() {
    let pair = Pair::new(34, 1500);
    let c = rhv_manager(&pair, "\"echo-replies\"");
    let at = Attached::new(&pair.b, &pair.b_if, &c, XdpMode::Driver);
    assert!(
        ping(&pair.a, pair.b4),
        "peer -> host echo still allowed by RHV-M1"
    );
    assert!(
        !ping(&pair.b, pair.a4),
        "host -> peer: the replies are dropped"
    );
    assert!(
        at.reason(Reason::PortNotOpen) >= 1,
        "echo replies counted as denied"
    );
}

// ---------------------------------------------------------------------------------------------
// 5. Path MTU discovery

#[test]
fn path_mtu_discovery_works_across_an_mtu_step() {
    let line = Routed::new(26, 1500, 1280);
    // Full-size segments from the host (DF set, as Linux TCP always sets it) do not fit the
    // step: the transfer finishes only if the router's error reaches the host.
    let c = compile(&site(&[ELSEWHERE], ""), &[], &[]);
    let at = Attached::new(&line.host, &line.host_if, &c, XdpMode::Driver);
    let peer = [
        TcpServer::start(&line.peer, sock(line.peer4, 0)),
        TcpServer::start(&line.peer, sock(line.peer6, 0)),
    ];
    for srv in &peer {
        tcp_call(&line.host, srv.addr, 4_000_000, 8)
            .unwrap_or_else(|e| panic!("large transfer to {} through the router: {e}", srv.addr));
    }
    assert!(
        at.hits(c.slot("ESS-ICMP-FRAG-NEEDED")) >= 1,
        "fragmentation needed from {} matched its essentials rule",
        line.router4
    );
    assert!(
        at.hits(c.slot("ESS-ICMPV6-PTB")) >= 1,
        "packet too big from {} matched its essentials rule",
        line.router6
    );
    for to in [line.peer4, line.peer6] {
        let route = line.host.output(&["ip", "route", "get", &to.to_string()]);
        let route = String::from_utf8_lossy(&route.stdout);
        assert!(
            route.contains("mtu 1280"),
            "host learned the path MTU: {route}"
        );
    }
    settle();
    assert_eq!(at.drops(), [], "nothing dropped");
}

// ---------------------------------------------------------------------------------------------
// 6. Failsafe

#[test]
fn the_failsafe_source_reaches_ssh_and_nothing_else_does() {
    let pair = Pair::new(27, 1500);
    let admin4 = format!("{}/32", pair.a4);
    let admin6 = format!("{}/128", pair.a6);
    let c = compile(&site(&[&admin4, &admin6], ""), &[], &[]);
    let at = Attached::new(&pair.b, &pair.b_if, &c, XdpMode::Driver);
    let ssh = [
        TcpServer::start(&pair.b, sock(pair.b4, 22)),
        TcpServer::start(&pair.b, sock(pair.b6, 22)),
    ];
    let web = TcpServer::start(&pair.b, sock(pair.b4, 80));
    for srv in &ssh {
        tcp_call(&pair.a, srv.addr, 100, 100)
            .unwrap_or_else(|e| panic!("failsafe source -> {}: {e}", srv.addr));
    }
    assert!(
        at.hits(c.slot("FAILSAFE-SSH")) >= 6,
        "failsafe rule counted"
    );
    assert_syn_dropped(&pair.a, web.addr, "failsafe source -> tcp/80");
    // Another address of the same peer: routes to the host now prefer it as the source.
    let (other4, other6) = test_addrs(27, 9);
    add_addrs(&pair.a, &pair.a_if, other4, other6);
    for (host, other, len) in [(pair.b4, other4, "32"), (pair.b6, other6, "128")] {
        pair.a.exec(&[
            "ip",
            "route",
            "replace",
            &format!("{host}/{len}"),
            "dev",
            &pair.a_if,
            "src",
            &other.to_string(),
        ]);
    }
    for srv in &ssh {
        assert_syn_dropped(&pair.a, srv.addr, "non-failsafe source -> tcp/22");
    }
    assert!(
        at.reason(Reason::SourceNotAllowed) >= 2,
        "tcp/22 is open, but not to this source: {:?}",
        at.drops()
    );
}

// ---------------------------------------------------------------------------------------------
// 7. Fragmented UDP

#[test]
fn fragmented_udp_to_an_open_port_arrives_and_to_a_closed_port_does_not() {
    let pair = Pair::new(28, 1500);
    let extra = [("TEST-UDP", open(&[pair.a4, pair.a6], Proto::Udp, 7000))];
    let c = compile(&site(&[ELSEWHERE], ""), &[], &extra);
    let at = Attached::new(&pair.b, &pair.b_if, &c, XdpMode::Driver);
    for (src, dst) in [(pair.a4, pair.b4), (pair.a6, pair.b6)] {
        let open_sink = udp_sink(&pair.b, sock(dst, 7000));
        let closed_sink = udp_sink(&pair.b, sock(dst, 7001));
        // 4000 bytes do not fit a 1500-byte MTU: the sender's kernel fragments each datagram
        // into three.
        udp_send(&pair.a, src, sock(dst, 7000), 4000, 3);
        udp_send(&pair.a, src, sock(dst, 7001), 4000, 3);
        assert_eq!(udp_received(&open_sink), [4000; 3], "open port, {dst}");
        assert_eq!(
            udp_received(&closed_sink),
            [0usize; 0],
            "closed port, {dst}"
        );
    }
    assert!(
        at.hits(c.slot("TEST-UDP")) >= 18,
        "every fragment of the allowed datagrams counted on the rule"
    );
    assert!(
        at.reason(Reason::FragmentDropped) >= 12,
        "later fragments of denied datagrams dropped as fragments: {:?}",
        at.drops()
    );
}

// ---------------------------------------------------------------------------------------------
// 8. VLAN tags

/// Tagged traffic to the host: `tags` (outermost first) on every frame from the peer, in the
/// frame or as offloaded metadata (see `VlanTags`), the program on the untagged parent veth.
fn vlan_judged(tags: &[(u16, u16)], in_frame: bool, subnet: u8) {
    let pair = Pair::new(subnet, 1500);
    let _tags = VlanTags::new(&pair, tags, in_frame);
    let extra = [
        ("TEST-TCP", open(&[pair.a4, pair.a6], Proto::Tcp, 8080)),
        ("TEST-UDP", open(&[pair.a4, pair.a6], Proto::Udp, 7000)),
    ];
    let mut c = compile(&site(&[ELSEWHERE], ""), &[], &extra);
    c.tables.config.audit_rate = 1000;
    c.tables.config.audit_burst = 1000;
    let mut at = Attached::new(&pair.b, &pair.b_if, &c, XdpMode::Driver);
    let what = format!("tags {tags:x?}, in frame: {in_frame}");
    for host in [pair.b4, pair.b6] {
        let srv = TcpServer::start(&pair.b, sock(host, 8080));
        tcp_call(&pair.a, srv.addr, 1000, 1000)
            .unwrap_or_else(|e| panic!("{what}: TCP to open port {}: {e}", srv.addr));
        let closed = TcpServer::start(&pair.b, sock(host, 8081));
        assert_syn_dropped(&pair.a, closed.addr, &what);
    }
    for (src, dst) in [(pair.a4, pair.b4), (pair.a6, pair.b6)] {
        let open_sink = udp_sink(&pair.b, sock(dst, 7000));
        let closed_sink = udp_sink(&pair.b, sock(dst, 7001));
        udp_send(&pair.a, src, sock(dst, 7000), 100, 3);
        udp_send(&pair.a, src, sock(dst, 7001), 100, 3);
        assert_eq!(
            udp_received(&open_sink).len(),
            3,
            "{what}: UDP to open port"
        );
        assert!(
            udp_received(&closed_sink).is_empty(),
            "{what}: UDP to closed port"
        );
    }
    assert!(
        at.hits(c.slot("TEST-TCP")) >= 8,
        "{what}: TCP counted on its rule"
    );
    // Frame lengths as the program saw them: Ethernet, the tags it saw, IP, UDP, 100 bytes.
    let seen = if in_frame { 4 * tags.len() as u64 } else { 0 };
    assert_eq!(
        at.bytes(c.slot("TEST-UDP")),
        3 * (14 + seen + 20 + 8 + 100) + 3 * (14 + seen + 40 + 8 + 100),
        "{what}: six datagrams counted on their rule, with the tags in the frame iff in_frame"
    );
    let events = at.events();
    let denied: Vec<&Event> = events.iter().filter(|e| e.dport == 7001).collect();
    assert_eq!(
        denied.len(),
        6,
        "{what}: every denied datagram reported: {events:?}"
    );
    let inner = if in_frame { tags[tags.len() - 1].1 } else { 0 };
    assert!(
        denied.iter().all(|e| e.vlan == inner),
        "{what}: events carry the innermost VLAN id the program parsed: {denied:?}"
    );
}

#[test]
fn vlan_tagged_traffic_is_judged_with_tag_offload() {
    vlan_judged(&[(0x8100, 100)], false, 29);
}

#[test]
fn vlan_tagged_traffic_is_judged_with_the_tag_in_the_frame() {
    vlan_judged(&[(0x8100, 100)], true, 30);
}

#[test]
fn qinq_tagged_traffic_is_judged_with_both_tags_in_the_frame() {
    vlan_judged(&[(0x88a8, 200), (0x8100, 100)], true, 33);
}

// ---------------------------------------------------------------------------------------------
// 9. MTU 9000

fn jumbo(mode: XdpMode, subnet: u8) {
    let pair = Pair::new(subnet, 9000);
    let extra = [
        ("TEST-TCP", open(&[pair.a4, pair.a6], Proto::Tcp, 8080)),
        ("TEST-UDP", open(&[pair.a4, pair.a6], Proto::Udp, 7000)),
    ];
    let c = compile(&site(&[ELSEWHERE], ""), &[], &extra);
    let at = Attached::new(&pair.b, &pair.b_if, &c, mode);
    for (src, dst) in [(pair.a4, pair.b4), (pair.a6, pair.b6)] {
        let open_sink = udp_sink(&pair.b, sock(dst, 7000));
        let closed_sink = udp_sink(&pair.b, sock(dst, 7001));
        // 8900 bytes of payload: one frame of about 8950 bytes, more than a page, so the
        // program sees it as a multi-buffer frame in native mode.
        udp_send(&pair.a, src, sock(dst, 7000), 8900, 3);
        udp_send(&pair.a, src, sock(dst, 7001), 8900, 3);
        assert_eq!(
            udp_received(&open_sink),
            [8900; 3],
            "{mode:?}: jumbo UDP to {dst}"
        );
        assert!(
            udp_received(&closed_sink).is_empty(),
            "{mode:?}: closed jumbo UDP"
        );
    }
    let udp = at.dp.rule_counters(c.slot("TEST-UDP")).expect("counters");
    assert_eq!(
        udp.packets, 6,
        "{mode:?}: one count per unfragmented jumbo datagram"
    );
    assert!(
        udp.bytes >= 6 * 8900,
        "{mode:?}: the program saw whole jumbo frames ({} bytes)",
        udp.bytes
    );
    for dst in [pair.b4, pair.b6] {
        let srv = TcpServer::start(&pair.b, sock(dst, 8080));
        tcp_call(&pair.a, srv.addr, 8_000_000, 100)
            .unwrap_or_else(|e| panic!("{mode:?}: jumbo TCP transfer to {}: {e}", srv.addr));
        let closed = TcpServer::start(&pair.b, sock(dst, 8081));
        assert_syn_dropped(&pair.a, closed.addr, "jumbo link, closed port");
    }
    let tcp_bytes = at.bytes(c.slot("TEST-TCP"));
    assert!(
        tcp_bytes >= 16_000_000,
        "{mode:?}: the transfers crossed the program ({tcp_bytes} bytes)"
    );
    assert!(
        at.reason(Reason::PortNotOpen) >= 8,
        "{mode:?}: closed ports judged"
    );
}

#[test]
fn mtu_9000_works_in_driver_mode() {
    jumbo(XdpMode::Driver, 31);
}

#[test]
fn mtu_9000_works_in_skb_mode() {
    jumbo(XdpMode::Skb, 32);
}

// ---------------------------------------------------------------------------------------------
// DHCP client replies (crafted frames: no DHCP server needed)

#[test]
fn dhcp_client_replies_pass_as_essentials_claim() {
    const HOST4: [u8; 4] = [198, 18, 33, 2];
    const SERVER4: [u8; 4] = [198, 18, 33, 1];
    const HOST_LL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    const SERVER_LL: [u8; 16] = [0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let udp = |sport, dport| L4::Udp { sport, dport };
    let offer = |dst: [u8; 4], dport| {
        let mut f = Frame::v4(SERVER4, dst, udp(67, dport));
        if dst == [255; 4] {
            f.dst_mac = [0xff; 6];
        }
        f.build()
    };
    let dhcpv6 = Frame::v6(SERVER_LL, HOST_LL, udp(547, 546)).build();
    for datapath in ["", "[datapath]\nbroadcast = \"judge\"\n"] {
        let c = compile(&site(&[ELSEWHERE], datapath), &[], &[]);
        let judge = c.tables.config.broadcast == JUDGE;
        let (frames_ok, frames_bad) = (
            [offer([255; 4], 68), offer(HOST4, 68), dhcpv6.clone()],
            offer(HOST4, 69),
        );
        Netns::new().run(move || {
            let mut t = TestDp::new(&c.tables);
            t.dp.set_local_addrs(
                &[IpAddr::from(HOST4), IpAddr::from(HOST_LL)],
                &[IpAddr::from([198, 18, 33, 255])],
            )
            .expect("local addresses");
            for f in &frames_ok {
                assert_eq!(t.run(f), PASS, "judge={judge}: DHCP reply {f:02x?}");
            }
            assert_eq!(
                t.run(&frames_bad),
                DROP,
                "judge={judge}: udp/69 stays closed"
            );
            let v4 =
                t.dp.rule_counters(c.slot("ESS-DHCPV4-CLIENT"))
                    .unwrap()
                    .packets;
            let v6 =
                t.dp.rule_counters(c.slot("ESS-DHCPV6-CLIENT"))
                    .unwrap()
                    .packets;
            // Broadcast offers pass before the rules unless broadcast is judged.
            assert_eq!(v4, if judge { 2 } else { 1 }, "judge={judge}: DHCPv4 rule");
            assert_eq!(v6, 1, "judge={judge}: DHCPv6 rule");
        });
    }
    // A server that does not broadcast unicasts the offer to the address it offers (RFC 2131
    // §4.1), which is not the host's yet. With `not_for_host = "drop"` (no guests behind this
    // NIC) it must still be judged as the host's DHCP reply, not dropped as another host's.
    let c = compile(
        &site(&[ELSEWHERE], "[datapath]\nnot_for_host = \"drop\"\n"),
        &[],
        &[],
    );
    assert_eq!(c.tables.config.not_for_host, CFG_DROP);
    let (to_offered, other) = (offer([198, 18, 33, 77], 68), offer([198, 18, 33, 77], 69));
    Netns::new().run(move || {
        let mut t = TestDp::new(&c.tables);
        t.dp.set_local_addrs(&[IpAddr::from(HOST4)], &[])
            .expect("local addresses");
        assert_eq!(t.run(&to_offered), PASS, "offer to the offered address");
        assert_eq!(t.run(&other), DROP, "other traffic for that address");
        let rule =
            t.dp.rule_counters(c.slot("ESS-DHCPV4-CLIENT"))
                .unwrap()
                .packets;
        assert_eq!(rule, 1, "the offer counted on the DHCPv4 rule");
    });
    // With the features off (a statically addressed host) the same replies are denied.
    let off = "disabled_features = [\"dhcpv4-client\", \"dhcpv6-client\"]\n";
    let c = compile(&site(&[ELSEWHERE], off), &[], &[]);
    assert!(!c.slots.contains_key("ESS-DHCPV4-CLIENT"));
    let unicast = offer(HOST4, 68);
    Netns::new().run(move || {
        let mut t = TestDp::new(&c.tables);
        t.dp.set_local_addrs(&[IpAddr::from(HOST4), IpAddr::from(HOST_LL)], &[])
            .expect("local addresses");
        assert_eq!(t.run(&unicast), DROP, "DHCPv4 off");
        assert_eq!(t.run(&dhcpv6), DROP, "DHCPv6 off");
    });
}
