//! The overlay as an agent component: the node's part of the pod network,
//! what flanneld does on every node, on a thread of its own.
//!
//! 1. The first state names this Node and its `spec.podCIDR`.
//! 2. The underlay and public IP are chosen (`underlay`).
//! 3. The node takes its lease from the store (`store::acquire`: the
//!    podCIDR when set, else flannel's choice) and writes `subnet.env`.
//! 4. The backend is set up: VXLAN's `flannel.<VNI>` device with a MAC
//!    stable across restarts, or nothing for host-gw; masquerade and
//!    forwarding for the pod network (`masquerade`, nftables).
//! 5. Then, whenever the leases change (etcd's watch, or the file store read
//!    every poll), on every new state and every 5 s: the routes
//!    to the other subnets planned (`peers`, pure) and the difference
//!    programmed; the own lease is renewed well before it expires and taken
//!    again if it vanished. What it programmed is reported as applied.
//!
//! Touches the kernel (through `vxlan`, `underlay`, `masquerade`) and files
//! (the store, subnet.env).

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferry_model::{ClusterState, Kind, Object};
use ferry_source::Follower;
use ipnet::Ipv4Net;
use rtnetlink::Handle;
use tokio::sync::watch;

use crate::config::NetworkConfig;
use crate::etcd::{EtcdOptions, EtcdStore, PeerFollower};
use crate::kube_store::{KubeStore, NodeAnnotator};
use crate::lease::{BackendData, Lease, LeaseAttrs};
use crate::peers::{self, PeerRoute};
use crate::store::{FileStore, LEASE_TTL, LeaseStore, StoreError, acquire};
use crate::subnet_env::SubnetEnv;
use crate::underlay::{self, Underlay, UnderlayError};
use crate::vxlan::{self, DeviceSpec, VxlanDevice, VxlanError};

/// Where the leases live (`--lease-store`).
#[derive(Clone, Debug)]
pub enum StoreSpec {
    /// `file:DIR`: a directory shared by the nodes of one machine.
    File(PathBuf),
    /// `etcd:URL[,URL...]`: flannel's keys in etcd (`--etcd-prefix`).
    Etcd(EtcdOptions),
    /// `kube`: on the Nodes (podCIDR + flannel's annotations), with
    /// flannel's net-conf.json for the network config; needs the API
    /// source (its annotator writes the Node).
    Kube { net_conf: PathBuf },
}

impl FromStr for StoreSpec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.split_once(':') {
            Some(("file", dir)) if !dir.is_empty() => Ok(StoreSpec::File(dir.into())),
            Some(("etcd", urls)) if !urls.is_empty() => Ok(StoreSpec::Etcd(EtcdOptions::new(
                urls.split(',').map(str::to_string).collect(),
            ))),
            None if s == "kube" => Ok(StoreSpec::Kube {
                net_conf: DEFAULT_NET_CONF.into(),
            }),
            _ => Err(format!(
                "{s:?}: a lease store is file:DIR, etcd:http://HOST:2379[,...] or kube"
            )),
        }
    }
}

/// flanneld's `--net-config-path` default (the kube-flannel-cfg ConfigMap).
pub const DEFAULT_NET_CONF: &str = "/etc/kube-flannel/net-conf.json";

/// The API source's Node writer, for the Kubernetes lease store.
#[derive(Clone)]
pub struct Annotator(pub Arc<dyn NodeAnnotator>);

impl std::fmt::Debug for Annotator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Annotator")
    }
}

/// The component's settings (flanneld's flags where they exist).
#[derive(Clone, Debug)]
pub struct OverlayConfig {
    pub node: String,
    pub store: StoreSpec,
    /// `--iface`: an interface name or address; default: the default route's.
    pub iface: Option<String>,
    /// `--public-ip`: what peers send to; default: the interface's address.
    pub public_ip: Option<Ipv4Addr>,
    /// flannel's `/run/flannel/subnet.env`.
    pub subnet_file: PathBuf,
    /// `--ip-masq`: masquerade pod traffic leaving the pod network.
    pub ip_masq: bool,
    /// How often the leases are read again.
    pub poll: Duration,
    /// Writes this Node's annotations (the Kubernetes lease store only).
    pub annotator: Option<Annotator>,
}

#[derive(Debug, thiserror::Error)]
pub enum OverlayError {
    #[error("Node {0} is not in the cluster state (is --node right?)")]
    NoNode(String),
    #[error("Node {node}: spec.podCIDR {cidr:?} is not an IPv4 CIDR")]
    BadPodCidr { node: String, cidr: String },
    #[error(transparent)]
    Underlay(#[from] UnderlayError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Kernel(#[from] VxlanError),
    #[error("{path}: {source}")]
    SubnetFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("masquerade rules: {0}")]
    Masquerade(#[from] ferry_sys::ToolError),
    #[error("backend {0:?}: ferry supports vxlan and host-gw")]
    Backend(String),
    #[error("the overlay's thread: {0}")]
    Thread(String),
    #[error(
        "--lease-store kube needs the Kubernetes API source (--source kube): leases live on the Nodes"
    )]
    NoAnnotator,
}

/// A started overlay.
pub struct OverlayHandle {
    /// The state version whose leases are programmed (None until the
    /// lease is taken and the backend set up).
    pub applied: watch::Receiver<Option<u64>>,
}

/// The Node's podCIDR (IPv4), if it has one.
pub fn node_pod_cidr(state: &ClusterState, node: &str) -> Result<Option<Ipv4Net>, OverlayError> {
    let found = state.objects_of(Kind::Node).find_map(|o| match o {
        Object::Node(n) if n.metadata.name.as_deref() == Some(node) => Some(n.clone()),
        _ => None,
    });
    let Some(n) = found else {
        return Err(OverlayError::NoNode(node.to_string()));
    };
    let Some(spec) = n.spec.as_ref() else {
        return Ok(None);
    };
    let cidrs = spec
        .pod_cidrs
        .iter()
        .flatten()
        .chain(spec.pod_cidr.iter())
        .cloned();
    for cidr in cidrs {
        match cidr.parse::<Ipv4Net>() {
            Ok(net) => return Ok(Some(net.trunc())),
            // An IPv6 podCIDR of a dual-stack node: the IPv4 one is ours.
            Err(_) if cidr.contains(':') => continue,
            Err(_) => {
                return Err(OverlayError::BadPodCidr {
                    node: node.to_string(),
                    cidr,
                });
            }
        }
    }
    Ok(None)
}

fn open_store(
    config: &OverlayConfig,
    state: &Arc<Mutex<ClusterState>>,
) -> Result<Box<dyn LeaseStore + Send>, OverlayError> {
    Ok(match &config.store {
        StoreSpec::File(dir) => Box::new(FileStore::new(dir)),
        StoreSpec::Etcd(options) => Box::new(EtcdStore::new(options)?),
        StoreSpec::Kube { net_conf } => Box::new(KubeStore {
            node: config.node.clone(),
            net_conf: net_conf.clone(),
            annotator: config
                .annotator
                .as_ref()
                .map(|a| a.0.clone())
                .ok_or(OverlayError::NoAnnotator)?,
            state: state.clone(),
        }),
    })
}

/// Follows the store's leases on a thread of its own and publishes the
/// whole set when it changes: etcd by its watch (a request waits up to
/// 10 s for a change), the file store by reading it every `poll`.
/// The publisher for leases read from the cluster state (the Kubernetes
/// store): the component sends each new state's Node leases.
type StateLeases = Option<watch::Sender<Option<Vec<Lease>>>>;

/// The leases as they change (None until first read).
type LeaseFeed = watch::Receiver<Option<Vec<Lease>>>;

fn follow_leases(
    spec: &StoreSpec,
    poll: Duration,
) -> Result<(LeaseFeed, StateLeases), OverlayError> {
    let (tx, rx) = watch::channel(None);
    let publish = move |tx: &watch::Sender<Option<Vec<Lease>>>, leases: Vec<Lease>| {
        tx.send_if_modified(|old| {
            if old.as_ref() == Some(&leases) {
                false
            } else {
                *old = Some(leases);
                true
            }
        });
    };
    match spec {
        StoreSpec::File(dir) => {
            let store = FileStore::new(dir);
            std::thread::Builder::new()
                .name("leases".into())
                .spawn(move || {
                    while !tx.is_closed() {
                        match store.leases() {
                            Ok(l) => publish(&tx, l),
                            Err(e) => {
                                tracing::warn!(error = %e, "pod network: cannot read the leases")
                            }
                        }
                        std::thread::sleep(poll);
                    }
                })
                .map_err(|e| OverlayError::Thread(e.to_string()))?;
        }
        StoreSpec::Etcd(options) => {
            let store = EtcdStore::new(options)?;
            std::thread::Builder::new()
                .name("leases".into())
                .spawn(move || {
                    let mut follower: Option<PeerFollower> = None;
                    while !tx.is_closed() {
                        let result = match follower.as_mut() {
                            None => PeerFollower::start(&store).map(|f| {
                                follower = Some(f);
                            }),
                            Some(f) => f.next(&store, Duration::from_secs(10)).map(drop),
                        };
                        match result {
                            Ok(()) => {
                                if let Some(f) = &follower {
                                    publish(&tx, f.leases().collect());
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "pod network: cannot follow the leases in etcd; trying again in 2 s");
                                std::thread::sleep(Duration::from_secs(2));
                            }
                        }
                    }
                })
                .map_err(|e| OverlayError::Thread(e.to_string()))?;
        }
        StoreSpec::Kube { .. } => return Ok((rx, Some(tx))),
    }
    Ok((rx, None))
}

fn write_subnet_env(path: &PathBuf, env: &SubnetEnv) -> Result<(), OverlayError> {
    let err = |source| OverlayError::SubnetFile {
        path: path.clone(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let tmp = path.with_extension("env.tmp");
    std::fs::write(&tmp, env.render()).map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

/// Everything set up at start, then kept.
struct Node {
    config: OverlayConfig,
    network: NetworkConfig,
    store: Box<dyn LeaseStore + Send>,
    underlay: Underlay,
    device: Option<VxlanDevice>,
    lease: Lease,
    pod_cidr: Option<Ipv4Net>,
    programmed: BTreeMap<Ipv4Net, PeerRoute>,
    renewed: Instant,
    reported_skips: Vec<(Ipv4Net, String)>,
    forward_checked: Option<Instant>,
    /// Peer routes found at start (an earlier run's), swept once the
    /// first leases are known: a node removed while this agent was down
    /// leaves nothing behind.
    leftovers: Option<Leftovers>,
    /// The newest state, for the Kubernetes lease store.
    state: Arc<Mutex<ClusterState>>,
}

/// What an earlier run programmed, found at start.
struct Leftovers {
    /// Routes: destination and gateway.
    routes: Vec<(Ipv4Net, Option<Ipv4Addr>)>,
    /// FDB entries on the VXLAN device: VTEP MAC and remote IP.
    fdb: Vec<([u8; 6], Ipv4Addr)>,
}

/// How often the iptables FORWARD policy is looked at again (flannel: 5 s).
const FORWARD_CHECK: Duration = Duration::from_secs(5);

async fn set_up(
    config: OverlayConfig,
    handle: &Handle,
    state: &ClusterState,
) -> Result<Node, OverlayError> {
    let pod_cidr = node_pod_cidr(state, &config.node)?;
    let shared_state = Arc::new(Mutex::new(state.clone()));
    let store = open_store(&config, &shared_state)?;
    let network = store.config()?;
    let kind = network.backend.kind.as_str();
    if kind != peers::VXLAN && kind != peers::HOST_GW {
        return Err(OverlayError::Backend(kind.to_string()));
    }
    let underlay = underlay::choose(handle, config.iface.as_deref(), config.public_ip).await?;
    let mac = vxlan::stable_mac(&config.node, network.backend.vni);
    let attrs = LeaseAttrs {
        public_ip: underlay.public_ip,
        backend_type: kind.to_string(),
        backend_data: (kind == peers::VXLAN).then(|| BackendData {
            vni: network.backend.vni,
            vtep_mac: vxlan::format_mac(&mac),
        }),
    };
    let previous = std::fs::read_to_string(&config.subnet_file)
        .ok()
        .and_then(|t| SubnetEnv::parse(&t))
        .map(|e| e.subnet);
    let lease = acquire(store.as_ref(), &attrs, pod_cidr, previous, random_below)?;
    let mtu = if kind == peers::VXLAN {
        underlay.mtu.saturating_sub(vxlan::ENCAP_OVERHEAD)
    } else {
        underlay.mtu
    };
    write_subnet_env(
        &config.subnet_file,
        &SubnetEnv {
            network: network.network,
            subnet: lease.subnet,
            mtu,
            ip_masq: config.ip_masq,
        },
    )?;
    let device_existed = vxlan::link_index(handle, &format!("flannel.{}", network.backend.vni))
        .await?
        .is_some();
    let device = if kind == peers::VXLAN {
        Some(
            vxlan::ensure_device(
                handle,
                &DeviceSpec {
                    vni: network.backend.vni,
                    port: network.vxlan_port(),
                    underlay_index: underlay.index,
                    local_ip: underlay.public_ip,
                    underlay_mtu: underlay.mtu,
                    mac,
                    subnet: lease.subnet,
                },
            )
            .await?,
        )
    } else {
        None
    };
    if config.ip_masq {
        crate::masquerade::apply(network.network, lease.subnet, None)?;
    }
    tracing::info!(
        node = %config.node,
        subnet = %lease.subnet,
        backend = kind,
        underlay = %underlay.name,
        public_ip = %underlay.public_ip,
        mtu,
        "pod network: lease taken, backend ready"
    );
    // What an earlier run programmed: routes on the device (VXLAN) or
    // via peers on the underlay into the pod network (host-gw, DirectRouting).
    let mut leftovers = Leftovers {
        routes: Vec::new(),
        fdb: Vec::new(),
    };
    if let Some(dev) = device.as_ref().filter(|_| device_existed) {
        leftovers
            .routes
            .extend(underlay::routes_via(handle, dev.index).await?);
        leftovers.fdb = vxlan::fdb_entries(handle, dev).await?;
    }
    leftovers.routes.extend(
        underlay::routes_via(handle, underlay.index)
            .await?
            .into_iter()
            .filter(|(net, gw)| {
                gw.is_some() && network.network.contains(net) && *net != lease.subnet
            }),
    );
    Ok(Node {
        state: shared_state,
        leftovers: Some(leftovers),
        config,
        network,
        store,
        underlay,
        device,
        lease,
        pod_cidr,
        programmed: BTreeMap::new(),
        renewed: Instant::now(),
        reported_skips: Vec::new(),
        forward_checked: None,
    })
}

fn random_below(n: usize) -> usize {
    let mut b = [0u8; 8];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        return 0;
    }
    (u64::from_le_bytes(b) % n.max(1) as u64) as usize
}

impl Node {
    /// Reads the leases and programs the difference.
    async fn sync(&mut self, handle: &Handle, leases: &[Lease]) -> Result<(), OverlayError> {
        if self
            .forward_checked
            .is_none_or(|at| at.elapsed() >= FORWARD_CHECK)
        {
            self.forward_checked = Some(Instant::now());
            match crate::forward::ensure(self.network.network) {
                Ok(backends) if !backends.is_empty() => {
                    tracing::debug!(?backends, "pod network forwarded despite a DROP policy")
                }
                Ok(_) => {}
                Err(e) => tracing::error!(error = %e, "cannot accept the pod network in FORWARD"),
            }
        }
        let own_held = leases
            .iter()
            .any(|l| l.subnet == self.lease.subnet && l.attrs == self.lease.attrs);
        if !own_held {
            tracing::warn!(subnet = %self.lease.subnet, "own lease gone; taking it again");
            let lease = acquire(
                self.store.as_ref(),
                &self.lease.attrs,
                self.pod_cidr,
                Some(self.lease.subnet),
                random_below,
            )?;
            if lease.subnet != self.lease.subnet {
                tracing::error!(old = %self.lease.subnet, new = %lease.subnet, "the node's subnet changed: pods keep their old addresses until they are recreated; restart the agent");
            }
            self.lease = lease;
            self.renewed = Instant::now();
        } else if self.renewed.elapsed() >= LEASE_TTL / 2 {
            self.store.renew(&self.lease, LEASE_TTL)?;
            self.renewed = Instant::now();
        }
        let wanted = peers::desired(
            &self.lease,
            leases,
            &self.network.backend,
            self.underlay.address.trunc(),
        );
        if wanted.skipped != self.reported_skips {
            for (subnet, why) in &wanted.skipped {
                tracing::warn!(%subnet, "peer skipped: {why}");
            }
            self.reported_skips = wanted.skipped.clone();
        }
        if let Some(leftovers) = self.leftovers.take() {
            self.sweep(handle, leftovers, &wanted.routes).await;
        }
        let (remove, add) = peers::diff(&self.programmed, &wanted.routes);
        for (subnet, route) in remove {
            self.unprogram(handle, subnet, &route).await?;
            self.programmed.remove(&subnet);
            tracing::info!(%subnet, "peer removed");
        }
        // Tunnel peers in one pipelined netlink batch (a node joining a
        // 1,000-node cluster programs them all at once), plain routes one
        // by one.
        let tunnels: Vec<Lease> = add
            .iter()
            .filter_map(|(_, r)| match r {
                PeerRoute::Tunnel(lease) => Some(lease.clone()),
                PeerRoute::Direct { .. } => None,
            })
            .collect();
        if let Some(first) = tunnels.first() {
            vxlan::add_peers(handle, self.device(first.subnet)?, &tunnels).await?;
        }
        for (subnet, route) in add {
            if let PeerRoute::Direct { via } = route {
                underlay::add_route(handle, &self.underlay, subnet, via).await?;
            }
            tracing::info!(%subnet, route = ?route, "peer added");
            self.programmed.insert(subnet, route);
        }
        Ok(())
    }

    /// Removes an earlier run's routes (and VXLAN neighbours) to subnets
    /// no lease holds now; the wanted ones are programmed over anyway.
    async fn sweep(
        &self,
        handle: &Handle,
        leftovers: Leftovers,
        wanted: &BTreeMap<Ipv4Net, PeerRoute>,
    ) {
        if let Some(dev) = &self.device {
            let wanted_macs: Vec<[u8; 6]> = wanted
                .values()
                .filter_map(|r| match r {
                    PeerRoute::Tunnel(lease) => lease
                        .attrs
                        .backend_data
                        .as_ref()
                        .and_then(|d| vxlan::parse_mac(&d.vtep_mac)),
                    PeerRoute::Direct { .. } => None,
                })
                .collect();
            for (mac, dst) in leftovers.fdb {
                if wanted_macs.contains(&mac) {
                    continue;
                }
                match vxlan::remove_fdb(handle, dev, mac, dst).await {
                    Ok(()) => {
                        tracing::info!(mac = %vxlan::format_mac(&mac), %dst, "stale FDB entry removed (its lease is gone)")
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot remove a stale FDB entry"),
                }
            }
        }
        for (subnet, gateway) in leftovers.routes {
            if wanted.contains_key(&subnet) || subnet == self.lease.subnet {
                continue;
            }
            let result = match (&self.device, gateway) {
                (Some(dev), Some(gw)) if gw == subnet.network() => {
                    vxlan::remove_stale(handle, dev, subnet).await
                }
                (_, Some(via)) => underlay::remove_route(handle, &self.underlay, subnet, via).await,
                _ => Ok(()),
            };
            match result {
                Ok(()) => tracing::info!(%subnet, "stale peer route removed (its lease is gone)"),
                Err(e) => tracing::warn!(%subnet, error = %e, "cannot remove a stale peer route"),
            }
        }
    }

    fn device(&self, subnet: Ipv4Net) -> Result<&VxlanDevice, OverlayError> {
        self.device.as_ref().ok_or_else(|| {
            OverlayError::Kernel(VxlanError::Lease {
                subnet,
                why: "a tunnel peer without a VXLAN device".into(),
            })
        })
    }

    async fn unprogram(
        &self,
        handle: &Handle,
        subnet: Ipv4Net,
        route: &PeerRoute,
    ) -> Result<(), OverlayError> {
        match route {
            PeerRoute::Tunnel(lease) => {
                vxlan::remove_peer(handle, self.device(subnet)?, lease).await?
            }
            PeerRoute::Direct { via } => {
                underlay::remove_route(handle, &self.underlay, subnet, *via).await?
            }
        }
        Ok(())
    }
}

/// Sets up until it works: waits for this Node to appear in the state (as
/// flanneld waits for its Node), and retries other failures every few
/// seconds (logged), following the source meanwhile.
async fn set_up_when_possible(
    config: &OverlayConfig,
    handle: &Handle,
    follower: &mut Follower,
) -> Option<(Node, u64)> {
    let mut state = follower.next().await?;
    let mut waiting_logged = false;
    loop {
        match set_up(config.clone(), handle, &state.state).await {
            Ok(node) => return Some((node, state.state.version())),
            Err(OverlayError::NoNode(name)) => {
                if !waiting_logged {
                    tracing::info!(node = %name, "pod network: waiting for the Node to appear");
                    waiting_logged = true;
                }
                state = follower.next().await?;
            }
            Err(e) => {
                tracing::error!(error = %e, "pod network: cannot set up; trying again in 5 s");
                tokio::select! {
                    next = follower.next() => state = next?,
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        }
    }
}

/// Starts the overlay on a thread of its own. It reports a state version
/// as applied once the lease is taken, the backend set up and the peers
/// of that version programmed.
pub fn start(config: OverlayConfig, mut follower: Follower) -> Result<OverlayHandle, OverlayError> {
    let (applied_tx, applied) = watch::channel(None::<u64>);
    std::thread::Builder::new()
        .name("overlay".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    tracing::error!(error = %e, "pod network: no runtime; the overlay is off");
                    return;
                }
            };
            rt.block_on(async move {
                let (conn, handle, _) = match rtnetlink::new_connection() {
                    Ok(c) => c,
                    Err(e) => {
                        tracing::error!(error = %e, "pod network: no netlink socket; the overlay is off");
                        return;
                    }
                };
                tokio::spawn(conn);
                let poll = config.poll;
                let Some((mut node, mut version)) =
                    set_up_when_possible(&config, &handle, &mut follower).await
                else {
                    return;
                };
                let (mut leases, from_state) = match follow_leases(&config.store, poll) {
                    Ok(pair) => pair,
                    Err(e) => {
                        tracing::error!(error = %e, "pod network: cannot follow the leases; the overlay is off");
                        return;
                    }
                };
                if let Some(tx) = &from_state {
                    let state = node.state.lock().unwrap_or_else(|p| p.into_inner()).clone();
                    tx.send_replace(Some(crate::kube::node_leases(&state)));
                }
                // Renewal and the FORWARD check are due on this clock too.
                let mut ticker = tokio::time::interval(FORWARD_CHECK);
                loop {
                    let current = leases.borrow_and_update().clone();
                    if let Some(current) = current {
                        match node.sync(&handle, &current).await {
                            Ok(()) => {
                                applied_tx.send_replace(Some(version));
                            }
                            Err(e) => tracing::error!(error = %e, "pod network: sync failed; trying again"),
                        }
                    }
                    tokio::select! {
                        changed = leases.changed() => if changed.is_err() { return },
                        next = follower.next() => match next {
                            Some(s) => {
                                version = s.state.version();
                                *node.state.lock().unwrap_or_else(|p| p.into_inner()) = s.state.clone();
                                if let Some(tx) = &from_state {
                                    tx.send_replace(Some(crate::kube::node_leases(&s.state)));
                                }
                                if let Ok(cidr) = node_pod_cidr(&s.state, &node.config.node)
                                    && cidr.is_some()
                                    && cidr != node.pod_cidr
                                {
                                    tracing::warn!(old = ?node.pod_cidr, new = ?cidr, "the Node's podCIDR changed; the lease follows it after a restart, as flannel's does");
                                }
                            }
                            None => return,
                        },
                        _ = ticker.tick() => {}
                    }
                }
            });
        })
        .map_err(|e| OverlayError::Thread(e.to_string()))?;
    Ok(OverlayHandle { applied })
}

/// `ferry agent --cleanup`: removes the overlay's VXLAN devices
/// (`flannel.*`), its masquerade table and its FORWARD chain; says what
/// it removed and what failed.
pub fn cleanup() -> (Vec<String>, Vec<String>) {
    let (mut done, mut errors) = (Vec::new(), Vec::new());
    match ferry_sys::Tool::new("ip")
        .args(["-o", "link", "show", "type", "vxlan"])
        .run()
    {
        Ok(out) => {
            for name in out
                .stdout
                .lines()
                .filter_map(|l| l.split(": ").nth(1))
                .map(|n| n.split('@').next().unwrap_or(n))
                .filter(|n| n.starts_with("flannel."))
            {
                match ferry_sys::Tool::new("ip").args(["link", "del", name]).run() {
                    Ok(_) => done.push(format!("the pod network's device {name}")),
                    Err(e) => errors.push(e.to_string()),
                }
            }
        }
        Err(e) => errors.push(e.to_string()),
    }
    match crate::masquerade::remove() {
        Ok(true) => done.push(format!("nftables table ip {}", crate::masquerade::TABLE)),
        Ok(false) => {}
        Err(e) => errors.push(e.to_string()),
    }
    match crate::forward::remove() {
        Ok(backends) => done.extend(
            backends
                .into_iter()
                .map(|b| format!("{b} chain {}", crate::forward::CHAIN)),
        ),
        Err(e) => errors.push(e.to_string()),
    }
    (done, errors)
}
