//! The `oci` feature: `MountPlan` from real `config.json` files
//! (`tests/fixtures/oci/<bundle>/config.json`): the one `runc spec` writes
//! (written for this project from the runtime spec), its rootless variant,
//! hand-written ones with id-mapped mounts and every Linux mount option, and
//! malformed ones, each with its typed error. Then a plan drives a real
//! session: the parent serves exactly the bundle's bind mounts.

use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use procsync::oci::oci_spec::runtime::Spec;
use procsync::oci::{bind_options, MountPlan, NotServedReason, OciError, OciErrorKind};
use procsync::policy::MountPolicy;
use procsync::schema::{ms, IdMap, IdMapping, Mount, MountAttr, MountSourceKind};
use procsync::session::{Child, HandlerError, MountSource, Parent, ParentHandler, SessionError};
use procsync::state::Flow;
use procsync::transport::SyncSocket;
use procsync::Origin;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/oci")
        .join(name)
}

fn plan(name: &str) -> MountPlan {
    MountPlan::from_bundle(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e:?}"))
}

/// `MS_*` (a `c_ulong`: u64 on 64-bit targets, u32 on 32-bit ones) as u64.
#[allow(clippy::useless_conversion)]
fn ms(f: libc::c_ulong) -> u64 {
    u64::from(f)
}

#[test]
fn the_default_runc_spec_has_nothing_to_serve_and_says_so() {
    let p = plan("runc-spec");
    assert!(p.served().is_empty());
    assert_eq!(p.requests().count(), 0);
    let listed: Vec<(usize, &str, &str)> = p
        .not_served()
        .iter()
        .map(|n| (n.index, n.destination.as_str(), n.typ.as_str()))
        .collect();
    assert_eq!(
        listed,
        [
            (0, "/proc", "proc"),
            (1, "/dev", "tmpfs"),
            (2, "/dev/pts", "devpts"),
            (3, "/dev/shm", "tmpfs"),
            (4, "/dev/mqueue", "mqueue"),
            (5, "/sys", "sysfs"),
            (6, "/sys/fs/cgroup", "cgroup"),
        ]
    );
    for n in p.not_served() {
        assert_eq!(n.reason, NotServedReason::NotBind);
        assert_eq!(n.reason.as_str(), "not-bind");
    }
    // No user namespace in the default spec.
    assert!(p.uid_mappings().is_empty() && p.gid_mappings().is_empty());
    // An empty policy refuses everything.
    let mut policy = p.policy();
    assert!(policy.check(&Mount::bind("/proc", "/proc")).is_err());
}

#[test]
fn the_rootless_spec_serves_sys_as_a_recursive_read_only_bind() {
    let p = plan("rootless");
    assert_eq!(p.served().len(), 1);
    let sys = &p.served()[0];
    assert_eq!(sys.index, 5);
    assert_eq!(sys.destination, "/sys");
    assert!(sys.recursive);
    let want = Mount {
        source: "/sys".into(),
        destination: "/sys".into(),
        device: "bind".into(),
        flags: ms::BIND | ms::REC | ms::NOSUID | ms::NOEXEC | ms::NODEV | ms::RDONLY,
        ..Default::default()
    };
    assert_eq!(sys.request, want);
    assert_eq!(p.not_served().len(), 5);
    assert_eq!(p.uid_mappings(), [IdMap::new(0, 1000, 1)]);
    assert_eq!(p.gid_mappings(), [IdMap::new(0, 1000, 1)]);
}

#[test]
fn id_mapped_mounts_map_to_id_mapping_requests() {
    let bundle = fixture("idmapped");
    let p = plan("idmapped");
    let container = vec![IdMap::new(0, 100_000, 65_536)];
    assert_eq!(p.uid_mappings(), container.as_slice());
    assert_eq!(p.gid_mappings(), container.as_slice());

    let by_dest = |d: &str| {
        p.served()
            .iter()
            .find(|m| m.destination == d)
            .unwrap_or_else(|| panic!("{d} not served"))
    };
    // rbind + ridmap + own mappings (uid and gid differ) + propagation.
    let data = by_dest("/data");
    assert_eq!(data.index, 1);
    assert!(data.recursive);
    assert_eq!(
        data.request,
        Mount {
            source: "/srv/data".into(),
            destination: "/data".into(),
            device: "bind".into(),
            flags: ms::BIND | ms::REC | ms::NOSUID | ms::NODEV,
            propagation_flags: vec![ms::PRIVATE | ms::REC],
            id_mapping: Some(
                IdMapping::ranges(vec![IdMap::new(0, 4242, 1)], vec![IdMap::new(0, 4343, 1)])
                    .recursive(true)
            ),
            ..Default::default()
        }
    );
    // bind + idmap (not recursive), two uid lines, read-only.
    let home = by_dest("/home");
    assert!(!home.recursive);
    assert_eq!(home.request.flags, ms::BIND | ms::RDONLY);
    let idm = home.request.id_mapping.as_ref().unwrap();
    assert!(!idm.recursive);
    assert_eq!(
        idm.uid_mappings,
        [IdMap::new(0, 100_000, 1000), IdMap::new(1000, 1000, 1)]
    );
    assert_eq!(idm.gid_mappings, [IdMap::new(0, 100_000, 65_536)]);
    // idmap without mappings on the mount: the container's mapping.
    let shared = by_dest("/shared");
    assert_eq!(
        shared.request.id_mapping,
        Some(IdMapping::ranges(container.clone(), container.clone()))
    );
    // Mappings without idmap/ridmap: still id-mapped, never ignored.
    let unflagged = by_dest("/mapped-no-option");
    assert_eq!(
        unflagged.request.id_mapping,
        Some(IdMapping::ranges(
            vec![IdMap::new(0, 200_000, 65_536)],
            vec![IdMap::new(0, 200_000, 65_536)]
        ))
    );
    // type "bind" with no options: a plain bind; relative source → bundle.
    let plain = by_dest("/plain");
    assert_eq!(plain.request.flags, ms::BIND);
    assert_eq!(
        Path::new(&plain.request.source),
        std::path::absolute(&bundle).unwrap().join("shared")
    );
    assert!(plain.request.id_mapping.is_none());
    // Relative destination → under "/"; recursive attributes.
    let cache = by_dest("/relative/dest");
    assert_eq!(
        Path::new(&cache.request.source),
        std::path::absolute(&bundle)
            .unwrap()
            .join("./volumes/cache")
    );
    assert_eq!(
        cache.request.rec_attr,
        Some(MountAttr {
            attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NOATIME,
            attr_clr: libc::MOUNT_ATTR__ATIME,
            ..Default::default()
        })
    );
    // tmpfs (even with idmap) is the child's own; listed, not served.
    assert_eq!(p.not_served().len(), 2);
    assert_eq!(p.not_served()[1].destination, "/tmp");
    assert_eq!(p.not_served()[1].typ, "tmpfs");
    assert_eq!(
        p.served().iter().map(|m| m.index).collect::<Vec<_>>(),
        [1, 2, 3, 4, 5, 6]
    );
    // The policy allows exactly the requests, each once.
    let mut policy = p.policy();
    for r in p.requests() {
        policy.check(r).unwrap();
    }
    for r in p.requests() {
        assert!(policy.check(r).is_err(), "{} served twice", r.destination);
    }
}

/// What each runtime-spec Linux mount option must do to a `bind` mount,
/// written from the runtime spec's table and mount(8)/mount_setattr(2).
#[derive(Debug, Default, PartialEq)]
struct Expect {
    set: u64,
    cleared: u64,
    propagation: Vec<u64>,
    attr_set: u64,
    attr_clr: u64,
    idmap: Option<bool>,
}

fn expectation(option: &str) -> Expect {
    use libc::*;
    let set = |f: c_ulong| Expect {
        set: ms(f),
        ..Default::default()
    };
    let clear = |f: c_ulong| Expect {
        cleared: ms(f),
        ..Default::default()
    };
    let prop = |f: c_ulong| Expect {
        propagation: vec![ms(f)],
        ..Default::default()
    };
    let rset = |a: u64| Expect {
        attr_set: a,
        attr_clr: if a & !MOUNT_ATTR__ATIME == 0 {
            MOUNT_ATTR__ATIME
        } else {
            0
        },
        ..Default::default()
    };
    let rclr = |a: u64| Expect {
        attr_clr: if a & !MOUNT_ATTR__ATIME == 0 {
            MOUNT_ATTR__ATIME
        } else {
            a
        },
        ..Default::default()
    };
    match option {
        "async" => clear(MS_SYNCHRONOUS),
        "atime" => clear(MS_NOATIME),
        "bind" | "defaults" => Expect::default(),
        "dev" => clear(MS_NODEV),
        "diratime" => clear(MS_NODIRATIME),
        "dirsync" => set(MS_DIRSYNC),
        "exec" => clear(MS_NOEXEC),
        "iversion" => set(MS_I_VERSION),
        "lazytime" => set(MS_LAZYTIME),
        "loud" => clear(MS_SILENT),
        "mand" => set(MS_MANDLOCK),
        "noatime" => set(MS_NOATIME),
        "nodev" => set(MS_NODEV),
        "nodiratime" => set(MS_NODIRATIME),
        "noexec" => set(MS_NOEXEC),
        "noiversion" => clear(MS_I_VERSION),
        "nolazytime" => clear(MS_LAZYTIME),
        "nomand" => clear(MS_MANDLOCK),
        "norelatime" => clear(MS_RELATIME),
        "nostrictatime" => clear(MS_STRICTATIME),
        "nosuid" => set(MS_NOSUID),
        "nosymfollow" => set(MS_NOSYMFOLLOW),
        "rbind" => set(MS_REC),
        "relatime" => set(MS_RELATIME),
        "remount" => set(MS_REMOUNT),
        "ro" => set(MS_RDONLY),
        "rw" => clear(MS_RDONLY),
        "silent" => set(MS_SILENT),
        "strictatime" => set(MS_STRICTATIME),
        "suid" => clear(MS_NOSUID),
        "symfollow" => clear(MS_NOSYMFOLLOW),
        "sync" => set(MS_SYNCHRONOUS),
        "private" => prop(MS_PRIVATE),
        "rprivate" => prop(MS_PRIVATE | MS_REC),
        "shared" => prop(MS_SHARED),
        "rshared" => prop(MS_SHARED | MS_REC),
        "slave" => prop(MS_SLAVE),
        "rslave" => prop(MS_SLAVE | MS_REC),
        "unbindable" => prop(MS_UNBINDABLE),
        "runbindable" => prop(MS_UNBINDABLE | MS_REC),
        "rro" => rset(MOUNT_ATTR_RDONLY),
        "rrw" => rclr(MOUNT_ATTR_RDONLY),
        "rnosuid" => rset(MOUNT_ATTR_NOSUID),
        "rsuid" => rclr(MOUNT_ATTR_NOSUID),
        "rnodev" => rset(MOUNT_ATTR_NODEV),
        "rdev" => rclr(MOUNT_ATTR_NODEV),
        "rnoexec" => rset(MOUNT_ATTR_NOEXEC),
        "rexec" => rclr(MOUNT_ATTR_NOEXEC),
        "rnodiratime" => rset(MOUNT_ATTR_NODIRATIME),
        "rdiratime" => rclr(MOUNT_ATTR_NODIRATIME),
        "rrelatime" => rset(MOUNT_ATTR_RELATIME),
        "rnorelatime" => rclr(MOUNT_ATTR_RELATIME),
        "rnoatime" => rset(MOUNT_ATTR_NOATIME),
        "ratime" => rclr(MOUNT_ATTR_NOATIME),
        "rstrictatime" => rset(MOUNT_ATTR_STRICTATIME),
        "rnostrictatime" => rclr(MOUNT_ATTR_STRICTATIME),
        "rnosymfollow" => rset(MOUNT_ATTR_NOSYMFOLLOW),
        "rsymfollow" => rclr(MOUNT_ATTR_NOSYMFOLLOW),
        "idmap" => Expect {
            idmap: Some(false),
            ..Default::default()
        },
        "ridmap" => Expect {
            idmap: Some(true),
            ..Default::default()
        },
        other => panic!("no expectation for {other:?}"),
    }
}

#[test]
fn every_linux_mount_option_maps_as_the_runtime_spec_says() {
    let p = plan("every-option");
    let container = vec![IdMap::new(0, 100_000, 65_536)];
    let mut seen = BTreeSet::new();
    assert!(p.not_served().is_empty());
    for m in p.served() {
        let option = m.destination.strip_prefix("/opt/").unwrap();
        seen.insert(option.to_string());
        let want = expectation(option);
        let r = &m.request;
        assert_eq!(r.flags, ms::BIND | want.set, "{option}: flags");
        assert_eq!(r.cleared_flags, want.cleared, "{option}: cleared_flags");
        assert_eq!(
            r.propagation_flags, want.propagation,
            "{option}: propagation"
        );
        let attr = r.rec_attr.unwrap_or_default();
        assert_eq!(
            (attr.attr_set, attr.attr_clr),
            (want.attr_set, want.attr_clr),
            "{option}: rec_attr"
        );
        assert_eq!(
            r.id_mapping,
            want.idmap.map(|rec| {
                IdMapping::ranges(container.clone(), container.clone()).recursive(rec)
            }),
            "{option}: id_mapping"
        );
        assert_eq!(m.recursive, option == "rbind", "{option}: recursive");
        assert_eq!(r.device, "bind");
    }
    // The fixture covers every option the plan accepts, and nothing else.
    let accepted: BTreeSet<String> = bind_options().map(str::to_string).collect();
    assert_eq!(seen, accepted);
    // The spec's table (61 options less tmpcopyup) and `rnodev`, which the
    // table omits though it lists its opposite `rdev`.
    assert_eq!(accepted.len(), 61);
}

#[test]
fn later_options_override_earlier_ones() {
    let spec: Spec = serde_json::from_str(
        r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "mounts": [
            {"destination": "/a", "type": "bind", "source": "/srv/a",
             "options": ["ro", "rw", "nosuid", "suid", "nodev", "rnoatime", "rstrictatime", "rro", "rrw", "private", "rshared"]}
        ]}"#,
    )
    .unwrap();
    let p = MountPlan::from_spec(&spec, Path::new("/bundle")).unwrap();
    let r = &p.served()[0].request;
    assert_eq!(r.flags, ms::BIND | ms::NODEV);
    assert_eq!(r.cleared_flags, ms::RDONLY | ms::NOSUID);
    assert_eq!(r.propagation_flags, [ms::PRIVATE, ms::SHARED | ms::REC]);
    let attr = r.rec_attr.unwrap();
    assert_eq!(attr.attr_set, libc::MOUNT_ATTR_STRICTATIME);
    assert_eq!(
        attr.attr_clr,
        libc::MOUNT_ATTR__ATIME | libc::MOUNT_ATTR_RDONLY
    );
}

#[test]
fn malformed_configs_are_typed_errors() {
    let cases: [(&str, OciErrorKind, &str); 10] = [
        ("no-config", OciErrorKind::ReadConfig, "cannot read"),
        (
            "not-json",
            OciErrorKind::ParseConfig,
            "not a valid runtime-spec",
        ),
        (
            "options-not-an-array",
            OciErrorKind::ParseConfig,
            "not a valid runtime-spec",
        ),
        (
            "no-source",
            OciErrorKind::MissingSource,
            "mounts[0] (/data)",
        ),
        (
            "unknown-option",
            OciErrorKind::UnknownOption,
            "\"mode=755\"",
        ),
        (
            "tmpcopyup-on-bind",
            OciErrorKind::UnsupportedOption,
            "\"tmpcopyup\"",
        ),
        (
            "uid-without-gid",
            OciErrorKind::IncompleteIdMapping,
            "uidMappings and gidMappings",
        ),
        (
            "idmap-without-userns",
            OciErrorKind::NoIdMapping,
            "\"ridmap\" needs",
        ),
        (
            "mount-range-overflow",
            OciErrorKind::InvalidMount,
            "range overflows u32",
        ),
        (
            "container-empty-range",
            OciErrorKind::InvalidIdMappings,
            "linux.uidMappings: empty range",
        ),
    ];
    for (name, kind, text) in cases {
        let e = MountPlan::from_bundle(&fixture(&format!("malformed/{name}"))).expect_err(name);
        assert_eq!(e.kind(), kind, "{name}: {e:?}");
        assert!(e.to_string().contains(text), "{name}: {e}");
        let origin = if kind == OciErrorKind::ReadConfig {
            Origin::Os
        } else {
            Origin::Local
        };
        assert_eq!(e.origin(), origin, "{name}");
        // Display does not repeat the source's text.
        if let Some(src) = std::error::Error::source(&e) {
            assert!(!e.to_string().contains(&src.to_string()), "{name}: {e}");
        }
    }
    // The parser's position reaches the caller through the source chain.
    let e = MountPlan::from_bundle(&fixture("malformed/not-json")).unwrap_err();
    let mut chain = String::new();
    let mut next: Option<&dyn std::error::Error> = Some(&e);
    while let Some(err) = next {
        chain.push_str(&format!("{err}; "));
        next = err.source();
    }
    assert!(chain.contains("line 4"), "{chain}");
    assert!(matches!(e, OciError::Parse { .. }));
}

#[test]
fn kinds_have_stable_names() {
    let all = [
        (OciErrorKind::ReadConfig, "read-config"),
        (OciErrorKind::ParseConfig, "parse-config"),
        (OciErrorKind::MissingSource, "missing-source"),
        (OciErrorKind::NotUtf8, "not-utf8"),
        (OciErrorKind::UnknownOption, "unknown-option"),
        (OciErrorKind::UnsupportedOption, "unsupported-option"),
        (OciErrorKind::IncompleteIdMapping, "incomplete-id-mapping"),
        (OciErrorKind::NoIdMapping, "no-id-mapping"),
        (OciErrorKind::InvalidMount, "invalid-mount"),
        (OciErrorKind::InvalidIdMappings, "invalid-id-mappings"),
    ];
    for (k, name) in all {
        assert_eq!(k.as_str(), name);
        assert_eq!(k.to_string(), name);
    }
}

#[test]
fn a_relative_source_under_a_non_utf8_bundle_is_a_typed_error() {
    let spec: Spec = serde_json::from_str(
        r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "mounts": [
            {"destination": "/a", "type": "bind", "source": "a"}]}"#,
    )
    .unwrap();
    let bundle = Path::new(OsStr::from_bytes(b"/bundles/\xff"));
    let e = MountPlan::from_spec(&spec, bundle).unwrap_err();
    assert_eq!(e.kind(), OciErrorKind::NotUtf8, "{e}");
    assert!(matches!(
        e,
        OciError::NotUtf8 {
            field: "source",
            ..
        }
    ));
}

#[test]
fn userns_path_stands_in_when_the_container_joins_a_user_namespace() {
    let spec: Spec = serde_json::from_str(
        r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "mounts": [
            {"destination": "/a", "type": "bind", "source": "/srv/a", "options": ["rbind", "ridmap"]}],
            "linux": {"namespaces": [{"type": "user", "path": "/proc/4242/ns/user"}]}}"#,
    )
    .unwrap();
    let p = MountPlan::from_spec(&spec, Path::new("/bundle")).unwrap();
    assert_eq!(
        p.served()[0].request.id_mapping,
        Some(IdMapping::userns("/proc/4242/ns/user").recursive(true))
    );
}

/// Opens each allowed source `O_PATH` (what `MountFdService` does for a
/// plain bind, without root).
struct OpenPath;

impl ParentHandler for OpenPath {
    fn mount(&mut self, req: &Mount) -> Result<MountSource, HandlerError> {
        let f = std::fs::File::open(&req.source)?;
        Ok(MountSource {
            fd: f.into(),
            kind: MountSourceKind::PlainOpen,
        })
    }
}

/// A bundle written at test time: two plain binds with relative sources,
/// proc and a tmpfs.
fn temp_bundle() -> PathBuf {
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("oci-bundle-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("volumes/a")).unwrap();
    std::fs::create_dir_all(dir.join("volumes/b")).unwrap();
    std::fs::write(
        dir.join("config.json"),
        r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "mounts": [
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/a", "type": "none", "source": "volumes/a", "options": ["rbind", "ro", "rprivate"]},
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs", "options": ["nosuid"]},
            {"destination": "/b", "type": "bind", "source": "volumes/b", "options": ["bind", "nosuid", "nodev"]}
        ]}"#,
    )
    .unwrap();
    dir
}

#[test]
fn a_plan_drives_a_session_that_serves_exactly_the_bundles_bind_mounts() {
    let bundle = temp_bundle();
    let p = MountPlan::from_bundle(&bundle).unwrap();
    assert_eq!(p.served().len(), 2);
    let requests: Vec<Mount> = p.requests().cloned().collect();

    let (psock, csock) = SyncSocket::pair().unwrap();
    let child = std::thread::spawn(move || -> Result<Vec<(u64, u64)>, SessionError> {
        let mut child = Child::new(csock, Flow::Init);
        let mut got = Vec::new();
        for r in &requests {
            let src = child.mount_source(r)?;
            let st = rustix_stat(src.fd.as_fd());
            got.push(st);
        }
        // Anything else — here the first mount without its "ro" — is refused.
        let mut other = requests[0].clone();
        other.flags &= !ms::RDONLY;
        let refused = child.mount_source(&other).unwrap_err();
        assert!(refused.to_string().contains("refused"), "{refused}");
        Ok(got)
    });
    let err = Parent::new(psock, Flow::Init, p.requests().cloned())
        .serve(&mut OpenPath)
        .unwrap_err();
    assert!(matches!(err, SessionError::MountRefused(_)), "{err:?}");
    let got = child.join().unwrap().unwrap();
    for (st, dir) in got.iter().zip(["volumes/a", "volumes/b"]) {
        let md = std::fs::metadata(bundle.join(dir)).unwrap();
        assert_eq!(*st, (md.dev(), md.ino()), "{dir}");
    }
    std::fs::remove_dir_all(&bundle).unwrap();
}

fn rustix_stat(fd: std::os::fd::BorrowedFd<'_>) -> (u64, u64) {
    let st = procsync::rustix::fs::fstat(fd).unwrap();
    (st.st_dev, st.st_ino)
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH | AT_RECURSIVE, attr)` on a
/// detached tree (rustix has no wrapper).
fn mount_setattr(fd: std::os::fd::BorrowedFd<'_>, attr: &MountAttr) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let raw = libc::mount_attr {
        attr_set: attr.attr_set,
        attr_clr: attr.attr_clr,
        propagation: attr.propagation,
        userns_fd: 0,
    };
    let flags = (libc::AT_EMPTY_PATH | libc::AT_RECURSIVE) as libc::c_long;
    // SAFETY: `fd` is a valid open fd for the call's duration, the path is a
    // static empty C string, `raw` is a valid mount_attr that outlives the
    // call and its exact size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd() as libc::c_long,
            c"".as_ptr(),
            flags,
            &raw as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The recursive attributes a plan builds are what the kernel accepts and
/// applies: each `every-option` request's `rec_attr` (and the overriding
/// atime combinations) through `mount_setattr(2)` on a detached clone of a
/// directory (`open_tree(OPEN_TREE_CLONE)`), then `fstatvfs` shows the
/// flags. Root only.
#[test]
fn recursive_attributes_are_accepted_and_applied_by_the_kernel() {
    use procsync::rustix::fs::{fstatvfs, StatVfsMountFlags as St, CWD};
    use procsync::rustix::mount::{open_tree, OpenTreeFlags};
    if !procsync::rustix::process::geteuid().is_root() {
        eprintln!("skipped: mount_setattr on a detached tree needs root");
        return;
    }
    let dir =
        Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("oci-attr-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let clone = || {
        open_tree(
            CWD,
            &dir,
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_RECURSIVE,
        )
        .expect("open_tree(OPEN_TREE_CLONE)")
    };
    let p = plan("every-option");
    let mut applied = 0;
    for m in p.served() {
        let Some(attr) = m.request.rec_attr else {
            continue;
        };
        let option = m.destination.strip_prefix("/opt/").unwrap();
        let fd = clone();
        mount_setattr(fd.as_fd(), &attr).unwrap_or_else(|e| panic!("{option}: {attr:?}: {e}"));
        let flags = fstatvfs(&fd).unwrap().f_flag;
        let want = match option {
            "rro" => Some(St::RDONLY),
            "rnosuid" => Some(St::NOSUID),
            "rnodev" => Some(St::NODEV),
            "rnoexec" => Some(St::NOEXEC),
            "rnoatime" => Some(St::NOATIME),
            "rnodiratime" => Some(St::NODIRATIME),
            "rrelatime" | "ratime" | "rnorelatime" | "rnostrictatime" => Some(St::RELATIME),
            _ => None,
        };
        if let Some(f) = want {
            assert!(flags.contains(f), "{option}: {flags:?}");
        }
        if option == "rstrictatime" {
            assert!(
                !flags.intersects(St::RELATIME | St::NOATIME),
                "{option}: {flags:?}"
            );
        }
        applied += 1;
    }
    assert_eq!(applied, 18, "every recursive option was applied");
    // Later options replace earlier ones; the kernel takes the result.
    let fd = clone();
    let p = MountPlan::from_spec(
        &serde_json::from_str(
            r#"{"ociVersion": "1.2.0", "root": {"path": "rootfs"}, "mounts": [
                {"destination": "/a", "type": "bind", "source": "/srv/a",
                 "options": ["rbind", "rro", "rnoatime", "rnosuid", "rstrictatime", "rrw", "rnoexec"]}]}"#,
        )
        .unwrap(),
        Path::new("/bundle"),
    )
    .unwrap();
    let attr = p.served()[0].request.rec_attr.unwrap();
    mount_setattr(fd.as_fd(), &attr).unwrap();
    let flags = fstatvfs(&fd).unwrap().f_flag;
    assert!(flags.contains(St::NOSUID | St::NOEXEC), "{flags:?}");
    assert!(
        !flags.intersects(St::RDONLY | St::NOATIME | St::RELATIME),
        "{flags:?}"
    );
    drop(fd);
    std::fs::remove_dir_all(&dir).unwrap();
}
