//! A thread's scheduling class, and the core it runs on.

/// Moves the calling thread to `SCHED_IDLE`: it runs only when no other
/// thread wants its core, and any thread that wakes up takes the core from
/// it at once (for background work beside threads whose latency counts;
/// on a core saturated by others it waits). Errors (a kernel without the
/// class) are returned and leave the thread as it was.
pub fn yield_to_others() -> std::io::Result<()> {
    let param = nix::libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` lives for the call and
    // SCHED_IDLE takes priority 0.
    let r = unsafe { nix::libc::sched_setscheduler(0, nix::libc::SCHED_IDLE, &param) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Keeps the calling thread on `core` from now on (for a bench's load
/// generators, kept off the cores whose latency they measure).
pub fn run_on_core(core: usize) -> nix::Result<()> {
    let mut set = nix::sched::CpuSet::new();
    set.set(core)?;
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set)
}

#[cfg(test)]
mod tests {
    use super::yield_to_others;

    #[test]
    fn the_thread_moves_to_the_idle_class() {
        std::thread::spawn(|| {
            yield_to_others().expect("SCHED_IDLE is allowed to any thread");
            // SAFETY: querying the calling thread's policy.
            let policy = unsafe { nix::libc::sched_getscheduler(0) };
            assert_eq!(policy, nix::libc::SCHED_IDLE);
        })
        .join()
        .unwrap();
        // SAFETY: as above, on the test's own thread, which did not move.
        assert_ne!(
            unsafe { nix::libc::sched_getscheduler(0) },
            nix::libc::SCHED_IDLE
        );
    }

    #[test]
    fn the_thread_stays_on_its_core() {
        std::thread::spawn(|| {
            let me = nix::unistd::Pid::from_raw(0);
            let allowed = nix::sched::sched_getaffinity(me).unwrap();
            let all = 0..nix::sched::CpuSet::count();
            let core = all.clone().find(|&c| allowed.is_set(c).unwrap()).unwrap();
            super::run_on_core(core).expect("a core the test may use");
            let set = nix::sched::sched_getaffinity(me).unwrap();
            assert!(all.filter(|&c| set.is_set(c).unwrap()).eq([core]));
        })
        .join()
        .unwrap();
    }
}
