//! `cargo xtask fuzz`: a bounded campaign of the policy fuzzer.
//!
//! The fuzzer is the ignored `fuzz_policy::fuzz_campaign` test of portguard's `policy` test
//! binary (`portguard/tests/fuzz_policy/`): it builds with the toolchain the tests use (no
//! cargo-fuzz, which needs a nightly with `rust-src`), and in the test profile, so integer
//! overflow panics and is caught like any other panic. This task runs it for a time budget and
//! keeps each failing input, with the seed and case that replay it, in `fuzz/failures/`.

use std::path::Path;

use crate::{run, setup};

pub(crate) fn fuzz(secs: u64, seed: Option<u64>) -> anyhow::Result<()> {
    setup::setup()?;
    let failures = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .join("fuzz/failures");
    let secs = secs.to_string();
    let failures = failures.to_string_lossy();
    let seed = seed.map(|s| s.to_string());
    let mut env = vec![
        ("PORTGUARD_FUZZ_SECS", secs.as_str()),
        ("PORTGUARD_FUZZ_FAILURES", failures.as_ref()),
    ];
    if let Some(seed) = &seed {
        env.push(("PORTGUARD_FUZZ_SEED", seed.as_str()));
    }
    run::cargo_env(
        &[
            "test",
            "-p",
            "portguard",
            "--test",
            "policy",
            "--",
            "--ignored",
            "--exact",
            "fuzz_policy::fuzz_campaign",
            "--nocapture",
        ],
        &env,
    )
}
