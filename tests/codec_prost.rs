//! The hand-written protobuf codec (`src/wire/pb.rs`) against prost, its
//! reference: decoding must accept exactly what `prost::Message::decode`
//! accepts, with the same message, and encoding must write exactly prost's
//! bytes. Inputs: every record of every golden vector file, the committed
//! fuzz corpora (`frame_decode`, `record_fds`), and a large generated set —
//! random messages (encode, sizes, round trip), mutations of their
//! encodings, grammar-built field soups with groups, wrong wire types and
//! bad lengths, deep nesting around the recursion limit, and edge varints.
//! The `frame_decode` fuzz target runs the same check
//! (`checks::frame_decode`).

#[path = "support/checks.rs"]
mod checks;
#[path = "support/package.rs"]
mod package;

use std::path::Path;

use bytes::BytesMut;
use checks::prost_reference::{self, check_body};
use procsync::schema::*;
use procsync::wire::{native, Limits, MAX_RECORD_CEILING};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// How many times the generated sets run (default 1) and the seed offset:
/// `PROCSYNC_CODEC_ROUNDS=50 cargo test --release --test codec_prost`
/// runs fifty different sets of each (a longer hunt for a difference).
fn rounds() -> u64 {
    std::env::var("PROCSYNC_CODEC_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
}

/// A generator seeded with `seed` for round `round`.
fn seeded(seed: u64, round: u64) -> Rng {
    Rng(seed ^ round.wrapping_mul(0x9e37_79b9_7f4a_7c15))
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
    /// A value of random bit length (small values as often as large ones).
    fn wide(&mut self) -> u64 {
        let bits = self.below(65);
        if bits == 64 {
            self.next()
        } else {
            self.next() & ((1u64 << bits) - 1)
        }
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_key(out: &mut Vec<u8>, tag: u64, wt: u64) {
    put_varint(out, tag << 3 | wt);
}

fn hex_decode(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// Every hex string under a key naming a record in a vector file.
fn collect_records(v: &serde_json::Value, key: Option<&str>, out: &mut Vec<Vec<u8>>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                collect_records(x, Some(k), out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_records(x, key, out)),
        serde_json::Value::String(s) if key.is_some_and(|k| k.contains("record") || k == "hex") => {
            if let Some(b) = hex_decode(s) {
                out.push(b);
            }
        }
        _ => {}
    }
}

/// A record's body as the framing would see it (or the whole record).
fn body_of(record: &[u8]) -> &[u8] {
    let n = record
        .iter()
        .take(10)
        .position(|&b| b < 0x80)
        .map_or(0, |i| i + 1);
    &record[n..]
}

/// Every check on one record: the fuzz check with 0..=3 fds, and the body
/// alone (prefix stripped, and not).
fn check_record(record: &[u8]) {
    for sel in 0..4u8 {
        let mut input = vec![sel];
        input.extend_from_slice(record);
        checks::frame_decode(&input);
    }
    check_body(record);
    check_body(body_of(record));
}

#[test]
fn every_vector_record_decodes_as_prost_does() {
    let mut n = 0;
    for entry in std::fs::read_dir(Path::new(ROOT).join("tests/vectors")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut records = Vec::new();
        collect_records(&v, None, &mut records);
        for r in &records {
            check_record(r);
        }
        n += records.len();
    }
    assert!(n > 100, "only {n} vector records found");
}

#[test]
fn every_fuzz_corpus_input_decodes_as_prost_does() {
    if package::not_shipped("fuzz/corpus", "replaying the fuzz corpora against prost") {
        return;
    }
    for target in ["frame_decode", "record_fds"] {
        let dir = Path::new(ROOT).join("fuzz/corpus").join(target);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let data = std::fs::read(entry.unwrap().path()).unwrap();
            checks::frame_decode(&data);
            if let Some((_, record)) = data.split_first() {
                check_body(record);
                check_body(body_of(record));
            }
            n += 1;
        }
        assert!(n > 0, "{} is empty", dir.display());
    }
}

fn gen_string(rng: &mut Rng) -> String {
    const PARTS: [&str; 10] = ["/", "a", "var", "lib", "é", "日本", "\0", " ", "..", "z"];
    if rng.chance(3) {
        return String::new();
    }
    let mut s = String::new();
    if rng.chance(4) {
        // Long enough for a two-byte length prefix.
        s.push_str(&"/x".repeat(rng.below(200) as usize));
    }
    for _ in 0..rng.below(8) {
        let part: &str = PARTS[rng.below(PARTS.len() as u64) as usize];
        s.push_str(part);
    }
    s
}

fn gen_path(rng: &mut Rng) -> String {
    if rng.chance(8) {
        return gen_string(rng);
    }
    let mut s = String::from("/");
    s.push_str(&gen_string(rng).replace('\0', ""));
    s
}

fn gen_lines(rng: &mut Rng) -> Vec<IdMap> {
    let mut base = 0u64;
    (0..rng.below(4))
        .map(|_| {
            let size = 1 + rng.below(1000);
            let line = IdMap::new(base as u32, (base + 100_000) as u32, size as u32);
            base += size + rng.below(10);
            if rng.chance(10) {
                IdMap::new(rng.next() as u32, rng.next() as u32, rng.next() as u32)
            } else {
                line
            }
        })
        .collect()
}

fn gen_message(rng: &mut Rng) -> SyncMessage {
    let ty = if rng.chance(10) {
        rng.next() as i32
    } else {
        rng.below(10) as i32
    };
    let flags = if rng.chance(10) {
        rng.next() as u32
    } else {
        rng.below(2) as u32
    };
    let payload = match rng.below(5) {
        0 => None,
        1 => Some(Payload::Error(ErrorInfo {
            message: gen_string(rng),
        })),
        2 => {
            let mut m = Mount {
                source: gen_path(rng),
                destination: gen_path(rng),
                device: gen_string(rng),
                flags: rng.wide(),
                cleared_flags: rng.wide(),
                propagation_flags: (0..rng.below(4)).map(|_| rng.wide()).collect(),
                data: gen_string(rng),
                extensions: rng.wide() as u32,
                relabel: gen_string(rng),
                ..Mount::default()
            };
            if rng.chance(3) {
                m.rec_attr = Some(MountAttr {
                    attr_set: rng.wide(),
                    attr_clr: rng.wide(),
                    propagation: rng.wide(),
                    userns_fd: rng.wide(),
                });
            }
            if rng.chance(2) {
                m.id_mapping = Some(IdMapping {
                    recursive: rng.chance(2),
                    userns_path: if rng.chance(2) {
                        gen_path(rng)
                    } else {
                        String::new()
                    },
                    uid_mappings: gen_lines(rng),
                    gid_mappings: gen_lines(rng),
                });
            }
            Some(Payload::MountPlease(m))
        }
        3 => Some(Payload::MountFd(MountFdInfo {
            kind: if rng.chance(8) {
                rng.next() as i32
            } else {
                rng.below(3) as i32
            },
            source: gen_path(rng),
        })),
        _ => Some(Payload::Seccomp(SeccompInfo {
            transfer: match rng.below(4) {
                0 => None,
                1 => Some(SeccompTransfer::Attached(FdAttached {})),
                2 => Some(SeccompTransfer::ChildFd(rng.below(100) as i32)),
                _ => Some(SeccompTransfer::ChildFd(rng.next() as i32)),
            },
        })),
    };
    // Mostly the type that fits the payload, so most messages are valid.
    let fitting = match &payload {
        None => *rng.pick(&[2, 3, 4, 5, 9]),
        Some(Payload::Error(_)) => 1,
        Some(Payload::MountPlease(_)) => 6,
        Some(Payload::MountFd(_)) => 7,
        Some(Payload::Seccomp(_)) => 8,
    };
    SyncMessage {
        r#type: if rng.chance(5) { ty } else { fitting },
        flags,
        payload,
    }
}

/// Random messages: the encoder writes prost's bytes (when the message is
/// valid, else it refuses), `encoded_len` is exact for every message, and
/// both decoders read prost's bytes back to the message.
#[test]
fn random_messages_encode_as_prost_does() {
    let wide = Limits::with_max_record(MAX_RECORD_CEILING);
    let mut encoded = 0;
    let mut buf = BytesMut::new();
    for round in 0..rounds() {
        let mut rng = seeded(0x5eed_c0de_0000_0001, round);
        for _ in 0..40_000 {
            let msg = gen_message(&mut rng);
            for fd in [false, true] {
                let reference = prost_reference::record(&msg, fd);
                assert_eq!(native::encoded_len(&msg, fd), reference.len(), "{msg:?}");
                buf.clear();
                // Something in front: encode appends.
                buf.extend_from_slice(b"xy");
                if native::encode(&msg, fd, &mut buf, &wide).is_ok() {
                    assert_eq!(&buf[2..], &reference[..], "{msg:?}");
                    encoded += 1;
                } else {
                    assert_eq!(&buf[..], b"xy", "a refused message wrote bytes");
                }
                check_record(&reference);
            }
        }
    }
    // The generator must reach the valid messages often enough to matter.
    assert!(
        encoded > 15_000,
        "only {encoded} random messages were valid"
    );
}

/// Random edits of valid encodings: flipped, inserted, deleted and
/// duplicated bytes, truncation, splices of two messages, unknown fields
/// inserted anywhere.
#[test]
fn mutated_encodings_decode_as_prost_does() {
    for round in 0..rounds() {
        let mut rng = seeded(0x0bad_cafe_0000_0002, round);
        let mut pool: Vec<Vec<u8>> = Vec::new();
        for _ in 0..200 {
            let m = gen_message(&mut rng);
            let mut body = prost_reference::record(&m, rng.chance(2));
            let prefix = body.len() - body_of(&body).len();
            body.drain(..prefix);
            pool.push(body);
        }
        for _ in 0..200_000 {
            let mut b = rng.pick(&pool).clone();
            for _ in 0..1 + rng.below(3) {
                let at = if b.is_empty() {
                    0
                } else {
                    rng.below(b.len() as u64 + 1) as usize
                };
                match rng.below(8) {
                    0 if at < b.len() => b[at] ^= 1 << rng.below(8),
                    1 if at < b.len() => b[at] = rng.next() as u8,
                    2 => b.insert(at, rng.next() as u8),
                    3 if at < b.len() => {
                        b.remove(at);
                    }
                    4 => b.truncate(at),
                    5 => {
                        let other = rng.pick(&pool);
                        let from = rng.below(other.len() as u64 + 1) as usize;
                        b.splice(at..at, other[from..].iter().copied());
                    }
                    6 => {
                        let mut field = Vec::new();
                        soup_field(&mut rng, &mut field, 2);
                        b.splice(at..at, field);
                    }
                    _ => {
                        let end = (at + rng.below(8) as usize).min(b.len());
                        let dup = b[at..end].to_vec();
                        b.splice(at..at, dup);
                    }
                }
            }
            check_body(&b);
        }
    }
}

/// One random field: a key (mostly a known field number, sometimes 0, an
/// unknown one or a huge one; mostly a wire type that fits, sometimes any
/// of 0..=7) and a value that may be cut short, too long, not UTF-8, a
/// nested message built the same way, or a group.
fn soup_field(rng: &mut Rng, out: &mut Vec<u8>, depth: u32) {
    let tag = match rng.below(10) {
        0 => 0,
        1 => 14 + rng.below(40),
        2 => rng.wide() >> 3,
        _ => 1 + rng.below(13),
    };
    let wt = if rng.chance(4) {
        rng.below(8)
    } else {
        *rng.pick(&[0, 0, 2, 2, 2, 3])
    };
    put_key(out, tag, wt);
    match wt {
        0 => match rng.below(6) {
            0 => {
                // 10 bytes, the last one 0, 1 or 2.
                out.extend_from_slice(&[0xff; 9]);
                out.push(rng.below(3) as u8);
            }
            1 => out.extend_from_slice(&[0x80; 11]),
            2 => out.extend_from_slice(&[0x80, 0x00]), // non-minimal
            _ => put_varint(out, rng.wide()),
        },
        1 => out.extend((0..rng.below(10)).map(|_| rng.next() as u8)),
        5 => out.extend((0..rng.below(6)).map(|_| rng.next() as u8)),
        2 => {
            let mut inner = Vec::new();
            match rng.below(5) {
                0 => inner.extend((0..rng.below(12)).map(|_| rng.next() as u8)),
                1 => inner.extend_from_slice("/é日".as_bytes()),
                2 => inner.extend_from_slice(&[b'/', 0xc3, 0x28]), // not UTF-8
                _ if depth > 0 => {
                    for _ in 0..rng.below(4) {
                        soup_field(rng, &mut inner, depth - 1);
                    }
                }
                _ => put_varint(&mut inner, rng.wide()),
            }
            let len = inner.len() as i64
                + if rng.chance(8) {
                    rng.below(3) as i64 - 1
                } else {
                    0
                };
            put_varint(out, len.max(0) as u64);
            out.extend_from_slice(&inner);
        }
        3 => {
            if depth > 0 {
                for _ in 0..rng.below(3) {
                    soup_field(rng, out, depth - 1);
                }
            }
            let end = if rng.chance(8) { tag + 1 } else { tag };
            if !rng.chance(10) {
                put_key(out, end, 4);
            }
        }
        _ => {}
    }
}

#[test]
fn field_soups_decode_as_prost_does() {
    for round in 0..rounds() {
        let mut rng = seeded(0xf1e1_d500_0000_0003, round);
        for i in 0..150_000 {
            let mut body = Vec::new();
            for _ in 0..rng.below(6) {
                soup_field(&mut rng, &mut body, 3);
            }
            check_body(&body);
            // And inside each payload member (the nested decoders).
            if i % 4 == 0 {
                let mut framed = Vec::new();
                put_key(&mut framed, 10 + rng.below(4), 2);
                put_varint(&mut framed, body.len() as u64);
                framed.extend_from_slice(&body);
                check_body(&framed);
            }
        }
    }
}

#[test]
fn random_bytes_decode_as_prost_does() {
    for round in 0..rounds() {
        let mut rng = seeded(0x1234_5678_9abc_def1, round);
        for _ in 0..200_000 {
            let len = rng.below(24) as usize;
            let b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
            check_body(&b);
        }
    }
}

/// `depth` nested unknown groups (field 20) holding `inner`.
fn groups(depth: usize, inner: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    for _ in 0..depth {
        put_key(&mut b, 20, 3);
    }
    b.extend_from_slice(inner);
    for _ in 0..depth {
        put_key(&mut b, 20, 4);
    }
    b
}

/// Wraps `body` as the given fields, outermost first (each a message).
fn nest(path: &[u64], body: Vec<u8>) -> Vec<u8> {
    path.iter().rev().fold(body, |inner, &tag| {
        let mut b = Vec::new();
        put_key(&mut b, tag, 2);
        put_varint(&mut b, inner.len() as u64);
        b.extend_from_slice(&inner);
        b
    })
}

/// The recursion limit, counted as prost counts it, at every level of the
/// schema: groups nested 90..=105 deep, empty or holding a varint field,
/// at the top level, in each payload, in MountAttr, IdMapping, IdMap and
/// FdAttached.
#[test]
fn deep_nesting_is_limited_as_prost_limits_it() {
    let paths: [&[u64]; 9] = [
        &[],
        &[10],
        &[11],
        &[12],
        &[13],
        &[11, 8],
        &[11, 9],
        &[11, 9, 3],
        &[13, 1],
    ];
    let mut accepted = 0;
    for path in paths {
        for depth in 90..=105 {
            for inner in [&[][..], &[0x08, 0x01][..], &[0xa8, 0x01, 0x05][..]] {
                let body = nest(path, groups(depth, inner));
                check_body(&body);
                accepted += usize::from(native::decode_body(&body).is_ok());
            }
        }
    }
    assert!(accepted > 0 && accepted < 9 * 16 * 3);
}

#[test]
fn edge_keys_and_varints_decode_as_prost_does() {
    let mut cases: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],                               // field 0
        vec![0x06],                               // wire type 6
        vec![0x07],                               // wire type 7
        vec![0x0c],                               // end-group at the top
        vec![0xf8, 0xff, 0xff, 0xff, 0x0f, 0x00], // field 2^29-1
        vec![0x80, 0x80, 0x80, 0x80, 0x10, 0x00], // key 2^32
        vec![0xff, 0xff, 0xff, 0xff, 0x0f],       // key u32::MAX: wt 7
        vec![
            0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01,
        ],
        vec![
            0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x02,
        ],
        vec![
            0x08, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00,
        ],
        vec![0x08, 0xff, 0xff, 0xff, 0xff, 0x0f], // type u32::MAX → -1
        vec![0x08, 0x86, 0x80, 0x80, 0x80, 0x10], // type 2^32 + 6 → 6
        vec![0x08, 0x80],                         // truncated varint
        vec![0x08, 0x02, 0x08, 0x06],             // last value wins
        vec![0x10, 0x81, 0x80, 0x80, 0x80, 0x10], // flags truncated to u32
    ];
    // A MountPlease whose fields arrive twice, packed and unpacked, merged.
    let m1 = [0x0a, 0x02, b'/', b'a', 0x30, 0x05, 0x32, 0x02, 0x06, 0x07];
    let m2 = [0x0a, 0x02, b'/', b'b', 0x30, 0x09, 0x42, 0x02, 0x08, 0x01];
    let m3 = [0x42, 0x02, 0x10, 0x02, 0x4a, 0x02, 0x08, 0x01];
    let mut b = vec![0x08, 0x06];
    for m in [&m1[..], &m2[..], &m3[..]] {
        b.push(0x5a);
        b.push(m.len() as u8);
        b.extend_from_slice(m);
    }
    cases.push(b.clone());
    // Another oneof member replaces, the same one merges.
    let mut c = b.clone();
    c.extend_from_slice(&[0x52, 0x02, 0x0a, 0x00]);
    cases.push(c);
    cases.push(
        [
            &[0x6a, 0x02, 0x10, 0x05, 0x6a, 0x02, 0x0a, 0x00][..],
            &[0x6a, 0x00],
        ]
        .concat(),
    );
    cases.push(vec![0x6a, 0x02, 0x0a, 0x00, 0x6a, 0x02, 0x10, 0x7f]);
    // Wrong wire types for known fields, each message.
    for (path, tag) in [
        (&[][..], 1u64),
        (&[][..], 10),
        (&[11][..], 1),
        (&[11][..], 6),
        (&[11, 9][..], 3),
        (&[13][..], 2),
    ] {
        for wt in 0..6 {
            let mut f = Vec::new();
            put_key(&mut f, tag, wt);
            f.extend_from_slice(&[0x00; 8]);
            cases.push(nest(path, f));
        }
    }
    // A nested message that overruns, or stops short of, its length.
    cases.push(vec![0x5a, 0x02, 0x0a, 0x05, b'/', b'a', b'b', b'c', b'd']);
    cases.push(vec![0x5a, 0x04, 0x0a, 0x01, b'/', 0x08, 0x08, 0x06]);
    cases.push(vec![0x5a, 0x03, 0x32, 0x02, 0x80, 0x80, 0x01]);
    for c in &cases {
        check_body(c);
        let mut framed = Vec::new();
        put_varint(&mut framed, c.len() as u64);
        framed.extend_from_slice(c);
        check_record(&framed);
    }
}

/// Every field of the schema with its number, type and cardinality, as the
/// hand-written codec (`src/wire/pb.rs`) implements them. A change to
/// `proto/` fails here until pb.rs (decoder, sizes, encoder), this list and
/// `gen_message` above follow: an unknown field would otherwise be skipped
/// by the hand decoder and kept by prost's.
#[test]
fn the_hand_codec_covers_the_whole_schema() {
    use prost_reflect::{DescriptorPool, Kind};
    const SCHEMA: &[&str] = &[
        "procsync.v1.ErrorInfo.message = 1: string",
        "procsync.v1.IdMap.container_id = 1: uint32",
        "procsync.v1.IdMap.host_id = 2: uint32",
        "procsync.v1.IdMap.size = 3: uint32",
        "procsync.v1.IdMapping.gid_mappings = 4: repeated procsync.v1.IdMap",
        "procsync.v1.IdMapping.recursive = 1: bool",
        "procsync.v1.IdMapping.uid_mappings = 3: repeated procsync.v1.IdMap",
        "procsync.v1.IdMapping.userns_path = 2: string",
        "procsync.v1.Mount.cleared_flags = 5: uint64",
        "procsync.v1.Mount.data = 7: string",
        "procsync.v1.Mount.destination = 2: string",
        "procsync.v1.Mount.device = 3: string",
        "procsync.v1.Mount.extensions = 10: uint32",
        "procsync.v1.Mount.flags = 4: uint64",
        "procsync.v1.Mount.id_mapping = 9: procsync.v1.IdMapping",
        "procsync.v1.Mount.propagation_flags = 6: repeated packed uint64",
        "procsync.v1.Mount.rec_attr = 8: procsync.v1.MountAttr",
        "procsync.v1.Mount.relabel = 11: string",
        "procsync.v1.Mount.source = 1: string",
        "procsync.v1.MountAttr.attr_clr = 2: uint64",
        "procsync.v1.MountAttr.attr_set = 1: uint64",
        "procsync.v1.MountAttr.propagation = 3: uint64",
        "procsync.v1.MountAttr.userns_fd = 4: uint64",
        "procsync.v1.MountFdInfo.kind = 1: enum procsync.v1.MountSourceKind",
        "procsync.v1.MountFdInfo.source = 2: string",
        "procsync.v1.SeccompInfo.attached = 1: oneof transfer procsync.v1.FdAttached",
        "procsync.v1.SeccompInfo.child_fd = 2: oneof transfer int32",
        "procsync.v1.SyncMessage.error = 10: oneof payload procsync.v1.ErrorInfo",
        "procsync.v1.SyncMessage.flags = 2: uint32",
        "procsync.v1.SyncMessage.mount_fd = 12: oneof payload procsync.v1.MountFdInfo",
        "procsync.v1.SyncMessage.mount_please = 11: oneof payload procsync.v1.Mount",
        "procsync.v1.SyncMessage.seccomp = 13: oneof payload procsync.v1.SeccompInfo",
        "procsync.v1.SyncMessage.type = 1: enum procsync.v1.MessageType",
    ];
    let pool = DescriptorPool::decode(FILE_DESCRIPTOR_SET).unwrap();
    let mut found = Vec::new();
    let mut messages = 0;
    for m in pool.all_messages() {
        messages += 1;
        for f in m.fields() {
            let ty = match f.kind() {
                Kind::Message(d) => d.full_name().to_string(),
                Kind::Enum(d) => format!("enum {}", d.full_name()),
                k => format!("{k:?}").to_lowercase(),
            };
            let card = match (f.is_list(), f.is_packed(), f.containing_oneof()) {
                (true, true, _) => "repeated packed ".to_string(),
                (true, false, _) => "repeated ".to_string(),
                (false, _, Some(o)) => format!("oneof {} ", o.name()),
                _ => String::new(),
            };
            found.push(format!("{} = {}: {card}{ty}", f.full_name(), f.number()));
        }
    }
    found.sort();
    assert_eq!(
        found, SCHEMA,
        "the schema changed: update src/wire/pb.rs, this list and gen_message"
    );
    // SyncMessage, ErrorInfo, Mount, MountAttr, IdMapping, IdMap,
    // MountFdInfo, SeccompInfo and the field-less FdAttached.
    assert_eq!(messages, 9, "a message was added or removed");
}
