//! Paths the tests share: the checkout, its shipped policy files and its broken fixtures; and
//! the CLI run as a test must run it.

use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

/// `program`, run where no ancestor is visible: in a new PID namespace with its own /proc (and a
/// user namespace, so no privilege is needed). The lockout guard looks for the SSH session in
/// the ancestors' environments, and the tests must not find the one of whoever runs them (a
/// developer's shell, a CI runner logged in over SSH).
pub(crate) fn hermetic(program: &Path) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--mount-proc",
    ])
    .arg(program)
    .env_remove("SSH_CONNECTION");
    cmd
}

/// The `portguard` CLI, run [`hermetic`]ally.
pub(crate) fn portguard() -> Command {
    hermetic(Path::new(env!("CARGO_BIN_EXE_portguard")))
}

/// The workspace root.
pub(crate) fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The shipped product files.
pub(crate) fn policies() -> PathBuf {
    repo().join("policies")
}

/// The `.toml` files of `dir`, sorted.
pub(crate) fn toml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files
}

/// The hand-broken policy fixtures, one directory a case, sorted.
pub(crate) fn broken_fixtures() -> Vec<PathBuf> {
    let root = repo().join("tests/fixtures/policies/broken");
    let mut cases: Vec<PathBuf> = fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.is_dir())
        .collect();
    cases.sort();
    cases
}
