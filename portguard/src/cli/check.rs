//! `portguard check`: validate; every problem as `FILE:LINE:COL: message`.

use std::process::ExitCode;

use super::{EXIT_POLICY, args::PolicyArgs};
use crate::{
    lockout::Guard,
    paths,
    policy::{self, Diagnostic, Severity},
};

/// How `check` reports.
#[derive(Clone, Copy)]
pub(super) struct Options {
    /// Diagnostics as JSON.
    pub(super) json: bool,
    /// Warnings count as errors.
    pub(super) strict: bool,
    /// A policy that would lock this SSH session out passes (with a warning).
    pub(super) force: bool,
}

pub(super) fn run(args: &PolicyArgs, opts: Options) -> anyhow::Result<ExitCode> {
    super::site_exists(args)?;
    let dir = paths::policies_dir(args.policies.as_deref());
    let (valid, mut errors, warnings, summary) = match policy::load(&args.site, &dir) {
        Ok(p) => {
            match crate::lockout::session_cut(&p, &[]) {
                Guard::Clear => {}
                Guard::Cut(cut) if !opts.force => {
                    eprintln!("{}: error: {cut}", args.site.display());
                    return Ok(ExitCode::from(EXIT_POLICY));
                }
                Guard::Cut(cut) => eprintln!("{}: warning (forced): {cut}", args.site.display()),
                Guard::Unknown(why) => eprintln!("{}: warning: {why}", args.site.display()),
            }
            let summary = serde_json::json!({
                "products": p.products, "rules": p.rules.len(),
                "enabled_rules": p.rules.iter().filter(|r| r.enabled).count(),
            });
            (true, Vec::new(), p.warnings, summary)
        }
        Err(diags) => {
            let (errors, warnings) = diags
                .0
                .into_iter()
                .partition(|d| d.severity == Severity::Error);
            (false, errors, warnings, serde_json::Value::Null)
        }
    };
    // Under --strict a warning is an error: same text, same place.
    let (mut warnings, promoted): (Vec<Diagnostic>, Vec<Diagnostic>) =
        warnings.into_iter().partition(|_| !opts.strict);
    errors.extend(promoted.into_iter().map(|d| Diagnostic {
        severity: Severity::Error,
        ..d
    }));
    warnings.sort_by(|a, b| (&a.file, a.line).cmp(&(&b.file, b.line)));
    let ok = valid && errors.is_empty();
    if opts.json {
        let out = serde_json::json!({ "valid": ok, "strict": opts.strict, "errors": errors,
            "warnings": warnings, "summary": summary });
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        for d in errors.iter().chain(&warnings) {
            eprintln!("{d}");
        }
        if ok {
            println!(
                "{}: valid ({} products, {} rules, {} enabled, {} warnings)",
                args.site.display(),
                summary["products"].as_array().map_or(0, Vec::len),
                summary["rules"],
                summary["enabled_rules"],
                warnings.len()
            );
        } else {
            eprintln!(
                "{}: invalid ({} errors{})",
                args.site.display(),
                errors.len(),
                if opts.strict {
                    ", warnings counted as errors"
                } else {
                    ""
                }
            );
        }
    }
    Ok(if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_POLICY)
    })
}
