//! Entering a network namespace, the one place ferry calls setns:
//! `in_netns` runs a closure on a short-lived thread that has joined
//! `/run/netns/NAME` (sockets it opens belong to that namespace for their
//! whole life, while the caller's threads stay where they are; or
//! `in_netns_path` for any namespace file, as CNI names them), and
//! `NsThread` keeps such a thread alive to run jobs one after another (the
//! lab's probes connect from a node's namespace, as kubelet would).

use std::os::fd::AsFd;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

/// Runs `f` on a thread inside network namespace `name` and returns what
/// it returns.
pub fn in_netns<T: Send>(name: &str, f: impl FnOnce() -> T + Send) -> std::io::Result<T> {
    in_netns_path(std::path::Path::new(&format!("/run/netns/{name}")), f)
}

/// `in_netns` for a namespace named by its path (`/run/netns/NAME`,
/// `/proc/PID/ns/net`), as CNI's CNI_NETNS names it.
pub fn in_netns_path<T: Send>(
    path: &std::path::Path,
    f: impl FnOnce() -> T + Send,
) -> std::io::Result<T> {
    let target = std::fs::File::open(path)?;
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

type Job = Box<dyn FnOnce() + Send>;

/// A thread switched into one network namespace, running jobs in order
/// until dropped (dropping waits for the job under way).
pub struct NsThread {
    jobs: Option<Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl NsThread {
    /// Starts a thread inside network namespace `name`.
    pub fn start(name: &str) -> std::io::Result<NsThread> {
        let target = std::fs::File::open(format!("/run/netns/{name}"))?;
        let (tx, rx) = channel::<Job>();
        let (ready_tx, ready_rx) = channel();
        let handle = std::thread::Builder::new()
            .name(format!("netns-{name}"))
            .spawn(move || {
                // setns changes only this thread's network namespace.
                let entered =
                    nix::sched::setns(target.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET);
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if !ok {
                    return;
                }
                for job in rx {
                    job();
                }
            })?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(NsThread {
                jobs: Some(tx),
                handle: Some(handle),
            }),
            Ok(Err(e)) => Err(std::io::Error::from_raw_os_error(e as i32)),
            Err(_) => Err(std::io::Error::other("the namespace thread ended")),
        }
    }

    /// Queues a job; false if the thread is gone.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) -> bool {
        self.jobs
            .as_ref()
            .is_some_and(|j| j.send(Box::new(job)).is_ok())
    }
}

impl Drop for NsThread {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}
