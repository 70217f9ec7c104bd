//! The portguard crate's tests that need no privileges, in one binary: the policy loader and
//! compiler through the public API (shipped files, broken fixtures, every rule walked through
//! the reference classifier, a fuzzer, site rules and drop-ins), the SSH lockout guard of
//! `check`, every verb's exit codes, and the audit pipeline without the kernel. Paths they share are in [`common`].
//!
//! `cargo xtask test` runs them with the unit tests; `cargo xtask fuzz` runs the ignored
//! `fuzz_policy::fuzz_campaign`.

mod audit;
mod common;
mod exit_codes;
mod fuzz_policy;
mod lockout;
mod policy_load;
mod policy_walk;
mod site_rules;
