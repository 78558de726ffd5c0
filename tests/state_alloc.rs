//! The state machine never allocates: a whole conversation, every rejection
//! and the formatting of an error into a reused buffer, measured with a
//! counting global allocator (one test in this binary, so no other thread
//! allocates while it counts).

mod support;

use std::fmt::Write as _;

use procsync::schema::MessageType as T;
use procsync::state::{Flow, Machine, Role};

#[global_allocator]
static GLOBAL: support::alloc::Counting = support::alloc::Counting;

#[test]
fn conversation_and_rejections_do_not_allocate() {
    let mut text = String::with_capacity(512);
    let before = support::alloc::calls();

    let mut parent = Machine::new(Role::Parent, Flow::Init);
    let mut child = Machine::new(Role::Child, Flow::Init);
    let script = [
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
    ];
    for (sender, ty) in script {
        let (from, to) = match sender {
            Role::Parent => (&mut parent, &mut child),
            Role::Child => (&mut child, &mut parent),
        };
        from.on_send(ty).unwrap();
        to.on_recv(ty).unwrap();
    }
    // Rejections, and formatting them into a buffer that is big enough.
    let e = parent.on_send(T::Run).unwrap_err();
    write!(text, "{e}").unwrap();
    text.clear();
    let e = parent.on_recv(T::Ready).unwrap_err();
    write!(text, "{e}").unwrap();
    let mut early = Machine::new(Role::Parent, Flow::Exec);
    let e = early.on_peer_closed().unwrap_err();
    text.clear();
    write!(text, "{e}").unwrap();
    child.on_close();

    let allocs = support::alloc::calls() - before;
    assert_eq!(allocs, 0, "the state machine allocated; last error: {text}");
    assert!(text.contains("child closed without Ready"));
}
