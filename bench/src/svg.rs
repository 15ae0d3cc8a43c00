//! A minimal hand-written SVG line chart (no fonts or system libraries
//! needed: text is left to the viewer).

use std::fmt::Write;

/// One line of a chart.
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
    pub dashed: bool,
}

/// Axis scale.
#[derive(Clone, Copy)]
pub enum Scale {
    Linear,
    Log,
}

pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub x_scale: Scale,
    pub y_scale: Scale,
}

const PALETTE: [&str; 16] = [
    "#000000", "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6",
    "#9a6324", "#469990", "#808000", "#000075", "#a9a9a9", "#dcbeff", "#800000", "#bfef45",
];

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn fmt_tick(v: f64) -> String {
    if v == 0.0 {
        "0".into()
    } else if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else if v.abs() >= 1.0 {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn ticks(lo: f64, hi: f64, scale: Scale) -> Vec<f64> {
    match scale {
        Scale::Log => {
            let mut out = Vec::new();
            let mut d = 10f64.powf(lo.log10().floor());
            while d <= hi * 1.0001 {
                for m in [1.0, 2.0, 5.0] {
                    let v = d * m;
                    if v >= lo * 0.9999 && v <= hi * 1.0001 {
                        out.push(v);
                    }
                }
                d *= 10.0;
            }
            out
        }
        Scale::Linear => {
            let span = hi - lo;
            let raw = span / 5.0;
            let mag = 10f64.powf(raw.log10().floor());
            let step = [1.0, 2.0, 2.5, 5.0, 10.0]
                .iter()
                .map(|m| m * mag)
                .find(|s| span / s <= 6.0)
                .unwrap_or(mag * 10.0);
            let mut v = (lo / step).ceil() * step;
            let mut out = Vec::new();
            while v <= hi + step * 1e-9 {
                out.push(v);
                v += step;
            }
            out
        }
    }
}

impl Chart<'_> {
    /// Renders the chart with its legend to the right.
    pub fn render(&self, series: &[Series]) -> String {
        let (w, h) = (1280.0, 560.0);
        let (left, top, pw, ph) = (80.0, 40.0, 640.0, 460.0);
        let pts = series.iter().flat_map(|s| s.points.iter());
        let valid = |v: f64, sc: Scale| v.is_finite() && (matches!(sc, Scale::Linear) || v > 0.0);
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in pts {
            if valid(x, self.x_scale) && valid(y, self.y_scale) {
                x0 = x0.min(x);
                x1 = x1.max(x);
                y0 = y0.min(y);
                y1 = y1.max(y);
            }
        }
        if x0 > x1 {
            (x0, x1, y0, y1) = (1.0, 10.0, 1.0, 10.0);
        }
        let pad = |lo: f64, hi: f64, sc: Scale| match sc {
            Scale::Log => {
                let (a, b) = (
                    lo.log10().floor(),
                    hi.log10().ceil().max(lo.log10().floor() + 1.0),
                );
                (10f64.powf(a), 10f64.powf(b))
            }
            Scale::Linear => {
                if (hi - lo).abs() < 1e-12 {
                    (lo - 1.0, hi + 1.0)
                } else {
                    (lo.min(0.0), hi)
                }
            }
        };
        let (x0, x1) = pad(x0, x1, self.x_scale);
        let (y0, y1) = pad(y0, y1, self.y_scale);
        let map = |v: f64, lo: f64, hi: f64, sc: Scale| match sc {
            Scale::Log => (v.log10() - lo.log10()) / (hi.log10() - lo.log10()),
            Scale::Linear => (v - lo) / (hi - lo),
        };
        let px = |x: f64| left + pw * map(x, x0, x1, self.x_scale);
        let py = |y: f64| top + ph * (1.0 - map(y, y0, y1, self.y_scale));

        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        let _ = writeln!(
            s,
            r#"<text x="{}" y="24" font-size="15" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            esc(self.title)
        );
        for t in ticks(x0, x1, self.x_scale) {
            let x = px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{}" stroke="#e0e0e0"/><text x="{x:.1}" y="{}" text-anchor="middle">{}</text>"##,
                top + ph,
                top + ph + 16.0,
                fmt_tick(t)
            );
        }
        for t in ticks(y0, y1, self.y_scale) {
            let y = py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#e0e0e0"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
                left + pw,
                left - 6.0,
                y + 4.0,
                fmt_tick(t)
            );
        }
        let _ = writeln!(
            s,
            r#"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="black"/>"#
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            left + pw / 2.0,
            top + ph + 36.0,
            esc(self.x_label)
        );
        let _ = writeln!(
            s,
            r#"<text x="18" y="{}" text-anchor="middle" transform="rotate(-90 18 {})">{}</text>"#,
            top + ph / 2.0,
            top + ph / 2.0,
            esc(self.y_label)
        );
        for (i, ser) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            let dash = if ser.dashed {
                r#" stroke-dasharray="6 3""#
            } else {
                ""
            };
            let path: Vec<String> = ser
                .points
                .iter()
                .filter(|&&(x, y)| valid(x, self.x_scale) && valid(y, self.y_scale))
                .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.8"{dash} points="{}"/>"#,
                path.join(" ")
            );
            if path.len() <= 8 {
                for p in &path {
                    let (cx, cy) = p.split_once(',').expect("x,y");
                    let _ = writeln!(s, r#"<circle cx="{cx}" cy="{cy}" r="3" fill="{color}"/>"#);
                }
            }
            let ly = top + 8.0 + 18.0 * i as f64;
            let lx = left + pw + 16.0;
            let _ = writeln!(
                s,
                r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{color}" stroke-width="2.5"{dash}/><text x="{}" y="{}">{}</text>"#,
                lx + 24.0,
                lx + 30.0,
                ly + 4.0,
                esc(&ser.name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}
