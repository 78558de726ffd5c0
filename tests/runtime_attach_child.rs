//! runc's flow across real processes: a child moves into its own mount
//! namespace; the parent's service joins that namespace (worker thread),
//! makes the sources there (plain `O_PATH` and id-mapped `open_tree`), and
//! passes them with SCM_RIGHTS over a seqpacket socketpair; the child
//! attaches them. The child is this test binary re-executed with
//! `--exact child_side`.

mod runtime_common;

use std::io::{IoSlice, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use procsync::runtime::{attach, MountFdService, MountSource};
use procsync::schema::{IdMap, IdMapping, Mount, MountSourceKind};
use runtime_common::{
    fd_count, file_owned, owner, private_mount_ns, root_or_skip, serial, settled_fd_count, Scratch,
};
use rustix::net::{
    recvmsg, sendmsg, AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags,
    SendAncillaryBuffer, SendAncillaryMessage, SendFlags, SocketFlags, SocketType,
};

const ENV_FD: &str = "PROCSYNC_RT_CHILD_FD";
const ENV_SRC: &str = "PROCSYNC_RT_CHILD_SRC";

fn send_fd(sock: &OwnedFd, tag: &[u8], fd: &OwnedFd) {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut cmsg = SendAncillaryBuffer::new(&mut space);
    let fds = [fd.as_fd()];
    assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
    sendmsg(sock, &[IoSlice::new(tag)], &mut cmsg, SendFlags::empty()).expect("sendmsg");
}

/// One record: its bytes and the fds that came with it (all owned, CLOEXEC).
fn recv(sock: &OwnedFd) -> (Vec<u8>, Vec<OwnedFd>) {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(2))];
    let mut cmsg = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 512];
    let r = recvmsg(
        sock,
        &mut [IoSliceMut::new(&mut buf)],
        &mut cmsg,
        RecvFlags::CMSG_CLOEXEC,
    )
    .expect("recvmsg");
    let mut fds = Vec::new();
    for m in cmsg.drain() {
        if let RecvAncillaryMessage::ScmRights(it) = m {
            fds.extend(it);
        }
    }
    (buf[..r.bytes].to_vec(), fds)
}

#[test]
fn plain_and_idmapped_sources_cross_a_socketpair_to_a_child() {
    if std::env::var_os(ENV_FD).is_some() || !root_or_skip("cross-process attach") {
        return;
    }
    let _g = serial();
    private_mount_ns();
    let mut s = Scratch::new("xproc");
    let src = s.tmpfs("src");
    file_owned(&src.join("f"), "across", 1000, 1000);
    let dst_plain = s.dir("dst-plain");
    let dst_idmap = s.dir("dst-idmap");
    let fds0 = settled_fd_count();

    let (ours, theirs) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .expect("socketpair");
    // The child's end must survive exec.
    rustix::io::fcntl_setfd(&theirs, rustix::io::FdFlags::empty()).unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut child = std::process::Command::new(exe)
        .args(["--exact", "child_side", "--nocapture", "--test-threads=1"])
        .env(ENV_FD, rustix::fd::AsRawFd::as_raw_fd(&theirs).to_string())
        .env(ENV_SRC, &src)
        .env("PROCSYNC_RT_DST_PLAIN", &dst_plain)
        .env("PROCSYNC_RT_DST_IDMAP", &dst_idmap)
        .spawn()
        .expect("spawn child");
    drop(theirs);
    // "ready TID": the child's test thread (the one that unshared) is TID.
    let (ready, _) = recv(&ours);
    let ready = String::from_utf8(ready).unwrap();
    let tid = ready
        .strip_prefix("ready ")
        .expect("child did not get ready");
    // The child is in its own mount namespace now: make the sources there.
    let svc = MountFdService::in_mount_namespace(
        format!("/proc/{}/task/{tid}/ns/mnt", child.id()),
        Default::default(),
    )
    .expect("join the child's mount namespace");
    let m = vec![IdMap::new(0, 100_000, 65_536)];
    let plain = svc
        .make_source(&Mount::bind(
            src.to_str().unwrap(),
            dst_plain.to_str().unwrap(),
        ))
        .expect("plain source");
    let tree = svc
        .make_source(
            &Mount::bind(src.to_str().unwrap(), dst_idmap.to_str().unwrap())
                .with_id_mapping(IdMapping::ranges(m.clone(), m)),
        )
        .expect("id-mapped source");
    assert_eq!(plain.kind, MountSourceKind::PlainOpen);
    assert_eq!(tree.kind, MountSourceKind::OpenTree);

    send_fd(&ours, b"plain", &plain.fd);
    send_fd(&ours, b"open_tree", &tree.fd);
    drop((plain, tree));
    let (reply, fds) = recv(&ours);
    assert!(fds.is_empty());
    let status = child.wait().expect("wait child");
    let reply = String::from_utf8_lossy(&reply).into_owned();
    assert!(status.success(), "child failed: {status}; reply {reply:?}");
    assert_eq!(
        reply,
        "plain across 1000:1000; open_tree across 101000:101000; fds closed"
    );
    // The mounts exist only in the child's namespace.
    assert!(!dst_plain.join("f").exists());
    assert!(!dst_idmap.join("f").exists());
    drop(ours);
    // The service holds the namespace fd (to replace a worker abandoned at a
    // deadline) until it is dropped.
    drop(svc);
    assert_eq!(settled_fd_count(), fds0, "fds leaked");
    procsync::runtime::userns::set_prespawn(procsync::runtime::userns::DEFAULT_PRESPAWN);
}

/// The child process's side; a no-op unless started by the test above.
#[test]
fn child_side() {
    let Some(fd) = std::env::var_os(ENV_FD) else {
        return;
    };
    let raw: i32 = fd.to_str().unwrap().parse().unwrap();
    // SAFETY: the parent passed this fd (its socketpair end) through exec; no
    // other code in this process knows or owns it.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };
    let var = |k: &str| PathBuf::from(std::env::var_os(k).unwrap());
    let result = std::panic::catch_unwind(|| {
        private_mount_ns();
        assert!(var(ENV_SRC).join("f").exists());
        let ready = format!("ready {}", rustix::thread::gettid().as_raw_nonzero());
        rustix::net::send(&sock, ready.as_bytes(), SendFlags::empty()).unwrap();
        let mut out = Vec::new();
        let before = fd_count();
        for _ in 0..2 {
            let (tag, mut fds) = recv(&sock);
            assert_eq!(fds.len(), 1, "exactly one fd per record");
            let (kind, dst) = match &tag[..] {
                b"plain" => (MountSourceKind::PlainOpen, var("PROCSYNC_RT_DST_PLAIN")),
                b"open_tree" => (MountSourceKind::OpenTree, var("PROCSYNC_RT_DST_IDMAP")),
                t => panic!("unexpected tag {t:?}"),
            };
            attach(
                MountSource {
                    fd: fds.pop().unwrap(),
                    kind,
                },
                &dst,
                false,
            )
            .expect("attach");
            let content = std::fs::read_to_string(dst.join("f")).unwrap();
            let (u, g) = owner(&dst.join("f"));
            out.push(format!(
                "{} {content} {u}:{g}",
                String::from_utf8_lossy(&tag)
            ));
        }
        let closed = if fd_count() == before {
            "fds closed"
        } else {
            "fds LEAKED"
        };
        format!("{}; {closed}", out.join("; "))
    });
    let msg = match &result {
        Ok(s) => s.clone(),
        Err(_) => "child panicked".to_string(),
    };
    rustix::net::send(&sock, msg.as_bytes(), SendFlags::empty()).unwrap();
    assert!(result.is_ok(), "{msg}");
}
