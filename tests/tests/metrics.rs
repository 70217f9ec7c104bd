//! `portguard run --metrics`: the endpoint of a real daemon in a test namespace, asked the way
//! scrapers and people ask (formats, HEAD, query strings, wrong paths), its text checked by
//! Debian's `promtool`, and scraped end to end by a real `prometheus` server running in the
//! peer namespace, across the veth the daemon protects (through the site rule that opens the
//! metrics port to `site.prometheus`, as a fleet would do it).

use std::{
    collections::BTreeMap,
    io::{Read as _, Write as _},
    net::{IpAddr, SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    daemon::{Daemon, GENEVE, connects},
    net::{Netns, Pair, enter},
    unique,
};
use serde_json::Value;

/// The port of the metrics endpoint, as the docs give it.
const METRICS_PORT: u16 = 9742;

/// Every metric family of the contract (docs/metrics.md), as the text format names it.
const FAMILIES: &[&str] = &[
    "portguard_build_info",
    "portguard_policy_info",
    "portguard_interface_attached",
    "portguard_healthy",
    "portguard_health_check_timestamp_seconds",
    "portguard_reload_last_success",
    "portguard_reload_last_timestamp_seconds",
    "portguard_reloads_total",
    "portguard_trial_pending",
    "portguard_trial_deadline_timestamp_seconds",
    "portguard_rule_packets_total",
    "portguard_rule_bytes_total",
    "portguard_rule_last_hit_timestamp_seconds",
    "portguard_reason_packets_total",
    "portguard_reason_bytes_total",
    "portguard_denied_events_total",
    "portguard_audit_events_total",
];

/// A site for `pair` (the peer is the RHV Manager and another host; `rhv.vm-portal-client`
/// is elsewhere, so the peer's tcp/5900 is refused with RHV-H5 as the hint) with the site rule
/// that lets the peer scrape the metrics port.
fn site(pair: &Pair) -> PathBuf {
    let dir = std::env::temp_dir().join(unique("pg-metrics-site-"));
    std::fs::create_dir_all(&dir).expect("site dir");
    let path = dir.join("site.toml");
    let n = match pair.a4 {
        IpAddr::V4(a) => a.octets()[2],
        IpAddr::V6(_) => unreachable!("IPv4"),
    };
    let text = format!(
        r#"products = ["rhv"]
features = ["ovn"]
disabled_features = ["rhv-host-ssh"]
mode = "enforce"

[roles]
"rhv.manager" = ["{a4}/32", "{a6}/128"]
"rhv.host" = ["{a4}/32", "{a6}/128", "{b4}/32", "{b6}/128"]
"rhv.vm-portal-client" = ["198.18.{n}.100/32"]
"site.prometheus" = ["{a4}/32"]

[failsafe]
ssh_from = ["198.18.250.0/24"]

[host]
roles = ["rhv.host"]
interfaces = ["{b_if}"]

[[rules]]
id = "SITE-PROMETHEUS"
from = ["site.prometheus"]
proto = "tcp"
ports = "{METRICS_PORT}"
purpose = "Prometheus scrapes portguard"
"#,
        a4 = pair.a4,
        a6 = pair.a6,
        b4 = pair.b4,
        b6 = pair.b6,
        b_if = pair.b_if,
    );
    std::fs::write(&path, text).expect("write site");
    path
}

/// An HTTP response: status, headers (names lowercased), body.
#[derive(Debug)]
struct Response {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

/// Send `request` (a whole request head) to `to` from inside `ns` and read the answer until
/// the server closes (every request here says `Connection: close`).
fn http(ns: &Netns, to: SocketAddr, request: String) -> Response {
    let raw = ns.run(move || {
        let mut s =
            TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect to metrics");
        s.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        s.write_all(request.as_bytes()).expect("send request");
        let mut out = Vec::new();
        s.read_to_end(&mut out).expect("read response");
        out
    });
    let text = String::from_utf8(raw).expect("UTF-8 response");
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Response {
        status,
        headers,
        body: body.to_owned(),
    }
}

fn request(method: &str, target: &str, accept: Option<&str>) -> String {
    let accept = accept.map_or_else(String::new, |a| format!("Accept: {a}\r\n"));
    format!("{method} {target} HTTP/1.1\r\nHost: portguard\r\n{accept}Connection: close\r\n\r\n")
}

/// The value of the sample `series` (name and labels, as written) in a text exposition.
fn value(body: &str, series: &str) -> Option<u64> {
    body.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Run `promtool check metrics` on a text exposition; its output, panicking on failure.
fn promtool_check(text: &str) -> String {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool missing ({e}): run `cargo xtask setup`"));
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(text.as_bytes())
        .expect("feed promtool");
    let out = child.wait_with_output().expect("promtool");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics: {said}\n{text}"
    );
    said
}

#[test]
fn endpoint_negotiates_the_format_and_answers_head_queries_and_wrong_paths() {
    let pair = Pair::new(140, 1500);
    let site = site(&pair);
    // On the protected namespace's own loopback: no rule needed.
    let addr = SocketAddr::from(([127, 0, 0, 1], METRICS_PORT));
    let d = Daemon::start(&pair.b, &site, &["--metrics", &addr.to_string()]);
    // A refused SYN (port-not-open), a SYN to a port opened to other sources (RHV-H5), a
    // datagram RHV-H12 allows.
    assert!(!connects(&pair, 23));
    assert!(!connects(&pair, 5900));
    assert!(pair.udp_delivered(0, SocketAddr::new(pair.b4, GENEVE), 3) > 0);

    // No Accept header (curl, a person): the text format, which promtool reads cleanly.
    let text = http(&pair.b, addr, request("GET", "/metrics", None));
    assert_eq!(text.status, 200, "{text:?}");
    assert_eq!(
        text.headers["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    assert!(!text.body.contains("# EOF"), "{}", text.body);
    for family in FAMILIES {
        assert!(
            text.body.contains(&format!("# TYPE {family} ")),
            "{family} missing:\n{}",
            text.body
        );
    }
    assert!(!text.body.contains("interfaces="), "{}", text.body);
    println!("{}", promtool_check(&text.body));
    assert!(
        value(
            &text.body,
            "portguard_rule_packets_total{rule=\"RHV-H12\",product=\"rhv\"}"
        )
        .is_some_and(|n| n > 0),
        "{}",
        text.body
    );
    assert!(
        value(
            &text.body,
            "portguard_reason_packets_total{reason=\"port-not-open\",verdict=\"drop\"}"
        )
        .is_some_and(|n| n > 0),
        "{}",
        text.body
    );
    assert_eq!(
        value(
            &text.body,
            &format!(
                "portguard_interface_attached{{interface=\"{}\",mode=\"driver\"}}",
                pair.b_if
            )
        ),
        Some(1),
        "{}",
        text.body
    );
    // The audit reader counts denied events as it reads them.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http(&pair.b, addr, request("GET", "/metrics", None)).body;
        let hinted = value(
            &body,
            "portguard_denied_events_total{reason=\"source-not-allowed\",rule=\"RHV-H5\"}",
        );
        let unhinted = value(
            &body,
            "portguard_denied_events_total{reason=\"port-not-open\",rule=\"\"}",
        );
        if hinted.is_some_and(|n| n > 0) && unhinted.is_some_and(|n| n > 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "denied events not counted:\n{body}\n{}",
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Prometheus' own Accept header: OpenMetrics, with counter families named without _total.
    let prometheus_accept = "application/openmetrics-text;version=1.0.0,application/\
                             openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;\
                             q=0.5,*/*;q=0.1";
    let om = http(
        &pair.b,
        addr,
        request("GET", "/metrics", Some(prometheus_accept)),
    );
    assert_eq!(om.status, 200);
    assert_eq!(
        om.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(om.body.ends_with("# EOF\n"), "{}", om.body);
    assert!(om.body.contains("# TYPE portguard_rule_packets counter\n"));
    assert!(
        om.body
            .contains("portguard_rule_packets_total{rule=\"RHV-H12\"")
    );
    // Asking for the text format explicitly gets it.
    let plain = http(
        &pair.b,
        addr,
        request("GET", "/metrics", Some("text/plain;version=0.0.4")),
    );
    assert!(plain.headers["content-type"].starts_with("text/plain"));

    // HEAD: the headers of a GET, no body.
    let head = http(&pair.b, addr, request("HEAD", "/metrics", None));
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.headers["content-type"].starts_with("text/plain"));
    let length: usize = head.headers["content-length"].parse().expect("length");
    assert!(length > 1000, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");

    // A query string is ignored.
    let query = http(&pair.b, addr, request("GET", "/metrics?x=1&y", None));
    assert_eq!(query.status, 200);
    assert!(query.body.contains("# TYPE portguard_healthy gauge"));

    // Anything else is not found; other methods are not allowed.
    for target in ["/", "/metric", "/metrics/x", "/favicon.ico"] {
        assert_eq!(
            http(&pair.b, addr, request("GET", target, None)).status,
            404,
            "{target}"
        );
    }
    let post = http(&pair.b, addr, request("POST", "/metrics", None));
    assert_eq!(post.status, 405);
    assert_eq!(post.headers["allow"], "GET, HEAD");
    drop(d);
}

/// A `prometheus` server started by a test in a namespace of its own choosing, with its own
/// configuration and data in a temporary directory. Dropping it kills it (by its pid) and
/// removes the directory.
struct Prometheus {
    child: Child,
    ns: String,
    listen: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    /// Start it in `ns`, on 127.0.0.1 there, scraping `target` every second and evaluating
    /// `rule_files` (absolute paths).
    fn start(ns: &Netns, target: SocketAddr, rule_files: &[&Path]) -> Self {
        let dir = std::env::temp_dir().join(unique("pg-prometheus-"));
        std::fs::create_dir_all(dir.join("data")).expect("prometheus dir");
        let rules: String = rule_files
            .iter()
            .flat_map(|p| ["  - ".to_owned(), p.display().to_string(), "\n".to_owned()])
            .collect();
        let config = format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\n\
             rule_files:\n{rules}\
             scrape_configs:\n  - job_name: portguard\n    static_configs:\n      - targets: [\"{target}\"]\n"
        );
        std::fs::write(dir.join("prometheus.yml"), config).expect("prometheus.yml");
        let log = std::fs::File::create(dir.join("prometheus.log")).expect("log");
        // A fresh namespace: every port is free there.
        let listen = SocketAddr::from(([127, 0, 0, 1], 9090));
        // `ip netns exec` execs prometheus in place: the child's pid is prometheus'.
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name, "prometheus"])
            .arg(format!(
                "--config.file={}",
                dir.join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={listen}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("prometheus missing ({e}): run `cargo xtask setup`"));
        Prometheus {
            child,
            ns: ns.name.clone(),
            listen,
            dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// GET `path` from Prometheus' HTTP API, parsed; `None` while it does not answer yet.
    fn api(&self, path: &str) -> Option<Value> {
        let listen = self.listen;
        // HTTP/1.0: the answer comes whole, not chunked.
        let request = format!("GET {path} HTTP/1.0\r\nHost: prometheus\r\n\r\n");
        let ns = format!("/run/netns/{}", self.ns);
        let raw = std::thread::spawn(move || {
            enter(&ns);
            let mut s = TcpStream::connect_timeout(&listen, Duration::from_secs(2)).ok()?;
            s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
            s.write_all(request.as_bytes()).ok()?;
            let mut out = Vec::new();
            s.read_to_end(&mut out).ok()?;
            Some(out)
        })
        .join()
        .expect("thread in namespace");
        let text = String::from_utf8(raw?).ok()?;
        let (_, body) = text.split_once("\r\n\r\n")?;
        serde_json::from_str(body).ok()
    }

    /// The samples of an instant query: labels and value.
    fn query(&self, expr: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let Some(v) = self.api(&format!("/api/v1/query?query={}", encode(expr))) else {
            return Vec::new();
        };
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|s| {
                let labels = s["metric"]
                    .as_object()
                    .into_iter()
                    .flatten()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                    .collect();
                let value = s["value"][1]
                    .as_str()
                    .and_then(|x| x.parse().ok())
                    .unwrap_or(f64::NAN);
                (labels, value)
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Percent-encoding for a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[test]
fn a_real_prometheus_scrapes_the_daemon_across_the_protected_link() {
    let pair = Pair::new(141, 1500);
    let site = site(&pair);
    // The daemon listens on the protected veth's address; Prometheus runs in the peer
    // namespace, so every scrape crosses the XDP program (SITE-PROMETHEUS lets it in).
    let target = SocketAddr::new(pair.b4, METRICS_PORT);
    let d = Daemon::start(&pair.b, &site, &["--metrics", &target.to_string()]);
    let rules =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus/portguard-rules.yml");
    let rules = rules
        .canonicalize()
        .expect("packaging/prometheus/portguard-rules.yml");
    let prom = Prometheus::start(&pair.a, target, &[&rules]);
    // Traffic RHV-H12 allows.
    assert!(pair.udp_delivered(0, SocketAddr::new(pair.b4, GENEVE), 5) > 0);

    let sha = Command::new("sha256sum")
        .arg(&site)
        .output()
        .expect("sha256sum");
    let sha = String::from_utf8_lossy(&sha.stdout)[..16].to_owned();
    let wanted: Vec<(&str, String)> = vec![
        (
            "rule H12",
            "portguard_rule_packets_total{rule=\"RHV-H12\",product=\"rhv\"} > 0".to_owned(),
        ),
        (
            "the scrapes' own rule",
            "portguard_rule_packets_total{rule=\"SITE-PROMETHEUS\",product=\"site\"} > 0"
                .to_owned(),
        ),
        ("healthy", "portguard_healthy == 1".to_owned()),
        (
            "attached",
            format!(
                "portguard_interface_attached{{interface=\"{}\",mode=\"driver\"}} == 1",
                pair.b_if
            ),
        ),
        (
            "policy info",
            format!("portguard_policy_info{{mode=\"enforce\",site_sha256=\"{sha}\"}} == 1"),
        ),
        (
            "build info",
            format!(
                "portguard_build_info{{version=\"{}\"}} == 1",
                env!("CARGO_PKG_VERSION")
            ),
        ),
        (
            "last hit",
            "portguard_rule_last_hit_timestamp_seconds{rule=\"RHV-H12\"} > 1.7e9".to_owned(),
        ),
        ("target up", "up{job=\"portguard\"} == 1".to_owned()),
    ];
    let deadline = Instant::now() + Duration::from_secs(90);
    let mut missing = wanted.clone();
    while !missing.is_empty() {
        missing.retain(|(_, expr)| prom.query(expr).is_empty());
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never saw {missing:?}\nprometheus:\n{}\ndaemon:\n{}",
            prom.log(),
            d.log_text()
        );
        std::thread::sleep(Duration::from_millis(500));
        // Keep the rule's counter moving while Prometheus catches up.
        let _ = pair.udp_delivered(0, SocketAddr::new(pair.b4, GENEVE), 1);
    }
    let info = prom.query("portguard_policy_info");
    assert_eq!(info.len(), 1, "{info:?}");
    let version = &info[0].0["version"];
    assert_eq!(
        d.state().expect("state")["policy_version"].as_str(),
        Some(version.as_str())
    );

    shipped_rules_evaluate_cleanly(&prom);
    drop(prom);
    drop(d);
}

/// The shipped alert rules load and evaluate on the real series without errors, and a healthy
/// host that is not reloading nor on trial fires none of them.
fn shipped_rules_evaluate_cleanly(prom: &Prometheus) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let rules = prom.api("/api/v1/rules").unwrap_or_default();
        let all: Vec<&Value> = rules["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|g| g["rules"].as_array().into_iter().flatten())
            .collect();
        let evaluated = !all.is_empty()
            && all.iter().all(|r| {
                r["lastEvaluation"]
                    .as_str()
                    .is_some_and(|t| !t.starts_with("0001"))
            });
        if evaluated {
            let broken: Vec<&&Value> = all.iter().filter(|r| r["health"] != "ok").collect();
            assert!(
                broken.is_empty(),
                "rules failing on real series: {broken:?}"
            );
            // A healthy, enforcing host with no reload and no trial fires none of the
            // host-state alerts.
            let firing = prom.query("ALERTS{alertstate=\"firing\"}");
            assert!(firing.is_empty(), "{firing:?}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "rules never evaluated: {rules}\n{}",
            prom.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}
