//! `portguard status`: a readable table of what is in force, or its JSON.

use std::{fmt::Write as _, process::ExitCode, time::Duration};

use super::args::StateArgs;
use crate::state::report::{self, Report};

pub(super) fn run(args: &StateArgs, json: bool, watch: Option<u64>) -> anyhow::Result<ExitCode> {
    let (mut report, mut prev) = report::build(&args.pin_dir, &args.run_dir, None)?;
    loop {
        if json {
            println!("{}", serde_json::to_string(&report)?);
        } else {
            if watch.is_some() {
                // Clear the screen and home the cursor, as watch(1) does.
                print!("\x1b[2J\x1b[H");
            }
            print!("{}", render(&report));
        }
        let Some(secs) = watch else {
            // Not enforcing what the site says is a verdict, like a denied flow for explain.
            return Ok(if report.not_enforcing.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(super::EXIT_POLICY)
            });
        };
        std::thread::sleep(Duration::from_secs(secs.max(1)));
        (report, prev) = report::build(&args.pin_dir, &args.run_dir, Some(&prev))?;
    }
}

fn human(n: u64) -> String {
    match n {
        0..1_000 => n.to_string(),
        1_000..1_000_000 => format!("{:.1}k", n as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}M", n as f64 / 1e6),
        _ => format!("{:.1}G", n as f64 / 1e9),
    }
}

/// The readable form.
fn render(r: &Report) -> String {
    let mut out = String::new();
    let daemon = r
        .daemon_pid
        .map_or_else(|| "not running".to_owned(), |p| format!("pid {p}"));
    let _ = writeln!(
        out,
        "portguard: {} policy {} loaded {}, daemon {daemon}",
        if r.mode.is_empty() { "?" } else { &r.mode },
        if r.policy_version.is_empty() {
            "?"
        } else {
            &r.policy_version
        },
        r.loaded_at.as_deref().unwrap_or("?"),
    );
    header(&mut out, r);
    if r.reload.count > 0 {
        let _ = writeln!(
            out,
            "last reload {}: {}",
            report::rfc3339(r.reload.at).unwrap_or_default(),
            match &r.reload.error {
                Some(e) => format!("FAILED, previous policy kept: {}", first_line(e)),
                None if r.reload.switched => format!("switched in {} µs", r.reload.switch_us),
                None => "unchanged".to_owned(),
            }
        );
    }
    let _ = writeln!(
        out,
        "\n{:<22} {:<12} {:>9} {:>9} {:>9}  {:<20}  PURPOSE",
        "RULE", "PRODUCT", "PACKETS", "BYTES", "PKT/S", "LAST HIT"
    );
    for rule in &r.rules {
        let id = if rule.active {
            rule.id.clone()
        } else {
            format!("{} (removed)", rule.id)
        };
        let _ = writeln!(
            out,
            "{:<22} {:<12} {:>9} {:>9} {:>9}  {:<20}  {}",
            id,
            rule.product,
            human(rule.packets),
            human(rule.bytes),
            rule.rate_pps
                .map_or_else(|| "-".to_owned(), |r| format!("{r:.1}")),
            rule.last_hit.as_deref().unwrap_or("-"),
            shorten(&rule.purpose, 70)
        );
    }
    let _ = writeln!(
        out,
        "\n{:<22} {:<7} {:>9} {:>9}",
        "NOT BY A RULE", "VERDICT", "PACKETS", "BYTES"
    );
    for reason in r.reasons.iter().filter(|x| x.packets > 0) {
        let _ = writeln!(
            out,
            "{:<22} {:<7} {:>9} {:>9}",
            reason.reason,
            reason.verdict,
            human(reason.packets),
            human(reason.bytes)
        );
    }
    let _ = writeln!(
        out,
        "\naudit events: {} emitted, {} suppressed by the rate limit, {} lost (ring full)",
        r.audit.emitted, r.audit.suppressed, r.audit.lost
    );
    out
}

/// Site, health, interfaces and a pending trial.
fn header(out: &mut String, r: &Report) {
    let _ = writeln!(out, "site {}  roles {}", r.site, r.roles.join(", "));
    if r.not_enforcing.is_empty() {
        let _ = writeln!(
            out,
            "enforcing as the site says (self-test {} passed)",
            report::rfc3339(r.health.at).unwrap_or_default()
        );
    } else {
        let _ = writeln!(out, "NOT ENFORCING AS THE SITE SAYS:");
        for why in &r.not_enforcing {
            let _ = writeln!(out, "  - {}", first_line(why));
        }
    }
    if r.interfaces.is_empty() {
        let _ = writeln!(out, "interfaces: none attached");
    }
    for i in &r.interfaces {
        let _ = writeln!(
            out,
            "interface {:<12} {:<8} policy {}  since {}",
            i.name,
            i.mode,
            i.policy_version,
            report::rfc3339(i.since).unwrap_or_default()
        );
    }
    if let Some(t) = &r.trial {
        let _ = writeln!(
            out,
            "ON TRIAL: reverts to policy {} at {} unless `portguard confirm`",
            t.previous_version,
            report::rfc3339(t.deadline).unwrap_or_default()
        );
    }
}

/// The first `max` characters of `s`, with an ellipsis if cut (`--json` has the whole text).
fn shorten(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let cut: String = s.chars().take(max - 1).collect();
    format!("{}…", cut.trim_end())
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}
