//! Changes to a site file and its drop-ins, made the way a person would (comments, order and
//! layout kept: `toml_edit`), tried by loading the result, and shown as a unified diff.

use std::{
    collections::BTreeMap,
    net::IpAddr,
    path::{Path, PathBuf},
};

use toml_edit::{Array, DocumentMut, Item, Table, Value};

use super::SuggestError;
use crate::policy::{self, Diagnostics, Policy};

/// One file of the site: its path, its text as read, and as edited.
#[derive(Debug, Clone)]
struct File {
    path: PathBuf,
    before: String,
    doc: DocumentMut,
}

/// A site file and its drop-ins, with edits not written anywhere.
#[derive(Debug, Clone)]
pub struct SiteEdit {
    /// The main file first, then the drop-ins in merge order.
    files: Vec<File>,
}

impl SiteEdit {
    /// Read `site` and its drop-ins.
    pub fn read(site: &Path) -> Result<Self, SuggestError> {
        let mut files = Vec::new();
        for path in std::iter::once(site.to_owned()).chain(policy::drop_ins(site)) {
            let before = std::fs::read_to_string(&path).map_err(|source| SuggestError::Read {
                path: path.clone(),
                source,
            })?;
            let doc = before
                .parse::<DocumentMut>()
                .map_err(|source| SuggestError::Toml {
                    path: path.clone(),
                    source: Box::new(source),
                })?;
            files.push(File { path, before, doc });
        }
        Ok(SiteEdit { files })
    }

    /// Add `addr` (as a /32 or /128) to `role` in `[roles]`: in the file that maps the role
    /// already (the last one, if several do), else in the main file.
    pub fn add_to_role(&mut self, role: &str, addr: IpAddr) {
        let net = match addr {
            IpAddr::V4(a) => format!("{a}/32"),
            IpAddr::V6(a) => format!("{a}/128"),
        };
        let index = self
            .files
            .iter()
            .rposition(|f| {
                f.doc
                    .get("roles")
                    .and_then(|r| r.get(role))
                    .is_some_and(|v| v.as_array().is_some())
            })
            .unwrap_or(0);
        let doc = &mut self.files[index].doc;
        let roles = doc
            .entry("roles")
            .or_insert_with(|| Item::Table(Table::new()));
        let Some(roles) = roles.as_table_like_mut() else {
            return;
        };
        if let Some(list) = roles.get_mut(role).and_then(Item::as_array_mut) {
            if !list.iter().any(|v| v.as_str() == Some(net.as_str())) {
                list.push(net);
            }
        } else {
            let mut list = Array::new();
            list.push(net);
            roles.insert(role, Item::Value(Value::Array(list)));
        }
    }

    /// Switch `feature` on: out of `disabled_features` where a file lists it there, else into
    /// the main file's `features`.
    pub fn enable_feature(&mut self, feature: &str) {
        let mut was_disabled = false;
        for f in &mut self.files {
            if let Some(list) = f
                .doc
                .get_mut("disabled_features")
                .and_then(Item::as_array_mut)
            {
                let before = list.len();
                list.retain(|v| v.as_str() != Some(feature));
                was_disabled |= list.len() != before;
            }
        }
        if was_disabled {
            return;
        }
        let doc = &mut self.files[0].doc;
        if let Some(list) = doc.get_mut("features").and_then(Item::as_array_mut) {
            if !list.iter().any(|v| v.as_str() == Some(feature)) {
                list.push(feature);
            }
        } else {
            let mut list = Array::new();
            list.push(feature);
            doc.insert("features", Item::Value(Value::Array(list)));
        }
    }

    /// Load the edited site with the products of `policies`, from copies in a directory of
    /// its own (the real files stay as they are).
    pub fn load(&self, policies: &Path) -> Result<Result<Policy, Diagnostics>, SuggestError> {
        let dir = tempfile::Builder::new()
            .prefix("portguard-suggest-")
            .tempdir()
            .map_err(|source| SuggestError::Write {
                path: std::env::temp_dir(),
                source,
            })?;
        self.write_copies(dir.path())
            .map(|site| policy::load(&site, policies))
    }

    /// Write the edited files into `dir` as a site file and its drop-ins; the copy of the main
    /// file.
    fn write_copies(&self, dir: &Path) -> Result<PathBuf, SuggestError> {
        let write = |path: &Path, text: &str| {
            std::fs::write(path, text).map_err(|source| SuggestError::Write {
                path: path.to_owned(),
                source,
            })
        };
        let mkdir = |path: &Path| {
            std::fs::create_dir_all(path).map_err(|source| SuggestError::Write {
                path: path.to_owned(),
                source,
            })
        };
        mkdir(dir)?;
        let main = &self.files[0];
        let name = main.path.file_name().unwrap_or_default();
        let site = dir.join(name);
        write(&site, &main.doc.to_string())?;
        if self.files.len() > 1 {
            let mut d = site.file_stem().unwrap_or_default().to_owned();
            d.push(".d");
            let drop_dir = dir.join(d);
            mkdir(&drop_dir)?;
            for f in &self.files[1..] {
                write(
                    &drop_dir.join(f.path.file_name().unwrap_or_default()),
                    &f.doc.to_string(),
                )?;
            }
        }
        Ok(site)
    }

    /// The edits as a unified diff per changed file (`--- path` / `+++ path`), empty when
    /// nothing changed. `patch FILE < diff` applies a file's part.
    #[must_use]
    pub fn diff(&self) -> String {
        let mut out = String::new();
        for f in &self.files {
            let after = f.doc.to_string();
            if after == f.before {
                continue;
            }
            let path = f.path.display().to_string();
            out.push_str(
                &similar::TextDiff::from_lines(&f.before, &after)
                    .unified_diff()
                    .context_radius(3)
                    .header(&path, &path)
                    .to_string(),
            );
        }
        out
    }

    /// The edited text of each changed file, by path.
    #[must_use]
    pub fn changed(&self) -> BTreeMap<PathBuf, String> {
        self.files
            .iter()
            .filter_map(|f| {
                let after = f.doc.to_string();
                (after != f.before).then(|| (f.path.clone(), after))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(text: &str, drop_in: Option<&str>) -> (PathBuf, SiteEdit) {
        // Kept (not removed on drop): the tests compare paths under it.
        let dir = tempfile::tempdir().unwrap().keep();
        std::fs::create_dir_all(dir.join("site.d")).unwrap();
        let path = dir.join("site.toml");
        std::fs::write(&path, text).unwrap();
        if let Some(d) = drop_in {
            std::fs::write(dir.join("site.d/10-roles.toml"), d).unwrap();
        }
        let e = SiteEdit::read(&path).unwrap();
        (dir, e)
    }

    #[test]
    fn edits_keep_comments_and_layout_and_diff_shows_only_them() {
        let text = "# our site\nproducts = [\"rhv\"]\ndisabled_features = [\"a\", \"b\"]\n\n\
                    [roles]\n# portal users\n\"rhv.vm-portal-client\" = [\"198.18.9.0/24\"]\n";
        let (dir, mut e) = site(text, None);
        e.add_to_role("rhv.vm-portal-client", "198.18.4.7".parse().unwrap());
        e.add_to_role("rhv.vm-portal-client", "198.18.4.7".parse().unwrap());
        e.add_to_role("rhv.manager", "2001:db8::1".parse().unwrap());
        e.enable_feature("b");
        e.enable_feature("serial-console");
        let after = &e.changed()[&dir.join("site.toml")];
        assert_eq!(
            after,
            "# our site\nproducts = [\"rhv\"]\ndisabled_features = [\"a\"]\n\
             features = [\"serial-console\"]\n\n\
             [roles]\n# portal users\n\"rhv.vm-portal-client\" = [\"198.18.9.0/24\", \
             \"198.18.4.7/32\"]\n\"rhv.manager\" = [\"2001:db8::1/128\"]\n"
        );
        let diff = e.diff();
        let path = dir.join("site.toml").display().to_string();
        assert!(
            diff.starts_with(&format!("--- {path}\n+++ {path}\n@@ ")),
            "{diff}"
        );
        assert!(
            diff.contains("\n-disabled_features = [\"a\", \"b\"]\n"),
            "{diff}"
        );
        assert!(
            diff.contains("\n+\"rhv.manager\" = [\"2001:db8::1/128\"]\n"),
            "{diff}"
        );
        assert!(diff.contains("\n # portal users\n"), "{diff}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_role_mapped_in_a_drop_in_is_edited_there() {
        let (dir, mut e) = site(
            "products = [\"rhv\"]\n",
            Some("[roles]\n\"rhv.manager\" = [\"198.18.1.1\"]\n"),
        );
        e.add_to_role("rhv.manager", "198.18.1.2".parse().unwrap());
        let changed = e.changed();
        assert_eq!(
            changed.keys().collect::<Vec<_>>(),
            [&dir.join("site.d/10-roles.toml")]
        );
        assert!(
            e.diff()
                .contains("+\"rhv.manager\" = [\"198.18.1.1\", \"198.18.1.2/32\"]")
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
