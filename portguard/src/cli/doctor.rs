//! `portguard doctor`: which kernel features portguard uses are there, and what runs without
//! the missing ones.

use std::process::ExitCode;

use super::{EXIT_POLICY, EXIT_USAGE};
use crate::doctor::{self, Need, Report, Status, Verdict};

pub(super) fn run(json: bool) -> anyhow::Result<ExitCode> {
    let report = doctor::probe();
    if json {
        println!("{}", serde_json::to_string_pretty(&report.to_json())?);
    } else {
        print!("{}", render(&report));
    }
    // 0: enforcement works (perhaps degraded); 1: this kernel cannot enforce; 2: this process
    // could not ask (the environment's problem, as for every verb).
    Ok(match report.verdict() {
        Verdict::Ok | Verdict::Degraded => ExitCode::SUCCESS,
        Verdict::CannotRun => ExitCode::from(EXIT_POLICY),
        Verdict::Unprivileged => ExitCode::from(EXIT_USAGE),
    })
}

/// The table, then one line per missing feature saying what portguard does without it.
fn render(r: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "kernel {}\n", r.kernel);
    let _ = writeln!(
        out,
        "{:<48} {:<8} {:<6} {:<9} DETAIL",
        "FEATURE", "STATUS", "SINCE", "NEED"
    );
    for p in &r.probes {
        let need = match p.feature.need() {
            Need::Required => "required",
            Need::Optional => "optional",
        };
        let _ = writeln!(
            out,
            "{:<48} {:<8} {:<6} {:<9} {}",
            p.feature.name(),
            p.status.name(),
            p.feature.since(),
            need,
            p.detail
        );
    }
    let lacking: Vec<_> = r
        .probes
        .iter()
        .filter(|p| p.status != Status::Present)
        .collect();
    // Without privileges every probe is "unknown": the verdict line says all there is to say.
    if !lacking.is_empty() && r.verdict() != Verdict::Unprivileged {
        let _ = writeln!(out, "\nwithout:");
        for p in lacking {
            let _ = writeln!(
                out,
                "  {} ({}): {}",
                p.feature.name(),
                p.status.name(),
                p.feature.without()
            );
        }
    }
    let verdict = match r.verdict() {
        Verdict::Ok => "ok: everything portguard uses is there".to_owned(),
        Verdict::Degraded => "degraded: portguard enforces, with the limits above".to_owned(),
        Verdict::CannotRun => format!(
            "cannot-run: {}",
            r.fatal().map(|e| e.to_string()).unwrap_or_default()
        ),
        Verdict::Unprivileged => {
            "unprivileged: the kernel could not be asked; run as root".to_owned()
        }
    };
    let _ = writeln!(out, "\nverdict: {verdict}");
    out
}
