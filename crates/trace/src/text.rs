//! The text form of a trace: one block per hop (what decided it, the path,
//! the candidates, each check with model and kernel side by side); a check
//! whose kernel state differs starts its line with `MISMATCH`, so it can
//! be found with grep.
//!
//! Pure.

use std::fmt::Write as _;

use crate::{Status, Trace};

/// The trace as text.
pub fn render(t: &Trace) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "trace {} {} -> {}  ({} mode, {} pod network)",
        t.from.kind,
        t.from.name,
        t.to,
        t.proxy_mode.as_str(),
        t.backend
    );
    let _ = writeln!(
        s,
        "from {}{}{}",
        t.from.ip,
        t.from
            .node
            .as_deref()
            .map(|n| format!(" on {n}"))
            .unwrap_or_default(),
        t.destination
            .as_deref()
            .map(|d| format!(", to {d}"))
            .unwrap_or_default()
    );
    for (i, hop) in t.hops.iter().enumerate() {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "[{}] {}{}",
            i + 1,
            hop.title,
            hop.node
                .as_deref()
                .map(|n| format!("  (on {n})"))
                .unwrap_or_default()
        );
        for d in &hop.decided {
            let _ = writeln!(s, "    - {d}");
        }
        if !hop.path.is_empty() {
            let _ = writeln!(s, "    path: {}", hop.path.join(" -> "));
        }
        if !hop.endpoints.is_empty() {
            let _ = writeln!(
                s,
                "    endpoints (rule probability, share of new connections):"
            );
            for c in &hop.endpoints {
                let _ = writeln!(
                    s,
                    "      {:<22} {:<8} {:<7} p={:<8.5} share={:<8.5} {}{}",
                    format!("{}:{}", c.ip, c.port),
                    c.node.as_deref().unwrap_or("?"),
                    if c.local { "local" } else { "remote" },
                    c.rule_probability,
                    c.share,
                    c.entry,
                    c.pod
                        .as_deref()
                        .map(|p| format!("  pod {p}"))
                        .unwrap_or_default()
                );
                if let Some(m) = &c.masquerade {
                    let _ = writeln!(s, "        masquerade: {m}");
                }
            }
        }
        for c in &hop.checks {
            let tag = match c.status {
                Status::Match => "    ok      ",
                Status::Mismatch => "MISMATCH    ",
                Status::Unchecked => "    model   ",
            };
            let _ = writeln!(s, "{tag}{}: {}", c.what, c.model);
            if let Some(k) = &c.kernel {
                let _ = writeln!(s, "            kernel: {k}");
            }
        }
    }
    if let Some(p) = &t.probe {
        let _ = writeln!(s);
        let _ = writeln!(s, "[probe] {}", p.summary);
        for l in &p.conntrack {
            let _ = writeln!(s, "    conntrack: {l}");
        }
        for l in &p.counters {
            let _ = writeln!(s, "    counter moved: {l}");
        }
        for l in &p.nftrace {
            let _ = writeln!(s, "    nftrace: {l}");
        }
    }
    let _ = writeln!(s);
    if t.kernel_checked {
        let _ = writeln!(
            s,
            "{}",
            if t.mismatches == 0 {
                "kernel: every check matches the model".to_string()
            } else {
                format!("kernel: {} check(s) differ from the model", t.mismatches)
            }
        );
    } else {
        let _ = writeln!(s, "kernel: not read (model only)");
    }
    s
}
