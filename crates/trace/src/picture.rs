//! The trace as a picture (SVG), in the manner of the seed articles'
//! figures: the nodes involved as boxes, with the client and endpoint
//! pods, the bridge cni0, the VXLAN device and the tunnel between nodes;
//! below, one row per hop with the chains or maps traversed and the
//! candidate endpoints (the probe's chosen one marked). Every hop is a
//! group `class="hop"` with `data-index` and `data-kind`, so tools and
//! tests can find them in order.
//!
//! Pure.

use crate::draw::{Font, Svg};
use crate::{HopKind, Trace};

const WIDTH: f64 = 1200.0;
const MARGIN: f64 = 20.0;
const RED: &str = "#c62828";
const BLUE: &str = "#1565c0";
const GREEN: &str = "#2e7d32";

fn cut(s: &str, n: usize) -> String {
    if s.chars().count() <= n {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(n - 1).collect::<String>())
    }
}

/// The nodes a trace goes through, in order of appearance.
fn nodes(t: &Trace) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut add = |n: &Option<String>| {
        if let Some(n) = n
            && !out.contains(n)
        {
            out.push(n.clone());
        }
    };
    add(&t.from.node);
    for h in &t.hops {
        add(&h.node);
        add(&h.to_node);
        for c in &h.endpoints {
            add(&c.node);
        }
    }
    out
}

/// The picture of a trace.
pub fn render(t: &Trace) -> String {
    let mut svg = Svg::new(WIDTH, 100.0);
    svg.text(
        MARGIN,
        30.0,
        &format!(
            "ferry trace {} → {}   ({} mode, {})",
            t.from.name,
            t.to,
            t.proxy_mode.as_str(),
            t.backend
        ),
        Font::new(18.0).bold(),
    );
    let chosen = t.probe.as_ref().and_then(|p| p.chosen.clone());
    let names = nodes(t);
    let node_top = 50.0;
    let node_h = 230.0;
    let n = names.len().max(1) as f64;
    let gap = 60.0;
    let node_w = ((WIDTH - 2.0 * MARGIN - gap * (n - 1.0)) / n).min(520.0);
    // The hop that picks an endpoint: the service proxy, or the ingress.
    let service = t
        .hops
        .iter()
        .find(|h| matches!(h.kind, HopKind::Service | HopKind::Ingress));
    let mut vxlan_boxes: Vec<(f64, f64)> = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let x = MARGIN + i as f64 * (node_w + gap);
        svg.group("node", &[("name", name)]);
        svg.rect(x, node_top, node_w, node_h, "#f5f7fa", "#455a64", false);
        svg.text(
            x + 10.0,
            node_top + 22.0,
            &format!("node {name}"),
            Font::new(15.0).bold(),
        );
        // Pods: the client and the candidate endpoints on this node.
        let mut pods: Vec<(String, String, &'static str)> = Vec::new();
        if t.from.kind == "pod" && t.from.node.as_deref() == Some(name) {
            pods.push((
                cut(&t.from.name, 26),
                format!("{} (client)", t.from.ip),
                BLUE,
            ));
        }
        if let Some(s) = service {
            for c in s
                .endpoints
                .iter()
                .filter(|c| c.node.as_deref() == Some(name))
            {
                let addr = format!("{}:{}", c.ip, c.port);
                let is_client = c.ip == t.from.ip;
                let color = if chosen.as_deref() == Some(&addr) {
                    RED
                } else {
                    GREEN
                };
                let label = format!(
                    "{addr} {:.0}%{}",
                    c.share * 100.0,
                    if chosen.as_deref() == Some(&addr) {
                        " chosen"
                    } else {
                        ""
                    }
                );
                if is_client && let Some(p) = pods.first_mut() {
                    p.1 = format!("{} client + endpoint {label}", t.from.ip);
                    p.2 = color;
                    continue;
                }
                pods.push((
                    cut(c.pod.as_deref().unwrap_or("endpoint"), 26),
                    label,
                    color,
                ));
            }
        }
        if service.is_none()
            && let Some(dest) = &t.destination
            && t.hops
                .iter()
                .any(|h| h.kind == HopKind::Routing && h.to_node.as_deref() == Some(name))
        {
            pods.push(("destination".into(), dest.clone(), GREEN));
        }
        let pod_w = ((node_w - 20.0) / pods.len().max(1) as f64 - 8.0).min(240.0);
        for (j, (title, detail, color)) in pods.iter().enumerate() {
            let px = x + 10.0 + j as f64 * (pod_w + 8.0);
            svg.group("pod", &[("name", title)]);
            svg.rect(px, node_top + 35.0, pod_w, 56.0, "white", color, false);
            svg.text(
                px + 6.0,
                node_top + 55.0,
                &cut(title, (pod_w / 7.5) as usize),
                Font::new(12.0).bold(),
            );
            svg.text(
                px + 6.0,
                node_top + 75.0,
                &cut(detail, (pod_w / 6.5) as usize),
                Font::new(11.0).color(color),
            );
            svg.line(
                px + pod_w / 2.0,
                node_top + 91.0,
                px + pod_w / 2.0,
                node_top + 115.0,
                "#607d8b",
                false,
            );
            svg.end();
        }
        svg.group("device", &[("name", "cni0")]);
        svg.rect(
            x + 10.0,
            node_top + 115.0,
            node_w - 20.0,
            24.0,
            "#e3f2fd",
            BLUE,
            false,
        );
        svg.text(
            x + 16.0,
            node_top + 132.0,
            "cni0 (bridge, pod gateway)",
            Font::new(12.0),
        );
        svg.end();
        if t.backend == "vxlan" {
            svg.group("device", &[("name", "flannel.1")]);
            svg.rect(
                x + 10.0,
                node_top + 155.0,
                150.0,
                28.0,
                "#fff3e0",
                "#ef6c00",
                false,
            );
            svg.text(
                x + 18.0,
                node_top + 174.0,
                "flannel.1 (VXLAN)",
                Font::new(12.0),
            );
            svg.end();
            vxlan_boxes.push((x + 160.0, node_top + 169.0));
        }
        svg.rect(
            x + 10.0,
            node_top + 195.0,
            node_w - 20.0,
            24.0,
            "#eceff1",
            "#607d8b",
            false,
        );
        svg.text(
            x + 16.0,
            node_top + 212.0,
            "eth0 (node network)",
            Font::new(12.0),
        );
        svg.end();
    }
    if vxlan_boxes.len() > 1 {
        svg.group("tunnel", &[("kind", "vxlan")]);
        for w in vxlan_boxes.windows(2) {
            let (x1, y) = w[0];
            let x2 = w[1].0 - 150.0;
            svg.line(x1, y, x2, y, "#ef6c00", true);
            svg.text(
                (x1 + x2) / 2.0,
                y - 6.0,
                "VXLAN UDP 8472",
                Font::new(11.0).middle().color("#ef6c00"),
            );
        }
        svg.end();
    }
    // One row per hop.
    let mut y = node_top + node_h + 30.0;
    for (i, hop) in t.hops.iter().enumerate() {
        let index = (i + 1).to_string();
        let bad = hop.mismatched();
        let rows = 1 + if hop.endpoints.is_empty() {
            0
        } else {
            hop.endpoints.len()
        };
        let h = 56.0 + 18.0 * rows as f64;
        svg.group(
            "hop",
            &[
                ("index", &index),
                ("kind", hop.kind.as_str()),
                ("mismatch", if bad { "true" } else { "false" }),
            ],
        );
        svg.rect(
            MARGIN,
            y,
            WIDTH - 2.0 * MARGIN,
            h,
            if bad { "#ffebee" } else { "#fafafa" },
            if bad { RED } else { "#90a4ae" },
            false,
        );
        svg.text(
            MARGIN + 10.0,
            y + 20.0,
            &format!(
                "[{index}] {}{}{}",
                cut(&hop.title, 90),
                hop.node
                    .as_deref()
                    .map(|n| format!("  on {n}"))
                    .unwrap_or_default(),
                if bad { "   MISMATCH" } else { "" }
            ),
            Font::new(14.0).bold().color(if bad { RED } else { "#222" }),
        );
        // The path as boxes with arrows.
        let steps: Vec<&String> = hop.path.iter().take(6).collect();
        let step_w = if steps.is_empty() {
            0.0
        } else {
            ((WIDTH - 2.0 * MARGIN - 20.0) / steps.len() as f64 - 24.0).min(260.0)
        };
        for (j, s) in steps.iter().enumerate() {
            let sx = MARGIN + 10.0 + j as f64 * (step_w + 24.0);
            svg.group("step", &[("name", s)]);
            svg.rect(sx, y + 28.0, step_w, 22.0, "white", "#78909c", false);
            svg.text(
                sx + 5.0,
                y + 43.0,
                &cut(s, (step_w / 6.8) as usize),
                Font::new(11.0),
            );
            svg.end();
            if j + 1 < steps.len() {
                svg.arrow(
                    sx + step_w + 2.0,
                    y + 39.0,
                    sx + step_w + 22.0,
                    y + 39.0,
                    "#455a64",
                );
            }
        }
        for (j, c) in hop.endpoints.iter().enumerate() {
            let addr = format!("{}:{}", c.ip, c.port);
            let is_chosen = chosen.as_deref() == Some(&addr);
            svg.text(
                MARGIN + 20.0,
                y + 68.0 + 18.0 * j as f64,
                &format!(
                    "{}{addr}  on {}  rule p={:.5}  share {:.1}%  {}{}",
                    if is_chosen { "▶ chosen: " } else { "" },
                    c.node.as_deref().unwrap_or("?"),
                    c.rule_probability,
                    c.share * 100.0,
                    c.entry,
                    c.masquerade
                        .as_deref()
                        .map(|m| format!("  masquerade: {}", cut(m, 40)))
                        .unwrap_or_default()
                ),
                Font::new(12.0).color(if is_chosen { RED } else { GREEN }),
            );
        }
        svg.end();
        y += h + 12.0;
    }
    svg.set_height(y + 10.0);
    svg.finish()
}
