//! `portguard lab` and `portguard lab down`: a thin call into `crate::lab`.

use std::process::ExitCode;

use super::args::{LabAction, LabArgs};
use crate::lab;

/// Exit status after an interruption (128 + SIGINT), as shells report it.
const INTERRUPTED: u8 = 130;

pub(super) fn run(args: &LabArgs) -> anyhow::Result<ExitCode> {
    if let Some(LabAction::Down { prefix }) = &args.action {
        let removed = lab::down(prefix)?;
        if removed.is_empty() {
            println!("nothing of a lab named `{prefix}` was found");
        } else {
            println!("removed {}", removed.join(", "));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let opts = lab::Options {
        site: args.site.clone(),
        policies: args.policies.clone(),
        keep: args.keep,
        svg: args.svg.clone(),
        json: args.json.clone(),
        prefix: args.prefix.clone(),
    };
    match lab::run(&opts) {
        Ok(summary) if summary.mismatches == 0 => Ok(ExitCode::SUCCESS),
        Ok(summary) => {
            eprintln!(
                "portguard lab: {} flows differ from what explain expects (marked MISMATCH above)",
                summary.mismatches
            );
            Ok(ExitCode::FAILURE)
        }
        Err(e) if lab::interrupted() => {
            eprintln!("portguard lab: interrupted ({e:#}); the lab was removed");
            Ok(ExitCode::from(INTERRUPTED))
        }
        Err(e) => Err(e.into()),
    }
}
