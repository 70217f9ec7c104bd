//! The one plot of `bench all`: ns/packet against policy size, drawn as a small hand-written
//! SVG (two panels, log-scaled x), so no plotting dependency enters the workspace.

use std::fmt::Write as _;

use crate::scale::Point;

/// Series: case key, legend, colour, dashed.
const SERIES: [(&str, &str, &str, bool); 4] = [
    ("allowed_tcp_v4", "allowed TCP/IPv4", "#1f77b4", false),
    (
        "denied_tcp_v4",
        "denied TCP/IPv4 (audited)",
        "#d62728",
        false,
    ),
    ("allowed_tcp_v6", "allowed TCP/IPv6", "#2ca02c", false),
    ("noop", "no-op XDP_PASS", "#7f7f7f", true),
];

const W: f64 = 360.0;
const H: f64 = 240.0;
const LEFT: f64 = 50.0;
const TOP: f64 = 40.0;
const PW: f64 = 270.0;
const PH: f64 = 150.0;

fn value(p: &Point, key: &str) -> f64 {
    if key == "noop" {
        p.case("allowed_tcp_v4").noop_ns
    } else {
        p.case(key).ns
    }
}

/// The SVG of the scale points; `caption` names the machine and date.
#[expect(
    clippy::too_many_lines,
    reason = "one drawing, top to bottom: axes, panels, series, legend"
)]
pub(crate) fn svg(points: &[Point], caption: &str) -> String {
    let ymax = points
        .iter()
        .flat_map(|p| SERIES.iter().map(move |s| value(p, s.0)))
        .fold(0.0, f64::max);
    // A round axis top: the next multiple of 20 ns, so the four grid steps are round too.
    let ymax = (ymax / 20.0).ceil().max(1.0) * 20.0;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{}" height="{}" font-family="sans-serif" font-size="11">"#,
        2.0 * W,
        H + 40.0
    );
    let _ = write!(
        s,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{W}" y="18" text-anchor="middle" font-size="13">portguard: ns/packet (BPF_PROG_TEST_RUN) against policy size</text>"#,
    );
    for (panel, (sweep, xlabel)) in [
        ("rules", "rules (2 prefixes each)"),
        ("prefixes", "source prefixes (10 rules)"),
    ]
    .iter()
    .enumerate()
    {
        let ox = panel as f64 * W + LEFT;
        let pts: Vec<&Point> = points.iter().filter(|p| p.sweep == *sweep).collect();
        let (lo, hi) = pts.iter().fold((f64::MAX, 0.0f64), |(lo, hi), p| {
            let x = (p.size as f64).log10();
            (lo.min(x), hi.max(x))
        });
        let span = (hi - lo).max(1.0);
        let x = |size: usize| ox + ((size as f64).log10() - lo) / span * PW;
        let y = |v: f64| TOP + PH - v / ymax * PH;
        let _ = write!(
            s,
            r##"<rect x="{ox}" y="{TOP}" width="{PW}" height="{PH}" fill="none" stroke="#444"/>"##
        );
        for k in 0..=4 {
            let v = ymax * f64::from(k) / 4.0;
            let _ = write!(
                s,
                r##"<line x1="{ox}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{v:.0}</text>"##,
                ox + PW,
                ox - 4.0,
                y(v) + 4.0,
                y = y(v)
            );
        }
        for p in &pts {
            let _ = write!(
                s,
                r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
                x(p.size),
                TOP + PH + 14.0,
                p.size
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{xlabel}</text>"#,
            ox + PW / 2.0,
            TOP + PH + 30.0
        );
        if panel == 0 {
            let _ = write!(
                s,
                r#"<text x="14" y="{}" transform="rotate(-90 14 {})" text-anchor="middle">ns/packet</text>"#,
                TOP + PH / 2.0,
                TOP + PH / 2.0
            );
        }
        for (key, _, colour, dashed) in SERIES {
            let path: Vec<String> = pts
                .iter()
                .map(|p| format!("{:.1},{:.1}", x(p.size), y(value(p, key))))
                .collect();
            let dash = if dashed {
                r#" stroke-dasharray="4 3""#
            } else {
                ""
            };
            let _ = write!(
                s,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2"{dash}/>"#,
                path.join(" ")
            );
            for pt in &path {
                let (px, py) = pt.split_once(',').expect("x,y");
                let _ = write!(
                    s,
                    r#"<circle cx="{px}" cy="{py}" r="2.5" fill="{colour}"/>"#
                );
            }
        }
    }
    for (i, (_, legend, colour, _)) in SERIES.iter().enumerate() {
        let lx = LEFT + i as f64 * 165.0;
        let ly = H + 8.0;
        let _ = write!(
            s,
            r#"<rect x="{lx}" y="{}" width="12" height="4" fill="{colour}"/><text x="{}" y="{ly}">{legend}</text>"#,
            ly - 6.0,
            lx + 16.0
        );
    }
    let _ = write!(
        s,
        r##"<text x="{LEFT}" y="{}" fill="#555">{}</text></svg>"##,
        H + 28.0,
        caption
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    );
    s.push('\n');
    s
}
