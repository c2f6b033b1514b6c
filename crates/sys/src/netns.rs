//! Entering a network namespace: `in_netns` runs a closure on a
//! short-lived thread that has joined `/run/netns/NAME`, so that sockets it
//! opens belong to that namespace for their whole life while the caller's
//! threads stay where they are. The one place ferry calls setns for that.

use std::os::fd::AsFd;

/// Runs `f` on a thread inside network namespace `name` and returns what
/// it returns.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    let target = std::fs::File::open(format!("/run/netns/{name}"))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // setns changes only this short-lived thread's namespace.
            nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
                .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
            Ok(f())
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("the setns thread panicked")))
    })
}
