//! Counter slots for rule ids: stable across reloads, derived from the rule id, not load order.
//!
//! A rule's counters live in `RULE_STATS[slot]`, a pinned map that outlives reloads and
//! restarts. A rule keeps its slot as long as it exists, so its counters keep counting across
//! reloads; a new rule gets the slot its id hashes to (probing past taken ones), so the same
//! policy loaded on a fresh host gets the same slots whatever order the files list rules in.
//! Slots of removed rules stay reserved until the daemon restarts, so their totals stay visible.

use std::collections::{BTreeMap, BTreeSet};

use portguard_common::maps::MAX_RULES;

/// The slot an id prefers: FNV-1a of the id, modulo the slot count.
#[must_use]
pub fn preferred(id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h % MAX_RULES
}

/// The outcome of assigning slots for a new rule set.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// Slot of every rule id of the new set.
    pub slots: BTreeMap<String, u32>,
    /// Slots handed to ids that had none: their counters must be zeroed before use.
    pub fresh: Vec<u32>,
}

/// Give every id in `ids` a slot. `kept` holds the slots already owned (by active rules and by
/// removed rules whose totals are still shown); an id found there keeps its slot. Ids are
/// placed in sorted order, so the result does not depend on the order of `ids`.
///
/// Returns `None` if the slots are exhausted (the compiler refuses such policies earlier).
#[must_use]
pub fn assign<'a>(
    ids: impl IntoIterator<Item = &'a str>,
    kept: &BTreeMap<String, u32>,
) -> Option<Assignment> {
    let wanted: BTreeSet<&str> = ids.into_iter().collect();
    let mut taken: BTreeSet<u32> = kept.values().copied().collect();
    let mut out = Assignment::default();
    for id in &wanted {
        if let Some(slot) = kept.get(*id) {
            out.slots.insert((*id).to_owned(), *slot);
        }
    }
    for id in wanted.iter().filter(|id| !kept.contains_key(**id)) {
        if taken.len() >= MAX_RULES as usize {
            return None;
        }
        let mut slot = preferred(id);
        while taken.contains(&slot) {
            slot = (slot + 1) % MAX_RULES;
        }
        taken.insert(slot);
        out.fresh.push(slot);
        out.slots.insert((*id).to_owned(), slot);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_ids_same_slots_whatever_the_order() {
        let a = assign(["RHV-H1", "RHV-H2", "ESS-ARP"], &BTreeMap::new()).unwrap();
        let b = assign(["ESS-ARP", "RHV-H2", "RHV-H1"], &BTreeMap::new()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.fresh.len(), 3);
    }

    #[test]
    fn kept_rules_keep_their_slots_and_new_ones_avoid_them() {
        let first = assign(["A", "B"], &BTreeMap::new()).unwrap();
        // B is removed but still shown; C is new and must not take A's or B's slot.
        let second = assign(["A", "C"], &first.slots).unwrap();
        assert_eq!(second.slots["A"], first.slots["A"]);
        assert_ne!(second.slots["C"], first.slots["B"]);
        assert_eq!(second.fresh, vec![second.slots["C"]]);
    }

    #[test]
    fn collisions_probe_to_the_next_free_slot() {
        let kept: BTreeMap<String, u32> = [("X".to_owned(), preferred("Y"))].into();
        let a = assign(["Y"], &kept).unwrap();
        assert_eq!(a.slots["Y"], (preferred("Y") + 1) % MAX_RULES);
    }
}
