//! State-machine speed: a whole init conversation (three mounts, hooks,
//! ready, seccomp, close) driven through a parent and a child machine, and
//! one rejected message with its error formatted into a reused buffer.

use criterion::{criterion_group, criterion_main, Criterion};
use std::fmt::Write as _;
use std::hint::black_box;

use procsync::schema::MessageType as T;
use procsync::state::{Flow, Machine, Role};

const SCRIPT: [(Role, T); 14] = [
    (Role::Child, T::MountPlease),
    (Role::Parent, T::MountFd),
    (Role::Child, T::MountPlease),
    (Role::Parent, T::MountFd),
    (Role::Child, T::MountPlease),
    (Role::Parent, T::MountFd),
    (Role::Child, T::Hooks),
    (Role::Parent, T::HooksDone),
    (Role::Child, T::Ready),
    (Role::Parent, T::Run),
    (Role::Child, T::Seccomp),
    (Role::Parent, T::SeccompDone),
    // Two illegal ones at the end, rejected by both sides.
    (Role::Child, T::Ready),
    (Role::Parent, T::Run),
];

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("state");
    g.bench_function("init_conversation_both_sides", |b| {
        b.iter(|| {
            let mut parent = Machine::new(Role::Parent, Flow::Init);
            let mut child = Machine::new(Role::Child, Flow::Init);
            let mut rejected = 0u32;
            for (sender, ty) in black_box(SCRIPT) {
                let (from, to) = match sender {
                    Role::Parent => (&mut parent, &mut child),
                    Role::Child => (&mut child, &mut parent),
                };
                if from.on_send(ty).is_err() || to.on_recv(ty).is_err() {
                    rejected += 1;
                }
            }
            let _ = child.on_peer_closed();
            let _ = parent.on_peer_closed();
            black_box((parent, child, rejected))
        })
    });
    let mut text = String::with_capacity(256);
    g.bench_function("reject_and_format", |b| {
        b.iter(|| {
            let mut parent = Machine::new(Role::Parent, Flow::Exec);
            let e = parent.on_recv(black_box(T::MountPlease)).unwrap_err();
            text.clear();
            write!(text, "{e}").unwrap();
            black_box(text.len())
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
