//! `portguard suggest`: site changes the audit records and rule counters argue for, as a
//! reviewable diff (see `crate::suggest`). Nothing is changed.

use std::{io::Write as _, process::ExitCode};

use jiff::Timestamp;

use super::args::SuggestArgs;
use crate::{
    audit::query::{self, Filter},
    paths,
    state::{SavedSample, State},
    suggest::{self, Input},
};

pub(super) fn run(args: &SuggestArgs) -> anyhow::Result<ExitCode> {
    let policy = super::load_policy(&args.policy)?;
    let log = args
        .log
        .clone()
        .unwrap_or_else(|| policy.audit.path.clone());
    if query::log_files(&log)?.is_empty() {
        anyhow::bail!(
            "no audit log at {} (the site's [audit] path, or --log, says where the daemon writes; \
             with [audit] sink = \"journal\" there is no file to read)",
            log.display()
        );
    }
    let since = args.since.resolve(Timestamp::now());
    let records = query::read(
        &log,
        &Filter {
            since: Some(since),
            ..Filter::default()
        },
    )?;
    let state = match State::read(&args.state.run_dir) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("portguard: warning: {e}: rules without traffic are not listed");
            None
        }
    };
    let sample = SavedSample::read(&args.state.run_dir);
    let policies = paths::policies_dir(args.policy.policies.as_deref());
    let found = suggest::suggest(&Input {
        site: &args.policy.site,
        policies: &policies,
        host_roles: &args.host.host_roles,
        records: &records,
        since,
        state: state.as_ref(),
        sample: sample.as_ref(),
    })?;
    let mut out = std::io::stdout().lock();
    let written = if args.json {
        serde_json::to_writer_pretty(&mut out, &found)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out))
    } else {
        out.write_all(suggest::render(&found).as_bytes())
    };
    match written {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
        Ok(()) => Ok(ExitCode::SUCCESS),
    }
}
