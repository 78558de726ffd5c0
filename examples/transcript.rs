//! Encodes a whole init-flow transcript with the native codec, decodes every
//! record back, and prints each message with its record bytes — a look at the
//! wire without any sockets.

use procsync::bytes::BytesMut;
use procsync::schema::*;
use procsync::wire::{native, Limits};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let limits = Limits::default();
    let mount = Mount::bind("/srv/shared", "/shared").with_id_mapping(IdMapping::ranges(
        vec![IdMap::new(0, 100000, 65536)],
        vec![IdMap::new(0, 100000, 65536)],
    ));
    let flow: Vec<(&str, SyncMessage, bool)> = vec![
        (
            "child → parent",
            SyncMessage::mount_please(Mount::bind("/srv/a", "/a")),
            false,
        ),
        (
            "parent → child",
            SyncMessage::mount_fd(MountSourceKind::PlainOpen, "/srv/a"),
            true,
        ),
        ("child → parent", SyncMessage::mount_please(mount), false),
        (
            "parent → child",
            SyncMessage::mount_fd(MountSourceKind::OpenTree, "/srv/shared"),
            true,
        ),
        ("child → parent", SyncMessage::hooks(), false),
        ("parent → child", SyncMessage::hooks_done(), false),
        ("child → parent", SyncMessage::ready(), false),
        ("parent → child", SyncMessage::run(), false),
        ("child → parent", SyncMessage::seccomp_child_fd(5), false),
        ("parent → child", SyncMessage::seccomp_done(), false),
    ];
    let mut buf = BytesMut::with_capacity(256);
    for (dir, msg, fd) in flow {
        buf.clear();
        native::encode(&msg, fd, &mut buf, &limits)?;
        let back = native::decode(&buf, usize::from(fd), &limits)?;
        assert_eq!(back.payload, msg.payload);
        let kind = back.kind().map(MessageType::name).unwrap_or("?");
        let fd_note = if back.has_fd() { " +fd" } else { "" };
        println!(
            "{dir}  {kind:<12}{fd_note:<4} {:<44} {:>3} B  {}",
            back.summary(),
            buf.len(),
            hex(&buf)
        );
    }
    Ok(())
}

fn hex(b: &[u8]) -> String {
    let s: String = b.iter().take(24).map(|x| format!("{x:02x}")).collect();
    if b.len() > 24 {
        s + "…"
    } else {
        s
    }
}
