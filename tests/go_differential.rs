//! Differential test of the two codecs: every input of the committed fuzz
//! corpus (`fuzz/corpus/frame_decode/`: byte 0 & 3 is the fd count, the
//! rest the record), every golden-vector record and single-byte mutations of
//! the valid ones go through the Go codec (`go/cmd/procsync-codec`, built
//! with `go build`) and the Rust codec; both must print the same line: `err
//! KIND` with the same stable error kind, or `ok HEX` with the same
//! canonical re-encoding.
//!
//! Without `go` on the PATH the test prints why and passes, unless `CI=true`.

mod go_build;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use bytes::BytesMut;
use procsync::wire::{native, EncodeError, Limits};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// What procsync-codec prints for `record` with `nfds` fds, computed with
/// the Rust codec.
fn rust_line(nfds: usize, record: &[u8]) -> String {
    let limits = Limits::default();
    match native::decode(record, nfds, &limits) {
        Err(e) => format!("err {}", e.kind().as_str()),
        Ok(msg) => {
            let mut buf = BytesMut::new();
            match native::encode(&msg, nfds == 1, &mut buf, &limits) {
                Ok(()) => format!("ok {}", hex(&buf)),
                Err(EncodeError::Invalid(e)) => format!("ok-encode-err {}", e.kind().as_str()),
                Err(EncodeError::TooLarge { .. }) => "ok-encode-err too-large".to_string(),
                Err(e) => format!("ok-encode-err {e}"),
            }
        }
    }
}

/// (name, fd count, record) for every input.
fn inputs() -> Vec<(String, usize, Vec<u8>)> {
    let mut out = Vec::new();
    let dir = Path::new(ROOT).join("fuzz/corpus/frame_decode");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        let data = std::fs::read(&f).unwrap();
        if let Some((&sel, record)) = data.split_first() {
            let name = f.file_name().unwrap().to_string_lossy().into_owned();
            out.push((name, usize::from(sel & 3), record.to_vec()));
        }
    }
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/vectors/native.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for section in ["valid", "decode_only", "invalid"] {
        for c in v[section].as_array().unwrap() {
            if c.get("max_record").is_some() {
                continue; // the filter runs every line under the default limit
            }
            let name = c["name"].as_str().unwrap();
            let nfds = c["fds"].as_u64().unwrap() as usize;
            let record = unhex(c["record"].as_str().unwrap());
            if section == "valid" && record.len() < 512 {
                for i in 0..record.len() {
                    for x in [0x01u8, 0x08, 0x7f, 0x80, 0xff] {
                        let mut m = record.clone();
                        m[i] ^= x;
                        out.push((format!("{name}^{i}/{x:02x}"), nfds, m));
                    }
                }
            }
            out.push((name.to_string(), nfds, record));
        }
    }
    out
}

#[test]
fn go_and_rust_codecs_agree_on_the_corpus() {
    static CODEC: OnceLock<Option<PathBuf>> = OnceLock::new();
    let Some(codec) = go_build::go_binary(&CODEC, "cmd/procsync-codec") else {
        return;
    };
    let inputs = inputs();
    assert!(inputs.len() > 1000, "{} inputs", inputs.len());
    let mut stdin_text = String::new();
    for (_, nfds, record) in &inputs {
        stdin_text.push_str(&format!("{nfds} {}\n", hex(record)));
    }
    let mut child = Command::new(codec)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || stdin.write_all(stdin_text.as_bytes()));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(
        out.status.success(),
        "procsync-codec: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let go_lines: Vec<&str> = std::str::from_utf8(&out.stdout).unwrap().lines().collect();
    assert_eq!(go_lines.len(), inputs.len());
    let mut differ = Vec::new();
    let (mut ok, mut err) = (0, 0);
    for ((name, nfds, record), go) in inputs.iter().zip(&go_lines) {
        let rust = rust_line(*nfds, record);
        if rust.starts_with("ok ") {
            ok += 1;
        } else {
            err += 1;
        }
        if rust != *go {
            differ.push(format!(
                "{name} ({nfds} fds, {}): rust {rust:?}, go {go:?}",
                hex(record)
            ));
        }
    }
    assert!(
        differ.is_empty(),
        "{} of {} differ:\n{}",
        differ.len(),
        inputs.len(),
        differ.join("\n")
    );
    // Both outcomes are exercised.
    assert!(ok > 100 && err > 100, "{ok} accepted, {err} rejected");
    println!(
        "{} inputs: {ok} accepted, {err} rejected, identical in Go and Rust",
        inputs.len()
    );
}
