//! A very small SVG writer: boxes, text, lines and arrows, groups that
//! carry a class and data attributes (so a test can find each part), and
//! log-scale axes for charts. Shared by the trace picture and benchmark
//! charts; knows nothing of either.
//!
//! Pure.

use std::fmt::Write as _;

/// One drawing, built in order (later items are drawn on top).
pub struct Svg {
    width: f64,
    height: f64,
    body: String,
}

/// Escapes text for SVG content and attribute values.
pub fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Text style.
#[derive(Clone, Copy)]
pub struct Font {
    pub size: f64,
    pub bold: bool,
    pub color: &'static str,
    /// `start`, `middle` or `end`.
    pub anchor: &'static str,
}

impl Font {
    pub const fn new(size: f64) -> Font {
        Font {
            size,
            bold: false,
            color: "#222",
            anchor: "start",
        }
    }

    pub const fn bold(self) -> Font {
        Font { bold: true, ..self }
    }

    pub const fn color(self, color: &'static str) -> Font {
        Font { color, ..self }
    }

    pub const fn middle(self) -> Font {
        Font {
            anchor: "middle",
            ..self
        }
    }

    pub const fn end(self) -> Font {
        Font {
            anchor: "end",
            ..self
        }
    }
}

impl Svg {
    pub fn new(width: f64, height: f64) -> Svg {
        Svg {
            width,
            height,
            body: String::new(),
        }
    }

    pub fn height(&self) -> f64 {
        self.height
    }

    pub fn set_height(&mut self, h: f64) {
        self.height = h;
    }

    /// Opens a group `<g class=.. data-k=v ..>`; close with [`Svg::end`].
    pub fn group(&mut self, class: &str, data: &[(&str, &str)]) {
        let _ = write!(self.body, "<g class=\"{}\"", escape(class));
        for (k, v) in data {
            let _ = write!(self.body, " data-{k}=\"{}\"", escape(v));
        }
        self.body.push_str(">\n");
    }

    pub fn end(&mut self) {
        self.body.push_str("</g>\n");
    }

    #[allow(clippy::too_many_arguments)]
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, fill: &str, stroke: &str, dashed: bool) {
        let _ = writeln!(
            self.body,
            "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" rx=\"6\" fill=\"{fill}\" stroke=\"{stroke}\" stroke-width=\"1.5\"{}/>",
            if dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            }
        );
    }

    pub fn text(&mut self, x: f64, y: f64, s: &str, font: Font) {
        let _ = writeln!(
            self.body,
            "<text x=\"{x:.1}\" y=\"{y:.1}\" font-family=\"DejaVu Sans, sans-serif\" font-size=\"{}\" fill=\"{}\" text-anchor=\"{}\"{}>{}</text>",
            font.size,
            font.color,
            font.anchor,
            if font.bold {
                " font-weight=\"bold\""
            } else {
                ""
            },
            escape(s)
        );
    }

    pub fn line(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str, dashed: bool) {
        let _ = writeln!(
            self.body,
            "<line x1=\"{x1:.1}\" y1=\"{y1:.1}\" x2=\"{x2:.1}\" y2=\"{y2:.1}\" stroke=\"{stroke}\" stroke-width=\"1.5\"{}/>",
            if dashed {
                " stroke-dasharray=\"6 4\""
            } else {
                ""
            }
        );
    }

    /// A line with an arrow head at its end.
    pub fn arrow(&mut self, x1: f64, y1: f64, x2: f64, y2: f64, stroke: &str) {
        self.line(x1, y1, x2, y2, stroke, false);
        let (dx, dy) = (x2 - x1, y2 - y1);
        let len = (dx * dx + dy * dy).sqrt().max(1e-9);
        let (ux, uy) = (dx / len, dy / len);
        let (bx, by) = (x2 - ux * 8.0, y2 - uy * 8.0);
        let _ = writeln!(
            self.body,
            "<polygon points=\"{x2:.1},{y2:.1} {:.1},{:.1} {:.1},{:.1}\" fill=\"{stroke}\"/>",
            bx - uy * 4.0,
            by + ux * 4.0,
            bx + uy * 4.0,
            by - ux * 4.0
        );
    }

    /// A polyline through `points`.
    pub fn polyline(&mut self, points: &[(f64, f64)], stroke: &str) {
        let p: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            self.body,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{stroke}\" stroke-width=\"2\"/>",
            p.join(" ")
        );
    }

    pub fn circle(&mut self, x: f64, y: f64, r: f64, fill: &str) {
        let _ = writeln!(
            self.body,
            "<circle cx=\"{x:.1}\" cy=\"{y:.1}\" r=\"{r:.1}\" fill=\"{fill}\"/>"
        );
    }

    /// The finished document, on a white background.
    pub fn finish(&self) -> String {
        format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w:.0}\" height=\"{h:.0}\" viewBox=\"0 0 {w:.0} {h:.0}\">\n<rect x=\"0\" y=\"0\" width=\"{w:.0}\" height=\"{h:.0}\" fill=\"white\"/>\n{}</svg>\n",
            self.body,
            w = self.width,
            h = self.height
        )
    }
}

/// A log10 axis mapping `[min, max]` onto `[from, to]` pixels.
#[derive(Clone, Copy, Debug)]
pub struct LogAxis {
    pub min: f64,
    pub max: f64,
    pub from: f64,
    pub to: f64,
}

impl LogAxis {
    /// The axis over whole decades holding every value (positive ones).
    pub fn fit(values: impl IntoIterator<Item = f64>, from: f64, to: f64) -> LogAxis {
        let (mut lo, mut hi) = (f64::MAX, f64::MIN);
        for v in values.into_iter().filter(|v| *v > 0.0) {
            lo = lo.min(v);
            hi = hi.max(v);
        }
        if lo > hi {
            (lo, hi) = (1.0, 10.0);
        }
        let min = 10f64.powf(lo.log10().floor());
        let mut max = 10f64.powf(hi.log10().ceil());
        if max <= min {
            max = min * 10.0;
        }
        LogAxis { min, max, from, to }
    }

    pub fn at(&self, v: f64) -> f64 {
        let t =
            (v.max(self.min).log10() - self.min.log10()) / (self.max.log10() - self.min.log10());
        self.from + t * (self.to - self.from)
    }

    /// Every decade from min to max.
    pub fn decades(&self) -> Vec<f64> {
        let mut out = Vec::new();
        let mut v = self.min;
        while v <= self.max * 1.0001 {
            out.push(v);
            v *= 10.0;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_escaped_and_groups_carry_their_data() {
        let mut s = Svg::new(100.0, 50.0);
        s.group("hop", &[("kind", "dns")]);
        s.text(1.0, 2.0, "a<b & \"c\"", Font::new(12.0));
        s.end();
        let doc = s.finish();
        assert!(doc.contains("a&lt;b &amp; &quot;c&quot;"), "{doc}");
        assert!(doc.contains("<g class=\"hop\" data-kind=\"dns\">"), "{doc}");
        assert!(doc.starts_with("<svg xmlns"));
    }

    #[test]
    fn a_log_axis_spans_whole_decades() {
        let a = LogAxis::fit([3.0, 250.0], 0.0, 300.0);
        assert_eq!((a.min, a.max), (1.0, 1000.0));
        assert_eq!(a.decades(), vec![1.0, 10.0, 100.0, 1000.0]);
        assert!((a.at(10.0) - 100.0).abs() < 1e-9);
    }
}
