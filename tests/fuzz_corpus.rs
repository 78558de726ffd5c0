//! Replays the committed fuzz corpus (`fuzz/corpus/<target>/`) and every
//! regression input ever found (`fuzz/regressions/<target>/`) through the
//! very checks the cargo-fuzz targets run, on stable Rust, in every
//! `cargo test`. Also keeps the seed part of the corpus (`seed-*` files,
//! built from the golden vectors) in step with `tests/vectors/`; regenerate
//! with `PROCSYNC_BLESS=1 cargo test --test fuzz_corpus`.
//!
//! The packaged crate does not ship `fuzz/`: there the seeds, built in memory
//! from `tests/vectors/`, are replayed instead, and the staleness check is
//! skipped with a printed reason.

#[path = "support/checks.rs"]
mod checks;
#[path = "support/package.rs"]
mod package;
mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

type Check = fn(&[u8]);

fn targets() -> Vec<(&'static str, Check)> {
    vec![
        ("frame_decode", checks::frame_decode as Check),
        ("state_machine", checks::state_machine as Check),
        ("record_fds", checks::record_fds as Check),
        ("control_messages", checks::control_messages as Check),
        #[cfg(feature = "runc-compat")]
        ("runc_decode", checks::runc_decode as Check),
    ]
}

fn hex_decode(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// Seeds per target, from the golden vectors: name -> input bytes.
fn seeds(target: &str) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    // record_fds reads the same input layout as frame_decode.
    if target == "frame_decode" || target == "record_fds" {
        let text =
            std::fs::read_to_string(Path::new(ROOT).join("tests/vectors/native.json")).unwrap();
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        for section in ["valid", "decode_only", "invalid"] {
            for c in v[section].as_array().unwrap() {
                let mut input = vec![c["fds"].as_u64().unwrap() as u8];
                input.extend(hex_decode(c["record"].as_str().unwrap()));
                out.insert(format!("seed-{}", c["name"].as_str().unwrap()), input);
            }
        }
    }
    #[cfg(feature = "runc-compat")]
    if target == "runc_decode" {
        runc_seeds(&mut out);
    }
    if target == "control_messages" {
        control_seeds(&mut out);
    }
    if target == "state_machine" {
        // Conversations in the grammar's tokens (see checks::grammar), as
        // input bytes: byte 0 picks the flow (odd = exec), then one byte per
        // event: 0x80 = sent by the child, low nibble = message type or 0xf
        // for a close.
        let seeds = [
            ("init_full", false, "MmMmHhRrSs."),
            ("init_minimal", false, "HhRr."),
            ("init_error_mid", false, "MmME."),
            ("init_parent_error_reply", false, "Me."),
            ("init_crossing_errors", false, "MEe."),
            ("init_mount_after_hooks", false, "HhM"),
            ("init_close_before_ready", false, "Hh."),
            ("exec_full", true, "RrSs."),
            ("exec_minimal", true, "Rr."),
            ("exec_hooks_rejected", true, "H"),
            ("exec_run_unasked", true, "r"),
        ];
        for (name, exec, tokens) in seeds {
            let mut input = vec![u8::from(exec)];
            for t in tokens.chars() {
                let (child, ty) = match t {
                    'E' => (true, 1),
                    'R' => (true, 2),
                    'H' => (true, 4),
                    'M' => (true, 6),
                    'S' => (true, 8),
                    'e' => (false, 1),
                    'r' => (false, 3),
                    'h' => (false, 5),
                    'm' => (false, 7),
                    's' => (false, 9),
                    '.' => (true, 0x0f),
                    _ => unreachable!(),
                };
                input.push(if child { 0x80 | ty } else { ty });
            }
            out.insert(format!("seed-{name}"), input);
        }
    }
    out
}

/// runc_decode seeds from tests/vectors/runc.json, in the target's layout:
/// byte 0 = fds with the fd record | the vector's layout (index in
/// `MountShape::ALL`, v1.2 when the vector names none) << 2, then the JSON
/// record, then `0xff` and the fd record's name, then `0xff` and the
/// expected name.
#[cfg(feature = "runc-compat")]
fn runc_seeds(out: &mut BTreeMap<String, Vec<u8>>) {
    let text = std::fs::read_to_string(Path::new(ROOT).join("tests/vectors/runc.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for section in ["valid", "invalid"] {
        for c in v[section].as_array().unwrap() {
            let record = match (c["record"].as_str(), c["record_hex"].as_str()) {
                (Some(r), _) => r.as_bytes().to_vec(),
                (None, Some(h)) => hex_decode(h),
                // "empty record"
                (None, None) => Vec::new(),
            };
            let fd_record = c["fd_record"].as_str();
            // A valid vector's fd record carries one fd and is the expected name.
            let (nfds, expected) = match section {
                "valid" => (1, fd_record),
                _ => (
                    c["fd_nfds"].as_u64().unwrap_or(0) as u8,
                    c["expected_fd_name"].as_str(),
                ),
            };
            let layout = c["shape"].as_str().map_or(1, |s| {
                procsync::wire::runc::MountShape::ALL
                    .iter()
                    .position(|m| m.name() == s)
                    .unwrap() as u8
            });
            let mut input = vec![nfds | layout << 2];
            input.extend(&record);
            if let Some(name) = fd_record {
                input.push(0xff);
                input.extend(name.as_bytes());
                if let Some(want) = expected {
                    input.push(0xff);
                    input.extend(want.as_bytes());
                }
            }
            let name: String = c["name"]
                .as_str()
                .unwrap()
                .chars()
                .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '_' })
                .collect();
            let shape = c["shape"]
                .as_str()
                .map(|s| format!("-{}", s.replace('.', "")));
            let key = format!("seed-{section}-{name}{}", shape.unwrap_or_default());
            assert!(
                out.insert(key.clone(), input).is_none(),
                "duplicate seed {key}"
            );
        }
    }
}

/// control_messages seeds: each vector of tests/vectors/transport.json in
/// the target's layout (`checks::cmsg::parse`): receive with a deadline,
/// the fds in one `SCM_RIGHTS` message, a `max_record` as the small limit
/// (16 + 4 × byte 3), a `record_repeat` of 70000 bytes as size mode 3.
fn control_seeds(out: &mut BTreeMap<String, Vec<u8>>) {
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/vectors/transport.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    for c in v["vectors"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let mut b0 = 0u8;
        for o in c["receiver_options"].as_array().into_iter().flatten() {
            b0 |= match o.as_str().unwrap() {
                "SO_PASSCRED" => 1,
                "SO_PASSPIDFD" => 2,
                "SO_PASSSEC" => 4,
                "SO_TIMESTAMP" => 1 << 3,
                other => panic!("{name}: unknown option {other}"),
            };
        }
        if c["sender_credentials"].as_bool() == Some(true) {
            b0 |= 0x20;
        }
        let fds = c["fds"].as_u64().unwrap();
        assert!(fds <= 64, "{name}: at most 64 fds");
        let mut b2 = 0u8;
        let mut b3 = 0u8;
        if let Some(m) = c["max_record"].as_u64() {
            assert!(
                m >= 16 && (m - 16) % 4 == 0 && (m - 16) / 4 < 256,
                "{name}: max_record"
            );
            b2 |= 0x10;
            b3 = ((m - 16) / 4) as u8;
        }
        let mut record = hex_decode(c["record"].as_str().unwrap());
        if let Some(r) = c.get("record_repeat") {
            assert_eq!(
                r["count"], 70000,
                "{name}: only 70000-byte repeats fit the layout"
            );
            b2 |= 3 << 5;
            record = hex_decode(r["hex"].as_str().unwrap());
        }
        let mut input = vec![b0, fds as u8, b2, b3];
        input.extend(record);
        out.insert(format!("seed-{name}"), input);
    }
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().path())
            .filter(|p| p.is_file())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

// record_fds counts the process's open fds: nothing else in this binary
// may open files while it runs (each test holds `support::serial()`).

#[test]
fn seed_corpus_is_current() {
    let _g = support::serial();
    if package::not_shipped("fuzz", "comparing fuzz/corpus with the seeds") {
        return;
    }
    let bless = std::env::var_os("PROCSYNC_BLESS").is_some();
    for (target, _) in targets() {
        let dir = Path::new(ROOT).join("fuzz/corpus").join(target);
        let want = seeds(target);
        assert!(!want.is_empty(), "{target}: no seeds");
        if bless {
            std::fs::create_dir_all(&dir).unwrap();
            for old in files(&dir) {
                if old
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("seed-")
                {
                    std::fs::remove_file(old).unwrap();
                }
            }
            for (name, data) in &want {
                std::fs::write(dir.join(name), data).unwrap();
            }
        }
        for (name, data) in &want {
            let got = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(
                &got == data,
                "fuzz/corpus/{target}/{name} is stale; run PROCSYNC_BLESS=1 cargo test --test fuzz_corpus"
            );
        }
    }
}

#[test]
fn replay_corpus_and_regressions() {
    let _g = support::serial();
    if package::not_shipped("fuzz", "replaying fuzz/corpus and fuzz/regressions") {
        for (target, check) in targets() {
            let seeds = seeds(target);
            for (name, data) in &seeds {
                let r = std::panic::catch_unwind(|| check(data));
                assert!(r.is_ok(), "{target}: seed {name} breaks an invariant");
            }
            println!("{target}: replayed {} seeds (packaged crate)", seeds.len());
        }
        return;
    }
    for (target, check) in targets() {
        let mut n = 0;
        for sub in ["fuzz/corpus", "fuzz/regressions"] {
            for path in files(&Path::new(ROOT).join(sub).join(target)) {
                let data = std::fs::read(&path).unwrap();
                let r = std::panic::catch_unwind(|| check(&data));
                assert!(
                    r.is_ok(),
                    "{target}: {} breaks an invariant",
                    path.display()
                );
                n += 1;
            }
        }
        assert!(
            n >= seeds(target).len(),
            "{target}: corpus missing ({n} inputs)"
        );
        println!("{target}: replayed {n} inputs");
    }
}

/// The control_messages model agrees with the golden transport vectors:
/// for every vector, `checks::cmsg::expect` on its seed gives the vector's
/// expected message or error kind and origin (the model is independent of
/// procsync's transport; the vectors are the contract).
#[test]
fn control_model_matches_transport_vectors() {
    use checks::cmsg::{expect, parse, Expect};
    let text =
        std::fs::read_to_string(Path::new(ROOT).join("tests/vectors/transport.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut seeds = BTreeMap::new();
    control_seeds(&mut seeds);
    for c in v["vectors"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let case = parse(&seeds[&format!("seed-{name}")]).unwrap();
        // Without a labelling security module (SO_PASSSEC adds nothing) and
        // on a kernel with SO_PASSPIDFD, as the vectors assume.
        match (expect(&case, None, true), c["expect"].get("error")) {
            (Expect::Message(m), None) => {
                assert_eq!(m.has_fd(), c["fds_kept"] == 1, "{name}");
            }
            (Expect::Error(kind, origin), Some(e)) => {
                assert_eq!(kind, e["kind"], "{name}");
                assert_eq!(origin, e["origin"], "{name}");
            }
            (got, _) => panic!("{name}: model says {got:?}, vector {}", c["expect"]),
        }
    }
    assert_eq!(
        checks::cmsg::control_buffer() as u64,
        if cfg!(target_pointer_width = "64") {
            96
        } else {
            60
        },
    );
    assert_eq!(v["control_buffer"]["fds"], 5);
}

/// `SO_PASSPIDFD` comes from `libc`: check it against the installed kernel
/// headers when they are new enough to define it (Linux 6.5), and against
/// the kernel itself (a receiver with it set gets a pidfd, which procsync
/// closes: the control_messages seeds with it count fds).
#[test]
fn so_passpidfd_matches_the_headers() {
    let _g = support::serial();
    assert_eq!(checks::cmsg::SO_PASSPIDFD, 76);
    let header = "/usr/include/asm-generic/socket.h";
    let text = std::fs::read_to_string(header).unwrap_or_default();
    let defined = text.lines().find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next() == Some("#define") && w.next() == Some("SO_PASSPIDFD"))
            .then(|| w.next().unwrap().parse::<i32>().unwrap())
    });
    match defined {
        Some(n) => assert_eq!(n, checks::cmsg::SO_PASSPIDFD, "{header}"),
        None => println!(
            "SKIP header check: {header} does not define SO_PASSPIDFD (headers before Linux 6.5)"
        ),
    }
    if !checks::cmsg::pidfd_supported() {
        println!("SKIP kernel check: this kernel refuses SO_PASSPIDFD (before Linux 6.5)");
    }
}
