//! Rules between objects, and value rules a JSON Schema cannot express.
//!
//! Owns: reference checks (instance → project, profiles, image, target member or
//! `@group`; member → groups; certificate → projects; snap → member; per-member
//! config → members; devices → pools and networks), placement of server keys
//! (member-local keys only on members), LXD-managed keys, cron lines and durations.
//! Must not: read files or mutate the fleet; every rule reports, none stops.

use super::cron::{parse_duration, CronLine};
use super::diagnostic::{Diagnostic, Rule};
use super::load::LoadedFleet;
use crate::model::names::{is_lxd_managed_instance_key, is_member_local_server_key};
use crate::model::*;

/// Runs every rule over `fleet`, returning all problems found.
pub fn check(fleet: &LoadedFleet) -> Vec<Diagnostic> {
    let mut out = Vec::new();
    for (cluster, oref) in &fleet.orphans {
        let names: Vec<&str> = fleet.desired.clusters.keys().map(String::as_str).collect();
        report(
            &mut out,
            fleet,
            cluster,
            oref,
            "/cluster",
            Rule::Reference,
            format!("no Cluster named `{cluster}` in this repository"),
            Some(if names.is_empty() {
                "add a `kind: Cluster` document".to_string()
            } else {
                format!("known clusters: {}", names.join(", "))
            }),
        );
    }
    for (name, dc) in &fleet.desired.clusters {
        Checker { fleet, cluster: name, dc, out: &mut out }.run();
    }
    out
}

#[allow(clippy::too_many_arguments)]
fn report(
    out: &mut Vec<Diagnostic>,
    fleet: &LoadedFleet,
    cluster: &str,
    oref: &ObjectRef,
    pointer: &str,
    rule: Rule,
    message: String,
    hint: Option<String>,
) {
    let (file, pos) = match fleet.origin(cluster, oref) {
        Some(o) => (o.file.clone(), o.value_pos(pointer)),
        None => (".".to_string(), super::yaml::Pos { line: 1, column: 1 }),
    };
    out.push(Diagnostic {
        file,
        line: pos.line,
        column: pos.column,
        object: Some(oref.to_string()),
        path: pointer.to_string(),
        rule,
        message,
        hint,
    });
}

struct Checker<'a> {
    fleet: &'a LoadedFleet,
    cluster: &'a str,
    dc: &'a DesiredCluster,
    out: &'a mut Vec<Diagnostic>,
}

impl Checker<'_> {
    /// A problem with a map key itself (a key that does not belong here): point at the key.
    fn err_at_key(&mut self, oref: &ObjectRef, pointer: &str, message: String, hint: Option<String>) {
        let before = self.out.len();
        self.err(oref, pointer, Rule::Value, message, hint);
        if let (Some(d), Some(o)) = (self.out.get_mut(before), self.fleet.origin(self.cluster, oref)) {
            let pos = o.doc.key_pos(pointer);
            d.line = pos.line;
            d.column = pos.column;
        }
    }

    fn err(&mut self, oref: &ObjectRef, pointer: &str, rule: Rule, message: String, hint: Option<String>) {
        report(self.out, self.fleet, self.cluster, oref, pointer, rule, message, hint);
    }

    fn run(&mut self) {
        self.cluster_spec();
        self.members();
        self.projects_scoped();
        self.instances();
        self.certificates();
        self.snap();
        self.per_member_config();
    }

    fn project_exists(&self, p: &str) -> bool {
        p == "default" || self.dc.objects.projects.contains_key(p)
    }

    /// LXD resolves profiles/images of a project without `features.X` in `default`.
    fn feature_project<'p>(&self, project: &'p str, feature: &str) -> &'p str {
        match self.dc.objects.projects.get(project) {
            Some(p) if p.config.get(feature).map(String::as_str) == Some("false") => "default",
            _ => project,
        }
    }

    fn group_exists(&self, g: &str) -> bool {
        g == "default" || self.dc.objects.groups.contains_key(g)
    }

    fn check_cron(&mut self, oref: &ObjectRef, pointer: &str, line: &str) {
        if let Err(e) = CronLine::parse(line) {
            self.err(
                oref,
                pointer,
                Rule::Value,
                format!("invalid cron line `{line}`: {e}"),
                Some("standard 5 fields: minute hour day-of-month month day-of-week, e.g. `*/15 * * * *`".into()),
            );
        }
    }

    fn cluster_spec(&mut self) {
        let spec = &self.dc.spec;
        let oref = ObjectRef::global(Kind::Cluster, spec.name.clone());
        for key in spec.config.keys() {
            if is_member_local_server_key(key) {
                let ptr = format!("/config/{}", super::yaml::escape_pointer_token(key));
                self.err_at_key(
                    &oref,
                    &ptr,
                    format!("`{key}` is a member-local server key and cannot be set cluster-wide"),
                    Some("set it in `server_config` of each Member".into()),
                );
            }
        }
        if let Some(s) = spec.policy.drift_schedule.clone() {
            self.check_cron(&oref, "/policy/drift_schedule", &s);
        }
        for (i, w) in spec.policy.sync_windows.clone().iter().enumerate() {
            self.check_cron(&oref, &format!("/policy/sync_windows/{i}/schedule"), &w.schedule);
            if let Err(e) = parse_duration(&w.duration) {
                self.err(&oref, &format!("/policy/sync_windows/{i}/duration"), Rule::Value, e, None);
            }
        }
    }

    fn members(&mut self) {
        for m in self.dc.objects.members.values() {
            let oref = ObjectRef::global(Kind::Member, m.name.clone());
            for (i, g) in m.groups.iter().enumerate() {
                if !self.group_exists(g) {
                    self.err(
                        &oref,
                        &format!("/groups/{i}"),
                        Rule::Reference,
                        format!("cluster group `{g}` not found"),
                        Some("declare it with `kind: ClusterGroup`".into()),
                    );
                }
            }
            for key in m.server_config.keys() {
                if !is_member_local_server_key(key) {
                    let ptr = format!("/server_config/{}", super::yaml::escape_pointer_token(key));
                    self.err_at_key(
                        &oref,
                        &ptr,
                        format!("`{key}` is not a member-local server key"),
                        Some("cluster-wide server keys go in the Cluster's `config`".into()),
                    );
                }
            }
        }
    }

    fn projects_scoped(&mut self) {
        let mut scoped: Vec<(ObjectRef, String)> = Vec::new();
        for n in self.dc.objects.networks.values() {
            scoped.push((ObjectRef::in_project(Kind::Network, n.project.clone(), n.name.clone()), n.project.clone()));
        }
        for p in self.dc.objects.profiles.values() {
            scoped.push((ObjectRef::in_project(Kind::Profile, p.project.clone(), p.name.clone()), p.project.clone()));
            let oref = ObjectRef::in_project(Kind::Profile, p.project.clone(), p.name.clone());
            self.managed_keys(&oref, &p.config);
            self.devices(&oref, &p.project, &p.devices);
        }
        for i in self.dc.objects.images.values() {
            scoped.push((ObjectRef::in_project(Kind::Image, i.project.clone(), i.name.clone()), i.project.clone()));
        }
        for i in self.dc.objects.instances.values() {
            scoped.push((ObjectRef::in_project(Kind::Instance, i.project.clone(), i.name.clone()), i.project.clone()));
        }
        for (oref, project) in scoped {
            if !self.project_exists(&project) {
                self.err(
                    &oref,
                    "/project",
                    Rule::Reference,
                    format!("project `{project}` not found"),
                    Some("declare it with `kind: Project`".into()),
                );
            }
        }
    }

    fn managed_keys(&mut self, oref: &ObjectRef, config: &ConfigMap) {
        for key in config.keys().filter(|k| is_lxd_managed_instance_key(k)) {
            let ptr = format!("/config/{}", super::yaml::escape_pointer_token(key));
            self.err_at_key(
                oref,
                &ptr,
                format!("`{key}` is written by LXD itself (volatile/image keys) and cannot be set"),
                Some("remove it; lxd-gitops ignores these keys when comparing".into()),
            );
        }
    }

    fn devices(&mut self, oref: &ObjectRef, project: &str, devices: &Devices) {
        for (dev, props) in devices {
            if let Some(pool) = props.get("pool") {
                if !self.dc.objects.storage_pools.contains_key(pool) {
                    let ptr = format!("/devices/{}/pool", super::yaml::escape_pointer_token(dev));
                    self.err(oref, &ptr, Rule::Reference, format!("storage pool `{pool}` not found"), None);
                }
            }
            if let Some(net) = props.get("network") {
                let net_project = self.feature_project(project, "features.networks");
                let found = self.dc.objects.networks.contains_key(&pkey(net_project, net))
                    || self.dc.objects.networks.contains_key(&pkey("default", net));
                if !found {
                    let ptr = format!("/devices/{}/network", super::yaml::escape_pointer_token(dev));
                    self.err(oref, &ptr, Rule::Reference, format!("network `{net}` not found"), None);
                }
            }
        }
    }

    fn instances(&mut self) {
        for i in self.dc.objects.instances.values() {
            let oref = ObjectRef::in_project(Kind::Instance, i.project.clone(), i.name.clone());
            self.managed_keys(&oref, &i.config);
            self.devices(&oref, &i.project, &i.devices);
            let prof_project = self.feature_project(&i.project, "features.profiles");
            for (n, p) in i.profiles.iter().enumerate() {
                if p != "default" && !self.dc.objects.profiles.contains_key(&pkey(prof_project, p)) {
                    self.err(
                        &oref,
                        &format!("/profiles/{n}"),
                        Rule::Reference,
                        format!("profile `{p}` not found in project `{prof_project}`"),
                        Some("declare it with `kind: Profile` in that project".into()),
                    );
                }
            }
            if let Some(img) = &i.image {
                let img_project = self.feature_project(&i.project, "features.images");
                let found =
                    self.dc.objects.images.values().any(|x| {
                        x.project == img_project && (x.name == *img || x.aliases.iter().any(|a| a.name == *img))
                    });
                if !found {
                    self.err(
                        &oref,
                        "/image",
                        Rule::Reference,
                        format!("image `{img}` not found in project `{img_project}`"),
                        Some("declare it with `kind: Image` (name or one of its aliases)".into()),
                    );
                }
            }
            if let Some(t) = &i.target {
                if let Some(g) = t.strip_prefix('@') {
                    if !self.group_exists(g) {
                        self.err(&oref, "/target", Rule::Reference, format!("cluster group `{g}` not found"), None);
                    }
                } else if !self.dc.objects.members.contains_key(t) {
                    self.err(&oref, "/target", Rule::Reference, format!("member `{t}` not found"), None);
                }
            }
        }
    }

    fn certificates(&mut self) {
        for c in self.dc.objects.certificates.values() {
            let oref = ObjectRef::global(Kind::Certificate, c.name.clone());
            for (n, p) in c.projects.iter().enumerate() {
                if !self.project_exists(p) {
                    self.err(
                        &oref,
                        &format!("/projects/{n}"),
                        Rule::Reference,
                        format!("project `{p}` not found"),
                        None,
                    );
                }
            }
            if !c.restricted && !c.projects.is_empty() {
                self.err(
                    &oref,
                    "/projects",
                    Rule::Value,
                    "`projects` only applies to restricted certificates".into(),
                    Some("set `restricted: true`, or remove `projects`".into()),
                );
            }
        }
    }

    fn snap(&mut self) {
        for s in self.dc.objects.snap.values() {
            if !self.dc.objects.members.contains_key(&s.member) {
                let oref = ObjectRef::global(Kind::Snap, s.member.clone());
                self.err(&oref, "/member", Rule::Reference, format!("member `{}` not found", s.member), None);
            }
        }
    }

    fn per_member_config(&mut self) {
        let mut refs = Vec::new();
        for p in self.dc.objects.storage_pools.values() {
            for m in p.member_config.keys() {
                refs.push((ObjectRef::global(Kind::StoragePool, p.name.clone()), m.clone()));
            }
        }
        for n in self.dc.objects.networks.values() {
            for m in n.member_config.keys() {
                refs.push((ObjectRef::in_project(Kind::Network, n.project.clone(), n.name.clone()), m.clone()));
            }
        }
        for (oref, m) in refs {
            if !self.dc.objects.members.contains_key(&m) {
                let ptr = format!("/member_config/{}", super::yaml::escape_pointer_token(&m));
                self.err(&oref, &ptr, Rule::Reference, format!("member `{m}` not found"), None);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fleet::load::load_texts;

    const CLUSTER: &str = "kind: Cluster\nname: c\nendpoints: [\"https://127.0.0.1:8443\"]\nfingerprint: \"0000000000000000000000000000000000000000000000000000000000000000\"\ncredentials: c\n";

    fn problems(files: &[(&str, &str)]) -> Vec<String> {
        let (fleet, mut diags) = load_texts(files);
        diags.extend(super::check(&fleet));
        crate::fleet::diagnostic::finish(diags)
            .iter()
            .map(|d| format!("{}:{}:{} {}", d.file, d.line, d.column, d.message))
            .collect()
    }

    #[test]
    fn dangling_references_are_located() {
        let got = problems(&[
            ("c.yaml", CLUSTER),
            (
                "i.yaml",
                "kind: Instance\ncluster: c\nname: i1\nproject: web\nprofiles: [default, nope]\nimage: gone\ntarget: \"@edge\"\n",
            ),
        ]);
        assert_eq!(
            got,
            vec![
                "i.yaml:4:10 project `web` not found",
                "i.yaml:5:21 profile `nope` not found in project `web`",
                "i.yaml:6:8 image `gone` not found in project `web`",
                "i.yaml:7:9 cluster group `edge` not found",
            ]
        );
    }

    #[test]
    fn projects_without_profile_feature_use_default_profiles() {
        let got = problems(&[
            ("c.yaml", CLUSTER),
            ("p.yaml", "kind: Project\ncluster: c\nname: web\nconfig:\n  features.profiles: \"false\"\n"),
            ("pr.yaml", "kind: Profile\ncluster: c\nname: base\n"),
            ("i.yaml", "kind: Instance\ncluster: c\nname: i1\nproject: web\nprofiles: [default, base]\n"),
        ]);
        assert!(got.is_empty(), "{got:?}");
    }

    #[test]
    fn server_keys_in_the_right_place() {
        let cluster = format!("{CLUSTER}config:\n  core.https_address: \":8443\"\n");
        let got = problems(&[
            ("c.yaml", &cluster),
            ("m.yaml", "kind: Member\ncluster: c\nname: n1\nserver_config:\n  images.auto_update_interval: \"6\"\n"),
        ]);
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].contains("member-local"), "{got:?}");
        assert!(got[1].contains("not a member-local"), "{got:?}");
    }

    #[test]
    fn objects_of_unknown_clusters() {
        let got = problems(&[("c.yaml", CLUSTER), ("m.yaml", "kind: Member\ncluster: nope\nname: n1\n")]);
        assert_eq!(got, vec!["m.yaml:2:10 no Cluster named `nope` in this repository"]);
    }

    #[test]
    fn bad_cron_lines() {
        let cluster = format!("{CLUSTER}policy:\n  drift_schedule: \"61 * * * *\"\n");
        let got = problems(&[("c.yaml", &cluster)]);
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(got[0].starts_with("c.yaml:7:19 invalid cron line"), "{got:?}");
    }
}
