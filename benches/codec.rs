//! Codec speed: encode+decode of a MountPlease with id mappings (target ≤ 1 µs
//! on the project's machine) and of a Ready, each encoding into a reused
//! buffer. A plain prost length-delimited round trip of the same message is
//! measured in the same run as the baseline.

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, Criterion};
use prost::Message;
use std::hint::black_box;

use procsync::schema::*;
use procsync::wire::{native, Limits};

fn mount_please() -> SyncMessage {
    SyncMessage::mount_please(
        Mount::bind("/var/lib/containers/storage/volumes/data", "/data")
            .recursive()
            .with_id_mapping(
                IdMapping::ranges(
                    vec![IdMap::new(0, 100000, 65536), IdMap::new(65536, 1000, 1)],
                    vec![IdMap::new(0, 100000, 65536)],
                )
                .recursive(true),
            ),
    )
}

fn bench(c: &mut Criterion) {
    let limits = Limits::default();
    let mut g = c.benchmark_group("codec");
    for (name, msg) in [
        ("mount_please_idmap", mount_please()),
        ("ready", SyncMessage::ready()),
    ] {
        let mut buf = BytesMut::with_capacity(512);
        g.bench_function(format!("{name}/procsync_encode_decode"), |b| {
            b.iter(|| {
                buf.clear();
                native::encode(black_box(&msg), false, &mut buf, &limits).unwrap();
                black_box(native::decode(black_box(&buf), 0, &limits).unwrap())
            })
        });
        let mut vbuf = Vec::with_capacity(512);
        g.bench_function(format!("{name}/prost_baseline"), |b| {
            b.iter(|| {
                vbuf.clear();
                black_box(&msg).encode_length_delimited(&mut vbuf).unwrap();
                black_box(SyncMessage::decode_length_delimited(black_box(&vbuf[..])).unwrap())
            })
        });
        g.bench_function(format!("{name}/procsync_encode"), |b| {
            b.iter(|| {
                buf.clear();
                native::encode(black_box(&msg), false, &mut buf, &limits).unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
