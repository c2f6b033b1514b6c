//! Reading a file only when nobody is writing it. A read lease
//! (`F_SETLEASE`, `F_RDLCK`) is granted only while no process has the
//! file open for writing, and while it is held no writer can open it: the
//! read cannot see a half-written file, however the writer's events and
//! ours interleave. The lease lasts as long as one read. Also: where a
//! directory whose files live in memory is (`memory_backed_dir`).

use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Once;

/// The file's bytes, or `None` while a writer has it open (its close will
/// tell the watcher to read it again). Where leases are not available (a
/// file system without them, a file another user owns without
/// CAP_LEASE), the file is read as it is.
pub fn read_unless_being_written(path: &Path) -> std::io::Result<Option<Vec<u8>>> {
    ignore_lease_breaks();
    let mut file = std::fs::File::open(path)?;
    let fd = file.as_raw_fd();
    // SAFETY: fcntl on a descriptor this function owns, with integer
    // arguments only.
    let leased = unsafe { nix::libc::fcntl(fd, nix::libc::F_SETLEASE, nix::libc::F_RDLCK) };
    if leased != 0 {
        let err = std::io::Error::last_os_error();
        match err.raw_os_error() {
            Some(nix::libc::EAGAIN) | Some(nix::libc::EBUSY) => return Ok(None),
            // No leases here: read as it is.
            _ => {}
        }
    }
    let mut bytes = Vec::new();
    let read = file.read_to_end(&mut bytes);
    if leased == 0 {
        // SAFETY: as above; releasing the lease this function took.
        unsafe { nix::libc::fcntl(fd, nix::libc::F_SETLEASE, nix::libc::F_UNLCK) };
    }
    read?;
    Ok(Some(bytes))
}

/// A writer opening a leased file makes the kernel signal the holder
/// (SIGIO, whose default action ends the process). The lease is let go
/// right after the read, so the signal carries nothing to act on.
fn ignore_lease_breaks() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: setting a signal to SIG_IGN installs no handler code.
        unsafe {
            let _ = nix::sys::signal::signal(
                nix::sys::signal::Signal::SIGIO,
                nix::sys::signal::SigHandler::SigIgn,
            );
        }
    });
}

/// `/dev/shm` when it is a tmpfs (files there live in memory: no journal
/// and no writeback behind a write), as `/proc/self/mounts` says, with at
/// least `room` bytes free (a container's is often 64 MiB); else `None`.
pub fn memory_backed_dir(room: u64) -> Option<&'static Path> {
    let path = Path::new("/dev/shm");
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    let st = nix::sys::statvfs::statvfs(path).ok()?;
    let free = st.blocks_available() as u64 * st.fragment_size() as u64;
    (tmpfs_at(&mounts, "/dev/shm") && free >= room).then_some(path)
}

/// Whether `mounts` (as `/proc/self/mounts` lists them) has a tmpfs on
/// `point`; the last mount on a point is the one seen.
fn tmpfs_at(mounts: &str, point: &str) -> bool {
    mounts
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .rev()
        .find(|f| f.get(1) == Some(&point))
        .is_some_and(|f| f.get(2) == Some(&"tmpfs"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    #[test]
    fn a_file_open_for_writing_is_not_read_and_a_closed_one_is() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m.yaml");
        std::fs::write(&path, "complete\n").unwrap();
        assert_eq!(
            read_unless_being_written(&path).unwrap().as_deref(),
            Some(&b"complete\n"[..])
        );
        let mut w = std::fs::File::create(&path).unwrap();
        w.write_all(b"half").unwrap();
        assert_eq!(
            read_unless_being_written(&path).unwrap(),
            None,
            "being written"
        );
        drop(w);
        assert_eq!(
            read_unless_being_written(&path).unwrap().as_deref(),
            Some(&b"half"[..])
        );
    }

    #[test]
    fn only_a_tmpfs_on_the_point_counts_the_last_mount_winning() {
        let mounts = "proc /proc proc rw 0 0\n\
                      shm /dev/shm tmpfs rw,nosuid 0 0\n\
                      /dev/vda /tmp ext4 rw 0 0\n";
        assert!(tmpfs_at(mounts, "/dev/shm"));
        assert!(!tmpfs_at(mounts, "/tmp"), "ext4");
        assert!(!tmpfs_at(mounts, "/run"), "not mounted");
        let over = format!("{mounts}/dev/vdb /dev/shm ext4 rw 0 0\n");
        assert!(!tmpfs_at(&over, "/dev/shm"), "mounted over");
    }
}
