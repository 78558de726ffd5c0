//! Runs every vector of `tests/vectors/transport.json` (format:
//! docs/PROTOCOL.md §13) over a real `AF_UNIX` `SOCK_SEQPACKET` socketpair:
//! the receiver's socket options are set with a real `setsockopt`, the
//! record is sent with a raw `sendmsg` carrying the vector's fds (and
//! credentials), and `SyncSocket::recv_deadline` must return the expected
//! message or error kind and origin, with exactly `fds_kept` of the fds
//! that arrived still open; a Ready record sent next must arrive intact.
//! The Go package runs the same file.

mod support;

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::{Duration, Instant};

use prost::Message;
use prost_reflect::{DescriptorPool, DynamicMessage};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, UCred};
use serde_json::Value;

use procsync::schema::{SyncMessage, FILE_DESCRIPTOR_SET};
use procsync::transport::SyncSocket;
use procsync::wire::Limits;

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/transport.json");

use support::fds::enable_socket_option;
use support::{fd_count, serial};

fn load() -> Value {
    serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).expect("valid JSON")
}

fn to_json(msg: &SyncMessage) -> Value {
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).expect("descriptor set");
    let desc = pool.get_message_by_name("procsync.v1.SyncMessage").unwrap();
    let dynm = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice()).unwrap();
    serde_json::to_value(&dynm).unwrap()
}

/// The record's bytes: `record` (hex), or `record_repeat` {hex, count}.
fn record(v: &Value) -> Vec<u8> {
    if let Some(r) = v.get("record_repeat") {
        let unit = hex::decode(r["hex"].as_str().unwrap()).unwrap();
        let count = r["count"].as_u64().unwrap() as usize;
        return unit.repeat(count);
    }
    hex::decode(v["record"].as_str().unwrap()).unwrap()
}

fn option(name: &str) -> libc::c_int {
    match name {
        "SO_PASSCRED" => libc::SO_PASSCRED,
        "SO_PASSPIDFD" => libc::SO_PASSPIDFD,
        "SO_PASSSEC" => libc::SO_PASSSEC,
        "SO_TIMESTAMP" => libc::SO_TIMESTAMP,
        other => panic!("unknown socket option {other}"),
    }
}

/// One raw record with `fds` in one `SCM_RIGHTS` message and, if asked,
/// the sender's own `SCM_CREDENTIALS`.
fn send_raw(sock: BorrowedFd<'_>, bytes: &[u8], fds: &[BorrowedFd<'_>], creds: bool) {
    let mut space =
        [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(64), ScmCredentials(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if creds {
        assert!(anc.push(SendAncillaryMessage::ScmCredentials(UCred {
            pid: rustix::process::getpid(),
            uid: rustix::process::getuid(),
            gid: rustix::process::getgid(),
        })));
    }
    if !fds.is_empty() {
        assert!(anc.push(SendAncillaryMessage::ScmRights(fds)));
    }
    let n =
        rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut anc, SendFlags::NOSIGNAL).unwrap();
    assert_eq!(n, bytes.len());
}

fn deadline() -> Option<Instant> {
    Some(Instant::now() + Duration::from_secs(5))
}

#[test]
fn the_file_is_well_formed() {
    let _g = serial();
    let doc = load();
    assert_eq!(doc["default_max_record"], 65536);
    assert_eq!(doc["control_buffer"]["fds"], 5);
    let vectors = doc["vectors"].as_array().unwrap();
    let mut names = std::collections::BTreeSet::new();
    for v in vectors {
        let name = v["name"].as_str().unwrap();
        assert!(names.insert(name), "duplicate vector {name}");
        assert!(v["fds"].as_u64().unwrap() <= 64, "{name}: at most 64 fds");
        let e = &v["expect"];
        assert!(
            e.get("message").is_some() != e.get("error").is_some(),
            "{name}: exactly one of message and error"
        );
        if let Some(err) = e.get("error") {
            assert!(["local", "peer", "os"].contains(&err["origin"].as_str().unwrap()));
        }
        record(v);
    }
    // What the issue asks to be covered.
    let has = |f: &dyn Fn(&Value) -> bool| vectors.iter().any(f);
    let opts = |v: &Value, o: &str| {
        v.get("receiver_options")
            .and_then(Value::as_array)
            .is_some_and(|a| a.iter().any(|x| x == o))
    };
    assert!(has(&|v| opts(v, "SO_PASSCRED")));
    assert!(has(&|v| opts(v, "SO_PASSPIDFD")));
    assert!(has(&|v| opts(v, "SO_TIMESTAMP")));
    assert!(has(&|v| v["fds"].as_u64().unwrap() > 20));
    assert!(has(&|v| v.get("record_repeat").is_some()));
    assert!(has(
        &|v| record(v).is_empty() && v["fds"].as_u64().unwrap() > 0
    ));
}

#[test]
fn every_vector_over_a_real_socketpair() {
    let _g = serial();
    let doc = load();
    let devnull = std::fs::File::open("/dev/null").unwrap();
    let mut ran = 0;
    for v in doc["vectors"].as_array().unwrap() {
        let name = v["name"].as_str().unwrap();
        let (mut tx, rx) = SyncSocket::pair().unwrap();
        let limits = match v.get("max_record") {
            Some(m) => Limits::with_max_record(m.as_u64().unwrap() as usize),
            None => Limits::default(),
        };
        let mut rx = rx.with_limits(limits);
        let mut skip = None;
        for o in v
            .get("receiver_options")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            let o = o.as_str().unwrap();
            if let Err(e) = enable_socket_option(&rx, option(o)) {
                assert_ne!(o, "SO_PASSCRED", "{name}: {e}");
                skip = Some(format!("{o}: {e}"));
            }
        }
        if let Some(why) = skip {
            println!("SKIP {name}: this kernel refuses {why}");
            continue;
        }
        let before = fd_count();
        let fds = vec![devnull.as_fd(); v["fds"].as_u64().unwrap() as usize];
        let creds = v
            .get("sender_credentials")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        send_raw(tx.as_fd(), &record(v), &fds, creds);
        let got = rx.recv_deadline(deadline());
        let kept = v["fds_kept"].as_u64().unwrap() as usize;
        match (&v["expect"].get("message"), &got) {
            (Some(want), Ok(rec)) => {
                assert_eq!(&to_json(&rec.msg), *want, "{name}");
                assert_eq!(rec.fd.is_some(), kept == 1, "{name}: fd handed over");
            }
            (None, Err(e)) => {
                let want = &v["expect"]["error"];
                assert_eq!(e.kind().as_str(), want["kind"], "{name}: {e:?}");
                assert_eq!(e.origin().as_str(), want["origin"], "{name}: {e:?}");
            }
            (_, other) => panic!("{name}: expected {}, got {other:?}", v["expect"]),
        }
        assert_eq!(
            fd_count(),
            before + kept,
            "{name}: only the handed-over fd stays open"
        );
        drop(got);
        assert_eq!(fd_count(), before, "{name}: fds after");
        // The record was consumed whole: the next one arrives intact.
        tx.send(&SyncMessage::ready(), None).unwrap();
        let next = rx.recv_deadline(deadline());
        match next {
            Ok(r) => assert_eq!(r.msg, SyncMessage::ready(), "{name}: next record"),
            // With SO_TIMESTAMP every record is refused: still one record.
            Err(e) if e.kind().as_str() == "unexpected-control" => {}
            Err(e) => panic!("{name}: next record: {e:?}"),
        }
        assert_eq!(fd_count(), before, "{name}: fds after the next record");
        ran += 1;
    }
    assert!(ran >= 20, "only {ran} vectors ran");
}
