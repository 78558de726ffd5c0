//! Times user namespace fd creation step by step (needs root).
//!
//! `cargo run --release --example runtime_userns_timing [N]`
use std::time::Instant;

use procsync::runtime::userns;
use procsync::schema::IdMap;

fn main() {
    if !procsync::rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let uid = [IdMap::new(0, 100_000, 65_536)];
    let gid = [IdMap::new(0, 100_000, 65_536)];
    if std::env::var_os("NOPOOL").is_some() {
        userns::set_prespawn(0);
    }
    let mut to_fd = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        let fd = userns::create(&uid, &gid).expect("create");
        to_fd.push(t.elapsed());
        drop(fd);
        std::thread::sleep(std::time::Duration::from_micros(300));
    }
    to_fd.sort();
    println!(
        "fresh userns fd ({n} runs, paced): min {:?} median {:?} p90 {:?}",
        to_fd[0],
        to_fd[n / 2],
        to_fd[n * 9 / 10]
    );
}
