//! Diagnostics: what is wrong (or doubtful) in the policy files, and where.
//!
//! Loading collects every problem instead of stopping at the first, so an operator fixing a site
//! file sees the whole list at once, in the `FILE:LINE:COL: error: message` form editors and CI
//! logs already understand.

use std::{
    fmt,
    ops::Range,
    path::{Path, PathBuf},
};

/// How bad a diagnostic is: errors make loading fail, warnings are kept in `Policy::warnings`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The policy cannot be used.
    Error,
    /// The policy loads, but something deserves a look.
    Warning,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Error => "error",
            Self::Warning => "warning",
        })
    }
}

/// One problem found in a policy file.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostic {
    /// Error or warning.
    pub severity: Severity,
    /// File path as given (site file) or as built from the policies directory.
    pub file: PathBuf,
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What is wrong, and where possible what was probably meant.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file.display(),
            self.line,
            self.col,
            self.severity,
            self.message
        )
    }
}

/// Every diagnostic of a failed load (errors, and the warnings found on the way).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// The errors only.
    pub fn errors(&self) -> impl Iterator<Item = &Diagnostic> {
        self.0.iter().filter(|d| d.severity == Severity::Error)
    }

    /// Whether any diagnostic is an error.
    #[must_use]
    pub fn has_errors(&self) -> bool {
        self.errors().next().is_some()
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A file being read, with what is needed to turn byte offsets (toml spans) into line:col.
///
/// A site file and its drop-ins are one source of several segments: each file is parsed with
/// its spans shifted past the files before it (see `load`), so one span names one place in one
/// file, and the rest of the loader never needs to know which file a value came from.
pub(crate) struct SourceFile {
    /// Path of the first file: for problems with the source as a whole.
    pub(crate) path: PathBuf,
    segments: Vec<Segment>,
}

/// One file of a [`SourceFile`], at byte offset `base` of the combined spans.
struct Segment {
    base: usize,
    path: PathBuf,
    text: String,
    /// Byte offset (within `text`) of the start of each line.
    line_starts: Vec<usize>,
}

impl Segment {
    fn new(base: usize, path: &Path, text: String) -> Self {
        let line_starts = std::iter::once(0)
            .chain(text.match_indices('\n').map(|(i, _)| i + 1))
            .collect();
        Segment {
            base,
            path: path.to_owned(),
            text,
            line_starts,
        }
    }

    /// 1-based line and column (in characters) of a byte offset of this file; offsets past the
    /// end clamp.
    fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let line = self
            .line_starts
            .partition_point(|&start| start <= offset)
            .max(1);
        let start = self.line_starts[line - 1];
        let col = self
            .text
            .get(start..offset)
            .map_or(offset - start, |s| s.chars().count())
            + 1;
        (line, col)
    }
}

impl SourceFile {
    pub(crate) fn new(path: &Path, text: String) -> Self {
        Self {
            path: path.to_owned(),
            segments: vec![Segment::new(0, path, text)],
        }
    }

    /// Add another file after the ones already here. Its text must be parsed shifted by the
    /// returned offset ([`SourceFile::shifted`]) for its spans to point into it.
    pub(crate) fn push(&mut self, path: &Path, text: String) -> usize {
        let base = self
            .segments
            .last()
            .map_or(0, |s| s.base + s.text.len() + 1);
        self.segments.push(Segment::new(base, path, text));
        base
    }

    /// The text of the last file pushed, preceded by as many spaces as its offset: TOML skips
    /// leading whitespace, so parsing this gives spans in the combined space.
    pub(crate) fn shifted(&self) -> String {
        let last = self.segments.last().expect("a source has a file");
        let mut text = " ".repeat(last.base);
        text.push_str(&last.text);
        text
    }

    /// 1-based line and column of a byte offset of the first file (tests).
    #[cfg(test)]
    pub(crate) fn line_col(&self, offset: usize) -> (usize, usize) {
        self.segments[0].line_col(offset)
    }

    /// Where the byte offset `span.start` is, in whichever file holds it.
    pub(crate) fn loc(&self, span: &Range<usize>) -> Loc {
        let i = self
            .segments
            .partition_point(|s| s.base <= span.start)
            .max(1);
        let seg = &self.segments[i - 1];
        let (line, col) = seg.line_col(span.start - seg.base);
        Loc {
            file: seg.path.clone(),
            line,
            col,
        }
    }
}

/// A position in a policy file, resolved from a span when it was read so that it can be kept
/// after the file's text is gone (e.g. "first declared at `FILE:LINE`").
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Loc {
    pub(crate) file: PathBuf,
    pub(crate) line: usize,
    pub(crate) col: usize,
}

impl Loc {
    /// Line 1 of a file: for problems with the file as a whole (cannot read it, missing table).
    pub(crate) fn start_of(file: &Path) -> Self {
        Self {
            file: file.to_owned(),
            line: 1,
            col: 1,
        }
    }

    pub(crate) fn diag(&self, severity: Severity, message: String) -> Diagnostic {
        Diagnostic {
            severity,
            file: self.file.clone(),
            line: self.line,
            col: self.col,
            message: one_line(message),
        }
    }
}

/// The message with control characters escaped (`\n` for a newline). Messages quote names and
/// values from the files, and a quoted TOML key or string may hold a newline: unescaped, it
/// would split the diagnostic into a located line and a line without a location.
fn one_line(message: String) -> String {
    let escape = |c: char| (c.is_control() && c != '\t') || matches!(c, '\u{2028}' | '\u{2029}');
    if !message.chars().any(escape) {
        return message;
    }
    message
        .chars()
        .map(|c| {
            if escape(c) {
                c.escape_default().to_string()
            } else {
                c.to_string()
            }
        })
        .collect()
}

/// `FILE:LINE`, for messages that point at a second place.
impl fmt::Display for Loc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

/// Where diagnostics accumulate while loading.
#[derive(Default)]
pub(crate) struct Sink {
    /// Files in the order they were read: diagnostics are sorted by it.
    pub(crate) files: Vec<PathBuf>,
    diags: Vec<Diagnostic>,
}

impl Sink {
    pub(crate) fn error(&mut self, at: &Loc, message: impl Into<String>) {
        self.diags.push(at.diag(Severity::Error, message.into()));
    }

    pub(crate) fn warn(&mut self, at: &Loc, message: impl Into<String>) {
        self.diags.push(at.diag(Severity::Warning, message.into()));
    }

    pub(crate) fn has_errors(&self) -> bool {
        self.diags.iter().any(|d| d.severity == Severity::Error)
    }

    /// The errors toml and serde found while reading `src`. A syntax error is reported alone
    /// (the first one): what the parser makes of the rest of such a file is not what its
    /// author wrote, so further errors would be echoes of the first. True if there was one.
    pub(crate) fn read_errors(
        &mut self,
        src: &SourceFile,
        errors: Vec<super::files::ReadError>,
    ) -> bool {
        if let Some(first) = errors.iter().find(|e| e.syntax) {
            self.error(&src.loc(&first.span), first.message.clone());
            return true;
        }
        for e in errors {
            self.error(&src.loc(&e.span), e.message);
        }
        false
    }

    pub(crate) fn finish(mut self) -> Diagnostics {
        let files = self.files;
        let rank = |file: &Path| files.iter().position(|f| f == file).unwrap_or(usize::MAX);
        self.diags.sort_by_key(|d| (rank(&d.file), d.line, d.col));
        Diagnostics(self.diags)
    }
}

/// ` (did you mean `x`?)` when a candidate is a small typo away from `name`, else nothing.
pub(crate) fn did_you_mean<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> String {
    let limit = 2.max(name.chars().count() / 5);
    candidates
        .into_iter()
        .map(|c| (edit_distance(name, c), c))
        .filter(|&(d, _)| d <= limit)
        .min()
        .map_or_else(String::new, |(_, c)| format!(" (did you mean `{c}`?)"))
}

/// Levenshtein distance, in characters.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = Vec::with_capacity(b.len() + 1);
        cur.push(i + 1);
        for (j, cb) in b.iter().enumerate() {
            let substitute = prev[j] + usize::from(ca != *cb);
            cur.push(substitute.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_of_offsets() {
        let src = SourceFile::new(Path::new("x.toml"), "ab\ncdé\n\nf".to_owned());
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(2), (1, 3));
        assert_eq!(src.line_col(3), (2, 1));
        // é is two bytes but one column.
        assert_eq!(src.line_col(7), (2, 4));
        assert_eq!(src.line_col(8), (3, 1));
        assert_eq!(src.line_col(9), (4, 1));
        assert_eq!(src.line_col(100), (4, 2));
    }

    #[test]
    fn messages_stay_on_one_line() {
        let at = Loc::start_of(Path::new("site.toml"));
        let d = at.diag(Severity::Error, "unknown role `a\nb\r\u{7}`".to_owned());
        assert_eq!(d.message, "unknown role `a\\nb\\r\\u{7}`");
        assert_eq!(d.to_string().lines().count(), 1);
        let plain = at.diag(Severity::Error, "tab\tand é stay".to_owned());
        assert_eq!(plain.message, "tab\tand é stay");
    }

    #[test]
    fn display_forms() {
        let d = Diagnostic {
            severity: Severity::Warning,
            file: "site.toml".into(),
            line: 3,
            col: 7,
            message: "role `x` is mapped to any".into(),
        };
        assert_eq!(
            d.to_string(),
            "site.toml:3:7: warning: role `x` is mapped to any"
        );
        let all = Diagnostics(vec![
            d.clone(),
            Diagnostic {
                severity: Severity::Error,
                ..d
            },
        ]);
        assert_eq!(all.to_string().lines().count(), 2);
        assert!(all.has_errors());
    }

    #[test]
    fn suggestions() {
        assert_eq!(edit_distance("rhv.manger", "rhv.manager"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(
            did_you_mean("rhv.manger", ["rhv.host", "rhv.manager"]),
            " (did you mean `rhv.manager`?)"
        );
        assert_eq!(did_you_mean("ovn-typo", ["ovn", "kdump"]), "");
    }
}
