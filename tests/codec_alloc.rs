//! Allocation behaviour of the native codec, measured with a counting global
//! allocator (this test binary has a single test so no other thread allocates
//! while it counts).

mod support;

use bytes::BytesMut;
use procsync::schema::*;
use procsync::wire::{native, Limits};

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

/// `f`'s result, allocator calls and bytes asked for.
fn count<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let (r, cost) = support::alloc::measure(f);
    (r, cost.calls, cost.bytes)
}

#[test]
fn allocation_bounds() {
    let limits = Limits::default();
    let msg = SyncMessage::mount_please(Mount::bind("/srv/shared", "/shared").with_id_mapping(
        IdMapping::ranges(
            vec![IdMap::new(0, 100000, 65536), IdMap::new(65536, 1000, 1)],
            vec![IdMap::new(0, 100000, 65536)],
        ),
    ));
    let mut buf = BytesMut::with_capacity(256);

    // Encoding into a reused buffer never allocates.
    for m in [&msg, &SyncMessage::ready(), &SyncMessage::error("x")] {
        let ((), n, _) = count(|| {
            for _ in 0..100 {
                buf.clear();
                native::encode(m, false, &mut buf, &limits).unwrap();
            }
        });
        assert_eq!(n, 0, "encode into a reused buffer allocated {n} times");
    }
    let reply = SyncMessage::mount_fd(MountSourceKind::OpenTree, "/s");
    let ((), n, _) = count(|| {
        buf.clear();
        native::encode(&reply, true, &mut buf, &limits).unwrap();
    });
    assert_eq!(n, 0);

    // Decoding a Ready allocates nothing at all.
    let ((), n, _) = count(|| {
        native::decode(&[0x02, 0x08, 0x02], 0, &limits).unwrap();
    });
    assert_eq!(n, 0);

    // Rejections before the body is parsed allocate nothing.
    let huge = vec![0u8; 70_000];
    let ((), n, _) = count(|| {
        native::decode(&huge, 0, &limits).unwrap_err();
        native::decode(&[0x05, 0x08], 0, &limits).unwrap_err();
    });
    assert_eq!(n, 0);

    // A hostile record at the size limit cannot make the decoder allocate
    // more than a small multiple of the limit (prost sizes strings and
    // repeated fields from the bytes actually present).
    let lines: Vec<IdMap> = (0..340).map(|i| IdMap::new(i * 10, i * 10, 1)).collect();
    let big = SyncMessage::mount_please(
        Mount {
            data: "d".repeat(58_000),
            ..Mount::bind("/a", "/b")
        }
        .with_id_mapping(IdMapping::ranges(lines.clone(), lines)),
    );
    let mut rec = BytesMut::new();
    native::encode(&big, false, &mut rec, &limits).unwrap();
    let (res, _, bytes) = count(|| native::decode(&rec, 0, &limits));
    res.unwrap();
    assert!(
        bytes <= 4 * limits.max_record(),
        "decoding a {}-byte record allocated {bytes} bytes",
        rec.len()
    );
}
