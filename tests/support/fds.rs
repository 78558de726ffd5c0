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
