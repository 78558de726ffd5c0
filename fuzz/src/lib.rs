//! The fuzz targets' bodies. Each check panics when an invariant breaks. The
//! file lives in procsync's `tests/support/` (shipped in the package, unlike
//! `fuzz/`); procsync's `tests/fuzz_corpus.rs` compiles it too and replays
//! the committed corpus on stable Rust in every `cargo test`.
#[path = "../../tests/support/checks.rs"]
mod checks;
pub use checks::*;
