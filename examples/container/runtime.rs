//! The parent: the runtime that spawns the init into new namespaces, writes
//! its id maps and serves its mount sources over the sync socket.

use std::ffi::{CString, OsString};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use procsync::oci::oci_spec::runtime::LinuxNamespaceType;
use procsync::runtime::{MountFdService, Symlinks};
use procsync::rustix::fs::{Mode, OFlags};
use procsync::schema::{IdMap, MessageType, Mount};
use procsync::session::{HandlerError, MountSource, Parent, ParentHandler, SeccompFd};
use procsync::state::{Direction, Flow};
use procsync::transport::{SyncSocket, ENV_SYNC_FD};

use super::bundle::{Bundle, Step};
use super::common::{fd_target, print_traffic};
use super::sys::{self, monotonic_ns, ExecPlan};
use super::Options;

type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// How long the parent waits for each message from the init.
const DEADLINE: Duration = Duration::from_secs(10);

/// How long a failed start waits for the init to report and exit before
/// killing it.
const GRACE: Duration = Duration::from_secs(5);

/// Starts the container in `opts.bundle`; the exit code is the container
/// process's (128 + signal if it was killed), or 1 if the start failed.
pub fn run(opts: &Options) -> Res<ExitCode> {
    let bundle = Bundle::load(&opts.bundle)?;
    let flags = clone_flags(&bundle)?;
    header(&bundle);
    let fds_before = open_fds()?;

    let exe = procsync::rustix::fs::open(
        "/proc/self/exe",
        OFlags::RDONLY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let (sock, child_end) = SyncSocket::pair()?;
    let (go_read, go_write) =
        procsync::rustix::pipe::pipe_with(procsync::rustix::pipe::PipeFlags::CLOEXEC)?;
    // Every timing is relative to this: just before the clone.
    let t0 = monotonic_ns();
    let plan = exec_plan(opts, t0, child_end.as_raw_fd())?;
    let spawned = sys::spawn_init(
        flags,
        exe.as_fd(),
        &plan,
        go_read.as_fd(),
        go_write.as_fd(),
        child_end.as_raw_fd(),
    )?;
    let t_clone = monotonic_ns();
    drop((child_end, go_read, exe));
    out!(
        "parent:   clone3({}) → init, host pid {}",
        bundle
            .namespaces
            .iter()
            .map(|n| n.to_string())
            .collect::<Vec<_>>()
            .join("|"),
        spawned.pid
    );
    // Until the go byte is written, the init waits; dropping `go_write`
    // without it makes the init exit 126.
    write_id_maps(spawned.pid, &bundle)?;
    let t_maps = monotonic_ns();
    // The mount-fd service is ready before the init runs a single
    // instruction of its own.
    let service = mount_service(spawned.pid, &bundle)?;
    let t_service = monotonic_ns();
    out!(
        "parent:   pinned {} configured bind sources in the init's mount namespace, before the init runs",
        service.pinned_sources().map_or(0, |p| p.len())
    );
    procsync::rustix::io::write(&go_write, &[1])?;
    drop(go_write);

    let events: Arc<Mutex<Vec<(Direction, MessageType, u64)>>> = Default::default();
    let seen = Arc::clone(&events);
    let mut parent = Parent::new(sock, Flow::Init, bundle.requests())
        .with_policy(bundle.policy())
        .with_peer_pidfd(spawned.pidfd.try_clone()?)?
        .with_deadline(DEADLINE)
        .with_observer(move |t| {
            let ty = t.msg.kind().unwrap_or(MessageType::Unspecified);
            seen.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((t.direction, ty, monotonic_ns()));
            print_traffic("parent", t, 52);
        });
    let mut handler = Runtime {
        service: &service,
        served: Vec::new(),
    };
    let outcome = parent.serve(&mut handler);
    drop(parent);
    let served = std::mem::take(&mut handler.served);
    drop(service);
    // No more user namespaces to make: stop the pre-spawned helpers the
    // id-mapped sources started (they hold a pidfd each).
    procsync::runtime::userns::drain();
    for p in bundle.served() {
        if !served.contains(&p.request) {
            out!(
                "parent:   configured but never requested: {} -> {}",
                p.request.source,
                p.destination
            );
        }
    }

    let started = match &outcome {
        Ok(report) => {
            out!(
                "parent:   the container runs: served {} of {} configured mounts, hooks {}, seccomp fd {}",
                report.mounts,
                bundle.served().len(),
                yes(report.hooks),
                if report.seccomp { "taken" } else { "not used" }
            );
            true
        }
        Err(e) => {
            out!("parent:   start failed: {}", super::chain(e));
            false
        }
    };
    let status = wait_exit(&spawned.pidfd, !started)?;
    drop(spawned);
    out!("parent:   container exited: {status}");
    out!(
        "parent:   open fds: {fds_before} before the start, {} after",
        open_fds()?
    );
    if opts.timings {
        parent_timings(t0, t_clone, t_maps, t_service, &events);
    }
    if !started {
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::from(status.code()))
}

/// How many fds this process has open (`/proc/self/fd`, minus the one
/// reading it): the parent must end with what it started with.
fn open_fds() -> Res<usize> {
    Ok(std::fs::read_dir("/proc/self/fd")?
        .count()
        .saturating_sub(1))
}

/// What the parent prints before it starts.
fn header(bundle: &Bundle) {
    out!("procsync container: bundle {}", bundle.dir.display());
    out!(
        "    rootfs {}, process {:?}, hostname {:?}",
        bundle.rootfs.display(),
        bundle.process.args,
        bundle.hostname.as_deref().unwrap_or("")
    );
    out!(
        "    uid map {}; gid map {}",
        maps(bundle.uid_mappings()),
        maps(bundle.gid_mappings())
    );
    out!("bind mounts the parent serves (each once, nothing else):");
    for p in bundle.served() {
        let i = p.index;
        let idmap = match &p.request.id_mapping {
            Some(m) => format!(
                " id-mapped uid {} gid {}",
                maps(&m.uid_mappings),
                maps(&m.gid_mappings)
            ),
            None => String::new(),
        };
        out!(
            "    mounts[{i}] {} -> {}{idmap}",
            p.request.source,
            p.destination
        );
    }
    out!("mounts the init makes itself:");
    for s in &bundle.steps {
        if let Step::Fs(m) = s {
            out!("    mounts[{}] {} at {}", m.index, m.fstype, m.destination);
        }
    }
}

fn maps(m: &[IdMap]) -> String {
    if m.is_empty() {
        return "(none)".into();
    }
    m.iter()
        .map(|m| format!("{}→{}×{}", m.container_id, m.host_id, m.size))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The `clone3` namespace flags from `linux.namespaces`; the example needs
/// at least a user and a mount namespace (the init attaches host sources
/// from inside them).
fn clone_flags(bundle: &Bundle) -> Res<u64> {
    let mut flags = 0u64;
    for &ns in &bundle.namespaces {
        flags |= sys::clone_flag(ns)
            .ok_or_else(|| format!("namespace {ns:?} is not supported by this example"))?;
    }
    let needed = sys::clone_flag(LinuxNamespaceType::User).unwrap_or(0)
        | sys::clone_flag(LinuxNamespaceType::Mount).unwrap_or(0);
    if flags & needed != needed {
        return Err("config.json must ask for a user and a mount namespace".into());
    }
    if bundle.uid_mappings().is_empty() || bundle.gid_mappings().is_empty() {
        return Err("config.json must give linux.uidMappings and linux.gidMappings".into());
    }
    Ok(flags)
}

/// argv and envp of the init: this program again, role `init`, with the
/// sync socket's number in `PROCSYNC_SYNC_FD`.
fn exec_plan(opts: &Options, t0: u64, sync_fd: i32) -> Res<ExecPlan> {
    let mut args: Vec<OsString> = vec!["procsync-init".into(), "init".into()];
    args.push("--t0".into());
    args.push(t0.to_string().into());
    args.extend(opts.flags().into_iter().map(OsString::from));
    args.push(opts.bundle.clone().into_os_string());
    let mut env: Vec<OsString> = std::env::vars_os()
        .filter(|(k, _)| k != ENV_SYNC_FD)
        .map(|(mut k, v)| {
            k.push("=");
            k.push(v);
            k
        })
        .collect();
    env.push(format!("{ENV_SYNC_FD}={sync_fd}").into());
    let c = |v: Vec<OsString>| -> Res<Vec<CString>> {
        v.into_iter()
            .map(|s| CString::new(s.into_vec()).map_err(|e| e.into()))
            .collect()
    };
    Ok(ExecPlan::new(c(args)?, c(env)?))
}

/// Writes `/proc/<pid>/uid_map` and `gid_map` from `linux.uidMappings` and
/// `gidMappings`. `setgroups` stays `allow`: this parent is root, so the
/// kernel does not require `deny`, and the init needs `setgroups(2)` to
/// drop the host's supplementary groups and set `additionalGids` (runc
/// writes `deny` only for rootless containers).
fn write_id_maps(pid: i32, bundle: &Bundle) -> Res<()> {
    let text = |m: &[IdMap]| {
        m.iter()
            .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
            .collect::<String>()
    };
    for (file, m) in [
        ("uid_map", bundle.uid_mappings()),
        ("gid_map", bundle.gid_mappings()),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text(m)).map_err(|e| format!("write {path}: {e}"))?;
        out!("parent:   wrote {path}: {}", maps(m));
    }
    Ok(())
}

/// The mount-fd service: a worker in the init's mount namespace (where a
/// plain `O_PATH` source must live for the init to bind it) pins every
/// configured bind source now, while the init still waits for its go byte
/// and has run nothing of its own; requests are served from the pins, so
/// nothing the init does to those paths later changes what it gets.
/// Symlinks before the last component of a configured source are followed
/// (host layouts such as `/var/run -> /run`; `config.json` is trusted, and
/// no container process exists yet), magic links and a symlink as the
/// source itself are refused.
fn mount_service(pid: i32, bundle: &Bundle) -> Res<MountFdService> {
    Ok(MountFdService::in_mount_namespace_pinned(
        format!("/proc/{pid}/ns/mnt"),
        &bundle.requests(),
        Symlinks::FollowBeforeLast,
        Default::default(),
    )?)
}

/// The parent's handler: mounts go to the service (after the session's
/// policy allowed them), the rest is reported.
struct Runtime<'s> {
    service: &'s MountFdService,
    served: Vec<Mount>,
}

impl ParentHandler for Runtime<'_> {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        let src = self
            .service
            .make_source(req)
            .map_err(|e| HandlerError::with_source("cannot make the mount source", e))?;
        out!(
            "parent:   served {} -> {} as {} (fd {} -> {})",
            req.source,
            req.destination,
            src.kind.name(),
            src.fd.as_raw_fd(),
            fd_target(src.fd.as_fd())
        );
        self.served.push(req.clone());
        Ok(src)
    }

    fn hooks(&mut self) -> Result<(), HandlerError> {
        out!("parent:   (prestart hooks would run here: the container's namespaces exist, the process has not started)");
        Ok(())
    }

    fn ready(&mut self) -> Result<(), HandlerError> {
        out!("parent:   init is set up; Run");
        Ok(())
    }

    fn seccomp(&mut self, fd: SeccompFd<'_>) -> Result<(), HandlerError> {
        let fd: OwnedFd = fd.into_owned()?;
        out!(
            "parent:   took the seccomp notify fd {} ({}); no agent here, so it is closed and the container's mknodat fails with ENOSYS",
            fd.as_raw_fd(),
            fd_target(fd.as_fd())
        );
        Ok(())
    }
}

/// How the container's process ended.
#[derive(Debug, Clone, Copy)]
enum Status {
    Exited(i32),
    Signaled(i32),
}

impl Status {
    fn code(self) -> u8 {
        match self {
            Status::Exited(c) => c as u8,
            Status::Signaled(s) => 128u8.wrapping_add(s as u8),
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Exited(c) => write!(f, "status {c}"),
            Status::Signaled(s) => write!(f, "killed by signal {s}"),
        }
    }
}

/// Waits for the init (by then the container's process) to exit. After a
/// failed start it gets [`GRACE`] to report and exit, then SIGKILL.
fn wait_exit(pidfd: &OwnedFd, failed: bool) -> Res<Status> {
    use procsync::rustix::event::{poll, PollFd, PollFlags, Timespec};
    if failed {
        let mut fds = [PollFd::new(pidfd, PollFlags::IN)];
        let limit = Timespec {
            tv_sec: GRACE.as_secs() as _,
            tv_nsec: 0,
        };
        if poll(&mut fds, Some(&limit))? == 0 {
            out!("parent:   init still running after {GRACE:?}: SIGKILL");
            procsync::rustix::process::pidfd_send_signal(
                pidfd,
                procsync::rustix::process::Signal::KILL,
            )?;
        }
    }
    let st = procsync::rustix::process::waitid(
        procsync::rustix::process::WaitId::PidFd(pidfd.as_fd()),
        procsync::rustix::process::WaitIdOptions::EXITED,
    )?
    .ok_or("waitid returned no status")?;
    if let Some(sig) = st.terminating_signal() {
        return Ok(Status::Signaled(sig));
    }
    Ok(Status::Exited(st.exit_status().unwrap_or(0)))
}

/// The parent's side of `--timings`: its own steps, and how long it took
/// to answer each request (request received → reply sent).
fn parent_timings(
    t0: u64,
    t_clone: u64,
    t_maps: u64,
    t_service: u64,
    events: &Mutex<Vec<(Direction, MessageType, u64)>>,
) {
    let ms = |ns: u64| ns as f64 / 1e6;
    out!("timings, parent (ms since clone3):");
    for (label, at) in [
        ("clone3 returned", t_clone),
        ("id maps written", t_maps),
        (
            "sources pinned in the init's mount ns; init released",
            t_service,
        ),
    ] {
        out!("    {label:<56} {:>8.3}", ms(at - t0));
    }
    let events = events.lock().unwrap_or_else(|p| p.into_inner());
    let mut handled = 0;
    let mut pending: Option<(MessageType, u64)> = None;
    for &(dir, ty, at) in events.iter() {
        match (dir, pending) {
            (Direction::Recv, _) if ty.is_request() => pending = Some((ty, at)),
            (Direction::Send, Some((req, since))) => {
                out!(
                    "    {:<12} answered in {:>8.3} (received at {:.3})",
                    req.name(),
                    ms(at - since),
                    ms(since - t0)
                );
                handled += at - since;
                pending = None;
            }
            _ => {}
        }
    }
    out!(
        "timing: parent handler time, all requests {:.3} ms",
        ms(handled)
    );
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
