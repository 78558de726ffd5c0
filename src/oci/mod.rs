//! OCI runtime-spec integration (feature `oci`): the mount requests and the
//! mount policy of a container, built from its bundle's `config.json`.
//!
//! A runtime describes a container with the [OCI runtime spec]; this module
//! turns that description into what procsync needs, so the runtime does not
//! translate mounts, options and id mappings by hand:
//!
//! * every bind mount (`bind`/`rbind` in its options, or type `bind`)
//!   becomes a [`schema::Mount`] request — the one the child sends, and the
//!   one the parent's [`policy::ConfiguredMounts`] allows — with its options
//!   mapped to `MS_*` flags, propagation and recursive `mount_setattr(2)`
//!   attributes the way runc maps them, and its runtime-spec 1.1 id mapping
//!   (`uidMappings`/`gidMappings`, `idmap`/`ridmap`) as the request's
//!   [`IdMapping`];
//! * every other mount (`proc`, `tmpfs`, `sysfs`, …) is made by the child
//!   itself, needs no fd from the parent and is listed in
//!   [`MountPlan::not_served`] with the reason — never dropped silently;
//! * an option procsync does not know, or one that means nothing for a bind
//!   mount, is an [`OciError`], never ignored.
//!
//! ```no_run
//! use procsync::oci::MountPlan;
//! use procsync::session::Parent;
//! use procsync::state::Flow;
//! use procsync::transport::SyncSocket;
//!
//! fn parent_for(sock: SyncSocket) -> Result<Parent, Box<dyn std::error::Error>> {
//!     let plan = MountPlan::from_bundle("/run/bundles/c1".as_ref())?;
//!     for m in plan.not_served() {
//!         println!("the child mounts {} ({}) itself: {}", m.destination, m.typ, m.reason);
//!     }
//!     // The parent serves exactly the bundle's bind mounts, each once.
//!     Ok(Parent::new(sock, Flow::Init, plan.requests().cloned()))
//! }
//! ```
//!
//! The wire is not affected: a plan only builds ordinary
//! [`schema::Mount`] messages.
//!
//! [OCI runtime spec]: https://github.com/opencontainers/runtime-spec/blob/main/config.md#mounts
//! [`schema::Mount`]: crate::schema::Mount
//! [`policy::ConfiguredMounts`]: crate::policy::ConfiguredMounts

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxIdMapping, LinuxNamespaceType, Spec};

/// The `oci-spec` crate whose [`Spec`] the plan
/// is built from: use it to load or build a spec without a dependency of
/// your own.
pub use oci_spec;

use crate::policy::ConfiguredMounts;
use crate::schema::{IdMap, IdMapping, Mount, MountAttr};
use crate::wire::validate::{check_ranges, validate_mount};
use crate::Origin;

mod options;

pub use options::bind_options;
use options::Effect;

/// The mounts of one container, as procsync serves them: built from a
/// runtime-spec `config.json` ([`from_bundle`](Self::from_bundle)) or an
/// already parsed [`Spec`] ([`from_spec`](Self::from_spec)).
#[derive(Debug, Clone, PartialEq)]
pub struct MountPlan {
    served: Vec<PlannedMount>,
    not_served: Vec<NotServed>,
    uid_mappings: Vec<IdMap>,
    gid_mappings: Vec<IdMap>,
}

/// One bind mount of the spec: the request the child sends for it (and the
/// policy allows).
#[derive(Debug, Clone, PartialEq)]
pub struct PlannedMount {
    /// Its position in the spec's `mounts` array.
    pub index: usize,
    /// The `MountPlease` payload: source (absolute; a relative one resolved
    /// against the bundle), destination, device `bind`, the `MS_*` flags,
    /// the flags to clear, propagation, recursive attributes and id mapping.
    pub request: Mount,
    /// The destination inside the container, absolute (a deprecated
    /// relative destination is taken relative to `/`, as the spec says).
    pub destination: String,
    /// Whether the whole tree below the source is bound (`rbind`, `MS_REC`).
    pub recursive: bool,
}

/// A mount of the spec that procsync does not serve, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotServed {
    /// Its position in the spec's `mounts` array.
    pub index: usize,
    /// The destination as written in the spec.
    pub destination: String,
    /// The filesystem type as written in the spec (empty when absent).
    pub typ: String,
    /// Why the parent does not serve it.
    pub reason: NotServedReason,
}

/// Why a mount is not served over the sync socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotServedReason {
    /// Not a bind mount (`proc`, `tmpfs`, `sysfs`, `devpts`, `mqueue`,
    /// `cgroup`, …): the child creates the filesystem itself, inside its own
    /// namespaces; there is no host path whose fd the parent would send.
    NotBind,
}

impl NotServedReason {
    /// A stable kebab-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            NotServedReason::NotBind => "not-bind",
        }
    }
}

impl fmt::Display for NotServedReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NotServedReason::NotBind => {
                f.write_str("not a bind mount: the child makes this filesystem itself")
            }
        }
    }
}

/// Why a `config.json` cannot become a [`MountPlan`]. Every variant that
/// concerns one mount names its index in `mounts` and its destination.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OciError {
    /// `config.json` could not be read (or, for a relative bind source,
    /// the current directory a relative bundle path resolves against).
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// `config.json` is not a runtime-spec configuration (not JSON, or a
    /// field of the wrong type).
    #[error("{} is not a valid runtime-spec configuration", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said (with line and column).
        #[source]
        source: oci_spec::OciSpecError,
    },
    /// A bind mount has no `source`.
    #[error("mounts[{index}] ({destination}): a bind mount needs a source")]
    MissingSource {
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: String,
    },
    /// A path is not UTF-8 (the wire carries UTF-8 strings).
    #[error("mounts[{index}]: the {field} {path:?} is not UTF-8")]
    NotUtf8 {
        /// Index in `mounts`.
        index: usize,
        /// `source`, `destination` or the bundle directory.
        field: &'static str,
        /// The path, lossily printed.
        path: PathBuf,
    },
    /// A bind mount's option that procsync does not know. The runtime spec
    /// passes unknown options to the filesystem as mount data, which a bind
    /// mount ignores: serving it would drop the option silently.
    #[error("mounts[{index}] ({destination}): unknown option {option:?} for a bind mount")]
    UnknownOption {
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: String,
        /// The option as written.
        option: String,
    },
    /// A known option that means nothing for a bind mount (`tmpcopyup`).
    #[error("mounts[{index}] ({destination}): option {option:?} does not apply to a bind mount")]
    UnsupportedOption {
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: String,
        /// The option as written.
        option: String,
    },
    /// Only one of the mount's `uidMappings` and `gidMappings` is given;
    /// the runtime spec requires both.
    #[error("mounts[{index}] ({destination}): uidMappings and gidMappings must be given together")]
    IncompleteIdMapping {
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: String,
    },
    /// `idmap`/`ridmap` without mappings on the mount, and the container
    /// has no user namespace whose mapping could stand in (the runtime spec
    /// requires an error).
    #[error(
        "mounts[{index}] ({destination}): {option:?} needs uidMappings and gidMappings on the \
         mount, or a container user namespace"
    )]
    NoIdMapping {
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: String,
        /// `idmap` or `ridmap`.
        option: String,
    },
    /// The request built for a bind mount is not a valid `MountPlease`
    /// (e.g. an id-map range past 2^32, more than 340 lines, a path longer
    /// than `PATH_MAX`).
    #[error("mounts[{index}] ({destination}): {field} {reason}")]
    InvalidMount {
        /// Index in `mounts`.
        index: usize,
        /// The mount's destination.
        destination: String,
        /// The offending field of the request.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The container's `linux.uidMappings` or `linux.gidMappings` breaks the
    /// kernel's rules.
    #[error("linux.{field}: {reason}")]
    InvalidIdMappings {
        /// `uidMappings` or `gidMappings`.
        field: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// The stable kind of an [`OciError`] (kebab-case, see
/// [`as_str`](Self::as_str)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OciErrorKind {
    /// `read-config`: [`OciError::Read`].
    ReadConfig,
    /// `parse-config`: [`OciError::Parse`].
    ParseConfig,
    /// `missing-source`: [`OciError::MissingSource`].
    MissingSource,
    /// `not-utf8`: [`OciError::NotUtf8`].
    NotUtf8,
    /// `unknown-option`: [`OciError::UnknownOption`].
    UnknownOption,
    /// `unsupported-option`: [`OciError::UnsupportedOption`].
    UnsupportedOption,
    /// `incomplete-id-mapping`: [`OciError::IncompleteIdMapping`].
    IncompleteIdMapping,
    /// `no-id-mapping`: [`OciError::NoIdMapping`].
    NoIdMapping,
    /// `invalid-mount`: [`OciError::InvalidMount`].
    InvalidMount,
    /// `invalid-id-mappings`: [`OciError::InvalidIdMappings`].
    InvalidIdMappings,
}

impl OciErrorKind {
    /// The stable kebab-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            OciErrorKind::ReadConfig => "read-config",
            OciErrorKind::ParseConfig => "parse-config",
            OciErrorKind::MissingSource => "missing-source",
            OciErrorKind::NotUtf8 => "not-utf8",
            OciErrorKind::UnknownOption => "unknown-option",
            OciErrorKind::UnsupportedOption => "unsupported-option",
            OciErrorKind::IncompleteIdMapping => "incomplete-id-mapping",
            OciErrorKind::NoIdMapping => "no-id-mapping",
            OciErrorKind::InvalidMount => "invalid-mount",
            OciErrorKind::InvalidIdMappings => "invalid-id-mappings",
        }
    }
}

impl fmt::Display for OciErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl OciError {
    /// The stable kind of this error.
    pub fn kind(&self) -> OciErrorKind {
        match self {
            OciError::Read { .. } => OciErrorKind::ReadConfig,
            OciError::Parse { .. } => OciErrorKind::ParseConfig,
            OciError::MissingSource { .. } => OciErrorKind::MissingSource,
            OciError::NotUtf8 { .. } => OciErrorKind::NotUtf8,
            OciError::UnknownOption { .. } => OciErrorKind::UnknownOption,
            OciError::UnsupportedOption { .. } => OciErrorKind::UnsupportedOption,
            OciError::IncompleteIdMapping { .. } => OciErrorKind::IncompleteIdMapping,
            OciError::NoIdMapping { .. } => OciErrorKind::NoIdMapping,
            OciError::InvalidMount { .. } => OciErrorKind::InvalidMount,
            OciError::InvalidIdMappings { .. } => OciErrorKind::InvalidIdMappings,
        }
    }

    /// Who is to blame: [`Origin::Os`] when the file could not be read,
    /// [`Origin::Local`] (the configuration the caller supplied) otherwise.
    /// There is no peer yet when a plan is built.
    pub fn origin(&self) -> Origin {
        match self {
            OciError::Read { .. } => Origin::Os,
            _ => Origin::Local,
        }
    }
}

impl MountPlan {
    /// Reads `<bundle>/config.json` and builds the plan from it; relative
    /// bind sources resolve against `bundle` (made absolute against the
    /// current directory if it is relative).
    pub fn from_bundle(bundle: &Path) -> Result<MountPlan, OciError> {
        let path = bundle.join("config.json");
        let spec = Spec::load(&path).map_err(|e| match e {
            oci_spec::OciSpecError::Io(source) => OciError::Read {
                path: path.clone(),
                source,
            },
            source => OciError::Parse {
                path: path.clone(),
                source,
            },
        })?;
        MountPlan::from_spec(&spec, bundle)
    }

    /// Builds the plan from a parsed spec. Relative bind sources resolve
    /// against `bundle` (made absolute against the current directory if it
    /// is relative); nothing on the file system is touched.
    pub fn from_spec(spec: &Spec, bundle: &Path) -> Result<MountPlan, OciError> {
        let linux = spec.linux().as_ref();
        let uid_mappings = container_maps(linux.and_then(|l| l.uid_mappings().as_deref()));
        let gid_mappings = container_maps(linux.and_then(|l| l.gid_mappings().as_deref()));
        check_ranges(&uid_mappings).map_err(|reason| OciError::InvalidIdMappings {
            field: "uidMappings",
            reason,
        })?;
        check_ranges(&gid_mappings).map_err(|reason| OciError::InvalidIdMappings {
            field: "gidMappings",
            reason,
        })?;
        // What `idmap`/`ridmap` without mappings on the mount falls back to.
        let container_userns = linux.and_then(|l| {
            l.namespaces()
                .as_deref()?
                .iter()
                .find(|ns| ns.typ() == LinuxNamespaceType::User)
        });
        let fallback = match container_userns {
            None => None,
            Some(_) if !uid_mappings.is_empty() && !gid_mappings.is_empty() => Some(
                IdMapping::ranges(uid_mappings.clone(), gid_mappings.clone()),
            ),
            Some(ns) => ns
                .path()
                .as_ref()
                .and_then(|p| p.to_str())
                .map(IdMapping::userns),
        };

        let mut served = Vec::new();
        let mut not_served = Vec::new();
        for (index, m) in spec
            .mounts()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            let options = m.options().as_deref().unwrap_or_default();
            let typ = m.typ().clone().unwrap_or_default();
            let is_bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");
            if !is_bind {
                not_served.push(NotServed {
                    index,
                    destination: m.destination().to_string_lossy().into_owned(),
                    typ,
                    reason: NotServedReason::NotBind,
                });
                continue;
            }
            served.push(plan_bind(index, m, options, bundle, fallback.as_ref())?);
        }
        Ok(MountPlan {
            served,
            not_served,
            uid_mappings,
            gid_mappings,
        })
    }

    /// The bind mounts procsync serves, in configuration order.
    pub fn served(&self) -> &[PlannedMount] {
        &self.served
    }

    /// The mounts procsync does not serve (the child makes them itself),
    /// each with the reason, in configuration order.
    pub fn not_served(&self) -> &[NotServed] {
        &self.not_served
    }

    /// The `MountPlease` requests, in configuration order: exactly what the
    /// child sends and the policy allows.
    pub fn requests(&self) -> impl Iterator<Item = &Mount> {
        self.served.iter().map(|p| &p.request)
    }

    /// The parent's mount policy: the served requests, each at most once.
    pub fn policy(&self) -> ConfiguredMounts {
        ConfiguredMounts::new(self.requests().cloned())
    }

    /// The container's user-namespace uid mapping (`linux.uidMappings`),
    /// empty when none is configured.
    pub fn uid_mappings(&self) -> &[IdMap] {
        &self.uid_mappings
    }

    /// The container's user-namespace gid mapping (`linux.gidMappings`),
    /// empty when none is configured.
    pub fn gid_mappings(&self) -> &[IdMap] {
        &self.gid_mappings
    }
}

/// Converts runtime-spec id-map lines to procsync's.
fn container_maps(maps: Option<&[LinuxIdMapping]>) -> Vec<IdMap> {
    maps.unwrap_or_default()
        .iter()
        .map(|m| IdMap::new(m.container_id(), m.host_id(), m.size()))
        .collect()
}

/// The request for one bind mount.
fn plan_bind(
    index: usize,
    m: &oci_spec::runtime::Mount,
    options: &[String],
    bundle: &Path,
    fallback: Option<&IdMapping>,
) -> Result<PlannedMount, OciError> {
    let dest_path = m.destination();
    let Some(dest) = dest_path.to_str() else {
        return Err(OciError::NotUtf8 {
            index,
            field: "destination",
            path: dest_path.clone(),
        });
    };
    let destination = if dest.starts_with('/') {
        dest.to_string()
    } else {
        // Deprecated, but allowed: relative to "/".
        format!("/{dest}")
    };
    let Some(source) = m.source() else {
        return Err(OciError::MissingSource { index, destination });
    };
    let source = if source.is_absolute() {
        source.clone()
    } else {
        // An empty bundle path is the current directory.
        let bundle = if bundle.as_os_str().is_empty() {
            Path::new(".")
        } else {
            bundle
        };
        let base = std::path::absolute(bundle).map_err(|source| OciError::Read {
            path: bundle.to_path_buf(),
            source,
        })?;
        base.join(source)
    };
    let Some(source) = source.to_str().map(str::to_string) else {
        return Err(OciError::NotUtf8 {
            index,
            field: "source",
            path: source,
        });
    };

    let mut req = Mount {
        source,
        destination: destination.clone(),
        device: "bind".to_string(),
        flags: crate::schema::ms::BIND,
        ..Default::default()
    };
    let mut attr = MountAttr::default();
    let mut idmap: Option<(String, bool)> = None;
    for option in options {
        let Some(effect) = options::lookup(option) else {
            return Err(OciError::UnknownOption {
                index,
                destination,
                option: option.clone(),
            });
        };
        match effect {
            Effect::Set(f) => {
                req.flags |= f;
                req.cleared_flags &= !f;
            }
            Effect::Clear(f) => {
                req.flags &= !f;
                req.cleared_flags |= f;
            }
            Effect::Propagation(f) => req.propagation_flags.push(f),
            Effect::RecSet(a) => {
                attr.attr_set |= a;
                attr.attr_clr &= !a;
                if options::is_atime(a) {
                    // mount_setattr(2): a new access-time mode replaces the
                    // whole field, which must be in attr_clr.
                    attr.attr_set &= !options::ATIME_MASK | a;
                    attr.attr_clr |= options::ATIME_MASK;
                }
            }
            Effect::RecClear(a) => {
                if options::is_atime(a) {
                    // Only the whole access-time field can be cleared: the
                    // mode falls back to the kernel's default (relatime).
                    attr.attr_set &= !options::ATIME_MASK;
                    attr.attr_clr |= options::ATIME_MASK;
                } else {
                    attr.attr_set &= !a;
                    attr.attr_clr |= a;
                }
            }
            Effect::IdMap { recursive } => idmap = Some((option.clone(), recursive)),
            Effect::Nothing => {}
            Effect::NotForBind => {
                return Err(OciError::UnsupportedOption {
                    index,
                    destination,
                    option: option.clone(),
                })
            }
        }
    }
    if attr != MountAttr::default() {
        req.rec_attr = Some(attr);
    }

    let uid = m.uid_mappings().as_deref();
    let gid = m.gid_mappings().as_deref();
    let mapping = match (uid, gid, &idmap) {
        (Some(u), Some(g), _) => Some(IdMapping::ranges(
            container_maps(Some(u)),
            container_maps(Some(g)),
        )),
        (Some(_), None, _) | (None, Some(_), _) => {
            return Err(OciError::IncompleteIdMapping { index, destination })
        }
        (None, None, Some((option, _))) => match fallback {
            Some(f) => Some(f.clone()),
            None => {
                return Err(OciError::NoIdMapping {
                    index,
                    destination,
                    option: option.clone(),
                })
            }
        },
        (None, None, None) => None,
    };
    // Mappings on the mount without idmap/ridmap still make it id-mapped
    // (never ignored), not recursively.
    req.id_mapping =
        mapping.map(|m| m.recursive(idmap.as_ref().is_some_and(|(_, recursive)| *recursive)));

    validate_mount(&req).map_err(|(field, reason)| OciError::InvalidMount {
        index,
        destination: destination.clone(),
        field,
        reason,
    })?;
    let recursive = req.flags & crate::schema::ms::REC != 0;
    Ok(PlannedMount {
        index,
        request: req,
        destination,
        recursive,
    })
}
