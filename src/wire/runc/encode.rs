//! Encoding: a [`SyncMessage`] as runc's JSON record (PROTOCOL.md §15,
//! *Encoding rules*), printed byte for byte as Go's `encoding/json` prints
//! runc's structs in the selected [`MountShape`].

use crate::schema::{
    FdAttached, IdMap, MessageType, Mount, MountSourceKind, Payload, SeccompInfo, SeccompTransfer,
    SyncMessage, FLAG_HAS_FD,
};
use crate::wire::validate::validate_with;
use crate::wire::Limits;

use super::{
    json, type_name, MountShape, RuncEncodeError, RuncRecords, MAX_FD_NAME_LEN, RUNC_RULES,
};

/// Encodes `msg` as runc's JSON record, appended to `out`.
///
/// `fd_name` says an fd travels with the message, in a second record whose
/// payload is that name; HasFd is set from it, whatever `msg.flags` says.
/// For `procMountFd` the name must equal the payload's source. The message
/// is validated first (an empty `procError` message is allowed and prints
/// as `{}`); `shape` picks the `configs.Mount` layout of a `procMountPlease`.
/// A seccomp fd *attached* to the record has no runc form (runc sends the fd
/// number and the parent uses `pidfd_getfd`): `unrepresentable`.
pub fn encode<'a>(
    msg: &SyncMessage,
    fd_name: Option<&'a str>,
    shape: MountShape,
    limits: &Limits,
    out: &'a mut Vec<u8>,
) -> Result<RuncRecords<'a>, RuncEncodeError> {
    let flags = (msg.flags & !FLAG_HAS_FD) | if fd_name.is_some() { FLAG_HAS_FD } else { 0 };
    let ty = validate_with(msg, flags, usize::from(fd_name.is_some()), RUNC_RULES)?;
    if let Some(name) = fd_name {
        check_fd_name_for_send(ty, name)?;
    }
    match &msg.payload {
        Some(Payload::MountFd(info)) if fd_name != Some(info.source.as_str()) => {
            return Err(RuncEncodeError::FdNameMismatch {
                ty,
                mount_source: info.source.clone(),
                fd_name: fd_name.unwrap_or_default().to_owned(),
            });
        }
        Some(Payload::Seccomp(SeccompInfo {
            transfer: Some(SeccompTransfer::Attached(FdAttached {})),
        })) => {
            return Err(RuncEncodeError::Unrepresentable {
                ty,
                field: "seccomp.transfer",
                reason: "runc sends the seccomp fd number for pidfd_getfd, never the fd itself",
            })
        }
        Some(Payload::MountPlease(m)) => {
            check_go_ints(ty, m)?;
            check_shape(ty, m, shape)?;
        }
        _ => {}
    }

    let start = out.len();
    out.extend_from_slice(b"{\"type\":");
    json::write_str(out, type_name(ty));
    out.extend_from_slice(b",\"flags\":");
    json::write_int(out, flags);
    match &msg.payload {
        None => {}
        Some(p) => {
            out.extend_from_slice(b",\"arg\":");
            match p {
                Payload::Error(e) => {
                    if e.message.is_empty() {
                        out.extend_from_slice(b"{}");
                    } else {
                        out.extend_from_slice(b"{\"message\":");
                        json::write_str(out, &e.message);
                        out.push(b'}');
                    }
                }
                Payload::MountPlease(m) => write_mount(out, m, shape),
                Payload::MountFd(info) => {
                    out.extend_from_slice(b"{\"type\":");
                    // validate() accepted only the two known kinds.
                    let kind = MountSourceKind::try_from(info.kind)
                        .unwrap_or(MountSourceKind::Unspecified);
                    json::write_str(out, kind.name());
                    out.push(b'}');
                }
                Payload::Seccomp(s) => {
                    if let Some(SeccompTransfer::ChildFd(n)) = s.transfer {
                        json::write_int(out, n);
                    }
                }
            }
        }
    }
    out.push(b'}');
    let size = out.len() - start;
    if size > limits.max_record() {
        out.truncate(start);
        return Err(RuncEncodeError::TooLarge {
            ty,
            size,
            max: limits.max_record(),
        });
    }
    Ok(RuncRecords {
        json: &out[start..],
        fd_name: fd_name.map(str::as_bytes),
    })
}

fn check_fd_name_for_send(ty: MessageType, name: &str) -> Result<(), RuncEncodeError> {
    let reason = if name.is_empty() {
        "empty (a zero-length record reads as EOF)"
    } else if name.len() > MAX_FD_NAME_LEN {
        return Err(RuncEncodeError::FdNameTooLong {
            ty,
            len: name.len(),
        });
    } else if name.as_bytes().contains(&0) {
        "contains NUL"
    } else {
        return Ok(());
    };
    Err(RuncEncodeError::FdName { ty, reason })
}

/// runc's `flags`, `cleared_flags` and `propagation_flags` are Go `int`s.
fn check_go_ints(ty: MessageType, m: &Mount) -> Result<(), RuncEncodeError> {
    const GO_INT_MAX: u64 = i64::MAX as u64;
    let bad = |field| RuncEncodeError::Unrepresentable {
        ty,
        field,
        reason: "larger than a Go int",
    };
    if m.flags > GO_INT_MAX {
        return Err(bad("mount_please.flags"));
    }
    if m.cleared_flags > GO_INT_MAX {
        return Err(bad("mount_please.cleared_flags"));
    }
    if m.propagation_flags.iter().any(|&f| f > GO_INT_MAX) {
        return Err(bad("mount_please.propagation_flags"));
    }
    Ok(())
}

/// Starts a member: `"key":` preceded by a comma unless it is the first.
fn key(out: &mut Vec<u8>, first: &mut bool, k: &str) {
    if !*first {
        out.push(b',');
    }
    *first = false;
    out.push(b'"');
    out.extend_from_slice(k.as_bytes());
    out.extend_from_slice(b"\":");
}

/// What `shape` cannot print: the seed layout has no `id_mapping` object,
/// so no user namespace path and no recursive switch (its id mapping is
/// never recursive).
fn check_shape(ty: MessageType, m: &Mount, shape: MountShape) -> Result<(), RuncEncodeError> {
    let bad = |field, reason| RuncEncodeError::Unrepresentable { ty, field, reason };
    match (&m.id_mapping, shape) {
        (Some(idm), MountShape::Seed) if !idm.userns_path.is_empty() => Err(bad(
            "mount_please.id_mapping.userns_path",
            "the ba0b5e269 layout has only top-level uid/gid maps",
        )),
        (Some(idm), MountShape::Seed) if idm.recursive => Err(bad(
            "mount_please.id_mapping.recursive",
            "the ba0b5e269 layout applies id maps non-recursively only",
        )),
        _ => Ok(()),
    }
}

fn write_mount(out: &mut Vec<u8>, m: &Mount, shape: MountShape) {
    // Every field printed (Go without omitempty) up to runc 1.3.
    let all = matches!(shape, MountShape::Seed | MountShape::V1_2);
    let mut first = true;
    out.push(b'{');
    key(out, &mut first, "source");
    json::write_str(out, &m.source);
    key(out, &mut first, "destination");
    json::write_str(out, &m.destination);
    key(out, &mut first, "device");
    json::write_str(out, &m.device);
    if all || m.flags != 0 {
        key(out, &mut first, "flags");
        json::write_int(out, m.flags);
    }
    if all || m.cleared_flags != 0 {
        key(out, &mut first, "cleared_flags");
        json::write_int(out, m.cleared_flags);
    }
    if all || !m.propagation_flags.is_empty() {
        key(out, &mut first, "propagation_flags");
        write_int_array(out, &m.propagation_flags);
    }
    if all || !m.data.is_empty() {
        key(out, &mut first, "data");
        json::write_str(out, &m.data);
    }
    // runc ≥ 1.5 tags relabel `json:"-"`: never printed.
    if shape != MountShape::V1_5 && (all || !m.relabel.is_empty()) {
        key(out, &mut first, "relabel");
        json::write_str(out, &m.relabel);
    }
    if all || m.rec_attr.is_some() {
        key(out, &mut first, "rec_attr");
        match &m.rec_attr {
            None => out.extend_from_slice(b"null"),
            Some(a) => {
                let mut f = true;
                out.push(b'{');
                key(out, &mut f, "Attr_set");
                json::write_int(out, a.attr_set);
                key(out, &mut f, "Attr_clr");
                json::write_int(out, a.attr_clr);
                key(out, &mut f, "Propagation");
                json::write_int(out, a.propagation);
                key(out, &mut f, "Userns_fd");
                json::write_int(out, a.userns_fd);
                out.push(b'}');
            }
        }
    }
    if all || m.extensions != 0 {
        key(out, &mut first, "extensions");
        json::write_int(out, m.extensions);
    }
    if shape == MountShape::Seed {
        // Top-level `omitempty` uid/gid maps (check_shape refused the rest).
        if let Some(idm) = &m.id_mapping {
            if !idm.uid_mappings.is_empty() {
                key(out, &mut first, "uid_mappings");
                write_id_maps(out, &idm.uid_mappings);
            }
            if !idm.gid_mappings.is_empty() {
                key(out, &mut first, "gid_mappings");
                write_id_maps(out, &idm.gid_mappings);
            }
        }
    } else if let Some(idm) = &m.id_mapping {
        key(out, &mut first, "id_mapping");
        let mut f = true;
        out.push(b'{');
        if all || idm.recursive {
            key(out, &mut f, "recursive");
            out.extend_from_slice(if idm.recursive { b"true" } else { b"false" });
        }
        if !idm.userns_path.is_empty() {
            key(out, &mut f, "userns_path");
            json::write_str(out, &idm.userns_path);
        }
        if !idm.uid_mappings.is_empty() {
            key(out, &mut f, "uid_mappings");
            write_id_maps(out, &idm.uid_mappings);
        }
        if !idm.gid_mappings.is_empty() {
            key(out, &mut f, "gid_mappings");
            write_id_maps(out, &idm.gid_mappings);
        }
        out.push(b'}');
    }
    out.push(b'}');
}

fn write_int_array(out: &mut Vec<u8>, v: &[u64]) {
    if v.is_empty() {
        // A nil Go slice.
        out.extend_from_slice(b"null");
        return;
    }
    out.push(b'[');
    for (i, x) in v.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        json::write_int(out, x);
    }
    out.push(b']');
}

fn write_id_maps(out: &mut Vec<u8>, maps: &[IdMap]) {
    out.push(b'[');
    for (i, m) in maps.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"container_id\":");
        json::write_int(out, m.container_id);
        out.extend_from_slice(b",\"host_id\":");
        json::write_int(out, m.host_id);
        out.extend_from_slice(b",\"size\":");
        json::write_int(out, m.size);
        out.push(b'}');
    }
    out.push(b']');
}
