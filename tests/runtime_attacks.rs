//! A hostile child against the parent's mount-fd service and the child-side
//! attach (issue 11, PROTOCOL.md §10 and §14): one test per attack, each run
//! as root in a private mount namespace (the test thread unshares; `/` is
//! made rprivate), the attacker a separate process (`fork`) that changes the
//! filesystem or its own mount namespace the way a compromised container
//! init could.
//!
//! The outcome is always the configured object — its dev/ino compared with
//! the fd served — or a typed error; nothing else is opened and no fd leaks.
//! Before issue 11 the service walked the path string at request time and
//! followed every symlink and magic link: each test below fails there (the
//! request-time assertions get the host root, the decoy or the parent's own
//! fd; the FIFO `userns_path` hangs).

mod runtime_common;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use procsync::policy::ConfiguredMounts;
use procsync::runtime::{
    attach_in_root, AttachErrorKind, MountFdErrorKind, MountFdService, MountSource, Symlinks,
    UsernsCache,
};
use procsync::schema::{IdMap, IdMapping, Mount, MountSourceKind};
use runtime_common::{private_mount_ns, root_or_skip, serial, settled_fd_count, Scratch};

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// `(st_dev, st_ino)` of a path (not following a final symlink).
fn id_of(p: &Path) -> (u64, u64) {
    let st = rustix::fs::lstat(p).expect("lstat");
    (st.st_dev, st.st_ino)
}

/// `(st_dev, st_ino)` of what an fd refers to (for an `open_tree` clone: the
/// root of the detached tree).
fn id_of_fd(fd: BorrowedFd<'_>) -> (u64, u64) {
    let st = rustix::fs::fstat(fd).expect("fstat");
    (st.st_dev, st.st_ino)
}

fn shift() -> IdMapping {
    let m = vec![IdMap::new(0, 100_000, 65_536)];
    IdMapping::ranges(m.clone(), m)
}

/// Runs `attack` in a forked process (only raw syscalls on data prepared
/// before the fork) and waits for it; panics if it failed.
fn as_attacker(attack: impl FnOnce() -> rustix::io::Result<()>) {
    // SAFETY: the child runs `attack`, which only makes rustix syscalls on
    // C strings built before the fork (no allocation, no locks), then
    // `_exit`s without running destructors or atexit handlers.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        let code = if attack().is_ok() { 0 } else { 1 };
        // SAFETY: ends the forked child at once.
        unsafe { libc::_exit(code) };
    }
    let mut status = 0;
    // SAFETY: waits for the child just forked; `status` is a valid out-pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "attacker failed: {status:#x}"
    );
}

/// The served source is the configured object: same dev/ino.
fn assert_configured(src: &MountSource, configured: (u64, u64), what: &str) {
    assert_eq!(
        id_of_fd(src.fd.as_fd()),
        configured,
        "{what}: served something other than the configured source"
    );
}

/// A configured source `vol/data` (plain and id-mapped), a decoy tree, and
/// the pinned service built before any attack.
struct Setup {
    s: Scratch,
    data: std::path::PathBuf,
    plain: Mount,
    mapped: Mount,
    configured: (u64, u64),
    pinned: MountFdService,
}

fn setup(tag: &str) -> Setup {
    let mut s = Scratch::new(tag);
    // tmpfs: supports id-mapped mounts on every kernel this runs on.
    let t = s.tmpfs("t");
    let data = t.join("vol/data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("marker"), "configured").unwrap();
    std::fs::create_dir_all(t.join("decoy/data")).unwrap();
    std::fs::write(t.join("decoy/data/marker"), "decoy").unwrap();
    let d = data.to_str().unwrap();
    let plain = Mount::bind(d, "/data");
    let mapped = Mount::bind(d, "/mapped").with_id_mapping(shift());
    let configured = id_of(&data);
    let pinned = MountFdService::pinned(&ConfiguredMounts::new([plain.clone(), mapped.clone()]))
        .expect("pin the configured sources");
    Setup {
        s,
        data,
        plain,
        mapped,
        configured,
        pinned,
    }
}

impl Setup {
    /// Both kinds from the pinned service are the configured object.
    fn check_pinned(&self) {
        let p = self.pinned.make_source(&self.plain).expect("plain source");
        assert_eq!(p.kind, MountSourceKind::PlainOpen);
        assert_configured(&p, self.configured, "pinned plain");
        let m = self
            .pinned
            .make_source(&self.mapped)
            .expect("id-mapped source");
        assert_eq!(m.kind, MountSourceKind::OpenTree);
        assert_configured(&m, self.configured, "pinned id-mapped");
    }

    /// A request-time service refuses with a typed error, or serves the
    /// configured object (never anything else).
    fn check_request_time(&self, svc: &MountFdService, expect: MountFdErrorKind) {
        for req in [&self.plain, &self.mapped] {
            match svc.make_source(req) {
                Ok(src) => panic!(
                    "request-time service served {:?} (configured {:?}) for {:?}",
                    id_of_fd(src.fd.as_fd()),
                    self.configured,
                    req.source
                ),
                Err(e) => assert_eq!(e.kind(), expect, "{e}: {:?}", std::error::Error::source(&e)),
            }
        }
    }
}

#[test]
fn final_component_symlink_swap() {
    if !root_or_skip("final-component symlink swap") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("final");
        let (data, moved) = (cstr(&st.data), cstr(&st.data.with_file_name("data.orig")));
        // The child swaps the configured directory for a symlink to the host root.
        as_attacker(|| {
            rustix::fs::rename(data.as_c_str(), moved.as_c_str())?;
            rustix::fs::symlink(c"/", data.as_c_str())
        });
        st.check_pinned();
        st.check_request_time(&MountFdService::new(), MountFdErrorKind::Symlink);
        st.check_request_time(
            &MountFdService::new().with_symlinks(Symlinks::FollowBeforeLast),
            MountFdErrorKind::Symlink,
        );
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

#[test]
fn intermediate_directory_swap() {
    if !root_or_skip("intermediate-directory swap") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("intermediate");
        let vol = st.data.parent().unwrap().to_path_buf();
        let decoy = vol.with_file_name("decoy");
        let (c_vol, c_moved, c_decoy) = (
            cstr(&vol),
            cstr(&vol.with_file_name("vol.orig")),
            cstr(&decoy),
        );
        // A directory above the source becomes a symlink to a decoy tree.
        as_attacker(|| {
            rustix::fs::rename(c_vol.as_c_str(), c_moved.as_c_str())?;
            rustix::fs::symlink(c_decoy.as_c_str(), c_vol.as_c_str())
        });
        st.check_pinned();
        st.check_request_time(&MountFdService::new(), MountFdErrorKind::Symlink);
        // ... and then a real directory renamed into its place: no symlink
        // left to refuse, yet the pinned service still serves the original.
        let c_decoy_moved = cstr(&decoy);
        as_attacker(|| {
            rustix::fs::unlink(c_vol.as_c_str())?;
            rustix::fs::rename(c_decoy_moved.as_c_str(), c_vol.as_c_str())
        });
        st.check_pinned();
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

#[test]
fn proc_magic_links_are_never_followed() {
    if !root_or_skip("magic links") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("magic");
        let vol = st.data.parent().unwrap().to_path_buf();
        // The parent holds an fd to the decoy tree (any fd it holds would do):
        // /proc/self/fd/N resolved by the parent is the parent's own fd.
        let decoy = rustix::fs::open(
            vol.with_file_name("decoy"),
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        let self_fd = CString::new(format!(
            "/proc/{}/fd/{}",
            std::process::id(),
            decoy.as_raw_fd()
        ))
        .unwrap();
        let (c_vol, c_moved) = (cstr(&vol), cstr(&vol.with_file_name("vol.orig")));
        as_attacker(|| {
            rustix::fs::rename(c_vol.as_c_str(), c_moved.as_c_str())?;
            rustix::fs::symlink(self_fd.as_c_str(), c_vol.as_c_str())
        });
        st.check_pinned();
        let follow = MountFdService::new().with_symlinks(Symlinks::FollowBeforeLast);
        st.check_request_time(&follow, MountFdErrorKind::Symlink);
        // /proc/<pid>/root of a process (here the parent itself, whose root
        // is the host's) — a magic link as well.
        let root_link = CString::new(format!("/proc/{}/root/", std::process::id())).unwrap();
        let c_vol2 = cstr(&vol);
        as_attacker(|| {
            rustix::fs::unlink(c_vol2.as_c_str())?;
            rustix::fs::symlink(root_link.as_c_str(), c_vol2.as_c_str())
        });
        st.check_pinned();
        st.check_request_time(&follow, MountFdErrorKind::Symlink);
        // A configured source that is itself a magic link is refused when pinned.
        let fd_path = format!("/proc/self/fd/{}", decoy.as_raw_fd());
        let e = MountFdService::pinned_with(
            &[Mount::bind(&fd_path, "/x")],
            Symlinks::FollowBeforeLast,
            Arc::default(),
        )
        .unwrap_err();
        assert_eq!(e.kind(), MountFdErrorKind::Pin, "{e}");
        assert_eq!(e.errno(), Some(libc::ELOOP), "{e}");
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

#[test]
fn swap_racing_the_requests() {
    if !root_or_skip("racing swap") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("race");
        let vol = st.data.parent().unwrap().to_path_buf();
        // Two things to exchange with the configured directory, atomically and
        // over and over: a symlink to / and a real decoy directory.
        let link = vol.join("link");
        std::os::unix::fs::symlink("/", &link).unwrap();
        let decoy = vol.join("decoy");
        std::fs::create_dir(&decoy).unwrap();
        let (c_data, c_link, c_decoy) = (cstr(&st.data), cstr(&link), cstr(&decoy));
        // SAFETY: as in `as_attacker`: raw syscalls on prepared C strings only.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            loop {
                for other in [&c_link, &c_decoy] {
                    let _ = rustix::fs::renameat_with(
                        rustix::fs::CWD,
                        c_data.as_c_str(),
                        rustix::fs::CWD,
                        other.as_c_str(),
                        rustix::fs::RenameFlags::EXCHANGE,
                    );
                }
            }
        }
        let request_time = MountFdService::new();
        let (mut pinned_ok, mut refused, mut configured_hits) = (0, 0, 0);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_millis(1500) {
            for req in [&st.plain, &st.mapped] {
                let src = st.pinned.make_source(req).expect("pinned source");
                assert_configured(&src, st.configured, "pinned, racing");
                pinned_ok += 1;
                // Request time: the configured object, a typed refusal, or
                // (the documented limit of request-time resolution) the real
                // directory swapped in — never the host root via the symlink.
                match request_time.make_source(req) {
                    Ok(src) => {
                        let got = id_of_fd(src.fd.as_fd());
                        assert_ne!(got, id_of(Path::new("/")), "request-time served /");
                        configured_hits += usize::from(got == st.configured);
                    }
                    Err(e) => {
                        assert!(
                            matches!(e.kind(), MountFdErrorKind::Symlink | MountFdErrorKind::Os),
                            "{e}"
                        );
                        refused += 1;
                    }
                }
            }
        }
        // SAFETY: kills and reaps the attacker forked above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        eprintln!(
            "racing swap: {pinned_ok} pinned sources all configured; request-time: \
             {configured_hits} configured, {refused} refused"
        );
        assert!(pinned_ok > 100, "too few requests to race: {pinned_ok}");
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

#[test]
fn bind_mount_over_the_source_in_the_container_namespace() {
    if !root_or_skip("bind over source in container ns") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("nsbind");
        let decoy = st.data.parent().unwrap().with_file_name("decoy");
        let (c_data, c_decoy) = (cstr(&st.data), cstr(&decoy));
        let (to_child_r, to_child_w) = rustix::pipe::pipe().unwrap();
        let (to_parent_r, to_parent_w) = rustix::pipe::pipe().unwrap();
        // SAFETY: the child makes raw syscalls only (unshare, mount, pipe
        // reads/writes on fds it inherited), then sleeps until killed.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let run = || -> rustix::io::Result<()> {
                // SAFETY: NEWNS does not touch the fd table.
                unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNS) }?;
                rustix::mount::mount_change(
                    c"/",
                    rustix::mount::MountPropagationFlags::PRIVATE
                        | rustix::mount::MountPropagationFlags::REC,
                )?;
                rustix::io::write(&to_parent_w, b"r")?;
                let mut b = [0u8; 1];
                rustix::io::read(&to_child_r, &mut b)?;
                // The attack: the child's own mount over the configured source.
                rustix::mount::mount_bind(c_decoy.as_c_str(), c_data.as_c_str())?;
                rustix::io::write(&to_parent_w, b"m")?;
                loop {
                    rustix::io::read(&to_child_r, &mut b)?;
                }
            };
            let _ = run();
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(1) };
        }
        drop((to_child_r, to_parent_w));
        let mut b = [0u8; 1];
        assert_eq!(rustix::io::read(&to_parent_r, &mut b).unwrap(), 1);
        let ns = format!("/proc/{pid}/ns/mnt");
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let pinned = MountFdService::in_mount_namespace_pinned(
                &ns,
                &[st.plain.clone(), st.mapped.clone()],
                Symlinks::Refuse,
                Arc::new(UsernsCache::new()),
            )
            .expect("pin inside the container's namespace");
            rustix::io::write(&to_child_w, b"g").unwrap();
            assert_eq!(rustix::io::read(&to_parent_r, &mut b).unwrap(), 1);
            assert_eq!(&b, b"m", "the attacker could not mount");
            // The child's namespace now shows the decoy at the source path...
            let request_time =
                MountFdService::in_mount_namespace(&ns, Arc::default()).expect("join");
            let seen = request_time.make_source(&st.plain).expect("request-time");
            assert_eq!(id_of_fd(seen.fd.as_fd()), id_of(&decoy));
            // ...but the pinned service serves what was configured.
            for req in [&st.plain, &st.mapped] {
                let src = pinned.make_source(req).expect("pinned source");
                assert_configured(&src, st.configured, "pinned in container ns");
            }
        }));
        // SAFETY: kills and reaps the child forked above.
        unsafe {
            libc::kill(pid, libc::SIGKILL);
            libc::waitpid(pid, std::ptr::null_mut(), 0);
        }
        if let Err(p) = result {
            std::panic::resume_unwind(p);
        }
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

#[test]
fn fifo_swapped_in_as_source() {
    if !root_or_skip("FIFO as source") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("fifo-src");
        let (data, moved) = (cstr(&st.data), cstr(&st.data.with_file_name("data.orig")));
        as_attacker(|| {
            rustix::fs::rename(data.as_c_str(), moved.as_c_str())?;
            rustix::fs::mknodat(
                rustix::fs::CWD,
                data.as_c_str(),
                rustix::fs::FileType::Fifo,
                rustix::fs::Mode::from_raw_mode(0o666),
                0,
            )
        });
        // Served from the pin, at once: the configured directory.
        st.check_pinned();
        // A configured FIFO is pinned and served (bind mounts take any file
        // type) without ever being opened for reading, so nothing blocks.
        let fifo = st.data.clone();
        let m = Mount::bind(fifo.to_str().unwrap(), "/fifo");
        let svc = MountFdService::pinned(&ConfiguredMounts::new([m.clone()])).unwrap();
        let src = svc.make_source(&m).expect("FIFO source");
        assert_eq!(id_of_fd(src.fd.as_fd()), id_of(&fifo));
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

/// Runs `f` on a thread; panics if it has not returned within `limit`
/// (the thread is then left behind: the point is that the test fails
/// rather than hangs).
fn within<T: Send + 'static>(limit: Duration, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(limit)
        .unwrap_or_else(|_| panic!("hung for more than {limit:?}"))
}

#[test]
fn fifo_as_userns_path_does_not_block() {
    if !root_or_skip("FIFO as userns_path") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("fifo-ns");
        let fifo = st.s.path.join("ns-fifo");
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o666),
            0,
        )
        .unwrap();
        let req = Mount::bind(st.data.to_str().unwrap(), "/m")
            .with_id_mapping(IdMapping::userns(fifo.to_str().unwrap()));
        let svc = Arc::new(MountFdService::pinned(&ConfiguredMounts::new([req.clone()])).unwrap());
        for deadline in [None, Some(Instant::now() + Duration::from_secs(2))] {
            let (svc, req) = (Arc::clone(&svc), req.clone());
            let e = within(Duration::from_secs(5), move || {
                svc.make_source_until(&req, deadline).map(drop)
            })
            .unwrap_err();
            assert_eq!(e.kind(), MountFdErrorKind::NotUserNamespace, "{e}");
        }
        // Not nsfs at all (a directory) and nsfs but not a user namespace.
        for path in [st.data.to_str().unwrap(), "/proc/self/ns/mnt"] {
            let req = Mount::bind(st.data.to_str().unwrap(), "/m")
                .with_id_mapping(IdMapping::userns(path));
            let svc = MountFdService::pinned(&ConfiguredMounts::new([req.clone()])).unwrap();
            let e = svc.make_source(&req).unwrap_err();
            assert_eq!(e.kind(), MountFdErrorKind::NotUserNamespace, "{path}: {e}");
        }
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

#[test]
fn destination_symlink_at_attach_stays_in_the_root() {
    if !root_or_skip("destination symlink") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("dest");
        let rootfs = st.s.dir("rootfs");
        let outside = st.s.dir("outside");
        std::fs::write(outside.join("host-file"), "host").unwrap();
        // The image (or a process in the container) planted links out of the root.
        let abs = rootfs.join("abs");
        std::os::unix::fs::symlink(&outside, &abs).unwrap();
        std::os::unix::fs::symlink("../../../../../../outside", rootfs.join("dotdot")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root/tmp", rootfs.join("magic")).unwrap();
        // Inside the root, the absolute link leads to rootfs/<outside>.
        let inside = rootfs.join(outside.strip_prefix("/").unwrap());
        std::fs::create_dir_all(&inside).unwrap();
        std::fs::create_dir_all(rootfs.join("outside")).unwrap();
        let root = rustix::fs::open(
            &rootfs,
            rustix::fs::OFlags::PATH | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        for (dest, lands) in [("/abs", inside.clone()), ("dotdot", rootfs.join("outside"))] {
            for req in [&st.plain, &st.mapped] {
                let src = st.pinned.make_source(req).unwrap();
                attach_in_root(src, root.as_fd(), Path::new(dest), false)
                    .unwrap_or_else(|e| panic!("attach at {dest}: {e}"));
                assert_eq!(
                    std::fs::read_to_string(lands.join("marker")).unwrap(),
                    "configured",
                    "{dest}: the mount is not inside the root"
                );
                assert!(
                    !outside.join("marker").exists(),
                    "{dest}: the mount escaped the root"
                );
                assert!(outside.join("host-file").exists());
                rustix::mount::unmount(&lands, rustix::mount::UnmountFlags::DETACH).unwrap();
            }
        }
        // A magic link in the destination is refused.
        let src = st.pinned.make_source(&st.plain).unwrap();
        let e = attach_in_root(src, root.as_fd(), Path::new("/magic"), false).unwrap_err();
        assert_eq!(e.kind(), AttachErrorKind::ResolveDestination, "{e}");
        // A missing destination: typed error, the source fd closed.
        let src = st.pinned.make_source(&st.mapped).unwrap();
        let e = attach_in_root(src, root.as_fd(), Path::new("/nope"), false).unwrap_err();
        assert_eq!(e.kind(), AttachErrorKind::ResolveDestination, "{e}");
        assert_eq!(e.origin(), procsync::Origin::Os);
        drop(root);
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

/// Pinning refuses what it cannot pin safely, before the child exists.
#[test]
fn pinning_refuses_symlinks_and_missing_sources() {
    if !root_or_skip("pin errors") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let s = Scratch::new("pin-errors");
        let dir = s.dir("real");
        let link = s.path.join("link");
        std::os::unix::fs::symlink(&dir, &link).unwrap();
        let linkdir = s.path.join("linkdir");
        std::os::unix::fs::symlink(&s.path, &linkdir).unwrap();
        let below = linkdir.join("real");
        for (path, symlinks, errno) in [
            (link.clone(), Symlinks::Refuse, libc::ELOOP),
            (link.clone(), Symlinks::FollowBeforeLast, libc::ELOOP),
            (below.clone(), Symlinks::Refuse, libc::ELOOP),
            (s.path.join("missing"), Symlinks::Refuse, libc::ENOENT),
        ] {
            let e = MountFdService::pinned_with(
                &[Mount::bind(path.to_str().unwrap(), "/x")],
                symlinks,
                Arc::default(),
            )
            .unwrap_err();
            assert_eq!(e.kind(), MountFdErrorKind::Pin, "{path:?}: {e}");
            assert_eq!(e.errno(), Some(errno), "{path:?}: {e}");
            assert_eq!(e.origin(), procsync::Origin::Local);
        }
        // A symlink before the last component, when allowed: pinned to the target.
        let svc = MountFdService::pinned_with(
            &[Mount::bind(below.to_str().unwrap(), "/x")],
            Symlinks::FollowBeforeLast,
            Arc::default(),
        )
        .unwrap();
        let pin = svc
            .pinned_sources()
            .unwrap()
            .get(below.to_str().unwrap())
            .unwrap();
        assert_eq!((pin.dev(), pin.ino()), id_of(&dir));
        assert!(pin.is_dir());
        // Only pinned sources are served; non-bind mounts are not pinned.
        let tmpfs = Mount {
            source: "tmpfs".into(),
            destination: "/run".into(),
            device: "tmpfs".into(),
            ..Default::default()
        };
        let svc = MountFdService::pinned(&ConfiguredMounts::new([
            tmpfs,
            Mount::bind(dir.to_str().unwrap(), "/x"),
        ]))
        .unwrap();
        assert_eq!(svc.pinned_sources().unwrap().len(), 1);
        let e = svc.make_source(&Mount::bind("/", "/x")).unwrap_err();
        assert_eq!(e.kind(), MountFdErrorKind::NotPinned, "{e}");
        assert_eq!(e.origin(), procsync::Origin::Peer);
        drop(svc);
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}

/// A parent that drops the id mapping it does not know — what an older runc
/// parent does with procsync's id-mapping keys — and answers an id-mapped
/// request with a plain source. The child must refuse it (the fd closed,
/// nothing attached), never mount the tree unmapped.
struct DropsIdMapping<'a>(&'a MountFdService);

impl procsync::session::ParentHandler for DropsIdMapping<'_> {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, procsync::session::HandlerError> {
        let mut plain = req.clone();
        plain.id_mapping = None;
        self.0
            .make_source(&plain)
            .map_err(|e| procsync::session::HandlerError::with_source("plain", e))
    }
}

#[test]
fn id_mapped_request_answered_plain_is_refused_by_the_child() {
    if !root_or_skip("id-mapped answered plain") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let st = setup("downgrade");
        let dst = st.s.dir("dst");
        let (psock, csock) = procsync::transport::SyncSocket::pair().unwrap();
        // The child: a separate process (fork), which attaches only what fits
        // its request and reports the outcome through its exit status.
        let mapped = st.mapped.clone();
        let c_dst = cstr(&dst);
        // SAFETY: the child runs one session request (it allocates; glibc's
        // malloc is fork-safe) on the socket it inherited, then `_exit`s.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            drop(psock);
            let count = runtime_common::fd_count;
            let mut child = procsync::session::Child::new(csock, procsync::state::Flow::Init)
                .with_deadline(Duration::from_secs(10));
            let before = count();
            let code = match child.mount_source(&mapped) {
                // Refused, the fd closed, nothing attached.
                Err(e) if e.kind() == procsync::session::SessionErrorKind::SourceDowngraded => {
                    if count() == before {
                        0
                    } else {
                        4
                    }
                }
                Err(_) => 2,
                Ok(src) => {
                    // What the old code did: attach the tree unmapped.
                    let _ =
                        procsync::runtime::attach(src, Path::new(c_dst.to_str().unwrap()), false);
                    3
                }
            };
            // SAFETY: ends the forked child.
            unsafe { libc::_exit(code) };
        }
        drop(csock);
        let r =
            procsync::session::Parent::new(psock, procsync::state::Flow::Init, [st.mapped.clone()])
                .with_deadline(Duration::from_secs(10))
                .serve(&mut DropsIdMapping(&st.pinned));
        let mut status = 0;
        // SAFETY: reaps the child forked above.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "child status {status:#x}");
        let code = libc::WEXITSTATUS(status);
        assert_eq!(
            code, 0,
            "the child did not refuse the plain source cleanly (2: another error, \
             3: it accepted and attached it, 4: an fd leaked)"
        );
        // The child closed without Ready: the parent's conversation failed.
        assert!(r.is_err());
        // Nothing was mounted on the destination.
        assert!(std::fs::read_dir(&dst).unwrap().next().is_none());
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
}
