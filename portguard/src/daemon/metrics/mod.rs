//! `run --metrics ADDR`: what the host enforces and what it counted, for Prometheus.
//!
//! Each scrape reads the pinned counters and the state file afresh (the report `status` prints,
//! seen from inside the daemon), so the figures are the kernel's and never drift. The names are
//! a contract with the alert rules, their tests and the dashboard (docs/metrics.md). No label
//! holds a list: a series keeps its identity when interfaces come and go.
//!
//! HTTP is hyper's (HTTP/1.1, keep-alive, HEAD, header timeouts), not hand-parsed: `GET` or
//! `HEAD /metrics` (any query string) answers, anything else is 404 (405 for other methods).

pub mod exposition;

use std::{convert::Infallible, net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    Method, Request, Response, StatusCode,
    header::{ACCEPT, ALLOW, CONTENT_TYPE},
    server::conn::http1,
    service::service_fn,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore};

use self::exposition::{Family, Format, Kind};
use super::{Daemon, DaemonError};
use crate::{
    audit::DeniedCounts,
    state::report::{self, Report, ReportError},
};

/// Connections served at once; more wait in the listen backlog (a scraper needs one).
const MAX_CONNECTIONS: usize = 32;
/// A client must send its request head within this time.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A kept-alive connection is closed (gracefully, between requests) after this long, so idle
/// connections cannot hold the slots forever.
const CONNECTION_LIFETIME: Duration = Duration::from_secs(120);
/// Time a response in progress gets to finish when its connection's lifetime ends.
const GRACE: Duration = Duration::from_secs(10);

/// Why a scrape could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The counters or state could not be read.
    #[error(transparent)]
    Report(#[from] ReportError),
}

/// Where the endpoint reads what it serves.
#[derive(Clone, Debug)]
pub struct Source {
    /// bpffs directory of the pinned counters.
    pub pin_dir: PathBuf,
    /// The daemon's state and samples.
    pub run_dir: PathBuf,
    /// Audit events the daemon's reader counted.
    pub denied: DeniedCounts,
}

/// Bind `addr` (before the daemon reports ready, so a bad address fails the start) and serve
/// the daemon's metrics on it from a task of their own.
pub(super) async fn start(daemon: &Daemon, addr: SocketAddr) -> Result<(), DaemonError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Metrics { addr, source })?;
    log::info!("metrics on http://{addr}/metrics");
    let source = Source {
        pin_dir: daemon.opts.pin_dir.clone(),
        run_dir: daemon.opts.run_dir.clone(),
        denied: daemon.denied.clone(),
    };
    tokio::spawn(serve(listener, source));
    Ok(())
}

/// Accept connections on `listener` and answer their requests, forever.
pub async fn serve(listener: TcpListener, source: Source) {
    let source = Arc::new(source);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        // Wait for a free slot before accepting: excess clients wait in the backlog.
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                // EMFILE and friends pass; the endpoint must not end over them.
                log::warn!("metrics endpoint: accepting a connection: {e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let source = source.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let service = service_fn(move |req| {
                let source = source.clone();
                async move { Ok::<_, Infallible>(respond(&source, &req)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                _ = conn.as_mut() => {}
                () = tokio::time::sleep(CONNECTION_LIFETIME) => {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(GRACE, conn).await;
                }
            }
        });
    }
}

/// The answer to one request.
fn respond<B>(source: &Source, req: &Request<B>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/metrics" {
        return plain(
            StatusCode::NOT_FOUND,
            "portguard serves /metrics only\n".into(),
        );
    }
    if !matches!(*req.method(), Method::GET | Method::HEAD) {
        let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "GET or HEAD\n".into());
        r.headers_mut()
            .insert(ALLOW, hyper::header::HeaderValue::from_static("GET, HEAD"));
        return r;
    }
    let format = Format::negotiate(req.headers().get(ACCEPT).and_then(|v| v.to_str().ok()));
    match render(source, format) {
        // hyper sends no body in answer to HEAD, and keeps the length the GET would have.
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static(format.content_type()),
            );
            r
        }
        Err(e) => plain(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{}\n", super::chain(&e)),
        ),
    }
}

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// Everything the endpoint serves, in `format`.
pub fn render(source: &Source, format: Format) -> Result<String, MetricsError> {
    let report = report::build_in_daemon(&source.pin_dir, &source.run_dir)?;
    Ok(exposition::encode(
        &families(&report, &source.denied),
        format,
    ))
}

/// The metric families of docs/metrics.md, from the report and the audit counts.
#[must_use]
pub fn families(r: &Report, denied: &DeniedCounts) -> Vec<Family> {
    let mut out = identity_and_health(r);
    out.extend(reloads_and_trials(r));
    out.extend(traffic(r));
    out.extend(audit(r, denied));
    out
}

/// Build and policy, interfaces, health.
fn identity_and_health(r: &Report) -> Vec<Family> {
    use Kind::Gauge;
    let mut out = vec![
        Family::new(
            "portguard_build_info",
            Gauge,
            "Always 1: the portguard version running",
        )
        .with(&[("version", env!("CARGO_PKG_VERSION"))], 1),
        Family::new(
            "portguard_policy_info",
            Gauge,
            "Always 1: the policy in force, its mode and the site file's SHA-256 (16 hex digits)",
        )
        .with(
            &[
                ("version", &r.policy_version),
                ("mode", &r.mode),
                ("site_sha256", &r.site_sha256),
            ],
            1,
        ),
    ];
    let mut attached = Family::new(
        "portguard_interface_attached",
        Gauge,
        "1 when the policy's program is attached to a selected interface, 0 when it is not",
    );
    for i in &r.interfaces {
        // An interface that failed its last switch is reported as not attached, once.
        if !r.unattached.iter().any(|u| u.name == i.name) {
            attached.push(&[("interface", &i.name), ("mode", &i.mode)], 1);
        }
    }
    for u in &r.unattached {
        attached.push(&[("interface", &u.name), ("mode", "none")], 0);
    }
    out.push(attached);
    out.extend([
        Family::single(
            "portguard_healthy",
            Gauge,
            "1 when every selected interface runs the policy in force and the last self-test passed",
            u64::from(r.not_enforcing.is_empty()),
        ),
        Family::single(
            "portguard_health_check_timestamp_seconds",
            Gauge,
            "Unix time of the last self-test",
            r.health.at,
        ),
    ]);
    out
}

/// The last reload, reload counts, a pending trial.
fn reloads_and_trials(r: &Report) -> Vec<Family> {
    use Kind::{Counter, Gauge};
    vec![
        Family::single(
            "portguard_reload_last_success",
            Gauge,
            "1 when the last reload put its policy in force (or found it unchanged), 0 when refused",
            u64::from(r.reload.error.is_none()),
        ),
        Family::single(
            "portguard_reload_last_timestamp_seconds",
            Gauge,
            "Unix time of the last reload, successful or not (0: none since the daemon started)",
            r.reload.at,
        ),
        Family::new(
            "portguard_reloads",
            Counter,
            "Reloads since the daemon started, by outcome",
        )
        .with(
            &[("result", "ok")],
            r.reload.count.saturating_sub(r.reload.failed),
        )
        .with(&[("result", "failed")], r.reload.failed),
        Family::single(
            "portguard_trial_pending",
            Gauge,
            "1 while a policy applied on trial waits for `portguard confirm`",
            u64::from(r.trial.is_some()),
        ),
        Family::single(
            "portguard_trial_deadline_timestamp_seconds",
            Gauge,
            "Unix time at which the pending trial is reverted; 0 when none is pending",
            r.trial.as_ref().map_or(0, |t| t.deadline),
        ),
    ]
}

/// Per rule and per reason counters.
fn traffic(r: &Report) -> Vec<Family> {
    use Kind::{Counter, Gauge};
    let help = [
        "Packets each rule allowed",
        "Bytes each rule allowed",
        "Unix time each rule last matched; 0 = never",
    ];
    let mut rules = [
        Family::new("portguard_rule_packets", Counter, help[0]),
        Family::new("portguard_rule_bytes", Counter, help[1]),
        Family::new("portguard_rule_last_hit_timestamp_seconds", Gauge, help[2]),
    ];
    for rule in r.rules.iter().filter(|x| x.active) {
        let labels = [
            ("rule", rule.id.as_str()),
            ("product", rule.product.as_str()),
        ];
        rules[0].push(&labels, rule.packets);
        rules[1].push(&labels, rule.bytes);
        rules[2].push(&labels, rule.last_hit_unix);
    }
    let mut reasons = [
        Family::new(
            "portguard_reason_packets",
            Counter,
            "Packets no rule decided, by why they were passed or dropped",
        ),
        Family::new(
            "portguard_reason_bytes",
            Counter,
            "Bytes no rule decided, by why they were passed or dropped",
        ),
    ];
    // The self-test's own frames are not traffic.
    for x in r.reasons.iter().filter(|x| x.verdict != "test") {
        let labels = [("reason", x.reason), ("verdict", x.verdict)];
        reasons[0].push(&labels, x.packets);
        reasons[1].push(&labels, x.bytes);
    }
    rules.into_iter().chain(reasons).collect()
}

/// What the audit reader counted, and what became of the datapath's audit events.
fn audit(r: &Report, denied: &DeniedCounts) -> [Family; 2] {
    let mut events = Family::new(
        "portguard_denied_events",
        Kind::Counter,
        "Audit events of denied flows, by reason and the rule that opens the port to other sources",
    );
    for ((reason, rule), n) in denied.snapshot() {
        events.push(&[("reason", &reason), ("rule", &rule)], n);
    }
    let outcomes = Family::new(
        "portguard_audit_events",
        Kind::Counter,
        "Audit events by what became of them: emitted, suppressed (rate limit), lost",
    )
    .with(&[("outcome", "emitted")], r.audit.emitted)
    .with(&[("outcome", "suppressed")], r.audit.suppressed)
    .with(&[("outcome", "lost")], r.audit.lost);
    [events, outcomes]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{
        HealthEntry, IfaceEntry, ReloadEntry, TrialEntry, UnattachedEntry,
        report::{AuditReport, ReasonReport, RuleReport},
    };

    fn report() -> Report {
        Report {
            daemon_pid: Some(1),
            snapshot_at: None,
            site: "/etc/portguard/site.toml".into(),
            mode: "audit".into(),
            policy_version: "00112233aabbccdd".into(),
            site_sha256: "ba7816bf8f01cfea".into(),
            loaded_at: None,
            roles: vec!["rhv.host".into()],
            interfaces: vec![
                IfaceEntry {
                    name: "eth1".into(),
                    ifindex: 2,
                    mode: "driver".into(),
                    policy_version: "00112233aabbccdd".into(),
                    since: 5,
                },
                IfaceEntry {
                    name: "eth2".into(),
                    ifindex: 3,
                    mode: "generic".into(),
                    policy_version: "0".into(),
                    since: 5,
                },
            ],
            rules: vec![RuleReport {
                slot: 0,
                id: "RHV-H5".into(),
                product: "rhv".into(),
                purpose: String::new(),
                active: true,
                packets: 3,
                bytes: 180,
                rate_pps: None,
                last_hit: None,
                last_hit_unix: 1_700_000_000,
            }],
            reasons: vec![
                ReasonReport {
                    reason: "port-not-open",
                    verdict: "drop",
                    packets: 4,
                    bytes: 240,
                },
                ReasonReport {
                    reason: "self-test",
                    verdict: "test",
                    packets: 9,
                    bytes: 9,
                },
            ],
            audit: AuditReport {
                emitted: 4,
                suppressed: 1,
                lost: 0,
            },
            reload: ReloadEntry {
                count: 3,
                at: 1_700_000_100,
                failed: 1,
                error: Some("bad".into()),
                ..ReloadEntry::default()
            },
            trial: Some(TrialEntry {
                deadline: 1_700_000_200,
                previous_version: "x".into(),
            }),
            health: HealthEntry {
                at: 1_700_000_300,
                ..HealthEntry::default()
            },
            unattached: vec![
                UnattachedEntry {
                    name: "eth2".into(),
                    why: "switch failed".into(),
                },
                UnattachedEntry {
                    name: "eth9".into(),
                    why: "no such interface yet".into(),
                },
            ],
            not_enforcing: vec!["eth9: not attached".into()],
        }
    }

    #[test]
    fn every_metric_of_the_contract_with_its_labels_and_values() {
        let denied = DeniedCounts::default();
        denied.add("no-source-role", Some("RHV-H5"));
        denied.add("no-source-role", Some("RHV-H5"));
        denied.add("port-not-open", None);
        let text = exposition::encode(&families(&report(), &denied), Format::Text);
        for line in [
            "portguard_build_info{version=\"",
            "portguard_policy_info{version=\"00112233aabbccdd\",mode=\"audit\",site_sha256=\"ba7816bf8f01cfea\"} 1\n",
            "portguard_interface_attached{interface=\"eth1\",mode=\"driver\"} 1\n",
            "portguard_interface_attached{interface=\"eth2\",mode=\"none\"} 0\n",
            "portguard_interface_attached{interface=\"eth9\",mode=\"none\"} 0\n",
            "portguard_healthy 0\n",
            "portguard_health_check_timestamp_seconds 1700000300\n",
            "portguard_reload_last_success 0\n",
            "portguard_reload_last_timestamp_seconds 1700000100\n",
            "portguard_reloads_total{result=\"ok\"} 2\n",
            "portguard_reloads_total{result=\"failed\"} 1\n",
            "portguard_trial_pending 1\n",
            "portguard_trial_deadline_timestamp_seconds 1700000200\n",
            "portguard_rule_packets_total{rule=\"RHV-H5\",product=\"rhv\"} 3\n",
            "portguard_rule_bytes_total{rule=\"RHV-H5\",product=\"rhv\"} 180\n",
            "portguard_rule_last_hit_timestamp_seconds{rule=\"RHV-H5\",product=\"rhv\"} 1700000000\n",
            "portguard_reason_packets_total{reason=\"port-not-open\",verdict=\"drop\"} 4\n",
            "portguard_reason_bytes_total{reason=\"port-not-open\",verdict=\"drop\"} 240\n",
            "portguard_denied_events_total{reason=\"no-source-role\",rule=\"RHV-H5\"} 2\n",
            "portguard_denied_events_total{reason=\"port-not-open\",rule=\"\"} 1\n",
            "portguard_audit_events_total{outcome=\"emitted\"} 4\n",
            "portguard_audit_events_total{outcome=\"suppressed\"} 1\n",
            "portguard_audit_events_total{outcome=\"lost\"} 0\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
        assert!(!text.contains("eth2\",mode=\"generic"), "{text}");
        assert!(!text.contains("reason=\"self-test\""), "{text}");
        assert!(!text.contains("interfaces="), "{text}");
    }

    #[test]
    fn a_healthy_host_without_reloads_or_trial() {
        let mut r = report();
        r.not_enforcing.clear();
        r.reload = ReloadEntry::default();
        r.trial = None;
        let text = exposition::encode(&families(&r, &DeniedCounts::default()), Format::OpenMetrics);
        for line in [
            "portguard_healthy 1\n",
            "portguard_reload_last_success 1\n",
            "portguard_reload_last_timestamp_seconds 0\n",
            "portguard_reloads_total{result=\"ok\"} 0\n",
            "portguard_trial_pending 0\n",
            "portguard_trial_deadline_timestamp_seconds 0\n",
            "# TYPE portguard_denied_events counter\n",
        ] {
            assert!(text.contains(line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn requests_are_routed_by_path_and_method() {
        let source = Source {
            pin_dir: "/nonexistent-pg-pins".into(),
            run_dir: "/nonexistent-pg-run".into(),
            denied: DeniedCounts::default(),
        };
        let req = |method: Method, uri: &str| {
            Request::builder().method(method).uri(uri).body(()).unwrap()
        };
        assert_eq!(
            respond(&source, &req(Method::GET, "/")).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            respond(&source, &req(Method::GET, "/metricsx")).status(),
            StatusCode::NOT_FOUND
        );
        let post = respond(&source, &req(Method::POST, "/metrics"));
        assert_eq!(post.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(post.headers()[ALLOW], "GET, HEAD");
        // No pins here: the scrape fails with why, as a 500 (a query string changes nothing).
        for uri in ["/metrics", "/metrics?x=1"] {
            assert_eq!(
                respond(&source, &req(Method::GET, uri)).status(),
                StatusCode::INTERNAL_SERVER_ERROR
            );
        }
    }
}
