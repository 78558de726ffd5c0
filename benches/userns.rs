//! User namespace fd creation: procsync's clone helper (fresh and cached)
//! against a Rust reimplementation of runc's approach (spawn /proc/self/exe
//! with CLONE_NEWUSER + PTRACE_TRACEME, wait for the stop, write the maps,
//! open /proc/PID/ns/user, kill and reap).
//!
//! Needs root; prints a reason and does nothing otherwise.
//! Short run: `cargo bench --bench userns -- --warm-up-time 1 --measurement-time 3`.

mod common;

use std::time::Duration;

use common::runc_style_userns;

use criterion::{criterion_group, criterion_main, Criterion};
use procsync::runtime::userns::{self, UsernsCache, UsernsKey};
use procsync::schema::IdMap;

/// The mapping runc's BenchmarkSpawnProc uses (5 lines each side).
fn mapping() -> (Vec<IdMap>, Vec<IdMap>) {
    let uid = vec![
        IdMap::new(0, 1337, 142),
        IdMap::new(150, 0, 1),
        IdMap::new(442, 1111, 12),
        IdMap::new(1000, 9999, 92),
        IdMap::new(9999, 1_000_000, 4),
    ];
    let gid = vec![
        IdMap::new(1, 2337, 142),
        IdMap::new(145, 6, 1),
        IdMap::new(200, 1000, 12),
        IdMap::new(1000, 9888, 92),
        IdMap::new(8999, 1_000_000, 4),
    ];
    (uid, gid)
}

fn map_text(maps: &[IdMap]) -> String {
    maps.iter()
        .map(|m| format!("{} {} {}\n", m.container_id, m.host_id, m.size))
        .collect()
}

fn bench(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("userns bench skipped: creating mapped user namespaces needs root");
        return;
    }
    let (uid, gid) = mapping();
    let mut g = c.benchmark_group("userns_fd");
    // Back to back: bounded by the kernel work per namespace (clone, maps,
    // kill, reap), shared between this thread and the background thread.
    g.bench_function("procsync_fresh_back_to_back", |b| {
        b.iter(|| userns::create(&uid, &gid).expect("create"))
    });
    // Latency to the fd as a runtime sees it: a few namespaces per container,
    // so the background thread has time to refill the stock between calls
    // (the pause is not timed).
    g.bench_function("procsync_fresh_paced", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                std::thread::sleep(Duration::from_micros(300));
                let t = std::time::Instant::now();
                let fd = userns::create(&uid, &gid).expect("create");
                total += t.elapsed();
                drop(fd);
            }
            total
        })
    });
    let cache = UsernsCache::new();
    let key = UsernsKey::new(&uid, &gid);
    drop(cache.get(&uid, &gid).expect("prime"));
    g.bench_function("procsync_cached", |b| {
        b.iter(|| cache.get(&uid, &gid).expect("get"))
    });
    g.bench_function("procsync_cached_prebuilt_key", |b| {
        b.iter(|| cache.get_key(&key).expect("get"))
    });
    let (ut, gt) = (map_text(&uid), map_text(&gid));
    g.bench_function("runc_style_spawn_traceme", |b| {
        b.iter(|| runc_style_userns(&ut, &gt))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30);
    targets = bench
}
criterion_main!(benches);
