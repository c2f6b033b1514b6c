//! Threads that live inside a network namespace: the lab's probes and
//! health checks connect from a node's namespace, as kubelet would, and
//! never from the root namespace.

use std::fs::File;
use std::sync::mpsc::{Sender, channel};
use std::thread::JoinHandle;

use nix::sched::{CloneFlags, setns};

use crate::LabError;

type Job = Box<dyn FnOnce() + Send>;

/// A thread switched into one network namespace, running jobs in order.
pub(crate) struct NsThread {
    jobs: Option<Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

impl NsThread {
    pub(crate) fn start(ns: &str) -> Result<Self, LabError> {
        let path = format!("/run/netns/{ns}");
        let file = File::open(&path).map_err(LabError::io(&path))?;
        let (tx, rx) = channel::<Job>();
        let (ready_tx, ready_rx) = channel();
        let name = format!("netns-{ns}");
        let handle = std::thread::Builder::new()
            .name(name)
            .spawn(move || {
                // setns changes only this thread's network namespace.
                let entered = setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| e.to_string());
                let ok = entered.is_ok();
                let _ = ready_tx.send(entered);
                if !ok {
                    return;
                }
                for job in rx {
                    job();
                }
            })
            .map_err(LabError::io(&path))?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(NsThread {
                jobs: Some(tx),
                handle: Some(handle),
            }),
            Ok(Err(e)) => Err(LabError::Command {
                command: format!("setns {path}"),
                message: e,
            }),
            Err(_) => Err(LabError::Command {
                command: format!("setns {path}"),
                message: "thread ended".into(),
            }),
        }
    }

    /// Queues a job; false if the thread is gone.
    pub(crate) fn run(&self, job: impl FnOnce() + Send + 'static) -> bool {
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
