//! `run --metrics ADDR`: per-rule and per-reason counters for Prometheus, for fleets.
//!
//! Each scrape reads the pinned counters afresh (the same report `status` prints), so the
//! endpoint holds no state and its figures never drift from what the kernel counted. The
//! datapath counts per rule for the whole host, not per interface: the `interfaces` label lists
//! where the policy is attached rather than splitting counts it does not have.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpListener,
};

use super::DaemonError;
use crate::state::report::{self, ReportError};

/// Why a scrape could not be answered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The counters or state could not be read.
    #[error(transparent)]
    Report(#[from] ReportError),
    /// The text encoder failed.
    #[error("encoding the metrics")]
    Encode(#[from] std::fmt::Error),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabels {
    rule: String,
    product: String,
    interfaces: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
    verdict: String,
    interfaces: String,
}

/// Render the current counters in the Prometheus text format.
pub fn render(
    pin_dir: &std::path::Path,
    run_dir: &std::path::Path,
) -> Result<String, MetricsError> {
    let (r, _) = report::build(pin_dir, run_dir, None)?;
    let interfaces = r
        .interfaces
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let mut registry = Registry::with_prefix("portguard");
    let packets = Family::<RuleLabels, Counter>::default();
    let bytes = Family::<RuleLabels, Counter>::default();
    for rule in r.rules.iter().filter(|x| x.active) {
        let labels = RuleLabels {
            rule: rule.id.clone(),
            product: rule.product.clone(),
            interfaces: interfaces.clone(),
        };
        packets.get_or_create(&labels).inc_by(rule.packets);
        bytes.get_or_create(&labels).inc_by(rule.bytes);
    }
    registry.register("rule_packets", "Packets allowed by each rule", packets);
    registry.register("rule_bytes", "Bytes allowed by each rule", bytes);
    let reasons = Family::<ReasonLabels, Counter>::default();
    for x in &r.reasons {
        reasons
            .get_or_create(&ReasonLabels {
                reason: x.reason.to_owned(),
                verdict: x.verdict.to_owned(),
                interfaces: interfaces.clone(),
            })
            .inc_by(x.packets);
    }
    registry.register(
        "reason_packets",
        "Packets not allowed by a rule, by what happened to them",
        reasons,
    );
    for (name, help, v) in [
        ("audit_emitted", "Audit events written", r.audit.emitted),
        (
            "audit_suppressed",
            "Denied packets not reported by the audit rate limit",
            r.audit.suppressed,
        ),
        (
            "audit_lost",
            "Audit events lost to a full ring buffer",
            r.audit.lost,
        ),
    ] {
        let c = Counter::<u64>::default();
        c.inc_by(v);
        registry.register(name, help, c);
    }
    let loaded = Gauge::<i64>::default();
    loaded.set(
        r.loaded_at
            .as_deref()
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .map_or(0, jiff::Timestamp::as_second),
    );
    registry.register(
        "policy_loaded_timestamp_seconds",
        "When the policy in force was loaded",
        loaded,
    );
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// Bind the endpoint: done before the daemon reports ready, so a bad address fails the start.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, DaemonError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Metrics { addr, source })?;
    log::info!("metrics on http://{addr}/metrics");
    Ok(listener)
}

/// Serve `GET /metrics` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    pin_dir: PathBuf,
    run_dir: PathBuf,
) -> std::io::Result<()> {
    loop {
        let (mut sock, _) = listener.accept().await?;
        let (pins, run) = (pin_dir.clone(), run_dir.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            // Read the request head, with a bound on size and time: a slow client gets nothing.
            let head = tokio::time::timeout(Duration::from_secs(5), async {
                while len < buf.len() && !buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut buf[len..]).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => len += n,
                    }
                }
            })
            .await;
            if head.is_err() {
                return;
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let response = if request.starts_with("GET /metrics ") {
                match render(&pins, &run) {
                    Ok(body) => format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: application/openmetrics-text; version=1.0.0; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    ),
                    Err(e) => {
                        let body = format!("{}\n", super::chain(&e));
                        format!(
                            "HTTP/1.1 500 Internal Server Error\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        )
                    }
                }
            } else {
                "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned()
            };
            let _ = sock.write_all(response.as_bytes()).await;
        });
    }
}
