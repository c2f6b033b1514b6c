//! kube-proxy's rules as `iptables-save` prints them, read into the fields
//! a trace compares: chain, source, destination, port, statistic
//! probability, target and DNAT destination. The model's rules (rendered
//! by `ferry_proxy::iptables::rules`) and the kernel's are read the same
//! way, so the comparison does not depend on option order or on `/32`.
//!
//! Pure.

/// One `-A CHAIN ...` rule.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Rule {
    pub chain: String,
    /// `-s`, with a leading `!` when negated.
    pub source: Option<String>,
    pub destination: Option<String>,
    pub dport: Option<u16>,
    /// `--probability` of `-m statistic --mode random`.
    pub probability: Option<f64>,
    pub target: String,
    /// `--to-destination` of a DNAT.
    pub to_destination: Option<String>,
    /// The line as read.
    pub line: String,
}

fn host(addr: &str) -> String {
    addr.strip_suffix("/32").unwrap_or(addr).to_string()
}

/// Reads one `-A` line; `None` for anything else.
pub fn parse_rule(line: &str) -> Option<Rule> {
    let w = ferry_proxy::iptables::split_args(line.trim());
    if w.first().map(String::as_str) != Some("-A") {
        return None;
    }
    let mut rule = Rule {
        chain: w.get(1)?.clone(),
        line: line.trim().to_string(),
        ..Rule::default()
    };
    let mut negate = false;
    let mut i = 2;
    while i < w.len() {
        let next = w.get(i + 1).cloned();
        match w[i].as_str() {
            "!" => {
                negate = true;
                i += 1;
                continue;
            }
            "-s" => {
                rule.source =
                    next.map(|s| format!("{}{}", if negate { "!" } else { "" }, host(&s)));
                i += 1;
            }
            "-d" => {
                rule.destination = next.map(|s| host(&s));
                i += 1;
            }
            "--dport" => {
                rule.dport = next.and_then(|p| p.parse().ok());
                i += 1;
            }
            "--probability" => {
                rule.probability = next.and_then(|p| p.parse().ok());
                i += 1;
            }
            "-j" => {
                rule.target = next.unwrap_or_default();
                i += 1;
            }
            "--to-destination" => {
                rule.to_destination = next;
                i += 1;
            }
            "--comment" | "-p" | "-m" | "--mode" | "--name" | "--seconds" | "--dst-type"
            | "--src-type" => i += 1,
            _ => {}
        }
        negate = false;
        i += 1;
    }
    Some(rule)
}

/// Every rule of an `iptables-save` text (or rendered rule lines).
pub fn parse_rules(text: &str) -> Vec<Rule> {
    text.lines().filter_map(parse_rule).collect()
}

/// Whether `kernel` is the rule `model` describes, probability aside.
pub fn same_rule(model: &Rule, kernel: &Rule) -> bool {
    model.chain == kernel.chain
        && model.target == kernel.target
        && model.destination == kernel.destination
        && model.dport == kernel.dport
        && model.source == kernel.source
        && model.to_destination == kernel.to_destination
}

/// Whether two probabilities are the same once iptables has stored them
/// (as a 32-bit fraction, printed with 11 decimals).
pub fn same_probability(a: Option<f64>, b: Option<f64>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => (a - b).abs() < 1e-6,
        _ => false,
    }
}

/// The rule in the few words a trace shows.
pub fn summary(r: &Rule) -> String {
    let mut s = format!("-A {}", r.chain);
    if let Some(src) = &r.source {
        match src.strip_prefix('!') {
            Some(s2) => s.push_str(&format!(" ! -s {s2}")),
            None => s.push_str(&format!(" -s {src}")),
        }
    }
    if let Some(d) = &r.destination {
        s.push_str(&format!(" -d {d}"));
    }
    if let Some(p) = r.dport {
        s.push_str(&format!(" --dport {p}"));
    }
    if let Some(p) = r.probability {
        s.push_str(&format!(" --probability {p:.11}"));
    }
    s.push_str(&format!(" -j {}", r.target));
    if let Some(t) = &r.to_destination {
        s.push_str(&format!(" --to-destination {t}"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_rule_and_a_rendered_rule_read_the_same() {
        let saved = parse_rule(r#"-A KUBE-SVC-4LFXAAP7ALRXDL3I -m comment --comment "demo/web -> 10.204.0.13:80" -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-OALS23FQATZ4JKLQ"#).unwrap();
        let rendered = parse_rule(r#"-A KUBE-SVC-4LFXAAP7ALRXDL3I -m comment --comment "demo/web -> 10.204.0.13:80" -m statistic --mode random --probability 0.3333333333 -j KUBE-SEP-OALS23FQATZ4JKLQ"#).unwrap();
        assert!(same_rule(&rendered, &saved));
        assert!(same_probability(rendered.probability, saved.probability));
        assert_eq!(saved.probability, Some(0.33333333349));
        let dnat = parse_rule("-A KUBE-SEP-X -p tcp -m comment --comment demo/web -m tcp -j DNAT --to-destination 10.204.0.13:80").unwrap();
        assert_eq!(dnat.target, "DNAT");
        assert_eq!(dnat.to_destination.as_deref(), Some("10.204.0.13:80"));
        let svc = parse_rule(r#"-A KUBE-SERVICES -d 172.16.255.220/32 -p tcp -m comment --comment "demo/web cluster IP" -m tcp --dport 80 -j KUBE-SVC-4LFXAAP7ALRXDL3I"#).unwrap();
        assert_eq!(svc.destination.as_deref(), Some("172.16.255.220"));
        assert_eq!(svc.dport, Some(80));
        let masq = parse_rule(r#"-A KUBE-SVC-X -d 172.16.255.220/32 -p tcp -m comment --comment "x" -m tcp --dport 80 ! -s 10.204.0.0/23 -j KUBE-MARK-MASQ"#).unwrap();
        assert_eq!(masq.source.as_deref(), Some("!10.204.0.0/23"));
    }

    #[test]
    fn a_different_probability_or_target_is_told_apart() {
        let a =
            parse_rule("-A C -m statistic --mode random --probability 0.5 -j KUBE-SEP-A").unwrap();
        let b =
            parse_rule("-A C -m statistic --mode random --probability 0.33 -j KUBE-SEP-A").unwrap();
        let c = parse_rule("-A C -j KUBE-SEP-B").unwrap();
        assert!(same_rule(&a, &b));
        assert!(!same_probability(a.probability, b.probability));
        assert!(!same_rule(&a, &c));
    }
}
