//! Unit tests of the planner, one rule at a time, with plain values.

use super::model::*;
use super::plan;
use crate::model::*;
use serde_json::json;

// -- builders ----------------------------------------------------------------

fn cm(pairs: &[(&str, &str)]) -> ConfigMap {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn desired() -> DesiredCluster {
    DesiredCluster {
        spec: ClusterSpec {
            name: "c".into(),
            description: String::new(),
            endpoints: vec!["https://127.0.0.1:8443".into()],
            fingerprint: "00".repeat(32),
            credentials: "c".into(),
            config: ConfigMap::new(),
            policy: Policy::default(),
            snap: None,
        },
        objects: ClusterObjects::default(),
    }
}

fn live() -> LiveState {
    LiveState { cluster: "c".into(), ..Default::default() }
}

fn owned(mut config: ConfigMap) -> ConfigMap {
    config.insert(OWNER_KEY.into(), "c".into());
    config
}

fn member(name: &str) -> Member {
    Member { name: name.into(), failure_domain: "default".into(), groups: vec!["default".into()], ..Default::default() }
}

fn live_member(name: &str, status: &str) -> Member {
    Member { status: Some(status.into()), ..member(name) }
}

fn inst(project: &str, name: &str) -> Instance {
    Instance {
        project: project.into(),
        name: name.into(),
        profiles: vec!["default".into()],
        image: Some("debian".into()),
        ..Default::default()
    }
}

/// The live twin of a desired instance: owner key, LXD's own keys, location, status.
fn live_of(i: &Instance, location: &str) -> Instance {
    let mut l = i.clone();
    l.config = owned(l.config);
    l.config.insert("volatile.uuid".into(), "1234".into());
    l.config.insert("volatile.eth0.hwaddr".into(), "00:16:3e:00:00:01".into());
    l.config.insert("image.os".into(), "Debian".into());
    l.location = Some(location.into());
    l.status = Some(match i.state {
        PowerState::Running => "Running".into(),
        PowerState::Stopped => "Stopped".into(),
    });
    l.base_image = Some("ab".repeat(32));
    l.target = None;
    l
}

fn put_inst(objs: &mut ClusterObjects, i: Instance) {
    objs.instances.insert(pkey(&i.project, &i.name), i);
}

fn ids(p: &Plan) -> Vec<&str> {
    p.steps().map(|s| s.id.as_str()).collect()
}

fn step<'p>(p: &'p Plan, id: &str) -> &'p Step {
    p.step(id).unwrap_or_else(|| panic!("no step {id}; steps: {:?}", ids(p)))
}

fn paths(s: &Step) -> Vec<&str> {
    s.changes.iter().map(|c| c.path.as_str()).collect()
}

fn blocked_reason(s: &Step) -> Option<&str> {
    s.flags.iter().find_map(|f| match f {
        Flag::Blocked(r) => Some(r.as_str()),
        _ => None,
    })
}

/// A cluster of two online members, n1 and n2, both known to the fleet.
fn two_members() -> (DesiredCluster, LiveState) {
    let mut d = desired();
    let mut l = live();
    for n in ["n1", "n2"] {
        d.objects.members.insert(n.into(), member(n));
        let mut lm = live_member(n, "Online");
        lm.config = owned(lm.config);
        l.objects.members.insert(n.into(), lm);
    }
    (d, l)
}

// -- basics ------------------------------------------------------------------

#[test]
fn nothing_declared_nothing_live_is_empty() {
    let p = plan(&desired(), &live());
    assert!(p.is_empty());
    assert_eq!(p.version, PLAN_FORMAT_VERSION);
    assert_eq!(p.cluster, "c");
    assert!(p.blocked.is_none());
    assert_eq!(p.live_digest.len(), 64);
}

#[test]
fn live_state_of_another_cluster_blocks_the_plan() {
    let mut l = live();
    l.cluster = "other".into();
    let p = plan(&desired(), &l);
    assert!(p.blocked.unwrap().contains("cluster `other`, not `c`"));
}

#[test]
fn equal_instances_ignore_lxd_keys_and_the_owner_marker() {
    let (mut d, mut l) = two_members();
    let mut i = inst("default", "a");
    i.config = cm(&[("limits.cpu", "2")]);
    i.target = Some("n1".into());
    put_inst(&mut l.objects, live_of(&i, "n1"));
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    assert!(p.is_empty(), "{:?}", ids(&p));
}

// -- instances -----------------------------------------------------------------

#[test]
fn instance_creation_carries_the_owner_marker_then_starts() {
    let mut d = desired();
    d.objects.projects.insert("web".into(), Project { name: "web".into(), ..Default::default() });
    d.objects
        .profiles
        .insert("web/base".into(), Profile { project: "web".into(), name: "base".into(), ..Default::default() });
    d.objects.images.insert(
        "web/debian".into(),
        Image {
            project: "web".into(),
            name: "debian".into(),
            aliases: vec![],
            source: None,
            properties: ConfigMap::new(),
            public: false,
            auto_update: false,
            fingerprint: None,
        },
    );
    d.objects.members.insert("n3".into(), Member { address: Some("10.0.0.3:8443".into()), ..member("n3") });
    let mut i = inst("web", "w1");
    i.profiles = vec!["default".into(), "base".into()];
    i.target = Some("n3".into());
    put_inst(&mut d.objects, i);
    let mut l = live();
    l.objects.members.insert("n1".into(), live_member("n1", "Online"));
    let p = plan(&d, &l);
    let create = step(&p, "instances/create/Instance/web/w1");
    let want = create.desired.as_ref().unwrap();
    assert_eq!(want["config"][OWNER_KEY], "c");
    assert_eq!(
        create.depends_on,
        vec![
            "projects/create/Project/web",
            "profiles/create/Profile/web/base",
            "images/create/Image/web/debian",
            "members/join/Member/n3",
        ]
    );
    let start = step(&p, "instances/start/Instance/web/w1");
    assert_eq!(start.depends_on, vec![create.id.clone()]);
    assert_eq!(p.counts().create, 4);
}

#[test]
fn config_drift_is_one_update_and_undeclared_keys_are_removed() {
    let (mut d, mut l) = two_members();
    let mut i = inst("default", "a");
    i.config = cm(&[("limits.memory", "2GiB")]);
    let mut li = live_of(&i, "n1");
    li.config.insert("limits.memory".into(), "1GiB".into());
    li.config.insert("user.note".into(), "by hand".into());
    li.description = "old".into();
    put_inst(&mut l.objects, li);
    l.etags.insert("Instance/default/a".into(), "etag-a".into());
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["instances/update/Instance/default/a"]);
    let s = step(&p, "instances/update/Instance/default/a");
    assert_eq!(paths(s), ["description", "config.limits.memory", "config.user.note"]);
    assert_eq!(s.changes[2].after, None);
    assert_eq!(s.etag.as_deref(), Some("etag-a"));
    assert!(s.live_digest.is_some());
    // The executor writes LXD's own keys back (PUT must keep volatile.idmap.*).
    let want = s.desired.as_ref().unwrap();
    assert_eq!(want["config"]["volatile.uuid"], "1234");
    assert_eq!(want["config"][OWNER_KEY], "c");
    assert!(want["config"].get("user.note").is_none());
    assert!(s.flags.is_empty());
}

#[test]
fn restart_keys_are_held_unless_policy_allows_restarts() {
    let (mut d, mut l) = two_members();
    let mut i = inst("default", "a");
    i.config = cm(&[("raw.lxc", "lxc.x=1")]);
    let mut li = live_of(&i, "n1");
    li.config.remove("raw.lxc");
    put_inst(&mut l.objects, li);
    put_inst(&mut d.objects, i);

    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["instances/update/Instance/default/a"]);
    let s = step(&p, "instances/update/Instance/default/a");
    assert_eq!(s.flags, vec![Flag::RestartHeld]);
    assert!(!s.runs());

    d.spec.policy.allow_restart = true;
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["instances/update/Instance/default/a", "instances/restart/Instance/default/a"]);
    assert_eq!(step(&p, "instances/update/Instance/default/a").flags, vec![Flag::RestartNeeded]);
    assert_eq!(
        step(&p, "instances/restart/Instance/default/a").depends_on,
        vec!["instances/update/Instance/default/a"]
    );
}

#[test]
fn restart_keys_on_a_stopped_instance_need_nothing_more() {
    let (mut d, mut l) = two_members();
    let mut i = inst("default", "a");
    i.state = PowerState::Stopped;
    i.config = cm(&[("security.privileged", "true")]);
    let mut li = live_of(&i, "n1");
    li.config.remove("security.privileged");
    put_inst(&mut l.objects, li);
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["instances/update/Instance/default/a"]);
    assert!(step(&p, "instances/update/Instance/default/a").flags.is_empty());
}

#[test]
fn running_vms_are_stopped_for_keys_they_cannot_take_live() {
    let (mut d, mut l) = two_members();
    d.spec.policy.allow_restart = true;
    let mut i = inst("default", "vm");
    i.instance_type = InstanceType::VirtualMachine;
    i.config = cm(&[("limits.memory", "4GiB"), ("security.secureboot", "false"), ("raw.qemu", "-x")]);
    let mut li = live_of(&i, "n1");
    li.config.insert("raw.qemu".into(), "-y".into());
    put_inst(&mut l.objects, li);
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    assert_eq!(
        ids(&p),
        [
            "instances/stop/Instance/default/vm",
            "instances/update/Instance/default/vm",
            "instances/start/Instance/default/vm"
        ]
    );
}

#[test]
fn power_state_changes_are_start_and_stop() {
    let (mut d, mut l) = two_members();
    let a = inst("default", "a");
    let mut la = live_of(&a, "n1");
    la.status = Some("Stopped".into());
    let mut b = inst("default", "b");
    b.state = PowerState::Stopped;
    let mut lb = live_of(&b, "n1");
    lb.status = Some("Running".into());
    put_inst(&mut l.objects, la);
    put_inst(&mut l.objects, lb);
    put_inst(&mut d.objects, a);
    put_inst(&mut d.objects, b);
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["instances/start/Instance/default/a", "instances/stop/Instance/default/b"]);
    assert_eq!(p.counts().other, 2);
}

#[test]
fn type_or_image_changes_are_reported_never_done() {
    let (mut d, mut l) = two_members();
    let mut a = inst("default", "a");
    let la = live_of(&a, "n1");
    a.instance_type = InstanceType::VirtualMachine;
    a.config = cm(&[("limits.cpu", "4")]);
    let mut b = inst("default", "b");
    let mut lb = live_of(&b, "n1");
    lb.image = Some("alpine".into());
    b.image = Some("debian".into());
    put_inst(&mut l.objects, la);
    put_inst(&mut l.objects, lb);
    put_inst(&mut d.objects, a);
    put_inst(&mut d.objects, b);
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["instances/replace/Instance/default/a", "instances/replace/Instance/default/b"]);
    let s = step(&p, "instances/replace/Instance/default/a");
    assert_eq!(s.flags, vec![Flag::ReplaceNeeded]);
    assert_eq!(paths(s), ["type", "config.limits.cpu"]);
    assert!(!s.runs());
}

#[test]
fn another_alias_of_the_same_image_is_not_an_image_change() {
    let (mut d, mut l) = two_members();
    d.objects.images.insert(
        "default/debian".into(),
        Image {
            project: "default".into(),
            name: "debian".into(),
            aliases: vec![ImageAlias { name: "debian-12".into(), description: String::new() }],
            source: None,
            properties: ConfigMap::new(),
            public: false,
            auto_update: false,
            fingerprint: None,
        },
    );
    let i = inst("default", "a");
    let mut li = live_of(&i, "n1");
    li.image = Some("debian-12".into());
    put_inst(&mut l.objects, li);
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    assert!(!ids(&p).iter().any(|i| i.starts_with("instances/")), "{:?}", ids(&p));
}

#[test]
fn moves_are_held_unless_allowed_then_stop_move_start() {
    let (mut d, mut l) = two_members();
    let mut i = inst("default", "a");
    i.target = Some("n2".into());
    put_inst(&mut l.objects, live_of(&i, "n1"));
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["instances/move/Instance/default/a"]);
    assert_eq!(step(&p, "instances/move/Instance/default/a").flags, vec![Flag::MoveHeld]);

    d.spec.policy.allow_move = true;
    let p = plan(&d, &l);
    assert_eq!(
        ids(&p),
        [
            "instances/stop/Instance/default/a",
            "instances/move/Instance/default/a",
            "instances/start/Instance/default/a"
        ]
    );
    let mv = step(&p, "instances/move/Instance/default/a");
    assert_eq!(mv.changes[0].after, Some(json!("n2")));
    assert_eq!(mv.depends_on, vec!["instances/stop/Instance/default/a"]);
}

#[test]
fn group_targets_only_move_instances_outside_the_group() {
    let (mut d, mut l) = two_members();
    d.objects.groups.insert("edge".into(), ClusterGroup { name: "edge".into(), ..Default::default() });
    d.objects.members.get_mut("n2").unwrap().groups.push("edge".into());
    let mut a = inst("default", "a");
    a.target = Some("@edge".into());
    let mut b = inst("default", "b");
    b.target = Some("@edge".into());
    put_inst(&mut l.objects, live_of(&a, "n2"));
    put_inst(&mut l.objects, live_of(&b, "n1"));
    put_inst(&mut d.objects, a);
    put_inst(&mut d.objects, b);
    let p = plan(&d, &l);
    let inst_ids: Vec<_> = ids(&p).into_iter().filter(|i| i.starts_with("instances/")).collect();
    assert_eq!(inst_ids, ["instances/move/Instance/default/b"]);
}

#[test]
fn instances_on_offline_members_are_blocked() {
    let (mut d, mut l) = two_members();
    l.objects.members.get_mut("n1").unwrap().status = Some("Offline".into());
    let mut i = inst("default", "a");
    i.config = cm(&[("limits.cpu", "2")]);
    put_inst(&mut l.objects, live_of(&inst("default", "a"), "n1"));
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    let s = step(&p, "instances/update/Instance/default/a");
    assert_eq!(blocked_reason(s), Some("member `n1`, where it lives, is offline"));
}

#[test]
fn creating_on_an_evacuated_member_is_blocked() {
    let (mut d, mut l) = two_members();
    l.objects.members.get_mut("n2").unwrap().status = Some("Evacuated".into());
    d.objects.members.get_mut("n2").unwrap().ensure = MemberEnsure::Evacuated;
    let mut i = inst("default", "a");
    i.target = Some("n2".into());
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    let s = step(&p, "instances/create/Instance/default/a");
    assert_eq!(blocked_reason(s), Some("member `n2` is to be evacuated"));
}

// -- server config ----------------------------------------------------------------

#[test]
fn server_config_is_authoritative_cluster_wide_and_per_member_for_local_keys() {
    let (mut d, mut l) = two_members();
    d.spec.config = cm(&[("images.auto_update_interval", "12"), ("core.trust_password", "s3cret")]);
    l.objects.server_config = cm(&[
        ("images.auto_update_interval", "6"),
        ("cluster.offline_threshold", "30"),
        ("core.https_address", ":8443"),
        ("core.trust_password", "true"),
    ]);
    l.etags.insert("Server".into(), "srv".into());
    d.objects.members.get_mut("n1").unwrap().server_config = cm(&[("core.metrics_address", ":9100")]);
    l.objects.members.get_mut("n1").unwrap().server_config = cm(&[("core.https_address", "10.0.0.1:8443")]);
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["server_config/update/Cluster/c", "server_config/update/Member/n1"]);
    let s = step(&p, "server_config/update/Cluster/c");
    assert_eq!(paths(s), ["config.cluster.offline_threshold", "config.images.auto_update_interval"]);
    assert_eq!(s.etag.as_deref(), Some("srv"));
    let m = step(&p, "server_config/update/Member/n1");
    assert_eq!(paths(m), ["server_config.core.metrics_address"]);
}

#[test]
fn cluster_https_address_cannot_change() {
    let (mut d, mut l) = two_members();
    d.objects.members.get_mut("n1").unwrap().server_config = cm(&[("cluster.https_address", "10.0.0.9:8443")]);
    l.objects.members.get_mut("n1").unwrap().server_config = cm(&[("cluster.https_address", "10.0.0.1:8443")]);
    let p = plan(&d, &l);
    assert!(blocked_reason(step(&p, "server_config/update/Member/n1")).unwrap().contains("cannot change"));
}

// -- projects, pools, networks, profiles -----------------------------------------------

#[test]
fn projects_keep_lxd_feature_defaults_and_refuse_feature_changes_in_use() {
    let mut d = desired();
    let mut l = live();
    d.objects.projects.insert("web".into(), Project { name: "web".into(), ..Default::default() });
    l.objects.projects.insert(
        "web".into(),
        Project {
            name: "web".into(),
            config: owned(cm(&[("features.images", "true"), ("features.profiles", "true")])),
            ..Default::default()
        },
    );
    assert!(plan(&d, &l).is_empty());

    d.objects.projects.get_mut("web").unwrap().config = cm(&[("features.images", "false")]);
    put_inst(&mut l.objects, live_of(&inst("web", "w1"), "n1"));
    let p = plan(&d, &l);
    let s = step(&p, "projects/update/Project/web");
    assert_eq!(paths(s), ["config.features.images"]);
    assert!(blocked_reason(s).unwrap().contains("Instance/w1"), "{:?}", s.flags);
}

#[test]
fn pools_compare_member_config_and_keep_lxd_filled_keys() {
    let (mut d, mut l) = two_members();
    let mut dp = StoragePool {
        name: "local".into(),
        driver: "zfs".into(),
        config: cm(&[("volume.size", "10GiB")]),
        ..Default::default()
    };
    dp.member_config.insert("n1".into(), cm(&[("source", "/dev/sdb")]));
    dp.member_config.insert("n2".into(), cm(&[("source", "/dev/sdc")]));
    let mut lp = dp.clone();
    lp.config =
        owned(cm(&[("volume.size", "10GiB"), ("zfs.pool_name", "local"), ("volatile.initial_source", "/dev/sdb")]));
    lp.member_config.insert("n2".into(), cm(&[("source", "/dev/sdd"), ("zfs.pool_name", "local")]));
    lp.status = Some("Created".into());
    d.objects.storage_pools.insert("local".into(), dp.clone());
    l.objects.storage_pools.insert("local".into(), lp.clone());
    let p = plan(&d, &l);
    let s = step(&p, "storage_pools_and_networks/update/StoragePool/local");
    assert_eq!(paths(s), ["member_config.n2.source"]);

    let mut lp2 = lp;
    lp2.driver = "dir".into();
    l.objects.storage_pools.insert("local".into(), lp2);
    let p = plan(&d, &l);
    let s = step(&p, "storage_pools_and_networks/replace/StoragePool/local");
    assert_eq!(s.flags, vec![Flag::ReplaceNeeded]);
}

#[test]
fn bridges_keep_generated_addresses_and_pending_networks_are_finished() {
    let mut d = desired();
    let mut l = live();
    let dn = Network {
        project: "default".into(),
        name: "br0".into(),
        network_type: "bridge".into(),
        config: cm(&[("ipv4.dhcp", "true")]),
        ..Default::default()
    };
    let mut ln = dn.clone();
    ln.config = owned(cm(&[("ipv4.dhcp", "true"), ("ipv4.address", "10.1.2.1/24"), ("ipv6.address", "fd42::1/64")]));
    ln.status = Some("Created".into());
    d.objects.networks.insert("default/br0".into(), dn);
    l.objects.networks.insert("default/br0".into(), ln.clone());
    assert!(plan(&d, &l).is_empty());
    ln.status = Some("Errored".into());
    l.objects.networks.insert("default/br0".into(), ln);
    let p = plan(&d, &l);
    let s = step(&p, "storage_pools_and_networks/create/Network/default/br0");
    assert!(s.reason.contains("Errored"));
}

#[test]
fn the_default_profile_of_a_new_project_is_filled_not_created() {
    let mut d = desired();
    d.objects.projects.insert("web".into(), Project { name: "web".into(), ..Default::default() });
    d.objects
        .storage_pools
        .insert("local".into(), StoragePool { name: "local".into(), driver: "dir".into(), ..Default::default() });
    let mut devices = Devices::new();
    devices.insert("root".into(), cm(&[("type", "disk"), ("path", "/"), ("pool", "local")]));
    d.objects.profiles.insert(
        "web/default".into(),
        Profile { project: "web".into(), name: "default".into(), devices, ..Default::default() },
    );
    let p = plan(&d, &live());
    let s = step(&p, "profiles/update/Profile/web/default");
    assert_eq!(s.depends_on, ["projects/create/Project/web", "storage_pools_and_networks/create/StoragePool/local"]);
    assert!(s.desired.as_ref().unwrap()["config"].get(OWNER_KEY).is_none());
}

#[test]
fn profile_changes_needing_a_restart_restart_the_instances_using_it() {
    let (mut d, mut l) = two_members();
    d.spec.policy.allow_restart = true;
    let prof = Profile {
        project: "default".into(),
        name: "hardened".into(),
        config: cm(&[("security.privileged", "false")]),
        ..Default::default()
    };
    let mut lprof = prof.clone();
    lprof.config = owned(cm(&[("security.privileged", "true")]));
    d.objects.profiles.insert("default/hardened".into(), prof);
    l.objects.profiles.insert("default/hardened".into(), lprof);
    let mut a = inst("default", "a");
    a.profiles = vec!["default".into(), "hardened".into()];
    let mut b = a.clone();
    b.name = "b".into();
    b.state = PowerState::Stopped;
    put_inst(&mut l.objects, live_of(&a, "n1"));
    put_inst(&mut l.objects, live_of(&b, "n1"));
    put_inst(&mut d.objects, a);
    put_inst(&mut d.objects, b);
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["profiles/update/Profile/default/hardened", "instances/restart/Instance/default/a"]);
    assert_eq!(step(&p, "profiles/update/Profile/default/hardened").flags, vec![Flag::RestartNeeded]);
    assert_eq!(
        step(&p, "instances/restart/Instance/default/a").depends_on,
        ["profiles/update/Profile/default/hardened"]
    );

    d.spec.policy.allow_restart = false;
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["profiles/update/Profile/default/hardened"]);
    assert_eq!(step(&p, "profiles/update/Profile/default/hardened").flags, vec![Flag::RestartHeld]);
}

// -- images ----------------------------------------------------------------------------

fn image(name: &str, aliases: &[&str]) -> Image {
    Image {
        project: "default".into(),
        name: name.into(),
        aliases: aliases.iter().map(|a| ImageAlias { name: a.to_string(), description: String::new() }).collect(),
        source: Some(ImageSource {
            server: Some("https://images.example.org".into()),
            protocol: ImageProtocol::Simplestreams,
            alias: Some("debian/12".into()),
            fingerprint: None,
            image_type: InstanceType::Container,
            certificate: None,
            file: None,
        }),
        properties: ConfigMap::new(),
        public: false,
        auto_update: true,
        fingerprint: None,
    }
}

/// Live entries of an image: one per alias, sharing the fingerprint.
fn live_image(objs: &mut ClusterObjects, di: &Image, fp: &str, extra_props: &[(&str, &str)]) {
    let names: Vec<String> =
        std::iter::once(di.name.clone()).chain(di.aliases.iter().map(|a| a.name.clone())).collect();
    for n in &names {
        let mut li = di.clone();
        li.name = n.clone();
        li.source = None;
        li.fingerprint = Some(fp.into());
        li.aliases = names.iter().map(|a| ImageAlias { name: a.clone(), description: String::new() }).collect();
        li.properties.insert(IMAGE_OWNER_PROPERTY.into(), "c".into());
        for (k, v) in extra_props {
            li.properties.insert(k.to_string(), v.to_string());
        }
        objs.images.insert(pkey(&di.project, n), li);
    }
}

#[test]
fn images_match_by_alias_and_leave_their_own_properties() {
    let mut d = desired();
    let mut l = live();
    let di = image("debian", &["debian-12"]);
    live_image(&mut l.objects, &di, &"aa".repeat(32), &[("os", "Debian"), ("release", "12")]);
    d.objects.images.insert("default/debian".into(), di.clone());
    assert!(plan(&d, &l).is_empty());

    let mut di2 = di.clone();
    di2.aliases.push(ImageAlias { name: "stable".into(), description: String::new() });
    di2.public = true;
    d.objects.images.insert("default/debian".into(), di2);
    let p = plan(&d, &l);
    let s = step(&p, "images/update/Image/default/debian");
    assert_eq!(paths(s), ["public", "aliases"]);
    assert_eq!(s.changes[1].after, Some(json!(["debian", "debian-12", "stable"])));
}

#[test]
fn pinned_fingerprints_refresh_and_creates_mark_ownership() {
    let mut d = desired();
    let mut l = live();
    let mut di = image("debian", &[]);
    live_image(&mut l.objects, &di, &"aa".repeat(32), &[]);
    di.source.as_mut().unwrap().fingerprint = Some("bbbb".into());
    d.objects.images.insert("default/debian".into(), di);
    d.objects.images.insert("default/alpine".into(), image("alpine", &[]));
    let p = plan(&d, &l);
    let r = step(&p, "images/refresh/Image/default/debian");
    assert_eq!(r.changes[0].path, "fingerprint");
    let c = step(&p, "images/create/Image/default/alpine");
    assert_eq!(c.desired.as_ref().unwrap()["properties"][IMAGE_OWNER_PROPERTY], "c");
}

#[test]
fn pruned_images_are_deleted_once_whatever_their_alias_count() {
    let mut d = desired();
    d.spec.policy.prune = true;
    let mut l = live();
    live_image(&mut l.objects, &image("old", &["old-1", "old-2"]), &"cc".repeat(32), &[]);
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["prune/delete/Image/default/old"]);
}

// -- members ------------------------------------------------------------------------------

#[test]
fn new_members_join_with_their_address_or_are_blocked() {
    let (mut d, l) = two_members();
    d.objects.members.insert("n3".into(), Member { address: Some("10.0.0.3:8443".into()), ..member("n3") });
    d.objects.members.insert("n4".into(), member("n4"));
    let mut pool = StoragePool { name: "local".into(), driver: "zfs".into(), ..Default::default() };
    pool.member_config.insert("n3".into(), cm(&[("source", "/dev/sdb")]));
    d.objects.storage_pools.insert("local".into(), pool);
    let p = plan(&d, &l);
    let j = step(&p, "members/join/Member/n3");
    assert!(j.runs());
    assert_eq!(
        j.desired.as_ref().unwrap()["member_config"],
        json!([{"entity": "storage-pool", "name": "local", "key": "source", "value": "/dev/sdb"}])
    );
    assert_eq!(j.depends_on, ["storage_pools_and_networks/create/StoragePool/local"]);
    // The joining member's pool config goes with the join, not with the pool.
    let pc = step(&p, "storage_pools_and_networks/create/StoragePool/local");
    assert!(pc.desired.as_ref().unwrap().get("member_config").is_none());
    assert!(blocked_reason(step(&p, "members/join/Member/n4")).unwrap().contains("no `address`"));
}

#[test]
fn members_are_updated_evacuated_and_restored() {
    let (mut d, mut l) = two_members();
    let dm = d.objects.members.get_mut("n1").unwrap();
    dm.roles = vec!["event-hub".into()];
    dm.ensure = MemberEnsure::Evacuated;
    l.objects.members.get_mut("n1").unwrap().roles = vec!["database".into()];
    l.objects.members.get_mut("n1").unwrap().database_roles = vec!["database".into()];
    l.objects.members.get_mut("n2").unwrap().status = Some("Evacuated".into());
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["members/update/Member/n1", "members/evacuate/Member/n1", "members/restore/Member/n2"]);
    let u = step(&p, "members/update/Member/n1");
    assert_eq!(u.changes[0].before, Some(json!([])));
    assert_eq!(u.desired.as_ref().unwrap()["database_roles"], json!(["database"]));
}

#[test]
fn removing_a_member_that_holds_instances_needs_evacuation() {
    let (mut d, mut l) = two_members();
    d.objects.members.get_mut("n2").unwrap().ensure = MemberEnsure::Absent;
    let i = inst("default", "a");
    put_inst(&mut l.objects, live_of(&i, "n2"));
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    let r = step(&p, "members/remove_member/Member/n2");
    assert_eq!(
        blocked_reason(r),
        Some("member still holds instances: default/a; set evacuate: true to move them first")
    );

    d.objects.members.get_mut("n2").unwrap().evacuate = true;
    let p = plan(&d, &l);
    let r = step(&p, "members/remove_member/Member/n2");
    assert!(r.runs());
    assert_eq!(r.depends_on, ["members/evacuate/Member/n2"]);
    assert_eq!(p.counts().delete, 1);
}

#[test]
fn the_last_member_is_never_removed() {
    let mut d = desired();
    let mut l = live();
    d.objects.members.insert("n1".into(), Member { ensure: MemberEnsure::Absent, ..member("n1") });
    l.objects.members.insert("n1".into(), live_member("n1", "Online"));
    let p = plan(&d, &l);
    assert!(blocked_reason(step(&p, "members/remove_member/Member/n1")).unwrap().contains("last member"));
}

#[test]
fn removing_every_member_blocks_the_evacuations_that_prepare_it_too() {
    let (mut d, mut l) = two_members();
    for n in ["n1", "n2"] {
        let m = d.objects.members.get_mut(n).unwrap();
        m.ensure = MemberEnsure::Absent;
        m.evacuate = true;
    }
    let i = inst("default", "a");
    put_inst(&mut l.objects, live_of(&i, "n2"));
    put_inst(&mut d.objects, i);
    let p = plan(&d, &l);
    for id in ["members/evacuate/Member/n2", "members/remove_member/Member/n1", "members/remove_member/Member/n2"] {
        assert!(blocked_reason(step(&p, id)).unwrap().contains("last member"), "{id}");
    }
}

#[test]
fn undeclared_members_are_pruned_only_when_owned() {
    let (mut d, mut l) = two_members();
    d.spec.policy.prune = true;
    d.objects.members.remove("n2");
    l.objects.members.insert("n3".into(), live_member("n3", "Online"));
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["prune/remove_member/Member/n2"]);
    assert!(p.warnings.iter().any(|w| w == "not managed: Member/n3 (no owner marker)"), "{:?}", p.warnings);
}

// -- trust ---------------------------------------------------------------------------------

fn cert(name: &str, fp: &str) -> Certificate {
    Certificate {
        name: name.into(),
        certificate: format!("-----BEGIN CERTIFICATE-----\n{fp}\n-----END CERTIFICATE-----\n"),
        fingerprint: fp.into(),
        ..Default::default()
    }
}

#[test]
fn certificates_match_by_name_and_server_entries_are_left_alone() {
    let mut d = desired();
    d.spec.policy.prune = true;
    let mut l = live();
    let inv = "Certificate/ci,Certificate/gone";
    l.objects.server_config.insert(INVENTORY_KEY.into(), inv.into());
    let mut ci = cert("ci", "bb");
    ci.restricted = true;
    ci.projects = vec!["default".into()];
    d.objects.certificates.insert("ci".into(), ci);
    l.objects.certificates.insert("ci".into(), cert("ci", "aa"));
    l.objects.certificates.insert("gone".into(), cert("gone", "cc"));
    l.objects.certificates.insert("manual".into(), cert("manual", "dd"));
    l.objects
        .certificates
        .insert("node1".into(), Certificate { cert_type: CertificateType::Server, ..cert("node1", "ee") });
    let p = plan(&d, &l);
    assert_eq!(
        ids(&p),
        ["server_config/update/Cluster/c", "trust/update/Certificate/ci", "prune/delete/Certificate/gone"]
    );
    let u = step(&p, "trust/update/Certificate/ci");
    assert_eq!(paths(u), ["restricted", "projects", "fingerprint"]);
    assert!(u.reason.contains("from aa to bb"), "{}", u.reason);
    // The inventory drops what this plan deletes.
    let s = step(&p, "server_config/update/Cluster/c");
    assert_eq!(s.changes[0].after, Some(json!("Certificate/ci")));
    assert!(p.warnings.iter().any(|w| w.contains("Certificate/manual (not in the fleet's inventory)")));
    assert!(!p.warnings.iter().any(|w| w.contains("node1")));
}

#[test]
fn adopted_certificates_are_not_added_to_the_inventory() {
    let mut d = desired();
    let mut l = live();
    d.objects.certificates.insert("ci".into(), cert("ci", "aa"));
    d.objects.certificates.insert("new".into(), cert("new", "bb"));
    l.objects.certificates.insert("ci".into(), cert("ci", "aa"));
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["server_config/update/Cluster/c", "trust/create/Certificate/new"]);
    let s = step(&p, "server_config/update/Cluster/c");
    assert_eq!(s.changes[0].after, Some(json!("Certificate/new")));
}

#[test]
fn a_standalone_server_joins_nobody() {
    let mut d = desired();
    d.objects.members.insert("n1".into(), Member { address: Some("10.0.0.1:8443".into()), ..member("n1") });
    let p = plan(&d, &live());
    assert!(p.is_empty(), "{:?}", ids(&p));
    assert!(p.warnings[0].contains("standalone"));
}

#[test]
fn the_inventory_lists_declared_certificates_and_groups() {
    let mut d = desired();
    d.objects.certificates.insert("ci".into(), cert("ci", "bb"));
    d.objects.groups.insert("edge".into(), ClusterGroup { name: "edge".into(), ..Default::default() });
    let p = plan(&d, &live());
    let s = step(&p, "server_config/update/Cluster/c");
    assert_eq!(s.changes[0].path, format!("config.{INVENTORY_KEY}"));
    assert_eq!(s.changes[0].after, Some(json!("Certificate/ci,ClusterGroup/edge")));
}

// -- snap --------------------------------------------------------------------------------------

#[test]
fn snap_changes_roll_one_member_at_a_time_and_never_downgrade() {
    let (mut d, mut l) = two_members();
    d.spec.snap = Some(SnapDefaults {
        channel: Some("5.21/stable".into()),
        config: cm(&[("daemon.debug", "false"), ("lxcfs.loadavg", "true")]),
    });
    d.objects.snap.insert(
        "n2".into(),
        SnapSettings { member: "n2".into(), config: cm(&[("daemon.debug", "true")]), ..Default::default() },
    );
    for (m, ch) in [("n1", "5.0/stable"), ("n2", "latest/stable")] {
        l.objects.snap.insert(
            m.into(),
            SnapSettings {
                member: m.into(),
                channel: Some(ch.into()),
                config: cm(&[("daemon.debug", "false"), ("lxcfs.loadavg", "true"), ("ui.enable", "true")]),
                ..Default::default()
            },
        );
    }
    let p = plan(&d, &l);
    assert_eq!(ids(&p), ["snap/update/Snap/n1", "snap/update/Snap/n2"]);
    let n1 = step(&p, "snap/update/Snap/n1");
    assert_eq!(paths(n1), ["channel"]);
    assert!(n1.runs());
    let n2 = step(&p, "snap/update/Snap/n2");
    assert_eq!(paths(n2), ["channel", "config.daemon.debug"]);
    assert_eq!(n2.depends_on, ["snap/update/Snap/n1"]);
    assert!(blocked_reason(n2).unwrap().contains("downgrade LXD from track latest to 5.21"));
    assert!(n2.flags.contains(&Flag::ReloadNeeded));
}

#[test]
fn lxcfs_keys_need_a_reboot() {
    let (mut d, mut l) = two_members();
    d.objects.snap.insert(
        "n1".into(),
        SnapSettings { member: "n1".into(), config: cm(&[("lxcfs.cfs", "true")]), ..Default::default() },
    );
    l.objects.snap.insert("n1".into(), SnapSettings { member: "n1".into(), ..Default::default() });
    let p = plan(&d, &l);
    assert_eq!(step(&p, "snap/update/Snap/n1").flags, vec![Flag::RebootNeeded]);
}

#[test]
fn snap_tracks_compare_as_versions() {
    use super::diff::track_order;
    assert_eq!(track_order("5.0/stable", "5.21/stable"), Some(std::cmp::Ordering::Less));
    assert_eq!(track_order("5.21/edge", "5.21/stable"), Some(std::cmp::Ordering::Equal));
    assert_eq!(track_order("stable", "5.21/stable"), Some(std::cmp::Ordering::Greater));
    assert_eq!(track_order("weird", "5.0"), None);
}

// -- prune and guards ------------------------------------------------------------------------------

/// Live objects owned by the fleet that it no longer declares, plus one not owned.
fn leftovers() -> (DesiredCluster, LiveState) {
    let (mut d, mut l) = two_members();
    l.objects
        .projects
        .insert("old".into(), Project { name: "old".into(), config: owned(ConfigMap::new()), ..Default::default() });
    l.objects.projects.insert("default".into(), Project { name: "default".into(), ..Default::default() });
    l.objects.profiles.insert(
        "old/web".into(),
        Profile { project: "old".into(), name: "web".into(), config: owned(ConfigMap::new()), ..Default::default() },
    );
    l.objects
        .profiles
        .insert("old/default".into(), Profile { project: "old".into(), name: "default".into(), ..Default::default() });
    let mut i = inst("old", "w1");
    i.profiles = vec!["default".into(), "web".into()];
    put_inst(&mut l.objects, live_of(&i, "n1"));
    let mut stopped = inst("old", "w2");
    stopped.state = PowerState::Stopped;
    put_inst(&mut l.objects, live_of(&stopped, "n2"));
    put_inst(&mut l.objects, Instance { location: Some("n1".into()), ..inst("default", "scratch") });
    d.spec.policy.prune = true;
    (d, l)
}

#[test]
fn prune_deletes_owned_objects_in_reverse_dependency_order() {
    let (d, l) = leftovers();
    let p = plan(&d, &l);
    assert_eq!(
        ids(&p),
        [
            "prune/stop/Instance/old/w1",
            "prune/delete/Instance/old/w1",
            "prune/delete/Instance/old/w2",
            "prune/delete/Profile/old/web",
            "prune/delete/Project/old"
        ]
    );
    assert_eq!(step(&p, "prune/delete/Profile/old/web").depends_on, ["prune/delete/Instance/old/w1"]);
    assert_eq!(
        step(&p, "prune/delete/Project/old").depends_on,
        ["prune/delete/Instance/old/w1", "prune/delete/Instance/old/w2", "prune/delete/Profile/old/web"]
    );
    assert!(p.steps().all(Step::runs));
    assert_eq!(p.warnings, ["not managed: Instance/default/scratch (no owner marker)"]);
}

#[test]
fn without_prune_owned_leftovers_are_only_reported() {
    let (mut d, l) = leftovers();
    d.spec.policy.prune = false;
    let p = plan(&d, &l);
    assert!(p.is_empty());
    assert!(p.warnings.iter().any(|w| w.starts_with("not declared: Instance/old/w1 is owned by this fleet")));
}

#[test]
fn incomplete_kinds_are_never_pruned() {
    let (d, mut l) = leftovers();
    l.incomplete.push(Incomplete { kind: Kind::Instance, reason: "member n2 unreachable".into() });
    let p = plan(&d, &l);
    assert!(!ids(&p).iter().any(|i| i.contains("Instance/")), "{:?}", ids(&p));
    // Project and profile deletes are blocked: their instances are still there.
    assert!(blocked_reason(step(&p, "prune/delete/Profile/old/web")).unwrap().contains("old/w1"));
    assert!(blocked_reason(step(&p, "prune/delete/Project/old")).is_some());
    assert!(p.warnings[0].contains("read incompletely"));
}

#[test]
fn too_many_deletions_block_the_whole_plan() {
    let (mut d, l) = leftovers();
    d.spec.policy.max_deletions = 3;
    let p = plan(&d, &l);
    assert_eq!(p.blocked.as_deref(), Some("refusing: this plan deletes 4 objects, more than policy.max_deletions = 3"));
    assert_eq!(p.counts().delete, 4);
}

#[test]
fn plans_are_deterministic_and_round_trip() {
    let (d, l) = leftovers();
    let a = plan(&d, &l);
    let b = plan(&d, &l);
    assert_eq!(a.to_json(), b.to_json());
    assert_eq!(Plan::from_json(&a.to_json()).unwrap(), a);
}

#[test]
fn instances_on_an_offline_member_are_neither_compared_nor_pruned() {
    let mut d = desired();
    d.spec.policy.prune = true;
    let mut l = live();
    for (m, status) in [("n1", "Online"), ("n2", "Offline")] {
        d.objects.members.insert(m.into(), member(m));
        l.objects.members.insert(m.into(), live_member(m, status));
    }
    l.incomplete.push(Incomplete { kind: Kind::Instance, reason: "member `n2` is offline".into() });
    let declared = Instance { target: Some("n2".into()), ..inst("default", "a") };
    put_inst(&mut d.objects, declared.clone());
    // What LXD lists for instances on an offline member: a stub with no config.
    let stub = |name: &str| Instance {
        profiles: vec![],
        config: ConfigMap::new(),
        image: None,
        status: Some("Error".into()),
        location: Some("n2".into()),
        ..inst("default", name)
    };
    put_inst(&mut l.objects, stub("a"));
    put_inst(&mut l.objects, stub("gone")); // no longer declared, owner unknown
    let p = plan(&d, &l);
    assert!(p.is_empty(), "{:?}", ids(&p));
    assert_eq!(p.incomplete, ["member `n2` is offline"]);
    assert!(
        p.warnings.iter().any(|w| w.contains("member `n2` is offline: 2 instance(s)") && w.contains("default/gone")),
        "{:?}",
        p.warnings
    );
    assert!(!p.warnings.iter().any(|w| w.starts_with("not managed")), "{:?}", p.warnings);
    assert!(super::render::summary(&p).contains("could not be read completely"));

    // The same stub on a member that answers is compared as usual.
    l.objects.members.insert("n2".into(), live_member("n2", "Online"));
    l.incomplete.clear();
    assert!(!plan(&d, &l).is_empty());
}

#[test]
fn the_reconcilers_own_certificate_is_neither_reported_nor_pruned() {
    let mut d = desired();
    d.spec.policy.prune = true;
    let mut l = live();
    // Even when an old inventory lists it as owned.
    l.objects.server_config.insert(INVENTORY_KEY.into(), "Certificate/me".into());
    l.objects.certificates.insert("me".into(), cert("me", "aa"));
    l.objects.certificates.insert("manual".into(), cert("manual", "dd"));
    l.client_fingerprint = Some("aa".into());
    let p = plan(&d, &l);
    assert!(!ids(&p).iter().any(|i| i.contains("Certificate/me")), "{:?}", ids(&p));
    assert!(!p.warnings.iter().any(|w| w.contains("Certificate/me")), "{:?}", p.warnings);
    assert!(p.warnings.iter().any(|w| w.contains("Certificate/manual")), "{:?}", p.warnings);
    // Without knowing who it is, the same certificate is an owned leftover.
    l.client_fingerprint = None;
    assert!(ids(&plan(&d, &l)).contains(&"prune/delete/Certificate/me"));
}
