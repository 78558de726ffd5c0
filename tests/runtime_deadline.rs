//! Bounded handler time (issue 11.5): a source on a filesystem that never
//! answers — a FUSE mount whose server never replies, the same as a hung NFS
//! export or automount — must not hang the mount-fd service or `serve`.
//!
//! Root-only (mounting FUSE by hand needs CAP_SYS_ADMIN); each test runs in
//! a private mount namespace. Closing the FUSE device at the end aborts the
//! connection: the abandoned lookups fail, their threads finish, and the fd
//! count returns to where it was.

mod runtime_common;

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use procsync::runtime::{MountFdError, MountFdErrorKind, MountFdService};
use procsync::schema::{IdMap, IdMapping, Mount};
use procsync::session::{Child, Parent, SessionError};
use procsync::state::Flow;
use procsync::transport::SyncSocket;
use runtime_common::{private_mount_ns, root_or_skip, serial, settled_fd_count, Scratch};

/// A FUSE filesystem mounted at `path` whose server never answers: every
/// lookup below it blocks until `dev` is closed.
struct HungFs {
    dev: Option<OwnedFd>,
    path: PathBuf,
}

impl HungFs {
    fn mount(s: &mut Scratch) -> Option<HungFs> {
        let dev = match rustix::fs::open(
            "/dev/fuse",
            rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("skipped: /dev/fuse: {e}");
                return None;
            }
        };
        let path = s.dir("hung");
        let opts = std::ffi::CString::new(format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            dev.as_raw_fd()
        ))
        .unwrap();
        if let Err(e) = rustix::mount::mount(
            "procsync-hung",
            &path,
            "fuse",
            rustix::mount::MountFlags::empty(),
            opts.as_c_str(),
        ) {
            eprintln!("skipped: cannot mount FUSE: {e}");
            return None;
        }
        s.mounted(&path);
        Some(HungFs {
            dev: Some(dev),
            path,
        })
    }

    /// Aborts the connection: blocked lookups fail with ENOTCONN.
    fn abort(&mut self) {
        self.dev.take();
    }
}

/// Waits until the fd count is back at `want` (abandoned threads finish
/// once the connection is aborted).
fn fds_settle_at(want: usize) {
    let t0 = Instant::now();
    while settled_fd_count() != want && t0.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(settled_fd_count(), want, "fds leaked");
}

fn shift() -> IdMapping {
    let m = vec![IdMap::new(0, 100_000, 65_536)];
    IdMapping::ranges(m.clone(), m)
}

#[test]
fn make_source_until_gives_up_on_a_hung_filesystem() {
    if !root_or_skip("hung filesystem") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let mut s = Scratch::new("hung");
        let Some(mut fs) = HungFs::mount(&mut s) else {
            return;
        };
        let ok = s.dir("ok");
        let hung = fs.path.join("data");
        let hung_s = hung.to_str().unwrap();
        let requests = [
            Mount::bind(hung_s, "/d"),
            Mount::bind(hung_s, "/d").with_id_mapping(shift()),
            // The source is fine; the userns_path sits on the hung filesystem.
            Mount::bind(ok.to_str().unwrap(), "/d")
                .with_id_mapping(IdMapping::userns(fs.path.join("ns").to_str().unwrap())),
        ];
        let here = MountFdService::new();
        let ns = MountFdService::in_mount_namespace("/proc/thread-self/ns/mnt", Arc::default())
            .expect("worker in this namespace");
        for svc in [&here, &ns] {
            for req in &requests {
                let t0 = Instant::now();
                let e = svc
                    .make_source_until(req, Some(t0 + Duration::from_millis(200)))
                    .unwrap_err();
                let took = t0.elapsed();
                assert!(
                    matches!(e, MountFdError::TimedOut { .. }),
                    "{:?}: {e}",
                    req.id_mapping
                );
                assert_eq!(e.kind(), MountFdErrorKind::TimedOut);
                assert_eq!(e.origin(), procsync::Origin::Os);
                assert!(took < Duration::from_millis(1500), "gave up after {took:?}");
            }
            // The service still works: an abandoned worker is replaced.
            let fine = Mount::bind(ok.to_str().unwrap(), "/d");
            let src = svc
                .make_source_until(&fine, Some(Instant::now() + Duration::from_secs(5)))
                .expect("a good source after timeouts");
            drop(src);
        }
        drop((here, ns));
        fs.abort();
    }
    fds_settle_at(fds0);
}

#[test]
fn serve_with_the_ready_made_handler_never_hangs_past_the_deadline() {
    if !root_or_skip("serve deadline") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let fds0 = settled_fd_count();
    {
        let mut s = Scratch::new("hung-serve");
        let Some(mut fs) = HungFs::mount(&mut s) else {
            return;
        };
        let hung = fs.path.join("data");
        let req = Mount::bind(hung.to_str().unwrap(), "/data");
        let (psock, csock) = SyncSocket::pair().unwrap();
        let child_req = req.clone();
        let child = std::thread::spawn(move || {
            let mut child = Child::new(csock, Flow::Init).with_deadline(Duration::from_secs(10));
            child.mount_source(&child_req).map(drop)
        });
        // Request-time resolution: the path walk is what hangs.
        let svc = MountFdService::new();
        let t0 = Instant::now();
        let r = Parent::new(psock, Flow::Init, [req])
            .with_deadline(Duration::from_millis(300))
            .serve(&mut svc.handler());
        let took = t0.elapsed();
        assert!(took < Duration::from_secs(2), "serve took {took:?}");
        match r {
            Err(SessionError::Handler { source, .. }) => {
                let e = std::error::Error::source(&source)
                    .and_then(|e| e.downcast_ref::<MountFdError>())
                    .expect("the service's error under the handler error");
                assert_eq!(e.kind(), MountFdErrorKind::TimedOut, "{e}");
            }
            other => panic!("serve returned {other:?}"),
        }
        let child = child.join().unwrap().unwrap_err();
        assert!(
            matches!(child, SessionError::Remote { .. }),
            "the child was not told: {child:?}"
        );
        drop(svc);
        fs.abort();
    }
    fds_settle_at(fds0);
}
