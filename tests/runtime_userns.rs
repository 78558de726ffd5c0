//! User namespace fds: what `userns::create` and `UsernsCache` hand out, the
//! errors for bad mappings, and that no helper process or fd is left behind.

mod runtime_common;

use std::os::fd::{AsFd, AsRawFd, OwnedFd};

use procsync::runtime::userns::{self, MapSide, UsernsCache, UsernsError, UsernsKey};
use procsync::schema::IdMap;
use runtime_common::{children, fd_count, root_or_skip, serial};

fn ns_link(fd: &OwnedFd) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .expect("readlink")
        .to_string_lossy()
        .into_owned()
}

fn is_cloexec(fd: &OwnedFd) -> bool {
    rustix::io::fcntl_getfd(fd.as_fd())
        .expect("F_GETFD")
        .contains(rustix::io::FdFlags::CLOEXEC)
}

fn map(c: u32, h: u32, n: u32) -> IdMap {
    IdMap::new(c, h, n)
}

#[test]
fn fresh_fds_are_distinct_cloexec_user_namespaces_and_no_helper_survives() {
    if !root_or_skip("fresh_fds") {
        return;
    }
    let _g = serial();
    userns::drain();
    let (fds0, kids0) = (fd_count(), children());
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
    let me = std::fs::read_link("/proc/self/ns/user").unwrap();
    let uid = [map(0, 100_000, 65_536)];
    let gid = [map(0, 200_000, 65_536)];
    let mut seen = std::collections::HashSet::new();
    // Keep every fd open: a freed namespace's inode number may be reused.
    let mut keep = Vec::new();
    for _ in 0..40 {
        let fd = userns::create(&uid, &gid).expect("create");
        let link = ns_link(&fd);
        assert!(link.starts_with("user:["), "not a userns fd: {link}");
        assert_ne!(std::path::Path::new(&link), me, "got our own namespace");
        assert!(is_cloexec(&fd), "fd must be close-on-exec");
        assert!(seen.insert(link), "namespace handed out twice");
        keep.push(fd);
    }
    drop(keep);
    // Every helper is a child until reaped; drain() reaps the stock and backlog.
    userns::drain();
    assert_eq!(children(), kids0, "helper processes left behind");
    assert_eq!(fd_count(), fds0, "fds leaked");
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
}

#[test]
fn bad_mappings_get_typed_errors_without_leaks() {
    if !root_or_skip("bad_mappings") {
        return;
    }
    let _g = serial();
    userns::drain();
    let (fds0, kids0) = (fd_count(), children());
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
    let ok = [map(0, 1000, 10)];
    let too_many: Vec<IdMap> = (0..341).map(|i| map(i, 10_000 + i, 1)).collect();
    let long: Vec<IdMap> = (0..300)
        .map(|i| map(4_000_000_000 + i * 10, 4_000_000_000 + i * 10, 1))
        .collect();
    let cases: Vec<(&str, Vec<IdMap>, Vec<IdMap>)> = vec![
        ("empty uid", vec![], ok.to_vec()),
        ("empty gid", ok.to_vec(), vec![]),
        (
            "overlap container",
            vec![map(0, 1000, 10), map(5, 5000, 10)],
            ok.to_vec(),
        ),
        (
            "overlap host",
            ok.to_vec(),
            vec![map(0, 1000, 10), map(50, 1005, 1)],
        ),
        ("zero size", vec![map(0, 1000, 0)], ok.to_vec()),
        ("overflow", vec![map(u32::MAX, 0, 2)], ok.to_vec()),
        ("too many lines", too_many, ok.to_vec()),
        ("text too long", long, ok.to_vec()),
    ];
    let cache = UsernsCache::new();
    for (what, uid, gid) in &cases {
        let e = userns::create(uid, gid).expect_err(what);
        let e2 = cache.get(uid, gid).expect_err(what);
        assert_eq!(e.to_string(), e2.to_string());
        let msg = e.to_string();
        assert!(msg.starts_with("invalid id mapping"), "{what}: {msg}");
        match (*what, &e) {
            ("empty uid", UsernsError::EmptyMapping { side: MapSide::Uid }) => {}
            ("empty gid", UsernsError::EmptyMapping { side: MapSide::Gid }) => {}
            (
                "overlap container",
                UsernsError::InvalidMapping {
                    side: MapSide::Uid,
                    reason,
                },
            ) => {
                assert_eq!(*reason, "overlapping container ranges")
            }
            (
                "overlap host",
                UsernsError::InvalidMapping {
                    side: MapSide::Gid,
                    reason,
                },
            ) => {
                assert_eq!(*reason, "overlapping host ranges")
            }
            ("zero size", UsernsError::InvalidMapping { reason, .. }) => {
                assert_eq!(*reason, "empty range")
            }
            ("overflow", UsernsError::InvalidMapping { reason, .. }) => {
                assert_eq!(*reason, "range overflows u32")
            }
            ("too many lines", UsernsError::InvalidMapping { reason, .. }) => {
                assert_eq!(*reason, "more than 340 lines")
            }
            (
                "text too long",
                UsernsError::MappingTooLong {
                    side: MapSide::Uid,
                    len,
                    limit,
                },
            ) => {
                assert!(len >= limit)
            }
            _ => panic!("{what}: unexpected error {e:?}"),
        }
    }
    assert!(cache.is_empty(), "failed lookups must not be cached");
    userns::drain();
    assert_eq!(children(), kids0, "helper processes left behind");
    assert_eq!(fd_count(), fds0, "fds leaked");
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
}

#[test]
fn cache_hands_out_duplicates_keyed_by_unordered_mapping_set() {
    if !root_or_skip("cache") {
        return;
    }
    let _g = serial();
    // Pre-spawned helpers hold pidfds: count with the pool drained.
    userns::drain();
    let fds0 = fd_count();
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
    let a = [map(0, 100_000, 1000), map(1000, 300_000, 10)];
    let a_rev = [map(1000, 300_000, 10), map(0, 100_000, 1000)];
    let b = [map(0, 500_000, 1)];
    let cache = UsernsCache::new();
    let x1 = cache.get(&a, &b).expect("get");
    let x2 = cache.get(&a_rev, &b).expect("get reordered");
    assert_ne!(x1.as_raw_fd(), x2.as_raw_fd(), "each get is a new fd");
    assert_eq!(
        ns_link(&x1),
        ns_link(&x2),
        "same mapping set, same namespace"
    );
    assert!(is_cloexec(&x2));
    let y = cache.get(&b, &a).expect("other set");
    assert_ne!(ns_link(&x1), ns_link(&y));
    assert_eq!(cache.len(), 2);

    // release drops the cached fd; handed-out fds stay valid.
    assert!(cache.release(&UsernsKey::new(&a_rev, &b)));
    assert!(!cache.release(&UsernsKey::new(&a, &b)));
    assert_eq!(cache.len(), 1);
    assert!(ns_link(&x1).starts_with("user:["));
    let x3 = cache.get(&a, &b).expect("get after release");
    assert_ne!(
        ns_link(&x1),
        ns_link(&x3),
        "release must force a new namespace"
    );

    cache.clear();
    assert!(cache.is_empty());
    drop((x1, x2, x3, y));
    userns::drain();
    assert_eq!(fd_count(), fds0, "fds leaked");
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
}

/// Helpers in another user namespace than ours: the pool's.
fn helper_children() -> Vec<u32> {
    let me = std::fs::read_link("/proc/self/ns/user").unwrap();
    children()
        .into_iter()
        .filter(|p| std::fs::read_link(format!("/proc/{p}/ns/user")).is_ok_and(|ns| ns != me))
        .collect()
}

#[test]
fn stock_helpers_killed_from_outside_do_not_fail_create() {
    if !root_or_skip("killed stock") {
        return;
    }
    let _g = serial();
    userns::drain();
    let kids0 = children();
    userns::set_prespawn(2);
    let m = [map(0, 100_000, 10)];
    drop(userns::create(&m, &m).expect("create"));
    // Wait for the background thread to refill the stock.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let stock = loop {
        let h = helper_children();
        if h.len() >= 2 {
            break h;
        }
        assert!(std::time::Instant::now() < deadline, "stock never refilled");
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    for pid in &stock {
        let pid = rustix::process::Pid::from_raw(*pid as i32).unwrap();
        rustix::process::kill_process(pid, rustix::process::Signal::KILL).unwrap();
    }
    // The dead stock helpers (unreaped, so their pids are not reused) are
    // skipped: create still works, and nothing is left afterwards.
    for _ in 0..3 {
        let fd = userns::create(&m, &m).expect("create after stock was killed");
        assert!(ns_link(&fd).starts_with("user:["));
    }
    userns::drain();
    assert_eq!(children(), kids0, "helper processes left behind");
    userns::set_prespawn(userns::DEFAULT_PRESPAWN);
}
