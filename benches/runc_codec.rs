//! runc JSON codec throughput, next to the native codec for the same
//! messages. Run: `cargo bench --features runc-compat --bench runc_codec`.

use std::hint::black_box;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use procsync::schema::{IdMap, IdMapping, Mount, MountAttr, SyncMessage};
use procsync::wire::runc::{self, MountShape};
use procsync::wire::{native, Limits};

fn idmapped_mount() -> SyncMessage {
    let mut m = Mount::bind(
        "/var/lib/containers/volumes/web/_data",
        "/usr/share/nginx/html",
    )
    .recursive()
    .with_id_mapping(
        IdMapping::ranges(
            vec![IdMap::new(0, 100_000, 65_536)],
            vec![IdMap::new(0, 100_000, 65_536)],
        )
        .recursive(true),
    );
    m.propagation_flags = vec![1 << 18];
    m.rec_attr = Some(MountAttr {
        attr_set: 1,
        ..Default::default()
    });
    SyncMessage::mount_please(m)
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    for (name, msg) in [
        ("ready", SyncMessage::ready()),
        ("mount_please", idmapped_mount()),
    ] {
        let mut out = Vec::with_capacity(1024);
        c.bench_function(&format!("runc/encode/{name}"), |b| {
            b.iter(|| {
                out.clear();
                runc::encode(black_box(&msg), None, MountShape::V1_2, &limits, &mut out).unwrap();
            })
        });
        let rec = runc::encode(&msg, None, MountShape::V1_2, &limits, &mut Vec::new())
            .unwrap()
            .json
            .to_vec();
        c.bench_function(&format!("runc/decode/{name}"), |b| {
            b.iter(|| {
                runc::decode(black_box(&rec), MountShape::V1_2, &limits)
                    .unwrap()
                    .finish(None)
                    .unwrap()
            })
        });
        let mut buf = BytesMut::with_capacity(1024);
        c.bench_function(&format!("native/encode/{name}"), |b| {
            b.iter(|| {
                buf.clear();
                native::encode(black_box(&msg), false, &mut buf, &limits).unwrap();
            })
        });
        let mut nrec = BytesMut::new();
        native::encode(&msg, false, &mut nrec, &limits).unwrap();
        c.bench_function(&format!("native/decode/{name}"), |b| {
            b.iter(|| native::decode(black_box(&nrec), 0, &limits).unwrap())
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
