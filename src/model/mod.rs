//! The one vocabulary shared by desired and live state.
//!
//! Owns: the plain data types for every object lxd-gitops manages, shaped like the
//! objects LXD itself prints (`lxc profile show`, `lxc config show`), and the
//! `ClusterObjects` collection that both the fleet loader (desired) and the live
//! reader (live) fill. Must not: do IO, know about YAML positions, HTTP or policy.
//!
//! Fields that only LXD can know (a member's status, an instance's location, an
//! image's fingerprint after a pull) are `Option`s marked "observed": the loader
//! leaves them empty, the live reader fills them, and the planner only reads them
//! where a decision depends on them.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

pub mod names;

/// LXD config maps: string keys to string values, sorted for stable output.
pub type ConfigMap = BTreeMap<String, String>;
/// LXD devices: device name to its string properties.
pub type Devices = BTreeMap<String, ConfigMap>;

/// The config key lxd-gitops writes on objects it creates, so that prune only
/// ever touches what the fleet owns.
pub const OWNER_KEY: &str = "user.lxd-gitops.owner";
/// The image property that carries ownership (images have properties, not config).
pub const IMAGE_OWNER_PROPERTY: &str = "lxd-gitops.owner";
/// Server config key listing the objects without config of their own that the fleet
/// created (trust certificates, cluster groups), as `Certificate/<name>` and
/// `ClusterGroup/<name>`, comma-separated and sorted. Prune deletes such objects
/// only when they are listed here; the planner keeps the key up to date.
pub const INVENTORY_KEY: &str = "user.lxd-gitops.inventory";

/// Every kind of object a fleet repository can hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Kind {
    Cluster,
    Member,
    ClusterGroup,
    Project,
    StoragePool,
    Network,
    Profile,
    Image,
    Instance,
    Certificate,
    Snap,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Cluster,
        Kind::Member,
        Kind::ClusterGroup,
        Kind::Project,
        Kind::StoragePool,
        Kind::Network,
        Kind::Profile,
        Kind::Image,
        Kind::Instance,
        Kind::Certificate,
        Kind::Snap,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cluster => "Cluster",
            Kind::Member => "Member",
            Kind::ClusterGroup => "ClusterGroup",
            Kind::Project => "Project",
            Kind::StoragePool => "StoragePool",
            Kind::Network => "Network",
            Kind::Profile => "Profile",
            Kind::Image => "Image",
            Kind::Instance => "Instance",
            Kind::Certificate => "Certificate",
            Kind::Snap => "Snap",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    /// The JSON Schema file (under `schema/`) that describes this kind.
    pub fn schema_file(self) -> &'static str {
        match self {
            Kind::Cluster => "cluster.json",
            Kind::Member => "member.json",
            Kind::ClusterGroup => "cluster-group.json",
            Kind::Project => "project.json",
            Kind::StoragePool => "storage-pool.json",
            Kind::Network => "network.json",
            Kind::Profile => "profile.json",
            Kind::Image => "image.json",
            Kind::Instance => "instance.json",
            Kind::Certificate => "certificate.json",
            Kind::Snap => "snap.json",
        }
    }

    /// Whether objects of this kind live inside an LXD project.
    pub fn is_project_scoped(self) -> bool {
        matches!(self, Kind::Network | Kind::Profile | Kind::Image | Kind::Instance)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Names one object inside one cluster: kind, project (for project-scoped kinds) and name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ObjectRef {
    pub kind: Kind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub name: String,
}

impl ObjectRef {
    pub fn global(kind: Kind, name: impl Into<String>) -> Self {
        ObjectRef { kind, project: None, name: name.into() }
    }
    pub fn in_project(kind: Kind, project: impl Into<String>, name: impl Into<String>) -> Self {
        ObjectRef { kind, project: Some(project.into()), name: name.into() }
    }
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.project {
            Some(p) => write!(f, "{}/{}/{}", self.kind, p, self.name),
            None => write!(f, "{}/{}", self.kind, self.name),
        }
    }
}

/// Key of project-scoped objects: sorted by project, then name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ProjectKey {
    pub project: String,
    pub name: String,
}

impl ProjectKey {
    pub fn new(project: impl Into<String>, name: impl Into<String>) -> Self {
        ProjectKey { project: project.into(), name: name.into() }
    }
}

impl fmt::Display for ProjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.project, self.name)
    }
}

fn default_project() -> String {
    "default".to_string()
}
fn is_default<T: Default + PartialEq>(v: &T) -> bool {
    *v == T::default()
}
fn yes() -> bool {
    true
}

// ---------------------------------------------------------------------------
// Cluster: connection, policy, defaults. Desired only; LXD has no such object.
// ---------------------------------------------------------------------------

/// A cluster the fleet manages: how to reach it, how to trust it, and the policy
/// the reconciler follows for it. Credentials are a *name* resolved outside the
/// repository (`$LXD_GITOPS_CREDENTIALS_DIR/<name>/client.{crt,key}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSpec {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `https://host:port` of each member (tried in order, next on failure), or `unix:/path`.
    pub endpoints: Vec<String>,
    /// Lowercase hex SHA-256 of the DER of the cluster certificate.
    pub fingerprint: String,
    /// Name of the credentials directory entry holding the client key pair.
    pub credentials: String,
    /// Cluster-wide server config (`lxc config show`), never member-local keys.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
    #[serde(default)]
    pub policy: Policy,
    /// Snap settings applied to every member unless a `Snap` object overrides a key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snap: Option<SnapDefaults>,
}

/// What the reconciler may do on a cluster.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Delete owned objects that the fleet no longer describes.
    #[serde(default)]
    pub prune: bool,
    /// Refuse a run that would delete more objects than this.
    #[serde(default = "default_max_deletions")]
    pub max_deletions: u32,
    /// Allow restarting running instances for changes LXD cannot apply live.
    #[serde(default)]
    pub allow_restart: bool,
    /// Allow moving instances between members (stop, move, start).
    #[serde(default)]
    pub allow_move: bool,
    /// Allow reloading the LXD daemon after snap keys that need it.
    #[serde(default)]
    pub allow_daemon_reload: bool,
    /// Standard 5-field cron line for drift detection and correction.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drift_schedule: Option<String>,
    /// Correct drift found on schedule (otherwise only report it).
    #[serde(default = "yes")]
    pub correct_drift: bool,
    /// Windows that allow or deny applies. None means always allowed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sync_windows: Vec<SyncWindow>,
    /// How many steps of one phase run at once.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Seconds to wait for a graceful instance stop before forcing it.
    #[serde(default = "default_stop_timeout")]
    pub stop_timeout: u32,
}

fn default_max_deletions() -> u32 {
    10
}
fn default_concurrency() -> u32 {
    4
}
fn default_stop_timeout() -> u32 {
    30
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            prune: false,
            max_deletions: default_max_deletions(),
            allow_restart: false,
            allow_move: false,
            allow_daemon_reload: false,
            drift_schedule: None,
            correct_drift: true,
            sync_windows: Vec::new(),
            concurrency: default_concurrency(),
            stop_timeout: default_stop_timeout(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WindowKind {
    Allow,
    Deny,
}

/// A window opening at each tick of `schedule` (5-field cron) and lasting `duration`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyncWindow {
    pub kind: WindowKind,
    pub schedule: String,
    /// A duration such as `2h` or `30m`.
    pub duration: String,
    /// IANA zone names are not supported yet: windows are in UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapDefaults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
}

// ---------------------------------------------------------------------------
// Cluster members and groups
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemberEnsure {
    /// A member of the cluster, serving instances.
    #[default]
    Present,
    /// A member, evacuated (maintenance): its instances moved or stopped.
    Evacuated,
    /// Not a member: remove it (refused while it holds instances unless `evacuate`).
    Absent,
}

/// A cluster member, as `lxc cluster show` prints it, plus the member-local server
/// config (`lxc config show --target`) and how to join it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The member's cluster address (`host:port`), needed to join it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// User-settable roles only (`event-hub`, `ovn-chassis`); LXD manages `database*`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default = "default_failure_domain", skip_serializing_if = "is_default_failure_domain")]
    pub failure_domain: String,
    /// Member config (`scheduler.instance`, `user.*`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
    #[serde(default = "default_groups")]
    pub groups: Vec<String>,
    /// SHA-256 fingerprint of the new server's own certificate, to pin it while
    /// joining it (after the join it serves the cluster certificate).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join_fingerprint: Option<String>,
    /// Member-local server config (`core.https_address`, `storage.images_volume`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub server_config: ConfigMap,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ensure: MemberEnsure,
    /// Evacuate before removal (`ensure: absent`) instead of refusing.
    #[serde(default, skip_serializing_if = "is_default")]
    pub evacuate: bool,
    /// Observed: `Online`, `Offline`, `Evacuated`, `Blocked`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Observed: LXD-managed roles (`database`, `database-leader`, ...).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub database_roles: Vec<String>,
}

fn default_failure_domain() -> String {
    "default".to_string()
}
fn is_default_failure_domain(s: &String) -> bool {
    s == "default"
}
fn default_groups() -> Vec<String> {
    vec!["default".to_string()]
}

/// A cluster group. Membership is declared on members (`Member.groups`), one place only.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterGroup {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Observed: member names LXD lists in the group.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub members: Vec<String>,
}

// ---------------------------------------------------------------------------
// Projects, pools, networks, profiles
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Project {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoragePool {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    pub driver: String,
    /// Cluster-wide config.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
    /// Member-specific keys (`source`, `size`, ...) per member name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub member_config: BTreeMap<String, ConfigMap>,
    /// Observed: `Created`, `Pending`, `Errored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    #[serde(default = "default_project")]
    pub project: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// `bridge`, `macvlan`, `sriov`, `ovn`, `physical`.
    #[serde(rename = "type", default = "default_network_type")]
    pub network_type: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
    /// Member-specific keys (`bridge.external_interfaces`, `parent`, ...) per member name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub member_config: BTreeMap<String, ConfigMap>,
    /// Observed: `Created`, `Pending`, `Errored`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
}

fn default_network_type() -> String {
    "bridge".to_string()
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    #[serde(default = "default_project")]
    pub project: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub devices: Devices,
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ImageProtocol {
    #[default]
    Simplestreams,
    Lxd,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceType {
    #[default]
    Container,
    VirtualMachine,
}

impl InstanceType {
    pub fn as_lxd(self) -> &'static str {
        match self {
            InstanceType::Container => "container",
            InstanceType::VirtualMachine => "virtual-machine",
        }
    }
}

/// Where an image comes from: pulled from a remote server by alias (or pinned by
/// fingerprint), or uploaded from a tarball kept beside the fleet file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageSource {
    /// `https://images.example.org`; required for pulls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server: Option<String>,
    #[serde(default)]
    pub protocol: ImageProtocol,
    /// The alias on the remote, e.g. `debian/12`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alias: Option<String>,
    /// Pin an exact image on the remote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
    #[serde(default)]
    pub image_type: InstanceType,
    /// For `protocol: lxd`: the remote's certificate, PEM, if it is not publicly trusted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate: Option<String>,
    /// Upload this unified tarball (path relative to the file that declares it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImageAlias {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

/// An image in a project, known by its primary alias (`name`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Image {
    #[serde(default = "default_project")]
    pub project: String,
    /// Primary alias in the project; instances refer to the image by it.
    pub name: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aliases: Vec<ImageAlias>,
    /// Desired only: where to get it. The live reader leaves it empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<ImageSource>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub properties: ConfigMap,
    #[serde(default)]
    pub public: bool,
    #[serde(default)]
    pub auto_update: bool,
    /// Observed: full SHA-256 of the image in LXD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fingerprint: Option<String>,
}

// ---------------------------------------------------------------------------
// Instances
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerState {
    #[default]
    Running,
    Stopped,
}

/// An instance, as `lxc config show` prints it, plus where it runs and its power state.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Instance {
    #[serde(default = "default_project")]
    pub project: String,
    pub name: String,
    #[serde(rename = "type", default)]
    pub instance_type: InstanceType,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Primary alias of an `Image` in the same project. Only used at creation.
    /// Live: an alias of the image the instance was created from, when the reader
    /// could match `base_image` to an image still present; None when unknown (the
    /// planner then does not compare images).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default = "default_profiles")]
    pub profiles: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub devices: Devices,
    #[serde(default, skip_serializing_if = "is_default")]
    pub ephemeral: bool,
    /// Placement: a member name, or `@group`. None lets LXD choose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default)]
    pub state: PowerState,
    /// Observed: the member the instance lives on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// Observed: LXD's `status` (`Running`, `Stopped`, `Frozen`, `Error`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<String>,
    /// Observed: fingerprint of the image the instance was created from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_image: Option<String>,
}

fn default_profiles() -> Vec<String> {
    vec!["default".to_string()]
}

// ---------------------------------------------------------------------------
// Trust store
// ---------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CertificateType {
    #[default]
    Client,
    Metrics,
    /// Observed only: cluster members' own entries; never declared in a fleet.
    Server,
}

/// A trust store entry. The PEM is in the repository (public material only).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Certificate {
    pub name: String,
    #[serde(rename = "type", default)]
    pub cert_type: CertificateType,
    #[serde(default, skip_serializing_if = "is_default")]
    pub restricted: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub projects: Vec<String>,
    /// PEM text. In a fleet file either this or `certificate_file` is given; the
    /// loader reads the file so that this field always holds the PEM afterwards.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub certificate: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_file: Option<String>,
    /// Lowercase hex SHA-256 of the DER; computed by the loader, read by the live reader.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub fingerprint: String,
}

// ---------------------------------------------------------------------------
// Snap settings of the LXD snap on one member
// ---------------------------------------------------------------------------

/// Snap settings of LXD on one member (`snap set lxd ...`, `snap refresh lxd --channel`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapSettings {
    /// The member these settings are for.
    pub member: String,
    /// Tracking channel, e.g. `5.21/stable`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// Snap config keys (`lxcfs.loadavg`, `daemon.debug`, ...). Keys not listed are left alone.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub config: ConfigMap,
    /// Observed: installed revision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Observed: keys written but not yet in effect (need a reload or a reboot).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pending: ConfigMap,
}

// ---------------------------------------------------------------------------
// The collection both sides fill
// ---------------------------------------------------------------------------

/// All objects of one cluster, keyed for deterministic order. The fleet loader
/// fills it from YAML (desired); the live reader fills it from LXD (live).
///
/// Conventions of the live side (the planner relies on them):
/// - `images` holds one entry per `project/<alias>` for EVERY alias of an image, all
///   entries of one image sharing its `fingerprint`; the entry's `name` is that alias
///   and `aliases` lists all of the image's aliases. An image without any alias is
///   keyed `project/<fingerprint>` with `name` = the fingerprint.
/// - `server_config` holds the cluster-wide keys of `GET /1.0` (member-local keys,
///   if present, are ignored by the planner); member-local keys of each member go in
///   `members[m].server_config`.
/// - `instances[..].state` mirrors `status` (`Running`/`Frozen` → running).
/// - `certificates` is keyed by name; members' own `server` entries are included
///   (the planner never touches them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ClusterObjects {
    /// Cluster-wide server config.
    pub server_config: ConfigMap,
    pub members: BTreeMap<String, Member>,
    pub groups: BTreeMap<String, ClusterGroup>,
    pub projects: BTreeMap<String, Project>,
    pub storage_pools: BTreeMap<String, StoragePool>,
    pub networks: BTreeMap<ProjectKeyString, Network>,
    pub profiles: BTreeMap<ProjectKeyString, Profile>,
    pub images: BTreeMap<ProjectKeyString, Image>,
    pub instances: BTreeMap<ProjectKeyString, Instance>,
    pub certificates: BTreeMap<String, Certificate>,
    pub snap: BTreeMap<String, SnapSettings>,
}

/// `project/name` as a map key, so the collections serialize as plain JSON objects
/// (snapshots stay readable and diffable) while still sorting by project first.
pub type ProjectKeyString = String;

/// Builds the `project/name` map key of a project-scoped object.
pub fn pkey(project: &str, name: &str) -> ProjectKeyString {
    format!("{project}/{name}")
}

impl ClusterObjects {
    /// Number of objects (not counting server config keys).
    pub fn len(&self) -> usize {
        self.members.len()
            + self.groups.len()
            + self.projects.len()
            + self.storage_pools.len()
            + self.networks.len()
            + self.profiles.len()
            + self.images.len()
            + self.instances.len()
            + self.certificates.len()
            + self.snap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0 && self.server_config.is_empty()
    }
}

/// What the fleet wants for one cluster: its spec and its objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DesiredCluster {
    pub spec: ClusterSpec,
    pub objects: ClusterObjects,
}

/// What the fleet wants, for every cluster it describes.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct DesiredState {
    pub clusters: BTreeMap<String, DesiredCluster>,
}

/// What one cluster looks like right now, as read from LXD.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LiveState {
    /// The fleet's name for the cluster.
    pub cluster: String,
    pub objects: ClusterObjects,
    /// ETags LXD returned, for If-Match. Keys: the object's `ObjectRef` display
    /// (`Kind/project/name` or `Kind/name`; images: `Image/<project>/<alias>` for any
    /// alias), `Server` for `/1.0` and `Server/<member>` for `/1.0?target=<member>`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub etags: BTreeMap<String, String>,
    /// Objects that could not be read completely (offline member, ...). The planner
    /// never infers deletions for kinds listed here.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub incomplete: Vec<Incomplete>,
    /// Fingerprint of the client certificate lxd-gitops itself connected with:
    /// never reported as unmanaged, never pruned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_fingerprint: Option<String>,
}

/// A part of live state that could not be read, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incomplete {
    pub kind: Kind,
    pub reason: String,
}

/// Whether an object carries the ownership marker of the fleet for `cluster`.
pub fn owned_by(config: &ConfigMap, cluster: &str) -> bool {
    config.get(OWNER_KEY).map(String::as_str) == Some(cluster)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(k));
        }
        assert_eq!(Kind::parse("instance"), None);
    }

    #[test]
    fn object_refs_display_with_project_when_scoped() {
        assert_eq!(ObjectRef::in_project(Kind::Instance, "web", "w1").to_string(), "Instance/web/w1");
        assert_eq!(ObjectRef::global(Kind::Project, "web").to_string(), "Project/web");
    }

    #[test]
    fn instance_defaults_match_lxd() {
        let i: Instance = serde_json::from_value(serde_json::json!({"name": "a"})).unwrap();
        assert_eq!(i.project, "default");
        assert_eq!(i.profiles, vec!["default"]);
        assert_eq!(i.state, PowerState::Running);
        assert_eq!(i.instance_type, InstanceType::Container);
    }

    #[test]
    fn unknown_fields_are_rejected() {
        let r: Result<Profile, _> = serde_json::from_value(serde_json::json!({"name": "a", "used_by": []}));
        assert!(r.is_err());
    }
}
