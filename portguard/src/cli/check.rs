//! `portguard check`: validate; every problem as `FILE:LINE:COL: message`.

use std::process::ExitCode;

use super::args::PolicyArgs;
use crate::{paths, policy};

pub(super) fn run(args: &PolicyArgs, json: bool, force: bool) -> anyhow::Result<ExitCode> {
    let dir = paths::policies_dir(args.policies.as_deref());
    match policy::load(&args.site, &dir) {
        Ok(p) => {
            if let Some(cut) = crate::lockout::session_cut(&p, &[]) {
                if !force {
                    eprintln!("{}: error: {cut}", args.site.display());
                    return Ok(ExitCode::FAILURE);
                }
                eprintln!("{}: warning (forced): {cut}", args.site.display());
            }
            if json {
                let out = serde_json::json!({ "valid": true, "errors": [], "warnings": p.warnings,
                    "products": p.products, "rules": p.rules.len(),
                    "enabled_rules": p.rules.iter().filter(|r| r.enabled).count() });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                for w in &p.warnings {
                    eprintln!("{w}");
                }
                let enabled = p.rules.iter().filter(|r| r.enabled).count();
                println!(
                    "{}: valid ({} products, {} rules, {enabled} enabled, {} warnings)",
                    args.site.display(),
                    p.products.len(),
                    p.rules.len(),
                    p.warnings.len()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(diags) => {
            if json {
                let out = serde_json::json!({ "valid": false, "errors": diags.0 });
                println!("{}", serde_json::to_string_pretty(&out)?);
            } else {
                eprintln!("{diags}");
            }
            Ok(ExitCode::FAILURE)
        }
    }
}
