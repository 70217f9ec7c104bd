//! Paths shared by the policy tests (each test file includes this module).

#![allow(dead_code, reason = "each test file uses a different part")]

use std::{
    fs,
    path::{Path, PathBuf},
};

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
