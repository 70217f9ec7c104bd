//! Faults: the daemon killed at random points of startup and reload under traffic, a site
//! larger than the maps, a full audit ring. Each must end in a defined, logged state with
//! enforcement intact.

use std::{net::SocketAddr, time::Duration};

use integration_tests::{
    daemon::{Daemon, Stream, connects, listen, site, site_with_audit, write_site},
    net::Pair,
};
use portguard::ebpf::links;
use rand::{Rng as _, SeedableRng as _, rngs::SmallRng};

/// The interface carries exactly one XDP program: ours, through the pinned link.
fn attached_once(pair: &Pair, d: &Daemon) {
    let show = pair.b.output(&["ip", "-d", "link", "show", &pair.b_if]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert_eq!(text.matches("prog/xdp").count(), 1, "{text}");
    assert!(links::link_pin(&d.pins.0, &pair.b_if).exists());
}

#[test]
fn sigkill_at_random_points_of_startup_and_reload_keeps_enforcement() {
    let mut rng = SmallRng::seed_from_u64(integration_tests::seed("faults"));
    let pair = Pair::new(81, 1500);
    let site = site(&pair, false);
    listen(&pair, 22);
    let mut d = Daemon::start(&pair.b, &site, &[]);
    let stream = Stream::geneve(&pair, Duration::from_micros(500));
    // Startup killed anywhere: before the load, during it, between attach and state.
    for _ in 0..6 {
        d.kill9();
        d.spawn_and_kill_after(Duration::from_millis(rng.random_range(0..400)));
        assert!(
            !connects(&pair, 22),
            "enforcement must hold between crashes"
        );
    }
    // Reloads killed anywhere, switching between two policies that both allow the stream.
    let mut ssh = false;
    for _ in 0..6 {
        d.restart();
        ssh = !ssh;
        write_site(&site, &pair, ssh);
        d.sighup();
        std::thread::sleep(Duration::from_millis(rng.random_range(0..300)));
        d.kill9();
    }
    // Whatever state the crashes left, the next daemon converges to the file on disk.
    d.restart();
    attached_once(&pair, &d);
    assert_eq!(connects(&pair, 22), ssh, "the policy on disk is in force");
    assert!(!connects(&pair, 5999));
    let (sent, received) = stream.finish();
    assert_eq!(sent, received, "no datagram of an allowed flow lost");
}

#[test]
fn a_site_larger_than_the_maps_is_refused_and_changes_nothing() {
    let pair = Pair::new(82, 1500);
    let site = site(&pair, true);
    let d = Daemon::start(&pair.b, &site, &[]);
    listen(&pair, 22);
    let prog = links::pinned_program_id(&d.pins.0, &pair.b_if).unwrap();
    // 270,000 IPv6 prefixes for the manager: more than the 262,144 the tries hold.
    let text = std::fs::read_to_string(&site).unwrap();
    let huge: Vec<String> = (0..270_000u32)
        .map(|i| format!("\"2001:db8:77:{:x}:{:x}::/80\"", i >> 16, i & 0xffff))
        .collect();
    let grown = text.replacen(
        &format!("\"rhv.manager\" = [\"{}/32\"", pair.a4),
        &format!("\"rhv.manager\" = [{}, \"{}/32\"", huge.join(", "), pair.a4),
        1,
    );
    assert_ne!(grown, text);
    std::fs::write(&site, grown).unwrap();
    let out = d.cli(&["reload", "--timeout", "120"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("IPv6 source prefixes exceed"), "{err}");
    assert_eq!(
        links::pinned_program_id(&d.pins.0, &pair.b_if).unwrap(),
        prog
    );
    assert!(connects(&pair, 22) && !connects(&pair, 5999));
}

#[test]
fn a_full_audit_ring_counts_what_it_loses_and_enforcement_holds() {
    let pair = Pair::new(83, 1500);
    let site = site_with_audit(&pair, "enforce", 1_000_000, 1_000_000);
    let mut d = Daemon::start(&pair.b, &site, &[]);
    // Nobody drains the ring while the daemon is down.
    d.kill9();
    let to = SocketAddr::new(pair.b4, 5999);
    pair.a.run(move || {
        let tx = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
        for i in 0..60_000u32 {
            let _ = tx.send_to(&i.to_be_bytes(), to);
        }
    });
    let status = d.status();
    let lost = status["audit"]["lost"].as_u64().unwrap();
    assert!(lost > 0, "a 1 MiB ring cannot hold 60,000 events: {status}");
    assert!(
        !connects(&pair, 5999),
        "enforcement does not depend on the ring"
    );
    // The next daemon drains what the ring holds and carries on.
    d.restart();
    attached_once(&pair, &d);
}
