//! `portguard suggest` on the audit records of a real rollout in audit mode: the daemon
//! protects a veth whose peer is the RHV Manager; a portal client was left out of the site's
//! roles and the `serial-console` feature is off. Real connections from both are refused (and,
//! in audit mode, passed); suggest must propose exactly that mapping and that feature, list
//! the rules nothing used, leave alone what no change explains, and its diff must apply and
//! allow those flows.

use std::{
    net::{IpAddr, SocketAddr},
    path::Path,
    process::Command,
    time::{Duration, Instant},
};

use integration_tests::{
    daemon::{self, Daemon, GENEVE},
    net::Pair,
    unique,
};
use serde_json::Value;

/// The portal client the site forgot.
const CLIENT: &str = "198.18.143.7";

/// A TCP connection attempt from `src` (an address of the peer namespace) to `dst`: the SYN
/// is what matters (audit mode passes it; nothing listens, so a RST comes back).
fn syn_from(pair: &Pair, src: IpAddr, dst: SocketAddr) {
    pair.a.run(move || {
        // SAFETY: plain socket calls on a descriptor this closure owns and closes.
        unsafe {
            let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
            assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
            let sin = |a: IpAddr, port: u16| {
                let IpAddr::V4(v4) = a else {
                    panic!("IPv4 only")
                };
                libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: port.to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from(v4).to_be(),
                    },
                    sin_zero: [0; 8],
                }
            };
            let len = size_of::<libc::sockaddr_in>() as libc::socklen_t;
            let from = sin(src, 0);
            let rc = libc::bind(fd, (&raw const from).cast(), len);
            assert_eq!(rc, 0, "bind {src}: {}", std::io::Error::last_os_error());
            // A bounded wait, should no answer come.
            let tv = libc::timeval {
                tv_sec: 2,
                tv_usec: 0,
            };
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_SNDTIMEO,
                (&raw const tv).cast(),
                size_of::<libc::timeval>() as libc::socklen_t,
            );
            let to = sin(dst.ip(), dst.port());
            let _ = libc::connect(fd, (&raw const to).cast(), len);
            libc::close(fd);
        }
    });
}

fn wait_until(what: &str, within: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !ok() {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn suggest(d: &Daemon, site: &Path, json: bool) -> std::process::Output {
    let mut cmd = Command::new(daemon::binary());
    cmd.args(["suggest", "--site"])
        .arg(site)
        .arg("--policies")
        .arg(daemon::policies_dir())
        .arg("--log")
        .arg(d.audit_log())
        .args(d.state_args());
    if json {
        cmd.arg("--json");
    }
    cmd.output().expect("portguard suggest")
}

#[test]
fn suggests_exactly_the_missing_mapping_and_the_feature_off() {
    let pair = Pair::new(143, 1500);
    pair.a.exec(&[
        "ip",
        "addr",
        "add",
        &format!("{CLIENT}/24"),
        "dev",
        &pair.a_if,
    ]);
    let site = daemon::site(&pair, true);
    // Audit mode; portal clients mapped elsewhere (so RHV-H5 is in force and CLIENT is in no
    // role); serial-console off, as by default.
    let text = std::fs::read_to_string(&site)
        .expect("site")
        .replace("mode = \"enforce\"", "mode = \"audit\"")
        .replace(
            "[failsafe]",
            "\"rhv.vm-portal-client\" = [\"198.18.143.100/32\"]\n\n[failsafe]",
        );
    std::fs::write(&site, &text).expect("site");
    let mut d = Daemon::start(&pair.b, &site, &[]);
    let client: IpAddr = CLIENT.parse().expect("addr");
    // The forgotten portal client opens a console (tcp/5900, RHV-H5); the Manager opens a
    // serial console (tcp/2223, RHV-H2 of serial-console) and tries telnet (no rule at all);
    // OVN traffic (RHV-H12) is allowed and not audited.
    syn_from(&pair, client, SocketAddr::new(pair.b4, 5900));
    syn_from(&pair, client, SocketAddr::new(pair.b4, 5901));
    syn_from(&pair, pair.a4, SocketAddr::new(pair.b4, 2223));
    syn_from(&pair, pair.a4, SocketAddr::new(pair.b4, 23));
    assert!(pair.udp_delivered(0, SocketAddr::new(pair.b4, GENEVE), 3) > 0);
    wait_until(
        "audit records of the three",
        Duration::from_secs(30),
        || {
            let recs = d.audit_records();
            [5900, 2223, 23].iter().all(|p| {
                recs.iter()
                    .any(|r| r["dport"] == *p && r["would_deny"] == true)
            })
        },
    );
    last_hit_survives_a_restart(&mut d);

    let out = suggest(&d, &site, true);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s: Value = serde_json::from_slice(&out.stdout).expect("suggest --json");
    let mappings = s["mappings"].as_array().expect("mappings");
    assert_eq!(mappings.len(), 1, "{s:#}");
    let m = &mappings[0];
    assert_eq!(m["source"], CLIENT, "{s:#}");
    assert_eq!(m["role"], "rhv.vm-portal-client", "{s:#}");
    assert_eq!(m["rule"], "RHV-H5", "{s:#}");
    assert_eq!(
        m["seen"]["targets"],
        serde_json::json!(["tcp/5900", "tcp/5901"])
    );
    let features = s["features"].as_array().expect("features");
    assert_eq!(features.len(), 1, "{s:#}");
    assert_eq!(features[0]["feature"], "serial-console", "{s:#}");
    assert_eq!(features[0]["rules"], serde_json::json!(["RHV-H2"]), "{s:#}");
    assert!(
        features[0]["sources"][pair.a4.to_string()]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x == "rhv.manager")),
        "{s:#}"
    );
    assert_eq!(s["blocked"], serde_json::json!([]), "{s:#}");
    // Telnet is refused and nothing here would open it.
    let unexplained = s["unexplained"].as_array().expect("unexplained");
    assert!(
        unexplained
            .iter()
            .any(|u| u[0] == pair.a4.to_string() && u[1] == "tcp/23"),
        "{s:#}"
    );
    assert!(
        !unexplained
            .iter()
            .any(|u| u[1] == "tcp/5900" || u[1] == "tcp/2223"),
        "{s:#}"
    );
    // Rules nothing used are listed for review; the one with traffic is not.
    let idle: Vec<&str> = s["idle"]
        .as_array()
        .expect("idle rules")
        .iter()
        .filter_map(|i| i["rule"].as_str())
        .collect();
    assert!(idle.contains(&"RHV-H10"), "{idle:?}");
    assert!(!idle.contains(&"RHV-H12"), "{idle:?}");
    // Essentials and the failsafe are not the site's to review.
    assert!(
        !idle
            .iter()
            .any(|r| r.starts_with("ESS-") || r.starts_with("FAILSAFE")),
        "{idle:?}"
    );

    let packets = m["seen"]["packets"].as_u64().expect("packets");
    text_diff_applies_and_opens_exactly_those(&d, &site, &pair, packets);
    drop(d);
}

/// Last hits are sampled every 5 s (RHV-H12 had traffic), and survive a restart of the
/// daemon.
fn last_hit_survives_a_restart(d: &mut Daemon) {
    let h12 = |d: &Daemon| -> u64 {
        let text = std::fs::read_to_string(d.run_dir.join("counters.json")).unwrap_or_default();
        serde_json::from_str::<Value>(&text).unwrap_or_default()["hits"]["RHV-H12"]["last"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_until("a last hit for RHV-H12", Duration::from_secs(30), || {
        h12(d) > 0
    });
    let hit = h12(d);
    d.stop();
    d.restart();
    std::thread::sleep(Duration::from_secs(6));
    assert_eq!(h12(d), hit, "the last hit survives the restart");
}

/// The text form ends in a diff that applies to the site file (`patch`) and opens exactly the
/// flows it was proposed for.
fn text_diff_applies_and_opens_exactly_those(d: &Daemon, site: &Path, pair: &Pair, packets: u64) {
    let client: IpAddr = CLIENT.parse().expect("addr");
    // The text form ends in a diff that applies to the site file and opens exactly those.
    let out = suggest(d, site, false);
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{report}");
    assert!(
        report.contains(&format!(
            "{CLIENT} -> tcp/5900, tcp/5901 (RHV-H5), {packets} packets: add it to \
             `rhv.vm-portal-client`"
        )),
        "{report}"
    );
    assert!(report.contains("enable `serial-console`"), "{report}");
    let dir = std::env::temp_dir().join(unique("pg-suggest-"));
    std::fs::create_dir_all(&dir).expect("dir");
    let copy = dir.join("site.toml");
    std::fs::copy(site, &copy).expect("copy");
    let patched = Command::new("patch")
        .arg(&copy)
        .stdin(
            std::fs::File::open({
                let p = dir.join("suggest.diff");
                std::fs::write(&p, &report).expect("diff");
                p
            })
            .expect("diff"),
        )
        .output()
        .expect("patch");
    assert!(
        patched.status.success(),
        "patch: {}{}\n{report}",
        String::from_utf8_lossy(&patched.stdout),
        String::from_utf8_lossy(&patched.stderr)
    );
    let after = std::fs::read_to_string(&copy).expect("patched");
    assert!(after.contains(&format!("\"{CLIENT}/32\"")), "{after}");
    assert!(
        after.contains("features = [\"ovn\", \"serial-console\"]"),
        "{after}"
    );
    let explain = |src: IpAddr, port: u16| {
        let out = Command::new(daemon::binary())
            .args(["explain", "--site"])
            .arg(&copy)
            .arg("--policies")
            .arg(daemon::policies_dir())
            .args(["--host-roles", "rhv.host", "--proto", "tcp", "--json"])
            .args(["--src", &src.to_string(), "--dst", &pair.b4.to_string()])
            .args(["--dport", &port.to_string()])
            .output()
            .expect("explain");
        let v: Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|_| panic!("explain: {}", String::from_utf8_lossy(&out.stderr)));
        (
            v["verdict"].as_str().unwrap_or_default().to_owned(),
            v["rule"].clone(),
        )
    };
    assert_eq!(
        explain(client, 5900),
        ("allow".into(), Value::from("RHV-H5"))
    );
    assert_eq!(
        explain(pair.a4, 2223),
        ("allow".into(), Value::from("RHV-H2"))
    );
    assert_eq!(explain(pair.a4, 23).0, "deny");
    let _ = std::fs::remove_dir_all(&dir);
}
