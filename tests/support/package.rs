//! Tells a test whether it runs in the crate `cargo package` built — which
//! ships neither `go/` nor `fuzz/` — or in a repository checkout.

use std::path::Path;

/// Whether this is the packaged crate: `cargo package` writes
/// `Cargo.toml.orig` next to the normalized manifest; a checkout has none.
pub fn is_packaged() -> bool {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("Cargo.toml.orig")
        .is_file()
}

/// Whether `dir` (relative to the crate root) is missing because this is
/// the packaged crate, which does not ship it: the caller then skips with
/// the printed reason, even with `CI=true`. A directory missing from a
/// repository checkout is a broken checkout and panics.
pub fn not_shipped(dir: &str, what: &str) -> bool {
    if Path::new(env!("CARGO_MANIFEST_DIR")).join(dir).is_dir() {
        return false;
    }
    assert!(
        is_packaged(),
        "{dir}/ is missing from this repository checkout (needed for {what})"
    );
    eprintln!(
        "skipped: {what} needs {dir}/, which the packaged crate does not ship \
         (run it from the repository)"
    );
    true
}
