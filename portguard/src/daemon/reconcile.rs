//! What must change for a policy to be in force: a pure plan, worked out before anything is
//! touched, so it can be printed, tested and reasoned about (bpfman's and Cilium's "regenerate,
//! then swap"). [`super::apply`] carries it out.

use std::collections::BTreeMap;

/// What is in force now, as the pins and the state file say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Current {
    /// Interfaces with a pinned XDP link, and the policy version the state file records for
    /// each (empty when the state file does not know it: an adopted or orphaned pin).
    pub(crate) pinned: BTreeMap<String, String>,
    /// Interfaces with a pinned egress recorder link.
    pub(crate) recorded: Vec<String>,
}

/// The changes that put policy `version` in force on `targets`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Plan {
    /// Pinned links whose program is replaced (their recorded version differs).
    pub(crate) switch: Vec<String>,
    /// Interfaces attached for the first time.
    pub(crate) attach: Vec<String>,
    /// Interfaces that get the egress recorder.
    pub(crate) record: Vec<String>,
    /// Pinned links of interfaces no longer selected: detached.
    pub(crate) remove: Vec<String>,
    /// Pinned links already running `version`: adopted as they are.
    pub(crate) adopt: Vec<String>,
}

impl Plan {
    /// The plan for putting `version` in force on `targets`, given what is in force.
    #[must_use]
    pub(crate) fn new(targets: &[String], current: &Current, version: &str) -> Self {
        let mut plan = Plan::default();
        for t in targets {
            match current.pinned.get(t) {
                None => plan.attach.push(t.clone()),
                Some(v) if v == version => plan.adopt.push(t.clone()),
                Some(_) => plan.switch.push(t.clone()),
            }
            if !current.recorded.contains(t) {
                plan.record.push(t.clone());
            }
        }
        plan.remove = current
            .pinned
            .keys()
            .filter(|p| !targets.contains(p))
            .cloned()
            .collect();
        plan
    }

    /// Whether a program must be loaded (something is switched, attached or recorded).
    #[must_use]
    pub(crate) fn needs_program(&self) -> bool {
        self.changes_policy() || !self.record.is_empty()
    }

    /// Whether some interface gets a different program than it runs now.
    #[must_use]
    pub(crate) fn changes_policy(&self) -> bool {
        !self.switch.is_empty() || !self.attach.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    fn current(pinned: &[(&str, &str)], recorded: &[&str]) -> Current {
        Current {
            pinned: pinned
                .iter()
                .map(|(i, v)| ((*i).to_owned(), (*v).to_owned()))
                .collect(),
            recorded: names(recorded),
        }
    }

    #[test]
    fn a_fresh_host_attaches_and_records_everything() {
        let plan = Plan::new(&names(&["eth1", "eth2"]), &Current::default(), "v1");
        assert_eq!(plan.attach, names(&["eth1", "eth2"]));
        assert_eq!(plan.record, names(&["eth1", "eth2"]));
        assert!(plan.switch.is_empty() && plan.remove.is_empty() && plan.adopt.is_empty());
        assert!(plan.changes_policy() && plan.needs_program());
    }

    #[test]
    fn the_same_version_is_adopted_without_loading_anything() {
        let now = current(&[("eth1", "v1")], &["eth1"]);
        let plan = Plan::new(&names(&["eth1"]), &now, "v1");
        assert_eq!(plan.adopt, names(&["eth1"]));
        assert!(!plan.needs_program());
    }

    #[test]
    fn a_new_version_switches_and_an_unknown_pin_is_switched_too() {
        let now = current(&[("eth1", "v1"), ("eth2", "")], &["eth1", "eth2"]);
        let plan = Plan::new(&names(&["eth1", "eth2"]), &now, "v2");
        assert_eq!(plan.switch, names(&["eth1", "eth2"]));
        assert!(plan.attach.is_empty() && plan.record.is_empty());
    }

    #[test]
    fn interfaces_no_longer_selected_are_removed_and_a_missing_recorder_is_added() {
        let now = current(&[("eth1", "v1"), ("old0", "v1")], &[]);
        let plan = Plan::new(&names(&["eth1"]), &now, "v1");
        assert_eq!(plan.remove, names(&["old0"]));
        assert_eq!(plan.record, names(&["eth1"]));
        assert!(!plan.changes_policy() && plan.needs_program());
    }
}
