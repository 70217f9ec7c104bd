//! The last good policy: a copy of the site file, its drop-ins and the product files of the
//! last policy confirmed in force, kept in the state directory (`/var/lib/portguard`, which
//! survives reboots, unlike the run directory and the pins).
//!
//! It answers one question: what does a host enforce when it boots with a site file that is
//! broken or missing? Without the copy, the daemon refuses to start and the host comes up
//! with nothing in front of it; with it, the daemon enforces what was last known to work,
//! says loudly that it is not what the site file says (`status` exits 1), and switches to the
//! site file at the first reload that loads. A copy of the inputs rather than of the compiled
//! tables: the same code path compiles it, counters keep their rule names, and an upgrade of
//! portguard that changes the table layout cannot strand it.
//!
//! Saved by swapping a symlink (`current` -> `<version>`), so a crash at any point leaves
//! either the old copy or the new one, never half of each.

use std::{
    io,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// Inside the state directory: the copies, and the link to the one in use.
const SUBDIR: &str = "last-good";
const CURRENT: &str = "current";
/// Inside a copy.
const SITE: &str = "site.toml";
const POLICIES: &str = "policies";
const META: &str = "meta.json";

/// What a copy is of.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Meta {
    /// Version of the policy it compiled to when it was saved.
    pub version: String,
    /// Unix time (seconds) it was saved.
    pub saved_at: u64,
    /// The site file it was copied from.
    pub site: PathBuf,
}

/// A saved copy, ready to load.
#[derive(Clone, Debug)]
pub struct Copy {
    /// Its site file (drop-ins beside it, as `site.d/`).
    pub site: PathBuf,
    /// Its product files.
    pub policies: PathBuf,
    /// What it is.
    pub meta: Meta,
}

/// The last-good store under a state directory.
#[derive(Clone, Debug)]
pub struct LastGood {
    dir: PathBuf,
}

impl LastGood {
    /// The store in `state_dir`.
    #[must_use]
    pub fn new(state_dir: &Path) -> Self {
        LastGood {
            dir: state_dir.join(SUBDIR),
        }
    }

    /// The copy in use, if there is a complete one.
    #[must_use]
    pub fn current(&self) -> Option<Copy> {
        let dir = std::fs::canonicalize(self.dir.join(CURRENT)).ok()?;
        let meta: Meta = serde_json::from_slice(&std::fs::read(dir.join(META)).ok()?).ok()?;
        Some(Copy {
            site: dir.join(SITE),
            policies: dir.join(POLICIES),
            meta,
        })
    }

    /// Copy `site` (with its drop-ins) and the product files of `policies`, as policy
    /// `version`, and make it the copy in use. Directories 0700, files 0600: the site file may
    /// name the administrators' addresses.
    pub fn save(&self, site: &Path, policies: &Path, version: &str) -> io::Result<()> {
        if self.current().is_some_and(|c| c.meta.version == version) {
            return Ok(());
        }
        mkdir(self.dir.parent().unwrap_or(&self.dir))?;
        mkdir(&self.dir)?;
        let name = format!("{version}-{}", std::process::id());
        let copy = self.dir.join(&name);
        let _ = std::fs::remove_dir_all(&copy);
        mkdir(&copy)?;
        copy_file(site, &copy.join(SITE))?;
        let drop_ins = crate::policy::drop_ins(site);
        if !drop_ins.is_empty() {
            let d = copy.join("site.d");
            mkdir(&d)?;
            for f in drop_ins {
                if let Some(n) = f.file_name() {
                    copy_file(&f, &d.join(n))?;
                }
            }
        }
        let p = copy.join(POLICIES);
        mkdir(&p)?;
        for entry in std::fs::read_dir(policies)? {
            let path = entry?.path();
            if path.is_file()
                && path.extension().is_some_and(|e| e == "toml")
                && let Some(n) = path.file_name()
            {
                copy_file(&path, &p.join(n))?;
            }
        }
        let meta = Meta {
            version: version.to_owned(),
            saved_at: crate::state::now_secs(),
            site: site.to_owned(),
        };
        let json = serde_json::to_vec_pretty(&meta).map_err(io::Error::other)?;
        write_private(&copy.join(META), &json)?;
        // The swap: a new link renamed over the old one.
        let link_tmp = self.dir.join(format!("{CURRENT}.tmp"));
        let _ = std::fs::remove_file(&link_tmp);
        std::os::unix::fs::symlink(&name, &link_tmp)?;
        std::fs::rename(&link_tmp, self.dir.join(CURRENT))?;
        // Older copies are no longer reachable.
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let n = entry.file_name();
            if n != *name.as_str() && n != CURRENT && entry.path().is_dir() {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        Ok(())
    }
}

fn mkdir(dir: &Path) -> io::Result<()> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        other => other,
    }
}

fn copy_file(from: &Path, to: &Path) -> io::Result<()> {
    let bytes = std::fs::read(from)?;
    write_private(to, &bytes)
}

fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write as _;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch() -> PathBuf {
        tempfile::tempdir().unwrap().keep()
    }

    #[test]
    fn save_then_current_gives_the_copy_with_drop_ins_and_products() {
        let root = scratch();
        let etc = root.join("etc");
        std::fs::create_dir_all(etc.join("site.d")).unwrap();
        std::fs::write(etc.join("site.toml"), "a = 1\n").unwrap();
        std::fs::write(etc.join("site.d/10-x.toml"), "b = 2\n").unwrap();
        std::fs::write(etc.join("site.d/notes.txt"), "no").unwrap();
        let products = root.join("products");
        std::fs::create_dir_all(products.join("examples")).unwrap();
        std::fs::write(products.join("rhv.toml"), "c = 3\n").unwrap();
        std::fs::write(products.join("README.md"), "no").unwrap();
        let store = LastGood::new(&root.join("state"));
        assert!(store.current().is_none());
        store
            .save(&etc.join("site.toml"), &products, "00000000000000aa")
            .unwrap();
        let c = store.current().expect("a copy");
        assert_eq!(c.meta.version, "00000000000000aa");
        assert_eq!(std::fs::read_to_string(&c.site).unwrap(), "a = 1\n");
        let drop_ins = crate::policy::drop_ins(&c.site);
        assert_eq!(drop_ins.len(), 1, "{drop_ins:?}");
        assert!(c.policies.join("rhv.toml").is_file());
        assert!(!c.policies.join("README.md").exists());
        // A newer save replaces it and removes the old copy.
        std::fs::write(etc.join("site.toml"), "a = 2\n").unwrap();
        store
            .save(&etc.join("site.toml"), &products, "00000000000000bb")
            .unwrap();
        let c2 = store.current().unwrap();
        assert_eq!(std::fs::read_to_string(&c2.site).unwrap(), "a = 2\n");
        let dirs = std::fs::read_dir(root.join("state/last-good"))
            .unwrap()
            .filter(|e| e.as_ref().unwrap().path().is_dir())
            .count();
        // `current` resolves to a directory too.
        assert_eq!(dirs, 2, "one copy and the link to it");
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn a_copy_without_its_meta_is_not_used() {
        let root = scratch();
        let store = LastGood::new(&root);
        std::fs::create_dir_all(root.join("last-good/x")).unwrap();
        std::os::unix::fs::symlink("x", root.join("last-good/current")).unwrap();
        assert!(store.current().is_none());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
