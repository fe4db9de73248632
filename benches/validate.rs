//! Validating a generated fleet of 10,000 instances on 100 members (target: < 1 s;
//! fails when the process's peak memory goes over 100 MB).
//!
//! The repository is written once to a temporary folder: one file per member,
//! project and group of instances, the way a large fleet splits its files.

use criterion::{criterion_group, criterion_main, Criterion};
use std::fmt::Write as _;
use std::path::Path;

#[path = "support/peak.rs"]
mod peak;

const MEMBERS: usize = 100;
const PROJECTS: usize = 10;
const INSTANCES: usize = 10_000;

fn write_repo(root: &Path) {
    let fp = "ab".repeat(32);
    let mut s = format!(
        "kind: Cluster\nname: big\nendpoints: [\"https://10.0.0.1:8443\"]\nfingerprint: \"{fp}\"\ncredentials: big\npolicy:\n  drift_schedule: \"*/15 * * * *\"\n"
    );
    std::fs::write(root.join("cluster.yaml"), &s).unwrap();
    s.clear();
    for g in 0..4 {
        writeln!(s, "---\nkind: ClusterGroup\ncluster: big\nname: g{g}").unwrap();
    }
    for m in 0..MEMBERS {
        writeln!(s, "---\nkind: Member\ncluster: big\nname: m{m}\naddress: 10.0.{}.{}:8443\nfailure_domain: rack{}\ngroups: [default, g{}]\nconfig:\n  scheduler.instance: all", m / 200, m % 200 + 1, m % 5, m % 4).unwrap();
    }
    std::fs::write(root.join("members.yaml"), &s).unwrap();
    s.clear();
    writeln!(s, "kind: StoragePool\ncluster: big\nname: default\ndriver: dir").unwrap();
    std::fs::write(root.join("pool.yaml"), &s).unwrap();
    for p in 0..PROJECTS {
        let dir = root.join(format!("p{p}"));
        std::fs::create_dir_all(&dir).unwrap();
        let mut s = format!("kind: Project\ncluster: big\nname: p{p}\nconfig:\n  features.images: \"true\"\n  features.profiles: \"true\"\n");
        writeln!(s, "---\nkind: Profile\ncluster: big\nproject: p{p}\nname: app\nconfig:\n  limits.memory: 256MiB\ndevices:\n  root: {{type: disk, path: /, pool: default}}").unwrap();
        writeln!(s, "---\nkind: Image\ncluster: big\nproject: p{p}\nname: base\nsource: {{server: \"https://images.example.org\", alias: debian/12}}").unwrap();
        std::fs::write(dir.join("project.yaml"), &s).unwrap();
        for chunk in 0..10 {
            let mut s = String::new();
            for i in 0..INSTANCES / PROJECTS / 10 {
                let n = chunk * (INSTANCES / PROJECTS / 10) + i;
                writeln!(s, "---\nkind: Instance\ncluster: big\nproject: p{p}\nname: i{n}\nimage: base\nprofiles: [default, app]\ntarget: m{}\nconfig:\n  limits.cpu: \"1\"\n  user.index: \"{n}\"", (n * 7 + p) % MEMBERS).unwrap();
            }
            std::fs::write(dir.join(format!("instances-{chunk}.yaml")), &s).unwrap();
        }
    }
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    write_repo(dir.path());
    let fleet = lxd_gitops::fleet::load_and_validate(dir.path()).expect("generated repo is valid");
    assert_eq!(fleet.desired.clusters["big"].objects.instances.len(), INSTANCES);
    drop(fleet);
    let mut g = c.benchmark_group("validate");
    g.sample_size(10);
    g.bench_function("10k instances, 100 members", |b| {
        b.iter(|| lxd_gitops::fleet::load_and_validate(dir.path()).unwrap())
    });
    g.finish();
    peak::check("validating 10k instances", 100.0);
}

criterion_group!(benches, bench);
criterion_main!(benches);
