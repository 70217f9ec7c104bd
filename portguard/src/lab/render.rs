//! The lab's results for people: a table for the terminal, and a small hand-written SVG with the
//! protected host in the middle, the machines around it and one line per flow.

use std::{collections::BTreeMap, fmt::Write as _};

use super::{
    expect::Verdict,
    flows::{Row, RowResult},
    plan::{Group, HOST, Plan, VM},
};

fn counters(row: &Row) -> String {
    if row.moved.is_empty() {
        return "-".to_owned();
    }
    row.moved
        .iter()
        .map(|m| format!("{} +{}", m.counter, m.packets))
        .collect::<Vec<_>>()
        .join(", ")
}

fn observed(row: &Row) -> &'static str {
    match row.delivered {
        Some(true) => "delivered",
        Some(false) => "dropped",
        None if row.expected.is_some() => "not observable",
        None => "-",
    }
}

fn flow(row: &Row) -> String {
    match (row.src, row.dst) {
        (Some(s), Some(d)) => format!("{} {s} -> {} {d} {}", row.from, row.to, row.what),
        _ => String::new(),
    }
}

fn result(row: &Row) -> &'static str {
    match row.result {
        RowResult::Ok => "OK",
        RowResult::Mismatch => "MISMATCH",
        RowResult::NotExercised => "not exercised",
    }
}

/// The table: one line per flow, grouped, with notes and mismatch explanations indented below.
#[must_use]
pub fn table(rows: &[Row]) -> String {
    let header = [
        "#",
        "RULE",
        "FLOW",
        "EXPECTED (explain)",
        "OBSERVED",
        "COUNTERS MOVED",
        "RESULT",
    ];
    let cells: Vec<[String; 7]> = rows
        .iter()
        .enumerate()
        .map(|(i, r)| {
            [
                (i + 1).to_string(),
                r.rule.clone().unwrap_or_else(|| "-".to_owned()),
                flow(r),
                r.expected
                    .as_ref()
                    .map_or_else(|| "-".to_owned(), |e| e.text.clone()),
                observed(r).to_owned(),
                counters(r),
                result(r).to_owned(),
            ]
        })
        .collect();
    let mut widths = header.map(str::len);
    for c in &cells {
        for (w, s) in widths.iter_mut().zip(c.iter()) {
            *w = (*w).max(s.len());
        }
    }
    let line = |out: &mut String, c: &[String]| {
        let mut l = String::new();
        for (i, (s, w)) in c.iter().zip(widths).enumerate() {
            if i + 1 == c.len() {
                l.push_str(s);
            } else {
                let _ = write!(l, "{s:<w$}  ");
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    let mut out = String::new();
    line(&mut out, &header.map(str::to_owned));
    let mut group = None;
    for (r, c) in rows.iter().zip(&cells) {
        if group != Some(r.group) {
            group = Some(r.group);
            out.push_str(match r.group {
                Group::Rule => "-- every rule in force on the host\n",
                Group::Negative => "-- flows the matrix does not allow\n",
                Group::HostSafety => "-- what the host needs to keep working\n",
            });
        }
        line(&mut out, c);
        let indent = " ".repeat(widths[0] + 2);
        if let Some(n) = &r.note {
            let _ = writeln!(out, "{indent}({n})");
        }
        if let Some(w) = &r.why {
            let _ = writeln!(out, "{indent}{w}");
        }
    }
    out
}

/// Counts for the summary line: (ok, mismatches, not exercised).
#[must_use]
pub fn counts(rows: &[Row]) -> (usize, usize, usize) {
    let n = |x: RowResult| rows.iter().filter(|r| r.result == x).count();
    (
        n(RowResult::Ok),
        n(RowResult::Mismatch),
        n(RowResult::NotExercised),
    )
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// One drawn line: the flows between two machines with the same protocol, port and verdict.
struct Line {
    from: String,
    to: String,
    label: String,
    verdict: Option<Verdict>,
    mismatch: bool,
    tips: Vec<String>,
}

fn colour(v: Option<Verdict>) -> &'static str {
    match v {
        Some(Verdict::Allowed) => "#2e7d32",
        Some(Verdict::Denied) => "#c62828",
        _ => "#9e9e9e",
    }
}

/// Width and height of the picture.
const W: f64 = 1100.0;
const H: f64 = 820.0;

/// Where each machine sits: the host in the middle, the VM under it, the others on an ellipse
/// round them with a gap at the bottom for the VM.
fn positions(plan: &Plan) -> BTreeMap<String, (f64, f64)> {
    let (cx, cy) = (W / 2.0, H / 2.0 - 20.0);
    let mut pos = BTreeMap::new();
    pos.insert(plan.endpoints[HOST].label.clone(), (cx, cy));
    pos.insert(plan.endpoints[VM].label.clone(), (cx, cy + 150.0));
    let around: Vec<_> = plan
        .endpoints
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != HOST && *i != VM)
        .map(|(_, e)| e)
        .collect();
    let count = around.len().max(1) as f64;
    for (k, e) in around.iter().enumerate() {
        // Spread over 300 degrees, starting just right of the bottom and going round
        // clockwise (y grows downwards).
        let angle = (120.0 + (k as f64 + 0.5) * 300.0 / count).to_radians();
        pos.insert(
            e.label.clone(),
            (cx + 420.0 * angle.cos(), cy + 300.0 * angle.sin()),
        );
    }
    pos
}

/// One line per (sender, receiver, protocol/port, verdict): the IPv4 and IPv6 twins of a flow
/// share it, their details go in the tooltip.
fn lines(rows: &[Row]) -> Vec<Line> {
    let mut lines: Vec<Line> = Vec::new();
    for r in rows.iter().filter(|r| r.src.is_some()) {
        let verdict = r.observed_verdict();
        let label = r.what.split(',').next().unwrap_or_default().to_owned();
        let tip = format!(
            "{} {} -> {} {} {}: expected {}, {}",
            r.from,
            r.src.map(|a| a.to_string()).unwrap_or_default(),
            r.to,
            r.dst.map(|a| a.to_string()).unwrap_or_default(),
            r.what,
            r.expected.as_ref().map_or("-", |e| e.text.as_str()),
            if r.result == RowResult::Mismatch {
                "MISMATCH"
            } else {
                "as expected"
            }
        );
        let mismatch = r.result == RowResult::Mismatch;
        if let Some(l) = lines
            .iter_mut()
            .find(|l| l.from == r.from && l.to == r.to && l.label == label && l.verdict == verdict)
        {
            l.tips.push(tip);
            l.mismatch |= mismatch;
        } else {
            lines.push(Line {
                from: r.from.clone(),
                to: r.to.clone(),
                label,
                verdict,
                mismatch,
                tips: vec![tip],
            });
        }
    }
    lines
}

impl Line {
    /// The two machines it joins, in a fixed order.
    fn pair(&self) -> (String, String) {
        if self.from < self.to {
            (self.from.clone(), self.to.clone())
        } else {
            (self.to.clone(), self.from.clone())
        }
    }

    /// Draw it as the `index`th of `total` lines between the same two machines: lines of one
    /// pair bend to alternating sides, each further out, within a band of fixed width; labels
    /// sit at different points along their lines so neighbours' labels do not collide.
    fn draw(
        &self,
        out: &mut String,
        (x1, y1): (f64, f64),
        (x2, y2): (f64, f64),
        index: usize,
        total: usize,
    ) {
        let (nth, total) = (index as f64, total as f64);
        let marker = match self.verdict {
            Some(Verdict::Allowed) => "allowed",
            Some(Verdict::Denied) => "denied",
            _ => "other",
        };
        let step = (320.0 / total).min(18.0);
        let side = if index.is_multiple_of(2) { 1.0 } else { -1.0 };
        let bend = side * (step * (nth / 2.0).floor() + step / 2.0);
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = dx.hypot(dy).max(1.0);
        let (nx, ny) = (-dy / len, dx / len);
        let (mx, my) = (
            f64::midpoint(x1, x2) + nx * bend * 2.0,
            f64::midpoint(y1, y2) + ny * bend * 2.0,
        );
        // Stop the arrow at the edge of the box it points at.
        let (ex, ey) = (x2 - dx / len * 62.0, y2 - dy / len * 26.0);
        let dash = if self.mismatch {
            r#" stroke-dasharray="6,3""#
        } else {
            ""
        };
        let _ = writeln!(
            out,
            r#"<path d="M{x1:.0},{y1:.0} Q{mx:.0},{my:.0} {ex:.0},{ey:.0}" fill="none" stroke="{}" stroke-width="1.5"{dash} marker-end="url(#{marker})"><title>{}</title></path>"#,
            colour(self.verdict),
            escape(&self.tips.join("\n"))
        );
        let t = 0.3 + 0.45 * (nth + 0.5) / total;
        let u = 1.0 - t;
        let (lx, ly) = (
            u * u * x1 + 2.0 * u * t * mx + t * t * ex,
            u * u * y1 + 2.0 * u * t * my + t * t * ey,
        );
        let _ = writeln!(
            out,
            r#"<text x="{lx:.0}" y="{ly:.0}" font-size="9" fill="{}" text-anchor="middle" stroke="white" stroke-width="3" paint-order="stroke">{}</text>"#,
            colour(self.verdict),
            escape(&self.label)
        );
    }
}

/// A machine's box: its label and addresses, the host's highlighted.
fn draw_box(out: &mut String, e: &super::plan::Endpoint, (x, y): (f64, f64), host: bool) {
    let fill = if host { "#e3f2fd" } else { "#fafafa" };
    let addrs = e
        .addrs()
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("  ");
    let _ = writeln!(
        out,
        r#"<rect x="{:.0}" y="{:.0}" width="120" height="44" rx="6" fill="{fill}" stroke="{}" stroke-width="{}"/><text x="{x:.0}" y="{:.0}" font-size="12" font-weight="bold" text-anchor="middle">{}</text><text x="{x:.0}" y="{:.0}" font-size="8" text-anchor="middle">{}</text>"#,
        x - 60.0,
        y - 22.0,
        if host { "#1565c0" } else { "#616161" },
        if host { 2 } else { 1 },
        y - 4.0,
        escape(&e.label),
        y + 12.0,
        escape(&addrs)
    );
}

/// The picture: machines as boxes (the host in the middle, the VM under it, the others round
/// them), one arrow per flow from sender to receiver coloured by the verdict the counters show
/// (green allowed, red denied, grey not judged), labelled with protocol and port; dashed where
/// the table says MISMATCH.
#[must_use]
pub fn svg(plan: &Plan, rows: &[Row], title: &str) -> String {
    let pos = positions(plan);
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    out.push_str("<defs>");
    for (name, c) in [
        ("allowed", colour(Some(Verdict::Allowed))),
        ("denied", colour(Some(Verdict::Denied))),
        ("other", colour(None)),
    ] {
        let _ = write!(
            out,
            r#"<marker id="{name}" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="{c}"/></marker>"#
        );
    }
    out.push_str("</defs>\n");
    let _ = writeln!(
        out,
        r#"<rect width="{W}" height="{H}" fill="white"/><text x="20" y="28" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    );
    let lines = lines(rows);
    let mut per_pair: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in &lines {
        *per_pair.entry(l.pair()).or_default() += 1;
    }
    let mut drawn: BTreeMap<(String, String), usize> = BTreeMap::new();
    for l in &lines {
        let (Some(from), Some(to)) = (pos.get(&l.from), pos.get(&l.to)) else {
            continue;
        };
        let index = drawn.entry(l.pair()).or_default();
        l.draw(&mut out, *from, *to, *index, per_pair[&l.pair()]);
        *index += 1;
    }
    for (i, e) in plan.endpoints.iter().enumerate() {
        if let Some(p) = pos.get(&e.label) {
            draw_box(&mut out, e, *p, i == HOST);
        }
    }
    let ly = H - 24.0;
    let _ = writeln!(
        out,
        r#"<text x="20" y="{ly}" font-size="12"><tspan fill="{}">— allowed</tspan>   <tspan fill="{}">— denied</tspan>   <tspan fill="{}">— not judged (not for the host)</tspan>   dashed: differs from explain</text>"#,
        colour(Some(Verdict::Allowed)),
        colour(Some(Verdict::Denied)),
        colour(Some(Verdict::NotJudged)),
    );
    out.push_str("</svg>\n");
    out
}
