//! Property tests of the planner over generated fleets:
//! - a live state equal to the desired one (plus everything LXD adds by itself:
//!   owner markers, volatile and image keys, feature defaults, generated addresses,
//!   member-local keys, server certificates) plans to nothing;
//! - plans are deterministic;
//! - every dependency points at an earlier step, ids are unique, and plans
//!   round-trip through JSON.

use super::model::*;
use super::plan;
use crate::model::*;
use proptest::prelude::*;

/// Draws choices from a list of random numbers, so one proptest input builds a
/// whole fleet (and shrinking towards zeros gives smaller fleets).
struct Dice<'a> {
    v: &'a [u32],
    i: usize,
}

impl Dice<'_> {
    fn n(&mut self, bound: usize) -> usize {
        let x = self.v.get(self.i).copied().unwrap_or(0);
        self.i += 1;
        x as usize % bound.max(1)
    }
    fn b(&mut self) -> bool {
        self.n(2) == 1
    }
    fn pick<'s>(&mut self, items: &[&'s str]) -> &'s str {
        items[self.n(items.len())]
    }
    fn config(&mut self, keys: &[&str], max: usize) -> ConfigMap {
        const VALUES: &[&str] = &["1", "2", "true", "false", "line one\nline two\n"];
        let mut c = ConfigMap::new();
        for _ in 0..self.n(max + 1) {
            let k = self.pick(keys);
            let v = self.pick(VALUES);
            c.insert(k.to_string(), v.to_string());
        }
        c
    }
}

const INSTANCE_KEYS: &[&str] =
    &["limits.cpu", "limits.memory", "user.role", "raw.lxc", "security.privileged", "boot.autostart"];
const MEMBERS: &[&str] = &["m0", "m1", "m2", "m3"];
const PROJECTS: &[&str] = &["default", "p1", "p2"];

fn desired(d: &mut Dice) -> DesiredCluster {
    let mut o = ClusterObjects::default();
    let n_members = 1 + d.n(MEMBERS.len());
    let with_group = d.b();
    if with_group {
        o.groups.insert("g1".into(), ClusterGroup { name: "g1".into(), description: "edge".into(), members: vec![] });
    }
    for m in &MEMBERS[..n_members] {
        let mut groups = vec!["default".to_string()];
        if with_group && d.b() {
            groups.push("g1".into());
        }
        let ensure = if d.n(5) == 0 { MemberEnsure::Evacuated } else { MemberEnsure::Present };
        o.members.insert(
            m.to_string(),
            Member {
                name: m.to_string(),
                description: String::new(),
                address: Some(format!("10.0.0.{}:8443", d.n(200))),
                roles: if d.b() { vec!["event-hub".into()] } else { vec![] },
                failure_domain: d.pick(&["default", "rack1"]).into(),
                config: d.config(&["scheduler.instance", "user.rack"], 1),
                groups,
                join_fingerprint: None,
                server_config: d.config(&["core.metrics_address", "core.bgp_address"], 1),
                ensure,
                evacuate: false,
                status: None,
                database_roles: vec![],
            },
        );
    }
    for p in &PROJECTS[1..] {
        if d.b() {
            let mut config = ConfigMap::new();
            if d.b() {
                config.insert("features.profiles".into(), d.pick(&["true", "false"]).into());
            }
            if d.b() {
                config.insert("limits.instances".into(), "10".into());
            }
            o.projects.insert(p.to_string(), Project { name: p.to_string(), description: String::new(), config });
        }
    }
    let projects: Vec<String> = std::iter::once("default".to_string()).chain(o.projects.keys().cloned()).collect();
    for name in ["local", "fast"] {
        if d.b() {
            let mut member_config = std::collections::BTreeMap::new();
            for m in o.members.keys() {
                if d.b() {
                    member_config.insert(m.clone(), [("source".to_string(), format!("/dev/sd{}", d.n(4)))].into());
                }
            }
            o.storage_pools.insert(
                name.into(),
                StoragePool {
                    name: name.into(),
                    description: String::new(),
                    driver: d.pick(&["dir", "zfs"]).into(),
                    config: d.config(&["volume.size", "rsync.bwlimit"], 1),
                    member_config,
                    status: None,
                },
            );
        }
    }
    if d.b() {
        o.networks.insert(
            "default/br0".into(),
            Network {
                project: "default".into(),
                name: "br0".into(),
                description: String::new(),
                network_type: "bridge".into(),
                config: d.config(&["ipv4.dhcp", "dns.domain"], 1),
                member_config: Default::default(),
                status: None,
            },
        );
    }
    for _ in 0..d.n(4) {
        let project = projects[d.n(projects.len())].clone();
        let name = d.pick(&["default", "base", "web"]).to_string();
        let mut devices = Devices::new();
        if let Some(pool) = o.storage_pools.keys().next() {
            if d.b() {
                devices.insert(
                    "root".into(),
                    [("type", "disk"), ("path", "/"), ("pool", pool.as_str())]
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                );
            }
        }
        o.profiles.insert(
            pkey(&project, &name),
            Profile { project, name, description: String::new(), config: d.config(INSTANCE_KEYS, 2), devices },
        );
    }
    for _ in 0..d.n(3) {
        let project = projects[d.n(projects.len())].clone();
        let name = d.pick(&["debian", "alpine"]).to_string();
        let aliases = if d.b() {
            vec![ImageAlias { name: format!("{name}-stable"), description: String::new() }]
        } else {
            vec![]
        };
        o.images.insert(
            pkey(&project, &name),
            Image {
                project,
                name,
                aliases,
                source: Some(ImageSource {
                    server: Some("https://images.example.org".into()),
                    protocol: ImageProtocol::Simplestreams,
                    alias: Some("x/1".into()),
                    fingerprint: None,
                    image_type: InstanceType::Container,
                    certificate: None,
                    file: None,
                }),
                properties: d.config(&["description"], 1),
                public: d.b(),
                auto_update: d.b(),
                fingerprint: None,
            },
        );
    }
    let members: Vec<String> = o.members.keys().cloned().collect();
    let g1_used = o.members.values().any(|m| m.groups.iter().any(|g| g == "g1"));
    for n in 0..d.n(12) {
        let project = projects[d.n(projects.len())].clone();
        let pp = match o.projects.get(&project).and_then(|p| p.config.get("features.profiles")) {
            Some(v) if v == "false" => "default".to_string(),
            _ => project.clone(),
        };
        let mut profiles = vec!["default".to_string()];
        for p in ["base", "web"] {
            if o.profiles.contains_key(&pkey(&pp, p)) && d.b() {
                profiles.push(p.into());
            }
        }
        let image = o
            .images
            .values()
            .filter(|i| i.project == project || (project != "default" && i.project == "default"))
            .map(|i| i.name.clone())
            .next()
            .filter(|_| d.b());
        let target = match d.n(3) {
            0 => None,
            1 => Some(members[d.n(members.len())].clone()),
            _ if g1_used => Some("@g1".to_string()),
            _ => Some("@default".to_string()),
        };
        let mut devices = Devices::new();
        if o.networks.contains_key("default/br0") && d.b() {
            devices.insert(
                "eth0".into(),
                [("type", "nic"), ("network", "br0"), ("name", "eth0")]
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            );
        }
        let name = format!("i{n}");
        o.instances.insert(
            pkey(&project, &name),
            Instance {
                project,
                name,
                instance_type: if d.n(4) == 0 { InstanceType::VirtualMachine } else { InstanceType::Container },
                description: if d.b() { "web".into() } else { String::new() },
                image,
                profiles,
                config: d.config(INSTANCE_KEYS, 3),
                devices,
                ephemeral: false,
                target,
                state: if d.n(3) == 0 { PowerState::Stopped } else { PowerState::Running },
                location: None,
                status: None,
                base_image: None,
            },
        );
    }
    for name in ["ci", "metrics"] {
        if d.b() {
            o.certificates.insert(
                name.into(),
                Certificate {
                    name: name.into(),
                    cert_type: if name == "metrics" { CertificateType::Metrics } else { CertificateType::Client },
                    restricted: name == "ci",
                    projects: if name == "ci" { vec!["default".into()] } else { vec![] },
                    certificate: format!("PEM-{name}\n"),
                    certificate_file: None,
                    fingerprint: format!("{name:0>64}"),
                },
            );
        }
    }
    for m in o.members.keys() {
        if d.b() {
            o.snap.insert(
                m.clone(),
                SnapSettings {
                    member: m.clone(),
                    channel: None,
                    config: d.config(&["daemon.debug", "lxcfs.loadavg", "ui.enable"], 2),
                    revision: None,
                    pending: ConfigMap::new(),
                },
            );
        }
    }
    let snap = d.b().then(|| SnapDefaults {
        channel: Some(d.pick(&["5.0/stable", "5.21/stable"]).into()),
        config: d.config(&["daemon.debug", "criu.enable"], 1),
    });
    DesiredCluster {
        spec: ClusterSpec {
            name: "c".into(),
            description: String::new(),
            endpoints: vec!["https://10.0.0.1:8443".into()],
            fingerprint: "0".repeat(64),
            credentials: "c".into(),
            config: d.config(&["images.auto_update_interval", "cluster.offline_threshold"], 2),
            policy: Policy {
                prune: d.b(),
                allow_restart: d.b(),
                allow_move: d.b(),
                max_deletions: d.n(20) as u32,
                ..Policy::default()
            },
            snap,
        },
        objects: o,
    }
}

/// The live state of a cluster that matches `dc` exactly, with everything LXD adds.
fn live_equal(dc: &DesiredCluster, d: &mut Dice) -> LiveState {
    let o = &dc.objects;
    let cluster = dc.spec.name.as_str();
    let own = |c: &ConfigMap| {
        let mut c = c.clone();
        c.insert(OWNER_KEY.into(), cluster.into());
        c
    };
    let mut l = ClusterObjects { server_config: dc.spec.config.clone(), ..Default::default() };
    l.server_config.insert("core.https_address".into(), "10.0.0.1:8443".into());
    let mut inventory: Vec<String> = o.certificates.keys().map(|n| format!("Certificate/{n}")).collect();
    inventory.extend(o.groups.keys().filter(|g| *g != "default").map(|g| format!("ClusterGroup/{g}")));
    inventory.sort();
    if !inventory.is_empty() {
        l.server_config.insert(INVENTORY_KEY.into(), inventory.join(","));
    }
    for g in o.groups.values() {
        l.groups.insert(g.name.clone(), g.clone());
    }
    l.groups.insert("default".into(), ClusterGroup { name: "default".into(), ..Default::default() });
    for m in o.members.values() {
        let mut lm = m.clone();
        lm.address = None;
        lm.ensure = MemberEnsure::Present;
        lm.status = Some(if m.ensure == MemberEnsure::Evacuated { "Evacuated" } else { "Online" }.into());
        if d.b() {
            lm.database_roles = vec!["database".into()];
            lm.roles.push("database".into());
        }
        lm.server_config.insert("cluster.https_address".into(), "10.0.0.9:8443".into());
        l.members.insert(m.name.clone(), lm);
    }
    l.projects.insert(
        "default".into(),
        Project {
            name: "default".into(),
            description: "Default LXD project".into(),
            config: [("features.images", "true"), ("features.profiles", "true")]
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
    );
    for p in o.projects.values() {
        let mut lp = p.clone();
        lp.config = own(&p.config);
        for f in ["features.images", "features.profiles", "features.storage.volumes"] {
            lp.config.entry(f.into()).or_insert_with(|| "true".into());
        }
        l.projects.insert(p.name.clone(), lp);
    }
    for p in o.storage_pools.values() {
        let mut lp = p.clone();
        lp.config = own(&p.config);
        lp.config.insert("volatile.initial_source".into(), "/dev/sda".into());
        if p.driver == "zfs" {
            lp.config.insert("zfs.pool_name".into(), p.name.clone());
        }
        lp.status = Some("Created".into());
        l.storage_pools.insert(p.name.clone(), lp);
    }
    for (k, n) in &o.networks {
        let mut ln = n.clone();
        ln.config = own(&n.config);
        ln.config.insert("ipv4.address".into(), "10.9.0.1/24".into());
        ln.status = Some("Created".into());
        l.networks.insert(k.clone(), ln);
    }
    for (k, p) in &o.profiles {
        let mut lp = p.clone();
        if p.name != "default" {
            lp.config = own(&p.config);
        }
        l.profiles.insert(k.clone(), lp);
    }
    for (project, _) in l.projects.clone() {
        l.profiles.entry(pkey(&project, "default")).or_insert_with(|| Profile {
            project: project.clone(),
            name: "default".into(),
            ..Default::default()
        });
    }
    for (n, i) in o.images.values().enumerate() {
        let names: Vec<String> =
            std::iter::once(i.name.clone()).chain(i.aliases.iter().map(|a| a.name.clone())).collect();
        for a in &names {
            let mut li = i.clone();
            li.name = a.clone();
            li.source = None;
            li.fingerprint = Some(format!("{n:0>64}"));
            li.aliases = names.iter().map(|x| ImageAlias { name: x.clone(), description: String::new() }).collect();
            li.properties.insert(IMAGE_OWNER_PROPERTY.into(), cluster.into());
            li.properties.insert("os".into(), "Linux".into());
            l.images.insert(pkey(&i.project, a), li);
        }
    }
    let groups_of = |g: &str| -> Vec<String> {
        o.members.values().filter(|m| m.groups.iter().any(|x| x == g)).map(|m| m.name.clone()).collect()
    };
    for (k, i) in &o.instances {
        let mut li = i.clone();
        li.config = own(&i.config);
        li.config.insert("volatile.uuid".into(), format!("uuid-{k}"));
        li.config.insert("volatile.idmap.base".into(), "0".into());
        li.config.insert("image.os".into(), "Linux".into());
        let location = match i.target.as_deref() {
            Some(t) if t.starts_with('@') => {
                let members = groups_of(&t[1..]);
                members[d.n(members.len())].clone()
            }
            Some(t) => t.to_string(),
            None => o.members.keys().nth(d.n(o.members.len())).cloned().unwrap_or_default(),
        };
        li.location = Some(location);
        li.target = None;
        li.status = Some(match i.state {
            PowerState::Running => "Running".into(),
            PowerState::Stopped => "Stopped".into(),
        });
        li.base_image = Some("f".repeat(64));
        l.instances.insert(k.clone(), li);
    }
    for c in o.certificates.values() {
        l.certificates.insert(c.name.clone(), c.clone());
    }
    l.certificates.insert(
        "m0".into(),
        Certificate {
            name: "m0".into(),
            cert_type: CertificateType::Server,
            fingerprint: "e".repeat(64),
            ..Default::default()
        },
    );
    let defaults = dc.spec.snap.clone().unwrap_or_default();
    for m in o.members.keys() {
        let doc = o.snap.get(m);
        if doc.is_none() && dc.spec.snap.is_none() {
            continue;
        }
        let mut config = defaults.config.clone();
        if let Some(doc) = doc {
            config.extend(doc.config.clone());
        }
        config.insert("lxcfs.pidfd".into(), "true".into());
        let channel = doc.and_then(|s| s.channel.clone()).or(defaults.channel.clone()).or(Some("5.0/stable".into()));
        l.snap.insert(
            m.clone(),
            SnapSettings {
                member: m.clone(),
                channel,
                config,
                revision: Some("31333".into()),
                pending: ConfigMap::new(),
            },
        );
    }
    LiveState {
        cluster: cluster.into(),
        objects: l,
        etags: Default::default(),
        incomplete: vec![],
        client_fingerprint: None,
    }
}

/// Random drift: objects removed from live, config values changed, leftovers added.
fn perturb(live: &mut LiveState, d: &mut Dice) {
    let l = &mut live.objects;
    let keys: Vec<String> = l.instances.keys().cloned().collect();
    for k in keys {
        match d.n(8) {
            0 => {
                l.instances.remove(&k);
            }
            1 => {
                let i = l.instances.get_mut(&k).unwrap();
                i.config.insert("limits.cpu".into(), "7".into());
                i.config.insert("raw.lxc".into(), "lxc.changed=1".into());
            }
            2 => {
                let i = l.instances.get_mut(&k).unwrap();
                i.status = Some(if i.status.as_deref() == Some("Running") { "Stopped" } else { "Running" }.into());
            }
            3 => {
                let i = l.instances.get_mut(&k).unwrap();
                i.location = Some(MEMBERS[d.n(MEMBERS.len())].into());
            }
            _ => {}
        }
    }
    for map in [&mut l.projects] {
        let keys: Vec<String> = map.keys().filter(|k| *k != "default").cloned().collect();
        for k in keys {
            if d.n(4) == 0 {
                map.remove(&k);
            }
        }
    }
    let keys: Vec<String> = l.profiles.keys().cloned().collect();
    for k in keys {
        if d.n(4) == 0 {
            l.profiles.remove(&k);
        }
    }
    let keys: Vec<String> = l.members.keys().cloned().collect();
    for k in keys {
        match d.n(6) {
            0 => {
                l.members.remove(&k);
            }
            1 => l.members.get_mut(&k).unwrap().status = Some("Offline".into()),
            _ => {}
        }
    }
    for n in 0..d.n(4) {
        let project = PROJECTS[d.n(PROJECTS.len())];
        let mut config = ConfigMap::new();
        if d.b() {
            config.insert(OWNER_KEY.into(), "c".into());
        }
        let name = format!("old{n}");
        l.instances.insert(
            pkey(project, &name),
            Instance {
                project: project.into(),
                name,
                profiles: vec!["default".into(), "old".into()],
                config: config.clone(),
                location: Some(MEMBERS[d.n(MEMBERS.len())].into()),
                status: Some("Running".into()),
                ..Default::default()
            },
        );
        l.profiles.insert(
            pkey(project, "old"),
            Profile { project: project.into(), name: "old".into(), config: config.clone(), ..Default::default() },
        );
        if project != "default" {
            l.projects.entry(project.into()).or_insert(Project {
                name: project.into(),
                description: String::new(),
                config,
            });
        }
    }
    if d.b() {
        l.certificates.insert(
            "stale".into(),
            Certificate { name: "stale".into(), fingerprint: "d".repeat(64), ..Default::default() },
        );
        l.server_config.insert(INVENTORY_KEY.into(), "Certificate/stale".into());
    }
    if d.b() {
        l.members.insert(
            "m9".into(),
            Member {
                name: "m9".into(),
                config: [(OWNER_KEY.to_string(), "c".to_string())].into(),
                status: Some("Online".into()),
                groups: vec!["default".into()],
                failure_domain: "default".into(),
                ..Default::default()
            },
        );
    }
}

fn dice() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(any::<u32>(), 400)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn a_live_state_equal_to_the_fleet_plans_to_nothing(v in dice()) {
        let mut d = Dice { v: &v, i: 0 };
        let dc = desired(&mut d);
        let live = live_equal(&dc, &mut d);
        let p = plan(&dc, &live);
        prop_assert!(p.is_empty(), "unexpected steps:\n{}", super::render::text(&p, &Default::default()));
        prop_assert!(p.blocked.is_none());
    }

    #[test]
    fn plans_are_deterministic_ordered_and_round_trip(v in dice()) {
        let mut d = Dice { v: &v, i: 0 };
        let dc = desired(&mut d);
        let mut live = live_equal(&dc, &mut d);
        perturb(&mut live, &mut d);
        let a = plan(&dc, &live);
        let b = plan(&dc, &live);
        // The plan digest is exactly the SHA-256 of serde_json's compact bytes.
        use sha2::Digest;
        let reference = hex::encode(sha2::Sha256::digest(serde_json::to_vec(&live.objects).unwrap()));
        prop_assert_eq!(&a.live_digest, &reference);
        let json = a.to_json();
        prop_assert_eq!(&json, &b.to_json());
        prop_assert_eq!(&Plan::from_json(&json).unwrap(), &a);
        let mut seen = std::collections::HashSet::new();
        for s in a.steps() {
            for dep in &s.depends_on {
                prop_assert!(seen.contains(dep.as_str()), "{} depends on {}, which is not earlier", s.id, dep);
            }
            prop_assert!(seen.insert(s.id.as_str()), "duplicate id {}", s.id);
        }
        let kinds: Vec<PhaseKind> = a.phases.iter().map(|p| p.kind).collect();
        let mut sorted = kinds.clone();
        sorted.sort();
        sorted.dedup();
        prop_assert_eq!(kinds, sorted);
        prop_assert!(a.phases.iter().all(|p| !p.steps.is_empty()));
    }
}
