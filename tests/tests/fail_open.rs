//! Never fail open, never break the host: what independent tools and real setups found, each
//! tried again with real traffic against the real daemon (issue #17).
//!
//! The site is the daemon tests' one (`daemon::site`): the peer is the RHV Manager and an RHV
//! host, so tcp/54321 (H10) and udp/6081 (H12) are open to it and nothing else is; port 5555
//! is open to nobody.

use std::{
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::unix::fs::{MetadataExt as _, PermissionsExt as _},
    thread,
    time::{Duration, Instant},
};

use integration_tests::{
    daemon::{Daemon, VDSM, binary, policies_dir, site},
    net::{Netns, Pair},
    unique,
};
use portguard::ebpf::links;
use socket2::{Domain, Socket, Type};

/// A port no rule opens to anybody.
const CLOSED: u16 = 5555;

/// Listen on `CLOSED` and `VDSM` on every address of the protected side (wildcard sockets
/// accept on any local address: on `lo`, `AnyIP` routes, addresses added later).
fn wildcard_listeners(ns: &Netns) {
    for port in [CLOSED, VDSM] {
        for any in ["0.0.0.0", "::"] {
            let addr = SocketAddr::new(any.parse().expect("addr"), port);
            let l = ns.run(move || listen_on(addr));
            thread::spawn(move || {
                for mut c in l.incoming().flatten() {
                    let _ = c.write_all(b"hello");
                }
            });
        }
    }
}

/// A socket of `ty` for `addr`'s family; IPv6 ones only IPv6 (so both families can bind a
/// port).
fn socket_for(addr: SocketAddr, ty: Type) -> Socket {
    let s = Socket::new(Domain::for_address(addr), ty, None).expect("socket");
    if addr.is_ipv6() {
        s.set_only_v6(true).expect("IPV6_V6ONLY");
    }
    s
}

/// A listening socket on `addr`.
fn listen_on(addr: SocketAddr) -> TcpListener {
    let s = socket_for(addr, Type::STREAM);
    s.set_reuse_address(true).expect("SO_REUSEADDR");
    s.bind(&addr.into())
        .unwrap_or_else(|e| panic!("bind {addr}: {e}"));
    s.listen(128).expect("listen");
    s.into()
}

/// Whether a TCP connection from `from` to `to` opens and says hello.
fn connects_to(from: &Netns, to: SocketAddr) -> bool {
    from.run(move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(800))
            .and_then(|mut s| {
                s.set_read_timeout(Some(Duration::from_millis(800)))?;
                let mut b = [0u8; 5];
                s.read_exact(&mut b)
            })
            .is_ok()
    })
}

/// Whether `dev` in `ns` runs an XDP program.
fn has_xdp(ns: &Netns, dev: &str) -> bool {
    let out = ns.output(&["ip", "-d", "link", "show", "dev", dev]);
    String::from_utf8_lossy(&out.stdout).contains("prog/xdp")
}

/// Wait up to `limit` for `f` to hold.
fn eventually(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(100));
    }
    f()
}

#[test]
fn fragmented_answers_to_the_hosts_own_requests_arrive() {
    let pair = Pair::new(101, 1500);
    let _d = Daemon::start(&pair.b, &site(&pair, false), &[]);
    // The peer answers any datagram with 4000 bytes: three fragments at MTU 1500.
    for peer in [pair.a4, pair.a6] {
        let server = pair
            .a
            .run(move || UdpSocket::bind(SocketAddr::new(peer, 5400)).expect("bind"));
        thread::spawn(move || {
            let mut buf = [0u8; 64];
            while let Ok((_, from)) = server.recv_from(&mut buf) {
                let _ = server.send_to(&[7u8; 4000], from);
            }
        });
    }
    for (peer, local) in [(pair.a4, pair.b4), (pair.a6, pair.b6)] {
        let to = SocketAddr::new(peer, 5400);
        // Connected socket (found by socket lookup) and sendto on an unconnected one (found
        // by the egress recorder): both get the whole answer.
        for connected in [true, false] {
            let got = pair.b.run(move || {
                let s = UdpSocket::bind(SocketAddr::new(local, 0)).expect("bind");
                s.set_read_timeout(Some(Duration::from_secs(2)))
                    .expect("timeout");
                if connected {
                    s.connect(to).expect("connect");
                    s.send(b"q").expect("send");
                } else {
                    s.send_to(b"q", to).expect("send");
                }
                let mut buf = [0u8; 8192];
                s.recv(&mut buf).map_or(0, |n| n)
            });
            assert_eq!(
                got,
                4000,
                "{} answer from {to} (connected: {connected}) did not arrive whole",
                if peer.is_ipv4() { "IPv4" } else { "IPv6" }
            );
        }
    }
}

#[test]
fn addresses_on_lo_and_anyip_routes_are_judged_like_any_of_the_hosts() {
    let pair = Pair::new(102, 1500);
    let d = Daemon::start(&pair.b, &site(&pair, false), &[]);
    let vip4: IpAddr = "198.18.202.50".parse().expect("addr");
    let vip6: IpAddr = "2001:db8:202::50".parse().expect("addr");
    let anyip: IpAddr = "198.19.102.7".parse().expect("addr");
    pair.b
        .exec(&["ip", "addr", "add", "198.18.202.50/32", "dev", "lo"]);
    pair.b.exec(&[
        "ip",
        "-6",
        "addr",
        "add",
        "2001:db8:202::50/128",
        "dev",
        "lo",
    ]);
    pair.b.exec(&[
        "ip",
        "route",
        "add",
        "local",
        "198.19.102.0/24",
        "dev",
        "lo",
    ]);
    for (net, via) in [("198.18.202.50/32", pair.b4), ("198.19.102.0/24", pair.b4)] {
        pair.a
            .exec(&["ip", "route", "add", net, "via", &via.to_string()]);
    }
    pair.a.exec(&[
        "ip",
        "-6",
        "route",
        "add",
        "2001:db8:202::50/128",
        "via",
        &pair.b6.to_string(),
    ]);
    wildcard_listeners(&pair.b);
    for a in [vip4, vip6, anyip] {
        assert!(
            connects_to(&pair.a, SocketAddr::new(a, VDSM)),
            "{a}: H10 opens tcp/{VDSM} to the peer on every address of the host"
        );
        assert!(
            !connects_to(&pair.a, SocketAddr::new(a, CLOSED)),
            "{a}: tcp/{CLOSED} is open to nobody, on lo and AnyIP addresses too\n{}",
            d.log_text()
        );
    }
}

#[test]
fn a_new_address_is_judged_from_its_first_packet() {
    let pair = Pair::new(103, 1500);
    let _d = Daemon::start(&pair.b, &site(&pair, false), &[]);
    wildcard_listeners(&pair.b);
    let fresh: IpAddr = "198.18.103.77".parse().expect("addr");
    let to = SocketAddr::new(fresh, CLOSED);
    // A SYN every 2 ms (each a new non-blocking connect) from before the address exists until
    // well after: the peer's kernel holds them while it resolves the address, and sends them
    // the moment the host answers ARP, i.e. right after `ip addr add`.
    let attempts = pair.a.spawn(move || {
        let mut socks = Vec::new();
        let end = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < end {
            let s = nonblocking_connect(to);
            socks.push(s);
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(800));
        socks.iter().filter(|s| is_connected(s)).count()
    });
    thread::sleep(Duration::from_millis(300));
    pair.b.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{fresh}/24"),
        "dev",
        &pair.b_if,
    ]);
    let connected = attempts.join().expect("attempts");
    assert_eq!(
        connected, 0,
        "SYNs to tcp/{CLOSED} of an address added under them were answered"
    );
    assert!(
        connects_to(&pair.a, SocketAddr::new(fresh, VDSM)),
        "the new address works for what the policy allows"
    );
}

/// `portguard run` started once outside the test harness (it is expected to refuse to start):
/// its pins in `pins`, its run and state directories beside the site file.
fn run_once(site_path: &std::path::Path, pins: &std::path::Path) -> std::process::Output {
    let run = site_path.with_file_name("run");
    std::process::Command::new(binary())
        .args(["run", "--site"])
        .arg(site_path)
        .arg("--policies")
        .arg(policies_dir())
        .arg("--pin-dir")
        .arg(pins)
        .arg("--run-dir")
        .arg(&run)
        .arg("--state-dir")
        .arg(run.join("state"))
        .output()
        .expect("run")
}

/// Start a non-blocking TCP connect to `to`.
fn nonblocking_connect(to: SocketAddr) -> Socket {
    let s = Socket::new(Domain::for_address(to), Type::STREAM, None).expect("socket");
    s.set_nonblocking(true).expect("nonblocking");
    // EINPROGRESS is the expected answer; whether it completed is asked later.
    let _ = s.connect(&to.into());
    s
}

/// Whether a non-blocking connect completed.
fn is_connected(s: &Socket) -> bool {
    matches!(s.take_error(), Ok(None)) && s.peer_addr().is_ok()
}

/// Datagrams to `targets` from the peer: how many reached a socket bound to the wildcard
/// address of `port` on the protected side.
fn udp_reaching_wildcard(pair: &Pair, port: u16, targets: &[SocketAddr]) -> usize {
    let rx4 = pair
        .b
        .run(move || UdpSocket::bind(SocketAddr::new("0.0.0.0".parse().unwrap(), port)).unwrap());
    let rx6 = pair.b.run(move || {
        let any = SocketAddr::new("::".parse().unwrap(), port);
        let s = socket_for(any, Type::DGRAM);
        s.bind(&any.into()).expect("bind [::]");
        UdpSocket::from(s)
    });
    let targets = targets.to_vec();
    let ifindex = pair.a.run({
        let dev = pair.a_if.clone();
        move || {
            let c = std::ffi::CString::new(dev).expect("name");
            // SAFETY: a valid NUL-terminated name.
            unsafe { libc::if_nametoindex(c.as_ptr()) }
        }
    });
    pair.a.run(move || {
        let tx4 = UdpSocket::bind("0.0.0.0:0").expect("bind");
        tx4.set_broadcast(true).expect("broadcast");
        let tx6 = UdpSocket::bind("[::]:0").expect("bind6");
        for t in targets {
            let t = match t {
                SocketAddr::V6(mut v6) if v6.ip().segments()[0] == 0xff02 => {
                    v6.set_scope_id(ifindex);
                    SocketAddr::V6(v6)
                }
                other => other,
            };
            for _ in 0..3 {
                let _ = if t.is_ipv4() {
                    tx4.send_to(b"x", t)
                } else {
                    tx6.send_to(b"x", t)
                };
            }
        }
    });
    let mut got = 0;
    for rx in [rx4, rx6] {
        rx.set_read_timeout(Some(Duration::from_millis(400)))
            .expect("timeout");
        let mut buf = [0u8; 16];
        while rx.recv(&mut buf).is_ok() {
            got += 1;
        }
    }
    got
}

#[test]
fn wildcard_udp_services_do_not_answer_broadcast_or_multicast() {
    let pair = Pair::new(104, 1500);
    let site_path = site(&pair, false);
    // The host's address was added without `brd` (Pair does so): the kernel still installs
    // the subnet's broadcast route, and that is what counts.
    let targets: Vec<SocketAddr> = [
        "198.18.104.255:5353",
        "255.255.255.255:5353",
        "[ff02::1]:5353",
        "[ff02::fb]:5353",
    ]
    .iter()
    .map(|t| t.parse().expect("target"))
    .collect();
    {
        let _d = Daemon::start(&pair.b, &site_path, &[]);
        let got = udp_reaching_wildcard(&pair, 5353, &targets);
        assert_eq!(
            got, 0,
            "udp/5353 is open to nobody, by broadcast and multicast too"
        );
    }
    // The same with broadcast passed (the old default): they arrive, so the check above saw
    // a drop, not a datagram that never left.
    let text = std::fs::read_to_string(&site_path).expect("site").replace(
        "[failsafe]",
        "[datapath]\nbroadcast = \"pass\"\n\n[failsafe]",
    );
    std::fs::write(&site_path, text).expect("write");
    let _d = Daemon::start(&pair.b, &site_path, &[]);
    let got = udp_reaching_wildcard(&pair, 5353, &targets);
    assert!(got >= 4, "with broadcast = \"pass\" they arrive ({got})");
}

#[test]
fn files_the_daemon_writes_are_roots_alone_whatever_the_umask() {
    let pair = Pair::new(105, 1500);
    let d = Daemon::start_with_umask(&pair.b, &site(&pair, false), &[], 0);
    let mode = |p: &std::path::Path| std::fs::metadata(p).expect("stat").mode() & 0o777;
    assert_eq!(mode(&d.run_dir), 0o700, "run directory");
    assert_eq!(mode(&d.run_dir.join("state.json")), 0o600, "state file");
    assert!(eventually(Duration::from_secs(10), || d
        .run_dir
        .join("counters.json")
        .exists()));
    assert_eq!(
        mode(&d.run_dir.join("counters.json")),
        0o600,
        "counter sample"
    );
    assert_eq!(mode(&d.pins.0), 0o700, "pin directory");
}

#[test]
fn a_site_file_others_can_write_is_refused_by_run() {
    let pair = Pair::new(106, 1500);
    let site_path = site(&pair, false);
    std::fs::set_permissions(&site_path, std::fs::Permissions::from_mode(0o666)).expect("chmod");
    let pins = std::path::Path::new("/sys/fs/bpf").join(unique("pg-writable-"));
    let out = run_once(&site_path, &pins);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("writable by its group or by every user"),
        "{err}"
    );
    assert!(!pins.exists(), "nothing created");
}

#[test]
fn a_pin_directory_someone_else_created_is_refused() {
    let pair = Pair::new(107, 1500);
    let site_path = site(&pair, false);
    let pins = std::path::Path::new("/sys/fs/bpf").join(unique("pg-squat-"));
    std::fs::create_dir(&pins).expect("mkdir");
    std::os::unix::fs::chown(&pins, Some(65534), Some(65534)).expect("chown");
    let out = run_once(&site_path, &pins);
    let _ = std::fs::remove_dir_all(&pins);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("owned by uid 65534"), "{err}");
    assert!(!has_xdp(&pair.b, &pair.b_if), "nothing attached");
}

#[test]
fn detach_works_from_the_pins_when_the_state_file_is_corrupt() {
    let pair = Pair::new(108, 1500);
    let mut d = Daemon::start(&pair.b, &site(&pair, false), &[]);
    d.kill9();
    std::fs::write(d.run_dir.join("state.json"), b"{ not json").expect("corrupt");
    assert!(has_xdp(&pair.b, &pair.b_if));
    let out = d.cli(&["detach"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !has_xdp(&pair.b, &pair.b_if),
        "detached although the state was unreadable"
    );
    assert!(!d.pins.0.exists(), "no pin left");
}

#[test]
fn a_link_removed_behind_the_daemons_back_is_noticed_and_repaired() {
    let pair = Pair::new(109, 1500);
    let d = Daemon::start(&pair.b, &site(&pair, false), &[]);
    wildcard_listeners(&pair.b);
    let pin = links::link_pin(&d.pins.0, &pair.b_if);
    // The link pin is the only reference: removing it detaches the program at once.
    std::fs::remove_file(&pin).expect("rm the link pin");
    assert!(
        // Whichever notices first, the self-test or the netlink event the detach causes.
        eventually(Duration::from_secs(20), || (d
            .log_text()
            .contains("self-test:")
            || d.log_text().contains("its XDP link was gone"))
            && pin.exists()
            && has_xdp(&pair.b, &pair.b_if)),
        "the self-test did not notice and re-attach:\n{}",
        d.log_text()
    );
    let state = d.state().expect("state");
    assert!(
        state["health"]["failures"].as_u64().unwrap_or(0) >= 1,
        "{state}"
    );
    assert!(
        !connects_to(&pair.a, SocketAddr::new(pair.b4, CLOSED)),
        "enforcing again"
    );
}

#[test]
fn status_says_not_enforcing_when_a_program_is_gone() {
    let pair = Pair::new(110, 1500);
    let mut d = Daemon::start(&pair.b, &site(&pair, false), &[]);
    let ok = d.cli(&["status"]);
    assert_eq!(
        ok.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&ok.stdout)
    );
    // Without the daemon nothing repairs it: status reads the kernel and says so.
    d.kill9();
    std::fs::remove_file(links::link_pin(&d.pins.0, &pair.b_if)).expect("rm");
    let out = d.cli(&["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("NOT ENFORCING"), "{text}");
}

#[test]
fn run_refuses_a_bpffs_that_would_die_with_it() {
    let pair = Pair::new(111, 1500);
    let site_path = site(&pair, false);
    // `ip netns exec` gives the process a mount namespace of its own with /sys remounted:
    // no bpffs there, and one mounted there would vanish with the process.
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &pair.b.name])
        .arg(binary())
        .args(["run", "--site"])
        .arg(&site_path)
        .arg("--policies")
        .arg(policies_dir())
        .args(["--pin-dir", "/sys/fs/bpf/pgprivate"])
        .arg("--run-dir")
        .arg(site_path.with_file_name("run"))
        .arg("--state-dir")
        .arg(std::path::Path::new(&site_path.with_file_name("run")).join("state"))
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("mount namespace of its own"), "{err}");
    assert!(!has_xdp(&pair.b, &pair.b_if), "nothing attached");
}

#[test]
fn run_without_a_site_file_fails_saying_so() {
    let state = std::env::temp_dir().join(unique("pg-nosite-"));
    let out = std::process::Command::new(binary())
        .args(["run", "--site", "/nonexistent/portguard/site.toml"])
        .arg("--state-dir")
        .arg(&state)
        .output()
        .expect("run");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("no site file at /nonexistent/portguard/site.toml"),
        "{err}"
    );
}

#[test]
fn a_host_that_boots_with_a_broken_or_missing_site_enforces_the_last_good_policy() {
    let pair = Pair::new(112, 1500);
    let site_path = site(&pair, false);
    let good = std::fs::read_to_string(&site_path).expect("site");
    wildcard_listeners(&pair.b);
    let mut d = Daemon::start(&pair.b, &site_path, &[]);
    assert!(
        d.state_dir().join("last-good/current/site.toml").is_file(),
        "the confirmed policy is saved where reboots do not reach"
    );
    // A reboot: the pins and the run directory's state are gone, the state directory stays.
    let reboot = |d: &mut Daemon| {
        d.kill9();
        let out = d.cli(&["detach"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !has_xdp(&pair.b, &pair.b_if),
            "nothing enforces after the reboot"
        );
    };
    let enforcing_the_last_good = |d: &Daemon| {
        assert!(has_xdp(&pair.b, &pair.b_if), "{}", d.log_text());
        assert!(
            connects_to(&pair.a, SocketAddr::new(pair.b4, VDSM)),
            "what the last good policy allows still works"
        );
        assert!(
            !connects_to(&pair.a, SocketAddr::new(pair.b4, CLOSED)),
            "and nothing else reaches the host"
        );
        let out = d.cli(&["status"]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "not what the site says: {text}");
        assert!(text.contains("enforcing the last good policy"), "{text}");
    };

    reboot(&mut d);
    std::fs::write(&site_path, "products = [\"rhv\"\n").expect("break the site");
    d.restart();
    enforcing_the_last_good(&d);
    // The site is fixed and reloaded: it is in force, and status is content again.
    std::fs::write(&site_path, &good).expect("fix the site");
    d.sighup();
    assert!(
        eventually(Duration::from_secs(20), || d.cli(&["status"]).status.code()
            == Some(0)),
        "{}",
        String::from_utf8_lossy(&d.cli(&["status"]).stdout)
    );

    reboot(&mut d);
    std::fs::remove_file(&site_path).expect("remove the site");
    d.restart();
    enforcing_the_last_good(&d);
}

#[test]
fn a_new_interface_is_judged_from_its_first_packet() {
    let pair = Pair::new(113, 1500);
    // No `interfaces =`: every interface with a global address is protected, so a new one is
    // attached when it gets its address. Its far end is a manager too (for the allowed check);
    // its addresses are outside the pair's subnet, so nothing reaches them through the pair.
    let site_path = site(&pair, false);
    let text = std::fs::read_to_string(&site_path)
        .expect("site")
        .replace(&format!("interfaces = [\"{}\"]\n", pair.b_if), "")
        .replace(
            "\"rhv.manager\" = [",
            "\"rhv.manager\" = [\"198.19.113.1/32\", ",
        );
    std::fs::write(&site_path, text).expect("write");
    let d = Daemon::start(&pair.b, &site_path, &[]);
    wildcard_listeners(&pair.b);
    let (near, far) = (unique("pgn"), unique("pgf"));
    let far_mac = "02:00:00:00:71:13";
    pair.a.exec(&[
        "ip",
        "link",
        "add",
        &near,
        "type",
        "veth",
        "peer",
        "name",
        &far,
        "address",
        far_mac,
        "netns",
        &pair.b.name,
    ]);
    pair.a
        .exec(&["ip", "addr", "add", "198.19.113.1/24", "dev", &near]);
    pair.a.exec(&["ip", "link", "set", &near, "up"]);
    // The peer knows the far end's MAC already (a switch's or router's cache does): its SYNs
    // go out the moment the far end is up, not a second later after ARP retries.
    pair.a.exec(&[
        "ip",
        "neigh",
        "replace",
        "198.19.113.2",
        "lladdr",
        far_mac,
        "dev",
        &near,
        "nud",
        "permanent",
    ]);
    // The address first, the link still down, as a network manager configures an interface:
    // the daemon attaches on the address event, with the pinned program (nothing to load), so
    // the program is there before the link can carry a frame. (An interface brought up before
    // it has an address is attached a few milliseconds after its address event instead, and
    // frames to the host's other addresses through it are not judged until then: the daemon
    // learns of it through rtnetlink, after the fact. docs/robustness.md says so.)
    pair.b
        .exec(&["ip", "addr", "add", "198.19.113.2/24", "dev", &far]);
    assert!(
        eventually(Duration::from_secs(10), || has_xdp(&pair.b, &far)),
        "the daemon did not attach to the new interface on its address: {}",
        d.log_text()
    );
    assert_eq!(
        d.log_text().matches("loaded program").count(),
        1,
        "the new interface got the pinned program, nothing loaded: {}",
        d.log_text()
    );
    let to = SocketAddr::new("198.19.113.2".parse().expect("addr"), CLOSED);
    let attempts = pair.a.spawn(move || {
        let mut socks = Vec::new();
        let end = Instant::now() + Duration::from_millis(1500);
        while Instant::now() < end {
            socks.push(nonblocking_connect(to));
            thread::sleep(Duration::from_millis(2));
        }
        thread::sleep(Duration::from_millis(800));
        socks.iter().filter(|s| is_connected(s)).count()
    });
    thread::sleep(Duration::from_millis(300));
    pair.b.exec(&["ip", "link", "set", &far, "up"]);
    let connected = attempts.join().expect("attempts");
    assert_eq!(
        connected,
        0,
        "SYNs to tcp/{CLOSED} through an interface that came up under them were answered: {}",
        d.log_text()
    );
    assert!(
        connects_to(
            &pair.a,
            SocketAddr::new("198.19.113.2".parse().unwrap(), VDSM)
        ),
        "the new interface works for what the policy allows"
    );
}
