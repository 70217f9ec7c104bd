//! Policies on trial (`portguard apply --confirm-within`): the daemon, not the command, holds
//! the deadline, so a change that cuts off the administrator's session undoes itself, and a
//! daemon restarted meanwhile still keeps the deadline (it is in the state file).

use std::time::{Duration, Instant};

use super::Daemon;
use crate::{
    paths::{CONFIRMED_SITE, TRIAL_REQUEST},
    state,
};

impl Daemon {
    /// SIGHUP: a plain reload, or a trial if `portguard apply` left a request.
    pub(super) fn reload_or_trial(&mut self) {
        let path = self.opts.run_dir.join(TRIAL_REQUEST);
        let request: Option<state::TrialRequest> = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let _ = std::fs::remove_file(&path);
        let previous = self.state.policy_version.clone();
        self.reload(|d| match request {
            Some(r) if d.state.reload.error.is_none() => {
                let secs = r.confirm_within.max(1);
                d.trial_deadline = Some(Instant::now() + Duration::from_secs(secs));
                d.state.trial = Some(state::TrialEntry {
                    deadline: state::now_secs() + secs,
                    previous_version: previous.clone(),
                });
                log::warn!(
                    "policy {} on trial: it reverts to {previous} in {secs} s unless `portguard confirm`",
                    d.state.policy_version
                );
            }
            // A reload that failed confirms nothing: the site on disk is not what is in force.
            None if d.state.reload.error.is_none() => d.confirm(),
            _ => {}
        });
    }

    /// The policy in force is the one to keep: remember its site file for later trials.
    pub(super) fn confirm(&mut self) {
        if self.trial_deadline.take().is_some() {
            log::info!("policy {} confirmed", self.state.policy_version);
        }
        self.state.trial = None;
        if let Ok(text) = std::fs::read(&self.opts.site) {
            // Kept on disk too: a daemon restarted during a later trial must still find it.
            let saved = std::fs::write(self.opts.run_dir.join(CONFIRMED_SITE), &text);
            if let Err(e) = saved {
                log::warn!("saving the confirmed site file: {e}");
            }
        }
        // And across reboots: what the host enforces if it boots with a broken site file.
        let products = crate::paths::policies_dir(self.opts.policies.as_deref());
        let store = super::last_good::LastGood::new(&self.opts.state_dir);
        if let Err(e) = store.save(&self.opts.site, &products, &self.state.policy_version) {
            log::warn!(
                "saving the last good policy in {}: {e}",
                self.opts.state_dir.display()
            );
        }
        self.write_state();
    }

    /// A trial ran out unconfirmed: put the confirmed site file back and apply it. The rejected
    /// file is kept next to it for the administrator.
    pub(super) fn revert(&mut self) {
        self.trial_deadline = None;
        let Ok(text) = std::fs::read(self.opts.run_dir.join(CONFIRMED_SITE)) else {
            log::error!("trial not confirmed, but no confirmed site file to go back to");
            return;
        };
        let rejected = self.opts.site.with_extension("toml.rejected");
        let _ = std::fs::copy(&self.opts.site, &rejected);
        let tmp = self.opts.site.with_extension("toml.portguard-tmp");
        let restored =
            std::fs::write(&tmp, &text).and_then(|()| std::fs::rename(&tmp, &self.opts.site));
        if let Err(e) = restored {
            log::error!("restoring {}: {e}", self.opts.site.display());
            return;
        }
        let trial = self.state.policy_version.clone();
        self.reload(|d| {
            d.state.trial = None;
            let outcome = format!(
                "trial policy {trial} not confirmed in time: reverted to {} (the trial file is saved as {})",
                d.state.policy_version,
                rejected.display()
            );
            log::warn!("{outcome}");
            if d.state.reload.error.is_none() {
                d.state.reload.error = Some(outcome);
            }
        });
    }
}

/// Sleep until `deadline`, or forever without one (a `select!` arm that never fires).
pub(super) async fn until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d.into()).await,
        None => std::future::pending().await,
    }
}
