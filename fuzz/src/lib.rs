//! The fuzz targets' bodies. Each check panics when an invariant breaks; the
//! same file is compiled into procsync's `tests/fuzz_corpus.rs`, which replays
//! the committed corpus on stable Rust in every `cargo test`.
#[path = "checks.rs"]
mod checks;
pub use checks::*;
