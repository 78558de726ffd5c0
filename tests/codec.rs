//! Behaviour of the native codec beyond the golden vectors: what the encoder
//! refuses, how it sets HasFd, and its limits. Allocation counts live in
//! `codec_alloc.rs` (it needs its own global allocator).

use bytes::BytesMut;
use procsync::schema::*;
use procsync::wire::{native, EncodeError, ErrorKind, Limits, ValidationError};

fn idmapped() -> SyncMessage {
    SyncMessage::mount_please(Mount::bind("/srv/shared", "/shared").with_id_mapping(
        IdMapping::ranges(
            vec![IdMap::new(0, 100000, 65536)],
            vec![IdMap::new(0, 100000, 65536)],
        ),
    ))
}

#[test]
fn encoder_sets_has_fd_from_the_attachment_not_the_caller() {
    let mut lying = SyncMessage::mount_fd(MountSourceKind::OpenTree, "/s");
    lying.flags = 0; // claims no fd
    let mut buf = BytesMut::new();
    native::encode(&lying, true, &mut buf, &Limits::default()).unwrap();
    let back = native::decode(&buf, 1, &Limits::default()).unwrap();
    assert!(back.has_fd());

    // A Ready that claims HasFd but sends none is encoded without it.
    let mut claims = SyncMessage::ready();
    claims.flags = FLAG_HAS_FD;
    buf.clear();
    native::encode(&claims, false, &mut buf, &Limits::default()).unwrap();
    assert_eq!(&buf[..], &[0x02, 0x08, 0x02]);
}

#[test]
fn encoder_refuses_invalid_messages() {
    let mut buf = BytesMut::new();
    let l = Limits::default();
    let err = native::encode(&SyncMessage::ready(), true, &mut buf, &l).unwrap_err();
    assert!(matches!(
        err,
        EncodeError::Invalid(ValidationError::UnexpectedFd { .. })
    ));
    let err = native::encode(
        &SyncMessage::mount_fd(MountSourceKind::OpenTree, "/s"),
        false,
        &mut buf,
        &l,
    )
    .unwrap_err();
    assert!(matches!(
        err,
        EncodeError::Invalid(ValidationError::MissingFd { .. })
    ));
    let err = native::encode(&SyncMessage::error(""), false, &mut buf, &l).unwrap_err();
    assert_eq!(
        err,
        EncodeError::Invalid(ValidationError::InvalidValue {
            ty: MessageType::Error,
            field: "error.message",
            reason: "empty"
        })
    );
    let mut reserved = SyncMessage::ready();
    reserved.flags = 4;
    let err = native::encode(&reserved, false, &mut buf, &l).unwrap_err();
    assert!(matches!(
        err,
        EncodeError::Invalid(ValidationError::ReservedFlags { .. })
    ));
    assert!(buf.is_empty(), "nothing is written for a refused message");
}

#[test]
fn encoder_refuses_oversize_before_writing() {
    let mut buf = BytesMut::new();
    let big = SyncMessage::error("x".repeat(100));
    let err = native::encode(&big, false, &mut buf, &Limits::with_max_record(64)).unwrap_err();
    assert_eq!(
        err,
        EncodeError::TooLarge {
            ty: MessageType::Error,
            size: 107,
            max: 64
        }
    );
    assert!(buf.is_empty());
}

#[test]
fn limits_are_clamped_below_the_kernel_ceiling() {
    assert_eq!(
        Limits::with_max_record(1 << 30).max_record(),
        procsync::wire::MAX_RECORD_CEILING
    );
    assert_eq!(Limits::with_max_record(0).max_record(), 16);
}

#[test]
fn decode_rejects_records_over_the_limit_before_parsing() {
    // A syntactically broken record that is also too large reports too-large:
    // the size check runs before any parsing or allocation.
    let rec = vec![0xffu8; 100];
    let err = native::decode(&rec, 0, &Limits::with_max_record(64)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::TooLarge);
}

#[test]
fn largest_legal_message_round_trips() {
    // 340 lines on each side: the kernel's maximum.
    let lines: Vec<IdMap> = (0..340)
        .map(|i| IdMap::new(i * 100, 200000 + i * 100, 100))
        .collect();
    let msg = SyncMessage::mount_please(
        Mount::bind("/srv/a", "/a").with_id_mapping(IdMapping::ranges(lines.clone(), lines)),
    );
    let mut buf = BytesMut::new();
    native::encode(&msg, false, &mut buf, &Limits::default()).unwrap();
    assert!(buf.len() < procsync::wire::DEFAULT_MAX_RECORD);
    assert_eq!(native::decode(&buf, 0, &Limits::default()).unwrap(), msg);
}

#[test]
fn every_message_kind_round_trips() {
    let cases = [
        (SyncMessage::error("boom"), false),
        (SyncMessage::ready(), false),
        (SyncMessage::run(), false),
        (SyncMessage::hooks(), false),
        (SyncMessage::hooks_done(), false),
        (idmapped(), false),
        (
            SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/srv"),
            true,
        ),
        (SyncMessage::seccomp_attached(), true),
        (SyncMessage::seccomp_child_fd(3), false),
        (SyncMessage::seccomp_done(), false),
    ];
    let mut seen = std::collections::HashSet::new();
    for (msg, fd) in cases {
        let mut buf = BytesMut::new();
        native::encode(&msg, fd, &mut buf, &Limits::default()).unwrap();
        let back = native::decode(&buf, usize::from(fd), &Limits::default()).unwrap();
        assert_eq!(back.kind(), msg.kind());
        assert_eq!(back.payload, msg.payload);
        assert_eq!(back.has_fd(), fd);
        seen.insert(back.kind().unwrap());
    }
    assert_eq!(seen.len(), MessageType::ALL.len());
}

#[test]
fn errors_name_type_field_and_reason() {
    let rec = {
        let mut b = BytesMut::new();
        let mut m = Mount::bind("/s", "/d");
        m.source = "relative".into();
        // Bypass validation to build the bad record.
        let body = prost::Message::encode_to_vec(&SyncMessage::mount_please(m));
        prost::encoding::encode_varint(body.len() as u64, &mut b);
        b.extend_from_slice(&body);
        b
    };
    let err = native::decode(&rec, 0, &Limits::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "MountPlease: invalid mount_please.source: not an absolute path"
    );
}

/// Issue 12.7: an invalid-message error names its rule once in a whole error
/// chain (it used to show the rule in its text *and* return it as the
/// source, so the chain — and the Error reply built from it — said it twice).
#[test]
fn an_invalid_message_error_names_its_rule_once_in_the_chain() {
    use std::error::Error as _;
    let mut buf = BytesMut::new();
    let err =
        native::encode(&SyncMessage::ready(), true, &mut buf, &Limits::default()).unwrap_err();
    let EncodeError::Invalid(rule) = &err else {
        panic!("expected Invalid, got {err:?}");
    };
    let chain = procsync::session::error_chain(&err);
    assert_eq!(chain.matches(&rule.to_string()).count(), 1, "{chain}");
    assert!(
        err.source().is_none(),
        "the rule is in the text, not a source"
    );
}
