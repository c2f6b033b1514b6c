//! Process limits the agent sets at start: the open-files limit is raised
//! to its hard maximum, and the DNS server's caps are lowered to fit under
//! it if they must, so that the caps of the DNS and HTTP servers are what
//! bounds the agent, not EMFILE in the middle of a sync.

/// The soft RLIMIT_NOFILE after [`raise_nofile`].
pub(crate) fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) => {
            if soft < hard && setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() {
                tracing::debug!(from = soft, to = hard, "raised the open-files limit");
                return hard;
            }
            soft
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot read the open-files limit");
            0
        }
    }
}

/// Open files kept for everything but DNS connections: the HTTP servers
/// (256 connections each, at most), netlink sockets, tools' pipes, files.
const RESERVED: u64 = 1_024;

/// Lowers the DNS server's TCP connection and forwarding caps so that
/// they, plus [`RESERVED`], stay under the open-files limit `nofile`.
pub(crate) fn fit_dns_caps(dns: &mut ferry_dns::Config, nofile: u64) {
    let wanted = (dns.tcp_max_connections + dns.max_forwards) as u64;
    let budget = nofile.saturating_sub(RESERVED);
    if nofile == 0 || wanted <= budget {
        return;
    }
    let tcp = (budget * 3 / 4).max(16) as usize;
    let forwards = (budget / 4).max(16) as usize;
    tracing::warn!(
        nofile,
        tcp_max_connections = tcp,
        max_forwards = forwards,
        "the open-files limit is low: DNS caps lowered to fit under it"
    );
    dns.tcp_max_connections = tcp;
    dns.max_forwards = forwards;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_caps_fit_under_a_low_open_files_limit() {
        let mut c = ferry_dns::Config::default();
        fit_dns_caps(&mut c, 1_048_576);
        assert_eq!((c.tcp_max_connections, c.max_forwards), (1_000, 256));
        fit_dns_caps(&mut c, 2_048);
        assert!(c.tcp_max_connections + c.max_forwards + 1_024 <= 2_048);
    }
}
