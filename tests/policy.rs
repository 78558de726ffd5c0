//! The mount-request policy: configured mounts only, each at most once, and
//! the state machine keeping every request after Hooks away from it.

use procsync::policy::{
    mount_matches, AllowAll, ConfiguredMounts, MountPolicy, PolicyRefusal, MATCHED_FIELDS,
};
use procsync::schema::{ms, IdMap, IdMapping, MessageType as T, Mount, MountAttr, SyncMessage};
use procsync::state::{Flow, Machine, Role};

fn data() -> Mount {
    Mount::bind("/srv/data", "/data").recursive()
}

fn idmapped() -> Mount {
    Mount::bind("/srv/home", "/home").with_id_mapping(
        IdMapping::ranges(
            vec![IdMap::new(0, 100000, 65536)],
            vec![IdMap::new(0, 100000, 65536)],
        )
        .recursive(true),
    )
}

/// Every configured field, changed one at a time, in MATCHED_FIELDS order.
fn variants(base: &Mount) -> Vec<(&'static str, Mount)> {
    let mut out = vec![];
    let mut m = base.clone();
    m.source = "/".into();
    out.push(("source", m));
    let mut m = base.clone();
    m.destination = "/data2".into();
    out.push(("destination", m));
    let mut m = base.clone();
    m.device = "tmpfs".into();
    out.push(("device", m));
    let mut m = base.clone();
    m.flags |= ms::RDONLY;
    out.push(("flags", m));
    let mut m = base.clone();
    m.cleared_flags = ms::NOSUID;
    out.push(("cleared_flags", m));
    let mut m = base.clone();
    m.propagation_flags = vec![ms::PRIVATE];
    out.push(("propagation_flags", m));
    let mut m = base.clone();
    m.data = "mode=755".into();
    out.push(("data", m));
    let mut m = base.clone();
    m.rec_attr = Some(MountAttr {
        attr_set: 1,
        ..Default::default()
    });
    out.push(("rec_attr", m));
    let mut m = base.clone();
    m.id_mapping = Some(IdMapping::userns("/proc/1/ns/user"));
    out.push(("id_mapping", m));
    out
}

#[test]
fn configured_mount_is_served_once() {
    let mut p = ConfiguredMounts::new([data(), idmapped()]);
    assert_eq!(p.check(&idmapped()), Ok(()));
    assert!(p.is_served(1) && !p.is_served(0));
    assert_eq!(p.check(&data()), Ok(()));
    assert_eq!(p.served_count(), 2);
    assert_eq!(p.unserved().count(), 0);
    let e = p.check(&data()).unwrap_err();
    assert_eq!(
        e,
        PolicyRefusal::AlreadyServed {
            mount_source: "/srv/data".into(),
            destination: "/data".into(),
            index: 0,
        }
    );
    assert_eq!(
        e.to_string(),
        "\"/srv/data\" -> \"/data\" was already served (configured mount #0); each configured mount is served once"
    );
}

#[test]
fn duplicates_in_the_config_are_each_served_once() {
    let mut p = ConfiguredMounts::new([data(), idmapped(), data()]);
    assert_eq!(p.serve(&data()), Ok(0));
    assert!(p.is_served(0) && !p.is_served(2));
    assert_eq!(p.serve(&data()), Ok(2));
    assert!(p.is_served(2));
    assert!(matches!(
        p.check(&data()),
        Err(PolicyRefusal::AlreadyServed { index: 2, .. })
    ));
    assert_eq!(p.unserved().collect::<Vec<_>>(), vec![&idmapped()]);
}

#[test]
fn every_matched_field_must_match() {
    for base in [data(), idmapped()] {
        let vs = variants(&base);
        assert_eq!(
            vs.iter().map(|v| v.0).collect::<Vec<_>>(),
            MATCHED_FIELDS.to_vec(),
            "every field is exercised"
        );
        for (field, request) in vs {
            assert!(!mount_matches(&base, &request), "{field}");
            let mut p = ConfiguredMounts::new([base.clone()]);
            let e = p.check(&request).unwrap_err();
            let PolicyRefusal::NotConfigured {
                mount_source,
                destination,
                nearest,
            } = &e
            else {
                panic!("{field}: {e:?}");
            };
            assert_eq!(mount_source, &request.source);
            assert_eq!(destination, &request.destination);
            // The hint names the differing field when the destination matches.
            let hint = if field == "destination" {
                None
            } else {
                Some(field)
            };
            assert_eq!(*nearest, hint, "{field}");
            assert!(!p.is_served(0), "{field}: a refusal serves nothing");
            assert_eq!(p.check(&base), Ok(()), "{field}: the real one still works");
        }
    }
}

#[test]
fn refusal_text_is_one_line_for_the_child() {
    let mut p = ConfiguredMounts::new([data()]);
    let mut evil = data();
    evil.source = "/etc\n/shadow".into();
    let e = p.check(&evil).unwrap_err();
    let text = e.to_string();
    assert_eq!(
        text,
        "\"/etc\\n/shadow\" -> \"/data\" is not one of the container's configured mounts (the configured mount at \"/data\" differs in source)"
    );
    assert!(!text.contains('\n'));
    // It fits an Error message the wire accepts.
    let msg = SyncMessage::error(text);
    procsync::wire::validate(&msg, 0).unwrap();

    let e = p.check(&Mount::bind("/", "/elsewhere")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "\"/\" -> \"/elsewhere\" is not one of the container's configured mounts"
    );
}

#[test]
fn absent_and_default_sub_messages_are_equal() {
    let mut with_defaults = data();
    with_defaults.rec_attr = Some(MountAttr::default());
    with_defaults.id_mapping = Some(IdMapping::default());
    assert!(mount_matches(&data(), &with_defaults));
    assert!(mount_matches(&with_defaults, &data()));
    // extensions and relabel do not pick the host object.
    let mut relabelled = data();
    relabelled.relabel = "Z".into();
    relabelled.extensions = 1;
    assert!(mount_matches(&data(), &relabelled));
    // Propagation flags compare in order.
    let mut a = data();
    a.propagation_flags = vec![ms::PRIVATE, ms::SLAVE];
    let mut b = data();
    b.propagation_flags = vec![ms::SLAVE, ms::PRIVATE];
    assert!(!mount_matches(&a, &b));
}

#[test]
fn empty_config_refuses_everything_and_allow_all_serves_everything() {
    let mut none = ConfiguredMounts::default();
    assert!(none.check(&data()).is_err());
    let mut all = AllowAll;
    for _ in 0..3 {
        assert_eq!(all.check(&Mount::bind("/", "/")), Ok(()));
    }
}

#[test]
fn policies_are_replaceable() {
    struct OnlyUnder(&'static str);
    impl MountPolicy for OnlyUnder {
        fn check(&mut self, req: &Mount) -> Result<(), PolicyRefusal> {
            if req.source.starts_with(self.0) {
                Ok(())
            } else {
                Err(PolicyRefusal::denied(format!(
                    "{:?} is outside {}",
                    req.source, self.0
                )))
            }
        }
    }
    let mut boxed: Box<dyn MountPolicy> = Box::new(OnlyUnder("/srv/"));
    assert_eq!(boxed.check(&data()), Ok(()));
    let e = boxed.check(&Mount::bind("/etc", "/etc")).unwrap_err();
    assert_eq!(
        e.to_string(),
        "mount request refused: \"/etc\" is outside /srv/"
    );
    let mut configured = ConfiguredMounts::new([data()]);
    let by_ref: &mut dyn MountPolicy = &mut configured;
    assert_eq!(by_ref.check(&data()), Ok(()));
    assert!(configured.is_served(0));
}

/// What a parent's session does with an incoming MountPlease: the state
/// machine first, then the policy.
fn on_mount_please(
    parent: &mut Machine,
    policy: &mut dyn MountPolicy,
    req: &Mount,
) -> Result<(), String> {
    parent.on_recv(T::MountPlease).map_err(|e| e.to_string())?;
    policy.check(req).map_err(|e| e.to_string())
}

/// A request after Hooks never reaches the policy.
#[test]
fn requests_after_hooks_never_reach_the_policy() {
    struct Counting(ConfiguredMounts, usize);
    impl MountPolicy for Counting {
        fn check(&mut self, req: &Mount) -> Result<(), PolicyRefusal> {
            self.1 += 1;
            self.0.check(req)
        }
    }
    let mut policy = Counting(ConfiguredMounts::new([data(), data()]), 0);
    let mut parent = Machine::new(Role::Parent, Flow::Init);

    on_mount_please(&mut parent, &mut policy, &data()).unwrap();
    parent.on_send(T::MountFd).unwrap();
    parent.on_recv(T::Hooks).unwrap();
    parent.on_send(T::HooksDone).unwrap();

    // A late request for a configured mount that was never served.
    let e = on_mount_please(&mut parent, &mut policy, &data()).unwrap_err();
    assert_eq!(
        e,
        "in state BeforeReady (init, parent): expected Ready or Error from child, got MountPlease"
    );
    assert_eq!(policy.1, 1, "the policy saw only the request before Hooks");
    assert!(!policy.0.is_served(1));
}
