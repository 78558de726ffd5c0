//! A real container start, end to end (root): the container example's code
//! (compiled into this binary from `examples/container/`) starts bundles
//! that `scripts/make-bundle.sh` builds from what the machine has, and the
//! tests read its transcript and the container's own report.
//!
//! `harness = false`: this binary is also the runtime and the init it
//! re-executes (`PROCSYNC_CONTAINER_TEST_ROLE=runtime`, or `init` with the
//! sync socket in the environment), exactly like the example.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Duration;

#[macro_use]
#[path = "../examples/common/mod.rs"]
mod common;
#[path = "../examples/container/mod.rs"]
mod container;
mod support;

use support::peer::ROLE_VAR as ROLE;

/// How long one container start may take before the test kills it.
const LIMIT: Duration = Duration::from_secs(60);

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if container::is_init(&args) {
        return container::init_main(&args[1..]);
    }
    if std::env::var_os(ROLE).is_some_and(|r| r == "runtime") {
        return container::runtime_main(&args);
    }
    if !procsync::rustix::process::geteuid().is_root() {
        eprintln!(
            "container: skipped: needs root (user, mount and PID namespaces, id maps, mounts)"
        );
        return ExitCode::SUCCESS;
    }
    let cases: [(&str, fn()); 6] = [
        (
            "starts_a_container_with_plain_and_idmapped_binds",
            starts_a_container,
        ),
        (
            "the_container_exit_status_is_the_runtime_exit_status",
            exit_status_passes_through,
        ),
        (
            "a_mount_outside_config_json_is_refused_on_both_sides",
            extra_mount_is_refused,
        ),
        (
            "seccomp_notify_fd_reaches_the_parent_and_timings_print",
            seccomp_and_timings,
        ),
        (
            "a_symlinked_destination_in_the_rootfs_is_not_followed",
            destination_symlink_refused,
        ),
        (
            "a_missing_source_fails_the_start_before_the_init_runs",
            missing_source_fails_early,
        ),
    ];
    let mut failed = 0;
    for (name, case) in cases {
        match std::panic::catch_unwind(case) {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed += 1;
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {failed} failed",
        if failed == 0 { "ok" } else { "FAILED" },
        cases.len() - failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// A bundle from `scripts/make-bundle.sh`, removed on drop.
struct Bundle {
    dir: PathBuf,
}

impl Bundle {
    fn new(tag: &str, exit_code: u8) -> Bundle {
        let dir = PathBuf::from(format!(
            "/tmp/procsync-container-{tag}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-bundle.sh");
        let out = Command::new(&script)
            .arg(&dir)
            .arg(exit_code.to_string())
            .output()
            .expect("run scripts/make-bundle.sh");
        assert!(
            out.status.success(),
            "make-bundle.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Bundle { dir }
    }

    fn config(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.join("config.json")).expect("config.json");
        serde_json::from_str(&text).expect("config.json parses")
    }

    /// The bind mounts' sources, as config.json names them.
    fn bind_sources(&self) -> BTreeSet<String> {
        self.config()["mounts"]
            .as_array()
            .expect("mounts")
            .iter()
            .filter(|m| m["type"] == "bind")
            .map(|m| m["source"].as_str().expect("source").to_string())
            .collect()
    }
}

impl Drop for Bundle {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// What one run of the runtime printed and how it ended.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn lines(&self, prefix: &str) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with(prefix))
            .collect()
    }

    fn has(&self, needle: &str) -> bool {
        self.stdout.contains(needle)
    }

    /// The sources the parent says it opened (`parent:   served SRC -> DEST …`).
    fn served(&self) -> BTreeSet<String> {
        self.lines("parent:   served ")
            .iter()
            .map(|l| {
                l["parent:   served ".len()..]
                    .split(' ')
                    .next()
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    fn show(&self) -> String {
        format!(
            "exit {:?}\n--- stdout\n{}--- stderr\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// Runs the runtime (this binary, role `runtime`) on `bundle` with `flags`.
fn start(bundle: &Bundle, flags: &[&str]) -> Run {
    let exe = std::env::current_exe().expect("current_exe");
    // A stray inheritable fd, as a careless caller of a runtime leaves: the
    // runtime inherits it, the container's process must not.
    let stray = procsync::rustix::fs::open(
        "/dev/null",
        procsync::rustix::fs::OFlags::RDONLY,
        procsync::rustix::fs::Mode::empty(),
    )
    .expect("open /dev/null");
    let mut child = Command::new(exe)
        .env(ROLE, "runtime")
        .args(flags)
        .arg(&bundle.dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the runtime");
    drop(stray);
    // Read both pipes on threads so a chatty run cannot block on a full pipe.
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut out, &mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let status = match support::proc::wait_bounded(&mut child, LIMIT) {
        Ok(st) => st,
        Err(st) => {
            let run = Run {
                code: st.code(),
                stdout: out_t.join().unwrap_or_default(),
                stderr: err_t.join().unwrap_or_default(),
            };
            panic!("the runtime hung for {LIMIT:?}:\n{}", run.show());
        }
    };
    let run = Run {
        code: status.code(),
        stdout: out_t.join().unwrap_or_default(),
        stderr: err_t.join().unwrap_or_default(),
    };
    println!("{}", run.show());
    run
}

fn starts_a_container() {
    let bundle = Bundle::new("start", 0);
    // Host-side facts the container's view is compared with.
    let owned = procsync::rustix::fs::stat(bundle.dir.join("owned")).expect("stat owned");
    assert_eq!((owned.st_uid, owned.st_gid), (4242, 4242));
    let run = start(&bundle, &[]);
    let show = run.show();
    assert_eq!(run.code, Some(0), "{show}");
    // The process runs as the container's root (host uid 100000), as pid 1
    // of its PID namespace, under the configured hostname.
    assert!(
        run.has("probe: pid 1 uid 0 gid 0 hostname procsync-demo\n"),
        "{show}"
    );
    // Owned by host uid/gid 4242: unmapped in the container (it would show
    // as 65534) but the id-mapped mount maps 4242 to 100000, its root.
    assert!(run.has("probe: owner of /mapped 0:0\n"), "{show}");
    // The plain bind shows the host's file, read-only.
    assert!(
        run.has("probe: read /plain/hello.txt \"hello from the host\"\n"),
        "{show}"
    );
    assert!(run.has("probe: write /plain/hello.txt EROFS\n"), "{show}");
    // The host path config.json does not mount is out of reach.
    let secret = bundle.dir.join("host-only/secret.txt");
    assert!(
        run.has(&format!(
            "probe: host path {} unreachable (ENOENT)\n",
            secret.display()
        )),
        "{show}"
    );
    // Nothing of the runtime's leaks into the container: stdio only.
    assert!(run.has("probe: fds 0 1 2\n"), "{show}");
    // The parent opened exactly the configured sources, each once.
    assert_eq!(run.served(), bundle.bind_sources(), "{show}");
    assert_eq!(run.lines("parent:   served ").len(), 2, "{show}");
    assert!(run.has("served 2 of 2 configured mounts"), "{show}");
    // Each kind of source reached the init and was attached.
    assert!(
        run.has("init:     attached plain-open source at /plain\n"),
        "{show}"
    );
    assert!(
        run.has("init:     attached open_tree source at /mapped\n"),
        "{show}"
    );
    assert!(run.has("init:     mounted a new proc at /proc\n"), "{show}");
    assert!(run.has("parent:   container exited: status 0\n"), "{show}");
    assert_no_parent_fd_leak(&run);
}

/// The runtime ends with the fds it started with (the sync socket, the
/// pidfd, the pinned sources, the worker's namespace fd, … all closed).
fn assert_no_parent_fd_leak(run: &Run) {
    let line = run.lines("parent:   open fds: ");
    assert_eq!(line.len(), 1, "{}", run.show());
    let nums: Vec<&str> = line[0]
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(nums.len(), 2, "{}", run.show());
    assert_eq!(nums[0], nums[1], "the runtime leaked fds: {}", run.show());
}

fn exit_status_passes_through() {
    let bundle = Bundle::new("status", 7);
    let run = start(&bundle, &[]);
    assert_eq!(run.code, Some(7), "{}", run.show());
    assert!(
        run.has("parent:   container exited: status 7\n"),
        "{}",
        run.show()
    );
}

fn extra_mount_is_refused() {
    let bundle = Bundle::new("extra", 0);
    let run = start(&bundle, &["--request-extra", "/etc"]);
    let show = run.show();
    assert_ne!(run.code, Some(0), "{show}");
    // The parent refused and says so; it opened only the configured sources.
    let failed = run.lines("parent:   start failed: ");
    assert_eq!(failed.len(), 1, "{show}");
    assert!(
        failed[0]
            .contains("\"/etc\" -> \"/extra\" is not one of the container's configured mounts"),
        "{show}"
    );
    assert!(!run.served().contains("/etc"), "{show}");
    assert_eq!(run.served(), bundle.bind_sources(), "{show}");
    // The init got the refusal as the Error reply and reports it.
    assert!(
        run.lines("init    ← recv  Error ")
            .iter()
            .any(|l| l.contains("mount request refused: \\\"/etc\\\"")),
        "{show}"
    );
    let init_failed = run.lines("init:     failed: ");
    assert_eq!(init_failed.len(), 1, "{show}");
    assert!(init_failed[0].contains("mount request refused"), "{show}");
    // The container's process never ran.
    assert!(run.lines("probe:").is_empty(), "{show}");
    assert_no_parent_fd_leak(&run);
}

fn seccomp_and_timings() {
    let bundle = Bundle::new("seccomp", 0);
    let run = start(&bundle, &["--seccomp-notify", "--timings"]);
    let show = run.show();
    assert_eq!(run.code, Some(0), "{show}");
    let took = run.lines("parent:   took the seccomp notify fd ");
    assert_eq!(took.len(), 1, "{show}");
    assert!(took[0].contains("seccomp notify"), "{show}");
    assert!(run.has("init    → send  Seccomp +fd"), "{show}");
    assert!(run.has("parent  → send  SeccompDone"), "{show}");
    // The parent closed the listener: the filtered call fails with ENOSYS.
    assert!(run.has("probe: mknodat ENOSYS\n"), "{show}");
    // The listener fd was closed before the exec.
    assert!(run.has("probe: fds 0 1 2\n"), "{show}");
    assert_eq!(run.lines("timing: spawn→execve ").len(), 1, "{show}");
    assert_eq!(run.lines("timing: parent handler time").len(), 1, "{show}");
    assert_no_parent_fd_leak(&run);
}

fn destination_symlink_refused() {
    let bundle = Bundle::new("symlink", 0);
    // A rootfs (attacker-controlled content) whose mount point is a
    // symlink to a host directory: a path-walking attach would mount the
    // source over the host's directory instead.
    let plain = bundle.dir.join("rootfs/plain");
    std::fs::remove_dir(&plain).expect("rmdir rootfs/plain");
    std::os::unix::fs::symlink(bundle.dir.join("host-only"), &plain).expect("symlink");
    let run = start(&bundle, &[]);
    let show = run.show();
    assert_ne!(run.code, Some(0), "{show}");
    let init_failed = run.lines("init:     failed: ");
    assert_eq!(init_failed.len(), 1, "{show}");
    assert!(init_failed[0].contains("/plain"), "{show}");
    assert!(
        init_failed[0].contains("(os error 40) (a symlink on the way: not followed)"),
        "ELOOP expected: {show}"
    );
    // The parent learns it from the init's Error.
    assert!(run.lines("parent:   start failed: ").len() == 1, "{show}");
    assert!(run.lines("probe:").is_empty(), "{show}");
    // The host directory is untouched.
    let left: Vec<_> = std::fs::read_dir(bundle.dir.join("host-only"))
        .expect("host-only")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("secret.txt")], "{show}");
    assert_no_parent_fd_leak(&run);
}

fn missing_source_fails_early() {
    let bundle = Bundle::new("missing", 0);
    // A configured source that does not exist: pinning it fails while the
    // init still waits for its go byte, so the init never runs anything.
    std::fs::remove_dir_all(bundle.dir.join("owned")).expect("remove owned");
    let run = start(&bundle, &[]);
    let show = run.show();
    assert_eq!(run.code, Some(1), "{show}");
    assert!(run.stderr.starts_with("container: "), "{show}");
    assert!(
        run.stderr
            .contains(&bundle.dir.join("owned").display().to_string()),
        "the error names the source: {show}"
    );
    assert!(run.lines("init").is_empty(), "{show}");
    assert!(run.lines("parent:   served ").is_empty(), "{show}");
}
