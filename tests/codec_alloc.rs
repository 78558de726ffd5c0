//! Allocation behaviour of the native codec, measured with a counting global
//! allocator (this test binary has a single test so no other thread allocates
//! while it counts).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::BytesMut;
use procsync::schema::*;
use procsync::wire::{native, Limits};

struct Counting;
static ALLOCS: AtomicUsize = AtomicUsize::new(0);
static BYTES: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        BYTES.fetch_add(layout.size(), Ordering::SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCS.fetch_add(1, Ordering::SeqCst);
        BYTES.fetch_add(new_size, Ordering::SeqCst);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count<R>(f: impl FnOnce() -> R) -> (R, usize, usize) {
    let a = ALLOCS.load(Ordering::SeqCst);
    let b = BYTES.load(Ordering::SeqCst);
    let r = f();
    (
        r,
        ALLOCS.load(Ordering::SeqCst) - a,
        BYTES.load(Ordering::SeqCst) - b,
    )
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
