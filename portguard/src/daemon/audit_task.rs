//! The audit reader task of the daemon: drains the pinned ring buffer into the audit log, and
//! is restarted when a reload moves the log.

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
        let reader = audit::Reader::open(&daemon.opts.pin_dir, config.clone())?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(reader.run(
            audit::record::interface_name,
            daemon.rule_ids.clone(),
            async move {
                let _ = stopped.await;
            },
        ));
        log::info!("audit records go to {}", config.path.display());
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
