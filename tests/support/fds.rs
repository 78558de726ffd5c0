//! This process's open fds, from `/proc/self/fd`.

/// Entries in `/proc/self/fd`, the listing's own fd included (consistently,
/// so two counts compare).
pub fn fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .count()
}

/// The fd numbers open in this process, sorted, without the listing's own
/// fd (closed once the listing is done, so its `/proc` link is gone).
pub fn open_fds() -> Vec<i32> {
    let names: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("/proc/self/fd")
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    let mut fds: Vec<i32> = names
        .into_iter()
        .filter(|n| std::fs::read_link(format!("/proc/self/fd/{n}")).is_ok())
        .collect();
    fds.sort_unstable();
    fds
}

/// The fds of this process that any child inherits (not close-on-exec, per
/// `/proc/self/fdinfo`): whatever the test runner itself was started with.
pub fn inheritable_fds() -> Vec<i32> {
    open_fds()
        .into_iter()
        .filter(|n| {
            let info =
                std::fs::read_to_string(format!("/proc/self/fdinfo/{n}")).unwrap_or_default();
            info.lines()
                .find_map(|l| l.strip_prefix("flags:"))
                .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
                .is_some_and(|flags| flags & libc::O_CLOEXEC as u32 == 0)
        })
        .collect()
}

/// Turns on the boolean `SOL_SOCKET` option `opt` (`SO_PASSCRED`,
/// `SO_PASSPIDFD`, `SO_TIMESTAMP`, …) of `sock`: how the tests make the
/// kernel add control messages to every record the socket receives.
pub fn enable_socket_option(sock: impl std::os::fd::AsFd, opt: libc::c_int) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let one: libc::c_int = 1;
    // SAFETY: setsockopt reads one c_int from `one`, which outlives the
    // call; `sock` is an open fd borrowed for the call.
    let r = unsafe {
        libc::setsockopt(
            sock.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            opt,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
