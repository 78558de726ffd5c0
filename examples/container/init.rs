//! The container's init: the re-executed example (`/proc/self/exe init
//! …`), already in its new user, mount, PID, UTS and IPC namespaces, with
//! its id maps written by the parent.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::time::Duration;

use procsync::rustix::fs::{FileType, Mode, OFlags};
use procsync::rustix::mount::MountAttrFlags;
use procsync::schema::Mount;
use procsync::session::{Child, SeccompHandoff, SessionError};
use procsync::state::Flow;

use super::bundle::{Bundle, Step};
use super::rootfs;
use super::sys;
use super::timing::{Kind, Timeline};
use super::Options;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Runs the init; returns only on failure (success ends in `execve`).
pub fn run(opts: &Options, t0: u64) -> Res<()> {
    let mut tl = Timeline::new(t0);
    tl.mark(
        "init running (clone3, id maps, execveat of the init)",
        Kind::Work,
    );
    // SAFETY: the container's init, single-threaded at this point: the sync
    // fd was handed to it, and no other thread uses the environment.
    let mut child = unsafe { Child::from_env(Flow::Init) }?
        .with_deadline(Duration::from_secs(10))
        .with_observer(|t| super::common::print_traffic("init", t, 52));
    match setup(&mut child, opts, &mut tl) {
        Ok(mut cmd) => {
            // Closing the socket is the parent's cue that the container
            // runs (exec would close it too: it is close-on-exec).
            child.close()?;
            let program = cmd.get_program().to_owned();
            Err(format!("execve {program:?}: {}", cmd.exec()).into())
        }
        Err(e) => {
            // A refusal or any other Error from the parent ended the
            // conversation already; otherwise tell the parent why.
            let remote = matches!(
                e.downcast_ref::<SessionError>(),
                Some(SessionError::Remote { .. })
            );
            if !remote {
                let _ = child.fail(format!("init: {}", super::chain(&*e)));
            }
            Err(e)
        }
    }
}

/// Everything up to `execve`; returns the container's process, ready to exec.
fn setup(child: &mut Child, opts: &Options, tl: &mut Timeline) -> Res<std::process::Command> {
    let bundle = Bundle::load(&opts.bundle)?;
    // The clone child already became uid/gid 0 of the namespace; drop the
    // host's supplementary groups too (they are unmapped here).
    sys::set_ids(0, 0, &[])?;
    let root = rootfs_mount(&bundle)?;
    tl.mark("config.json read, rootfs bound on itself", Kind::Work);

    for step in &bundle.steps {
        match step {
            Step::Served(p) => {
                let src = child.mount_source(&p.request)?;
                tl.mark(
                    &format!("MountPlease {} → MountFd", p.destination),
                    Kind::Sync,
                );
                let mode = procsync::rustix::fs::fstat(&src.fd)?.st_mode;
                let dir = FileType::from_raw_mode(mode) == FileType::Directory;
                let dest = Path::new(&p.destination);
                drop(rootfs::make_in_root(root.as_fd(), dest, dir)?);
                let kind = src.kind.name();
                rootfs::attach_in_root(src, root.as_fd(), dest, p.recursive)?;
                apply_bind_flags(root.as_fd(), &p.request)?;
                out!("init:     attached {kind} source at {}", p.destination);
                tl.mark(&format!("attach {}", p.destination), Kind::Work);
            }
            Step::Fs(m) => {
                rootfs::mount_fs(root.as_fd(), m)?;
                out!("init:     mounted a new {} at {}", m.fstype, m.destination);
                tl.mark(
                    &format!("mount {} at {}", m.fstype, m.destination),
                    Kind::Work,
                );
            }
        }
    }
    if let Some(extra) = &opts.request_extra {
        // The hostile case: ask for a host path config.json does not name.
        let req = Mount::bind(extra.clone(), "/extra");
        out!("init:     (asks for {extra:?}, which config.json does not mount)");
        let src = child.mount_source(&req)?;
        return Err(format!("the parent served {extra:?} as fd {}", src.fd.as_raw_fd()).into());
    }
    rootfs::pivot(root.as_fd())?;
    drop(root);
    if let Some(h) = &bundle.hostname {
        sys::set_hostname(h)?;
    }
    out!(
        "init:     pivot_root into the rootfs, hostname {:?}",
        bundle.hostname.as_deref().unwrap_or("")
    );
    tl.mark("pivot_root, hostname", Kind::Work);

    child.hooks()?;
    tl.mark("Hooks → HooksDone", Kind::Sync);
    child.ready()?;
    tl.mark("Ready → Run", Kind::Sync);
    if opts.seccomp_notify {
        let listener = sys::seccomp_notify_mknodat()?;
        tl.mark("seccomp filter (mknodat → user notif)", Kind::Work);
        child.seccomp(SeccompHandoff::Attached(listener.as_fd()))?;
        drop(listener);
        tl.mark("Seccomp → SeccompDone", Kind::Sync);
    }
    let p = &bundle.process;
    sys::set_ids(p.uid, p.gid, &p.additional_gids)?;
    sys::cloexec_from_3().map_err(|e| format!("close_range(CLOSE_RANGE_CLOEXEC): {e}"))?;
    let mut cmd = std::process::Command::new(&p.args[0]);
    cmd.args(&p.args[1..]).env_clear().current_dir(&p.cwd);
    for kv in &p.env {
        let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
        cmd.env(k, v);
    }
    out!(
        "init:     execve {:?} as uid {} gid {} in {}",
        p.args,
        p.uid,
        p.gid,
        p.cwd
    );
    tl.mark("credentials", Kind::Work);
    if opts.timings {
        tl.print("init (ms since the parent's clone3)");
    }
    Ok(cmd)
}

/// Makes the rootfs a mount point (a bind onto itself) in a mount tree no
/// longer shared with the host (`/` recursively slave), and opens it.
fn rootfs_mount(bundle: &Bundle) -> Res<OwnedFd> {
    use procsync::rustix::mount::MountPropagationFlags as P;
    procsync::rustix::mount::mount_change("/", P::DOWNSTREAM | P::REC)
        .map_err(|e| format!("make / rslave: {e}"))?;
    procsync::rustix::mount::mount_bind_recursive(&bundle.rootfs, &bundle.rootfs)
        .map_err(|e| format!("bind {} onto itself: {e}", bundle.rootfs.display()))?;
    let fd = procsync::rustix::fs::open(
        &bundle.rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::empty(),
    )
    .map_err(|e| format!("open {}: {e}", bundle.rootfs.display()))?;
    Ok(fd)
}

/// The rest of a bind once it is attached (the attach only binds), as runc
/// does it: the request's `MS_*` flags and cleared flags on the top mount,
/// its recursive attributes (`rro`, `rnosuid`, …) on the whole tree, then
/// each propagation change in order. All with `mount_setattr(2)`, which
/// changes only the bits named (no remount that could drop locked flags).
fn apply_bind_flags(root: std::os::fd::BorrowedFd<'_>, m: &Mount) -> Res<()> {
    use procsync::schema::ms;
    const MAP: [(u64, MountAttrFlags); 5] = [
        (ms::RDONLY, MountAttrFlags::MOUNT_ATTR_RDONLY),
        (ms::NOSUID, MountAttrFlags::MOUNT_ATTR_NOSUID),
        (ms::NODEV, MountAttrFlags::MOUNT_ATTR_NODEV),
        (ms::NOEXEC, MountAttrFlags::MOUNT_ATTR_NOEXEC),
        (sys::MS_NOSYMFOLLOW, MountAttrFlags::MOUNT_ATTR_NOSYMFOLLOW),
    ];
    let attrs = |flags: u64| -> Res<u64> {
        let mut out = MountAttrFlags::empty();
        let mut left = flags & !(ms::BIND | ms::REC);
        for (flag, attr) in MAP {
            if flags & flag != 0 {
                out |= attr;
                left &= !flag;
            }
        }
        if left != 0 {
            return Err(format!(
                "{}: mount flags {left:#x} are not supported by this example",
                m.destination
            )
            .into());
        }
        Ok(out.bits().into())
    };
    let (set, clr) = (attrs(m.flags)?, attrs(m.cleared_flags)?);
    let rec = m.rec_attr.unwrap_or_default();
    if set == 0 && clr == 0 && rec == Default::default() && m.propagation_flags.is_empty() {
        return Ok(());
    }
    let fd = rootfs::open_in_root(root, Path::new(&m.destination))?;
    let setattr = |set, clr, propagation, recursive| {
        sys::mount_setattr(fd.as_fd(), set, clr, propagation, recursive)
            .map_err(|e| format!("mount_setattr on {}: {e}", m.destination))
    };
    if set != 0 || clr != 0 {
        setattr(set, clr, 0, false)?;
    }
    if rec.attr_set != 0 || rec.attr_clr != 0 || rec.propagation != 0 {
        setattr(rec.attr_set, rec.attr_clr, rec.propagation, true)?;
    }
    for &p in &m.propagation_flags {
        setattr(0, 0, p & !ms::REC, p & ms::REC != 0)?;
    }
    Ok(())
}
