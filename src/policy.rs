//! Which mount requests the parent serves. Sans-IO: a policy only decides;
//! the session layer opens nothing it refused.
//!
//! A MountPlease makes the parent open a host path — with `open(O_PATH)` or
//! `open_tree(OPEN_TREE_CLONE)` — using the parent's host credentials, and
//! hand the fd to the child. A compromised child could ask for any host path
//! (`/`, `/etc/shadow`, another container's rootfs). runc serves whatever
//! the child asks for; procsync does not: by default the parent serves only
//! requests that match one of the container's configured mounts, each at
//! most once ([`ConfiguredMounts`]).
//!
//! "Never after Hooks" is not the policy's job: the state machine
//! ([`crate::state`]) admits MountPlease only before Hooks and rejects a late
//! request before any policy sees it.
//!
//! A refusal ([`PolicyRefusal`]) displays as one line meant to travel to the
//! child as the Error reply to its MountPlease.
//!
//! ```
//! use procsync::policy::{ConfiguredMounts, MountPolicy, PolicyRefusal};
//! use procsync::schema::Mount;
//!
//! let mut policy = ConfiguredMounts::new([Mount::bind("/srv/data", "/data").recursive()]);
//! let request = Mount::bind("/srv/data", "/data").recursive();
//! assert_eq!(policy.check(&request), Ok(()));
//! // Each configured mount is served once.
//! assert!(matches!(policy.check(&request), Err(PolicyRefusal::AlreadyServed { .. })));
//! // Anything else is refused.
//! let evil = Mount::bind("/", "/data").recursive();
//! assert!(matches!(policy.check(&evil), Err(PolicyRefusal::NotConfigured { .. })));
//! ```

#![forbid(unsafe_code)]

use crate::schema::Mount;
use crate::Origin;

/// Decides whether the parent serves one mount request.
///
/// Called once per MountPlease the state machine accepted, before the parent
/// touches the filesystem. `&mut self` lets a policy remember what it served.
pub trait MountPolicy {
    /// `Ok(())` to serve `req`; `Err` to refuse it (the refusal's `Display`
    /// goes to the child as the Error reply).
    fn check(&mut self, req: &Mount) -> Result<(), PolicyRefusal>;
}

impl<P: MountPolicy + ?Sized> MountPolicy for &mut P {
    fn check(&mut self, req: &Mount) -> Result<(), PolicyRefusal> {
        (**self).check(req)
    }
}

impl<P: MountPolicy + ?Sized> MountPolicy for Box<P> {
    fn check(&mut self, req: &Mount) -> Result<(), PolicyRefusal> {
        (**self).check(req)
    }
}

/// Why a mount request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyRefusal {
    /// No configured mount matches the request.
    #[error(
        "{mount_source:?} -> {destination:?} is not one of the container's configured mounts{}",
        Nearest(*nearest, destination)
    )]
    NotConfigured {
        /// The requested source (named so because thiserror reserves `source`).
        mount_source: String,
        /// The requested destination.
        destination: String,
        /// When a configured mount has the same destination, the first field
        /// (`"source"`, `"flags"`, ...) in which it differs from the request.
        nearest: Option<&'static str>,
    },
    /// Every configured mount matching the request has been served already.
    #[error(
        "{mount_source:?} -> {destination:?} was already served (configured mount #{index}); each configured mount is served once"
    )]
    AlreadyServed {
        /// The requested source (named so because thiserror reserves `source`).
        mount_source: String,
        /// The requested destination.
        destination: String,
        /// The index (in configuration order) of the last matching entry.
        index: usize,
    },
    /// A custom policy refused the request.
    #[error("mount request refused: {reason}")]
    Denied {
        /// Why, in one line.
        reason: String,
    },
}

/// The stable name of a [`PolicyRefusal`] (PROTOCOL.md §10); `Display`
/// prints the same kebab-case name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PolicyRefusalKind {
    /// [`PolicyRefusal::NotConfigured`].
    NotConfigured,
    /// [`PolicyRefusal::AlreadyServed`].
    AlreadyServed,
    /// [`PolicyRefusal::Denied`].
    Denied,
}

impl PolicyRefusalKind {
    /// The kind's stable kebab-case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            PolicyRefusalKind::NotConfigured => "not-configured",
            PolicyRefusalKind::AlreadyServed => "already-served",
            PolicyRefusalKind::Denied => "denied",
        }
    }
}

impl std::fmt::Display for PolicyRefusalKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PolicyRefusal {
    /// The refusal's stable kind (PROTOCOL.md §10).
    pub fn kind(&self) -> PolicyRefusalKind {
        match self {
            PolicyRefusal::NotConfigured { .. } => PolicyRefusalKind::NotConfigured,
            PolicyRefusal::AlreadyServed { .. } => PolicyRefusalKind::AlreadyServed,
            PolicyRefusal::Denied { .. } => PolicyRefusalKind::Denied,
        }
    }

    /// Always [`Origin::Peer`]: a refusal is about the peer's request.
    pub fn origin(&self) -> Origin {
        Origin::Peer
    }

    /// A refusal from a custom policy, with a one-line reason.
    pub fn denied(reason: impl Into<String>) -> Self {
        PolicyRefusal::Denied {
            reason: reason.into(),
        }
    }
}

/// Formats the optional hint of [`PolicyRefusal::NotConfigured`].
struct Nearest<'a>(Option<&'static str>, &'a str);

impl std::fmt::Display for Nearest<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Some(field) => write!(
                f,
                " (the configured mount at {:?} differs in {field})",
                self.1
            ),
            None => Ok(()),
        }
    }
}

/// The field names [`mount_matches`] compares, in the order it compares them.
pub const MATCHED_FIELDS: [&str; 9] = [
    "source",
    "destination",
    "device",
    "flags",
    "cleared_flags",
    "propagation_flags",
    "data",
    "rec_attr",
    "id_mapping",
];

/// Whether `request` asks for exactly the `configured` mount: source,
/// destination, device, flags, cleared_flags, propagation_flags (in order),
/// data, rec_attr and id_mapping are all equal. An absent `rec_attr` or
/// `id_mapping` equals a present one with every field at its default.
/// `extensions` and `relabel` are not compared: they change what the child
/// does with the fd, not which host object the parent opens.
pub fn mount_matches(configured: &Mount, request: &Mount) -> bool {
    first_difference(configured, request).is_none()
}

/// The first of [`MATCHED_FIELDS`] in which `a` and `b` differ.
fn first_difference(a: &Mount, b: &Mount) -> Option<&'static str> {
    let same = [
        a.source == b.source,
        a.destination == b.destination,
        a.device == b.device,
        a.flags == b.flags,
        a.cleared_flags == b.cleared_flags,
        a.propagation_flags == b.propagation_flags,
        a.data == b.data,
        optional_eq(&a.rec_attr, &b.rec_attr),
        optional_eq(&a.id_mapping, &b.id_mapping),
    ];
    same.iter()
        .position(|same| !same)
        .map(|i| MATCHED_FIELDS[i])
}

/// Equality of optional sub-messages where absent means all-default.
fn optional_eq<T: Default + PartialEq>(a: &Option<T>, b: &Option<T>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => a == b,
        (None, None) => true,
        (Some(x), None) | (None, Some(x)) => *x == T::default(),
    }
}

/// The default policy: serve only the container's configured mounts, each
/// configured entry at most once.
///
/// A request is served when it [matches](mount_matches) an entry not served
/// yet; the first such entry (in configuration order) is marked served. An
/// entry listed twice can be served twice. A policy built from no mounts
/// refuses every request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ConfiguredMounts {
    mounts: Vec<Mount>,
    served: Vec<bool>,
}

impl ConfiguredMounts {
    /// A policy serving each of `mounts` once.
    pub fn new(mounts: impl IntoIterator<Item = Mount>) -> Self {
        let mounts: Vec<Mount> = mounts.into_iter().collect();
        let served = vec![false; mounts.len()];
        ConfiguredMounts { mounts, served }
    }

    /// The configured mounts, in configuration order.
    pub fn mounts(&self) -> &[Mount] {
        &self.mounts
    }

    /// Whether the entry at `index` has been served (`false` if out of range).
    pub fn is_served(&self, index: usize) -> bool {
        self.served.get(index).copied().unwrap_or(false)
    }

    /// How many entries have been served.
    pub fn served_count(&self) -> usize {
        self.served.iter().filter(|&&s| s).count()
    }

    /// The entries never requested so far, in configuration order (for
    /// example to log configured mounts the child never asked for).
    pub fn unserved(&self) -> impl Iterator<Item = &Mount> + '_ {
        self.mounts
            .iter()
            .zip(&self.served)
            .filter(|(_, &served)| !served)
            .map(|(m, _)| m)
    }
}

impl MountPolicy for ConfiguredMounts {
    fn check(&mut self, req: &Mount) -> Result<(), PolicyRefusal> {
        self.serve(req).map(|_| ())
    }
}

impl ConfiguredMounts {
    /// Like [`MountPolicy::check`], but says which configured entry served
    /// the request, so the caller can open exactly what was configured.
    pub fn serve(&mut self, req: &Mount) -> Result<usize, PolicyRefusal> {
        let mut last_served = None;
        for (i, configured) in self.mounts.iter().enumerate() {
            if mount_matches(configured, req) {
                if !self.served[i] {
                    self.served[i] = true;
                    return Ok(i);
                }
                last_served = Some(i);
            }
        }
        if let Some(index) = last_served {
            return Err(PolicyRefusal::AlreadyServed {
                mount_source: req.source.clone(),
                destination: req.destination.clone(),
                index,
            });
        }
        let nearest = self
            .mounts
            .iter()
            .filter(|m| m.destination == req.destination)
            .find_map(|m| first_difference(m, req));
        Err(PolicyRefusal::NotConfigured {
            mount_source: req.source.clone(),
            destination: req.destination.clone(),
            nearest,
        })
    }
}

/// Serve every mount request — runc's behaviour.
///
/// Unsafe in spirit: with this policy a compromised child can make the
/// parent open any host path with the parent's credentials and receive the
/// fd. Use it only when the child is trusted (tests, or a child that runs
/// nothing from the container image before Hooks).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllowAll;

impl MountPolicy for AllowAll {
    fn check(&mut self, _req: &Mount) -> Result<(), PolicyRefusal> {
        Ok(())
    }
}
