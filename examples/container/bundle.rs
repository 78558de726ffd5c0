//! Reading an OCI bundle: `config.json` and the rootfs it names.
//!
//! [`Bundle::load`] is the one place the example turns `config.json` into
//! what both sides need: the process to run, the namespaces and id maps, and
//! the mount plan — the bind mounts served over the sync socket (as procsync
//! [`Mount`] requests, which the parent's policy is built from) and the
//! mounts the init makes itself (proc, tmpfs, …), in configuration order.

use std::path::{Path, PathBuf};

use procsync::oci::oci_spec::runtime::{LinuxNamespaceType, Spec};
use procsync::oci::MountPlan;
pub use procsync::oci::PlannedMount;
use procsync::policy::ConfiguredMounts;
use procsync::rustix::mount::MountAttrFlags;
use procsync::schema::{IdMap, Mount};

/// A mount the init makes itself with the new mount API (a filesystem, not
/// a bind): entry `index` of `mounts`.
#[derive(Debug, Clone)]
pub struct FsMount {
    /// Its index in `mounts`.
    pub index: usize,
    /// The filesystem type (`proc`, `tmpfs`, …).
    pub fstype: String,
    /// The `source` (shown by `/proc/self/mountinfo`).
    pub source: String,
    /// Where it goes, inside the rootfs.
    pub destination: String,
    /// `MOUNT_ATTR_*` bits from `ro`, `nosuid`, `nodev`, `noexec`.
    pub attrs: MountAttrFlags,
    /// The other options, each given to `fsconfig` (`key=value` or a flag).
    pub data: Vec<String>,
}

/// One step of the mount set-up, in `config.json` order.
#[derive(Debug, Clone)]
pub enum Step {
    /// Ask the parent for the source, attach it.
    Served(Box<PlannedMount>),
    /// Make the filesystem in the init.
    Fs(FsMount),
}

/// `process` from `config.json`.
#[derive(Debug, Clone)]
pub struct Process {
    /// `args` (the first is the program).
    pub args: Vec<String>,
    /// `env`, `KEY=value` each.
    pub env: Vec<String>,
    /// `cwd`, inside the container.
    pub cwd: String,
    /// `user.uid`, `user.gid`, `user.additionalGids`.
    pub uid: u32,
    /// See `uid`.
    pub gid: u32,
    /// See `uid`.
    pub additional_gids: Vec<u32>,
}

/// A parsed bundle.
#[derive(Debug, Clone)]
pub struct Bundle {
    /// The bundle directory (absolute).
    pub dir: PathBuf,
    /// The rootfs (absolute).
    pub rootfs: PathBuf,
    /// The process to run.
    pub process: Process,
    /// `hostname`, if set.
    pub hostname: Option<String>,
    /// `linux.namespaces[].type` (only new namespaces: a `path` is refused).
    pub namespaces: Vec<LinuxNamespaceType>,
    /// The mounts, in order.
    pub steps: Vec<Step>,
    /// procsync's plan: requests, policy and the container's id maps.
    plan: MountPlan,
}

impl Bundle {
    /// Reads `dir/config.json` with the `oci` feature: `oci_spec` for the
    /// process, root, hostname and namespaces, [`MountPlan`] for the mounts
    /// and the id maps.
    pub fn load(dir: &Path) -> Result<Bundle, String> {
        let dir =
            std::fs::canonicalize(dir).map_err(|e| format!("bundle {}: {e}", dir.display()))?;
        let path = dir.join("config.json");
        let spec = Spec::load(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let plan = MountPlan::from_spec(&spec, &dir)
            .map_err(|e| format!("{}: {}", path.display(), super::chain(&e)))?;
        parse(&dir, &spec, plan).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The bind mounts the parent serves, in order.
    pub fn served(&self) -> &[PlannedMount] {
        self.plan.served()
    }

    /// The requests the policy allows: exactly the served bind mounts.
    pub fn requests(&self) -> Vec<Mount> {
        self.plan.requests().cloned().collect()
    }

    /// The parent's mount policy: each configured bind mount, once.
    pub fn policy(&self) -> ConfiguredMounts {
        self.plan.policy()
    }

    /// `linux.uidMappings`.
    pub fn uid_mappings(&self) -> &[IdMap] {
        self.plan.uid_mappings()
    }

    /// `linux.gidMappings`.
    pub fn gid_mappings(&self) -> &[IdMap] {
        self.plan.gid_mappings()
    }
}

fn parse(dir: &Path, spec: &Spec, plan: MountPlan) -> Result<Bundle, String> {
    let process = spec.process().as_ref().ok_or("no process")?;
    let args = process.args().clone().unwrap_or_default();
    if args.is_empty() {
        return Err("process.args is empty".into());
    }
    let user = process.user();
    let root = spec.root().as_ref().ok_or("no root")?;
    let mut namespaces = Vec::new();
    for ns in spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or_default()
    {
        if ns.path().is_some() {
            return Err(format!(
                "linux.namespaces: joining an existing {} namespace is not supported by this example",
                ns.typ()
            ));
        }
        namespaces.push(ns.typ());
    }
    let mounts = spec.mounts().as_deref().unwrap_or_default();
    let mut steps: Vec<(usize, Step)> = plan
        .served()
        .iter()
        .map(|p| (p.index, Step::Served(Box::new(p.clone()))))
        .collect();
    for n in plan.not_served() {
        let m = &mounts[n.index];
        let fs = fs_mount(n.index, m).map_err(|e| format!("mounts[{}]: {e}", n.index))?;
        steps.push((n.index, Step::Fs(fs)));
    }
    steps.sort_by_key(|(i, _)| *i);
    Ok(Bundle {
        dir: dir.to_path_buf(),
        rootfs: dir.join(root.path()),
        process: Process {
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().display().to_string(),
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
        },
        hostname: spec.hostname().clone(),
        namespaces,
        steps: steps.into_iter().map(|(_, s)| s).collect(),
        plan,
    })
}

/// A filesystem mount (not a bind) as the init makes it: the
/// `MOUNT_ATTR_*` options for `fsmount`, the rest for `fsconfig`.
fn fs_mount(index: usize, m: &procsync::oci::oci_spec::runtime::Mount) -> Result<FsMount, String> {
    let destination = m.destination().display().to_string();
    if !destination.starts_with('/') {
        return Err(format!("destination {destination:?} is not absolute"));
    }
    let mut attrs = MountAttrFlags::empty();
    let mut data = Vec::new();
    for o in m.options().as_deref().unwrap_or_default() {
        match o.as_str() {
            "ro" => attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY,
            "nosuid" => attrs |= MountAttrFlags::MOUNT_ATTR_NOSUID,
            "nodev" => attrs |= MountAttrFlags::MOUNT_ATTR_NODEV,
            "noexec" => attrs |= MountAttrFlags::MOUNT_ATTR_NOEXEC,
            "rw" | "suid" | "dev" | "exec" => {}
            _ => data.push(o.clone()),
        }
    }
    Ok(FsMount {
        index,
        fstype: m.typ().clone().unwrap_or_default(),
        source: m
            .source()
            .as_ref()
            .map(|s| s.display().to_string())
            .unwrap_or_default(),
        destination,
        attrs,
        data,
    })
}
