//! The Prometheus alerts and the Grafana dashboard shipped in packaging/: checked and
//! unit-tested with Debian's `promtool` (the `prometheus` package `cargo xtask setup` installs),
//! and held to the metric names, labels and label values portguard serves (docs/metrics.md).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Command, Output},
};

use integration_tests::unique;
use serde_json::Value;

/// Every metric portguard serves and its labels (besides the `job` and `instance` Prometheus
/// adds), as docs/metrics.md lists them.
const METRICS: &[(&str, &[&str])] = &[
    ("portguard_build_info", &["version"]),
    ("portguard_policy_info", &["version", "mode", "site_sha256"]),
    ("portguard_interface_attached", &["interface", "mode"]),
    ("portguard_healthy", &[]),
    ("portguard_health_check_timestamp_seconds", &[]),
    ("portguard_reload_last_success", &[]),
    ("portguard_reload_last_timestamp_seconds", &[]),
    ("portguard_reloads_total", &["result"]),
    ("portguard_trial_pending", &[]),
    ("portguard_trial_deadline_timestamp_seconds", &[]),
    ("portguard_rule_packets_total", &["rule", "product"]),
    ("portguard_rule_bytes_total", &["rule", "product"]),
    (
        "portguard_rule_last_hit_timestamp_seconds",
        &["rule", "product"],
    ),
    ("portguard_reason_packets_total", &["reason", "verdict"]),
    ("portguard_reason_bytes_total", &["reason", "verdict"]),
    ("portguard_denied_events_total", &["reason", "rule"]),
    ("portguard_audit_events_total", &["outcome"]),
];

/// The reasons of `portguard_reason_*` and `portguard_denied_events_total`.
const REASONS: &[&str] = &[
    "arp",
    "non-ip-passed",
    "not-for-host",
    "broadcast-passed",
    "reply",
    "icmp-error-own-flow",
    "audit-passed",
    "malformed",
    "no-source-role",
    "port-not-open",
    "source-not-allowed",
    "proto-not-open",
    "fragment-dropped",
    "non-ip-dropped",
    "not-for-host-dropped",
    "too-deep",
];

/// The values a label may take, where the set is fixed.
fn label_values(metric: &str, label: &str) -> Option<&'static [&'static str]> {
    Some(match (metric, label) {
        (_, "verdict") => &["pass", "drop"],
        (_, "outcome") => &["emitted", "suppressed", "lost"],
        (_, "result") => &["ok", "failed"],
        (_, "reason") => REASONS,
        ("portguard_policy_info", "mode") => &["enforce", "audit"],
        ("portguard_interface_attached", "mode") => &["driver", "generic", "none"],
        _ => return None,
    })
}

fn prometheus_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/prometheus")
}

fn dashboard_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../packaging/grafana/portguard-dashboard.json")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `promtool ARGS` in `dir`; panics with its output unless it succeeds.
fn promtool(dir: &Path, args: &[&str]) -> Output {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool missing ({e}): run `cargo xtask setup`"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("$ promtool {}\n{text}", args.join(" "));
    assert!(
        out.status.success(),
        "promtool {} failed:\n{text}",
        args.join(" ")
    );
    out
}

#[test]
fn rules_pass_promtool_check() {
    let out = promtool(
        &prometheus_dir(),
        &["check", "rules", "portguard-rules.yml"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
    // The example scrape config loads the rules beside it.
    promtool(&prometheus_dir(), &["check", "config", "prometheus.yml"]);
}

#[test]
fn rules_pass_their_unit_tests() {
    let out = promtool(
        &prometheus_dir(),
        &["test", "rules", "portguard-rules.test.yml"],
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("SUCCESS"));
}

/// Alert names of the rules file (`- alert: NAME` lines).
fn alerts(rules: &str) -> BTreeSet<String> {
    rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- alert:"))
        .map(|n| n.trim().to_owned())
        .collect()
}

#[test]
fn every_alert_has_a_firing_and_a_quiet_test_case() {
    let alerts = alerts(&read(&prometheus_dir().join("portguard-rules.yml")));
    assert!(alerts.len() >= 8, "alerts found: {alerts:?}");
    // In the test file each case is `alertname: NAME` followed by `exp_alerts: []` (must not
    // fire) or `exp_alerts:` and a list (must fire, with those labels); promtool checks the
    // outcome, this checks that both kinds exist for every alert.
    let tests = read(&prometheus_dir().join("portguard-rules.test.yml"));
    let mut cases: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in tests.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("alertname:") {
            current = Some(name.trim().to_owned());
        } else if let Some(rest) = line.strip_prefix("exp_alerts:") {
            let name = current.take().expect("exp_alerts without alertname");
            let entry = cases.entry(name).or_default();
            match rest.trim() {
                "[]" => entry.1 += 1,
                "" => entry.0 += 1,
                other => panic!("exp_alerts: {other}: write [] or a block list"),
            }
        }
    }
    for alert in &alerts {
        let (firing, quiet) = cases.get(alert).copied().unwrap_or_default();
        assert!(firing > 0, "{alert}: no test case where it fires");
        assert!(quiet > 0, "{alert}: no test case where it stays quiet");
    }
    for tested in cases.keys() {
        assert!(alerts.contains(tested), "tests name unknown alert {tested}");
    }
}

/// Every `portguard_*` metric named in `text`, with the label matchers written after it; panics
/// on a metric, label or label value portguard does not serve.
fn check_metric_references(what: &str, text: &str) -> BTreeSet<&'static str> {
    let mut seen = BTreeSet::new();
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut at = 0;
    while let Some(found) = text[at..].find("portguard_") {
        let start = at + found;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        at = end;
        if start > 0 && ident(bytes[start - 1]) {
            continue; // part of another name (a recording rule's, say)
        }
        let name = &text[start..end];
        let (metric, labels) = METRICS
            .iter()
            .find(|(m, _)| *m == name)
            .unwrap_or_else(|| panic!("{what}: unknown metric {name}"));
        seen.insert(*metric);
        let rest = text[end..].trim_start();
        if let Some(body) = rest.strip_prefix('{') {
            let body = &body[..body.find('}').expect("unclosed {")];
            for matcher in split_matchers(body) {
                let (label, op, value) = parse_matcher(matcher)
                    .unwrap_or_else(|| panic!("{what}: cannot read matcher {matcher:?}"));
                assert!(
                    ["job", "instance"].contains(&label) || labels.contains(&label),
                    "{what}: {metric} has no label {label}"
                );
                if op == "="
                    && !value.contains('$')
                    && !value.is_empty()
                    && let Some(values) = label_values(metric, label)
                {
                    assert!(
                        values.contains(&value),
                        "{what}: {metric}{{{label}={value:?}}}: not one of {values:?}"
                    );
                }
            }
        }
    }
    seen
}

/// Matchers of a selector body, split at commas outside quotes.
fn split_matchers(body: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quote, mut from) = (None, 0);
    for (i, c) in body.char_indices() {
        match (quote, c) {
            (None, '"' | '\'') => quote = Some(c),
            (Some(q), _) if c == q && !body[..i].ends_with('\\') => quote = None,
            (None, ',') => {
                out.push(body[from..i].trim());
                from = i + 1;
            }
            _ => {}
        }
    }
    out.push(body[from..].trim());
    out.into_iter().filter(|m| !m.is_empty()).collect()
}

/// `label op "value"` (op one of = != =~ !~).
fn parse_matcher(m: &str) -> Option<(&str, &str, &str)> {
    let op_at = m.find(['=', '!'])?;
    let label = m[..op_at].trim();
    let rest = &m[op_at..];
    let op = ["=~", "!~", "!=", "="]
        .into_iter()
        .find(|op| rest.starts_with(op))?;
    let value = rest[op.len()..].trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))?;
    Some((label, op, value))
}

#[test]
fn rules_and_their_tests_use_only_portguard_metrics() {
    let rules = check_metric_references(
        "portguard-rules.yml",
        &read(&prometheus_dir().join("portguard-rules.yml")),
    );
    for needed in [
        "portguard_healthy",
        "portguard_interface_attached",
        "portguard_reload_last_success",
        "portguard_trial_pending",
        "portguard_reason_packets_total",
        "portguard_denied_events_total",
        "portguard_audit_events_total",
    ] {
        assert!(rules.contains(needed), "no alert uses {needed}");
    }
    check_metric_references(
        "portguard-rules.test.yml",
        &read(&prometheus_dir().join("portguard-rules.test.yml")),
    );
}

/// The metric checker itself: it must refuse what portguard does not serve.
#[test]
fn metric_reference_check_refuses_unknown_names_labels_and_values() {
    for bad in [
        "rate(portguard_audit_suppressed_total[5m])",
        "portguard_rule_packets_total{interfaces=\"eth0\"}",
        "portguard_reason_packets_total{verdict=\"dropped\"}",
        "portguard_interface_attached{mode=\"native\"}",
    ] {
        let refused = std::panic::catch_unwind(|| check_metric_references("probe", bad)).is_err();
        assert!(refused, "accepted {bad}");
    }
    let ok = check_metric_references(
        "probe",
        "sum by (reason) (rate(portguard_reason_packets_total{job=~\"$job\", verdict=\"drop\", reason!=\"arp\"}[5m]))",
    );
    assert!(ok.contains("portguard_reason_packets_total"));
}

/// Every string under an `expr` key (panel targets) of a Grafana dashboard.
fn exprs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr", Value::String(s)) => out.push(s.clone()),
                    _ => exprs(v, out),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| exprs(i, out)),
        _ => {}
    }
}

#[test]
fn dashboard_parses_and_queries_only_portguard_metrics() {
    let text = read(&dashboard_path());
    let dash: Value = serde_json::from_str(&text).expect("dashboard JSON");
    assert!(dash["title"].is_string() && dash["uid"].is_string());
    let panels = dash["panels"].as_array().expect("panels");
    let mut ids = BTreeSet::new();
    for p in panels {
        assert!(ids.insert(p["id"].as_u64().unwrap()), "duplicate panel id");
    }
    // Panels use the dashboard's datasource variable, so it imports into any Grafana.
    let vars: Vec<&str> = dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    for needed in ["datasource", "job", "instance"] {
        assert!(vars.contains(&needed), "no ${needed} variable");
    }

    let mut all = Vec::new();
    exprs(&dash, &mut all);
    assert!(all.len() >= 10, "only {} queries", all.len());
    let mut used = BTreeSet::new();
    for expr in &all {
        let seen = check_metric_references("portguard-dashboard.json", expr);
        // `up` (Prometheus's own, per target) is the one other metric a panel may use.
        assert!(
            !seen.is_empty() || expr.starts_with("count(up{"),
            "query uses no portguard metric: {expr}"
        );
        used.extend(seen);
    }
    // What the dashboard is for: health, interfaces, policy version and mode, reloads, top
    // rules, drops by reason, audit loss.
    for needed in [
        "portguard_healthy",
        "portguard_interface_attached",
        "portguard_policy_info",
        "portguard_reloads_total",
        "portguard_rule_packets_total",
        "portguard_reason_packets_total",
        "portguard_audit_events_total",
    ] {
        assert!(used.contains(needed), "no panel shows {needed}");
    }
    // The variables' queries too (`label_values(SELECTOR, label)`).
    for var in dash["templating"]["list"].as_array().unwrap() {
        for query in [&var["definition"], &var["query"]["query"]] {
            if let Some(q) = query.as_str() {
                check_metric_references("dashboard variable", q);
            }
        }
    }

    // Every query is valid PromQL once Grafana's variables are filled in: promtool parses them
    // as recording rules.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, expr) in all.iter().enumerate() {
        let filled = expr
            .replace("$__rate_interval", "5m")
            .replace("$__range", "6h")
            .replace("$job", ".*")
            .replace("$instance", ".*");
        assert!(!filled.contains('$'), "unknown variable in {expr}");
        writeln!(
            rules,
            "      - record: dashboard:query_{i}:check\n        expr: {}",
            serde_json::to_string(&filled).unwrap()
        )
        .unwrap();
    }
    let dir = std::env::temp_dir().join(unique("pg-dash-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("dashboard-rules.yml"), rules).unwrap();
    let result = std::panic::catch_unwind(|| {
        promtool(&dir, &["check", "rules", "dashboard-rules.yml"]);
    });
    let _ = std::fs::remove_dir_all(&dir);
    if let Err(e) = result {
        std::panic::resume_unwind(e);
    }
}
