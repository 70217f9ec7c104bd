//! Audit of denied flows: ring-buffer events turned into aggregated JSON-lines records.
//!
//! The XDP program reports denied (or, in audit mode, would-deny) packets through the `PG_AUDIT`
//! ring buffer, rate-limited per CPU, and counts what it could not report in `PG_AUDIT_STATE`.
//! [`reader`] drains the ring without polling in a loop, [`aggregate`] folds identical flows of
//! a short window into one [`record::Record`] with a count, [`logfile`] appends them to a rotated
//! JSON-lines file and [`journal`] sends them to the systemd journal (as the site's `[audit]
//! sink` says), and [`query`] reads the file back for `portguard audit` and `suggest`.

pub mod aggregate;
pub mod clock;
pub mod error;
pub mod journal;
pub mod logfile;
pub mod query;
pub mod reader;
pub mod record;

pub use error::AuditError;
pub use reader::{
    AuditConfig, AuditTotals, DeniedCounts, Reader, RuleIds, Stamp, hostname, run, totals_at,
};
pub use record::Record;
