//! Reading an OCI bundle: `config.json` and the rootfs it names.
//!
//! [`Bundle::load`] is the one place the example turns `config.json` into
//! what both sides need: the process to run, the namespaces and id maps, and
//! the mount plan — the bind mounts served over the sync socket (as procsync
//! [`Mount`] requests, which the parent's policy is built from) and the
//! mounts the init makes itself (proc, tmpfs, …), in configuration order.

use std::path::{Path, PathBuf};

use procsync::policy::ConfiguredMounts;
use procsync::rustix::mount::MountAttrFlags;
use procsync::schema::{ms, IdMap, IdMapping, Mount};
use serde_json::Value;

/// A bind mount the parent serves: entry `index` of `config.json`'s
/// `mounts`, as the request the init sends.
#[derive(Debug, Clone)]
pub struct PlannedMount {
    /// Its index in `mounts`.
    pub index: usize,
    /// The MountPlease the init sends (and the policy expects).
    pub request: Mount,
    /// Where it goes, inside the rootfs.
    pub destination: String,
    /// `rbind`: take the submounts along.
    pub recursive: bool,
}

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
    pub namespaces: Vec<String>,
    /// `linux.uidMappings`.
    pub uid_mappings: Vec<IdMap>,
    /// `linux.gidMappings`.
    pub gid_mappings: Vec<IdMap>,
    /// The mounts, in order.
    pub steps: Vec<Step>,
}

impl Bundle {
    /// Reads `dir/config.json`.
    pub fn load(dir: &Path) -> Result<Bundle, String> {
        let dir =
            std::fs::canonicalize(dir).map_err(|e| format!("bundle {}: {e}", dir.display()))?;
        let path = dir.join("config.json");
        let text =
            std::fs::read_to_string(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        let cfg: Value =
            serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        parse(&dir, &cfg).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// The bind mounts the parent serves, in order.
    pub fn served(&self) -> impl Iterator<Item = &PlannedMount> {
        self.steps.iter().filter_map(|s| match s {
            Step::Served(p) => Some(&**p),
            Step::Fs(_) => None,
        })
    }

    /// The requests the policy allows: exactly the served bind mounts.
    pub fn requests(&self) -> Vec<Mount> {
        self.served().map(|p| p.request.clone()).collect()
    }

    /// The parent's mount policy: each configured bind mount, once.
    pub fn policy(&self) -> ConfiguredMounts {
        ConfiguredMounts::new(self.requests())
    }
}

fn parse(dir: &Path, cfg: &Value) -> Result<Bundle, String> {
    let process = cfg.get("process").ok_or("no process")?;
    let args = strings(process.get("args")).ok_or("process.args: not a list of strings")?;
    if args.is_empty() {
        return Err("process.args is empty".into());
    }
    let env = strings(process.get("env")).unwrap_or_default();
    let cwd = process
        .get("cwd")
        .and_then(Value::as_str)
        .unwrap_or("/")
        .to_string();
    let user = process.get("user");
    let id = |k: &str| {
        user.and_then(|u| u.get(k))
            .and_then(Value::as_u64)
            .map(|v| v as u32)
            .unwrap_or(0)
    };
    let additional_gids = user
        .and_then(|u| u.get("additionalGids"))
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_u64)
                .map(|g| g as u32)
                .collect()
        })
        .unwrap_or_default();
    let root = cfg
        .get("root")
        .and_then(|r| r.get("path"))
        .and_then(Value::as_str)
        .ok_or("no root.path")?;
    let rootfs = dir.join(root);
    let hostname = cfg
        .get("hostname")
        .and_then(Value::as_str)
        .map(str::to_string);
    let linux = cfg.get("linux");
    let mut namespaces = Vec::new();
    for ns in linux
        .and_then(|l| l.get("namespaces"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let ty = ns
            .get("type")
            .and_then(Value::as_str)
            .ok_or("linux.namespaces: entry without type")?;
        if ns.get("path").is_some() {
            return Err(format!(
                "linux.namespaces: joining an existing {ty} namespace is not supported by this example"
            ));
        }
        namespaces.push(ty.to_string());
    }
    let uid_mappings = id_maps(linux.and_then(|l| l.get("uidMappings")))?;
    let gid_mappings = id_maps(linux.and_then(|l| l.get("gidMappings")))?;
    let mut steps = Vec::new();
    for (index, m) in cfg
        .get("mounts")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .enumerate()
    {
        steps.push(mount_step(dir, index, m).map_err(|e| format!("mounts[{index}]: {e}"))?);
    }
    Ok(Bundle {
        dir: dir.to_path_buf(),
        rootfs,
        process: Process {
            args,
            env,
            cwd,
            uid: id("uid"),
            gid: id("gid"),
            additional_gids,
        },
        hostname,
        namespaces,
        uid_mappings,
        gid_mappings,
        steps,
    })
}

fn strings(v: Option<&Value>) -> Option<Vec<String>> {
    v?.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_string))
        .collect()
}

fn id_maps(v: Option<&Value>) -> Result<Vec<IdMap>, String> {
    let Some(v) = v else { return Ok(Vec::new()) };
    let list = v.as_array().ok_or("id mappings: not a list")?;
    list.iter()
        .map(|m| {
            let f = |k: &str| {
                m.get(k)
                    .and_then(Value::as_u64)
                    .and_then(|v| u32::try_from(v).ok())
                    .ok_or_else(|| format!("id mapping: {k} missing or out of range"))
            };
            Ok(IdMap::new(f("containerID")?, f("hostID")?, f("size")?))
        })
        .collect()
}

fn mount_step(dir: &Path, index: usize, m: &Value) -> Result<Step, String> {
    let destination = m
        .get("destination")
        .and_then(Value::as_str)
        .ok_or("no destination")?
        .to_string();
    if !destination.starts_with('/') {
        return Err(format!("destination {destination:?} is not absolute"));
    }
    let fstype = m.get("type").and_then(Value::as_str).unwrap_or("");
    let source = m.get("source").and_then(Value::as_str).unwrap_or("");
    let options = strings(m.get("options")).unwrap_or_default();
    let is_bind = fstype == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
    if !is_bind {
        let mut attrs = MountAttrFlags::empty();
        let mut data = Vec::new();
        for o in options {
            match o.as_str() {
                "ro" => attrs |= MountAttrFlags::MOUNT_ATTR_RDONLY,
                "nosuid" => attrs |= MountAttrFlags::MOUNT_ATTR_NOSUID,
                "nodev" => attrs |= MountAttrFlags::MOUNT_ATTR_NODEV,
                "noexec" => attrs |= MountAttrFlags::MOUNT_ATTR_NOEXEC,
                "rw" | "suid" | "dev" | "exec" => {}
                _ => data.push(o),
            }
        }
        return Ok(Step::Fs(FsMount {
            index,
            fstype: fstype.to_string(),
            source: source.to_string(),
            destination,
            attrs,
            data,
        }));
    }
    // A relative source is relative to the bundle (as runc reads it).
    let source = dir.join(source).display().to_string();
    let mut request = Mount::bind(source, destination.clone());
    let mut idmap = None;
    for o in &options {
        match o.as_str() {
            "bind" => {}
            "rbind" => request.flags |= ms::REC,
            "ro" => request.flags |= ms::RDONLY,
            "nosuid" => request.flags |= ms::NOSUID,
            "nodev" => request.flags |= ms::NODEV,
            "noexec" => request.flags |= ms::NOEXEC,
            "rw" | "suid" | "dev" | "exec" => {}
            "private" => request.propagation_flags.push(ms::PRIVATE),
            "rprivate" => request.propagation_flags.push(ms::PRIVATE | ms::REC),
            "slave" => request.propagation_flags.push(ms::SLAVE),
            "rslave" => request.propagation_flags.push(ms::SLAVE | ms::REC),
            "shared" => request.propagation_flags.push(ms::SHARED),
            "rshared" => request.propagation_flags.push(ms::SHARED | ms::REC),
            "unbindable" => request.propagation_flags.push(ms::UNBINDABLE),
            "runbindable" => request.propagation_flags.push(ms::UNBINDABLE | ms::REC),
            "idmap" => idmap = Some(false),
            "ridmap" => idmap = Some(true),
            other => return Err(format!("bind mount option {other:?} is not supported")),
        }
    }
    let uids = id_maps(m.get("uidMappings"))?;
    let gids = id_maps(m.get("gidMappings"))?;
    if !uids.is_empty() || !gids.is_empty() || idmap.is_some() {
        if uids.is_empty() || gids.is_empty() {
            return Err("an id-mapped mount needs both uidMappings and gidMappings".into());
        }
        request = request
            .with_id_mapping(IdMapping::ranges(uids, gids).recursive(idmap.unwrap_or(false)));
    }
    let recursive = request.flags & ms::REC != 0;
    Ok(Step::Served(Box::new(PlannedMount {
        index,
        request,
        destination,
        recursive,
    })))
}
