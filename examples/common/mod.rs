//! Transcript printing shared by the examples: one aligned line per message
//! (who, direction, type, payload summary, and where an attached fd points).
#![allow(dead_code)]

use std::os::fd::{AsRawFd, BorrowedFd};

use procsync::schema::SyncMessage;
use procsync::session::Traffic;
use procsync::state::Direction;

/// `println!` that ignores a closed stdout (`| head`) instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Prints one observed message (a session observer callback); `width` is
/// the column width of the payload summary.
pub fn print_traffic(who: &str, t: &Traffic<'_>, width: usize) {
    let arrow = match t.direction {
        Direction::Send => "→ send",
        Direction::Recv => "← recv",
    };
    out!("{}", line(who, arrow, t.msg, t.fd, width));
}

/// The transcript line for `msg` (with its fd, if any).
pub fn line(
    who: &str,
    arrow: &str,
    msg: &SyncMessage,
    fd: Option<BorrowedFd<'_>>,
    width: usize,
) -> String {
    let mut name = msg.kind().map(|k| k.name()).unwrap_or("?").to_string();
    if fd.is_some() {
        name.push_str(" +fd");
    }
    let fd_note = match fd {
        Some(fd) => format!("fd {} -> {}", fd.as_raw_fd(), fd_target(fd)),
        None => String::new(),
    };
    format!(
        "{who:<7} {arrow}  {name:<16} {:<width$} {fd_note}",
        msg.summary()
    )
    .trim_end()
    .to_string()
}

/// Where `fd` points, as `/proc/self/fd/N` says.
pub fn fd_target(fd: BorrowedFd<'_>) -> String {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| format!("?({e})"))
}
