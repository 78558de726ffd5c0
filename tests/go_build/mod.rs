//! Builds the Go programs the cross-implementation tests run
//! (`go build` of `go/cmd/<name>` into `CARGO_TARGET_TMPDIR`), once per test
//! binary. Without `go` on the PATH: a printed reason and `None` (the test
//! passes without checking anything), unless `CI=true`, where that is a
//! failure.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Builds `go/cmd/<name>` (once; `cell` remembers the result) and returns
/// the binary, or `None` when Go is not installed outside CI.
pub fn go_binary(
    cell: &'static std::sync::OnceLock<Option<PathBuf>>,
    name: &str,
) -> Option<&'static Path> {
    cell.get_or_init(|| {
        let go_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("go");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(format!("./cmd/{name}"))
            .current_dir(&go_dir)
            .stdin(Stdio::null())
            .output();
        match built {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("CI=true but `go` is not installed: cannot build go/cmd/{name}");
                }
                eprintln!("skipped: `go` is not installed, so go/cmd/{name} cannot be built");
                None
            }
            Err(e) => panic!("running go build: {e}"),
            Ok(o) if !o.status.success() => panic!(
                "go build ./cmd/{name} failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => Some(out),
        }
    })
    .as_deref()
}
