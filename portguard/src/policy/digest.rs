//! What identifies a site file across a fleet: `portguard_policy_info{site_sha256}`.

use std::{fmt::Write as _, io, path::Path};

use sha2::{Digest as _, Sha256};

use super::drop_ins;

/// The first 16 hex digits of the SHA-256 of the site file, so hosts that run the same file
/// show the same value (and `sha256sum site.toml | cut -c1-16` gives it). When the file has
/// drop-ins (`<stem>.d/*.toml`), they are part of what the host runs: each one's name and
/// content follow the main file's in the hashed bytes, in the order they are merged.
pub fn site_sha256(site: &Path) -> io::Result<String> {
    let mut hash = Sha256::new();
    hash.update(std::fs::read(site)?);
    for path in drop_ins(site) {
        hash.update(b"\0");
        hash.update(path.file_name().unwrap_or_default().as_encoded_bytes());
        hash.update(b"\0");
        hash.update(std::fs::read(&path)?);
    }
    Ok(hash
        .finalize()
        .iter()
        .take(8)
        .fold(String::new(), |mut hex, b| {
            let _ = write!(hex, "{b:02x}");
            hex
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_sha256sum_and_changes_with_drop_ins() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::create_dir_all(dir.join("site.d")).unwrap();
        let site = dir.join("site.toml");
        std::fs::write(&site, "abc").unwrap();
        // SHA-256("abc") = ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad
        assert_eq!(site_sha256(&site).unwrap(), "ba7816bf8f01cfea");
        std::fs::write(dir.join("site.d/10-x.toml"), "mode = \"audit\"\n").unwrap();
        let with = site_sha256(&site).unwrap();
        assert_eq!(with.len(), 16);
        assert_ne!(with, "ba7816bf8f01cfea");
        std::fs::remove_dir_all(dir).unwrap();
        assert!(site_sha256(&site).is_err());
    }
}
