//! Pipes for splicing.

use std::io;

/// A pipe for splicing, as large as the kernel allows up to
/// `capacity_bytes`. Returns (read end, write end, capacity).
///
/// F_SETPIPE_SZ refuses (EPERM) a size above /proc/sys/fs/pipe-max-size
/// (1 MiB by default) without CAP_SYS_RESOURCE, and a pipe left at its
/// default 64 KiB makes every splice move a sixteenth as much: so a refused
/// size is retried at that limit before the default is kept (fcntl(2),
/// pipe(7)).
pub fn splice_pipe(
    capacity_bytes: usize,
) -> io::Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd, usize)> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    let set = |bytes: usize| {
        let bytes = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_SETPIPE_SZ(bytes))
    };
    let pipe_max_bytes = || {
        std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
    };
    let size = set(capacity_bytes)
        .or_else(|e| match pipe_max_bytes() {
            Some(max) if max < capacity_bytes => set(max),
            _ => Err(e),
        })
        .or_else(|_| nix::fcntl::fcntl(&write, nix::fcntl::FcntlArg::F_GETPIPE_SZ))
        .map_err(io::Error::from)?;
    Ok((read, write, size as usize))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe for splicing gets the size asked for, or the most an
    /// unprivileged process may set (pipe-max-size), never the 64 KiB
    /// default a refused F_SETPIPE_SZ used to leave: the splice shipper
    /// moves one pipe-full per loop turn.
    #[test]
    fn a_splice_pipe_is_as_large_as_allowed() {
        let wanted = 2 << 20;
        let max: usize = std::fs::read_to_string("/proc/sys/fs/pipe-max-size")
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let (_read, _write, capacity) = splice_pipe(wanted).unwrap();
        assert!(
            capacity >= wanted.min(max),
            "pipe of {capacity} bytes; asked {wanted}, pipe-max-size {max}"
        );
    }
}
