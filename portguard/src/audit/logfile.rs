//! The JSON-lines audit log, rotated by size.
//!
//! `audit.jsonl` is the current file; when a write would take it past `max_bytes` it becomes
//! `audit.jsonl.1`, the older ones move up by one, and only `keep` rotated files stay. Rotation
//! happens between records, never inside one, so every file holds whole lines. Files are
//! created 0640 in a 0750 directory: flows denied to a host tell an attacker what is open.

use std::{
    fs::{self, DirBuilder, File, OpenOptions},
    io::Write as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use super::{AuditError, record::Record};

/// Mode of the log directory when portguard creates it.
const DIR_MODE: u32 = 0o750;
/// Mode of new log files.
const FILE_MODE: u32 = 0o640;

/// The `n`th rotated file of `path` (`audit.jsonl.1` is the newest); `n = 0` is `path` itself.
#[must_use]
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        return path.to_owned();
    }
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

/// An open audit log.
#[derive(Debug)]
pub struct LogWriter {
    path: PathBuf,
    max_bytes: u64,
    keep: u32,
    file: File,
    size: u64,
}

impl LogWriter {
    /// Open `path` for appending (creating it and its directory), rotating past `max_bytes`
    /// and keeping `keep` rotated files.
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, AuditError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|source| AuditError::CreateDir {
                    dir: dir.to_owned(),
                    source,
                })?;
        }
        let (file, size) = open_append(path)?;
        Ok(LogWriter {
            path: path.to_owned(),
            max_bytes: max_bytes.max(1),
            keep,
            file,
            size,
        })
    }

    /// The current file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Append records, one JSON line each, rotating between lines when the file is full. A line
    /// longer than `max_bytes` is still written whole, alone in its file.
    pub fn write(&mut self, records: &[Record]) -> Result<(), AuditError> {
        let mut pending: Vec<u8> = Vec::new();
        for rec in records {
            let mut line = serde_json::to_vec(rec).expect("records serialize: no maps, no floats");
            line.push(b'\n');
            let len = line.len() as u64;
            let used = self.size + pending.len() as u64;
            if used > 0 && used + len > self.max_bytes {
                self.append(&pending)?;
                pending.clear();
                self.rotate()?;
            }
            pending.extend_from_slice(&line);
        }
        self.append(&pending)
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), AuditError> {
        if bytes.is_empty() {
            return Ok(());
        }
        self.file
            .write_all(bytes)
            .map_err(|source| AuditError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.size += bytes.len() as u64;
        Ok(())
    }

    /// Shift `path.N` to `path.N+1` (dropping the oldest), `path` to `path.1`, start a new file.
    fn rotate(&mut self) -> Result<(), AuditError> {
        if self.keep == 0 {
            remove(&self.path)?;
        } else {
            remove(&rotated(&self.path, self.keep))?;
            for n in (0..self.keep).rev() {
                let from = rotated(&self.path, n);
                let to = rotated(&self.path, n + 1);
                match fs::rename(&from, &to) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => return Err(AuditError::Rotate { from, to, source }),
                }
            }
        }
        let (file, size) = open_append(&self.path)?;
        self.file = file;
        self.size = size;
        Ok(())
    }
}

fn open_append(path: &Path) -> Result<(File, u64), AuditError> {
    let err = |source| AuditError::Open {
        path: path.to_owned(),
        source,
    };
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(err)?;
    let size = file.metadata().map_err(err)?.len();
    Ok((file, size))
}

fn remove(path: &Path) -> Result<(), AuditError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(AuditError::Rotate {
            from: path.to_owned(),
            to: PathBuf::from("/dev/null"),
            source,
        }),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::os::unix::fs::PermissionsExt as _;

    use super::*;
    use crate::audit::record::SummaryRecord;

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub(crate) PathBuf);

    impl TempDir {
        pub(crate) fn new(tag: &str) -> Self {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let dir = std::env::temp_dir().join(format!(
                "pg-audit-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            fs::create_dir_all(&dir).unwrap();
            TempDir(dir)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    pub(crate) fn summary(n: u64) -> Record {
        Record::Summary(SummaryRecord {
            origin: crate::audit::record::Origin::default(),
            time: "2025-01-31T12:00:00Z".parse().unwrap(),
            emitted: n,
            suppressed: 0,
            lost: 0,
        })
    }

    fn lines(p: &Path) -> Vec<u64> {
        fs::read_to_string(p)
            .unwrap()
            .lines()
            .map(|l| match serde_json::from_str::<Record>(l).unwrap() {
                Record::Summary(s) => s.emitted,
                r => panic!("unexpected {r:?}"),
            })
            .collect()
    }

    #[test]
    fn creates_directory_and_file_with_restricted_modes() {
        let tmp = TempDir::new("modes");
        let path = tmp.0.join("sub/dir/audit.jsonl");
        let mut w = LogWriter::open(&path, 1 << 20, 2).unwrap();
        w.write(&[summary(1)]).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // The umask may only take bits away.
        assert_eq!(mode(path.parent().unwrap()) & !DIR_MODE, 0);
        assert_eq!(mode(&path) & !FILE_MODE, 0);
        assert_eq!(mode(&path) & 0o600, 0o600);
        assert_eq!(lines(&path), [1]);
    }

    #[test]
    fn rotates_between_lines_and_keeps_n_files() {
        let tmp = TempDir::new("rotate");
        let path = tmp.0.join("audit.jsonl");
        let one = serde_json::to_vec(&summary(10)).unwrap().len() as u64 + 1;
        // Three lines per file.
        let mut w = LogWriter::open(&path, 3 * one, 2).unwrap();
        for n in 10..21 {
            w.write(&[summary(n)]).unwrap();
        }
        // 11 lines: 10..12, 13..15, 16..18 dropped-or-kept, 19..20 current.
        assert_eq!(lines(&path), [19, 20]);
        assert_eq!(lines(&rotated(&path, 1)), [16, 17, 18]);
        assert_eq!(lines(&rotated(&path, 2)), [13, 14, 15]);
        assert!(!rotated(&path, 3).exists());
        for n in 0..=2 {
            assert!(fs::metadata(rotated(&path, n)).unwrap().len() <= 3 * one);
        }
        // A batch rotates in the middle too, and reopening continues where the file ended.
        drop(w);
        let mut w = LogWriter::open(&path, 3 * one, 2).unwrap();
        w.write(&[summary(21), summary(22), summary(23)]).unwrap();
        assert_eq!(lines(&path), [22, 23]);
        assert_eq!(lines(&rotated(&path, 1)), [19, 20, 21]);
    }

    #[test]
    fn keep_zero_keeps_only_the_current_file() {
        let tmp = TempDir::new("keep0");
        let path = tmp.0.join("audit.jsonl");
        let mut w = LogWriter::open(&path, 1, 0).unwrap();
        w.write(&[summary(1), summary(2)]).unwrap();
        assert_eq!(lines(&path), [2]);
        assert!(!rotated(&path, 1).exists());
    }

    #[test]
    fn errors_name_the_file() {
        let tmp = TempDir::new("err");
        let blocker = tmp.0.join("file");
        fs::write(&blocker, "").unwrap();
        let e = LogWriter::open(&blocker.join("audit.jsonl"), 10, 1).unwrap_err();
        assert!(e.to_string().contains(&*blocker.to_string_lossy()), "{e}");
    }
}
