//! The runc JSON codec against the golden vectors (tests/vectors/runc.json,
//! printed by Go's encoding/json from runc's struct layouts) and against
//! hand-written edge cases.

use std::collections::HashSet;

use procsync::schema::{
    IdMap, IdMapping, MessageType, Mount, MountAttr, MountSourceKind, SyncMessage,
};
use procsync::wire::runc::{
    self, MountShape, RuncDecodeError, RuncErrorKind, MAX_FD_NAME_LEN, MAX_JSON_DEPTH,
};
use procsync::wire::{ErrorKind, Limits};
use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use serde_json::Value;

fn vectors() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/runc.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("read runc.json")).expect("parse")
}

/// The expected message, given in the proto3 JSON mapping.
fn message_from_proto_json(v: &Value) -> SyncMessage {
    let pool = DescriptorPool::decode(procsync::schema::FILE_DESCRIPTOR_SET).unwrap();
    let desc = pool.get_message_by_name("procsync.v1.SyncMessage").unwrap();
    let dm = DynamicMessage::deserialize(desc, v).expect("proto3 JSON message");
    SyncMessage::decode(dm.encode_to_vec().as_slice()).unwrap()
}

fn str_field<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

/// The layout the tests that are not about layouts use.
const SHAPE: MountShape = MountShape::V1_2;

/// Decodes a JSON record and, when it announces an fd, the fd record.
fn decode_all(
    record: &[u8],
    shape: MountShape,
    fd_record: Option<&[u8]>,
    nfds: usize,
    expected_name: Option<&str>,
) -> Result<SyncMessage, RuncDecodeError> {
    let header = runc::decode(record, shape, &Limits::default())?;
    let name = match fd_record {
        Some(rec) if header.has_fd() => Some(runc::decode_fd_record(rec, nfds, expected_name)?),
        _ => None,
    };
    header.finish(name)
}

#[test]
fn valid_vectors_decode_and_encode_byte_exactly() {
    let v = vectors();
    let valid = v["valid"].as_array().unwrap();
    assert!(valid.len() >= 20, "too few valid vectors");
    let mut types = HashSet::new();
    let mut shapes = HashSet::new();
    for case in valid {
        let name = str_field(case, "name").unwrap();
        let record = str_field(case, "record").unwrap().as_bytes();
        let fd_record = str_field(case, "fd_record");
        let expected = message_from_proto_json(&case["message"]);

        let shape = match str_field(case, "shape") {
            Some(s) => {
                shapes.insert(s.to_owned());
                MountShape::from_name(s).unwrap()
            }
            None => MountShape::V1_2,
        };
        let got = decode_all(record, shape, fd_record.map(str::as_bytes), 1, fd_record)
            .unwrap_or_else(|e| panic!("{name}: decode failed: {e} ({})", e.kind()));
        assert_eq!(got, expected, "{name}: decoded message");

        let mut out = b"prefix".to_vec();
        let recs = runc::encode(&expected, fd_record, shape, &Limits::default(), &mut out)
            .unwrap_or_else(|e| panic!("{name}: encode failed: {e}"));
        assert_eq!(
            String::from_utf8_lossy(recs.json),
            String::from_utf8_lossy(record),
            "{name}: encoded record"
        );
        assert_eq!(
            recs.fd_name,
            fd_record.map(str::as_bytes),
            "{name}: fd record"
        );
        assert!(out.starts_with(b"prefix"), "{name}: encode must append");
        types.insert(expected.kind().unwrap());
    }
    assert_eq!(
        types.len(),
        MessageType::ALL.len(),
        "every message type has a vector"
    );
    assert_eq!(
        shapes,
        MountShape::ALL
            .iter()
            .map(|s| s.name().to_owned())
            .collect::<HashSet<_>>()
    );
}

#[test]
fn invalid_vectors_fail_with_their_kind() {
    let v = vectors();
    let invalid = v["invalid"].as_array().unwrap();
    assert!(invalid.len() >= 40, "too few invalid vectors");
    for case in invalid {
        let name = str_field(case, "name").unwrap();
        let want = str_field(case, "kind").unwrap();
        let record: Vec<u8> = match str_field(case, "record_hex") {
            Some(h) => hex::decode(h).unwrap(),
            None => str_field(case, "record").unwrap_or("").as_bytes().to_vec(),
        };
        let fd_record = str_field(case, "fd_record").map(str::as_bytes);
        let nfds = case
            .get("fd_nfds")
            .and_then(Value::as_u64)
            .map_or(1, |n| n as usize);
        let expected_name = str_field(case, "expected_fd_name");
        let shape = str_field(case, "shape").map_or(MountShape::V1_2, |s| {
            MountShape::from_name(s).unwrap_or_else(|| panic!("{name}: shape {s}"))
        });
        match decode_all(&record, shape, fd_record, nfds, expected_name) {
            Ok(m) => panic!("{name}: accepted as {m:?}, want {want}"),
            Err(e) => assert_eq!(e.kind().as_str(), want, "{name}: {e}"),
        }
    }
}

#[test]
fn every_invalid_kind_named_in_the_brief_is_covered() {
    let v = vectors();
    let kinds: HashSet<&str> = v["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| str_field(c, "kind").unwrap())
        .collect();
    for k in [
        "malformed-body",
        "wrong-type",
        "number-out-of-range",
        "too-deep",
        "missing-payload",
        "unexpected-payload",
        "unknown-type",
        "reserved-flags",
        "missing-fd",
        "too-many-fds",
        "fd-name-mismatch",
        "fd-name-too-long",
        "fd-name-invalid",
        "duplicate-field",
        "noncanonical-key",
        "missing-field",
        "invalid-value",
    ] {
        assert!(kinds.contains(k), "no invalid vector of kind {k}");
    }
}

fn full_mount() -> Mount {
    Mount {
        source: "/srv/a".into(),
        destination: "/b".into(),
        device: "bind".into(),
        flags: 0x5000,
        cleared_flags: 8,
        propagation_flags: vec![1 << 18],
        data: "x=1".into(),
        rec_attr: Some(MountAttr {
            attr_set: 1,
            attr_clr: 2,
            propagation: 3,
            userns_fd: 4,
        }),
        id_mapping: Some(IdMapping::ranges(
            vec![IdMap::new(0, 1000, 1)],
            vec![IdMap::new(0, 2000, 1)],
        )),
        extensions: 1,
        relabel: "z".into(),
    }
}

#[test]
fn shapes_print_as_go_does() {
    let limits = Limits::default();
    let m = Mount::bind("/s", "/d");
    let mut out = Vec::new();
    let r = runc::encode(
        &SyncMessage::mount_please(m.clone()),
        None,
        MountShape::V1_2,
        &limits,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        std::str::from_utf8(r.json).unwrap(),
        r#"{"type":"procMountPlease","flags":0,"arg":{"source":"/s","destination":"/d","device":"bind","flags":4096,"cleared_flags":0,"propagation_flags":null,"data":"","relabel":"","rec_attr":null,"extensions":0}}"#
    );
    let mut out = Vec::new();
    let r = runc::encode(
        &SyncMessage::mount_please(m),
        None,
        MountShape::V1_4,
        &limits,
        &mut out,
    )
    .unwrap();
    assert_eq!(
        std::str::from_utf8(r.json).unwrap(),
        r#"{"type":"procMountPlease","flags":0,"arg":{"source":"/s","destination":"/d","device":"bind","flags":4096}}"#
    );
}

#[test]
fn both_shapes_round_trip_every_field() {
    let msg = SyncMessage::mount_please(full_mount());
    for shape in [MountShape::V1_2, MountShape::V1_4] {
        let mut out = Vec::new();
        let r = runc::encode(&msg, None, shape, &Limits::default(), &mut out).unwrap();
        let back = runc::decode(r.json, shape, &Limits::default())
            .unwrap()
            .finish(None)
            .unwrap();
        assert_eq!(back, msg, "{shape:?}");
    }
    // runc ≥ 1.5 has no relabel: everything else survives.
    let mut out = Vec::new();
    let r = runc::encode(&msg, None, MountShape::V1_5, &Limits::default(), &mut out).unwrap();
    assert!(!String::from_utf8_lossy(r.json).contains("relabel"));
    let back = runc::decode(r.json, MountShape::V1_5, &Limits::default())
        .unwrap()
        .finish(None)
        .unwrap();
    let mut want = full_mount();
    want.relabel.clear();
    assert_eq!(back, SyncMessage::mount_please(want));
}

#[test]
fn decoding_tolerates_what_go_tolerates() {
    let limits = Limits::default();
    let ok = |s: &str| -> SyncMessage {
        runc::decode(s.as_bytes(), SHAPE, &limits)
            .and_then(|h| h.finish(None))
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    };
    // Whitespace, key order, unknown keys (any value, any depth), null arg.
    assert_eq!(
        ok(" {\n\"flags\" : 0 ,\"type\":\"procReady\", \"x\":{\"y\":[1,2.5e3,null,true]}}\t"),
        SyncMessage::ready()
    );
    assert_eq!(
        ok(r#"{"type":"procRun","flags":0,"arg":null}"#),
        SyncMessage::run()
    );
    // Escapes Go may print (pre-1.22 \u0008) or other writers may use.
    assert_eq!(
        ok(r#"{"type":"procError","flags":0,"arg":{"message":"\u0041\/\u0008\ud83d\ude00"}}"#),
        SyncMessage::error("A/\u{8}😀")
    );
    assert_eq!(
        ok(r#"{"type":"procError","flags":0,"arg":{"message":""}}"#),
        SyncMessage::error("")
    );
    // v1.2 nulls and an empty array mean absent.
    let m = ok(
        r#"{"type":"procMountPlease","flags":0,"arg":{"source":"/s","destination":"/d","device":"bind","flags":4096,"propagation_flags":[],"rec_attr":null,"id_mapping":null}}"#,
    );
    assert_eq!(m, SyncMessage::mount_please(Mount::bind("/s", "/d")));
}

/// Issue 12.17: runc ba0b5e269 (the seed commit) sends an id-mapped mount
/// with top-level `uid_mappings`/`gid_mappings`. On main these keys were
/// ignored and the request decoded as a plain bind; now every layout but the
/// seed's refuses them (`unknown-field`), and the seed layout reads them as
/// the non-recursive id mapping they are.
#[test]
fn a_key_outside_the_layout_is_never_dropped() {
    let limits = Limits::default();
    let seed = br#"{"type":"procMountPlease","flags":0,"arg":{"source":"/s","destination":"/d","device":"bind","flags":20480,"cleared_flags":0,"propagation_flags":null,"data":"","relabel":"","rec_attr":null,"extensions":0,"uid_mappings":[{"container_id":0,"host_id":100000,"size":65536}],"gid_mappings":[{"container_id":0,"host_id":100000,"size":65536}]}}"#;
    for shape in [MountShape::V1_2, MountShape::V1_4, MountShape::V1_5] {
        let e = runc::decode(seed, shape, &limits).unwrap_err();
        assert_eq!(e.kind(), RuncErrorKind::UnknownField, "{shape:?}: {e}");
    }
    let m = runc::decode(seed, MountShape::Seed, &limits)
        .unwrap()
        .finish(None)
        .unwrap();
    let want = Mount::bind("/s", "/d")
        .recursive()
        .with_id_mapping(IdMapping::ranges(
            vec![IdMap::new(0, 100000, 65536)],
            vec![IdMap::new(0, 100000, 65536)],
        ));
    assert_eq!(m, SyncMessage::mount_please(want.clone()));
    // And it prints back byte for byte as the seed's Go code printed it.
    let mut out = Vec::new();
    let r = runc::encode(&m, None, MountShape::Seed, &limits, &mut out).unwrap();
    assert_eq!(r.json, &seed[..]);
    // What the seed layout cannot say is refused, not dropped.
    for idm in [
        IdMapping::userns("/proc/1/ns/user"),
        IdMapping::ranges(vec![IdMap::new(0, 1, 1)], vec![IdMap::new(0, 1, 1)]).recursive(true),
    ] {
        let msg = SyncMessage::mount_please(Mount::bind("/s", "/d").with_id_mapping(idm));
        let e = runc::encode(&msg, None, MountShape::Seed, &limits, &mut Vec::new()).unwrap_err();
        assert_eq!(e.kind(), RuncErrorKind::Unrepresentable, "{e}");
    }
    // The seed layout in turn refuses the later id_mapping object, v1.5
    // refuses relabel, and unknown keys inside id_mapping, id-map lines and
    // rec_attr are refused too; unknown top-level keys are still ignored.
    for (shape, rec) in [
        (
            MountShape::Seed,
            r#""id_mapping":{"userns_path":"/proc/1/ns/user"}"#,
        ),
        (MountShape::V1_5, r#""relabel":"Z""#),
        (
            MountShape::V1_2,
            r#""id_mapping":{"userns_path":"/p","uid_maps":[]}"#,
        ),
        (MountShape::V1_4, r#""rec_attr":{"Attr_set":1,"Flags":2}"#),
        (
            MountShape::V1_2,
            r#""id_mapping":{"uid_mappings":[{"container_id":0,"host_id":0,"size":1,"nsid":3}]}"#,
        ),
    ] {
        let r = format!(
            r#"{{"type":"procMountPlease","flags":0,"arg":{{"source":"/s","destination":"/d","device":"bind",{rec}}}}}"#
        );
        let e = runc::decode(r.as_bytes(), shape, &limits).unwrap_err();
        assert_eq!(e.kind(), RuncErrorKind::UnknownField, "{shape:?} {r}: {e}");
    }
}

#[test]
fn depth_cap_is_exact() {
    let nest = |n: usize| {
        format!(
            r#"{{"type":"procReady","flags":0,"x":{}{}}}"#,
            "[".repeat(n),
            "]".repeat(n)
        )
    };
    // The record object itself is level 1.
    assert!(runc::decode(
        nest(MAX_JSON_DEPTH - 1).as_bytes(),
        SHAPE,
        &Limits::default()
    )
    .is_ok());
    let e = runc::decode(nest(MAX_JSON_DEPTH).as_bytes(), SHAPE, &Limits::default()).unwrap_err();
    assert_eq!(e.kind(), RuncErrorKind::TooDeep);
    // Deep nesting far past the cap is refused without recursing into it.
    let e = runc::decode(
        nest(20_000).as_bytes(),
        SHAPE,
        &Limits::with_max_record(64 * 1024),
    )
    .unwrap_err();
    assert_eq!(e.kind(), RuncErrorKind::TooDeep);
}

#[test]
fn oversized_records_are_refused_before_parsing() {
    let limits = Limits::with_max_record(1024);
    let big = vec![b'{'; 1025];
    assert_eq!(
        runc::decode(&big, SHAPE, &limits).unwrap_err(),
        RuncDecodeError::TooLarge {
            size: 1025,
            max: 1024
        }
    );
    // Exactly at the limit is parsed (and here rejected for its content).
    let mut rec = br#"{"type":"procReady","flags":0,"pad":""#.to_vec();
    rec.resize(1024 - 2, b'a');
    rec.extend_from_slice(b"\"}");
    assert_eq!(rec.len(), 1024);
    assert_eq!(
        runc::decode(&rec, SHAPE, &limits)
            .unwrap()
            .finish(None)
            .unwrap(),
        SyncMessage::ready()
    );
    assert_eq!(
        runc::decode(b"", SHAPE, &limits).unwrap_err().kind(),
        RuncErrorKind::Wire(ErrorKind::EmptyRecord)
    );
}

#[test]
fn encode_refuses_what_runc_cannot_carry() {
    let limits = Limits::default();
    let enc = |msg: &SyncMessage, fd: Option<&str>| {
        let mut out = Vec::new();
        runc::encode(msg, fd, MountShape::V1_2, &limits, &mut out)
            .map(|_| ())
            .unwrap_err()
            .kind()
            .as_str()
    };
    let mfd = SyncMessage::mount_fd(MountSourceKind::OpenTree, "/src");
    assert_eq!(enc(&mfd, Some("/other")), "fd-name-mismatch");
    assert_eq!(enc(&mfd, None), "missing-fd");
    let no_source = SyncMessage::mount_fd(MountSourceKind::OpenTree, "");
    assert_eq!(enc(&no_source, Some("")), "invalid-value");
    assert_eq!(enc(&SyncMessage::ready(), Some("/x")), "unexpected-fd");
    assert_eq!(
        enc(&SyncMessage::seccomp_attached(), Some("seccomp")),
        "unrepresentable"
    );
    assert_eq!(
        enc(&SyncMessage::seccomp_child_fd(-1), None),
        "invalid-value"
    );
    let mut m = Mount::bind("/s", "/d");
    m.flags = u64::MAX;
    assert_eq!(enc(&SyncMessage::mount_please(m), None), "unrepresentable");
    let mut m = Mount::bind("/s", "/d");
    m.propagation_flags = vec![1 << 63];
    assert_eq!(enc(&SyncMessage::mount_please(m), None), "unrepresentable");
    let long = format!("/{}", "a".repeat(MAX_FD_NAME_LEN));
    let long_mfd = SyncMessage::mount_fd(MountSourceKind::PlainOpen, long.as_str());
    assert_eq!(enc(&long_mfd, Some(&long)), "invalid-value"); // source ≥ PATH_MAX
    let mut m = Mount::bind("/s", "/d");
    m.data = "x".repeat(70_000);
    let mut out = b"keep".to_vec();
    let e = runc::encode(
        &SyncMessage::mount_please(m),
        None,
        MountShape::V1_4,
        &limits,
        &mut out,
    )
    .unwrap_err();
    assert_eq!(e.kind().as_str(), "too-large");
    assert_eq!(out, b"keep", "a refused record leaves the buffer as it was");
}

#[test]
fn fd_record_checks() {
    assert_eq!(runc::decode_fd_record(b"/a", 1, None).unwrap(), "/a");
    let max = format!("/{}", "n".repeat(MAX_FD_NAME_LEN - 1));
    assert_eq!(
        runc::decode_fd_record(max.as_bytes(), 1, Some(&max)).unwrap(),
        max
    );
    let e = runc::decode_fd_record(b"/\xff", 1, None).unwrap_err();
    assert_eq!(e.kind(), RuncErrorKind::FdNameInvalid);
    let e = runc::decode_fd_record(b"/a", 3, None).unwrap_err();
    assert_eq!(e, RuncDecodeError::FdRecordTooManyFds { count: 3 });
    // A name but no HasFd on the header.
    let h = runc::decode(
        br#"{"type":"procReady","flags":0}"#,
        SHAPE,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        h.finish(Some("/a")).unwrap_err().kind().as_str(),
        "unexpected-fd"
    );
}

#[test]
fn errors_name_the_message_type() {
    let e = runc::decode(
        br#"{"type":"procMountPlease","flags":0,"arg":{"source":"/a","destination":"/b","flags":"x"}}"#, SHAPE,
        &Limits::default(),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "procMountPlease: arg.flags: expected integer, got string"
    );
}

mod go_build;
mod support;

mod props {
    use super::*;
    use proptest::prelude::*;

    fn id_map() -> impl Strategy<Value = IdMap> {
        (0u32..1 << 31, 0u32..1 << 31, 1u32..1000).prop_map(|(c, h, n)| IdMap::new(c, h, n))
    }

    fn path() -> impl Strategy<Value = String> {
        "/[a-zA-Z0-9<>&\"\\\\é\u{2028}\t ._-]{0,40}"
    }

    fn mount() -> impl Strategy<Value = Mount> {
        (
            (path(), path(), "[a-z]{0,8}", 0u64..1 << 40, 0u64..1 << 40),
            (
                proptest::collection::vec(0u64..1 << 40, 0..3),
                "[ -~]{0,20}",
                "[zZ]?",
                proptest::option::of(any::<(u64, u64, u64, u64)>()),
                any::<u32>(),
            ),
            proptest::option::of((
                any::<bool>(),
                prop_oneof![Just(None), path().prop_map(Some),],
                id_map(),
                id_map(),
            )),
        )
            .prop_map(
                |(
                    (source, destination, device, flags, cleared_flags),
                    (propagation_flags, data, relabel, attr, extensions),
                    idm,
                )| Mount {
                    source,
                    destination,
                    device,
                    flags,
                    cleared_flags,
                    propagation_flags,
                    data,
                    rec_attr: attr.map(|(a, b, c, d)| MountAttr {
                        attr_set: a,
                        attr_clr: b,
                        propagation: c,
                        userns_fd: d,
                    }),
                    id_mapping: idm.map(|(recursive, userns, u, g)| match userns {
                        Some(p) => IdMapping::userns(p).recursive(recursive),
                        None => IdMapping::ranges(vec![u], vec![g]).recursive(recursive),
                    }),
                    extensions,
                    relabel,
                },
            )
    }

    proptest! {
        #[test]
        fn mounts_round_trip_in_every_shape(m in mount(), i in 0usize..3) {
            let shape = [MountShape::V1_2, MountShape::V1_4, MountShape::V1_5][i];
            let msg = SyncMessage::mount_please(m.clone());
            let mut out = Vec::new();
            let r = runc::encode(&msg, None, shape, &Limits::default(), &mut out).unwrap();
            let back = runc::decode(r.json, shape, &Limits::default()).unwrap().finish(None).unwrap();
            let mut want = m;
            if shape == MountShape::V1_5 {
                want.relabel.clear();
            }
            prop_assert_eq!(back, SyncMessage::mount_please(want));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = runc::decode(&bytes, SHAPE, &Limits::default()).map(|h| h.finish(None));
            let _ = runc::decode_fd_record(&bytes, 1, Some("/a"));
        }

        #[test]
        fn mutated_records_never_panic(
            m in mount(),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let mut out = Vec::new();
            runc::encode(&SyncMessage::mount_please(m), None, MountShape::V1_2, &Limits::default(), &mut out).unwrap();
            for (i, b) in flips {
                let at = i.index(out.len());
                out[at] = b;
            }
            let _ = runc::decode(&out, SHAPE, &Limits::default()).map(|h| h.finish(None));
        }
    }
}

/// The codec against the independent Go peer (go/runcpeer) over real
/// seqpacket sockets and real processes: a minimal record layer here (peek
/// the size, read the record, fds via SCM_RIGHTS), the codec above it.
/// Skipped, with a printed reason, when no Go toolchain is installed.
mod interop {
    use super::*;
    use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
    use rustix::net::{
        recv, recvmsg, sendmsg, socketpair, sockopt, AddressFamily, RecvAncillaryBuffer,
        RecvAncillaryMessage, RecvFlags, ReturnFlags, SendAncillaryBuffer, SendAncillaryMessage,
        SendFlags, SocketFlags, SocketType,
    };
    use std::io::{IoSlice, IoSliceMut};
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::sync::OnceLock;
    use std::time::Duration;

    fn peer() -> Option<&'static Path> {
        static BIN: OnceLock<Option<PathBuf>> = OnceLock::new();
        super::go_build::go_binary(&BIN, "runcpeer")
    }

    struct Sock(OwnedFd);

    impl Sock {
        fn send(&self, record: &[u8], fd: Option<BorrowedFd<'_>>) {
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
            let mut cmsg = SendAncillaryBuffer::new(&mut space);
            let fds;
            if let Some(fd) = fd {
                fds = [fd];
                assert!(cmsg.push(SendAncillaryMessage::ScmRights(&fds)));
            }
            let n = sendmsg(
                &self.0,
                &[IoSlice::new(record)],
                &mut cmsg,
                SendFlags::empty(),
            )
            .unwrap();
            assert_eq!(n, record.len());
        }

        /// One record and its fds; an empty record means EOF.
        fn recv(&self) -> (Vec<u8>, Vec<OwnedFd>) {
            let (_, size) = recv(
                &self.0,
                &mut [0u8; 0][..],
                RecvFlags::PEEK | RecvFlags::TRUNC,
            )
            .expect("peek (timed out?)");
            let mut buf = vec![0u8; size];
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(4))];
            let mut cmsg = RecvAncillaryBuffer::new(&mut space);
            let msg = recvmsg(
                &self.0,
                &mut [IoSliceMut::new(&mut buf)],
                &mut cmsg,
                RecvFlags::CMSG_CLOEXEC,
            )
            .unwrap();
            let mut fds = Vec::new();
            for m in cmsg.drain() {
                if let RecvAncillaryMessage::ScmRights(it) = m {
                    fds.extend(it);
                }
            }
            assert!(!msg.flags.contains(ReturnFlags::CTRUNC | ReturnFlags::TRUNC));
            assert_eq!(msg.bytes, size);
            (buf, fds)
        }
    }

    /// Starts the Go peer with the far end of a seqpacket pair as `-fd N`.
    fn spawn(args: &[&str]) -> (Sock, Child) {
        let (ours, theirs) = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::empty(),
            None,
        )
        .unwrap();
        rustix::io::fcntl_setfd(&ours, rustix::io::FdFlags::CLOEXEC).unwrap();
        sockopt::set_socket_timeout(&ours, sockopt::Timeout::Recv, Some(Duration::from_secs(10)))
            .unwrap();
        let child = Command::new(peer().unwrap())
            .args(args)
            .args(["-fd", &theirs.as_raw_fd().to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(theirs);
        (Sock(ours), child)
    }

    fn finish(child: Child) -> (bool, String) {
        let out = child.wait_with_output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// procsync as runc's parent, answering the Go child's init flow.
    fn serve(sock: &Sock, child_pid: u32, shape: MountShape) -> Vec<String> {
        let limits = Limits::default();
        let mut transcript = Vec::new();
        loop {
            let (rec, fds) = sock.recv();
            if rec.is_empty() {
                transcript.push("eof".to_string());
                return transcript;
            }
            assert!(fds.is_empty(), "the JSON record carries no fd");
            let msg = runc::decode(&rec, SHAPE, &limits)
                .and_then(|h| h.finish(None))
                .unwrap();
            let mut out = Vec::new();
            match msg.kind().unwrap() {
                MessageType::MountPlease => {
                    let src = msg.mount().unwrap().source.clone();
                    let fd = rustix::fs::open(
                        src.as_str(),
                        rustix::fs::OFlags::PATH | rustix::fs::OFlags::CLOEXEC,
                        rustix::fs::Mode::empty(),
                    )
                    .unwrap();
                    let reply = SyncMessage::mount_fd(MountSourceKind::PlainOpen, src.as_str());
                    let recs = runc::encode(&reply, Some(&src), shape, &limits, &mut out).unwrap();
                    sock.send(recs.json, None);
                    sock.send(recs.fd_name.unwrap(), Some(fd.as_fd()));
                    transcript.push(format!("mount {src}"));
                }
                MessageType::Seccomp => {
                    let Some(procsync::schema::SeccompTransfer::ChildFd(n)) =
                        msg.seccomp_transfer()
                    else {
                        panic!("seccomp without a child fd");
                    };
                    let pid = rustix::process::Pid::from_raw(child_pid as i32).unwrap();
                    let pidfd =
                        rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
                            .unwrap();
                    let copy = rustix::process::pidfd_getfd(
                        &pidfd,
                        n,
                        rustix::process::PidfdGetfdFlags::empty(),
                    )
                    .unwrap();
                    drop(copy);
                    let recs =
                        runc::encode(&SyncMessage::seccomp_done(), None, shape, &limits, &mut out)
                            .unwrap();
                    sock.send(recs.json, None);
                    transcript.push(format!("seccomp {n}"));
                }
                ty => {
                    let reply = SyncMessage::new(ty.reply().expect("a request"));
                    let recs = runc::encode(&reply, None, shape, &limits, &mut out).unwrap();
                    sock.send(recs.json, None);
                    transcript.push(ty.name().to_string());
                }
            }
        }
    }

    #[test]
    fn procsync_parent_serves_go_child() {
        if peer().is_none() {
            return;
        }
        // Serialized: the test hands a non-CLOEXEC fd to a child process, so no
        // other spawned process may inherit it.
        let _g = crate::support::serial();
        let (d1, d2) = (tempdir("a"), tempdir("b"));
        for shape in ["v1.2", "v1.4"] {
            let mut args = vec!["child", "-mode", "init", "-shape", shape];
            let m1 = format!("{d1}:/one");
            let m2 = format!("{d2}:/two");
            args.extend(["-mount", &m1, "-mount", &m2]);
            let root = rustix::process::geteuid().is_root();
            if root {
                args.extend(["-seccomp-fd", "2"]);
            }
            let (sock, child) = spawn(&args);
            let pid = child.id();
            let transcript = serve(&sock, pid, MountShape::from_name(shape).unwrap());
            let (ok, out) = finish(child);
            assert!(ok, "{shape}: go child failed:\n{out}");
            let mut want = vec![
                format!("mount {d1}"),
                format!("mount {d2}"),
                "Hooks".into(),
                "Ready".into(),
            ];
            if root {
                want.push("seccomp 2".into());
            }
            want.push("eof".into());
            assert_eq!(transcript, want, "{shape}");
            assert!(
                out.contains(&format!("mountfd {d1} plain-open ok")),
                "{out}"
            );
            assert!(
                out.contains(&format!("mountfd {d2} plain-open ok")),
                "{out}"
            );
        }
    }

    #[test]
    fn procsync_child_against_go_parent() {
        if peer().is_none() {
            return;
        }
        // Serialized: the test hands a non-CLOEXEC fd to a child process, so no
        // other spawned process may inherit it.
        let _g = crate::support::serial();
        let limits = Limits::default();
        let dir = tempdir("c");
        let (sock, parent) = spawn(&["parent"]);
        let mut out = Vec::new();
        let req = SyncMessage::mount_please(Mount::bind(dir.as_str(), "/data").recursive());
        sock.send(
            runc::encode(&req, None, MountShape::V1_2, &limits, &mut out)
                .unwrap()
                .json,
            None,
        );
        let (rec, fds) = sock.recv();
        assert!(fds.is_empty());
        let header = runc::decode(&rec, SHAPE, &limits).unwrap();
        assert!(header.has_fd());
        let (name, fds) = sock.recv();
        let name = runc::decode_fd_record(&name, fds.len(), Some(dir.as_str())).unwrap();
        let msg = header.finish(Some(name)).unwrap();
        assert_eq!(
            msg.mount_fd_info().unwrap().kind(),
            MountSourceKind::PlainOpen
        );
        let got = rustix::fs::fstat(&fds[0]).unwrap();
        let want = rustix::fs::stat(dir.as_str()).unwrap();
        assert_eq!((got.st_dev, got.st_ino), (want.st_dev, want.st_ino));
        for (req, reply) in [
            (SyncMessage::hooks(), MessageType::HooksDone),
            (SyncMessage::ready(), MessageType::Run),
        ] {
            out.clear();
            sock.send(
                runc::encode(&req, None, MountShape::V1_2, &limits, &mut out)
                    .unwrap()
                    .json,
                None,
            );
            let (rec, _) = sock.recv();
            let msg = runc::decode(&rec, SHAPE, &limits)
                .and_then(|h| h.finish(None))
                .unwrap();
            assert_eq!(msg.kind(), Some(reply));
        }
        drop(sock);
        let (ok, text) = finish(parent);
        assert!(ok, "go parent failed:\n{text}");
        assert!(text.contains("parent: eof"), "{text}");
    }

    #[test]
    fn errors_cross_in_both_directions() {
        if peer().is_none() {
            return;
        }
        // Serialized: the test hands a non-CLOEXEC fd to a child process, so no
        // other spawned process may inherit it.
        let _g = crate::support::serial();
        let limits = Limits::default();
        // Go child -> procsync parent.
        let (sock, child) = spawn(&[
            "child",
            "-mode",
            "error",
            "-error-msg",
            "init failed: <x> & \"y\"",
        ]);
        let (rec, _) = sock.recv();
        let msg = runc::decode(&rec, SHAPE, &limits)
            .and_then(|h| h.finish(None))
            .unwrap();
        assert_eq!(msg.error_message(), Some("init failed: <x> & \"y\""));
        assert!(finish(child).0);
        // Go parent refuses a mount -> procsync child gets procError.
        let dir = tempdir("d");
        let (sock, parent) = spawn(&["parent", "-fail-on", dir.as_str()]);
        let mut out = Vec::new();
        let req = SyncMessage::mount_please(Mount::bind(dir.as_str(), "/x"));
        sock.send(
            runc::encode(&req, None, MountShape::V1_4, &limits, &mut out)
                .unwrap()
                .json,
            None,
        );
        let (rec, _) = sock.recv();
        let msg = runc::decode(&rec, SHAPE, &limits)
            .and_then(|h| h.finish(None))
            .unwrap();
        assert!(
            msg.error_message()
                .unwrap()
                .contains("refusing mount source"),
            "{msg:?}"
        );
        drop(sock);
        let (ok, _) = finish(parent);
        assert!(!ok, "the parent reports the refused mount as a failure");
    }

    /// A directory removed on drop.
    struct TempDir(String);

    impl std::ops::Deref for TempDir {
        type Target = String;
        fn deref(&self) -> &String {
            &self.0
        }
    }

    impl std::fmt::Display for TempDir {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(&self.0)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn tempdir(tag: &str) -> TempDir {
        let d = std::env::temp_dir().join(format!("procsync-runc-{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        TempDir(d.to_str().unwrap().to_owned())
    }
}

/// Issue 12.7: the runc encoder's invalid-message error names its rule once
/// in a whole error chain.
#[test]
fn an_invalid_message_error_names_its_rule_once_in_the_chain() {
    use procsync::wire::ValidationError;
    use std::error::Error as _;
    let err = procsync::wire::runc::RuncEncodeError::from(ValidationError::UnspecifiedType);
    let chain = procsync::session::error_chain(&err);
    assert_eq!(
        chain
            .matches(&ValidationError::UnspecifiedType.to_string())
            .count(),
        1,
        "{chain}"
    );
    assert!(err.source().is_none());
}
