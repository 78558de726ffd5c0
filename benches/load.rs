//! Load throughput: 64 concurrent parent/child pairs, each child a real
//! process (this bench binary re-executed with `PROCSYNC_TEST_ROLE` set),
//! each parent a thread, running init conversations of 50 MountPlease →
//! MountFd round trips (one real fd each) plus Hooks and Ready, with a
//! fresh state machine per conversation (the same code as `tests/load.rs`,
//! which checks correctness; this measures).
//!
//! Criterion's throughput is messages (both directions) per second of the
//! exchange; spawning the 64 children is outside the timed part. A final
//! line reports one larger run's messages/s and fds/s.
//!
//! Short run: `cargo bench --bench load -- --warm-up-time 1 --measurement-time 5`.

#[path = "../tests/common/load_peer.rs"]
mod load_peer;
#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use criterion::{Criterion, Throughput};

const PAIRS: usize = 64;
const MOUNTS: u64 = 50;

/// Runs `conversations` per pair; the exchange's wall time. Panics on any
/// lost, reordered or failed message.
fn timed_run(conversations: u64) -> Duration {
    let run = load_peer::run(PAIRS, conversations, MOUNTS);
    for s in &run.served {
        if let Err(e) = s {
            panic!("{e}");
        }
    }
    for (pair, c) in run.children.into_iter().enumerate() {
        let (status, line) = load_peer::finish(c);
        assert!(status.success(), "child {pair}: {status:?}: {line}");
    }
    run.wall
}

fn messages_per_conversation_all_pairs() -> u64 {
    PAIRS as u64 * 2 * (MOUNTS + 2)
}

fn main() {
    // A re-executed child runs its conversations and exits here.
    load_peer::load_peer_main();

    let mut c = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    {
        let mut g = c.benchmark_group("load_64_pairs");
        g.throughput(Throughput::Elements(messages_per_conversation_all_pairs()));
        // One iteration = one conversation on each of the 64 pairs.
        g.bench_function("conversation_per_pair", |b| {
            b.iter_custom(|iters| timed_run(iters.max(1)))
        });
        g.finish();
    }
    c.final_summary();

    let conversations = 100;
    let wall = timed_run(conversations).as_secs_f64();
    let messages = messages_per_conversation_all_pairs() * conversations;
    let fds = PAIRS as u64 * MOUNTS * conversations;
    println!(
        "\nload: {PAIRS} pairs x {conversations} conversations x ({MOUNTS} mounts + hooks + ready): \
         {messages} messages, {fds} fds in {wall:.2} s: {:.0} messages/s, {:.0} fds/s",
        messages as f64 / wall,
        fds as f64 / wall
    );
}
