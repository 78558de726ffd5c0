//! Peer processes: the test (or bench) binary re-executed with
//! [`ROLE_VAR`] naming the role it plays. A test binary's peer runs one
//! ignored test (its *entry*) which calls [`run`]; a bench (no test
//! harness) checks [`role`] first thing in `main`.

use std::process::{Command, Stdio};

use procsync::transport::ENV_SYNC_FD;

/// The one env var that turns a re-executed test or bench binary into a
/// peer, and names the role it plays.
pub const ROLE_VAR: &str = "PROCSYNC_TEST_ROLE";

/// The role this process plays, if it is a re-executed peer.
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// This binary re-executed as the peer `role`: stdin from /dev/null, stdout
/// piped (for its `RESULT` lines), and no sync-socket variable inherited
/// from this process (`SyncSocket::pass_to_child` sets one).
pub fn command(role: &str) -> Command {
    let mut cmd = Command::new(std::env::current_exe().expect("current_exe"));
    cmd.env(ROLE_VAR, role)
        .env_remove(ENV_SYNC_FD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    cmd
}

/// [`command`] for a test binary: the peer runs only the ignored test
/// `entry`, on one thread, printing nothing of the harness's own.
pub fn entry_command(entry: &str, role: &str) -> Command {
    let mut cmd = command(role);
    cmd.args([
        entry,
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
        "-q",
    ]);
    cmd
}

/// The body of a peer entry: in a re-executed peer, plays its role with
/// `play` and exits with the code `play` returns; in the test runner (the
/// entry run by hand), returns at once.
pub fn run(play: impl FnOnce(&str) -> i32) {
    if let Some(role) = role() {
        let code = play(&role);
        std::process::exit(code);
    }
}
