//! The runtime layer behind real sessions, across real processes: the parent
//! serves MountPlease with `MountFdService` through the ready-made handler
//! (policy in force), inside the child's mount namespace; the child (this
//! test binary re-executed, in a private mount namespace of its own) attaches
//! each source with `runtime::attach` and checks what it sees through the
//! new mounts — the files, and for the id-mapped mount the shifted owner.
//!
//! Root-only cases skip with a printed reason when not root.

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use procsync::runtime::{attach, MountFdService, UsernsCache};
use procsync::schema::{IdMap, IdMapping, Mount};
use procsync::session::{Child, Parent, SessionError};
use procsync::state::Flow;
use procsync::transport::{SyncSocket, ENV_SYNC_FD};

const DIRS: &str = "PROCSYNC_RUNTIME_SESSION_DIRS";
/// The host uid the id-mapped mount maps on-disk uid 0 to.
const SHIFT: u32 = 100_000;

use support::peer::ROLE_VAR as ROLE;
use support::{fd_count, serial};

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn mapping() -> IdMapping {
    IdMapping::ranges(
        vec![IdMap::new(0, SHIFT, 65536)],
        vec![IdMap::new(0, SHIFT, 65536)],
    )
}

/// Configured mounts for the sources `a` (plain bind) and `b` (id-mapped).
fn mounts(a: &str, b: &str) -> Vec<Mount> {
    vec![
        Mount::bind(a, "/plain"),
        Mount::bind(b, "/mapped").with_id_mapping(mapping()),
    ]
}

/// Source directories (one file each) and a scratch tree for destinations.
struct Tree(PathBuf);

impl Tree {
    fn new(tag: &str) -> Tree {
        let root = std::env::temp_dir().join(format!("procsync-rs-{tag}-{}", std::process::id()));
        for d in ["a", "b", "dst/plain", "dst/mapped"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::write(root.join("a/hello.txt"), "plain\n").unwrap();
        std::fs::write(root.join("b/owned.txt"), "mapped\n").unwrap();
        Tree(root)
    }
    fn path(&self, p: &str) -> String {
        self.0.join(p).display().to_string()
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Not a test: the entry point of the child processes the tests spawn.
#[test]
#[ignore = "entry point of the child processes the other tests spawn"]
fn runtime_child_entry() {
    support::peer::run(|role| match child_main(role) {
        Ok(()) => 0,
        Err(e) => {
            println!("child-error {e}");
            1
        }
    });
}

fn child_main(role: &str) -> Result<(), Box<dyn std::error::Error>> {
    let dirs = std::env::var(DIRS)?;
    let (root, a, b) = {
        let v: Vec<&str> = dirs.split(':').collect();
        (PathBuf::from(v[0]), v[1].to_string(), v[2].to_string())
    };
    // SAFETY: a spawned peer: the fd was handed to it, and no other thread uses the environment yet.
    let mut child = unsafe { Child::from_env(Flow::Init) }?.with_deadline(Duration::from_secs(20));
    match role {
        "attach" => {
            // Started by `unshare -m --propagation private`: a private mount
            // namespace, so the host never sees these mounts.
            println!("ns-ready");
            for m in mounts(&a, &b) {
                let src = child.mount_source(&m)?;
                let dst = root.join("dst").join(m.destination.trim_start_matches('/'));
                println!("attached {:?} {}", src.kind, m.destination);
                attach(src, &dst, false)?;
            }
            let plain = std::fs::read_to_string(root.join("dst/plain/hello.txt"))?;
            let owner = std::fs::metadata(root.join("dst/mapped/owned.txt"))?.uid();
            let host_owner = std::fs::metadata(root.join("b/owned.txt"))?.uid();
            println!("plain-content {}", plain.trim());
            println!("mapped-owner {owner} host-owner {host_owner}");
            child.hooks()?;
            child.ready()?;
            child.close()?;
        }
        "unlisted" => match child.mount_source(&Mount::bind("/etc", "/plain")) {
            Err(SessionError::Remote { message }) => println!("refused {message}"),
            other => return Err(format!("expected a refusal, got {other:?}").into()),
        },
        "missing" => match child.mount_source(&mounts(&a, &b)[0]) {
            Err(SessionError::Remote { message }) => println!("remote-error {message}"),
            other => return Err(format!("expected an error reply, got {other:?}").into()),
        },
        _ => return Err("unknown role".into()),
    }
    Ok(())
}

struct Spawned {
    proc: std::process::Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
}

/// Spawns this test binary as the child `role`; with `private_ns`, inside a
/// new private mount namespace (util-linux `unshare`, which execs it with the
/// sync socket still open).
fn spawn(role: &str, tree: &Tree, private_ns: bool) -> (Spawned, SyncSocket) {
    let (sock, child_end) = SyncSocket::pair().unwrap();
    let exe = std::env::current_exe().unwrap();
    let mut cmd = if private_ns {
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "--"])
            .arg(exe);
        c
    } else {
        Command::new(exe)
    };
    cmd.args([
        "runtime_child_entry",
        "--exact",
        "--ignored",
        "--nocapture",
        "-q",
    ])
    .env(ROLE, role)
    .env(
        DIRS,
        format!("{}:{}:{}", tree.0.display(), tree.path("a"), tree.path("b")),
    )
    .env_remove(ENV_SYNC_FD)
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    child_end.pass_to_child(&mut cmd).unwrap();
    let mut proc = cmd.spawn().unwrap();
    drop(child_end);
    let lines = BufReader::new(proc.stdout.take().unwrap()).lines();
    (Spawned { proc, lines }, sock)
}

impl Spawned {
    /// Lines up to (and including) one starting with `prefix`.
    fn until(&mut self, prefix: &str) -> Vec<String> {
        let mut seen = Vec::new();
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            let done = line.starts_with(prefix);
            seen.push(line);
            if done {
                return seen;
            }
        }
        panic!("child ended before {prefix:?}: {seen:?}");
    }

    fn finish(mut self) -> (bool, Vec<String>) {
        let rest: Vec<String> = self.lines.by_ref().map_while(Result::ok).collect();
        let ok = self.proc.wait().unwrap().success();
        (ok, rest)
    }
}

#[test]
fn plain_and_id_mapped_sources_served_and_attached_across_processes() {
    if !is_root() {
        eprintln!("skipping: needs root (mount namespaces, open_tree, mount_setattr)");
        return;
    }
    let _g = serial();
    let tree = Tree::new("attach");
    let before = fd_count();
    let (mut child, sock) = spawn("attach", &tree, true);
    child.until("ns-ready");
    // Sources resolve in the child's (new) mount namespace, as runc does.
    let service = MountFdService::in_mount_namespace(
        format!("/proc/{}/ns/mnt", child.proc.id()),
        Arc::new(UsernsCache::new()),
    )
    .unwrap();
    let mut parent = Parent::new(sock, Flow::Init, mounts(&tree.path("a"), &tree.path("b")))
        .with_child_process(&child.proc)
        .unwrap()
        .with_deadline(Duration::from_secs(20));
    let report = parent.serve(&mut service.handler()).unwrap();
    drop(parent);
    drop(service);
    let (ok, lines) = child.finish();
    assert!(ok, "child failed: {lines:?}");
    assert_eq!(report.mounts, 2);
    assert!(report.ready);
    assert!(
        lines.contains(&"plain-content plain".to_string()),
        "{lines:?}"
    );
    // On disk the file is owned by root (uid 0); through the id-mapped mount
    // it shows as uid 0 shifted by the mapping.
    assert!(
        lines.contains(&format!("mapped-owner {SHIFT} host-owner 0")),
        "{lines:?}"
    );
    // The userns helper pool keeps pre-spawned helpers (and their pidfds)
    // by design; drain it so the count compares like with like.
    procsync::runtime::userns::drain();
    // The host never saw the child's mounts.
    assert!(std::fs::read_dir(tree.0.join("dst/plain"))
        .unwrap()
        .next()
        .is_none());
    assert_eq!(fd_count(), before, "fds leaked");
}

#[test]
fn the_ready_made_handler_keeps_the_policy_in_force() {
    let _g = serial();
    let tree = Tree::new("unlisted");
    let before = fd_count();
    let (child, sock) = spawn("unlisted", &tree, false);
    let service = MountFdService::new();
    let mut parent = Parent::new(sock, Flow::Init, mounts(&tree.path("a"), &tree.path("b")))
        .with_child_process(&child.proc)
        .unwrap()
        .with_deadline(Duration::from_secs(20));
    let err = parent.serve(&mut service.handler()).unwrap_err();
    assert!(
        matches!(err, SessionError::MountRefused(_)),
        "expected a policy refusal, got {err:?}"
    );
    drop(parent);
    let (ok, lines) = child.finish();
    assert!(ok, "child failed: {lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("refused mount request refused: \"/etc\" -> \"/plain\"")),
        "{lines:?}"
    );
    assert_eq!(fd_count(), before, "fds leaked");
}

#[test]
fn a_missing_source_reaches_the_child_as_an_error_naming_the_step() {
    let _g = serial();
    let tree = Tree::new("missing");
    let before = fd_count();
    // Configure the mounts, then remove the plain source before serving.
    std::fs::remove_dir_all(tree.0.join("a")).unwrap();
    let (child, sock) = spawn("missing", &tree, false);
    let service = MountFdService::new();
    let mut parent = Parent::new(sock, Flow::Init, mounts(&tree.path("a"), &tree.path("b")))
        .with_child_process(&child.proc)
        .unwrap()
        .with_deadline(Duration::from_secs(20));
    let err = parent.serve(&mut service.handler()).unwrap_err();
    assert!(
        matches!(err, SessionError::Handler { .. }),
        "expected a handler error, got {err:?}"
    );
    drop(parent);
    let (ok, lines) = child.finish();
    assert!(ok, "child failed: {lines:?}");
    let msg = lines
        .iter()
        .find(|l| l.starts_with("remote-error"))
        .cloned();
    let msg = msg.unwrap_or_default();
    assert!(
        msg.contains("cannot make the mount source") && msg.contains(&tree.path("a")),
        "{lines:?}"
    );
    assert!(Path::new(&tree.0).exists());
    assert_eq!(fd_count(), before, "fds leaked");
}
