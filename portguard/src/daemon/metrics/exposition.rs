//! The two formats Prometheus scrapes, written from one model: the text format 0.0.4 (the
//! default) and `OpenMetrics` 1.0.0 (when the scraper's `Accept` header prefers it).
//!
//! The endpoint serves a fixed set of gauges and counters with integer values, so this is a
//! small writer rather than a metrics library: the formats differ in how counters are named
//! (`# TYPE x_total counter` in text, `# TYPE x counter` with `x_total` samples in
//! `OpenMetrics`), in what HELP escapes, and in the closing `# EOF` of
//! `OpenMetrics`.

use std::fmt::Write as _;

/// A metric family's type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Goes up and down (states, timestamps); `info`-style families are gauges at 1.
    Gauge,
    /// Only goes up (until the daemon or the counters restart); samples end in `_total`.
    Counter,
}

/// One sample: its labels (in order) and its value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sample {
    /// Label names and values.
    pub labels: Vec<(&'static str, String)>,
    /// The value (every portguard metric is a whole number).
    pub value: u64,
}

/// A metric family: a name, its help, its type, its samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Family {
    /// The name without `_total` (counters get it on their samples).
    pub name: &'static str,
    /// One line of help.
    pub help: &'static str,
    /// Gauge or counter.
    pub kind: Kind,
    /// The samples, each with a distinct label set.
    pub samples: Vec<Sample>,
}

impl Family {
    /// A family without samples yet.
    #[must_use]
    pub fn new(name: &'static str, kind: Kind, help: &'static str) -> Self {
        Family {
            name,
            help,
            kind,
            samples: Vec::new(),
        }
    }

    /// A family of one unlabelled sample.
    #[must_use]
    pub fn single(name: &'static str, kind: Kind, help: &'static str, value: u64) -> Self {
        Family::new(name, kind, help).with(&[], value)
    }

    /// Add a sample with these labels.
    #[must_use]
    pub fn with(mut self, labels: &[(&'static str, &str)], value: u64) -> Self {
        self.push(labels, value);
        self
    }

    /// Add a sample with these labels.
    pub fn push(&mut self, labels: &[(&'static str, &str)], value: u64) {
        self.samples.push(Sample {
            labels: labels.iter().map(|(k, v)| (*k, (*v).to_owned())).collect(),
            value,
        });
    }
}

/// The format of a response.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text format 0.0.4.
    Text,
    /// `OpenMetrics` text 1.0.0.
    OpenMetrics,
}

impl Format {
    /// The `Content-Type` of a response in this format.
    #[must_use]
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
        }
    }

    /// The format an `Accept` header asks for: `OpenMetrics` when it lists
    /// `application/openmetrics-text` with a higher quality than `text/plain` (a wildcard
    /// alone does not ask for it), else the text format. Prometheus sends
    /// `application/openmetrics-text;version=1.0.0,...,text/plain;version=0.0.4;q=0.5,*/*;q=0.1`;
    /// curl sends `*/*`.
    #[must_use]
    pub fn negotiate(accept: Option<&str>) -> Format {
        let Some(accept) = accept else {
            return Format::Text;
        };
        let (mut openmetrics, mut text) = (0.0_f32, 0.0_f32);
        for range in accept.split(',') {
            let mut parts = range.split(';');
            let media = parts.next().unwrap_or_default().trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.trim().strip_prefix("q="))
                .find_map(|q| q.trim().parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" => text = text.max(q),
                _ => {}
            }
        }
        if openmetrics > 0.0 && openmetrics > text {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }
}

/// Write `families` in `format`.
#[must_use]
pub fn encode(families: &[Family], format: Format) -> String {
    let mut out = String::new();
    for f in families {
        let suffix = match f.kind {
            Kind::Counter => "_total",
            Kind::Gauge => "",
        };
        let kind = match f.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        // Text names the family as its samples are named; `OpenMetrics` names a counter family
        // without `_total`.
        let (family, help) = match format {
            Format::Text => (format!("{}{suffix}", f.name), escape(f.help, false)),
            Format::OpenMetrics => (f.name.to_owned(), escape(f.help, true)),
        };
        let _ = writeln!(out, "# HELP {family} {help}");
        let _ = writeln!(out, "# TYPE {family} {kind}");
        for s in &f.samples {
            out.push_str(f.name);
            out.push_str(suffix);
            if !s.labels.is_empty() {
                out.push('{');
                for (i, (k, v)) in s.labels.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    let _ = write!(out, "{k}=\"{}\"", escape(v, true));
                }
                out.push('}');
            }
            let _ = writeln!(out, " {}", s.value);
        }
    }
    if format == Format::OpenMetrics {
        out.push_str("# EOF\n");
    }
    out
}

/// Backslash, newline and (in label values and `OpenMetrics` help) double quote, escaped.
fn escape(text: &str, quote: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn families() -> Vec<Family> {
        vec![
            Family::single("pg_up", Kind::Gauge, "Up \"really\"\\yes", 1),
            Family::new("pg_rule_packets", Kind::Counter, "Packets")
                .with(&[("rule", "A"), ("product", "x\"y\nz\\")], 7)
                .with(&[("rule", "B"), ("product", "x")], 0),
            Family::new("pg_empty", Kind::Counter, "Nothing yet"),
        ]
    }

    #[test]
    fn text_names_counter_families_with_total_and_has_no_eof() {
        let text = encode(&families(), Format::Text);
        assert_eq!(
            text,
            "# HELP pg_up Up \"really\"\\\\yes\n\
             # TYPE pg_up gauge\n\
             pg_up 1\n\
             # HELP pg_rule_packets_total Packets\n\
             # TYPE pg_rule_packets_total counter\n\
             pg_rule_packets_total{rule=\"A\",product=\"x\\\"y\\nz\\\\\"} 7\n\
             pg_rule_packets_total{rule=\"B\",product=\"x\"} 0\n\
             # HELP pg_empty_total Nothing yet\n\
             # TYPE pg_empty_total counter\n"
        );
    }

    #[test]
    fn openmetrics_names_counter_families_without_total_and_ends_with_eof() {
        let text = encode(&families(), Format::OpenMetrics);
        assert!(
            text.starts_with("# HELP pg_up Up \\\"really\\\"\\\\yes\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE pg_rule_packets counter\npg_rule_packets_total{rule=\"A\""));
        assert!(text.contains("# TYPE pg_empty counter\n# EOF\n"), "{text}");
        assert!(text.ends_with("# EOF\n"));
    }

    #[test]
    fn accept_headers_choose_the_format() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;\
                          version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, want) in [
            (None, Format::Text),
            (Some("*/*"), Format::Text),
            (Some("text/plain"), Format::Text),
            (Some(prometheus), Format::OpenMetrics),
            (Some("application/openmetrics-text"), Format::OpenMetrics),
            (
                Some("Application/OpenMetrics-Text; version=1.0.0"),
                Format::OpenMetrics,
            ),
            (Some("application/openmetrics-text;q=0"), Format::Text),
            (
                Some("text/plain, application/openmetrics-text"),
                Format::Text,
            ),
            (
                Some("text/plain;q=0.5, application/openmetrics-text;q=0.9"),
                Format::OpenMetrics,
            ),
            (Some("garbage;;q=x,"), Format::Text),
        ] {
            assert_eq!(Format::negotiate(accept), want, "{accept:?}");
        }
    }
}
