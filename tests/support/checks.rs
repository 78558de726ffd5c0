// Invariant checks shared by the fuzz targets and the corpus replay test.
// Every function takes the raw fuzz input and panics if an invariant breaks.
// (Each includer uses a different subset.)
#![allow(dead_code)]

use bytes::BytesMut;
use procsync::wire::{native, validate, Limits, MAX_RECORD_CEILING};

/// Input layout: byte 0 selects the number of fds that "arrived" (low two
/// bits: 0..=3); the rest is one record.
///
/// Invariants: decoding never panics; the verdict equals the reference's —
/// the same framing with prost's `SyncMessage::decode` for the body, then
/// validation — and so does an accepted message; an accepted message passes
/// validation with the same fd count, re-encodes (HasFd from its flags) to
/// prost's bytes for it and to a record that decodes to the same message,
/// and the canonical record of that message is a fixed point; a rejection
/// has a stable kind and a message. The record's bytes taken as a body
/// alone also decode as prost decodes them.
pub fn frame_decode(data: &[u8]) {
    let Some((&sel, record)) = data.split_first() else {
        return;
    };
    let nfds = usize::from(sel & 3);
    let limits = Limits::default();
    let verdict = native::decode(record, nfds, &limits);
    if let Some(body) = framed_body(record, &limits) {
        let reference = prost_reference::decode_body(body)
            .and_then(|m| validate(&m, nfds).map(|_| m).map_err(Into::into));
        prost_reference::same_verdict(&verdict, &reference, body);
    }
    prost_reference::check_body(record);
    match verdict {
        Ok(msg) => {
            assert!(record.len() <= limits.max_record());
            validate(&msg, nfds).expect("an accepted message validates");
            let wide = Limits::with_max_record(MAX_RECORD_CEILING);
            let mut buf = BytesMut::new();
            native::encode(&msg, msg.has_fd(), &mut buf, &wide)
                .expect("an accepted message re-encodes");
            assert_eq!(
                &buf[..],
                &prost_reference::record(&msg, msg.has_fd())[..],
                "the encoder's bytes differ from prost's"
            );
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

/// The body of `record` if the native framing accepts it (size within
/// `limits`, a minimal varint prefix equal to the bytes that follow).
fn framed_body<'a>(record: &'a [u8], limits: &Limits) -> Option<&'a [u8]> {
    if record.is_empty() || record.len() > limits.max_record() {
        return None;
    }
    let mut len: u64 = 0;
    for (i, &b) in record.iter().enumerate().take(10) {
        len |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let body = &record[i + 1..];
            let minimal = i == 0 || b != 0;
            let fits = i < 9 || b <= 1;
            return (minimal && fits && len == body.len() as u64).then_some(body);
        }
    }
    None
}

/// prost as the reference for procsync's hand-written protobuf codec
/// (`src/wire/pb.rs`): the decoder must accept exactly what
/// `prost::Message::decode` accepts, with the same message, and the encoder
/// must write exactly prost's bytes.
pub mod prost_reference {
    use procsync::prost::Message;
    use procsync::schema::{SyncMessage, FLAG_HAS_FD};
    use procsync::wire::{native, DecodeError, ErrorKind};

    /// prost's decode of a body, its error mapped to `malformed-body`.
    pub fn decode_body(body: &[u8]) -> Result<SyncMessage, DecodeError> {
        SyncMessage::decode(body).map_err(|e| DecodeError::Malformed(e.to_string()))
    }

    /// prost's record for `msg` sent with or without an fd: the flags word
    /// as the encoder sets it, then `varint(len) || body`.
    pub fn record(msg: &SyncMessage, fd_attached: bool) -> Vec<u8> {
        let mut m = msg.clone();
        m.flags = (m.flags & !FLAG_HAS_FD) | u32::from(fd_attached);
        m.encode_length_delimited_to_vec()
    }

    /// Both verdicts agree: equal messages, or errors of the same kind (and,
    /// for a validation error, the same error).
    pub fn same_verdict(
        ours: &Result<SyncMessage, DecodeError>,
        reference: &Result<SyncMessage, DecodeError>,
        input: &[u8],
    ) {
        match (ours, reference) {
            (Ok(a), Ok(b)) => assert_eq!(a, b, "decoded differently from prost: {input:02x?}"),
            (Err(DecodeError::Invalid(a)), Err(DecodeError::Invalid(b))) => {
                assert_eq!(
                    a, b,
                    "validated differently from prost's message: {input:02x?}"
                )
            }
            (Err(a), Err(b)) => assert_eq!(
                a.kind(),
                b.kind(),
                "rejected differently from prost ({a} / {b}): {input:02x?}"
            ),
            (a, b) => panic!("hand decoder {a:?}, prost {b:?}: {input:02x?}"),
        }
    }

    /// [`native::decode_body`] on `body` agrees with prost.
    pub fn check_body(body: &[u8]) {
        let ours = native::decode_body(body);
        if let Err(e) = &ours {
            assert_eq!(e.kind(), ErrorKind::MalformedBody, "{e}");
        }
        same_verdict(&ours, &decode_body(body), body);
        if let Ok(m) = ours {
            // A decoded message has an exact size, whatever its values.
            for fd in [false, true] {
                assert_eq!(native::encoded_len(&m, fd), record(&m, fd).len());
            }
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

/// The control-message receive path over real sockets (PROTOCOL.md §8).
pub mod cmsg {
    use std::io::IoSlice;
    use std::mem::{size_of, MaybeUninit};
    use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
    use std::time::{Duration, Instant};

    use procsync::schema::SyncMessage;
    use procsync::transport::{Received, SyncSocket, TransportError};
    use procsync::wire::{native, Limits};
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, UCred};

    /// `SO_PASSPIDFD`, the socket option (76 in
    /// `include/uapi/asm-generic/socket.h` since Linux 6.5), from `libc`.
    /// The control message it produces is `SCM_PIDFD`, type 4.
    pub const SO_PASSPIDFD: libc::c_int = libc::SO_PASSPIDFD;

    /// Receiver socket options the input can set.
    #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
    pub struct Options {
        pub passcred: bool,
        pub passpidfd: bool,
        pub passsec: bool,
        /// 0 none, 1 `SO_TIMESTAMP`, 2 `SO_TIMESTAMPNS`, 3 both (the kernel
        /// then sends one timestamp, the kind of the option set last).
        pub timestamp: u8,
    }

    /// How the receiver takes the record (all must agree).
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Call {
        /// `recv_deadline` with a deadline ahead (poll, then `MSG_DONTWAIT`).
        Deadline,
        /// `try_recv` (one non-blocking attempt).
        Try,
        /// `recv_deadline(None)` (blocking `recvmsg`).
        Blocking,
        /// `recv_deadline` with a deadline already past (§8: a queued record
        /// is still taken).
        Past,
    }

    /// One decoded input (layout in [`parse`]).
    #[derive(Debug, Clone)]
    pub struct Case {
        pub opts: Options,
        pub sender_creds: bool,
        pub call: Call,
        pub nfds: usize,
        /// Into how many `SCM_RIGHTS` messages the sender splits the fds.
        pub rights_msgs: usize,
        pub peer_pidfd: bool,
        pub max_record: Option<usize>,
        pub record: Vec<u8>,
    }

    impl std::fmt::Display for Case {
        /// The case without the whole record (its length and first bytes).
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            let head = &self.record[..self.record.len().min(48)];
            write!(
                f,
                "{:?}, sender credentials {}, {:?}, {} fds in {} SCM_RIGHTS, peer pidfd {}, max_record {:?}, {}-byte record {head:02x?}",
                self.opts,
                self.sender_creds,
                self.call,
                self.nfds,
                self.rights_msgs,
                self.peer_pidfd,
                self.max_record,
                self.record.len()
            )
        }
    }

    /// Input layout, four header bytes then the record:
    ///
    /// * byte 0: bit 0 `SO_PASSCRED`, bit 1 `SO_PASSPIDFD`, bit 2
    ///   `SO_PASSSEC`, bits 3–4 timestamp option (none, `SO_TIMESTAMP`,
    ///   `SO_TIMESTAMPNS`, both), bit 5 the sender attaches its own
    ///   `SCM_CREDENTIALS`, bits 6–7 the receive call ([`Call`] in order);
    /// * byte 1: number of fds the sender attaches, modulo 65 (0–64);
    /// * byte 2: bits 0–2 into how many `SCM_RIGHTS` messages they are split
    ///   (1–8, at most one per fd), bit 3 a peer pidfd registered on the
    ///   receiver (our own process: never readable), bit 4 a small limit
    ///   (`max_record` = 16 + 4 × byte 3), bits 5–6 the record's size:
    ///   as given, padded (or cut) to the limit, to the limit + 1, or to
    ///   70000 bytes (padding repeats the record, `0x55` for an empty one);
    ///   bit 7 unused;
    /// * byte 3: the small limit's parameter;
    /// * the rest: the record.
    pub fn parse(data: &[u8]) -> Option<Case> {
        let (head, rest) = data.split_at_checked(4)?;
        let (b0, b1, b2, b3) = (head[0], head[1], head[2], head[3]);
        let opts = Options {
            passcred: b0 & 1 != 0,
            passpidfd: b0 & 2 != 0,
            passsec: b0 & 4 != 0,
            timestamp: (b0 >> 3) & 3,
        };
        let call = [Call::Deadline, Call::Try, Call::Blocking, Call::Past][usize::from(b0 >> 6)];
        let nfds = usize::from(b1) % 65;
        let max_record = (b2 & 0x10 != 0).then(|| 16 + 4 * usize::from(b3));
        let limit = max_record.unwrap_or(procsync::wire::DEFAULT_MAX_RECORD);
        let target = match (b2 >> 5) & 3 {
            0 => None,
            1 => Some(limit),
            2 => Some(limit + 1),
            _ => Some(70_000),
        };
        let mut record = rest.to_vec();
        if let Some(t) = target {
            let unit = if rest.is_empty() { &[0x55][..] } else { rest };
            record = unit.iter().copied().cycle().take(t).collect();
        }
        Some(Case {
            opts,
            sender_creds: b0 & 0x20 != 0,
            call,
            nfds,
            rights_msgs: (usize::from(b2 & 7) + 1).min(nfds.max(1)),
            peer_pidfd: b2 & 8 != 0,
            max_record,
            record,
        })
    }

    /// `CMSG_ALIGN`/`CMSG_SPACE`, from `struct cmsghdr`'s size and `size_t`
    /// alignment (not from procsync's own arithmetic).
    fn space(len: usize) -> usize {
        let align = |n: usize| n.div_ceil(size_of::<usize>()) * size_of::<usize>();
        align(size_of::<libc::cmsghdr>()) + align(len)
    }

    /// The receive control buffer PROTOCOL.md §8 prescribes (and
    /// `tests/vectors/transport.json`'s `control_buffer.fds` = 5 pins).
    pub fn control_buffer() -> usize {
        space(5 * size_of::<libc::c_int>())
            + space(size_of::<libc::ucred>())
            + space(size_of::<libc::c_int>())
    }

    /// What the receive must return.
    #[derive(Debug, Clone, PartialEq)]
    pub enum Expect {
        Message(Box<SyncMessage>),
        Error(&'static str, &'static str),
    }

    /// The expectation, from the spec's rules alone: which control messages
    /// the kernel writes (timestamp; credentials; the security label; the
    /// fds, merged into one `SCM_RIGHTS` however many messages the sender
    /// used; the pidfd), each taking `CMSG_SPACE` of the §8 buffer —
    /// `MSG_CTRUNC` iff they do not all fit (the sizes are multiples of the
    /// alignment, so neither the kernel's order nor its per-message
    /// rounding changes that) — then §8's check order, then the codec
    /// with the fd count that arrived.
    pub fn expect(case: &Case, label: Option<usize>, pidfd_ok: bool) -> Expect {
        let o = case.opts;
        let mut need = 0;
        if o.timestamp != 0 {
            need += space(16); // struct __kernel_old_timeval / timespec
        }
        if o.passcred {
            need += space(size_of::<libc::ucred>());
        }
        if let (true, Some(len)) = (o.passsec, label) {
            need += space(len);
        }
        if case.nfds > 0 {
            need += space(case.nfds * size_of::<libc::c_int>());
        }
        if o.passpidfd && pidfd_ok {
            need += space(size_of::<libc::c_int>());
        }
        let ctrunc = need > control_buffer();
        let limits = case
            .max_record
            .map_or_else(Limits::default, Limits::with_max_record);
        let len = case.record.len();
        if len == 0 {
            return if case.nfds == 0 && !ctrunc {
                Expect::Error("peer-closed", "peer")
            } else {
                Expect::Error("empty-record", "peer")
            };
        }
        if len > limits.max_record() {
            return Expect::Error("too-large", "peer");
        }
        if ctrunc {
            return Expect::Error("too-many-fds", "peer");
        }
        if o.timestamp != 0 {
            return Expect::Error("unexpected-control", "os");
        }
        match native::decode(&case.record, case.nfds, &limits) {
            Ok(msg) => Expect::Message(Box::new(msg)),
            Err(e) => Expect::Error(e.kind().as_str(), "peer"),
        }
    }

    fn set(sock: BorrowedFd<'_>, opt: libc::c_int) -> std::io::Result<()> {
        let one: libc::c_int = 1;
        // SAFETY: setsockopt reads one c_int from `one`, which outlives the
        // call; `sock` is an open socket.
        let r = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }

    /// Whether this kernel has `SO_PASSPIDFD` (Linux 6.5), probed once.
    pub fn pidfd_supported() -> bool {
        static P: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *P.get_or_init(|| {
            let (_a, b) = SyncSocket::pair().unwrap();
            set(b.as_fd(), SO_PASSPIDFD).is_ok()
        })
    }

    /// The `SCM_SECURITY` label's length a `SO_PASSSEC` receiver gets from
    /// a socketpair peer in this process (`None` without a labelling
    /// security module), probed once with a raw `recvmsg` and a large
    /// control buffer: environment data the model needs, not procsync's.
    pub fn security_label() -> Option<usize> {
        static L: std::sync::OnceLock<Option<usize>> = std::sync::OnceLock::new();
        *L.get_or_init(|| {
            let (a, b) = SyncSocket::pair().unwrap();
            set(b.as_fd(), libc::SO_PASSSEC).unwrap();
            send(a.as_fd(), b"x", &[], 1, false);
            let mut data = [0u8; 8];
            let mut ctrl = [0u64; 128];
            let mut iov = libc::iovec {
                iov_base: data.as_mut_ptr().cast(),
                iov_len: data.len(),
            };
            // SAFETY: an all-zero msghdr is a valid value.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = ctrl.as_mut_ptr().cast();
            msg.msg_controllen = size_of::<[u64; 128]>() as _;
            // SAFETY: iov and control point at live buffers of the sizes given.
            let n = unsafe { libc::recvmsg(b.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
            assert_eq!(n, 1, "probe recvmsg");
            assert_eq!(msg.msg_flags & libc::MSG_CTRUNC, 0);
            // SAFETY: the CMSG_* walk stays within the kernel-written
            // `msg_controllen` bytes of `ctrl`, which is live and aligned.
            unsafe {
                let mut c = libc::CMSG_FIRSTHDR(&msg);
                while !c.is_null() {
                    if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == 3 {
                        return Some((*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize);
                    }
                    c = libc::CMSG_NXTHDR(&msg, c);
                }
            }
            None
        })
    }

    /// One raw record: the sender's own credentials first if asked, then
    /// `nfds` copies of `fd` split into `msgs` `SCM_RIGHTS` messages.
    pub fn send(
        sock: BorrowedFd<'_>,
        bytes: &[u8],
        fds: &[BorrowedFd<'_>],
        msgs: usize,
        creds: bool,
    ) {
        let mut space = vec![MaybeUninit::<u8>::uninit(); 4096];
        let mut anc = SendAncillaryBuffer::new(&mut space);
        if creds {
            assert!(anc.push(SendAncillaryMessage::ScmCredentials(UCred {
                pid: rustix::process::getpid(),
                uid: rustix::process::getuid(),
                gid: rustix::process::getgid(),
            })));
        }
        if !fds.is_empty() {
            let per = fds.len().div_ceil(msgs.max(1));
            for chunk in fds.chunks(per) {
                assert!(anc.push(SendAncillaryMessage::ScmRights(chunk)));
            }
        }
        let n = rustix::net::sendmsg(sock, &[IoSlice::new(bytes)], &mut anc, SendFlags::NOSIGNAL)
            .expect("sendmsg");
        assert_eq!(n, bytes.len());
    }

    fn receive(rx: &mut SyncSocket, call: Call) -> Result<Received, TransportError> {
        match call {
            Call::Deadline => rx.recv_deadline(Some(Instant::now() + Duration::from_secs(10))),
            Call::Try => rx
                .try_recv()
                .map(|r| r.expect("try_recv: a record is queued")),
            Call::Blocking => rx.recv_deadline(None),
            Call::Past => rx.recv_deadline(Some(Instant::now())),
        }
    }

    pub fn fd_count() -> usize {
        std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
    }

    fn same_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
        let (x, y) = (rustix::fs::fstat(a).unwrap(), rustix::fs::fstat(b).unwrap());
        (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
    }

    /// Checks one outcome against the expectation; the fd, if any, must
    /// be the one sent and close-on-exec.
    fn check(
        got: &Result<Received, TransportError>,
        want: &Expect,
        sent: BorrowedFd<'_>,
        what: &dyn std::fmt::Display,
    ) {
        match (want, got) {
            (Expect::Message(m), Ok(r)) => {
                assert_eq!(&r.msg, &**m, "{what}: message");
                assert_eq!(
                    r.fd.is_some(),
                    m.has_fd(),
                    "{what}: fd handed out iff HasFd"
                );
                if let Some(fd) = &r.fd {
                    assert!(
                        same_file(fd.as_fd(), sent),
                        "{what}: the fd handed out is the one sent"
                    );
                    let fl = rustix::io::fcntl_getfd(fd).unwrap();
                    assert!(
                        fl.contains(rustix::io::FdFlags::CLOEXEC),
                        "{what}: close-on-exec"
                    );
                }
            }
            (Expect::Error(kind, origin), Err(e)) => {
                assert_eq!(e.kind().as_str(), *kind, "{what}: {e:?}");
                assert_eq!(e.origin().as_str(), *origin, "{what}: {e:?}");
                assert!(!e.to_string().is_empty());
            }
            (want, got) => panic!("{what}: expected {want:?}, got {got:?}"),
        }
    }

    /// Runs one case; panics when an invariant breaks.
    pub fn run(case: &Case) {
        let label = security_label();
        let pidfd_ok = pidfd_supported();
        let start = fd_count();
        {
            let devnull: OwnedFd = std::fs::File::open("/dev/null").unwrap().into();
            let (tx, rx) = SyncSocket::pair().unwrap();
            let mut rx = match case.max_record {
                Some(m) => rx.with_limits(Limits::with_max_record(m)),
                None => rx,
            };
            let o = case.opts;
            let setopt = |on: bool, opt| {
                if on {
                    set(rx.as_fd(), opt).expect("setsockopt");
                }
            };
            setopt(o.passcred, libc::SO_PASSCRED);
            setopt(o.passpidfd && pidfd_ok, SO_PASSPIDFD);
            setopt(o.passsec, libc::SO_PASSSEC);
            setopt(o.timestamp & 2 != 0, libc::SO_TIMESTAMPNS);
            setopt(o.timestamp & 1 != 0, libc::SO_TIMESTAMP);
            if case.peer_pidfd {
                rx.set_peer_pidfd(
                    procsync::transport::pidfd::open_pid(std::process::id()).unwrap(),
                );
            }
            let fds = vec![devnull.as_fd(); case.nfds];
            let base = fd_count();

            send(
                tx.as_fd(),
                &case.record,
                &fds,
                case.rights_msgs,
                case.sender_creds,
            );
            let want = expect(case, label, pidfd_ok);
            let got = receive(&mut rx, case.call);
            // Formatted only when an assertion fails.
            let what = case;
            check(&got, &want, devnull.as_fd(), what);
            let kept = matches!(&got, Ok(r) if r.fd.is_some());
            assert_eq!(
                fd_count(),
                base + usize::from(kept),
                "{what}: fds open with the outcome"
            );
            drop(got);
            assert_eq!(
                fd_count(),
                base,
                "{what}: fds open after dropping the outcome"
            );

            // The socket is in a defined state: the record (fds, pidfd and
            // all) was consumed whole, nothing else is queued, the socket
            // is still connected both ways, and the next record is received
            // as the same rules say, from an empty receive buffer.
            assert!(!rx.peer_hung_up().unwrap(), "{what}: peer looks closed");
            let ready = SyncMessage::ready();
            let mut rec = bytes::BytesMut::new();
            native::encode(&ready, false, &mut rec, &Limits::default()).unwrap();
            send(tx.as_fd(), &rec, &[], 1, false);
            let next = Case {
                opts: case.opts,
                sender_creds: false,
                call: case.call,
                nfds: 0,
                rights_msgs: 1,
                peer_pidfd: case.peer_pidfd,
                max_record: case.max_record,
                record: rec.to_vec(),
            };
            let got = receive(&mut rx, case.call);
            check(
                &got,
                &expect(&next, label, pidfd_ok),
                devnull.as_fd(),
                &format_args!("{what}: next record"),
            );
            drop(got);
            assert!(
                matches!(rx.try_recv(), Ok(None)),
                "{what}: more was queued than the two records"
            );
            assert_eq!(fd_count(), base, "{what}: fds after the next record");
        }
        assert_eq!(fd_count(), start, "fds after closing the pair");
    }
}

/// The transport's control-message handling fed real `cmsghdr` layouts
/// written by the kernel: a fresh socketpair per input, receiver options,
/// a raw sender attaching 0–64 fds in one or more `SCM_RIGHTS` messages
/// (and its own credentials), any record bytes and size, optionally a
/// small limit; layout in [`cmsg::parse`].
///
/// Invariants: the receive returns exactly what §8's rules and the codec
/// say ([`cmsg::expect`]), whichever receive call is used; an fd is handed
/// out iff HasFd, and it is the one sent, close-on-exec; while the outcome
/// lives only that fd is open, after dropping it none (every received fd,
/// pidfd and excess fd closed); and the socket is left in a defined state
/// (the next record arrives as the rules say, nothing else is queued).
pub fn control_messages(data: &[u8]) {
    if let Some(case) = cmsg::parse(data) {
        cmsg::run(&case);
    }
}
