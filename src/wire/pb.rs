//! A hand-written protobuf codec for exactly the schema of
//! `proto/procsync/v1/sync.proto`, decoding straight into (and encoding
//! from) the prost-generated types of [`crate::schema`].
//!
//! Why by hand: prost's generic decoder and encoder cost several times the
//! two system calls of a round trip (per-field calls through `Buf`, a
//! second walk of the message for `encoded_len`, strings grown through
//! `reserve`). This one knows the schema, reads from a slice and writes
//! into a buffer sized once.
//!
//! **Equivalence with prost 0.14 is the contract.** [`decode`] accepts
//! exactly the inputs `prost::Message::decode` accepts, giving the same
//! message, and rejects every other one; [`encode_record`] writes exactly the bytes
//! prost's `encode` writes. In particular:
//!
//! * keys: a varint up to `u32::MAX`, wire types 0–5, field number ≥ 1;
//!   varints: at most 10 bytes, the 10th at most 1 (no overflow), non-minimal
//!   forms accepted;
//! * scalars: the last value wins; `int32`/enums/`uint32` truncate the
//!   64-bit varint as prost does (`as i32`/`as u32`), `bool` is `!= 0`;
//!   enums stay open (unknown values are kept: validation rejects them);
//! * strings: the last value wins, must be UTF-8;
//! * an embedded message that occurs twice is merged; a `oneof` member of
//!   the same variant merges, another variant replaces;
//! * repeated `uint64` comes packed or unpacked; repeated messages append;
//! * a known field with the wrong wire type is an error;
//! * unknown fields of every wire type are skipped, groups included, with
//!   prost's recursion limit of 100 counted the same way: every embedded
//!   message and every level of an unknown group takes one level, and a
//!   field (even a varint) cannot be read at level 0;
//! * an embedded message or packed list must consume exactly its length.
//!   (prost reads a nested message from the shared buffer and reports an
//!   overrun when the message ends; reading each from its own sub-slice
//!   errs on the same inputs, only earlier.)
//!
//! `tests/codec_prost.rs` and the `frame_decode` fuzz check compare both
//! directions with prost itself.

use bytes::BytesMut;

use crate::schema::{
    ErrorInfo, FdAttached, IdMap, IdMapping, Mount, MountAttr, MountFdInfo, Payload, SeccompInfo,
    SeccompTransfer, SyncMessage,
};

/// prost's `RECURSION_LIMIT`.
const RECURSION_LIMIT: u32 = 100;

const VARINT: u8 = 0;
const FIXED64: u8 = 1;
const LEN: u8 = 2;
const START_GROUP: u8 = 3;
const END_GROUP: u8 = 4;
const FIXED32: u8 = 5;

/// Why a body is not a valid `SyncMessage` encoding. The text is for
/// humans; the kind (`malformed-body`) is what the protocol fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Malformed {
    /// What is wrong.
    pub reason: &'static str,
    /// The field being read (`"Mount.source"`), or `""`.
    pub field: &'static str,
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.field.is_empty() {
            f.write_str(self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

type R<T> = Result<T, Malformed>;

#[cold]
fn bad<T>(reason: &'static str) -> R<T> {
    Err(Malformed { reason, field: "" })
}

#[cold]
fn wrong_wire_type<T>(field: &'static str) -> R<T> {
    Err(Malformed {
        reason: "wrong wire type",
        field,
    })
}

/// Names the field an error happened in (the innermost name wins).
#[inline]
fn at<T>(field: &'static str, r: R<T>) -> R<T> {
    r.map_err(|mut e| {
        if e.field.is_empty() {
            e.field = field;
        }
        e
    })
}

/// A cursor over the bytes of one message (a sub-slice for an embedded one).
struct Rd<'a> {
    b: &'a [u8],
}

impl<'a> Rd<'a> {
    #[inline]
    fn more(&self) -> bool {
        !self.b.is_empty()
    }

    #[inline]
    fn varint(&mut self) -> R<u64> {
        match self.b.first() {
            Some(&x) if x < 0x80 => {
                self.b = &self.b[1..];
                Ok(u64::from(x))
            }
            _ => self.varint_long(),
        }
    }

    fn varint_long(&mut self) -> R<u64> {
        let mut v: u64 = 0;
        for (i, &x) in self.b.iter().enumerate().take(10) {
            v |= u64::from(x & 0x7f) << (7 * i);
            if x < 0x80 {
                if i == 9 && x > 1 {
                    return bad("varint overflows 64 bits");
                }
                self.b = &self.b[i + 1..];
                return Ok(v);
            }
        }
        if self.b.len() < 10 {
            bad("truncated varint")
        } else {
            bad("varint longer than 10 bytes")
        }
    }

    /// A field key: `(field number, wire type)`.
    #[inline]
    fn key(&mut self) -> R<(u32, u8)> {
        // Every key of the schema is one byte.
        if let Some(&k) = self.b.first() {
            if (8..0x80).contains(&k) && k & 7 <= FIXED32 {
                self.b = &self.b[1..];
                return Ok((u32::from(k >> 3), k & 7));
            }
        }
        self.key_long()
    }

    fn key_long(&mut self) -> R<(u32, u8)> {
        let k = self.varint()?;
        if k > u64::from(u32::MAX) {
            return bad("key above 2^32-1");
        }
        let wt = (k & 7) as u8;
        if wt > FIXED32 {
            return bad("invalid wire type 6 or 7");
        }
        let tag = (k as u32) >> 3;
        if tag == 0 {
            return bad("field number 0");
        }
        Ok((tag, wt))
    }

    /// The payload of a length-delimited field.
    #[inline]
    fn bytes(&mut self) -> R<&'a [u8]> {
        let len = self.varint()?;
        if len > self.b.len() as u64 {
            return bad("length past the end");
        }
        let (head, tail) = self.b.split_at(len as usize);
        self.b = tail;
        Ok(head)
    }

    #[inline]
    fn scalar(&mut self, wt: u8, field: &'static str) -> R<u64> {
        if wt != VARINT {
            return wrong_wire_type(field);
        }
        at(field, self.varint())
    }

    /// A string field, replacing `out` (the last value wins).
    #[inline]
    fn string(&mut self, wt: u8, out: &mut String, field: &'static str) -> R<()> {
        if wt != LEN {
            return wrong_wire_type(field);
        }
        let raw = at(field, self.bytes())?;
        // Checked on the heap copy: its alignment lets the UTF-8 check take
        // its word-at-a-time ASCII path (the bytes in the record are not
        // aligned), and the one allocation is exactly the string's length.
        match String::from_utf8(raw.to_vec()) {
            Ok(s) => {
                *out = s;
                Ok(())
            }
            Err(_) => Err(Malformed {
                reason: "not UTF-8",
                field,
            }),
        }
    }

    /// An embedded message's bytes and the level its fields are read at.
    #[inline]
    fn message(&mut self, wt: u8, ctx: u32, field: &'static str) -> R<(Rd<'a>, u32)> {
        if wt != LEN {
            return wrong_wire_type(field);
        }
        if ctx == 0 {
            return Err(Malformed {
                reason: "recursion limit reached",
                field,
            });
        }
        let b = at(field, self.bytes())?;
        Ok((Rd { b }, ctx - 1))
    }

    /// Skips an unknown field (prost's `skip_field`).
    fn skip(&mut self, wt: u8, tag: u32, ctx: u32) -> R<()> {
        if ctx == 0 {
            return bad("recursion limit reached");
        }
        let len = match wt {
            VARINT => {
                self.varint()?;
                0
            }
            FIXED64 => 8,
            LEN => self.varint()?,
            START_GROUP => loop {
                let (inner, iwt) = self.key()?;
                if iwt == END_GROUP {
                    if inner != tag {
                        return bad("mismatched end-group");
                    }
                    break 0;
                }
                self.skip(iwt, inner, ctx - 1)?;
            },
            END_GROUP => return bad("unexpected end-group"),
            _ => 4, // FIXED32 (key() admits nothing else)
        };
        if len > self.b.len() as u64 {
            return bad("length past the end");
        }
        self.b = &self.b[len as usize..];
        Ok(())
    }
}

/// Decodes a protobuf `SyncMessage` body into `msg`, which must be the
/// default message, exactly as `<SyncMessage as prost::Message>::decode`
/// does. (Built in place: the message is large, and every move is a copy.)
/// On error `msg` holds a partial message, to be discarded.
#[inline]
pub(crate) fn decode_into(body: &[u8], msg: &mut SyncMessage) -> R<()> {
    merge_sync(msg, Rd { b: body }, RECURSION_LIMIT)
}

fn merge_sync(m: &mut SyncMessage, mut r: Rd<'_>, ctx: u32) -> R<()> {
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => m.r#type = r.scalar(wt, "SyncMessage.type")? as i32,
            2 => m.flags = r.scalar(wt, "SyncMessage.flags")? as u32,
            10 => {
                let (sub, c) = r.message(wt, ctx, "SyncMessage.error")?;
                if !matches!(m.payload, Some(Payload::Error(_))) {
                    m.payload = Some(Payload::Error(ErrorInfo::default()));
                }
                if let Some(Payload::Error(e)) = &mut m.payload {
                    merge_error(e, sub, c)?;
                }
            }
            11 => {
                let (sub, c) = r.message(wt, ctx, "SyncMessage.mount_please")?;
                if !matches!(m.payload, Some(Payload::MountPlease(_))) {
                    m.payload = Some(Payload::MountPlease(Mount::default()));
                }
                if let Some(Payload::MountPlease(x)) = &mut m.payload {
                    merge_mount(x, sub, c)?;
                }
            }
            12 => {
                let (sub, c) = r.message(wt, ctx, "SyncMessage.mount_fd")?;
                if !matches!(m.payload, Some(Payload::MountFd(_))) {
                    m.payload = Some(Payload::MountFd(MountFdInfo::default()));
                }
                if let Some(Payload::MountFd(x)) = &mut m.payload {
                    merge_mount_fd(x, sub, c)?;
                }
            }
            13 => {
                let (sub, c) = r.message(wt, ctx, "SyncMessage.seccomp")?;
                if !matches!(m.payload, Some(Payload::Seccomp(_))) {
                    m.payload = Some(Payload::Seccomp(SeccompInfo::default()));
                }
                if let Some(Payload::Seccomp(x)) = &mut m.payload {
                    merge_seccomp(x, sub, c)?;
                }
            }
            _ => r.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

// Not inlined: one function per message keeps each loop small (inlined
// into one, the field addresses of every message were set up per record).
#[inline(never)]
fn merge_error(m: &mut ErrorInfo, mut r: Rd<'_>, ctx: u32) -> R<()> {
    while r.more() {
        match r.key()? {
            (1, wt) => r.string(wt, &mut m.message, "ErrorInfo.message")?,
            (tag, wt) => r.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

#[inline(never)]
fn merge_mount(m: &mut Mount, mut r: Rd<'_>, ctx: u32) -> R<()> {
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => r.string(wt, &mut m.source, "Mount.source")?,
            2 => r.string(wt, &mut m.destination, "Mount.destination")?,
            3 => r.string(wt, &mut m.device, "Mount.device")?,
            4 => m.flags = r.scalar(wt, "Mount.flags")?,
            5 => m.cleared_flags = r.scalar(wt, "Mount.cleared_flags")?,
            6 => {
                const F: &str = "Mount.propagation_flags";
                match wt {
                    VARINT => m.propagation_flags.push(at(F, r.varint())?),
                    LEN => {
                        let mut list = Rd {
                            b: at(F, r.bytes())?,
                        };
                        // Every varint ends in a byte below 0x80: at most
                        // this many values follow.
                        let n = list.b.iter().filter(|&&x| x < 0x80).count();
                        m.propagation_flags.reserve(n);
                        while list.more() {
                            m.propagation_flags.push(at(F, list.varint())?);
                        }
                    }
                    _ => return wrong_wire_type(F),
                }
            }
            7 => r.string(wt, &mut m.data, "Mount.data")?,
            8 => {
                let (sub, c) = r.message(wt, ctx, "Mount.rec_attr")?;
                merge_mount_attr(m.rec_attr.get_or_insert_with(Default::default), sub, c)?;
            }
            9 => {
                let (sub, c) = r.message(wt, ctx, "Mount.id_mapping")?;
                merge_id_mapping(m.id_mapping.get_or_insert_with(Default::default), sub, c)?;
            }
            10 => m.extensions = r.scalar(wt, "Mount.extensions")? as u32,
            11 => r.string(wt, &mut m.relabel, "Mount.relabel")?,
            _ => r.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

#[inline(never)]
fn merge_mount_attr(m: &mut MountAttr, mut r: Rd<'_>, ctx: u32) -> R<()> {
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => m.attr_set = r.scalar(wt, "MountAttr.attr_set")?,
            2 => m.attr_clr = r.scalar(wt, "MountAttr.attr_clr")?,
            3 => m.propagation = r.scalar(wt, "MountAttr.propagation")?,
            4 => m.userns_fd = r.scalar(wt, "MountAttr.userns_fd")?,
            _ => r.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

#[inline(never)]
fn merge_id_mapping(m: &mut IdMapping, mut r: Rd<'_>, ctx: u32) -> R<()> {
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => m.recursive = r.scalar(wt, "IdMapping.recursive")? != 0,
            2 => r.string(wt, &mut m.userns_path, "IdMapping.userns_path")?,
            3 => {
                let (sub, c) = r.message(wt, ctx, "IdMapping.uid_mappings")?;
                let mut line = IdMap::default();
                merge_id_map(&mut line, sub, c)?;
                m.uid_mappings.push(line);
            }
            4 => {
                let (sub, c) = r.message(wt, ctx, "IdMapping.gid_mappings")?;
                let mut line = IdMap::default();
                merge_id_map(&mut line, sub, c)?;
                m.gid_mappings.push(line);
            }
            _ => r.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

#[inline(never)]
fn merge_id_map(m: &mut IdMap, mut r: Rd<'_>, ctx: u32) -> R<()> {
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => m.container_id = r.scalar(wt, "IdMap.container_id")? as u32,
            2 => m.host_id = r.scalar(wt, "IdMap.host_id")? as u32,
            3 => m.size = r.scalar(wt, "IdMap.size")? as u32,
            _ => r.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

#[inline(never)]
fn merge_mount_fd(m: &mut MountFdInfo, mut r: Rd<'_>, ctx: u32) -> R<()> {
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => m.kind = r.scalar(wt, "MountFdInfo.kind")? as i32,
            2 => r.string(wt, &mut m.source, "MountFdInfo.source")?,
            _ => r.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

#[inline(never)]
fn merge_seccomp(m: &mut SeccompInfo, mut r: Rd<'_>, ctx: u32) -> R<()> {
    while r.more() {
        let (tag, wt) = r.key()?;
        match tag {
            1 => {
                let (mut sub, c) = r.message(wt, ctx, "SeccompInfo.attached")?;
                // FdAttached has no fields: every one is unknown.
                while sub.more() {
                    let (t, w) = sub.key()?;
                    sub.skip(w, t, c)?;
                }
                if !matches!(m.transfer, Some(SeccompTransfer::Attached(_))) {
                    m.transfer = Some(SeccompTransfer::Attached(FdAttached {}));
                }
            }
            2 => {
                m.transfer = Some(SeccompTransfer::ChildFd(
                    r.scalar(wt, "SeccompInfo.child_fd")? as i32,
                ))
            }
            _ => r.skip(wt, tag, ctx)?,
        }
    }
    Ok(())
}

// ---- encoding ----

/// The length of `v` as a varint (1..=10).
#[inline]
const fn varint_len(v: u64) -> usize {
    let bits = 64 - (v | 1).leading_zeros() as usize;
    (bits * 9 + 64) / 64
}

// Every field number of the schema is below 16: each key is one byte.

#[inline]
fn len_str(s: &str) -> usize {
    if s.is_empty() {
        0
    } else {
        1 + varint_len(s.len() as u64) + s.len()
    }
}

#[inline]
fn len_u64(v: u64) -> usize {
    if v == 0 {
        0
    } else {
        1 + varint_len(v)
    }
}

/// An embedded message of `n` body bytes, with its key and length.
#[inline]
fn len_msg(n: usize) -> usize {
    1 + varint_len(n as u64) + n
}

/// `int32` (and enum) values travel sign-extended to 64 bits.
#[inline]
fn i32_wire(v: i32) -> u64 {
    i64::from(v) as u64
}

fn body_mount(m: &Mount) -> usize {
    let mut n = len_str(&m.source)
        + len_str(&m.destination)
        + len_str(&m.device)
        + len_u64(m.flags)
        + len_u64(m.cleared_flags)
        + len_str(&m.data)
        + len_u64(u64::from(m.extensions))
        + len_str(&m.relabel);
    if !m.propagation_flags.is_empty() {
        n += len_msg(packed_len(&m.propagation_flags));
    }
    if let Some(a) = &m.rec_attr {
        n += len_msg(body_mount_attr(a));
    }
    if let Some(i) = &m.id_mapping {
        n += len_msg(body_id_mapping(i));
    }
    n
}

fn packed_len(v: &[u64]) -> usize {
    v.iter().map(|&x| varint_len(x)).sum()
}

fn body_mount_attr(a: &MountAttr) -> usize {
    len_u64(a.attr_set) + len_u64(a.attr_clr) + len_u64(a.propagation) + len_u64(a.userns_fd)
}

fn body_id_mapping(i: &IdMapping) -> usize {
    let lines = |v: &[IdMap]| -> usize { v.iter().map(|l| len_msg(body_id_map(l))).sum() };
    usize::from(i.recursive) * 2
        + len_str(&i.userns_path)
        + lines(&i.uid_mappings)
        + lines(&i.gid_mappings)
}

fn body_id_map(l: &IdMap) -> usize {
    len_u64(u64::from(l.container_id)) + len_u64(u64::from(l.host_id)) + len_u64(u64::from(l.size))
}

fn body_payload(p: &Payload) -> usize {
    match p {
        Payload::Error(e) => len_str(&e.message),
        Payload::MountPlease(m) => body_mount(m),
        Payload::MountFd(f) => len_u64(i32_wire(f.kind)) + len_str(&f.source),
        Payload::Seccomp(s) => match s.transfer {
            None => 0,
            Some(SeccompTransfer::Attached(_)) => 2,
            Some(SeccompTransfer::ChildFd(n)) => 1 + varint_len(i32_wire(n)),
        },
    }
}

/// The encoded sizes of a `SyncMessage` whose flags word is `flags`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// The whole body.
    pub body: usize,
    /// The payload member's own body (0 without a payload).
    payload: usize,
}

impl Sizes {
    /// The record: length prefix and body.
    #[inline]
    pub fn record(self) -> usize {
        varint_len(self.body as u64) + self.body
    }
}

/// The body's size as [`encode_record`] writes it, in one pass.
#[inline]
pub(crate) fn sizes(msg: &SyncMessage, flags: u32) -> Sizes {
    let mut body = len_u64(i32_wire(msg.r#type)) + len_u64(u64::from(flags));
    let mut payload = 0;
    if let Some(p) = &msg.payload {
        payload = body_payload(p);
        body += len_msg(payload);
    }
    Sizes { body, payload }
}

/// Writes into a slice sized exactly for the record.
struct Wr<'a> {
    out: &'a mut [u8],
    pos: usize,
}

impl Wr<'_> {
    #[inline]
    fn byte(&mut self, b: u8) {
        self.out[self.pos] = b;
        self.pos += 1;
    }

    #[inline]
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.byte(v as u8 | 0x80);
            v >>= 7;
        }
        self.byte(v as u8);
    }

    #[inline]
    fn key(&mut self, tag: u8, wt: u8) {
        self.byte(tag << 3 | wt);
    }

    #[inline]
    fn u64_field(&mut self, tag: u8, v: u64) {
        if v != 0 {
            self.key(tag, VARINT);
            self.varint(v);
        }
    }

    #[inline]
    fn str_field(&mut self, tag: u8, s: &str) {
        if !s.is_empty() {
            self.key(tag, LEN);
            self.varint(s.len() as u64);
            let end = self.pos + s.len();
            self.out[self.pos..end].copy_from_slice(s.as_bytes());
            self.pos = end;
        }
    }

    #[inline]
    fn msg_head(&mut self, tag: u8, len: usize) {
        self.key(tag, LEN);
        self.varint(len as u64);
    }

    fn mount(&mut self, m: &Mount) {
        self.str_field(1, &m.source);
        self.str_field(2, &m.destination);
        self.str_field(3, &m.device);
        self.u64_field(4, m.flags);
        self.u64_field(5, m.cleared_flags);
        if !m.propagation_flags.is_empty() {
            self.msg_head(6, packed_len(&m.propagation_flags));
            for &v in &m.propagation_flags {
                self.varint(v);
            }
        }
        self.str_field(7, &m.data);
        if let Some(a) = &m.rec_attr {
            self.msg_head(8, body_mount_attr(a));
            self.u64_field(1, a.attr_set);
            self.u64_field(2, a.attr_clr);
            self.u64_field(3, a.propagation);
            self.u64_field(4, a.userns_fd);
        }
        if let Some(i) = &m.id_mapping {
            self.msg_head(9, body_id_mapping(i));
            if i.recursive {
                self.key(1, VARINT);
                self.byte(1);
            }
            self.str_field(2, &i.userns_path);
            for (tag, lines) in [(3, &i.uid_mappings), (4, &i.gid_mappings)] {
                for l in lines {
                    self.msg_head(tag, body_id_map(l));
                    self.u64_field(1, u64::from(l.container_id));
                    self.u64_field(2, u64::from(l.host_id));
                    self.u64_field(3, u64::from(l.size));
                }
            }
        }
        self.u64_field(10, u64::from(m.extensions));
        self.str_field(11, &m.relabel);
    }
}

/// Appends `varint(sizes.body) || body` to `buf`: exactly the bytes of
/// prost's `encode_length_delimited` for `msg` with its flags word replaced
/// by `flags`. `sizes` must come from [`sizes`] for the same message.
/// Allocates only when `buf` has no room for the record.
pub(crate) fn encode_record(msg: &SyncMessage, flags: u32, sz: Sizes, buf: &mut BytesMut) {
    let total = sz.record();
    let start = buf.len();
    buf.resize(start + total, 0);
    let mut w = Wr {
        out: &mut buf[start..],
        pos: 0,
    };
    w.varint(sz.body as u64);
    w.u64_field(1, i32_wire(msg.r#type));
    w.u64_field(2, u64::from(flags));
    if let Some(p) = &msg.payload {
        match p {
            Payload::Error(e) => {
                w.msg_head(10, sz.payload);
                w.str_field(1, &e.message);
            }
            Payload::MountPlease(m) => {
                w.msg_head(11, sz.payload);
                w.mount(m);
            }
            Payload::MountFd(f) => {
                w.msg_head(12, sz.payload);
                w.u64_field(1, i32_wire(f.kind));
                w.str_field(2, &f.source);
            }
            Payload::Seccomp(s) => {
                w.msg_head(13, sz.payload);
                match s.transfer {
                    None => {}
                    Some(SeccompTransfer::Attached(_)) => {
                        w.msg_head(1, 0);
                    }
                    Some(SeccompTransfer::ChildFd(n)) => {
                        w.key(2, VARINT);
                        w.varint(i32_wire(n));
                    }
                }
            }
        }
    }
    debug_assert_eq!(w.pos, total, "encoded size differs from the computed size");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varint_len_matches_the_encoding() {
        for shift in 0..64 {
            for v in [1u64 << shift, (1u64 << shift) - 1, (1u64 << shift) + 1] {
                let mut n = 1;
                let mut x = v;
                while x >= 0x80 {
                    x >>= 7;
                    n += 1;
                }
                assert_eq!(varint_len(v), n, "{v}");
            }
        }
        assert_eq!(varint_len(0), 1);
        assert_eq!(varint_len(u64::MAX), 10);
    }
}
