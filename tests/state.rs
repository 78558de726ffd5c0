//! The legal-order state machine against a hand-written expectation table
//! (every role, flow, state, direction and message type), against an
//! independent regular-expression recognizer of the grammar (proptest), and
//! in named scenarios.

use procsync::policy::{ConfiguredMounts, MountPolicy};
use procsync::schema::{MessageType as T, Mount};
use procsync::state::{
    Direction, Event, Flow, Machine, Origin, Role, State, StateError, StateErrorKind, TypeSet,
};
use proptest::prelude::*;

#[path = "support/checks.rs"]
mod checks;
use checks::grammar::{grammar, machine_accepts, reference_accepts, token, valid_prefix, Ev};

const C: Role = Role::Child;
const P: Role = Role::Parent;

/// Every type a caller can pass, including the never-valid `Unspecified`.
const EVERY_TYPE: [T; 10] = [
    T::Unspecified,
    T::Error,
    T::Ready,
    T::Run,
    T::Hooks,
    T::HooksDone,
    T::MountPlease,
    T::MountFd,
    T::Seccomp,
    T::SeccompDone,
];

// ---------------------------------------------------------------------------
// The expectation table, written out by hand from runc's child code and the
// parent-Error decision: (state, who sends, type, next state). Everything not
// listed is illegal.
// ---------------------------------------------------------------------------

const LEGAL: &[(State, Role, T, State)] = &[
    (State::Mounting, C, T::MountPlease, State::AwaitMountFd),
    (State::Mounting, C, T::Hooks, State::AwaitHooksDone),
    (State::Mounting, C, T::Error, State::Failed),
    (State::AwaitMountFd, P, T::MountFd, State::Mounting),
    (State::AwaitMountFd, P, T::Error, State::Failed),
    (State::AwaitMountFd, C, T::Error, State::Failed),
    (State::AwaitHooksDone, P, T::HooksDone, State::BeforeReady),
    (State::AwaitHooksDone, P, T::Error, State::Failed),
    (State::AwaitHooksDone, C, T::Error, State::Failed),
    (State::BeforeReady, C, T::Ready, State::AwaitRun),
    (State::BeforeReady, C, T::Error, State::Failed),
    (State::AwaitRun, P, T::Run, State::Running),
    (State::AwaitRun, P, T::Error, State::Failed),
    (State::AwaitRun, C, T::Error, State::Failed),
    (State::Running, C, T::Seccomp, State::AwaitSeccompDone),
    (State::Running, C, T::Error, State::Failed),
    (
        State::AwaitSeccompDone,
        P,
        T::SeccompDone,
        State::AfterSeccomp,
    ),
    (State::AwaitSeccompDone, P, T::Error, State::Failed),
    (State::AwaitSeccompDone, C, T::Error, State::Failed),
    (State::AfterSeccomp, C, T::Error, State::Failed),
];

/// States in which either side may close without breaking the protocol.
const ORDERLY_CLOSE: &[State] = &[State::Running, State::AfterSeccomp];

/// The pending request of each conversation state, by hand.
fn pending_in(state: State) -> Option<T> {
    match state {
        State::AwaitMountFd => Some(T::MountPlease),
        State::AwaitHooksDone => Some(T::Hooks),
        State::AwaitRun => Some(T::Ready),
        State::AwaitSeccompDone => Some(T::Seccomp),
        _ => None,
    }
}

/// One message of the conversation: who sends it, and its type.
type Step = (Role, T);

/// A path from the start of `flow` to each conversation state.
fn conversation_paths(flow: Flow) -> Vec<(State, Vec<Step>)> {
    let init_prefix: Vec<Step> = vec![(C, T::Hooks), (P, T::HooksDone)];
    let prefix = match flow {
        Flow::Init => init_prefix,
        Flow::Exec | Flow::ExecNoReady => vec![],
    };
    let with = |extra: &[Step]| {
        let mut v = prefix.clone();
        v.extend_from_slice(extra);
        v
    };
    let mut paths = vec![];
    if flow == Flow::Init {
        paths.push((State::Mounting, vec![]));
        paths.push((State::Mounting, vec![(C, T::MountPlease), (P, T::MountFd)]));
        paths.push((State::AwaitMountFd, vec![(C, T::MountPlease)]));
        paths.push((
            State::AwaitMountFd,
            vec![(C, T::MountPlease), (P, T::MountFd), (C, T::MountPlease)],
        ));
        paths.push((State::AwaitHooksDone, vec![(C, T::Hooks)]));
    }
    if flow == Flow::ExecNoReady {
        // runc before 1.2.0-rc.2: no Ready/Run, the flow starts in Running.
        paths.push((State::Running, vec![]));
        paths.push((State::AwaitSeccompDone, vec![(C, T::Seccomp)]));
        paths.push((
            State::AfterSeccomp,
            vec![(C, T::Seccomp), (P, T::SeccompDone)],
        ));
        return paths;
    }
    paths.push((State::BeforeReady, with(&[])));
    paths.push((State::AwaitRun, with(&[(C, T::Ready)])));
    paths.push((State::Running, with(&[(C, T::Ready), (P, T::Run)])));
    paths.push((
        State::AwaitSeccompDone,
        with(&[(C, T::Ready), (P, T::Run), (C, T::Seccomp)]),
    ));
    paths.push((
        State::AfterSeccomp,
        with(&[
            (C, T::Ready),
            (P, T::Run),
            (C, T::Seccomp),
            (P, T::SeccompDone),
        ]),
    ));
    paths
}

/// Replays `path` on a fresh machine for `role`; every step must be accepted.
fn drive(role: Role, flow: Flow, path: &[Step]) -> Machine {
    let mut m = Machine::new(role, flow);
    for &(sender, ty) in path {
        let r = if sender == role {
            m.on_send(ty)
        } else {
            m.on_recv(ty)
        };
        r.unwrap_or_else(|e| panic!("path {path:?} for {role}: {e}"));
    }
    m
}

/// What the table says for one situation, seen from one role.
struct Expect {
    state: State,
    pending: Option<T>,
    /// Types the local side may send, and the state each leads to.
    sends: Vec<(T, State)>,
    /// Types the peer may send, and the state each leads to.
    recvs: Vec<(T, State)>,
    close_orderly: bool,
}

fn set(of: &[(T, State)]) -> TypeSet {
    of.iter().map(|&(t, _)| t).collect()
}

/// Checks `m` against `x` for every message type in both directions and for
/// both kinds of close, each on a fresh copy of `m`.
fn check_situation(what: &str, m: Machine, x: &Expect) {
    let ctx = format!("{what} [{} {}]", m.role(), m.flow());
    assert_eq!(m.state(), x.state, "{ctx}: state");
    assert_eq!(m.pending(), x.pending, "{ctx}: pending");
    assert_eq!(m.expected_send(), set(&x.sends), "{ctx}: expected_send");
    assert_eq!(m.expected_recv(), set(&x.recvs), "{ctx}: expected_recv");
    let prefix = format!("in state {} ({}, {}): ", x.state, m.flow(), m.role());

    for ty in EVERY_TYPE {
        // Send.
        let mut s = m;
        match (s.on_send(ty), x.sends.iter().find(|&&(t, _)| t == ty)) {
            (Ok(()), Some(&(_, next))) => assert_eq!(s.state(), next, "{ctx}: send {ty}"),
            (Ok(()), None) => panic!("{ctx}: send {ty} accepted, table says illegal"),
            (Err(e), Some(_)) => panic!("{ctx}: send {ty} rejected, table says legal: {e}"),
            (Err(e), None) => {
                assert_eq!(s, m, "{ctx}: a rejected send must change nothing");
                check_error(
                    &ctx,
                    &e,
                    &m,
                    Direction::Send,
                    Event::Message(ty),
                    set(&x.sends),
                );
                assert!(e.to_string().starts_with(&prefix), "{ctx}: {e}");
            }
        }
        // Receive.
        let mut r = m;
        match (r.on_recv(ty), x.recvs.iter().find(|&&(t, _)| t == ty)) {
            (Ok(()), Some(&(_, next))) => assert_eq!(r.state(), next, "{ctx}: recv {ty}"),
            (Ok(()), None) => panic!("{ctx}: recv {ty} accepted, table says illegal"),
            (Err(e), Some(_)) => panic!("{ctx}: recv {ty} rejected, table says legal: {e}"),
            (Err(e), None) => {
                check_error(
                    &ctx,
                    &e,
                    &m,
                    Direction::Recv,
                    Event::Message(ty),
                    set(&x.recvs),
                );
                assert!(e.to_string().starts_with(&prefix), "{ctx}: {e}");
                let after = match x.state {
                    State::Failed | State::Broken | State::Closed => x.state,
                    _ => State::Broken,
                };
                assert_eq!(r.state(), after, "{ctx}: after a rejected recv of {ty}");
                assert_eq!(
                    r.pending(),
                    x.pending,
                    "{ctx}: Broken keeps the pending request"
                );
                assert!(
                    r.on_recv(T::Error).is_err(),
                    "{ctx}: nothing after a violation"
                );
            }
        }
    }

    // Close, by the peer and by the local side.
    let mut c = m;
    let peer = c.on_peer_closed();
    assert_eq!(c.state(), State::Closed, "{ctx}: closed either way");
    assert_eq!(m.check_peer_close(), peer, "{ctx}: check_peer_close agrees");
    let mut l = m;
    let local = l.check_close();
    l.on_close();
    assert_eq!(l.state(), State::Closed, "{ctx}");
    if x.state == State::Closed {
        assert!(
            peer.is_ok() && local.is_ok(),
            "{ctx}: closing twice is idempotent"
        );
        return;
    }
    assert_eq!(c.closed_by(), Some(Origin::Peer), "{ctx}");
    assert_eq!(l.closed_by(), Some(Origin::Local), "{ctx}");
    for (result, dir, expected) in [
        (peer, Direction::Recv, set(&x.recvs)),
        (local, Direction::Send, set(&x.sends)),
    ] {
        match result {
            Ok(()) => assert!(
                x.close_orderly,
                "{ctx}: {dir:?} close accepted, table says not"
            ),
            Err(e) => {
                assert!(!x.close_orderly, "{ctx}: {dir:?} close rejected: {e}");
                check_error(&ctx, &e, &m, dir, Event::Close, expected);
            }
        }
    }
}

fn check_error(
    ctx: &str,
    e: &StateError,
    m: &Machine,
    dir: Direction,
    got: Event,
    expected: TypeSet,
) {
    assert_eq!(e.role(), m.role(), "{ctx}: {e}");
    assert_eq!(e.flow(), m.flow(), "{ctx}: {e}");
    assert_eq!(e.state(), m.state(), "{ctx}: {e}");
    assert_eq!(e.direction(), dir, "{ctx}: {e}");
    assert_eq!(e.got(), got, "{ctx}: {e}");
    assert_eq!(e.expected(), expected, "{ctx}: {e}");
    assert_eq!(e.pending(), m.pending(), "{ctx}: {e}");
    let (origin, sender) = match dir {
        Direction::Send => (Origin::Local, m.role()),
        Direction::Recv => (Origin::Peer, m.role().peer()),
    };
    assert_eq!(e.origin(), origin, "{ctx}: {e}");
    assert_eq!(e.sender(), sender, "{ctx}: {e}");
    let kind = match (got, dir) {
        (Event::Message(_), Direction::Recv) => StateErrorKind::UnexpectedMessage,
        (Event::Close, Direction::Recv) => StateErrorKind::UnexpectedClose,
        (Event::Message(_), Direction::Send) => StateErrorKind::SendNotAllowed,
        (Event::Close, Direction::Send) => StateErrorKind::CloseNotAllowed,
    };
    assert_eq!(e.kind(), kind, "{ctx}: {e}");
    assert_eq!(e.kind().origin(), origin, "{ctx}: {e}");
}

#[test]
fn kind_names_are_stable() {
    let names: Vec<String> = StateErrorKind::ALL.iter().map(|k| k.to_string()).collect();
    assert_eq!(
        names,
        [
            "unexpected-message",
            "unexpected-close",
            "send-not-allowed",
            "close-not-allowed"
        ]
    );
}

/// runc before 1.2.0-rc.2 (seed commit ba0b5e269 included) runs exec without
/// Ready/Run: the child hands over seccomp (optionally) and closes.
#[test]
fn exec_no_ready_is_runcs_old_exec_order() {
    for role in Role::ALL {
        let seccomp = drive(
            role,
            Flow::ExecNoReady,
            &[(C, T::Seccomp), (P, T::SeccompDone)],
        );
        assert_eq!(seccomp.state(), State::AfterSeccomp);
        assert!(seccomp.check_close().is_ok() && seccomp.check_peer_close().is_ok());
        let mut bare = Machine::new(role, Flow::ExecNoReady);
        assert_eq!(bare.state(), State::Running);
        if role == P {
            bare.on_peer_closed().unwrap();
        } else {
            bare.check_close().unwrap();
        }
    }
    // A newer runc child's Ready is a violation here, as it was for the old
    // runc parent (which panicked on it).
    let mut p = Machine::new(P, Flow::ExecNoReady);
    let e = p.on_recv(T::Ready).unwrap_err();
    assert_eq!(e.kind(), StateErrorKind::UnexpectedMessage);
    assert_eq!(e.expected(), TypeSet::of(&[T::Seccomp, T::Error]));
    // And the newer exec flow still requires Ready: an old child's Seccomp
    // first is the mismatch the issue reported.
    let mut p = Machine::new(P, Flow::Exec);
    let e = p.on_recv(T::Seccomp).unwrap_err();
    assert_eq!(e.kind(), StateErrorKind::UnexpectedMessage);
}

#[test]
fn every_conversation_state_matches_the_table() {
    let mut checked = 0;
    for flow in Flow::ALL {
        for (state, path) in conversation_paths(flow) {
            for role in Role::ALL {
                let pick = |sender: Role| -> Vec<(T, State)> {
                    LEGAL
                        .iter()
                        .filter(|&&(s, who, _, _)| s == state && who == sender)
                        .map(|&(_, _, t, next)| (t, next))
                        .collect()
                };
                let x = Expect {
                    state,
                    pending: pending_in(state),
                    sends: pick(role),
                    recvs: pick(role.peer()),
                    close_orderly: ORDERLY_CLOSE.contains(&state),
                };
                check_situation(
                    &format!("{state} via {path:?}"),
                    drive(role, flow, &path),
                    &x,
                );
                checked += 1;
            }
        }
    }
    // init: 10 paths, exec: 5 paths, exec-no-ready: 3 paths; two roles each.
    assert_eq!(checked, 36);
}

/// The terminal situations, one role at a time, by hand.
#[test]
fn every_terminal_situation_matches_the_table() {
    use State::{Broken, Closed, Failed};
    let none: Vec<(T, State)> = vec![];
    let init_to_running: Vec<Step> =
        vec![(C, T::Hooks), (P, T::HooksDone), (C, T::Ready), (P, T::Run)];

    // Closed after an orderly close: nothing either way.
    for role in Role::ALL {
        for closer in Role::ALL {
            let mut m = drive(role, Flow::Init, &init_to_running);
            if closer == role {
                m.on_close();
            } else {
                m.on_peer_closed().unwrap();
            }
            let x = Expect {
                state: Closed,
                pending: None,
                sends: none.clone(),
                recvs: none.clone(),
                close_orderly: true,
            };
            check_situation(&format!("closed by {closer}"), m, &x);
        }
    }

    // Failed. (situation, role, path, what may still cross the local Error)
    type FailedCase = (&'static str, Role, Vec<Step>, Vec<(T, State)>);
    let failed: Vec<FailedCase> = vec![
        (
            "child Error in Mounting",
            C,
            vec![(C, T::Error)],
            none.clone(),
        ),
        (
            "child Error in Mounting",
            P,
            vec![(C, T::Error)],
            none.clone(),
        ),
        (
            "child Error while MountPlease pending",
            C,
            vec![(C, T::MountPlease), (C, T::Error)],
            // The parent's reply (or Error) may already be in flight.
            vec![(T::MountFd, Failed), (T::Error, Failed)],
        ),
        (
            "child Error while MountPlease pending",
            P,
            vec![(C, T::MountPlease), (C, T::Error)],
            none.clone(),
        ),
        (
            "parent Error replying to MountPlease",
            P,
            vec![(C, T::MountPlease), (P, T::Error)],
            // The child's own Error may already be in flight.
            vec![(T::Error, Failed)],
        ),
        (
            "parent Error replying to MountPlease",
            C,
            vec![(C, T::MountPlease), (P, T::Error)],
            none.clone(),
        ),
        (
            "parent Error replying to Ready",
            P,
            vec![(C, T::Ready), (P, T::Error)],
            vec![(T::Error, Failed)],
        ),
        (
            "child Error after SeccompDone",
            C,
            vec![
                (C, T::Ready),
                (P, T::Run),
                (C, T::Seccomp),
                (P, T::SeccompDone),
                (C, T::Error),
            ],
            none.clone(),
        ),
    ];
    for (what, role, path, crossing) in failed {
        let flow = if path.iter().any(|s| s.1 == T::MountPlease) {
            Flow::Init
        } else {
            Flow::Exec
        };
        let m = drive(role, flow, &path);
        let by = if path.last().unwrap().0 == role {
            Origin::Local
        } else {
            Origin::Peer
        };
        assert_eq!(m.failed_by(), Some(by), "{what}");
        let x = Expect {
            state: Failed,
            pending: None,
            sends: none.clone(),
            recvs: crossing.clone(),
            close_orderly: true,
        };
        check_situation(what, m, &x);
        // At most one message crosses.
        if let Some(&(ty, _)) = crossing.first() {
            let mut m = m;
            m.on_recv(ty).unwrap();
            let x = Expect {
                recvs: none.clone(),
                ..x
            };
            check_situation(&format!("{what}, after the crossing {ty}"), m, &x);
        }
    }

    // Broken: the peer broke the protocol. (situation, role, flow, path, bad message,
    // pending, may the local side still send Error?)
    type BrokenCase = (&'static str, Role, Flow, Vec<Step>, T, Option<T>, bool);
    let broken: Vec<BrokenCase> = vec![
        ("child sent Run", P, Flow::Init, vec![], T::Run, None, false),
        (
            "parent sent Run unasked",
            C,
            Flow::Init,
            vec![],
            T::Run,
            None,
            true,
        ),
        (
            "child sent Hooks while MountPlease pending",
            P,
            Flow::Init,
            vec![(C, T::MountPlease)],
            T::Hooks,
            Some(T::MountPlease),
            true,
        ),
        (
            "parent answered MountPlease with HooksDone",
            C,
            Flow::Init,
            vec![(C, T::MountPlease)],
            T::HooksDone,
            Some(T::MountPlease),
            true,
        ),
        (
            "child sent MountPlease in the exec flow",
            P,
            Flow::Exec,
            vec![],
            T::MountPlease,
            None,
            false,
        ),
    ];
    for (what, role, flow, path, bad, pending, may_error) in broken {
        let mut m = drive(role, flow, &path);
        let e = m.on_recv(bad).unwrap_err();
        assert_eq!(e.origin(), Origin::Peer, "{what}");
        let sends = if may_error {
            vec![(T::Error, Failed)]
        } else {
            none.clone()
        };
        let x = Expect {
            state: Broken,
            pending,
            sends,
            recvs: none.clone(),
            close_orderly: true,
        };
        check_situation(what, m, &x);
        if may_error {
            // The explaining Error ends it; nothing may cross it.
            m.on_send(T::Error).unwrap();
            assert_eq!(m.failed_by(), Some(Origin::Local));
            let x = Expect {
                state: Failed,
                pending: None,
                sends: none.clone(),
                recvs: none.clone(),
                close_orderly: true,
            };
            check_situation(&format!("{what}, then Error"), m, &x);
        }
    }
}

// ---------------------------------------------------------------------------
// Property: random sequences are accepted exactly when an independent regular
// expression over a token string accepts them.
//
// Tokens: child messages are upper case (M MountPlease, H Hooks, R Ready,
// S Seccomp, E Error), parent messages lower case (m MountFd, h HooksDone,
// r Run, s SeccompDone, e Error), `.` is a close by either side, `?` is a
// message of a type its sender never sends (a reply from the child, a request
// from the parent, or Unspecified).
// ---------------------------------------------------------------------------

fn any_role() -> impl Strategy<Value = Role> {
    prop_oneof![Just(P), Just(C)]
}

fn any_event() -> impl Strategy<Value = Ev> {
    prop_oneof![
        9 => (any_role(), proptest::sample::select(EVERY_TYPE.to_vec()))
            .prop_map(|(r, t)| Ev::Msg(r, t)),
        1 => any_role().prop_map(Ev::Close),
    ]
}

/// runc's happy path for `flow`, cut short, maybe ended by an Error and a
/// close, then mutated a little: mostly near-valid sequences.
fn near_valid() -> impl Strategy<Value = (Flow, Vec<Ev>)> {
    (
        prop_oneof![Just(Flow::Init), Just(Flow::Exec)],
        0..4usize,
        any::<bool>(),
        0..16usize,
        proptest::option::of((any_role(), any::<bool>())),
        proptest::option::of(any_role()),
        proptest::collection::vec((0..3u8, 0..20usize, any_event()), 0..3),
    )
        .prop_map(|(flow, mounts, seccomp, cut, error, close, mutations)| {
            let mut evs = vec![];
            if flow == Flow::Init {
                for _ in 0..mounts {
                    evs.push(Ev::Msg(C, T::MountPlease));
                    evs.push(Ev::Msg(P, T::MountFd));
                }
                evs.push(Ev::Msg(C, T::Hooks));
                evs.push(Ev::Msg(P, T::HooksDone));
            }
            evs.push(Ev::Msg(C, T::Ready));
            evs.push(Ev::Msg(P, T::Run));
            if seccomp {
                evs.push(Ev::Msg(C, T::Seccomp));
                evs.push(Ev::Msg(P, T::SeccompDone));
            }
            evs.truncate(cut.min(evs.len()));
            if let Some((by, cross)) = error {
                evs.push(Ev::Msg(by, T::Error));
                if cross {
                    evs.push(Ev::Msg(by.peer(), T::Error));
                }
            }
            if let Some(by) = close {
                evs.push(Ev::Close(by));
            }
            for (op, at, ev) in mutations {
                let at = at % (evs.len() + 1);
                match op {
                    0 => evs.insert(at, ev),
                    1 if at < evs.len() => {
                        evs.remove(at);
                    }
                    _ if at < evs.len() => evs[at] = ev,
                    _ => evs.push(ev),
                }
            }
            (flow, evs)
        })
}

fn sequences() -> impl Strategy<Value = (Flow, Vec<Ev>)> {
    prop_oneof![
        3 => near_valid(),
        1 => (
            prop_oneof![Just(Flow::Init), Just(Flow::Exec)],
            proptest::collection::vec(any_event(), 0..12),
        ),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn machine_accepts_exactly_the_grammar((flow, evs) in sequences()) {
        // Closing twice is idempotent, which the token grammar does not model:
        // stop at the second close.
        let mut evs = evs;
        if let Some(second) = evs
            .iter()
            .enumerate()
            .filter(|(_, e)| matches!(e, Ev::Close(_)))
            .nth(1)
            .map(|(i, _)| i)
        {
            evs.truncate(second);
        }
        let tokens: String = evs.iter().map(|&e| token(e)).collect();
        for role in Role::ALL {
            let reference = reference_accepts(role, flow, &evs);
            let machine = machine_accepts(role, flow, &evs);
            prop_assert_eq!(
                machine, reference,
                "{} {}: {:?} (tokens {:?})", role, flow, evs, tokens
            );
        }
    }
}

/// The reference itself is not vacuous: it accepts and rejects what it should.
#[test]
fn reference_grammar_sanity() {
    let init_p = grammar(P, Flow::Init);
    let init_c = grammar(C, Flow::Init);
    let exec_p = grammar(P, Flow::Exec);
    for ok in [
        "HhRr.",
        "MmMmMmHhRrSs.",
        "MmHhRrE.",
        "ME.",
        "Me.",
        "MeE.",
        "HhRrSsE.",
    ] {
        assert!(init_p.is_match(ok), "{ok}");
    }
    for bad in [
        "HhRr",
        "HhHhRr.",
        "HhRrMm.",
        "Rr.",
        "HhR.",
        "HhRrSsSs.",
        "e.",
        "MEm.",
    ] {
        assert!(!init_p.is_match(bad), "{bad}");
    }
    assert!(init_c.is_match("MEm.") && init_c.is_match("MEe.") && !init_c.is_match("MeE."));
    assert!(exec_p.is_match("Rr.") && exec_p.is_match("RrSs.") && !exec_p.is_match("HhRr."));
    assert!(valid_prefix(&init_p, "MmM") && !valid_prefix(&init_p, "Mm."));
}

// ---------------------------------------------------------------------------
// Scenarios: two machines in lockstep, as a parent and a child would run.
// ---------------------------------------------------------------------------

/// Sends `ty` from `from` to `to`, checking both sides accept it.
fn exchange(from: &mut Machine, to: &mut Machine, ty: T) {
    from.on_send(ty).unwrap();
    to.on_recv(ty).unwrap();
    assert_eq!(from.state(), to.state(), "both sides agree after {ty}");
}

#[test]
fn full_init_flow_with_three_mounts_and_seccomp() {
    let mut parent = Machine::new(P, Flow::Init);
    let mut child = Machine::new(C, Flow::Init);
    for _ in 0..3 {
        exchange(&mut child, &mut parent, T::MountPlease);
        assert_eq!(parent.pending(), Some(T::MountPlease));
        assert_eq!(parent.expected_send(), TypeSet::of(&[T::MountFd, T::Error]));
        exchange(&mut parent, &mut child, T::MountFd);
    }
    exchange(&mut child, &mut parent, T::Hooks);
    exchange(&mut parent, &mut child, T::HooksDone);
    exchange(&mut child, &mut parent, T::Ready);
    assert!(parent.check_peer_close().is_err(), "Ready is pending");
    exchange(&mut parent, &mut child, T::Run);
    assert!(
        parent.check_peer_close().is_ok(),
        "the child may close after Run"
    );
    exchange(&mut child, &mut parent, T::Seccomp);
    exchange(&mut parent, &mut child, T::SeccompDone);
    assert_eq!(child.state(), State::AfterSeccomp);
    assert!(!child.is_finished());
    assert_eq!(child.expected_send(), TypeSet::of(&[T::Error]));
    child.check_close().unwrap();
    child.on_close();
    parent.on_peer_closed().unwrap();
    parent.on_close();
    assert!(parent.is_finished() && child.is_finished());
    assert_eq!(parent.closed_by(), Some(Origin::Peer));
    assert_eq!(child.closed_by(), Some(Origin::Local));
    assert_eq!(parent.failed_by(), None);
}

#[test]
fn exec_flow() {
    let mut parent = Machine::new(P, Flow::Exec);
    let mut child = Machine::new(C, Flow::Exec);
    assert_eq!(parent.state(), State::BeforeReady);
    assert_eq!(parent.expected_recv(), TypeSet::of(&[T::Ready, T::Error]));
    exchange(&mut child, &mut parent, T::Ready);
    exchange(&mut parent, &mut child, T::Run);
    child.on_close();
    parent.on_peer_closed().unwrap();
}

#[test]
fn exec_child_closing_without_ready_is_an_error_like_runc() {
    let mut parent = Machine::new(P, Flow::Exec);
    let e = parent.on_peer_closed().unwrap_err();
    assert_eq!(e.origin(), Origin::Peer);
    assert_eq!(e.got(), Event::Close);
    assert_eq!(
        e.to_string(),
        "in state BeforeReady (exec, parent): child closed without Ready; expected Ready or Error from child"
    );
    assert_eq!(parent.state(), State::Closed);
}

#[test]
fn init_child_closing_while_hooks_pending() {
    let mut parent = drive(P, Flow::Init, &[(C, T::Hooks)]);
    let e = parent.on_peer_closed().unwrap_err();
    assert_eq!(
        e.to_string(),
        "in state AwaitHooksDone (init, parent): child closed while Hooks was pending; expected Error from child"
    );
    // The child asking the same question about the parent.
    let child = drive(C, Flow::Init, &[(C, T::Hooks)]);
    assert_eq!(
        child.check_peer_close().unwrap_err().to_string(),
        "in state AwaitHooksDone (init, child): parent closed while Hooks was pending; expected HooksDone or Error from parent"
    );
    let parent = drive(P, Flow::Init, &[]);
    assert_eq!(
        parent.check_close().unwrap_err().to_string(),
        "in state Mounting (init, parent): parent closing before Run"
    );
}

#[test]
fn error_messages_name_state_expectation_and_direction() {
    let mut child = drive(C, Flow::Init, &[(C, T::Hooks)]);
    let e = child.on_recv(T::Ready).unwrap_err();
    assert_eq!(
        e.to_string(),
        "in state AwaitHooksDone (init, child): expected HooksDone or Error from parent, got Ready"
    );
    assert_eq!(e.origin(), Origin::Peer);
    assert_eq!(child.state(), State::Broken);

    // Local misuse: the child tries to send a reply.
    let mut child = drive(C, Flow::Init, &[(C, T::Hooks)]);
    let e = child.on_send(T::HooksDone).unwrap_err();
    assert_eq!(
        e.to_string(),
        "in state AwaitHooksDone (init, child): can send only Error to parent, not HooksDone"
    );
    assert_eq!(e.origin(), Origin::Local);
    assert_eq!(child.state(), State::AwaitHooksDone, "nothing changed");

    // The parent has nothing to say before a request.
    let mut parent = Machine::new(P, Flow::Init);
    assert_eq!(
        parent.on_send(T::Error).unwrap_err().to_string(),
        "in state Mounting (init, parent): can send nothing to child, not Error"
    );
}

#[test]
fn second_hooks_and_second_ready_are_rejected() {
    let mut parent = drive(P, Flow::Init, &[(C, T::Hooks), (P, T::HooksDone)]);
    let e = parent.on_recv(T::Hooks).unwrap_err();
    assert_eq!(e.expected(), TypeSet::of(&[T::Ready, T::Error]));

    let mut parent = drive(P, Flow::Exec, &[(C, T::Ready), (P, T::Run)]);
    let e = parent.on_recv(T::Ready).unwrap_err();
    assert_eq!(e.state(), State::Running);
    assert_eq!(e.expected(), TypeSet::of(&[T::Seccomp, T::Error]));

    let mut child = drive(C, Flow::Exec, &[(C, T::Ready)]);
    assert_eq!(child.on_send(T::Ready).unwrap_err().origin(), Origin::Local);
}

#[test]
fn reply_without_request_and_request_while_pending_are_rejected() {
    let mut child = Machine::new(C, Flow::Init);
    let e = child.on_recv(T::MountFd).unwrap_err();
    assert_eq!(e.pending(), None);
    assert_eq!(e.expected(), TypeSet::EMPTY);
    assert_eq!(
        e.to_string(),
        "in state Mounting (init, child): expected nothing from parent, got MountFd"
    );

    let mut parent = drive(P, Flow::Init, &[(C, T::MountPlease)]);
    let e = parent.on_recv(T::MountPlease).unwrap_err();
    assert_eq!(e.pending(), Some(T::MountPlease));
    assert_eq!(parent.pending(), Some(T::MountPlease));
    // The parent may still answer the pending request with Error, then close.
    parent.on_send(T::Error).unwrap();
    parent.check_close().unwrap();
}

#[test]
fn runc_bug_mount_request_after_hooks_or_ready_is_rejected() {
    // After Hooks: the policy never sees it.
    let mut parent = drive(P, Flow::Init, &[(C, T::Hooks), (P, T::HooksDone)]);
    let e = parent.on_recv(T::MountPlease).unwrap_err();
    assert_eq!(
        e.to_string(),
        "in state BeforeReady (init, parent): expected Ready or Error from child, got MountPlease"
    );
    // After Ready (runc's parent would serve it).
    let mut parent = drive(
        P,
        Flow::Init,
        &[(C, T::Hooks), (P, T::HooksDone), (C, T::Ready), (P, T::Run)],
    );
    assert!(parent.on_recv(T::MountPlease).is_err());
    // And in the exec flow, never.
    let mut parent = Machine::new(P, Flow::Exec);
    assert!(parent.on_recv(T::MountPlease).is_err());
}

#[test]
fn seccomp_before_run_is_rejected() {
    let mut parent = drive(P, Flow::Exec, &[(C, T::Ready)]);
    let e = parent.on_recv(T::Seccomp).unwrap_err();
    assert_eq!(e.expected(), TypeSet::of(&[T::Error]));
    let mut child = Machine::new(C, Flow::Exec);
    assert!(child.on_send(T::Seccomp).is_err());
}

#[test]
fn nothing_after_close_or_error() {
    for ty in EVERY_TYPE {
        let mut m = drive(P, Flow::Exec, &[(C, T::Ready), (P, T::Run)]);
        m.on_peer_closed().unwrap();
        assert!(m.on_recv(ty).is_err() && m.on_send(ty).is_err());
        let mut m = drive(P, Flow::Exec, &[(C, T::Error)]);
        assert!(m.on_recv(ty).is_err() && m.on_send(ty).is_err());
    }
}

#[test]
fn error_mid_flow_refused_mount_is_answered_with_error() {
    let configured = Mount::bind("/srv/data", "/data");
    let mut policy = ConfiguredMounts::new([configured.clone()]);
    let mut parent = Machine::new(P, Flow::Init);
    let mut child = Machine::new(C, Flow::Init);

    exchange(&mut child, &mut parent, T::MountPlease);
    policy.check(&configured).unwrap();
    exchange(&mut parent, &mut child, T::MountFd);

    // A second request for /etc: refused; the parent tells the child why.
    exchange(&mut child, &mut parent, T::MountPlease);
    let refusal = policy.check(&Mount::bind("/etc", "/data")).unwrap_err();
    assert!(!refusal.to_string().is_empty());
    exchange(&mut parent, &mut child, T::Error);
    assert_eq!(parent.failed_by(), Some(Origin::Local));
    assert_eq!(child.failed_by(), Some(Origin::Peer));
    assert!(child.on_send(T::Hooks).is_err(), "Error is terminal");
    child.check_close().unwrap();
    child.on_close();
    parent.on_peer_closed().unwrap();
}

#[test]
fn crossing_errors_are_tolerated_once() {
    // The parent refuses a mount while the child gives up on its own.
    let mut parent = Machine::new(P, Flow::Init);
    let mut child = Machine::new(C, Flow::Init);
    exchange(&mut child, &mut parent, T::MountPlease);
    parent.on_send(T::Error).unwrap();
    child.on_send(T::Error).unwrap();
    parent.on_recv(T::Error).unwrap();
    child.on_recv(T::Error).unwrap();
    assert!(
        parent.on_recv(T::Error).is_err(),
        "only one message crosses"
    );
    assert!(
        child.on_recv(T::MountFd).is_err(),
        "only one message crosses"
    );
}

#[test]
fn machine_is_small_and_copy() {
    fn copy<X: Copy>() {}
    copy::<Machine>();
    copy::<StateError>();
    assert!(std::mem::size_of::<Machine>() <= 32);
    assert_eq!(State::ALL.len(), 11);
}
