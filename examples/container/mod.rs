//! The container example's modules (shared with `tests/container.rs`,
//! which runs the same code from its own binary).

pub mod bundle;
pub mod init;
pub mod rootfs;
pub mod runtime;
pub mod sys;
pub mod timing;

pub(crate) use super::common;

use std::path::PathBuf;
use std::process::ExitCode;

/// The command line of both roles.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--timings`: print each step's time (both sides).
    pub timings: bool,
    /// `--seccomp-notify`: the init installs a seccomp filter with a
    /// user-notification listener and hands the fd to the parent.
    pub seccomp_notify: bool,
    /// `--request-extra HOST_PATH`: the init also asks for `HOST_PATH`,
    /// which `config.json` does not mount (the parent must refuse).
    pub request_extra: Option<String>,
    /// The bundle directory.
    pub bundle: PathBuf,
}

impl Options {
    /// The flags again, as the parent passes them to the init.
    pub fn flags(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.timings {
            v.push("--timings".to_string());
        }
        if self.seccomp_notify {
            v.push("--seccomp-notify".to_string());
        }
        if let Some(p) = &self.request_extra {
            v.push("--request-extra".to_string());
            v.push(p.clone());
        }
        v
    }
}

pub const USAGE: &str =
    "usage: container [--timings] [--seccomp-notify] [--request-extra HOST_PATH] BUNDLE_DIR";

/// Parses the flags and the bundle; `t0` is `Some` for `--t0 NS` (the init).
fn parse(args: &[String]) -> Result<(Options, Option<u64>), String> {
    let mut o = Options::default();
    let mut t0 = None;
    let mut bundle = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--timings" => o.timings = true,
            "--seccomp-notify" => o.seccomp_notify = true,
            "--request-extra" => {
                o.request_extra = Some(it.next().ok_or("--request-extra needs a path")?.clone())
            }
            "--t0" => {
                let v = it.next().ok_or("--t0 needs a value")?;
                t0 = Some(v.parse().map_err(|_| format!("--t0 {v:?}: not a number"))?);
            }
            "-h" | "--help" => return Err(USAGE.to_string()),
            s if s.starts_with('-') => return Err(format!("unknown flag {s}\n{USAGE}")),
            s if bundle.is_none() => bundle = Some(PathBuf::from(s)),
            s => return Err(format!("unexpected argument {s:?}\n{USAGE}")),
        }
    }
    o.bundle = bundle.ok_or(USAGE)?;
    Ok((o, t0))
}

/// An error and its causes on one line, joined with `": "` (errors here
/// follow the API guidelines: `Display` leaves the cause to `source()`).
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let c_text = c.to_string();
        // Some errors still repeat their cause's text; print it once.
        if !text.ends_with(&c_text) {
            text.push_str(": ");
            text.push_str(&c_text);
        }
        cause = c.source();
    }
    text
}

/// Whether this process is the init the runtime re-executed: `init` as
/// the first argument and the sync socket in the environment.
pub fn is_init(args: &[String]) -> bool {
    args.first().is_some_and(|a| a == "init")
        && std::env::var_os(procsync::transport::ENV_SYNC_FD).is_some()
}

/// The runtime (`args` without the program name).
pub fn runtime_main(args: &[String]) -> ExitCode {
    let opts = match parse(args) {
        Ok((o, _)) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match runtime::run(&opts) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("container: {}", chain(&*e));
            ExitCode::FAILURE
        }
    }
}

/// The init (`args` after `init`). Returns only on failure.
pub fn init_main(args: &[String]) -> ExitCode {
    let (opts, t0) = match parse(args) {
        Ok((o, Some(t0))) => (o, t0),
        Ok((_, None)) => {
            eprintln!("init: --t0 missing (the init is started by the runtime)");
            return ExitCode::from(2);
        }
        Err(e) => {
            eprintln!("init: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init::run(&opts, t0) {
        out!("init:     failed: {}", chain(&*e));
    }
    ExitCode::FAILURE
}
