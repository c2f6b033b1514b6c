//! The iptables backend: kube-proxy's iptables mode, rule for rule.
//!
//! Every sync is one `iptables-restore -w 5 -W 100000 --noflush --counters`
//! (kube-proxy's flags). A full sync writes every chain; a partial sync
//! writes the shared chains whole and only the changed ServicePorts' own
//! chains, deleting the chains they no longer use (MinimizeIPTablesRestore).
//! A full sync runs at start, after a failure, when the large-cluster
//! threshold or the cluster CIDR changes, when the rules were removed from
//! outside, and at least once an hour.
//!
//! Kept for hosts without usable nftables and as the measured baseline:
//! its syncs grow with the cluster (the shared chains are rewritten each
//! time), and so does the first-packet cost (the kernel walks
//! `KUBE-SERVICES` rule by rule).

pub mod hash;
pub mod rules;

use ferry_sys::{Tool, ToolError};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ferry_model::ServicePortName;
use ipnet::IpNet;

use crate::plan::{Family, ProxyPlan};
use crate::{Backend, BackendError, SyncStats};
use rules::{KUBE_PROXY_CANARY, LARGE_CLUSTER_ENDPOINTS, Scope, ServiceRules, Settings};

/// kube-proxy's FullSyncPeriod.
const FULL_SYNC_PERIOD: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum IptablesError {
    #[error(transparent)]
    Run(ToolError),
    #[error("{tool} refused the input: {message}")]
    Refused { tool: String, message: String },
}

/// Which iptables: the host's default (`iptables`, an alternatives link),
/// or one of the two kernel interfaces by name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavor {
    System,
    Nft,
    Legacy,
}

impl std::str::FromStr for Flavor {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "system" | "" => Ok(Flavor::System),
            "nft" => Ok(Flavor::Nft),
            "legacy" => Ok(Flavor::Legacy),
            other => Err(format!(
                "{other:?}: iptables flavor is system, nft or legacy"
            )),
        }
    }
}

impl Flavor {
    /// `iptables`, `ip6tables-legacy`, ... for `family`, with `suffix`
    /// (`""`, `"-restore"`, `"-save"`).
    pub fn binary(self, family: Family, suffix: &str) -> String {
        let base = match family {
            Family::V4 => "iptables",
            Family::V6 => "ip6tables",
        };
        let flavor = match self {
            Flavor::System => "",
            Flavor::Nft => "-nft",
            Flavor::Legacy => "-legacy",
        };
        format!("{base}{flavor}{suffix}")
    }
}

pub struct IptablesBackend {
    family: Family,
    flavor: Flavor,
    netns: Option<String>,
    rendered: BTreeMap<ServicePortName, ServiceRules>,
    settings: Option<Settings>,
    endpoints: usize,
    loaded: bool,
    last_full: Option<Instant>,
    rules: usize,
}

/// Splits one rule into arguments (double quotes group words), as
/// iptables-restore reads them.
pub fn split_args(rule: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut any = false;
    for ch in rule.chars() {
        match ch {
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ' ' if !quoted => {
                if any {
                    out.push(std::mem::take(&mut cur));
                    any = false;
                }
            }
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any {
        out.push(cur);
    }
    out
}

impl IptablesBackend {
    pub fn new(family: Family, flavor: Flavor) -> Self {
        IptablesBackend {
            family,
            flavor,
            netns: None,
            rendered: BTreeMap::new(),
            settings: None,
            endpoints: 0,
            loaded: false,
            last_full: None,
            rules: 0,
        }
    }

    /// A backend that programs the tables of network namespace `netns`.
    pub fn in_netns(netns: &str, family: Family, flavor: Flavor) -> Self {
        IptablesBackend {
            netns: Some(netns.to_string()),
            ..Self::new(family, flavor)
        }
    }

    fn run(
        &self,
        suffix: &str,
        args: &[&str],
        input: Option<&str>,
    ) -> Result<String, IptablesError> {
        let tool = self.flavor.binary(self.family, suffix);
        let mut cmd = Tool::new(&tool)
            .args(args.iter().copied())
            .netns(self.netns.as_deref());
        if let Some(text) = input {
            cmd = cmd.stdin(text);
        }
        match cmd.run() {
            Ok(out) => Ok(out.stdout),
            Err(ToolError::Failed { stderr, .. }) => Err(IptablesError::Refused {
                tool,
                message: stderr,
            }),
            Err(other) => Err(IptablesError::Run(other)),
        }
    }

    fn restore(&self, text: &str) -> Result<(), IptablesError> {
        self.run(
            "-restore",
            &["-w", "5", "-W", "100000", "--noflush", "--counters"],
            Some(text),
        )
        .map(drop)
        .map_err(|e| match e {
            IptablesError::Refused { tool, message } => IptablesError::Refused {
                tool,
                message: with_failing_line(&message, text),
            },
            other => other,
        })
    }

    /// The per-Service chains now in the nat table (for stale-chain cleanup).
    fn existing_service_chains(&self) -> Option<BTreeSet<String>> {
        let save = self.run("-save", &["-t", "nat"], None).ok()?;
        Some(
            rules::saved_chains(&save)
                .into_iter()
                .filter(|c| rules::is_service_chain(c))
                .collect(),
        )
    }

    /// Adds the jumps from the built-in chains that are missing, at the top.
    fn ensure_jumps(&self) -> Result<(), IptablesError> {
        for (table, chain, rule) in rules::jumps() {
            let args = split_args(&rule);
            let mut check: Vec<&str> = vec!["-w", "5", "-t", table, "-C", chain];
            check.extend(args.iter().map(String::as_str));
            if self.run("", &check, None).is_ok() {
                continue;
            }
            let mut insert: Vec<&str> = vec!["-w", "5", "-t", table, "-I", chain];
            insert.extend(args.iter().map(String::as_str));
            self.run("", &insert, None)?;
        }
        Ok(())
    }

    fn settings_for(&self, cluster_cidrs: &[IpNet], endpoints: usize) -> Settings {
        Settings {
            family: self.family,
            local_cidr: rules::local_cidr(self.family, cluster_cidrs),
            large: endpoints > LARGE_CLUSTER_ENDPOINTS,
        }
    }

    fn count_rules(&self) -> usize {
        self.rendered
            .values()
            .map(|r| r.filter.len() + r.nat_shared.len() + r.chain_rules.len())
            .sum::<usize>()
            + 8
    }

    pub fn full_sync(
        &mut self,
        plan: &ProxyPlan,
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, IptablesError> {
        let start = Instant::now();
        self.loaded = false;
        let endpoints = plan
            .services
            .values()
            .map(|p| p.cluster_endpoints.len().max(p.external_endpoints.len()))
            .sum();
        let mut settings = self.settings_for(cluster_cidrs, endpoints);
        self.rendered = plan
            .services
            .iter()
            .map(|(name, p)| (name.clone(), rules::service(p, &settings)))
            .collect();
        // The threshold counts endpoint chains, known after rendering.
        let chains: usize = self.rendered.values().map(|r| r.endpoints).sum();
        if (chains > LARGE_CLUSTER_ENDPOINTS) != settings.large {
            settings.large = chains > LARGE_CLUSTER_ENDPOINTS;
            self.rendered = plan
                .services
                .iter()
                .map(|(name, p)| (name.clone(), rules::service(p, &settings)))
                .collect();
        }
        self.endpoints = chains;
        let active: BTreeSet<&String> = self.rendered.values().flat_map(|r| &r.chains).collect();
        let stale: BTreeSet<String> = self
            .existing_service_chains()
            .unwrap_or_default()
            .into_iter()
            .filter(|c| !active.contains(c))
            .collect();
        let text = rules::restore(self.family, &self.rendered, &Scope::Full, &stale);
        self.restore(&text)?;
        self.ensure_jumps()?;
        self.settings = Some(settings);
        self.loaded = true;
        self.last_full = Some(Instant::now());
        self.rules = self.count_rules();
        Ok(SyncStats {
            full: true,
            added: self.rules,
            deleted: stale.len(),
            took: start.elapsed(),
        })
    }

    pub fn sync(
        &mut self,
        plan: &ProxyPlan,
        changed: &[ServicePortName],
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, IptablesError> {
        let due = self
            .last_full
            .is_none_or(|t| t.elapsed() > FULL_SYNC_PERIOD);
        let Some(settings) = self.settings.clone() else {
            return self.full_sync(plan, cluster_cidrs);
        };
        if !self.loaded
            || due
            || rules::local_cidr(self.family, cluster_cidrs) != settings.local_cidr
        {
            return self.full_sync(plan, cluster_cidrs);
        }
        let start = Instant::now();
        let mut new: BTreeMap<ServicePortName, ServiceRules> = BTreeMap::new();
        for name in changed {
            let r = plan
                .services
                .get(name)
                .map(|p| rules::service(p, &settings))
                .unwrap_or_default();
            new.insert(name.clone(), r);
        }
        let endpoints = self.endpoints
            - new
                .keys()
                .filter_map(|n| self.rendered.get(n))
                .map(|r| r.endpoints)
                .sum::<usize>()
            + new.values().map(|r| r.endpoints).sum::<usize>();
        if (endpoints > LARGE_CLUSTER_ENDPOINTS) != settings.large {
            // Every endpoint rule changes form.
            return self.full_sync(plan, cluster_cidrs);
        }
        let mut stale: BTreeSet<String> = BTreeSet::new();
        for (name, r) in &new {
            if let Some(old) = self.rendered.get(name) {
                stale.extend(old.chains.iter().filter(|c| !r.chains.contains(c)).cloned());
            }
        }
        let (mut added, mut deleted) = (0, 0);
        for (name, r) in new {
            added += r.chain_rules.len();
            let before = if r == ServiceRules::default() {
                self.rendered.remove(&name)
            } else {
                self.rendered.insert(name, r)
            };
            deleted += before.map_or(0, |b| b.chain_rules.len());
        }
        let scope: BTreeSet<ServicePortName> = changed.iter().cloned().collect();
        let text = rules::restore(self.family, &self.rendered, &Scope::Changed(&scope), &stale);
        if let Err(e) = self.restore(&text) {
            // The kernel may differ from what we think: reload whole next time.
            self.loaded = false;
            return Err(e);
        }
        self.endpoints = self.rendered.values().map(|r| r.endpoints).sum();
        self.rules = self.count_rules();
        Ok(SyncStats {
            full: false,
            added,
            deleted,
            took: start.elapsed(),
        })
    }

    /// Whether kube-proxy's chains are still there: the canary chain of
    /// the nat and filter tables (kube-proxy's monitor) and the jump from
    /// nat PREROUTING (gone when the table is flushed).
    pub fn rules_intact(&self) -> bool {
        if !self.loaded {
            return false;
        }
        // Someone else holding the xtables lock says nothing about our
        // rules: only a refusal that is not about the lock counts.
        let ok = |r: Result<String, IptablesError>| match r {
            Ok(_) => true,
            Err(IptablesError::Refused { message, .. }) => message.contains("xtables lock"),
            Err(IptablesError::Run(_)) => false,
        };
        let canary = |table: &str| {
            ok(self.run("", &["-w", "5", "-t", table, "-S", KUBE_PROXY_CANARY], None))
        };
        let jump = rules::jumps()
            .into_iter()
            .find(|(t, c, _)| *t == "nat" && *c == "PREROUTING")
            .map(|(_, _, rule)| split_args(&rule))
            .unwrap_or_default();
        let mut check: Vec<&str> = vec!["-w", "5", "-t", "nat", "-C", "PREROUTING"];
        check.extend(jump.iter().map(String::as_str));
        canary("nat") && canary("filter") && ok(self.run("", &check, None))
    }

    /// Removes every kube-proxy-style rule and chain of `family` in the
    /// namespace `netns` (default: the current one; `ferry agent --cleanup`, and switching modes):
    /// the jumps from the built-in chains, then every `KUBE-` chain of the
    /// nat and filter tables. Nothing to remove is not an error.
    pub fn cleanup(
        family: Family,
        flavor: Flavor,
        netns: Option<&str>,
    ) -> Result<usize, IptablesError> {
        let b = match netns {
            Some(ns) => IptablesBackend::in_netns(ns, family, flavor),
            None => IptablesBackend::new(family, flavor),
        };
        let mut removed = 0;
        for (table, chain, rule) in rules::jumps() {
            let args = split_args(&rule);
            let mut delete: Vec<&str> = vec!["-w", "5", "-t", table, "-D", chain];
            delete.extend(args.iter().map(String::as_str));
            while b.run("", &delete, None).is_ok() {
                removed += 1;
            }
        }
        // Only the chains this mode makes: kubelet's (KUBE-FIREWALL,
        // KUBE-KUBELET-CANARY) and other tools' KUBE- chains stay.
        let mut chains: Vec<(&str, Vec<String>)> = Vec::new();
        for table in ["filter", "nat"] {
            let Ok(save) = b.run("-save", &["-t", table], None) else {
                continue;
            };
            let ours: Vec<String> = rules::saved_chains(&save)
                .into_iter()
                .filter(|c| {
                    rules::is_service_chain(c) || rules::TOP_LEVEL_CHAINS.contains(&c.as_str())
                })
                .collect();
            if !ours.is_empty() {
                chains.push((table, ours));
            }
        }
        let text = |skip: &[&str]| {
            let mut text = String::new();
            for (table, ours) in &chains {
                let ours: Vec<&String> = ours
                    .iter()
                    .filter(|c| !skip.contains(&c.as_str()))
                    .collect();
                text.push_str(&format!("*{table}\n"));
                for c in &ours {
                    text.push_str(&format!(":{c} - [0:0]\n"));
                }
                for c in &ours {
                    text.push_str(&format!("-X {c}\n"));
                }
                text.push_str("COMMIT\n");
            }
            text
        };
        if !chains.is_empty() {
            let all = text(&[]);
            if let Err(e) = b.run("-restore", &["-w", "5", "--noflush"], Some(&all)) {
                // Others may still jump to the masquerade chains (as older
                // kubelets do): remove the rest and leave those two.
                tracing::warn!(error = %e, "removing every iptables-mode chain failed; keeping KUBE-MARK-MASQ and KUBE-POSTROUTING");
                b.run(
                    "-restore",
                    &["-w", "5", "--noflush"],
                    Some(&text(&[rules::KUBE_MARK_MASQ, rules::KUBE_POSTROUTING])),
                )?;
            }
            removed += chains.iter().map(|(_, c)| c.len()).sum::<usize>();
        }
        Ok(removed)
    }

    /// Whether this namespace has iptables-mode rules of `family` (a
    /// `KUBE-SERVICES` or per-Service chain in nat): one `iptables-save`.
    pub fn present(family: Family, flavor: Flavor) -> bool {
        IptablesBackend::new(family, flavor)
            .run("-save", &["-t", "nat"], None)
            .is_ok_and(|save| {
                rules::saved_chains(&save)
                    .iter()
                    .any(|c| c == rules::KUBE_SERVICES || rules::is_service_chain(c))
            })
    }

    /// Rules programmed (filter and nat, shared and own chains).
    pub fn rules(&self) -> usize {
        self.rules
    }
}

/// iptables-restore names the failing line by number; show it.
fn with_failing_line(message: &str, input: &str) -> String {
    let line_no = message.split("line").nth(1).and_then(|rest| {
        rest.trim_start_matches(|c: char| !c.is_ascii_digit())
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|n| n.parse::<usize>().ok())
    });
    match line_no.and_then(|n| input.lines().nth(n.saturating_sub(1))) {
        Some(line) => format!("{message} (line: {line})"),
        None => message.to_string(),
    }
}

impl Backend for IptablesBackend {
    fn mode(&self) -> &'static str {
        "iptables"
    }

    fn full_sync(
        &mut self,
        plan: &ProxyPlan,
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, BackendError> {
        Ok(IptablesBackend::full_sync(self, plan, cluster_cidrs)?)
    }

    fn sync(
        &mut self,
        plan: &ProxyPlan,
        changed: &[ServicePortName],
        cluster_cidrs: &[IpNet],
    ) -> Result<SyncStats, BackendError> {
        Ok(IptablesBackend::sync(self, plan, changed, cluster_cidrs)?)
    }

    fn intact(&mut self) -> bool {
        self.rules_intact()
    }

    fn check_period(&self) -> Duration {
        // Each check runs iptables three times, and iptables-nft reads the
        // whole table each time: every 5 s (kube-proxy checks its canary
        // every 30 s, its sync period).
        Duration::from_secs(5)
    }

    fn size(&self) -> usize {
        self.rules
    }

    fn full_sync_due(&self) -> bool {
        self.last_full
            .is_some_and(|t| t.elapsed() > FULL_SYNC_PERIOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_split_into_arguments_keeping_quoted_words() {
        assert_eq!(
            split_args("-m comment --comment \"kubernetes service portals\" -j KUBE-SERVICES"),
            vec![
                "-m",
                "comment",
                "--comment",
                "kubernetes service portals",
                "-j",
                "KUBE-SERVICES"
            ]
        );
    }

    #[test]
    fn failing_lines_are_quoted_from_the_input() {
        let msg = "iptables-restore: line 3 failed";
        assert_eq!(
            with_failing_line(msg, "a\nb\n-A X -j Y\n"),
            "iptables-restore: line 3 failed (line: -A X -j Y)"
        );
    }
}
