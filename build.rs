//! Compiles `proto/` into Rust types at build time with a pure-Rust protobuf
//! compiler (protox), so no `protoc` is needed on the build machine.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    const PROTOS: &[&str] = &["proto/procsync/v1/sync.proto"];
    println!("cargo:rerun-if-changed=proto");
    for p in PROTOS {
        println!("cargo:rerun-if-changed={p}");
    }

    let fds = protox::compile(PROTOS, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // The descriptor set is exported too, for reflection and the golden tests.
    std::fs::write(
        out.join("procsync_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;

    let mut cfg = prost_build::Config::new();
    cfg.compile_fds(fds)?;
    Ok(())
}
