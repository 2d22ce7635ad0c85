//! flock on the pin directory: serializes map writers across processes (the
//! agent, CLI invocations) so Config slot tables never interleave.
use std::{fs::File, io, os::fd::AsRawFd};

pub struct DirLock<'a> {
    dir: &'a File,
}

impl<'a> DirLock<'a> {
    /// For writers: one at a time, and no reader meanwhile.
    pub fn exclusive(dir: &'a File) -> io::Result<Self> {
        Self::take(dir, libc::LOCK_EX)
    }

    /// For readers that want a consistent view (listings): any number at
    /// once, never during a write.
    pub fn shared(dir: &'a File) -> io::Result<Self> {
        Self::take(dir, libc::LOCK_SH)
    }

    fn take(dir: &'a File, how: i32) -> io::Result<Self> {
        loop {
            // SAFETY: flock on an fd we own; no memory is passed.
            if unsafe { libc::flock(dir.as_raw_fd(), how) } == 0 {
                return Ok(DirLock { dir });
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    }
}

impl Drop for DirLock<'_> {
    fn drop(&mut self) {
        // SAFETY: as above. Closing the fd would also release the lock.
        unsafe { libc::flock(self.dir.as_raw_fd(), libc::LOCK_UN) };
    }
}

/// Opens a directory for locking (O_DIRECTORY: bpffs has no regular files).
pub fn open_dir(path: &std::path::Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(path)
}
