//! Decoding: runc's JSON record into a [`RuncHeader`], and the fd record's
//! checks (PROTOCOL.md §15, *Decoding rules*).
//!
//! Two passes over the record, no parse tree: [`json::check`] validates the
//! whole record (syntax, UTF-8, nesting) without allocating, then the
//! mapping below reads only the keys the message has. Values it does not
//! use are never built, so what decoding allocates is the message itself:
//! its strings (at most one byte per record byte, duplicate keys being
//! rejected) and its arrays, each allocated once at its exact length (a
//! `propagation_flags` item takes 8 bytes for at least 2 record bytes, an
//! id-map line 12 bytes for at least 3), plus one transient copy of an
//! escaped key. That is at most 6 bytes per record byte plus a constant,
//! under the 32 documented (`tests/runc_alloc.rs` measures it on the
//! densest shapes).

use std::borrow::Cow;

use crate::schema::{
    ErrorInfo, IdMap, IdMapping, MessageType, Mount, MountAttr, MountFdInfo, MountSourceKind,
    Payload, PayloadKind, SeccompInfo, SeccompTransfer, SyncMessage, FLAG_HAS_FD,
};
use crate::wire::validate::validate_with;
use crate::wire::{Limits, ValidationError};

use super::error::truncate;
use super::json::{self, Kind, ParseError, Raw};
use super::{
    type_from_name, MountShape, RuncDecodeError, RuncHeader, TypeContext, MAX_FD_NAME_LEN,
    MAX_JSON_DEPTH, RUNC_RULES,
};

/// Decodes runc's JSON record into a [`RuncHeader`], reading a
/// `procMountPlease` argument in the `shape` layout.
///
/// The record's size is checked against `limits` before anything is parsed;
/// decoding then allocates at most 32 bytes per record byte (in fact at most
/// about 6, see the module notes). Every rejection is a typed
/// [`RuncDecodeError`]; nothing panics. A key inside the mount argument that
/// `shape` does not have is `unknown-field`; unknown keys elsewhere are
/// ignored, as Go does. The JSON record itself carries no fd: a transport
/// that receives fds with it must close them and reject the record
/// (`unexpected-fd`).
pub fn decode(
    record: &[u8],
    shape: MountShape,
    limits: &Limits,
) -> Result<RuncHeader, RuncDecodeError> {
    if record.is_empty() {
        return Err(RuncDecodeError::Empty);
    }
    if record.len() > limits.max_record() {
        return Err(RuncDecodeError::TooLarge {
            size: record.len(),
            max: limits.max_record(),
        });
    }
    let root = json::check(record, MAX_JSON_DEPTH).map_err(|e| match e {
        ParseError::Syntax { offset, reason } => RuncDecodeError::Malformed { offset, reason },
        ParseError::TooDeep { max } => RuncDecodeError::TooDeep { max },
    })?;
    let mut cx = Cx { ty: None, shape };
    cx.object(root, "record")?;
    let [ty_v, flags_v, arg_v] = cx.fields(
        root,
        ["type", "flags", "arg"],
        ["type", "flags", "arg"],
        None,
    )?;

    let ty = match ty_v {
        None => return Err(cx.missing("type")),
        Some(v) if v.kind() == Kind::String => {
            let s = v.as_string().unwrap_or_default();
            if s.is_empty() {
                return Err(ValidationError::UnspecifiedType.into());
            }
            type_from_name(&s).ok_or_else(|| RuncDecodeError::UnknownType(truncate(&s)))?
        }
        Some(v) => return Err(cx.wrong("type", "string", v)),
    };
    cx.ty = Some(ty);
    let flags = match flags_v {
        None => return Err(cx.missing("flags")),
        Some(v) => cx.int(v, "flags", i128::from(i64::MIN), i128::from(i64::MAX))? as i64,
    };
    if flags & !i64::from(FLAG_HAS_FD) != 0 {
        return Err(RuncDecodeError::ReservedFlags {
            ty: TypeContext(Some(ty)),
            flags,
        });
    }
    let flags = flags as u32;

    let payload = match (arg_v, ty.payload()) {
        (None, None) => None,
        (None, Some(expected)) => {
            return Err(ValidationError::MissingPayload {
                ty,
                expected: expected.name(),
            }
            .into())
        }
        (Some(_), None) => return Err(ValidationError::UnexpectedPayload { ty, got: "arg" }.into()),
        (Some(v), Some(kind)) => Some(match kind {
            PayloadKind::Error => Payload::Error(cx.error_arg(v)?),
            PayloadKind::MountPlease => Payload::MountPlease(cx.mount(v)?),
            PayloadKind::MountFd => Payload::MountFd(cx.mount_fd_arg(v)?),
            PayloadKind::Seccomp => {
                let n = cx.int(v, "arg", i128::from(i32::MIN), i128::from(i32::MAX))?;
                Payload::Seccomp(SeccompInfo {
                    transfer: Some(SeccompTransfer::ChildFd(n as i32)),
                })
            }
        }),
    };
    let msg = SyncMessage {
        r#type: ty as i32,
        flags,
        payload,
    };
    // The fd (if announced) comes in the next record; check as if it will,
    // with the source of a procMountFd still to come.
    let rules = super::validate::Rules {
        mount_fd_source_pending: true,
        ..RUNC_RULES
    };
    validate_with(&msg, flags, usize::from(msg.has_fd()), rules)?;
    Ok(RuncHeader { msg })
}

/// Checks the record that follows a HasFd JSON record: `nfds` fds arrived
/// with it and its payload `name` is the file's name. Returns the name.
///
/// Exactly one fd (`missing-fd`, `too-many-fds`; the caller closes every fd
/// it received either way); a non-empty UTF-8 name under 4096 bytes without
/// NUL; equal to `expected_name` when given (for `procMountFd`, the source
/// of the mount that was requested: runc's child checks the same).
pub fn decode_fd_record<'a>(
    name: &'a [u8],
    nfds: usize,
    expected_name: Option<&str>,
) -> Result<&'a str, RuncDecodeError> {
    if nfds == 0 {
        return Err(RuncDecodeError::FdRecordMissingFd);
    }
    if nfds > 1 {
        return Err(RuncDecodeError::FdRecordTooManyFds { count: nfds });
    }
    if name.is_empty() {
        return Err(RuncDecodeError::FdNameInvalid { reason: "empty" });
    }
    if name.len() > MAX_FD_NAME_LEN {
        return Err(RuncDecodeError::FdNameTooLong { len: name.len() });
    }
    if name.contains(&0) {
        return Err(RuncDecodeError::FdNameInvalid {
            reason: "contains NUL",
        });
    }
    let name = std::str::from_utf8(name).map_err(|_| RuncDecodeError::FdNameInvalid {
        reason: "not UTF-8",
    })?;
    if let Some(expected) = expected_name {
        if name != expected {
            return Err(RuncDecodeError::FdNameMismatch {
                expected: truncate(expected),
                got: truncate(name),
            });
        }
    }
    Ok(name)
}

/// Decoding context: the message type, once known, for error messages, and
/// the layout the mount argument must have.
struct Cx {
    ty: Option<MessageType>,
    shape: MountShape,
}

/// Case folding as Go's `encoding/json` applies it to keys (ASCII plus the
/// two non-ASCII characters that fold onto ASCII letters: KELVIN SIGN and
/// LATIN SMALL LETTER LONG S).
pub(super) fn fold_eq(known: &str, key: &str) -> bool {
    let mut k = key.chars().map(|c| match c {
        '\u{212A}' => 'k',
        '\u{017F}' => 's',
        c => c.to_ascii_lowercase(),
    });
    let mut n = known.chars().map(|c| c.to_ascii_lowercase());
    loop {
        match (k.next(), n.next()) {
            (None, None) => return true,
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

impl Cx {
    fn tyc(&self) -> TypeContext {
        TypeContext(self.ty)
    }

    fn missing(&self, field: &'static str) -> RuncDecodeError {
        RuncDecodeError::MissingField {
            ty: self.tyc(),
            field,
        }
    }

    fn wrong(&self, field: &'static str, expected: &'static str, v: Raw) -> RuncDecodeError {
        RuncDecodeError::WrongType {
            ty: self.tyc(),
            field,
            expected,
            got: v.type_name(),
        }
    }

    fn object(&self, v: Raw, field: &'static str) -> Result<(), RuncDecodeError> {
        match v.kind() {
            Kind::Object => Ok(()),
            _ => Err(self.wrong(field, "object", v)),
        }
    }

    /// Picks the known keys `names` out of the object `v`; `paths` are their
    /// dotted names for errors. `null` counts as absent (Go leaves the zero
    /// value); a known key twice, or a key equal to a known one only
    /// case-insensitively, is rejected. Other keys are ignored, unless
    /// `strict` names the object (then they are `unknown-field`).
    fn fields<'a, const N: usize>(
        &self,
        v: Raw<'a>,
        names: [&'static str; N],
        paths: [&'static str; N],
        strict: Option<&'static str>,
    ) -> Result<[Option<Raw<'a>>; N], RuncDecodeError> {
        let mut out = [None; N];
        let mut seen = [false; N];
        for (k, v) in v.members() {
            if let Some(i) = names.iter().position(|n| *n == k) {
                if seen[i] {
                    return Err(RuncDecodeError::DuplicateField {
                        ty: self.tyc(),
                        field: paths[i],
                    });
                }
                seen[i] = true;
                if v.kind() != Kind::Null {
                    out[i] = Some(v);
                }
            } else if let Some(i) = names.iter().position(|n| fold_eq(n, &k)) {
                return Err(RuncDecodeError::NoncanonicalKey {
                    ty: self.tyc(),
                    field: paths[i],
                    got: truncate(&k),
                });
            } else if let Some(object) = strict {
                return Err(RuncDecodeError::UnknownField {
                    ty: self.tyc(),
                    object,
                    got: truncate(&k),
                    shape: self.shape.name(),
                });
            }
        }
        Ok(out)
    }

    /// An integer literal within `min..=max` (Go's `encoding/json` refuses
    /// fractions and exponents for integer fields too).
    fn int(
        &self,
        v: Raw,
        field: &'static str,
        min: i128,
        max: i128,
    ) -> Result<i128, RuncDecodeError> {
        let Some(text) = v.as_number() else {
            return Err(self.wrong(field, "integer", v));
        };
        if text.contains(['.', 'e', 'E']) {
            return Err(RuncDecodeError::WrongType {
                ty: self.tyc(),
                field,
                expected: "integer",
                got: "non-integer number",
            });
        }
        let out_of_range = || RuncDecodeError::NumberOutOfRange {
            ty: self.tyc(),
            field,
            value: truncate(text),
            min,
            max,
        };
        // Go refuses "-0" for unsigned fields as well.
        if min >= 0 && text.starts_with('-') {
            return Err(out_of_range());
        }
        match text.parse::<i128>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(out_of_range()),
        }
    }

    fn u64_go_int(&self, v: Option<Raw>, field: &'static str) -> Result<u64, RuncDecodeError> {
        match v {
            None => Ok(0),
            Some(v) => Ok(self.int(v, field, 0, i128::from(i64::MAX))? as u64),
        }
    }

    fn u64_full(&self, v: Option<Raw>, field: &'static str) -> Result<u64, RuncDecodeError> {
        match v {
            None => Ok(0),
            Some(v) => Ok(self.int(v, field, 0, i128::from(u64::MAX))? as u64),
        }
    }

    fn u32(&self, v: Option<Raw>, field: &'static str) -> Result<u32, RuncDecodeError> {
        match v {
            None => Ok(0),
            Some(v) => Ok(self.int(v, field, 0, i128::from(u32::MAX))? as u32),
        }
    }

    fn string(&self, v: Option<Raw>, field: &'static str) -> Result<String, RuncDecodeError> {
        match v {
            None => Ok(String::new()),
            Some(v) => match v.as_string() {
                Some(s) => Ok(Cow::into_owned(s)),
                None => Err(self.wrong(field, "string", v)),
            },
        }
    }

    fn error_arg(&self, v: Raw) -> Result<ErrorInfo, RuncDecodeError> {
        self.object(v, "arg")?;
        let [msg] = self.fields(v, ["message"], ["arg.message"], None)?;
        Ok(ErrorInfo {
            message: self.string(msg, "arg.message")?,
        })
    }

    fn mount_fd_arg(&self, v: Raw) -> Result<MountFdInfo, RuncDecodeError> {
        self.object(v, "arg")?;
        let [kind] = self.fields(v, ["type"], ["arg.type"], None)?;
        let kind = match self.string(kind, "arg.type")?.as_str() {
            "open_tree" => MountSourceKind::OpenTree as i32,
            "plain-open" => MountSourceKind::PlainOpen as i32,
            "" => MountSourceKind::Unspecified as i32,
            _ => {
                return Err(ValidationError::InvalidValue {
                    ty: MessageType::MountFd,
                    field: "mount_fd.kind",
                    reason: "unknown kind",
                }
                .into())
            }
        };
        Ok(MountFdInfo {
            kind,
            source: String::new(),
        })
    }

    fn mount(&self, v: Raw) -> Result<Mount, RuncDecodeError> {
        self.object(v, "arg")?;
        let (
            [source, destination, device, flags, cleared, prop, data, rec_attr, ext],
            relabel,
            a,
            b,
        ) = self.mount_keys(v)?;
        let propagation_flags = match prop {
            None => Vec::new(),
            Some(v) if v.kind() == Kind::Array => {
                let mut out = Vec::with_capacity(v.items().count());
                for x in v.items() {
                    out.push(
                        self.int(x, "arg.propagation_flags[]", 0, i128::from(i64::MAX))? as u64,
                    );
                }
                out
            }
            Some(v) => return Err(self.wrong("arg.propagation_flags", "array", v)),
        };
        let rec_attr = match rec_attr {
            None => None,
            Some(v) => {
                self.object(v, "arg.rec_attr")?;
                let [set, clr, prop, userns] = self.fields(
                    v,
                    ["Attr_set", "Attr_clr", "Propagation", "Userns_fd"],
                    [
                        "arg.rec_attr.Attr_set",
                        "arg.rec_attr.Attr_clr",
                        "arg.rec_attr.Propagation",
                        "arg.rec_attr.Userns_fd",
                    ],
                    Some("arg.rec_attr"),
                )?;
                Some(MountAttr {
                    attr_set: self.u64_full(set, "arg.rec_attr.Attr_set")?,
                    attr_clr: self.u64_full(clr, "arg.rec_attr.Attr_clr")?,
                    propagation: self.u64_full(prop, "arg.rec_attr.Propagation")?,
                    userns_fd: self.u64_full(userns, "arg.rec_attr.Userns_fd")?,
                })
            }
        };
        let id_mapping = match self.shape {
            MountShape::Seed => {
                // runc ba0b5e269: top-level maps, applied non-recursively.
                let uids = self.id_maps(a, "arg.uid_mappings", SEED_UID_PATHS)?;
                let gids = self.id_maps(b, "arg.gid_mappings", SEED_GID_PATHS)?;
                (!uids.is_empty() || !gids.is_empty()).then(|| IdMapping::ranges(uids, gids))
            }
            _ => match a {
                None => None,
                Some(v) => Some(self.id_mapping(v)?),
            },
        };
        Ok(Mount {
            source: self.string(source, "arg.source")?,
            destination: self.string(destination, "arg.destination")?,
            device: self.string(device, "arg.device")?,
            flags: self.u64_go_int(flags, "arg.flags")?,
            cleared_flags: self.u64_go_int(cleared, "arg.cleared_flags")?,
            propagation_flags,
            data: self.string(data, "arg.data")?,
            rec_attr,
            id_mapping,
            extensions: self.u32(ext, "arg.extensions")?,
            relabel: self.string(relabel, "arg.relabel")?,
        })
    }

    /// The mount argument's keys in the selected layout: the nine every
    /// layout has, then `relabel` (none in v1.5) and either `id_mapping`
    /// (`a`) or the seed's top-level `uid_mappings` (`a`) and
    /// `gid_mappings` (`b`). Any other key is `unknown-field`.
    #[allow(clippy::type_complexity)]
    fn mount_keys<'a>(
        &self,
        v: Raw<'a>,
    ) -> Result<
        (
            [Option<Raw<'a>>; 9],
            Option<Raw<'a>>,
            Option<Raw<'a>>,
            Option<Raw<'a>>,
        ),
        RuncDecodeError,
    > {
        const N: [&str; 9] = [
            "source",
            "destination",
            "device",
            "flags",
            "cleared_flags",
            "propagation_flags",
            "data",
            "rec_attr",
            "extensions",
        ];
        const P: [&str; 9] = [
            "arg.source",
            "arg.destination",
            "arg.device",
            "arg.flags",
            "arg.cleared_flags",
            "arg.propagation_flags",
            "arg.data",
            "arg.rec_attr",
            "arg.extensions",
        ];
        let split = |all: &[Option<Raw<'a>>]| {
            let mut common = [None; 9];
            common.copy_from_slice(&all[..9]);
            common
        };
        let strict = Some("arg");
        Ok(match self.shape {
            MountShape::Seed => {
                let names = [
                    N[0],
                    N[1],
                    N[2],
                    N[3],
                    N[4],
                    N[5],
                    N[6],
                    N[7],
                    N[8],
                    "relabel",
                    "uid_mappings",
                    "gid_mappings",
                ];
                let paths = [
                    P[0],
                    P[1],
                    P[2],
                    P[3],
                    P[4],
                    P[5],
                    P[6],
                    P[7],
                    P[8],
                    "arg.relabel",
                    "arg.uid_mappings",
                    "arg.gid_mappings",
                ];
                let f = self.fields(v, names, paths, strict)?;
                (split(&f), f[9], f[10], f[11])
            }
            MountShape::V1_2 | MountShape::V1_4 => {
                let names = [
                    N[0],
                    N[1],
                    N[2],
                    N[3],
                    N[4],
                    N[5],
                    N[6],
                    N[7],
                    N[8],
                    "relabel",
                    "id_mapping",
                ];
                let paths = [
                    P[0],
                    P[1],
                    P[2],
                    P[3],
                    P[4],
                    P[5],
                    P[6],
                    P[7],
                    P[8],
                    "arg.relabel",
                    "arg.id_mapping",
                ];
                let f = self.fields(v, names, paths, strict)?;
                (split(&f), f[9], f[10], None)
            }
            MountShape::V1_5 => {
                let names = [
                    N[0],
                    N[1],
                    N[2],
                    N[3],
                    N[4],
                    N[5],
                    N[6],
                    N[7],
                    N[8],
                    "id_mapping",
                ];
                let paths = [
                    P[0],
                    P[1],
                    P[2],
                    P[3],
                    P[4],
                    P[5],
                    P[6],
                    P[7],
                    P[8],
                    "arg.id_mapping",
                ];
                let f = self.fields(v, names, paths, strict)?;
                (split(&f), None, f[9], None)
            }
        })
    }

    fn id_mapping(&self, v: Raw) -> Result<IdMapping, RuncDecodeError> {
        self.object(v, "arg.id_mapping")?;
        let [recursive, userns, uids, gids] = self.fields(
            v,
            ["recursive", "userns_path", "uid_mappings", "gid_mappings"],
            [
                "arg.id_mapping.recursive",
                "arg.id_mapping.userns_path",
                "arg.id_mapping.uid_mappings",
                "arg.id_mapping.gid_mappings",
            ],
            Some("arg.id_mapping"),
        )?;
        let recursive = match recursive {
            None => false,
            Some(v) => match v.as_bool() {
                Some(b) => b,
                None => return Err(self.wrong("arg.id_mapping.recursive", "bool", v)),
            },
        };
        Ok(IdMapping {
            recursive,
            userns_path: self.string(userns, "arg.id_mapping.userns_path")?,
            uid_mappings: self.id_maps(uids, "arg.id_mapping.uid_mappings", UID_PATHS)?,
            gid_mappings: self.id_maps(gids, "arg.id_mapping.gid_mappings", GID_PATHS)?,
        })
    }

    fn id_maps(
        &self,
        v: Option<Raw>,
        field: &'static str,
        paths: [&'static str; 3],
    ) -> Result<Vec<IdMap>, RuncDecodeError> {
        let v = match v {
            None => return Ok(Vec::new()),
            Some(v) if v.kind() == Kind::Array => v,
            Some(v) => return Err(self.wrong(field, "array", v)),
        };
        let mut out = Vec::with_capacity(v.items().count());
        for item in v.items() {
            self.object(item, field)?;
            let [c, h, s] = self.fields(
                item,
                ["container_id", "host_id", "size"],
                paths,
                Some(field),
            )?;
            out.push(IdMap {
                container_id: self.u32(c, paths[0])?,
                host_id: self.u32(h, paths[1])?,
                size: self.u32(s, paths[2])?,
            });
        }
        Ok(out)
    }
}

const UID_PATHS: [&str; 3] = [
    "arg.id_mapping.uid_mappings[].container_id",
    "arg.id_mapping.uid_mappings[].host_id",
    "arg.id_mapping.uid_mappings[].size",
];
const GID_PATHS: [&str; 3] = [
    "arg.id_mapping.gid_mappings[].container_id",
    "arg.id_mapping.gid_mappings[].host_id",
    "arg.id_mapping.gid_mappings[].size",
];
const SEED_UID_PATHS: [&str; 3] = [
    "arg.uid_mappings[].container_id",
    "arg.uid_mappings[].host_id",
    "arg.uid_mappings[].size",
];
const SEED_GID_PATHS: [&str; 3] = [
    "arg.gid_mappings[].container_id",
    "arg.gid_mappings[].host_id",
    "arg.gid_mappings[].size",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fold_matches_go_rules() {
        assert!(fold_eq("type", "TYPE"));
        assert!(fold_eq("Attr_set", "attr_SET"));
        assert!(fold_eq("userns_path", "u\u{017F}erns_path"));
        assert!(fold_eq("Userns_fd", "u\u{017F}erns_fd"));
        assert!(fold_eq("kind", "\u{212A}ind"));
        assert!(!fold_eq("type", "typ"));
        assert!(!fold_eq("type", "types"));
    }

    #[test]
    fn truncate_is_char_safe() {
        let s = "é".repeat(50);
        let t = truncate(&s);
        assert_eq!(t.chars().count(), 41);
    }
}
