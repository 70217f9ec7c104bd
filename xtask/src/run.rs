//! Running commands with a clear error, and with a time limit where they may wait on a network.

use std::{
    process::{Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, bail};

/// Run `cargo` with these arguments in the workspace, inheriting output.
pub(crate) fn cargo(args: &[&str]) -> anyhow::Result<()> {
    cargo_env(args, &[])
}

/// Run `cargo` with extra environment variables.
pub(crate) fn cargo_env(args: &[&str], env: &[(&str, &str)]) -> anyhow::Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let mut cmd = Command::new(cargo);
    cmd.args(args).envs(env.iter().copied());
    status(cmd, &format!("cargo {}", args.join(" ")))
}

/// Run a command to completion, inheriting output; an error if it fails.
pub(crate) fn status(mut cmd: Command, what: &str) -> anyhow::Result<()> {
    let st = cmd.status().with_context(|| format!("starting {what}"))?;
    if !st.success() {
        bail!("{what} failed ({st})");
    }
    Ok(())
}

/// Run a command under `timeout(1)`: anything that can wait on the network must end.
pub(crate) fn with_timeout(
    limit: Duration,
    program: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> anyhow::Result<()> {
    let mut cmd = Command::new("timeout");
    cmd.arg("--kill-after=10")
        .arg(limit.as_secs().to_string())
        .arg(program)
        .args(args)
        .envs(env.iter().copied());
    let what = format!("{program} {}", args.join(" "));
    let st = cmd.status().with_context(|| format!("starting {what}"))?;
    match st.code() {
        Some(0) => Ok(()),
        Some(124 | 137) => bail!(
            "{what} did not finish within {}s (network unreachable?)",
            limit.as_secs()
        ),
        _ => bail!("{what} failed ({st})"),
    }
}

/// Whether a command runs and exits 0, output discarded.
pub(crate) fn succeeds(program: &str, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// A command's standard output, if it ran and succeeded.
pub(crate) fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .stderr(Stdio::null())
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
