//! The scratch network namespaces of `ferry bench overlay`, all named
//! `ferry-bench-ov-*`, each deleted when its [`Netns`] guard drops (a
//! failed run included); and running code on a tokio runtime with a
//! netlink handle inside one of them. Touches the kernel (namespaces,
//! links, addresses through `ip`) and processes (`ip`).

use std::future::Future;

use anyhow::Context;
use ferry_sys::Tool;
use ferry_sys::netns::in_netns;

/// Every namespace of this bench starts with this.
pub(super) const PREFIX: &str = "ferry-bench-ov-";

/// A namespace this bench made; deleted on drop.
pub(super) struct Netns(pub(super) String);

impl Netns {
    /// `ferry-bench-ov-TAG`, made afresh (a leftover of a killed run is
    /// deleted first), with its loopback up.
    pub(super) fn new(tag: &str) -> anyhow::Result<Netns> {
        let name = format!("{PREFIX}{tag}");
        if std::path::Path::new("/run/netns").join(&name).exists() {
            let _ = Tool::new("ip").args(["netns", "del", &name]).output();
        }
        Tool::new("ip")
            .args(["netns", "add", &name])
            .run()
            .context("creating scratch network namespaces (root needed)")?;
        let ns = Netns(name);
        ns.ip("link set lo up")?;
        Ok(ns)
    }

    pub(super) fn name(&self) -> &str {
        &self.0
    }

    /// `ip -n NS REST...` (REST split on spaces).
    pub(super) fn ip(&self, rest: &str) -> anyhow::Result<()> {
        Tool::new("ip")
            .args(["-n", &self.0])
            .args(rest.split_whitespace())
            .run()?;
        Ok(())
    }

    /// A sysctl inside the namespace.
    pub(super) fn sysctl(&self, setting: &str) -> anyhow::Result<()> {
        Tool::new("sysctl")
            .netns(Some(&self.0))
            .args(["-qw", setting])
            .run()?;
        Ok(())
    }

    /// Runs `f(handle)` to completion on a one-thread runtime whose
    /// netlink socket lives in this namespace.
    pub(super) fn netlink<T, F, Fut>(&self, f: F) -> anyhow::Result<T>
    where
        T: Send,
        F: FnOnce(rtnetlink::Handle) -> Fut + Send,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        in_netns(&self.0, move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("starting a tokio runtime")?;
            rt.block_on(async move {
                let (conn, handle, _) =
                    rtnetlink::new_connection().context("opening a netlink socket")?;
                tokio::spawn(conn);
                f(handle).await
            })
        })
        .with_context(|| format!("netns {}", self.0))?
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Tool::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// A veth pair: `a_name` in `a`, `b_name` in `b`, both up.
pub(super) fn veth(a: &Netns, a_name: &str, b: &Netns, b_name: &str) -> anyhow::Result<()> {
    a.ip(&format!(
        "link add {a_name} type veth peer name {b_name} netns {}",
        b.name()
    ))?;
    a.ip(&format!("link set {a_name} up"))?;
    b.ip(&format!("link set {b_name} up"))
}
