// Invariant checks shared by the fuzz targets and the corpus replay test.
// Every function takes the raw fuzz input and panics if an invariant breaks.
// (Each includer uses a different subset.)
#![allow(dead_code)]

use bytes::BytesMut;
use procsync::wire::{native, validate, Limits, MAX_RECORD_CEILING};

/// Input layout: byte 0 selects the number of fds that "arrived" (low two
/// bits: 0..=3); the rest is one record.
///
/// Invariants: decoding never panics; an accepted message passes validation
/// with the same fd count, re-encodes (HasFd from its flags) to a record that
/// decodes to the same message, and the canonical record of that message is
/// a fixed point; a rejection has a stable kind and a message.
pub fn frame_decode(data: &[u8]) {
    let Some((&sel, record)) = data.split_first() else {
        return;
    };
    let nfds = usize::from(sel & 3);
    let limits = Limits::default();
    match native::decode(record, nfds, &limits) {
        Ok(msg) => {
            assert!(record.len() <= limits.max_record());
            validate(&msg, nfds).expect("an accepted message validates");
            let wide = Limits::with_max_record(MAX_RECORD_CEILING);
            let mut buf = BytesMut::new();
            native::encode(&msg, msg.has_fd(), &mut buf, &wide)
                .expect("an accepted message re-encodes");
            let again = native::decode(&buf, nfds, &wide).expect("the re-encoded record decodes");
            assert_eq!(again, msg, "re-encode round trip changed the message");
            let mut buf2 = BytesMut::new();
            native::encode(&again, again.has_fd(), &mut buf2, &wide).unwrap();
            assert_eq!(buf, buf2, "canonical encoding is not a fixed point");
            assert_eq!(native::encoded_len(&msg, msg.has_fd()), buf.len());
        }
        Err(e) => {
            assert!(!e.kind().as_str().is_empty());
            assert!(!e.to_string().is_empty());
        }
    }
}

/// An independent reference for the state machine: the legal conversations
/// as regular expressions over a token string. Shared by `tests/state.rs`
/// (proptest) and the `state_machine` fuzz target.
///
/// Tokens: child messages are upper case (M MountPlease, H Hooks, R Ready,
/// S Seccomp, E Error), parent messages lower case (m MountFd, h HooksDone,
/// r Run, s SeccompDone, e Error), `.` is a close by either side, `?` is a
/// message of a type its sender never sends.
pub mod grammar {
    use procsync::schema::MessageType as T;
    use procsync::state::{Flow, Machine, Role};
    use regex::Regex;

    const C: Role = Role::Child;
    const P: Role = Role::Parent;

    /// One event of a conversation: a message from a role, or a close by a role.
    #[derive(Debug, Clone, Copy)]
    pub enum Ev {
        Msg(Role, T),
        Close(Role),
    }

    pub fn token(ev: Ev) -> char {
        match ev {
            Ev::Close(_) => '.',
            Ev::Msg(C, t) => match t {
                T::MountPlease => 'M',
                T::Hooks => 'H',
                T::Ready => 'R',
                T::Seccomp => 'S',
                T::Error => 'E',
                _ => '?',
            },
            Ev::Msg(P, t) => match t {
                T::MountFd => 'm',
                T::HooksDone => 'h',
                T::Run => 'r',
                T::SeccompDone => 's',
                T::Error => 'e',
                _ => '?',
            },
        }
    }

    /// The complete conversations (ending in a close), as seen by `role`.
    pub fn grammar(role: Role, flow: Flow) -> Regex {
        // Stable points: Mounting, BeforeReady, Running, AfterSeccomp.
        let (a, b, c) = match flow {
            Flow::Init => ("(?:Mm)*", "(?:Mm)*Hh", "(?:Mm)*HhRr"),
            Flow::Exec => ("(?:NEVER)", "", "Rr"),
            // runc before 1.2.0-rc.2: no Ready/Run, the flow starts in Running.
            Flow::ExecNoReady => ("(?:NEVER)", "(?:NEVER)", ""),
        };
        let d = format!("{c}Ss");
        // Pending requests and their replies.
        let mut pending: Vec<(String, char)> = vec![(format!("{b}R"), 'r'), (format!("{c}S"), 's')];
        if flow == Flow::Init {
            pending.push((format!("{a}M"), 'm'));
            pending.push((format!("{a}H"), 'h'));
        }
        let mut alts = vec![
            format!("(?:{c}|{d})\\."),
            format!("(?:{a}|{b}|{c}|{d})E\\."),
        ];
        for (req, reply) in pending {
            match role {
                // The child's Error may cross the parent's reply or Error.
                C => {
                    alts.push(format!("{req}E[{reply}e]?\\."));
                    alts.push(format!("{req}e\\."));
                }
                // The parent's Error reply may cross the child's Error.
                P => {
                    alts.push(format!("{req}E\\."));
                    alts.push(format!("{req}eE?\\."));
                }
            }
        }
        Regex::new(&format!("^(?:{})$", alts.join("|"))).unwrap()
    }

    /// [`grammar`], compiled once per (role, flow).
    pub fn cached_grammar(role: Role, flow: Flow) -> &'static Regex {
        static CACHE: std::sync::OnceLock<[Regex; 6]> = std::sync::OnceLock::new();
        let all = CACHE.get_or_init(|| {
            [
                grammar(P, Flow::Init),
                grammar(P, Flow::Exec),
                grammar(P, Flow::ExecNoReady),
                grammar(C, Flow::Init),
                grammar(C, Flow::Exec),
                grammar(C, Flow::ExecNoReady),
            ]
        });
        let f = Flow::ALL.iter().position(|&f| f == flow).unwrap_or(0);
        &all[(role == C) as usize * 3 + f]
    }

    /// A valid prefix is one some complete conversation starts with. From any
    /// live point the child may send Error and close, so three completions decide.
    pub fn valid_prefix(re: &Regex, p: &str) -> bool {
        re.is_match(p) || re.is_match(&format!("{p}.")) || re.is_match(&format!("{p}E."))
    }

    /// Feeds `evs` to a machine; returns how many were accepted before the first
    /// rejection.
    pub fn machine_accepts(role: Role, flow: Flow, evs: &[Ev]) -> usize {
        let mut m = Machine::new(role, flow);
        for (i, &ev) in evs.iter().enumerate() {
            let ok = match ev {
                Ev::Msg(sender, t) if sender == role => m.on_send(t).is_ok(),
                Ev::Msg(_, t) => m.on_recv(t).is_ok(),
                Ev::Close(closer) if closer == role => {
                    let ok = m.check_close().is_ok();
                    m.on_close();
                    ok
                }
                Ev::Close(_) => m.on_peer_closed().is_ok(),
            };
            if !ok {
                return i;
            }
        }
        evs.len()
    }

    /// How many of `evs` the reference grammar accepts for `role` (the
    /// longest valid prefix).
    pub fn reference_accepts(role: Role, flow: Flow, evs: &[Ev]) -> usize {
        let tokens: String = evs.iter().map(|&e| token(e)).collect();
        let re = cached_grammar(role, flow);
        (0..=evs.len())
            .take_while(|&n| valid_prefix(re, &tokens[..n]))
            .last()
            .unwrap_or(0)
    }
}

/// Input: arbitrary bytes read as a flow and a list of events (a message
/// from either role of any type, or a close by either role).
///
/// Invariant: for both roles, the machine accepts exactly the longest prefix
/// the reference grammar accepts, and after a rejection the machine never
/// reports an orderly finish it did not reach.
pub fn state_machine(data: &[u8]) {
    use grammar::{machine_accepts, reference_accepts, Ev};
    use procsync::schema::MessageType;
    use procsync::state::{Flow, Role};

    let mut u = arbitrary::Unstructured::new(data);
    // Bit 0 clear: init (as before exec-no-ready existed); bit 1 picks exec
    // (clear) or exec-no-ready (set).
    let flow = match u.arbitrary::<u8>().unwrap_or(0) {
        b if b & 1 == 0 => Flow::Init,
        b if b & 2 == 0 => Flow::Exec,
        _ => Flow::ExecNoReady,
    };
    let mut evs = Vec::new();
    let mut closes = 0;
    while let Ok(b) = u.arbitrary::<u8>() {
        let role = if b & 0x80 != 0 {
            Role::Child
        } else {
            Role::Parent
        };
        let ev = match b & 0x0f {
            n @ 0..=9 => Ev::Msg(role, MessageType::try_from(i32::from(n)).unwrap()),
            _ => Ev::Close(role),
        };
        if let Ev::Close(_) = ev {
            closes += 1;
            // A second close is idempotent, which the grammar does not model.
            if closes > 1 {
                break;
            }
        }
        evs.push(ev);
        if evs.len() >= 64 {
            break;
        }
    }
    for role in Role::ALL {
        let reference = reference_accepts(role, flow, &evs);
        let accepted = machine_accepts(role, flow, &evs);
        assert_eq!(accepted, reference, "{role} {flow}: {evs:?}");
    }
}

fn open_fd_count() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Input layout: byte 0 selects how many fds "arrived" with the record (low
/// two bits: 0..=3, simulated with real `/dev/null` fds, no sockets); the rest
/// is one record.
///
/// Invariants: the transport's receive step (`decode_received`) accepts
/// exactly what the codec accepts with that fd count; an accepted message
/// hands out its fd iff HasFd is set; and once results are dropped, the
/// process has exactly the fds it had before (every fd closed on every path).
pub fn record_fds(data: &[u8]) {
    use procsync::transport::decode_received;
    let Some((&sel, record)) = data.split_first() else {
        return;
    };
    let nfds = usize::from(sel & 3);
    let limits = Limits::default();
    let before = open_fd_count();
    let fds: Vec<std::os::fd::OwnedFd> = (0..nfds)
        .map(|_| std::fs::File::open("/dev/null").expect("/dev/null").into())
        .collect();
    let codec_ok = native::decode(record, nfds, &limits).is_ok();
    match decode_received(record, fds, &limits) {
        Ok(rx) => {
            assert!(codec_ok, "transport accepted what the codec rejects");
            assert_eq!(rx.fd.is_some(), rx.msg.has_fd(), "fd handed out iff HasFd");
            assert!(nfds <= 1);
        }
        Err(e) => {
            assert!(!codec_ok, "transport rejected what the codec accepts: {e}");
            assert!(!e.to_string().is_empty());
        }
    }
    assert_eq!(
        open_fd_count(),
        before,
        "an fd leaked (record {record:02x?}, {nfds} fds)"
    );
}

/// Every stable kind string the runc codec may report.
#[cfg(feature = "runc-compat")]
const RUNC_KINDS: [&str; 25] = [
    "unknown-field",
    "empty-record",
    "truncated-length",
    "malformed-length",
    "length-mismatch",
    "too-large",
    "malformed-body",
    "unspecified-type",
    "unknown-type",
    "reserved-flags",
    "missing-fd",
    "unexpected-fd",
    "too-many-fds",
    "missing-payload",
    "unexpected-payload",
    "invalid-value",
    "too-deep",
    "wrong-type",
    "number-out-of-range",
    "missing-field",
    "duplicate-field",
    "noncanonical-key",
    "fd-name-mismatch",
    "fd-name-too-long",
    "fd-name-invalid",
];

#[cfg(feature = "runc-compat")]
fn runc_rejection(e: &procsync::wire::runc::RuncDecodeError) {
    assert!(
        RUNC_KINDS.contains(&e.kind().as_str()),
        "unknown kind {:?} for {e}",
        e.kind().as_str()
    );
    assert!(!e.to_string().is_empty());
}

/// Input layout: byte 0's low two bits are the number of fds (0..=3) that
/// came with the fd record, its next two bits the `configs.Mount` layout
/// the decoder expects (`MountShape::ALL`); the rest is split at `0xff` bytes (never part
/// of UTF-8, so never of a well-formed record or name) into the JSON
/// record, then optionally the fd record's payload, then optionally the
/// name the receiver expects (the requested mount's source).
///
/// Invariants: decoding is deterministic and never panics; every rejection
/// has one of the stable kinds and a message; a HasFd header without an fd
/// record is `missing-fd`, an fd record after a header without HasFd is
/// `unexpected-fd`; an accepted fd record has exactly one fd and a name of
/// 1–4095 bytes without NUL equal to the expected one; an accepted message
/// re-encodes in *each* `configs.Mount` shape that can express it to JSON
/// (and the same fd name) that decodes, in that shape, to the same message
/// (without `relabel` for v1.5, which has none), and that encoding is a
/// fixed point.
#[cfg(feature = "runc-compat")]
pub fn runc_decode(data: &[u8]) {
    use procsync::schema::MessageType;
    use procsync::wire::runc::{self, MountShape, RuncErrorKind, MAX_FD_NAME_LEN};
    use procsync::wire::ErrorKind;

    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let nfds = usize::from(sel & 3);
    let shape = MountShape::ALL[usize::from((sel >> 2) & 3)];
    let mut parts = rest.splitn(3, |&b| b == 0xff);
    let record = parts.next().unwrap_or_default();
    let fd_record = parts.next();
    let expected = parts.next().map(String::from_utf8_lossy);
    let limits = Limits::default();

    let decoded = runc::decode(record, shape, &limits);
    assert_eq!(
        decoded,
        runc::decode(record, shape, &limits),
        "decode is not deterministic"
    );
    let header = match decoded {
        Ok(h) => h,
        Err(e) => return runc_rejection(&e),
    };
    assert!(!record.is_empty() && record.len() <= limits.max_record());
    assert_ne!(header.message_type(), MessageType::Unspecified);
    assert_eq!(header.message().kind(), Some(header.message_type()));

    let name = match (header.has_fd(), fd_record) {
        (true, None) => {
            let e = header.finish(None).expect_err("HasFd without an fd record");
            assert_eq!(e.kind(), RuncErrorKind::Wire(ErrorKind::MissingFd), "{e}");
            return;
        }
        (true, Some(payload)) => match runc::decode_fd_record(payload, nfds, expected.as_deref()) {
            Ok(name) => {
                assert_eq!(nfds, 1, "an fd record needs exactly one fd");
                assert!(!name.is_empty() && name.len() <= MAX_FD_NAME_LEN);
                assert!(!name.contains('\0'));
                assert_eq!(name.as_bytes(), payload);
                if let Some(want) = &expected {
                    assert_eq!(name, want.as_ref());
                }
                Some(name)
            }
            Err(e) => return runc_rejection(&e),
        },
        (false, Some(_)) => {
            let e = header
                .clone()
                .finish(Some("/fd-record"))
                .expect_err("an fd record after a header without HasFd");
            assert_eq!(
                e.kind(),
                RuncErrorKind::Wire(ErrorKind::UnexpectedFd),
                "{e}"
            );
            None
        }
        (false, None) => None,
    };
    let msg = match header.finish(name) {
        Ok(msg) => msg,
        Err(e) => return runc_rejection(&e),
    };
    assert_eq!(msg.has_fd(), name.is_some());
    validate::validate(&msg, usize::from(msg.has_fd())).map_or_else(
        // The runc wire's one allowance: procError with an empty message.
        |e| assert!(msg.error_message() == Some(""), "accepted but invalid: {e}"),
        drop,
    );

    let wide = Limits::with_max_record(MAX_RECORD_CEILING);
    for shape in MountShape::ALL {
        let mut out = Vec::new();
        let recs = match runc::encode(&msg, name, shape, &wide, &mut out) {
            Ok(recs) => recs,
            // The seed layout has no user-namespace path and no recursive switch.
            Err(e) if e.kind() == RuncErrorKind::Unrepresentable && shape == MountShape::Seed => {
                continue
            }
            // Escaping can grow a record up to sixfold (`<` -> `\u003c`).
            Err(e)
                if e.kind() == RuncErrorKind::Wire(ErrorKind::TooLarge)
                    && record.len() * 6 > MAX_RECORD_CEILING =>
            {
                continue
            }
            Err(e) => panic!(
                "accepted message does not re-encode ({}): {e}",
                shape.name()
            ),
        };
        assert_eq!(recs.fd_name, name.map(str::as_bytes));
        let again = runc::decode(recs.json, shape, &wide)
            .and_then(|h| h.finish(name))
            .unwrap_or_else(|e| {
                panic!("re-encoded record does not decode ({}): {e}", shape.name())
            });
        let mut want = msg.clone();
        if let (MountShape::V1_5, Some(procsync::schema::Payload::MountPlease(m))) =
            (shape, &mut want.payload)
        {
            m.relabel.clear();
        }
        assert_eq!(
            again,
            want,
            "round trip changed the message ({})",
            shape.name()
        );
        let mut out2 = Vec::new();
        let recs2 = runc::encode(&again, name, shape, &wide, &mut out2).unwrap();
        assert_eq!(
            recs2.json,
            recs.json,
            "encoding is not a fixed point ({})",
            shape.name()
        );
    }
}
