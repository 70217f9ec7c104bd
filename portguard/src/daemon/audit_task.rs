//! The audit reader task of the daemon: drains the pinned ring buffer into the audit log and
//! the journal, counts what it reads for the metrics, and is restarted when a reload changes
//! where records go.

use super::Daemon;
use crate::audit;

/// The audit reader task and how to stop it.
pub(super) struct AuditTask {
    pub(super) config: audit::AuditConfig,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Result<(), audit::AuditError>>,
}

impl AuditTask {
    /// Start draining the pinned ring buffer into the log `config` names.
    pub(super) fn start(
        daemon: &Daemon,
        config: audit::AuditConfig,
    ) -> Result<Self, audit::AuditError> {
        let run_dir = daemon.opts.run_dir.clone();
        // The version in force when a window's records are written, as the daemon recorded
        // it (reloads, trials and reverts all go through the state file).
        let version = move || {
            crate::state::State::read(&run_dir)
                .ok()
                .flatten()
                .map(|s| s.policy_version)
                .filter(|v| !v.is_empty())
        };
        let reader = audit::Reader::open(&daemon.opts.pin_dir, config.clone())?
            .counting(daemon.denied.clone())
            .stamped(audit::Stamp::new(version));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reader.run(
            audit::record::interface_name,
            daemon.rule_ids.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        match (config.sink.file(), config.sink.journal()) {
            (true, true) => log::info!(
                "audit records go to {} and the journal",
                config.path.display()
            ),
            (true, false) => log::info!("audit records go to {}", config.path.display()),
            _ => log::info!("audit records go to the journal"),
        }
        Ok(AuditTask { config, stop, task })
    }

    /// Drain what is left, write the last window, and stop.
    pub(super) async fn finish(self) {
        let _ = self.stop.send(());
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => log::error!("audit reader: {e}"),
            Err(e) => log::error!("audit reader task: {e}"),
        }
    }
}
