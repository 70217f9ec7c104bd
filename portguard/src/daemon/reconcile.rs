//! What must change for a policy to be in force: a pure plan, worked out before anything is
//! touched, so it can be printed, tested and reasoned about (bpfman's and Cilium's "regenerate,
//! then swap"). [`super::apply`] carries it out.

use std::collections::BTreeMap;

/// A pinned program, as its policy maps describe it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Held {
    /// Kernel id of the program.
    pub(crate) id: u32,
    /// Whether it is this build's program (else it is only ever replaced).
    pub(crate) ours: bool,
    /// The policy version of its live tables.
    pub(crate) version: String,
    /// Whether the new policy fits its table generations.
    pub(crate) fits: bool,
}

/// What is in force now, as the kernel's pins say.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Current {
    /// Interfaces with a pinned XDP link, and the program each runs (0: a dead link).
    pub(crate) pinned: BTreeMap<String, u32>,
    /// Interfaces with a pinned egress recorder link.
    pub(crate) recorded: Vec<String>,
    /// The pinned programs.
    pub(crate) programs: Vec<Held>,
}

/// The program the interfaces will run, and what happens to its tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Use {
    /// This pinned program already enforces the policy: nothing to write.
    Keep(u32),
    /// This pinned program gets the policy in its idle generation, then switches to it.
    Switch(u32),
    /// No pinned program can take the policy (none of this build, or the policy outgrew its
    /// tables): load one, with the policy in force from the start. The only case that runs
    /// the verifier.
    Load,
}

/// The changes that put policy `version` in force on `targets`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Plan {
    /// The program and its tables.
    pub(crate) program: Use,
    /// Interfaces attached for the first time.
    pub(crate) attach: Vec<String>,
    /// Pinned links that run another program: switched to the chosen one (`BPF_LINK_UPDATE`).
    pub(crate) relink: Vec<String>,
    /// Pinned links that run the chosen program: left as they are.
    pub(crate) adopt: Vec<String>,
    /// Interfaces that get the egress recorder.
    pub(crate) record: Vec<String>,
    /// Pinned links of interfaces no longer selected: detached.
    pub(crate) remove: Vec<String>,
}

impl Plan {
    /// The plan for putting `version` in force on `targets`, given what is in force.
    #[must_use]
    pub(crate) fn new(targets: &[String], current: &Current, version: &str) -> Self {
        let program = choose(targets, current, version);
        let chosen = match program {
            Use::Keep(id) | Use::Switch(id) => Some(id),
            Use::Load => None,
        };
        let mut plan = Plan {
            program,
            attach: Vec::new(),
            relink: Vec::new(),
            adopt: Vec::new(),
            record: Vec::new(),
            remove: Vec::new(),
        };
        for t in targets {
            match current.pinned.get(t) {
                None => plan.attach.push(t.clone()),
                Some(id) if Some(*id) == chosen => plan.adopt.push(t.clone()),
                Some(_) => plan.relink.push(t.clone()),
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

    /// Whether some interface gets a different policy than it enforces now.
    #[must_use]
    pub(crate) fn changes_policy(&self) -> bool {
        !matches!(self.program, Use::Keep(_)) || !self.relink.is_empty() || !self.attach.is_empty()
    }
}

/// The program to use: of this build's pinned programs that already enforce `version` or can
/// take it, the one most target interfaces run (a switch then touches no link), then one that
/// already enforces it, then the newest.
fn choose(targets: &[String], current: &Current, version: &str) -> Use {
    let runs = |id: u32| {
        targets
            .iter()
            .filter(|t| current.pinned.get(*t) == Some(&id))
            .count()
    };
    current
        .programs
        .iter()
        .filter(|p| p.ours && (p.version == version || p.fits))
        .max_by_key(|p| (runs(p.id), p.version == version, p.id))
        .map_or(Use::Load, |p| {
            if p.version == version {
                Use::Keep(p.id)
            } else {
                Use::Switch(p.id)
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| (*s).to_owned()).collect()
    }

    fn held(id: u32, ours: bool, version: &str, fits: bool) -> Held {
        Held {
            id,
            ours,
            version: version.to_owned(),
            fits,
        }
    }

    fn current(pinned: &[(&str, u32)], recorded: &[&str], programs: Vec<Held>) -> Current {
        Current {
            pinned: pinned.iter().map(|(i, p)| ((*i).to_owned(), *p)).collect(),
            recorded: names(recorded),
            programs,
        }
    }

    #[test]
    fn a_fresh_host_loads_once_and_attaches_and_records_everything() {
        let plan = Plan::new(&names(&["eth1", "eth2"]), &Current::default(), "v1");
        assert_eq!(plan.program, Use::Load);
        assert_eq!(plan.attach, names(&["eth1", "eth2"]));
        assert_eq!(plan.record, names(&["eth1", "eth2"]));
        assert!(plan.relink.is_empty() && plan.remove.is_empty() && plan.adopt.is_empty());
        assert!(plan.changes_policy());
    }

    #[test]
    fn the_same_version_is_adopted_without_writing_anything() {
        let now = current(&[("eth1", 7)], &["eth1"], vec![held(7, true, "v1", true)]);
        let plan = Plan::new(&names(&["eth1"]), &now, "v1");
        assert_eq!(plan.program, Use::Keep(7));
        assert_eq!(plan.adopt, names(&["eth1"]));
        assert!(!plan.changes_policy());
    }

    #[test]
    fn a_new_version_switches_the_tables_and_touches_no_link() {
        let now = current(
            &[("eth1", 7), ("eth2", 7)],
            &["eth1", "eth2"],
            vec![held(7, true, "v1", true)],
        );
        let plan = Plan::new(&names(&["eth1", "eth2"]), &now, "v2");
        assert_eq!(plan.program, Use::Switch(7));
        assert!(plan.relink.is_empty() && plan.attach.is_empty());
        assert!(plan.changes_policy());
    }

    #[test]
    fn another_builds_program_is_replaced_by_a_loaded_one_in_every_link() {
        let now = current(&[("eth1", 7)], &["eth1"], vec![held(7, false, "v1", true)]);
        let plan = Plan::new(&names(&["eth1"]), &now, "v1");
        assert_eq!(plan.program, Use::Load);
        assert_eq!(plan.relink, names(&["eth1"]));
    }

    #[test]
    fn a_policy_that_outgrew_the_tables_loads_a_program() {
        let now = current(&[("eth1", 7)], &["eth1"], vec![held(7, true, "v1", false)]);
        assert_eq!(Plan::new(&names(&["eth1"]), &now, "v2").program, Use::Load);
    }

    #[test]
    fn a_half_done_upgrade_finishes_on_the_new_program() {
        // Killed between two link updates: eth1 runs the new program 9, eth2 still the old 7.
        let now = current(
            &[("eth1", 9), ("eth2", 7)],
            &["eth1", "eth2"],
            vec![held(7, false, "v1", true), held(9, true, "v1", true)],
        );
        let plan = Plan::new(&names(&["eth1", "eth2"]), &now, "v1");
        assert_eq!(plan.program, Use::Keep(9));
        assert_eq!(plan.relink, names(&["eth2"]));
        assert_eq!(plan.adopt, names(&["eth1"]));
    }

    #[test]
    fn a_loaded_but_unattached_program_is_used_rather_than_loading_again() {
        // Killed after loading and pinning, before the first attach.
        let now = current(&[], &[], vec![held(9, true, "v0", true)]);
        let plan = Plan::new(&names(&["eth1"]), &now, "v1");
        assert_eq!(plan.program, Use::Switch(9));
        assert_eq!(plan.attach, names(&["eth1"]));
    }

    #[test]
    fn interfaces_no_longer_selected_are_removed_and_a_missing_recorder_is_added() {
        let now = current(
            &[("eth1", 7), ("old0", 7)],
            &[],
            vec![held(7, true, "v1", true)],
        );
        let plan = Plan::new(&names(&["eth1"]), &now, "v1");
        assert_eq!(plan.remove, names(&["old0"]));
        assert_eq!(plan.record, names(&["eth1"]));
        assert!(!plan.changes_policy());
    }
}
