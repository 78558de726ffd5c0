//! Mount source fds: plain and id-mapped (cached user namespace), each from
//! a pinned source (`MountFdService::pinned`: a `dup` / `open_tree` of the
//! pin) and resolved at request time (`MountFdService::new`: `openat2`
//! first); id-mapped with a fresh user namespace, and with one made the runc
//! way (spawn /proc/self/exe + PTRACE_TRACEME), all in one run. The fd is
//! closed outside the timed region except in `*_incl_close`.
//!
//! The pre-pinning figures (a plain `open(O_PATH)` / `open_tree(AT_FDCWD,
//! path)`) come from running this bench at the commit before pinning in the
//! same session (docs/BENCHMARKS.md).
//!
//! Needs root; prints a reason and does nothing otherwise. `open_tree` clones
//! are detached mounts, closed at once: the host's mount table is untouched.
//! Short run: `cargo bench --bench mountfd -- --warm-up-time 1 --measurement-time 3`.

mod common;

use std::os::fd::AsRawFd;
use std::time::Duration;

use common::runc_style_userns;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use procsync::policy::ConfiguredMounts;
use procsync::runtime::MountFdService;
use procsync::schema::{IdMap, IdMapping, Mount};

/// Outputs (source fds) are dropped after each batch of this many, outside
/// the timing: enough to keep the close cost off the figure, few enough to
/// stay far below any fd limit however long the measurement runs.
const BATCH: BatchSize = BatchSize::NumIterations(256);

fn bench(c: &mut Criterion) {
    if !rustix::process::geteuid().is_root() {
        eprintln!("mountfd bench skipped: open_tree/mount_setattr need root");
        return;
    }
    let dir = std::env::temp_dir().join(format!("procsync-mountfd-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("bench dir");
    let src = dir.to_str().unwrap().to_string();
    let m = vec![IdMap::new(0, 100_000, 65_536)];
    let plain = Mount::bind(&src, "/mnt");
    let idmapped = Mount::bind(&src, "/mnt").with_id_mapping(IdMapping::ranges(m.clone(), m));
    let svc = MountFdService::new();
    let pinned = MountFdService::pinned(&ConfiguredMounts::new([plain.clone(), idmapped.clone()]))
        .expect("pin");

    let mut g = c.benchmark_group("mount_source_fd");
    g.bench_function("plain_pinned", |b| {
        b.iter_batched(
            || (),
            |()| pinned.make_source(&plain).expect("plain"),
            BATCH,
        )
    });
    g.bench_function("plain_o_path", |b| {
        b.iter_batched(|| (), |()| svc.make_source(&plain).expect("plain"), BATCH)
    });
    drop(svc.make_source(&idmapped).expect("prime cache"));
    drop(pinned.make_source(&idmapped).expect("prime cache"));
    g.bench_function("idmapped_pinned_cached_userns", |b| {
        b.iter_batched(
            || (),
            |()| pinned.make_source(&idmapped).expect("idmapped"),
            BATCH,
        )
    });
    g.bench_function("idmapped_cached_userns", |b| {
        b.iter_batched(
            || (),
            |()| svc.make_source(&idmapped).expect("idmapped"),
            BATCH,
        )
    });
    g.bench_function("idmapped_fresh_userns", |b| {
        b.iter_batched(
            || (),
            |()| {
                svc.userns_cache().clear();
                svc.make_source(&idmapped).expect("idmapped")
            },
            BATCH,
        )
    });
    g.bench_function("idmapped_runc_style_userns", |b| {
        b.iter_batched(
            || (),
            |()| {
                let ns = runc_style_userns("0 100000 65536\n", "0 100000 65536\n");
                let path = format!("/proc/self/fd/{}", ns.as_raw_fd());
                let req = Mount::bind(&src, "/mnt").with_id_mapping(IdMapping::userns(path));
                svc.make_source(&req)
                    .expect("idmapped via runc-style userns")
            },
            BATCH,
        )
    });
    // Closing a detached id-mapped tree unmounts it; that cost lands wherever
    // the fd is closed (in a runtime: the child, right after attaching).
    g.bench_function("idmapped_cached_userns_incl_close", |b| {
        b.iter(|| svc.make_source(&idmapped).expect("idmapped"))
    });
    g.finish();
    let _ = std::fs::remove_dir(&dir);
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
