//! `tests/vectors/state.json`: the message order (PROTOCOL.md §9) as a
//! language-neutral table, generated from the Rust [`Machine`] — the contract
//! the Go package's state machine is checked against (go/state_vectors_test.go
//! reads the very same file).
//!
//! For each role and flow, every machine reachable from the start (a
//! breadth-first search over all events: send or receive of each of the ten
//! message types including Unspecified, the local close and the peer's close)
//! is listed with the shortest path of events that reaches it, what it
//! expects, and the outcome of every event from it: accepted or rejected
//! (with the error's kind, origin, state, legal set and pending request —
//! never its wording) and the machine it leads to. Machines are distinct when anything observable differs, so the
//! variants of Failed (who sent the Error, what may still cross it), Broken
//! (with or without a pending request) and Closed are all covered.
//!
//! `vectors_file_is_current` fails when the file differs from what the
//! machine generates; regenerate with
//! `PROCSYNC_BLESS=1 cargo test --test state_vectors`.

use std::fmt::Write as _;

use procsync::schema::MessageType as T;
use procsync::state::{Flow, Machine, Origin, Role, StateError, TypeSet};
use serde_json::{json, Value};

/// Serializes the two tests: a blessing run rewrites the file the other reads.
static FILE: std::sync::Mutex<()> = std::sync::Mutex::new(());

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors/state.json");

/// Every type a caller can pass, in wire-value order.
const TYPES: [T; 10] = [
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ev {
    Send(T),
    Recv(T),
    Close,
    PeerClose,
}

impl Ev {
    fn all() -> Vec<Ev> {
        let mut v: Vec<Ev> = TYPES.iter().map(|&t| Ev::Send(t)).collect();
        v.extend(TYPES.iter().map(|&t| Ev::Recv(t)));
        v.push(Ev::Close);
        v.push(Ev::PeerClose);
        v
    }

    fn name(self) -> String {
        match self {
            Ev::Send(t) => format!("send {}", t.name()),
            Ev::Recv(t) => format!("recv {}", t.name()),
            Ev::Close => "close".into(),
            Ev::PeerClose => "peer-close".into(),
        }
    }

    /// Applies the event: the machine afterwards and the rejection, if any.
    fn apply(self, m: &Machine) -> (Machine, Option<StateError>) {
        let mut next = *m;
        let err = match self {
            Ev::Send(t) => next.on_send(t).err(),
            Ev::Recv(t) => next.on_recv(t).err(),
            Ev::Close => {
                let r = next.check_close().err();
                next.on_close();
                r
            }
            Ev::PeerClose => next.on_peer_closed().err(),
        };
        (next, err)
    }
}

fn types(set: TypeSet) -> Value {
    Value::from(set.iter().map(|t| t.name()).collect::<Vec<_>>())
}

fn origin(o: Option<Origin>) -> Value {
    match o {
        Some(o) => json!(o.as_str()),
        None => Value::Null,
    }
}

/// Every machine reachable from the start of `flow` for `role`, each with
/// the shortest event path that reaches it (breadth-first, events in
/// [`Ev::all`] order).
fn reachable(role: Role, flow: Flow) -> Vec<(Machine, Vec<Ev>)> {
    let mut seen = vec![(Machine::new(role, flow), Vec::new())];
    let mut i = 0;
    while i < seen.len() {
        let (m, path) = seen[i].clone();
        for ev in Ev::all() {
            let (next, _) = ev.apply(&m);
            if !seen.iter().any(|(s, _)| *s == next) {
                let mut p = path.clone();
                p.push(ev);
                seen.push((next, p));
            }
        }
        i += 1;
    }
    seen
}

/// What the file says about a rejection: stable fields only, no text.
fn error_fields(e: &StateError) -> Value {
    json!({
        "kind": e.kind().as_str(),
        "origin": e.origin().as_str(),
        "state": e.state().name(),
        "expected": types(e.expected()),
        "pending": e.pending().map(|t| t.name()),
    })
}

fn one_line(v: &Value) -> String {
    serde_json::to_string(v).unwrap()
}

/// The file's text: pretty at the top, one line per outcome.
fn generate() -> String {
    let events: Vec<String> = Ev::all().into_iter().map(Ev::name).collect();
    let mut out = String::new();
    out.push_str("{\n");
    out.push_str("  \"format\": \"procsync-state-vectors/2\",\n");
    out.push_str("  \"note\": \"Generated from the Rust state machine by tests/state_vectors.rs (PROCSYNC_BLESS=1 cargo test --test state_vectors); format in docs/PROTOCOL.md section 13.\",\n");
    writeln!(out, "  \"events\": {},", one_line(&json!(events))).unwrap();
    out.push_str("  \"machines\": [");
    let mut first = true;
    for role in Role::ALL {
        for flow in Flow::ALL {
            let all = reachable(role, flow);
            for (id, (m, path)) in all.iter().enumerate() {
                out.push_str(if first { "\n" } else { ",\n" });
                first = false;
                out.push_str("    {\n");
                let head = [
                    ("role", json!(role.name())),
                    ("flow", json!(flow.name())),
                    ("id", json!(id)),
                    (
                        "path",
                        json!(path.iter().map(|e| e.name()).collect::<Vec<_>>()),
                    ),
                    ("state", json!(m.state().name())),
                    ("pending", json!(m.pending().map(|t| t.name()))),
                    ("expect_send", types(m.expected_send())),
                    ("expect_recv", types(m.expected_recv())),
                    ("failed_by", origin(m.failed_by())),
                    ("closed_by", origin(m.closed_by())),
                ];
                for (k, v) in head {
                    writeln!(out, "      \"{k}\": {},", one_line(&v)).unwrap();
                }
                out.push_str("      \"outcomes\": [\n");
                let evs = Ev::all();
                for (j, ev) in evs.iter().enumerate() {
                    let (next, err) = ev.apply(m);
                    let next_id = all.iter().position(|(s, _)| *s == next).unwrap();
                    let mut o = json!({
                        "event": ev.name(),
                        "next": next_id,
                        "state": next.state().name(),
                    });
                    if let Some(e) = err {
                        o["error"] = error_fields(&e);
                    }
                    let sep = if j + 1 == evs.len() { "" } else { "," };
                    writeln!(out, "        {}{sep}", one_line(&o)).unwrap();
                }
                out.push_str("      ]\n    }");
            }
        }
    }
    out.push_str("\n  ]\n}\n");
    out
}

#[test]
fn vectors_file_is_current() {
    let _file = FILE.lock().unwrap_or_else(|p| p.into_inner());
    let generated = generate();
    if std::env::var_os("PROCSYNC_BLESS").is_some() {
        std::fs::write(PATH, &generated).unwrap();
    }
    let on_disk = std::fs::read_to_string(PATH).unwrap_or_default();
    assert!(
        on_disk == generated,
        "tests/vectors/state.json is stale; regenerate with PROCSYNC_BLESS=1 cargo test --test state_vectors"
    );
}

/// Replays the file against the Rust machine from its own description (not
/// from `generate`): every path reaches a machine with the listed
/// observables, and every outcome holds. Guards the reader side of the
/// format, which the Go test mirrors.
#[test]
fn the_file_replays_against_the_machine() {
    let _file = FILE.lock().unwrap_or_else(|p| p.into_inner());
    let v: Value = serde_json::from_str(&std::fs::read_to_string(PATH).unwrap()).unwrap();
    let parse_ev = |s: &str| -> Ev {
        let ty = |n: &str| *TYPES.iter().find(|t| t.name() == n).unwrap();
        match s.split_once(' ') {
            Some(("send", n)) => Ev::Send(ty(n)),
            Some(("recv", n)) => Ev::Recv(ty(n)),
            _ if s == "close" => Ev::Close,
            _ if s == "peer-close" => Ev::PeerClose,
            _ => panic!("bad event {s}"),
        }
    };
    let machines = v["machines"].as_array().unwrap();
    let mut outcomes = 0;
    for role in Role::ALL {
        for flow in Flow::ALL {
            let group: Vec<&Value> = machines
                .iter()
                .filter(|m| m["role"] == role.name() && m["flow"] == flow.name())
                .collect();
            assert!(group.len() > 10, "{role} {flow}: {} machines", group.len());
            let at = |m: &Value| -> Machine {
                let mut mach = Machine::new(role, flow);
                for e in m["path"].as_array().unwrap() {
                    mach = parse_ev(e.as_str().unwrap()).apply(&mach).0;
                }
                mach
            };
            let observe = |m: &Machine| {
                json!([
                    m.state().name(),
                    m.pending().map(|t| t.name()),
                    types(m.expected_send()),
                    types(m.expected_recv()),
                    origin(m.failed_by()),
                    origin(m.closed_by()),
                ])
            };
            let listed = |e: &Value| {
                json!([
                    e["state"],
                    e["pending"],
                    e["expect_send"],
                    e["expect_recv"],
                    e["failed_by"],
                    e["closed_by"]
                ])
            };
            for (id, entry) in group.iter().enumerate() {
                assert_eq!(entry["id"], id);
                let m = at(entry);
                assert_eq!(observe(&m), listed(entry), "{role} {flow} #{id}");
                for o in entry["outcomes"].as_array().unwrap() {
                    let (next, err) = parse_ev(o["event"].as_str().unwrap()).apply(&m);
                    let want = group[o["next"].as_u64().unwrap() as usize];
                    assert_eq!(observe(&next), listed(want), "{role} {flow} #{id} {o}");
                    match (&err, o.get("error")) {
                        (None, None) => {}
                        (Some(e), Some(w)) => {
                            assert_eq!(&error_fields(e), w, "{role} {flow} #{id} {o}");
                            assert_eq!(e.kind().origin(), e.origin(), "{o}");
                        }
                        _ => panic!("{role} {flow} #{id}: {o} vs {err:?}"),
                    }
                    outcomes += 1;
                }
            }
        }
    }
    assert!(outcomes > 1000, "{outcomes} outcomes");
}
