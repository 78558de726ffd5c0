//! Builds the Go programs the cross-implementation tests run
//! (`go build` of a package under `go/` into `CARGO_TARGET_TMPDIR`), once
//! per test binary. Without `go` on the PATH: a printed reason and `None` (the test
//! passes without checking anything), unless `CI=true`, where that is a
//! failure. In the packaged crate, which does not ship `go/`, the same
//! `None` with a printed reason, even with `CI=true`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

#[path = "../support/package.rs"]
mod package;

/// Builds the Go main package in `go/<dir>` (once; `cell` remembers the
/// result) and returns the binary, or `None` when Go is not installed
/// outside CI or in the packaged crate (no `go/`). The binary is named
/// after the directory's last component.
/// Call it with the test's fd-counting lock held: the build briefly opens
/// pipes in this process.
pub fn go_binary(
    cell: &'static std::sync::OnceLock<Option<PathBuf>>,
    dir: &str,
) -> Option<&'static Path> {
    cell.get_or_init(|| {
        if package::not_shipped("go", &format!("building go/{dir}")) {
            return None;
        }
        let pkg_dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("go").join(dir);
        let name = Path::new(dir).file_name().expect("a package directory");
        let out = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let built = Command::new("go")
            .args(["build", "-o"])
            .arg(&out)
            .arg(".")
            .current_dir(&pkg_dir)
            .stdin(Stdio::null())
            .output();
        match built {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if std::env::var("CI").as_deref() == Ok("true") {
                    panic!("CI=true but `go` is not installed: cannot build go/{dir}");
                }
                eprintln!("skipped: `go` is not installed, so go/{dir} cannot be built");
                None
            }
            Err(e) => panic!("running go build: {e}"),
            Ok(o) if !o.status.success() => panic!(
                "go build of go/{dir} failed:\n{}",
                String::from_utf8_lossy(&o.stderr)
            ),
            Ok(_) => Some(out),
        }
    })
    .as_deref()
}
