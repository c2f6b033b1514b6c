//! Kernel and process plumbing, in one place: which external programs
//! ferry starts (and which Debian package installs each), running one with
//! stdin, a deadline and its stderr kept, and the per-namespace lock that
//! keeps a node to one agent, entering a network namespace, the netfilter
//! netlink socket, a thread's scheduling class and core, and where a
//! memory-backed directory is. Nothing here knows what the programs or the
//! messages mean.

mod files;
mod listen;
mod lock;
pub mod netlink;
pub mod netns;
mod process;
mod sched;
pub mod testing;
mod tools;

pub use files::{memory_backed_dir, read_unless_being_written};
pub use listen::{free_loopback_port, grow_receive_buffer, reuseport_listeners};
pub use lock::{LockError, NodeLock};
pub use process::{Tool, ToolError, ToolOutput};
pub use sched::{run_on_core, yield_to_others};
pub use tools::{MissingProgram, PROGRAMS, Program, find_in_path, package_of, require};

/// The addresses of this network namespace's interfaces (for "is this
/// address the node's own?"); empty when they cannot be read.
pub fn local_addresses() -> std::collections::BTreeSet<std::net::IpAddr> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Default::default();
    };
    addrs
        .filter_map(|a| {
            let addr = a.address?;
            if let Some(v4) = addr.as_sockaddr_in() {
                Some(std::net::IpAddr::V4(v4.ip()))
            } else {
                addr.as_sockaddr_in6()
                    .map(|v6| std::net::IpAddr::V6(v6.ip()))
            }
        })
        .collect()
}

/// The IPv4 addresses of this network namespace's interfaces with their
/// prefix lengths, by interface name, in the kernel's order.
pub fn interface_ipv4_addresses() -> Vec<(String, std::net::Ipv4Addr, u8)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let mask = a.netmask?.as_sockaddr_in()?.ip();
            Some((a.interface_name, ip, u32::from(mask).leading_ones() as u8))
        })
        .collect()
}

/// Gives the C allocator's free memory back to the kernel (glibc's
/// `malloc_trim(0)`: the free top of every arena and whole free pages
/// inside them). A bulk load (the first state of a large cluster) frees
/// much of what it allocated, and glibc keeps that as RSS otherwise:
/// measured on an agent at 20,000 Services x 8 + 100,000 Pods, 930 ->
/// 842 MiB. Returns whether memory was released. Takes a few
/// milliseconds per 100 MiB of heap; the agent calls it once, after its
/// first state is applied everywhere.
pub fn release_free_memory() -> bool {
    unsafe extern "C" {
        fn malloc_trim(pad: usize) -> std::ffi::c_int;
    }
    // SAFETY: malloc_trim takes no pointers and only walks glibc's own
    // arenas under their locks; ferry links glibc on every target it builds.
    unsafe { malloc_trim(0) == 1 }
}

/// Caps glibc's allocator at `arenas` arenas (`mallopt(M_ARENA_MAX)`, as
/// the `MALLOC_ARENA_MAX` variable does), unless that variable or
/// `GLIBC_TUNABLES=glibc.malloc.arena_max=N` is set: the operator's choice
/// stands. glibc's default is eight per core; each
/// thread that allocates takes an arena of its own up to that cap and
/// keeps the memory it frees there, so a bulk load spread over the source,
/// proxy and DNS threads leaves free memory in each. Call before starting
/// threads: a thread keeps the arena it was given. Returns whether the cap
/// was set.
pub fn limit_malloc_arenas(arenas: usize) -> bool {
    let tunables = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
    if std::env::var_os("MALLOC_ARENA_MAX").is_some() || tunables.contains("arena_max") {
        return false;
    }
    const M_ARENA_MAX: std::ffi::c_int = -8;
    unsafe extern "C" {
        fn mallopt(param: std::ffi::c_int, value: std::ffi::c_int) -> std::ffi::c_int;
    }
    let value = std::ffi::c_int::try_from(arenas.max(1)).unwrap_or(std::ffi::c_int::MAX);
    // SAFETY: mallopt takes two integers and sets one of glibc's own
    // parameters under its lock.
    unsafe { mallopt(M_ARENA_MAX, value) == 1 }
}

/// What glibc's allocator holds, from `mallinfo2`: bytes handed out and
/// not freed (`in_use`, mmapped chunks included), and bytes free inside
/// its heaps that count as the process's RSS where touched (`free`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HeapUsage {
    pub in_use: usize,
    pub free: usize,
}

/// The allocator's figures now (all arenas; takes their locks briefly).
pub fn heap_usage() -> HeapUsage {
    #[repr(C)]
    #[derive(Default)]
    struct Mallinfo2 {
        arena: usize,
        ordblks: usize,
        smblks: usize,
        hblks: usize,
        hblkhd: usize,
        usmblks: usize,
        fsmblks: usize,
        uordblks: usize,
        fordblks: usize,
        keepcost: usize,
    }
    unsafe extern "C" {
        fn mallinfo2() -> Mallinfo2;
    }
    // SAFETY: mallinfo2 (glibc 2.33 and later) returns a struct by value
    // whose layout is ten size_t fields, as declared above.
    let m = unsafe { mallinfo2() };
    HeapUsage {
        in_use: m.uordblks + m.hblkhd,
        free: m.fordblks,
    }
}
