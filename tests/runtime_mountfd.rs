//! The parent's mount-fd service and the child's attach, end to end: each
//! test runs in its own mount namespace (unshare on the test thread, `/`
//! rprivate), so the host's mounts are never touched.

mod runtime_common;

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;

use procsync::runtime::mountfd::Step;
use procsync::runtime::{attach, userns, AttachError, MountFdError, MountFdService, UsernsCache};
use procsync::schema::{IdMap, IdMapping, Mount, MountSourceKind};
use runtime_common::{
    children, fd_count, file_owned, owner, private_mount_ns, root_or_skip, serial,
    settled_fd_count, Scratch,
};

/// Container ids 0..65536 <-> host ids 100000..165536, both sides.
fn shift() -> IdMapping {
    let m = vec![IdMap::new(0, 100_000, 65_536)];
    IdMapping::ranges(m.clone(), m)
}

fn idmapped(src: &Path, dst: &Path, mapping: IdMapping) -> Mount {
    Mount::bind(src.to_str().unwrap(), dst.to_str().unwrap()).with_id_mapping(mapping)
}

/// Makes an id-mapped source of `src`, attaches it at `dst`, and checks that a
/// file owned 1000:1001 on disk shows up owned 101000:101001, and that an
/// unmapped owner shows up as the overflow id.
fn check_idmapped_owner_shift(svc: &MountFdService, s: &Scratch, src: &Path) {
    file_owned(&src.join("f"), "hello", 1000, 1001);
    file_owned(&src.join("outside"), "x", 70_000, 70_000);
    let dst = s.dir("dst");
    let src_fd = svc
        .make_source(&idmapped(src, &dst, shift()))
        .expect("make id-mapped source");
    assert_eq!(src_fd.kind, MountSourceKind::OpenTree);
    attach(src_fd, &dst, false).expect("attach");
    assert_eq!(
        owner(&src.join("f")),
        (1000, 1001),
        "source itself unchanged"
    );
    assert_eq!(
        owner(&dst.join("f")),
        (101_000, 101_001),
        "owner not shifted"
    );
    assert_eq!(std::fs::read_to_string(dst.join("f")).unwrap(), "hello");
    assert_eq!(owner(&dst.join("outside")), (65_534, 65_534), "unmapped id");
    // A new file created through the mount as root (uid 0) is unmappable:
    // 0 is not a host id of the mapping, so the kernel refuses (EOVERFLOW).
    let e = std::fs::write(dst.join("new"), "x").unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::EOVERFLOW), "{e}");
    rustix::mount::unmount(&dst, rustix::mount::UnmountFlags::DETACH).unwrap();
}

#[test]
fn idmapped_bind_of_tmpfs_dir_shows_shifted_owner() {
    if !root_or_skip("idmapped tmpfs") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let mut s = Scratch::new("idmap-tmpfs");
    let t = s.tmpfs("t");
    let src = t.join("dir");
    std::fs::create_dir(&src).unwrap();
    check_idmapped_owner_shift(&MountFdService::new(), &s, &src);
}

#[test]
fn idmapped_bind_of_root_fs_dir_shows_shifted_owner() {
    if !root_or_skip("idmapped rootfs") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let s = Scratch::new("idmap-rootfs");
    let src = s.dir("src");
    let svc = MountFdService::new();
    // /tmp is on the root filesystem here (ext4, which supports idmap).
    match svc.make_source(&idmapped(&src, &src, shift())) {
        Err(
            e @ MountFdError::Os {
                step: Step::SetIdmap,
                ..
            },
        ) => {
            eprintln!("root filesystem does not support id-mapped mounts, skipped: {e}");
            return;
        }
        r => drop(r.expect("probe")),
    }
    check_idmapped_owner_shift(&svc, &s, &src);
}

#[test]
fn recursive_flags_are_honoured() {
    if !root_or_skip("recursive") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let mut s = Scratch::new("rec");
    let src = s.tmpfs("src");
    std::fs::create_dir(src.join("sub")).unwrap();
    let sub = s.tmpfs("src/sub");
    file_owned(&src.join("top"), "t", 1000, 1000);
    file_owned(&sub.join("marker"), "m", 1000, 1000);
    let svc = MountFdService::new();
    let src_s = src.to_str().unwrap();

    // Plain bind without MS_REC: the submount is not taken along.
    let d = s.dir("plain-norec");
    let m = Mount::bind(src_s, d.to_str().unwrap());
    attach(svc.make_source(&m).unwrap(), &d, false).unwrap();
    s.mounted(&d);
    assert!(d.join("top").exists());
    assert!(
        !d.join("sub/marker").exists(),
        "submount leaked into non-recursive bind"
    );

    // Plain bind with MS_REC: it is.
    let d = s.dir("plain-rec");
    let m = Mount::bind(src_s, d.to_str().unwrap()).recursive();
    attach(svc.make_source(&m).unwrap(), &d, true).unwrap();
    s.mounted(&d);
    assert!(
        d.join("sub/marker").exists(),
        "submount missing from recursive bind"
    );

    // Id-mapped without MS_REC: open_tree clones only the top mount.
    let d = s.dir("idmap-norec");
    let m = Mount::bind(src_s, d.to_str().unwrap()).with_id_mapping(shift().recursive(true));
    attach(svc.make_source(&m).unwrap(), &d, false).unwrap();
    s.mounted(&d);
    assert_eq!(owner(&d.join("top")), (101_000, 101_000));
    assert!(!d.join("sub/marker").exists());

    // MS_REC + recursive mapping: the submount is there and id-mapped too.
    let d = s.dir("idmap-rec-rec");
    let m = Mount::bind(src_s, d.to_str().unwrap())
        .recursive()
        .with_id_mapping(shift().recursive(true));
    attach(svc.make_source(&m).unwrap(), &d, true).unwrap();
    s.mounted(&d);
    assert_eq!(owner(&d.join("top")), (101_000, 101_000));
    assert_eq!(owner(&d.join("sub/marker")), (101_000, 101_000));

    // MS_REC without a recursive mapping: the submount is there, unmapped.
    let d = s.dir("idmap-rec-top");
    let m = Mount::bind(src_s, d.to_str().unwrap())
        .recursive()
        .with_id_mapping(shift().recursive(false));
    attach(svc.make_source(&m).unwrap(), &d, true).unwrap();
    s.mounted(&d);
    assert_eq!(owner(&d.join("top")), (101_000, 101_000));
    assert_eq!(owner(&d.join("sub/marker")), (1000, 1000));
}

#[test]
fn plain_bind_attaches_and_attach_closes_the_fd() {
    if !root_or_skip("plain bind") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let mut s = Scratch::new("plain");
    let src = s.dir("src");
    file_owned(&src.join("f"), "plain", 1000, 1000);
    let dst = s.dir("dst");
    let svc = MountFdService::new();
    let fds0 = settled_fd_count();
    let m = Mount::bind(src.to_str().unwrap(), dst.to_str().unwrap());
    let source = svc.make_source(&m).expect("make plain source");
    assert_eq!(source.kind, MountSourceKind::PlainOpen);
    let flags = rustix::fs::fcntl_getfl(&source.fd).unwrap();
    assert!(
        flags.contains(rustix::fs::OFlags::PATH),
        "not O_PATH: {flags:?}"
    );
    assert_eq!(fd_count(), fds0 + 1);
    attach(source, &dst, false).expect("attach");
    s.mounted(&dst);
    assert_eq!(fd_count(), fds0, "attach must close the source fd");
    assert_eq!(std::fs::read_to_string(dst.join("f")).unwrap(), "plain");
    assert_eq!(owner(&dst.join("f")), (1000, 1000));

    // A failed attach closes the fd as well.
    let source = svc.make_source(&m).unwrap();
    let e = attach(source, &s.path.join("missing"), false).unwrap_err();
    assert!(matches!(e, AttachError::Bind { .. }), "{e}");
    assert!(e.to_string().contains("missing"), "{e}");
    let m2 = idmapped(&src, &dst, shift());
    let source = svc.make_source(&m2).unwrap();
    let e = attach(source, &s.path.join("missing"), false).unwrap_err();
    assert!(matches!(e, AttachError::MoveMount { .. }), "{e}");
    svc.userns_cache().clear();
    assert_eq!(settled_fd_count(), fds0, "failed attach leaked the fd");
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
}

#[test]
fn bad_requests_get_typed_errors_without_leaks() {
    if !root_or_skip("bad requests") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let mut s = Scratch::new("bad");
    let src = s.tmpfs("src");
    let src_s = src.to_str().unwrap();
    let svc = MountFdService::new();
    userns::drain();
    let (fds0, kids0) = (fd_count(), children());
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);

    let tmpfs = Mount {
        source: "tmpfs".into(),
        destination: "/run".into(),
        device: "tmpfs".into(),
        ..Default::default()
    };
    let e = svc.make_source(&tmpfs).unwrap_err();
    assert!(matches!(e, MountFdError::NotBind { .. }), "{e}");
    assert_eq!(e.origin(), procsync::Origin::Peer);
    assert!(e.to_string().contains("not a bind mount"), "{e}");

    let missing = format!("{src_s}/does-not-exist");
    let e = svc.make_source(&Mount::bind(&missing, "/x")).unwrap_err();
    assert!(
        matches!(
            e,
            MountFdError::Os {
                step: Step::OpenPath,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.errno(), Some(libc::ENOENT));
    assert!(
        e.to_string().contains(&missing) && e.to_string().contains("openat2(O_PATH)"),
        "{e}"
    );

    let e = svc
        .make_source(&Mount::bind(&missing, "/x").with_id_mapping(shift()))
        .unwrap_err();
    // The source is resolved (openat2) before it is cloned.
    assert!(
        matches!(
            e,
            MountFdError::Os {
                step: Step::OpenPath,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains(&missing), "{e}");

    let e = svc.make_source(&Mount::bind("", "/x")).unwrap_err();
    assert!(
        matches!(
            e,
            MountFdError::InvalidRequest {
                field: "source",
                ..
            }
        ),
        "{e}"
    );

    let bad_maps = [
        IdMapping::ranges(vec![], vec![IdMap::new(0, 1, 1)]),
        IdMapping::ranges(
            vec![IdMap::new(0, 1000, 10), IdMap::new(5, 9000, 10)],
            vec![IdMap::new(0, 1, 1)],
        ),
        IdMapping::ranges(
            (0..341).map(|i| IdMap::new(i, 10_000 + i, 1)).collect(),
            vec![IdMap::new(0, 1, 1)],
        ),
    ];
    for m in bad_maps {
        let e = svc
            .make_source(&Mount::bind(src_s, "/x").with_id_mapping(m))
            .unwrap_err();
        assert!(matches!(e, MountFdError::InvalidRequest { .. }), "{e}");
        assert!(e.to_string().contains("id_mapping"), "{e}");
        assert_eq!(e.origin(), procsync::Origin::Peer);
    }

    let e = svc
        .make_source(
            &Mount::bind(src_s, "/x").with_id_mapping(IdMapping::userns("/nonexistent/ns")),
        )
        .unwrap_err();
    assert!(
        matches!(
            e,
            MountFdError::Os {
                step: Step::OpenUserns,
                ..
            }
        ),
        "{e}"
    );
    assert!(e.to_string().contains("/nonexistent/ns"), "{e}");
    let e = svc
        .make_source(
            &Mount::bind(src_s, "/x").with_id_mapping(IdMapping::userns("/proc/self/ns/mnt")),
        )
        .unwrap_err();
    assert!(matches!(e, MountFdError::NotUserNamespace { .. }), "{e}");

    // procfs has no id-mapped mount support: EINVAL with the hint.
    let e = svc
        .make_source(&Mount::bind("/proc", "/x").with_id_mapping(shift()))
        .unwrap_err();
    assert!(
        matches!(
            e,
            MountFdError::Os {
                step: Step::SetIdmap,
                ..
            }
        ),
        "{e}"
    );
    assert_eq!(e.errno(), Some(libc::EINVAL));
    assert!(
        e.to_string().contains("may not support id-mapped mounts"),
        "{e}"
    );

    svc.userns_cache().clear();
    userns::drain();
    assert_eq!(fd_count(), fds0, "fds leaked");
    assert_eq!(children(), kids0, "helper processes left behind");
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
}

#[test]
fn userns_path_mapping_uses_that_namespace() {
    if !root_or_skip("userns_path") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let mut s = Scratch::new("nspath");
    let src = s.tmpfs("src");
    file_owned(&src.join("f"), "x", 7, 7);
    // A namespace made by the runtime layer, reached by path through /proc.
    let m = vec![IdMap::new(0, 300_000, 1000)];
    let ns = userns::create(&m, &m).unwrap();
    let path = format!("/proc/{}/fd/{}", std::process::id(), ns.as_raw_fd());
    let dst = s.dir("dst");
    let svc = MountFdService::new();
    let req = Mount::bind(src.to_str().unwrap(), dst.to_str().unwrap())
        .with_id_mapping(IdMapping::userns(path));
    attach(svc.make_source(&req).unwrap(), &dst, false).unwrap();
    s.mounted(&dst);
    assert_eq!(owner(&dst.join("f")), (300_007, 300_007));
    assert!(
        svc.userns_cache().is_empty(),
        "a userns_path must not use the cache"
    );
}

/// Sources resolve inside the target mount namespace: a tmpfs mounted only
/// in another process's namespace is visible to the service's worker.
#[test]
fn worker_resolves_sources_inside_another_mount_namespace() {
    if !root_or_skip("mount ns worker") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let s = Scratch::new("worker");
    let inner = s.dir("inner");
    let dst = s.dir("dst");
    let ready = s.path.join("ready");
    // A process in its own mount namespace with a tmpfs only it can see.
    let script = format!(
        "mount -t tmpfs none {i} && mkdir {i}/d && echo inside > {i}/d/f && chown 1000:1000 {i}/d/f && touch {r} && exec sleep 30",
        i = inner.display(),
        r = ready.display()
    );
    let mut child = match std::process::Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skipped: util-linux unshare not available: {e}");
            return;
        }
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !ready.exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "helper process never got ready"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let src = inner.join("d");
    let fds0 = settled_fd_count();
    // Catch a failed assertion so the helper process is always killed.
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        // Not visible here...
        let here = MountFdService::new();
        let e = here
            .make_source(&Mount::bind(src.to_str().unwrap(), "/x"))
            .unwrap_err();
        assert_eq!(e.errno(), Some(libc::ENOENT), "{e}");
        // ...but visible to a worker inside the child's namespace, for both kinds.
        let svc = MountFdService::in_mount_namespace(
            format!("/proc/{}/ns/mnt", child.id()),
            Arc::new(UsernsCache::new()),
        )
        .expect("join mount ns");
        let plain = svc
            .make_source(&Mount::bind(src.to_str().unwrap(), dst.to_str().unwrap()))
            .expect("plain source in child ns");
        assert_eq!(plain.kind, MountSourceKind::PlainOpen);
        drop(plain);
        let tree = svc
            .make_source(&idmapped(&src, &dst, shift()))
            .expect("id-mapped source in child ns");
        attach(tree, &dst, false).expect("attach");
        assert_eq!(std::fs::read_to_string(dst.join("f")).unwrap(), "inside\n");
        assert_eq!(owner(&dst.join("f")), (101_000, 101_000));
        rustix::mount::unmount(&dst, rustix::mount::UnmountFlags::DETACH).unwrap();
        drop(svc);
        let e =
            MountFdService::in_mount_namespace("/nonexistent/ns/mnt", Arc::default()).unwrap_err();
        assert!(matches!(e, MountFdError::MountNamespace { .. }), "{e}");
        let e =
            MountFdService::in_mount_namespace("/proc/self/ns/user", Arc::default()).unwrap_err();
        assert!(matches!(e, MountFdError::MountNamespace { .. }), "{e}");
    }));
    let _ = child.kill();
    let _ = child.wait();
    if let Err(panic) = result {
        std::panic::resume_unwind(panic);
    }
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
}
