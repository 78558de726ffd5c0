//! The golden vectors in `tests/vectors/native.json` are the contract every
//! implementation of the native wire is held to (the Go package reads the very
//! same file). This test checks the Rust codec against them:
//!
//! * every valid vector decodes (with its fd count) to exactly the message
//!   given in proto3 JSON, and that message encodes back byte-exactly;
//! * every invalid vector is rejected with exactly its error kind;
//! * the file is what `valid_cases()`/`invalid_cases()` below generate, so the
//!   vectors cannot drift from the code that documents them. Regenerate with
//!   `PROCSYNC_BLESS=1 cargo test --test vectors`.

use bytes::BytesMut;
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::{json, Value};

use procsync::schema::*;
use procsync::wire::{native, ErrorKind, Limits};

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/native.json");

fn pool() -> DescriptorPool {
    DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set")
}

fn to_json(msg: &SyncMessage) -> Value {
    let desc = pool()
        .get_message_by_name("procsync.v1.SyncMessage")
        .unwrap();
    let dynm = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).unwrap();
    serde_json::to_value(&dynm).unwrap()
}

fn from_json(v: &Value) -> SyncMessage {
    let desc = pool()
        .get_message_by_name("procsync.v1.SyncMessage")
        .unwrap();
    let dynm = DynamicMessage::deserialize(desc, v).expect("proto3 JSON message");
    dynm.transcode_to().unwrap()
}

/// Frames `msg` exactly as given (flags included), bypassing validation, so
/// invalid messages can be written.
fn raw(msg: &SyncMessage) -> Vec<u8> {
    let body = msg.encode_to_vec();
    let mut out = Vec::new();
    prost::encoding::encode_varint(body.len() as u64, &mut out);
    out.extend_from_slice(&body);
    out
}

fn with_flags(mut m: SyncMessage, flags: u32) -> SyncMessage {
    m.flags = flags;
    m
}

fn bind(src: &str, dst: &str) -> Mount {
    Mount::bind(src, dst)
}

fn idmapped(m: Mount, uid: Vec<IdMap>, gid: Vec<IdMap>) -> SyncMessage {
    SyncMessage::mount_please(m.with_id_mapping(IdMapping::ranges(uid, gid)))
}

/// (name, message, fd attached, note)
fn valid_cases() -> Vec<(&'static str, SyncMessage, bool, &'static str)> {
    let full = Mount {
        source: "/var/lib/data".into(),
        destination: "/data".into(),
        device: "bind".into(),
        flags: ms::BIND | ms::REC | ms::RDONLY | ms::NOSUID,
        cleared_flags: ms::NOEXEC,
        propagation_flags: vec![ms::PRIVATE, ms::SLAVE],
        data: "mode=755".into(),
        rec_attr: Some(MountAttr {
            attr_set: 0x1,
            attr_clr: 0x2,
            propagation: ms::PRIVATE,
            userns_fd: 0,
        }),
        id_mapping: None,
        extensions: 1,
        relabel: "Z".into(),
    };
    vec![
        (
            "error",
            SyncMessage::error("mount /data: permission denied"),
            false,
            "child reports a failure",
        ),
        (
            "error_utf8",
            SyncMessage::error("échec ✗"),
            false,
            "UTF-8 message",
        ),
        (
            "ready",
            SyncMessage::ready(),
            false,
            "smallest record: 3 bytes",
        ),
        ("run", SyncMessage::run(), false, ""),
        ("hooks", SyncMessage::hooks(), false, ""),
        ("hooks_done", SyncMessage::hooks_done(), false, ""),
        (
            "mount_please_bind",
            SyncMessage::mount_please(bind("/srv/a", "/a")),
            false,
            "plain bind mount request",
        ),
        (
            "mount_please_full",
            SyncMessage::mount_please(full),
            false,
            "every Mount field set",
        ),
        (
            "mount_please_idmap_ranges",
            SyncMessage::mount_please(
                bind("/srv/shared", "/shared").recursive().with_id_mapping(
                    IdMapping::ranges(
                        vec![IdMap::new(0, 100000, 65536), IdMap::new(65536, 1000, 1)],
                        vec![IdMap::new(0, 100000, 65536)],
                    )
                    .recursive(true),
                ),
            ),
            false,
            "id-mapped, recursive, two uid lines",
        ),
        (
            "mount_please_idmap_max_range",
            idmapped(
                bind("/srv/x", "/x"),
                vec![
                    IdMap::new(0, 0, u32::MAX),
                    IdMap::new(u32::MAX, u32::MAX, 1),
                ],
                vec![IdMap::new(1, 1, 1)],
            ),
            false,
            "ranges ending exactly at 2^32 are valid",
        ),
        (
            "mount_please_idmap_userns",
            SyncMessage::mount_please(
                bind("/srv/b", "/b").with_id_mapping(IdMapping::userns("/proc/1234/ns/user")),
            ),
            false,
            "id mapping taken from an existing user namespace",
        ),
        (
            "mount_fd_open_tree",
            SyncMessage::mount_fd(MountSourceKind::OpenTree, "/srv/shared"),
            true,
            "detached open_tree clone, fd attached",
        ),
        (
            "mount_fd_plain_open",
            SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/srv/a"),
            true,
            "O_PATH fd attached",
        ),
        (
            "seccomp_attached",
            SyncMessage::seccomp_attached(),
            true,
            "notify fd attached",
        ),
        (
            "seccomp_child_fd",
            SyncMessage::seccomp_child_fd(7),
            false,
            "parent copies fd 7 with pidfd_getfd",
        ),
        (
            "seccomp_child_fd_zero",
            SyncMessage::seccomp_child_fd(0),
            false,
            "fd 0 is encoded (oneof member has presence)",
        ),
        ("seccomp_done", SyncMessage::seccomp_done(), false, ""),
    ]
}

/// Decode-only vectors: valid records that do not re-encode to the same bytes
/// (compatibility rules). (name, record, nfds, expected message, note)
fn compat_cases() -> Vec<(&'static str, Vec<u8>, usize, SyncMessage, &'static str)> {
    // Ready followed by an unknown field 50 (varint 1): ignored.
    let mut unknown = vec![0x08, 0x02, 0x90, 0x03, 0x01];
    let mut rec = vec![unknown.len() as u8];
    rec.append(&mut unknown);
    // Run with type encoded twice: last one wins (protobuf rule).
    let twice = vec![0x04, 0x08, 0x02, 0x08, 0x03];
    vec![
        (
            "compat_unknown_field",
            rec,
            0,
            SyncMessage::ready(),
            "unknown fields are ignored",
        ),
        (
            "compat_repeated_scalar",
            twice,
            0,
            SyncMessage::run(),
            "a repeated scalar field: the last value wins",
        ),
    ]
}

/// (name, record, nfds, max_record override, error kind, note)
#[allow(clippy::type_complexity)]
fn invalid_cases() -> Vec<(
    &'static str,
    Vec<u8>,
    usize,
    Option<usize>,
    ErrorKind,
    &'static str,
)> {
    use ErrorKind as K;
    let ready = raw(&SyncMessage::ready());
    let mut trailing = ready.clone();
    trailing.push(0);
    let m = |m: Mount| raw(&SyncMessage::mount_please(m));
    let idm = |uid: Vec<IdMap>, gid: Vec<IdMap>| raw(&idmapped(bind("/s", "/d"), uid, gid));
    let many: Vec<IdMap> = (0..341).map(|i| IdMap::new(i * 10, i * 10, 1)).collect();
    let long_path = format!("/{}", "a".repeat(4095));
    let mut v = vec![
        (
            "empty_record",
            vec![],
            0,
            None,
            K::EmptyRecord,
            "zero bytes (reads as EOF on a socket)",
        ),
        (
            "truncated_length",
            vec![0x80],
            0,
            None,
            K::TruncatedLength,
            "varint continuation with nothing after",
        ),
        (
            "truncated_length_2",
            vec![0xff, 0xff],
            0,
            None,
            K::TruncatedLength,
            "",
        ),
        (
            "malformed_length_overlong",
            vec![0xff; 11],
            0,
            None,
            K::MalformedLength,
            "more than 10 varint bytes",
        ),
        (
            "malformed_length_non_minimal",
            vec![0x82, 0x00, 0x08, 0x02],
            0,
            None,
            K::MalformedLength,
            "length 2 written in two bytes",
        ),
        (
            "length_mismatch_trailing",
            trailing,
            0,
            None,
            K::LengthMismatch,
            "a byte after the body (prost alone accepts it)",
        ),
        (
            "length_mismatch_short",
            vec![0x03, 0x08, 0x02],
            0,
            None,
            K::LengthMismatch,
            "body shorter than declared",
        ),
        (
            "too_large",
            raw(&SyncMessage::error("x".repeat(32))),
            0,
            Some(16),
            K::TooLarge,
            "record over max_record (here 16)",
        ),
        (
            "malformed_body",
            vec![0x02, 0x12, 0x05],
            0,
            None,
            K::MalformedBody,
            "length-delimited field with no data",
        ),
        (
            "malformed_body_wire_type",
            vec![0x02, 0x0d, 0x00],
            0,
            None,
            K::MalformedBody,
            "truncated fixed32",
        ),
        (
            "unspecified_type_empty_body",
            vec![0x00],
            0,
            None,
            K::UnspecifiedType,
            "empty body decodes to the default message",
        ),
        (
            "unspecified_type_flags_only",
            vec![0x02, 0x10, 0x00],
            0,
            None,
            K::UnspecifiedType,
            "",
        ),
        (
            "unknown_type",
            vec![0x02, 0x08, 0x0a],
            0,
            None,
            K::UnknownType,
            "type 10 is reserved",
        ),
        (
            "unknown_type_negative",
            raw(&SyncMessage {
                r#type: -1,
                flags: 0,
                payload: None,
            }),
            0,
            None,
            K::UnknownType,
            "",
        ),
        (
            "reserved_flags",
            raw(&with_flags(SyncMessage::ready(), 2)),
            0,
            None,
            K::ReservedFlags,
            "bit 1 is reserved",
        ),
        (
            "reserved_flags_high",
            raw(&with_flags(SyncMessage::ready(), 0x8000_0001)),
            1,
            None,
            K::ReservedFlags,
            "",
        ),
        (
            "missing_fd_has_fd_set",
            raw(&with_flags(SyncMessage::ready(), 1)),
            0,
            None,
            K::MissingFd,
            "HasFd set, no fd came",
        ),
        (
            "missing_fd_mount_fd",
            raw(&SyncMessage::mount_fd(MountSourceKind::OpenTree, "/s")),
            0,
            None,
            K::MissingFd,
            "MountFd needs an fd",
        ),
        (
            "missing_fd_seccomp_attached",
            raw(&SyncMessage::seccomp_attached()),
            0,
            None,
            K::MissingFd,
            "",
        ),
        (
            "unexpected_fd_flag_clear",
            ready.clone(),
            1,
            None,
            K::UnexpectedFd,
            "fd came with HasFd clear",
        ),
        (
            "unexpected_fd_type",
            raw(&with_flags(SyncMessage::ready(), 1)),
            1,
            None,
            K::UnexpectedFd,
            "Ready never carries an fd",
        ),
        (
            "unexpected_fd_seccomp_child_fd",
            raw(&with_flags(SyncMessage::seccomp_child_fd(3), 1)),
            1,
            None,
            K::UnexpectedFd,
            "",
        ),
        (
            "too_many_fds",
            raw(&with_flags(
                SyncMessage::mount_fd(MountSourceKind::OpenTree, "/s"),
                1,
            )),
            2,
            None,
            K::TooManyFds,
            "two fds in one record",
        ),
        (
            "too_many_fds_three",
            raw(&with_flags(
                SyncMessage::mount_fd(MountSourceKind::OpenTree, "/s"),
                1,
            )),
            3,
            None,
            K::TooManyFds,
            "",
        ),
        (
            "missing_payload_error",
            raw(&SyncMessage::new(MessageType::Error)),
            0,
            None,
            K::MissingPayload,
            "Error without a message",
        ),
        (
            "missing_payload_mount_please",
            raw(&SyncMessage::new(MessageType::MountPlease)),
            0,
            None,
            K::MissingPayload,
            "MountPlease without a mount",
        ),
        (
            "missing_payload_mount_fd",
            raw(&with_flags(SyncMessage::new(MessageType::MountFd), 1)),
            1,
            None,
            K::MissingPayload,
            "",
        ),
        (
            "missing_payload_seccomp",
            raw(&SyncMessage::new(MessageType::Seccomp)),
            0,
            None,
            K::MissingPayload,
            "",
        ),
        (
            "unexpected_payload_ready",
            raw(&SyncMessage {
                payload: SyncMessage::error("x").payload,
                ..SyncMessage::ready()
            }),
            0,
            None,
            K::UnexpectedPayload,
            "Ready with an argument",
        ),
        (
            "unexpected_payload_wrong_kind",
            raw(&SyncMessage {
                payload: SyncMessage::error("x").payload,
                ..SyncMessage::new(MessageType::MountPlease)
            }),
            0,
            None,
            K::UnexpectedPayload,
            "MountPlease carrying an error payload",
        ),
        (
            "invalid_error_empty_message",
            raw(&SyncMessage::error("")),
            0,
            None,
            K::InvalidValue,
            "Error with an empty message",
        ),
        (
            "invalid_source_empty",
            m(bind("", "/d")),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_source_relative",
            m(bind("srv/a", "/d")),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_destination_relative",
            m(bind("/s", "d")),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_destination_empty",
            m(bind("/s", "")),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_source_nul",
            m(bind("/s\0x", "/d")),
            0,
            None,
            K::InvalidValue,
            "NUL in a path",
        ),
        (
            "invalid_data_nul",
            m(Mount {
                data: "a\0b".into(),
                ..bind("/s", "/d")
            }),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_source_too_long",
            m(bind(&long_path, "/d")),
            0,
            None,
            K::InvalidValue,
            "path of PATH_MAX bytes",
        ),
        (
            "invalid_idmap_empty_range",
            idm(vec![IdMap::new(0, 0, 0)], vec![IdMap::new(0, 0, 1)]),
            0,
            None,
            K::InvalidValue,
            "size 0",
        ),
        (
            "invalid_idmap_overflow_host",
            idm(vec![IdMap::new(0, u32::MAX, 2)], vec![IdMap::new(0, 0, 1)]),
            0,
            None,
            K::InvalidValue,
            "host_id+size > 2^32",
        ),
        (
            "invalid_idmap_overflow_container",
            idm(vec![IdMap::new(0, 0, 1)], vec![IdMap::new(u32::MAX, 0, 2)]),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_idmap_too_many_lines",
            idm(many, vec![IdMap::new(0, 0, 1)]),
            0,
            None,
            K::InvalidValue,
            "341 lines, the kernel takes 340",
        ),
        (
            "invalid_idmap_overlap",
            idm(
                vec![IdMap::new(0, 0, 10), IdMap::new(5, 100, 10)],
                vec![IdMap::new(0, 0, 1)],
            ),
            0,
            None,
            K::InvalidValue,
            "container ranges overlap",
        ),
        (
            "invalid_idmap_overlap_host",
            idm(
                vec![IdMap::new(0, 0, 10)],
                vec![IdMap::new(0, 0, 10), IdMap::new(20, 9, 2)],
            ),
            0,
            None,
            K::InvalidValue,
            "host ranges overlap",
        ),
        (
            "invalid_idmap_no_gid",
            idm(vec![IdMap::new(0, 0, 1)], vec![]),
            0,
            None,
            K::InvalidValue,
            "uid ranges without gid ranges",
        ),
        (
            "invalid_idmap_empty",
            raw(&SyncMessage::mount_please(
                bind("/s", "/d").with_id_mapping(IdMapping::default()),
            )),
            0,
            None,
            K::InvalidValue,
            "id mapping with neither ranges nor userns path",
        ),
        (
            "invalid_idmap_path_and_ranges",
            raw(&SyncMessage::mount_please(
                bind("/s", "/d").with_id_mapping(IdMapping {
                    userns_path: "/proc/1/ns/user".into(),
                    ..IdMapping::ranges(vec![IdMap::new(0, 0, 1)], vec![IdMap::new(0, 0, 1)])
                }),
            )),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_idmap_userns_relative",
            raw(&SyncMessage::mount_please(
                bind("/s", "/d").with_id_mapping(IdMapping::userns("proc/1/ns/user")),
            )),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_mount_fd_kind_unspecified",
            raw(&with_flags(
                SyncMessage::mount_fd(MountSourceKind::Unspecified, "/s"),
                1,
            )),
            1,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_mount_fd_kind_unknown",
            raw(&with_flags(
                SyncMessage {
                    payload: Some(Payload::MountFd(MountFdInfo {
                        kind: 9,
                        source: "/s".into(),
                    })),
                    ..SyncMessage::new(MessageType::MountFd)
                },
                1,
            )),
            1,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_mount_fd_source_relative",
            raw(&with_flags(
                SyncMessage::mount_fd(MountSourceKind::PlainOpen, "s"),
                1,
            )),
            1,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_seccomp_no_transfer",
            raw(&SyncMessage {
                payload: Some(Payload::Seccomp(SeccompInfo { transfer: None })),
                ..SyncMessage::new(MessageType::Seccomp)
            }),
            0,
            None,
            K::InvalidValue,
            "",
        ),
        (
            "invalid_seccomp_negative_fd",
            raw(&SyncMessage::seccomp_child_fd(-1)),
            0,
            None,
            K::InvalidValue,
            "",
        ),
    ];
    // The record must not be accepted with a larger limit either: too_large is
    // checked first, the message itself is fine.
    v.sort_by_key(|c| c.0);
    v
}

fn generate() -> Value {
    let valid: Vec<Value> = valid_cases()
        .into_iter()
        .map(|(name, msg, fd, note)| {
            let mut buf = BytesMut::new();
            native::encode(&msg, fd, &mut buf, &Limits::default()).unwrap();
            // The JSON carries the message as it is on the wire (HasFd included).
            let mut wire_msg = msg.clone();
            wire_msg.flags = if fd { FLAG_HAS_FD } else { 0 };
            json!({"name": name, "record": hex::encode(&buf), "fds": usize::from(fd),
                   "message": to_json(&wire_msg), "note": note})
        })
        .collect();
    let compat: Vec<Value> = compat_cases()
        .into_iter()
        .map(|(name, rec, nfds, msg, note)| {
            json!({"name": name, "record": hex::encode(rec), "fds": nfds,
                   "message": to_json(&msg), "note": note})
        })
        .collect();
    let invalid: Vec<Value> = invalid_cases()
        .into_iter()
        .map(|(name, rec, nfds, max, kind, note)| {
            let mut o = json!({"name": name, "record": hex::encode(rec), "fds": nfds,
                               "error": kind.as_str(), "note": note});
            if let Some(max) = max {
                o["max_record"] = json!(max);
            }
            o
        })
        .collect();
    json!({
        "format": "procsync native wire golden vectors, version 1 (see docs/PROTOCOL.md §Golden vectors)",
        "default_max_record": procsync::wire::DEFAULT_MAX_RECORD,
        "valid": valid,
        "decode_only": compat,
        "invalid": invalid,
    })
}

fn load() -> Value {
    let text = std::fs::read_to_string(PATH).expect("tests/vectors/native.json");
    serde_json::from_str(&text).expect("valid JSON")
}

fn limits_for(v: &Value) -> Limits {
    match v.get("max_record").and_then(Value::as_u64) {
        Some(max) => Limits::with_max_record(max as usize),
        None => Limits::default(),
    }
}

#[test]
fn vectors_file_is_current() {
    let generated = serde_json::to_string_pretty(&generate()).unwrap() + "\n";
    if std::env::var_os("PROCSYNC_BLESS").is_some() {
        std::fs::write(PATH, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        on_disk == generated,
        "tests/vectors/native.json is stale; regenerate with PROCSYNC_BLESS=1 cargo test --test vectors"
    );
}

#[test]
fn valid_vectors_decode_and_encode_byte_exactly() {
    let v = load();
    let cases = v["valid"].as_array().unwrap();
    assert!(cases.len() >= 17);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let record = hex::decode(c["record"].as_str().unwrap()).unwrap();
        let nfds = c["fds"].as_u64().unwrap() as usize;
        let expected = from_json(&c["message"]);
        let got = native::decode(&record, nfds, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, expected, "{name}: decoded message");
        let mut buf = BytesMut::new();
        native::encode(&expected, nfds == 1, &mut buf, &Limits::default()).unwrap();
        assert_eq!(hex::encode(&buf), hex::encode(&record), "{name}: encoding");
        assert_eq!(
            native::encoded_len(&expected, nfds == 1),
            record.len(),
            "{name}"
        );
        // Our encoder agrees with prost's own encoding of the same message.
        let mut prost_rec = Vec::new();
        expected.encode_length_delimited(&mut prost_rec).unwrap();
        assert_eq!(prost_rec, record, "{name}: prost agrees");
    }
}

#[test]
fn decode_only_vectors_decode() {
    let v = load();
    for c in v["decode_only"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let record = hex::decode(c["record"].as_str().unwrap()).unwrap();
        let nfds = c["fds"].as_u64().unwrap() as usize;
        let got = native::decode(&record, nfds, &Limits::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(got, from_json(&c["message"]), "{name}");
    }
}

#[test]
fn invalid_vectors_fail_with_their_kind() {
    let v = load();
    let cases = v["invalid"].as_array().unwrap();
    let mut kinds = std::collections::BTreeSet::new();
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let record = hex::decode(c["record"].as_str().unwrap()).unwrap();
        let nfds = c["fds"].as_u64().unwrap() as usize;
        let want = c["error"].as_str().unwrap();
        let err = native::decode(&record, nfds, &limits_for(c))
            .expect_err(&format!("{name}: must be rejected"));
        assert_eq!(err.kind().as_str(), want, "{name}: {err}");
        // Every message is printable and names the problem.
        assert!(!err.to_string().is_empty());
        kinds.insert(want.to_string());
    }
    // Every error kind of the codec has at least one vector.
    for k in [
        ErrorKind::EmptyRecord,
        ErrorKind::TruncatedLength,
        ErrorKind::MalformedLength,
        ErrorKind::LengthMismatch,
        ErrorKind::TooLarge,
        ErrorKind::MalformedBody,
        ErrorKind::UnspecifiedType,
        ErrorKind::UnknownType,
        ErrorKind::ReservedFlags,
        ErrorKind::MissingFd,
        ErrorKind::UnexpectedFd,
        ErrorKind::TooManyFds,
        ErrorKind::MissingPayload,
        ErrorKind::UnexpectedPayload,
        ErrorKind::InvalidValue,
    ] {
        assert!(kinds.contains(k.as_str()), "no vector for {k}");
    }
}
