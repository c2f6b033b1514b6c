//! Line charts on log-log axes, drawn with [`crate::draw`]: one panel per
//! figure, one line per series (benchmark figures against the number of
//! Services, ferry's nftables mode beside kube-proxy's iptables rules).
//! Each panel is a group `class="panel"` and each line a group
//! `class="series"` with `data-name` and `data-points`.
//!
//! Pure.

use crate::draw::{Font, LogAxis, Svg};

/// One line.
#[derive(Clone, Debug)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// One panel: a figure against x.
#[derive(Clone, Debug)]
pub struct Panel {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
}

const COLORS: [&str; 4] = ["#1565c0", "#c62828", "#ef6c00", "#2e7d32"];
const PANEL_W: f64 = 560.0;
const PANEL_H: f64 = 380.0;

fn label(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.0}k", v / 1000.0)
    } else if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

/// Panels side by side under a title.
pub fn render(title: &str, panels: &[Panel]) -> String {
    let width = 20.0 + panels.len().max(1) as f64 * (PANEL_W + 20.0);
    let mut svg = Svg::new(width, PANEL_H + 70.0);
    svg.text(20.0, 30.0, title, Font::new(18.0).bold());
    for (i, p) in panels.iter().enumerate() {
        let x0 = 20.0 + i as f64 * (PANEL_W + 20.0);
        let (left, right, top, bottom) = (x0 + 70.0, x0 + PANEL_W - 20.0, 80.0, PANEL_H + 10.0);
        let xs = LogAxis::fit(
            p.series.iter().flat_map(|s| s.points.iter().map(|q| q.0)),
            left,
            right,
        );
        let ys = LogAxis::fit(
            p.series.iter().flat_map(|s| s.points.iter().map(|q| q.1)),
            bottom,
            top,
        );
        svg.group("panel", &[("title", &p.title)]);
        svg.text(
            x0 + PANEL_W / 2.0,
            60.0,
            &p.title,
            Font::new(15.0).bold().middle(),
        );
        for d in xs.decades() {
            let x = xs.at(d);
            svg.line(x, top, x, bottom, "#e0e0e0", false);
            svg.text(x, bottom + 16.0, &label(d), Font::new(11.0).middle());
        }
        for d in ys.decades() {
            let y = ys.at(d);
            svg.line(left, y, right, y, "#e0e0e0", false);
            svg.text(left - 6.0, y + 4.0, &label(d), Font::new(11.0).end());
        }
        svg.line(left, bottom, right, bottom, "#455a64", false);
        svg.line(left, top, left, bottom, "#455a64", false);
        svg.text(
            (left + right) / 2.0,
            bottom + 34.0,
            &p.x_label,
            Font::new(12.0).middle(),
        );
        svg.text(x0 + 4.0, top - 8.0, &p.y_label, Font::new(12.0));
        for (j, s) in p.series.iter().enumerate() {
            let color = COLORS[j % COLORS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|(x, y)| *x > 0.0 && *y > 0.0 && y.is_finite())
                .map(|(x, y)| (xs.at(*x), ys.at(*y)))
                .collect();
            svg.group(
                "series",
                &[("name", &s.name), ("points", &pts.len().to_string())],
            );
            svg.polyline(&pts, color);
            for (x, y) in &pts {
                svg.circle(*x, *y, 3.5, color);
            }
            svg.line(
                left + 12.0,
                top + 14.0 + 18.0 * j as f64,
                left + 36.0,
                top + 14.0 + 18.0 * j as f64,
                color,
                false,
            );
            svg.text(
                left + 42.0,
                top + 18.0 + 18.0 * j as f64,
                &s.name,
                Font::new(12.0).color(color),
            );
            svg.end();
        }
        svg.end();
    }
    svg.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_series_is_drawn_with_its_points_on_log_axes() {
        let panel = Panel {
            title: "one change".into(),
            x_label: "Services".into(),
            y_label: "ms".into(),
            series: vec![
                Series {
                    name: "nftables".into(),
                    points: vec![(1000.0, 0.1), (20000.0, 0.2)],
                },
                Series {
                    name: "iptables".into(),
                    points: vec![(1000.0, 50.0), (20000.0, 3000.0), (100000.0, f64::NAN)],
                },
            ],
        };
        let svg = render("ferry bench proxy", &[panel.clone(), panel]);
        assert_eq!(svg.matches("<g class=\"panel\"").count(), 2);
        assert!(
            svg.contains("data-name=\"nftables\" data-points=\"2\""),
            "{svg}"
        );
        assert!(
            svg.contains("data-name=\"iptables\" data-points=\"2\""),
            "a missing figure is left out"
        );
        // Decades 1k..100k on x, 0.1..10k ms on y.
        assert!(
            svg.contains(">100k<") && svg.contains(">10k<") && svg.contains(">0.1<"),
            "{svg}"
        );
    }
}
