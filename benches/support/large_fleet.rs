//! A large synthetic cluster for measuring the planner: 10,000 instances in 10
//! projects on 100 members, and a live state that matches it except for 1% drift.
//! Shared by `benches/plan.rs` and `examples/plan_large.rs`.

use lxd_gitops::model::*;

fn cm(pairs: &[(&str, &str)]) -> ConfigMap {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

pub const MEMBERS: usize = 100;
pub const PROJECTS: usize = 10;
pub const INSTANCES: usize = 10_000;

/// (desired, live) with `drift_per_mille` of the instances drifted.
pub fn build(drift_per_mille: usize) -> (DesiredCluster, LiveState) {
    let mut d = ClusterObjects::default();
    let mut l = ClusterObjects::default();
    let owner = |c: &ConfigMap| {
        let mut c = c.clone();
        c.insert(OWNER_KEY.into(), "big".into());
        c
    };
    for m in 0..MEMBERS {
        let name = format!("m{m:03}");
        let member = Member {
            name: name.clone(),
            failure_domain: format!("rack{}", m / 10),
            groups: vec!["default".into()],
            config: cm(&[("scheduler.instance", "all")]),
            ..Default::default()
        };
        let mut live = member.clone();
        live.status = Some("Online".into());
        live.server_config = cm(&[("cluster.https_address", "10.0.0.1:8443")]);
        d.members.insert(name.clone(), member);
        l.members.insert(name, live);
    }
    d.storage_pools
        .insert("local".into(), StoragePool { name: "local".into(), driver: "dir".into(), ..Default::default() });
    l.storage_pools.insert(
        "local".into(),
        StoragePool {
            name: "local".into(),
            driver: "dir".into(),
            config: owner(&ConfigMap::new()),
            status: Some("Created".into()),
            ..Default::default()
        },
    );
    for p in 0..PROJECTS {
        let project = format!("p{p}");
        let proj = Project { name: project.clone(), config: cm(&[("limits.instances", "2000")]), ..Default::default() };
        let mut lproj = proj.clone();
        lproj.config = owner(&proj.config);
        lproj.config.insert("features.images".into(), "true".into());
        lproj.config.insert("features.profiles".into(), "true".into());
        d.projects.insert(project.clone(), proj);
        l.projects.insert(project.clone(), lproj);
        let mut devices = Devices::new();
        devices.insert("root".into(), cm(&[("type", "disk"), ("path", "/"), ("pool", "local")]));
        let prof = Profile {
            project: project.clone(),
            name: "web".into(),
            config: cm(&[("limits.cpu", "2"), ("security.nesting", "true")]),
            devices,
            ..Default::default()
        };
        let mut lprof = prof.clone();
        lprof.config = owner(&prof.config);
        d.profiles.insert(pkey(&project, "web"), prof);
        l.profiles.insert(pkey(&project, "web"), lprof);
        l.profiles.insert(
            pkey(&project, "default"),
            Profile { project: project.clone(), name: "default".into(), ..Default::default() },
        );
        let img = Image {
            project: project.clone(),
            name: "debian".into(),
            aliases: vec![ImageAlias { name: "debian-12".into(), description: String::new() }],
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
        };
        for alias in ["debian", "debian-12"] {
            let mut li = img.clone();
            li.name = alias.into();
            li.source = None;
            li.fingerprint = Some("ab".repeat(32));
            li.aliases = vec![
                ImageAlias { name: "debian".into(), description: String::new() },
                ImageAlias { name: "debian-12".into(), description: String::new() },
            ];
            li.properties = cm(&[(IMAGE_OWNER_PROPERTY, "big"), ("os", "Debian"), ("release", "12")]);
            l.images.insert(pkey(&project, alias), li);
        }
        d.images.insert(pkey(&project, "debian"), img);
    }
    let per_project = INSTANCES / PROJECTS;
    for n in 0..INSTANCES {
        let project = format!("p{}", n / per_project);
        let name = format!("web-{n:05}");
        let member = format!("m{:03}", n % MEMBERS);
        let mut devices = Devices::new();
        devices
            .insert("eth0".into(), cm(&[("type", "nic"), ("nictype", "bridged"), ("parent", "br0"), ("name", "eth0")]));
        let inst = Instance {
            project: project.clone(),
            name: name.clone(),
            image: Some("debian".into()),
            profiles: vec!["default".into(), "web".into()],
            config: cm(&[
                ("limits.memory", "1GiB"),
                ("limits.cpu.allowance", "50%"),
                ("boot.autostart", "true"),
                ("user.team", "web"),
                ("snapshots.schedule", "@daily"),
            ]),
            devices,
            target: Some(member.clone()),
            state: PowerState::Running,
            ..Default::default()
        };
        let mut live = inst.clone();
        live.config = owner(&inst.config);
        for (k, v) in [
            ("volatile.uuid", "0b2c7c9e-2f54-4c4e-9d1e-5d3f0b8a1c11"),
            ("volatile.base_image", "abababababababababababababababababababababababababababababababab"),
            ("volatile.eth0.hwaddr", "00:16:3e:12:34:56"),
            ("volatile.idmap.base", "0"),
            ("volatile.last_state.power", "RUNNING"),
            ("image.os", "Debian"),
            ("image.release", "12"),
        ] {
            live.config.insert(k.into(), v.into());
        }
        live.target = None;
        live.location = Some(member);
        live.status = Some("Running".into());
        live.base_image = Some("ab".repeat(32));
        if drift_per_mille > 0 && n % (1000 / drift_per_mille) == 7 {
            // Someone ran `lxc config set` by hand.
            match n % 3 {
                0 => {
                    live.config.insert("limits.memory".into(), "2GiB".into());
                }
                1 => {
                    live.config.insert("user.debug".into(), "true".into());
                }
                _ => {
                    live.status = Some("Stopped".into());
                }
            }
        }
        d.instances.insert(pkey(&project, &name), inst);
        l.instances.insert(pkey(&project, &name), live);
    }
    let desired = DesiredCluster {
        spec: ClusterSpec {
            name: "big".into(),
            description: String::new(),
            endpoints: vec!["https://10.0.0.1:8443".into()],
            fingerprint: "0".repeat(64),
            credentials: "big".into(),
            config: cm(&[("images.auto_update_interval", "12")]),
            policy: Policy { prune: true, ..Policy::default() },
            snap: None,
        },
        objects: d,
    };
    l.server_config = cm(&[("images.auto_update_interval", "12"), ("core.https_address", ":8443")]);
    let live = LiveState {
        cluster: "big".into(),
        objects: l,
        etags: Default::default(),
        incomplete: vec![],
        client_fingerprint: None,
    };
    (desired, live)
}
