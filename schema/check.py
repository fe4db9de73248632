#!/usr/bin/env python3
"""Reference checker for lxd-gitops fleet repositories (a development aid).

The Rust loader (`lxd-gitops validate`) is authoritative. This script lets the
schema files, the example repository and the diagnostics corpus be checked
without building the crate: it reads YAML with positions (YAML 1.2 core scalars,
like the Rust loader), validates each document against its per-kind schema, and
runs an approximate version of the semantic checks (references, duplicates,
cron lines, PEM files, LXD-managed keys).

Diagnostics are printed as `file:LINE:COLUMN: message`, 1-based, with the
position conventions of tests/corpus/README.md.

Usage (needs PyYAML and jsonschema >= 4.18):
  schema/check.py repo DIR        diagnostics for one fleet repository (exit 1 if any)
  schema/check.py examples DIR    DIR must be clean; also checks modelines and that
                                  fleet.json agrees with the per-kind schemas
  schema/check.py corpus DIR      each case's diagnostics must match its expected.txt
  schema/check.py schemas         lint the schema files (descriptions, $id, Rust fields)
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from jsonschema import Draft202012Validator

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

KIND_FILES = {
    "Cluster": "cluster.json",
    "Member": "member.json",
    "ClusterGroup": "cluster-group.json",
    "Project": "project.json",
    "StoragePool": "storage-pool.json",
    "Network": "network.json",
    "Profile": "profile.json",
    "Image": "image.json",
    "Instance": "instance.json",
    "Certificate": "certificate.json",
    "Snap": "snap.json",
}
PROJECT_SCOPED = {"Network", "Profile", "Image", "Instance"}

# Mirrors src/model/names.rs.
MEMBER_LOCAL_SERVER_KEYS = {
    "core.https_address",
    "cluster.https_address",
    "core.bgp_address",
    "core.bgp_routerid",
    "core.debug_address",
    "core.dns_address",
    "core.metrics_address",
    "maas.machine",
    "storage.backups_volume",
    "storage.images_volume",
}

# Fields of the Rust types that only LXD can know: never in a fleet file.
OBSERVED = {"status", "location", "base_image", "database_roles", "revision", "pending", "members", "fingerprint"}
READ_ONLY = {"used_by", "expanded_config", "expanded_devices", "created_at", "last_used_at", "architecture",
             "managed", "locations", "cached", "size", "uploaded_at", "url", "database", "message", "server_name"}


# --------------------------------------------------------------------------- YAML

class Loader12(yaml.SafeLoader):
    """YAML 1.2 core schema scalars (`yes`, `on`, `0755` are not 1.1 booleans/octals)."""


Loader12.yaml_implicit_resolvers = {}
for _tag, _re, _first in [
    ("null", r"^(?:~|null|Null|NULL|)$", ["~", "n", "N", ""]),
    ("bool", r"^(?:true|True|TRUE|false|False|FALSE)$", list("tTfF")),
    ("int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", list("-+0123456789")),
    ("float",
     r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$",
     list("-+0123456789.")),
]:
    Loader12.add_implicit_resolver("tag:yaml.org,2002:" + _tag, re.compile(_re), _first)


def scalar_value(node: yaml.ScalarNode):
    tag, v = node.tag, node.value
    if tag.endswith(":null"):
        return None
    if tag.endswith(":bool"):
        return v in ("true", "True", "TRUE")
    if tag.endswith(":int"):
        if v.startswith("0o"):
            return int(v[2:], 8)
        if v.startswith("0x"):
            return int(v[2:], 16)
        return int(v, 10)
    if tag.endswith(":float"):
        low = v.lower()
        if low.endswith(".inf"):
            return float("-inf") if v.startswith("-") else float("inf")
        if low == ".nan":
            return float("nan")
        return float(v)
    return v


@dataclass
class Diag:
    file: str
    line: int
    col: int
    message: str
    syntax: bool = False  # YAML parser errors: columns differ between parsers

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


@dataclass
class Doc:
    file: str  # relative to the repo root, POSIX separators
    path: Path  # absolute
    value: dict
    pos: dict = field(default_factory=dict)  # instance path -> (line, col) of the value node
    keypos: dict = field(default_factory=dict)  # instance path -> (line, col) of its mapping key
    schema_ok: bool = True

    @property
    def kind(self):
        return self.value.get("kind")

    def at(self, path, key=False) -> tuple[int, int]:
        path = tuple(path)
        if key and path in self.keypos:
            return self.keypos[path]
        while path not in self.pos:
            path = path[:-1]
        return self.pos[path]


def mark(node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


def convert(node, path, doc: Doc, diags: list):
    doc.pos[path] = mark(node)
    if isinstance(node, yaml.ScalarNode):
        return scalar_value(node)
    if isinstance(node, yaml.SequenceNode):
        return [convert(n, path + (i,), doc, diags) for i, n in enumerate(node.value)]
    out = {}
    for k, v in node.value:
        if not isinstance(k, yaml.ScalarNode):
            diags.append(Diag(doc.file, *mark(k), "mapping keys must be plain strings"))
            continue
        key = k.value
        if key in out:
            diags.append(Diag(doc.file, *mark(k), f"duplicate key `{key}` in one mapping"))
        doc.keypos[path + (key,)] = mark(k)
        out[key] = convert(v, path + (key,), doc, diags)
    return out


def line_col(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1


def load_repo(root: Path, diags: list) -> list[Doc]:
    docs = []
    # Fleet documents live below clusters/; other YAML in the repository (CI, docs) is not read.
    files = sorted(p for p in (root / "clusters").rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    for path in files:
        rel = path.relative_to(root).as_posix()
        raw = path.read_bytes()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            diags.append(Diag(rel, 1, 1, f"not valid UTF-8 text (byte {e.start}): a fleet file must be UTF-8 YAML"))
            continue
        try:
            nodes = list(yaml.compose_all(text, Loader=Loader12))
        except yaml.MarkedYAMLError as e:
            m = e.problem_mark or e.context_mark
            problem = e.problem + (" (tabs cannot indent YAML)" if "'\\t'" in (e.problem or "") else "")
            diags.append(Diag(rel, m.line + 1, m.column + 1, f"YAML syntax error: {problem}", syntax=True))
            continue
        except yaml.reader.ReaderError as e:
            diags.append(Diag(rel, *line_col(text, e.position), f"YAML syntax error: {e.reason}", syntax=True))
            continue
        for node in nodes:
            if node is None:
                continue  # an empty document (only comments)
            doc = Doc(rel, path, {})
            if not isinstance(node, yaml.MappingNode):
                diags.append(Diag(rel, *mark(node), "a fleet document must be a mapping with a `kind`"))
                continue
            doc.value = convert(node, (), doc, diags)
            docs.append(doc)
    return docs


# --------------------------------------------------------------------------- schema

def load_schema(file: str) -> dict:
    return json.loads((HERE / file).read_text())


VALIDATORS = {k: Draft202012Validator(load_schema(f)) for k, f in KIND_FILES.items()}
FLEET = Draft202012Validator(load_schema("fleet.json"))


def unknown_field_hint(kind: str, key: str, allowed) -> str:
    if key in OBSERVED:
        return "observed field: LXD reports it, a fleet file cannot set it"
    if key in READ_ONLY:
        return "read-only field computed by LXD"
    if key == "cluster" and kind == "Cluster":
        return "a Cluster document has no `cluster:`"
    return "expected one of: " + ", ".join(allowed)


def false_schema_path(kind: str, e, doc: Doc) -> tuple:
    """python-jsonschema reports a `false` property subschema at the parent object
    (the Rust crate reports the property itself): find the property."""
    path = tuple(e.absolute_path)
    if list(e.schema_path)[-1:] != ["properties"]:
        return path
    schema = VALIDATORS[kind].schema
    node = schema
    for part in e.schema_path:
        node = schema["$defs"][node["$ref"].rsplit("/", 1)[-1]] if part == "$ref" else node[part]
    parent = doc.value
    for p in path:
        parent = parent[p]
    forbidden = [k for k, v in node.items() if v is False and k in parent and parent[k] == e.instance]
    return path + (forbidden[0],) if forbidden else path


def schema_diags(doc: Doc) -> list[Diag]:
    out = []
    kind = doc.kind
    for e in VALIDATORS[kind].iter_errors(doc.value):
        path = tuple(e.absolute_path)
        if "propertyNames" in e.relative_schema_path or "propertyNames" in e.schema_path:
            key = e.instance
            where = doc.at(path + (key,), key=True)
            if e.validator == "not" and "volatile" in json.dumps(e.validator_value):
                msg = f"`{key}` is managed by LXD: volatile.* and image.* keys cannot be set"
            else:
                msg = f"invalid key `{key}`: {e.message}"
            out.append(Diag(doc.file, *where, msg))
        elif e.validator == "additionalProperties":
            allowed = list(e.schema.get("properties", {}))
            for key in e.instance:
                if key not in allowed:
                    out.append(Diag(doc.file, *doc.at(path + (key,), key=True),
                                    f"unknown field `{key}` ({unknown_field_hint(kind, key, allowed)})"))
        elif e.validator == "required":
            m = re.match(r"^'(.+)' is a required property$", e.message)
            name = m.group(1) if m else e.message
            out.append(Diag(doc.file, *doc.at(path), f"missing required field `{name}`"))
        elif e.validator is None:  # a `false` subschema
            path = false_schema_path(kind, e, doc)
            out.append(Diag(doc.file, *doc.at(path), f"field `{path[-1]}` is not allowed here ({e.message})"))
        else:
            out.append(Diag(doc.file, *doc.at(path), e.message))
    return out


# --------------------------------------------------------------------------- semantics (approximate)

CRON_FIELDS = [("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}),
               ("month", 1, 12, {m: i + 1 for i, m in enumerate(
                   "jan feb mar apr may jun jul aug sep oct nov dec".split())}),
               ("day of week", 0, 7, {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())})]


def cron_error(line: str) -> str | None:
    fields = line.split()
    if len(fields) != 5:
        return f"a cron line has 5 fields (minute hour day-of-month month day-of-week), found {len(fields)}"
    for text, (name, lo, hi, names) in zip(fields, CRON_FIELDS):
        def num(s):
            if s.lower() in names:
                return names[s.lower()]
            if not s.isdigit():
                raise ValueError(f"`{s}` is not a number")
            n = int(s)
            if not lo <= n <= hi:
                raise ValueError(f"{n} is out of range {lo}-{hi}")
            return n
        try:
            for item in text.split(","):
                rng, _, step = item.partition("/")
                if step and (not step.isdigit() or int(step) == 0):
                    raise ValueError(f"bad step `{step}`")
                if rng == "*":
                    continue
                a, dash, b = rng.partition("-")
                if num(a) > (num(b) if dash else num(a)):
                    raise ValueError(f"range `{rng}` is backwards")
        except ValueError as err:
            return f"{name} field `{text}`: {err}"
    return None


PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----\s*([A-Za-z0-9+/=\s]+?)\s*-----END CERTIFICATE-----")


def pem_error(text: str) -> str | None:
    m = PEM_RE.search(text)
    if not m:
        return "no PEM certificate block (-----BEGIN CERTIFICATE-----)"
    try:
        der = base64.b64decode("".join(m.group(1).split()), validate=True)
    except binascii.Error:
        return "the PEM block is not valid base64"
    if not der.startswith(b"\x30"):
        return "the PEM block does not hold a DER certificate"
    return None


def semantic_diags(docs: list[Doc]) -> list[Diag]:
    out: list[Diag] = []
    ok = [d for d in docs if d.schema_ok]

    def s(v):
        return v if isinstance(v, str) else None

    # Clusters and duplicate objects.
    clusters: dict[str, Doc] = {}
    seen: dict[tuple, Doc] = {}
    aliases: dict[tuple, Doc] = {}
    for d in ok:
        kind = d.kind
        if kind == "Cluster":
            key, cluster = ("Cluster", d.value["name"]), d.value["name"]
            clusters.setdefault(cluster, d)
        else:
            cluster = d.value["cluster"]
            if kind == "Snap":
                key = (cluster, kind, d.value["member"])
            elif kind in PROJECT_SCOPED:
                key = (cluster, kind, d.value.get("project", "default"), d.value["name"])
            else:
                key = (cluster, kind, d.value["name"])
        name_field = "member" if kind == "Snap" else "name"
        if key in seen:
            first = seen[key]
            out.append(Diag(d.file, *d.at((name_field,)),
                            f"duplicate {kind} `{d.value[name_field]}` (first declared at {first.file}:{first.at((name_field,))[0]})"))
        else:
            seen[key] = d
        if kind == "Image":
            names = [((), d.value["name"])] + [(("aliases", i, "name"), a["name"])
                                               for i, a in enumerate(d.value.get("aliases", []))]
            for path, alias in names:
                akey = (cluster, d.value.get("project", "default"), alias)
                if akey in aliases and aliases[akey] is not d and path:
                    out.append(Diag(d.file, *d.at(path), f"duplicate image alias `{alias}` in the project"))
                aliases.setdefault(akey, d)

    for d in ok:
        if d.kind != "Cluster" and d.value["cluster"] not in clusters:
            out.append(Diag(d.file, *d.at(("cluster",)), f"no Cluster named `{d.value['cluster']}` in the repository"))

    def objs(cluster, kind):
        return {k[-1]: v for k, v in seen.items() if k[0] == cluster and k[1] == kind and len(k) == 3}

    def pobjs(cluster, kind, project):
        return {k[3]: v for k, v in seen.items() if k[0] == cluster and k[1] == kind and len(k) == 4 and k[2] == project}

    for d in ok:
        v, kind = d.value, d.kind
        if kind == "Cluster":
            for key in v.get("config", {}):
                if key in MEMBER_LOCAL_SERVER_KEYS:
                    out.append(Diag(d.file, *d.at(("config", key), key=True),
                                    f"`{key}` is a member-local server key: set it in a Member's `server_config`"))
            policy = v.get("policy", {})
            lines = [(("policy", "drift_schedule"), policy.get("drift_schedule"))]
            lines += [(("policy", "sync_windows", i, "schedule"), w.get("schedule"))
                      for i, w in enumerate(policy.get("sync_windows", []))]
            for path, line in lines:
                if line is not None and (err := cron_error(line)):
                    out.append(Diag(d.file, *d.at(path), f"invalid cron line `{line}`: {err}"))
            continue
        cluster = v["cluster"]
        if cluster not in clusters:
            continue
        projects = set(objs(cluster, "Project")) | {"default"}
        members = set(objs(cluster, "Member"))
        groups = set(objs(cluster, "ClusterGroup")) | {"default"}
        project = v.get("project", "default")
        if kind in PROJECT_SCOPED and project not in projects:
            out.append(Diag(d.file, *d.at(("project",)), f"project `{project}` not found"))
            continue
        if kind == "Member":
            for i, g in enumerate(v.get("groups", [])):
                if g not in groups:
                    out.append(Diag(d.file, *d.at(("groups", i)), f"cluster group `{g}` not found"))
            for key in v.get("server_config", {}):
                if key not in MEMBER_LOCAL_SERVER_KEYS:
                    out.append(Diag(d.file, *d.at(("server_config", key), key=True),
                                    f"`{key}` is not a member-local server key: set it in the Cluster's `config`"))
        if kind in ("StoragePool", "Network"):
            for m in v.get("member_config", {}):
                if m not in members:
                    out.append(Diag(d.file, *d.at(("member_config", m), key=True), f"member `{m}` not found"))
        if kind == "Snap" and v["member"] not in members:
            out.append(Diag(d.file, *d.at(("member",)), f"member `{v['member']}` not found"))
        if kind == "Certificate":
            for i, p in enumerate(v.get("projects", [])):
                if p not in projects:
                    out.append(Diag(d.file, *d.at(("projects", i)), f"project `{p}` not found"))
            if "certificate_file" in v:
                f = d.path.parent / v["certificate_file"]
                if not f.is_file():
                    out.append(Diag(d.file, *d.at(("certificate_file",)), f"certificate file `{v['certificate_file']}` not found"))
                elif err := pem_error(f.read_bytes().decode("utf-8", "replace")):
                    out.append(Diag(d.file, *d.at(("certificate_file",)), f"`{v['certificate_file']}` is not a PEM certificate: {err}"))
            elif err := pem_error(v.get("certificate", "")):
                out.append(Diag(d.file, *d.at(("certificate",)), f"not a PEM certificate: {err}"))
        if kind == "Image":
            src = v["source"]
            if "file" in src and not (d.path.parent / src["file"]).is_file():
                out.append(Diag(d.file, *d.at(("source", "file")), f"image file `{src['file']}` not found"))
            if "certificate" in src and (err := pem_error(src["certificate"])):
                out.append(Diag(d.file, *d.at(("source", "certificate")), f"not a PEM certificate: {err}"))
        if kind == "Instance":
            profiles = set(pobjs(cluster, "Profile", project)) | {"default"}
            for i, p in enumerate(v.get("profiles", ["default"])):
                if p not in profiles:
                    out.append(Diag(d.file, *d.at(("profiles", i)), f"profile `{p}` not found in project `{project}`"))
            if "image" in v and v["image"] not in pobjs(cluster, "Image", project):
                out.append(Diag(d.file, *d.at(("image",)), f"image `{v['image']}` not found in project `{project}`"))
            t = v.get("target")
            if t is not None:
                if t.startswith("@") and t[1:] not in groups:
                    out.append(Diag(d.file, *d.at(("target",)), f"target cluster group `{t[1:]}` not found"))
                elif not t.startswith("@") and t not in members:
                    out.append(Diag(d.file, *d.at(("target",)), f"target member `{t}` not found"))
            for key in v.get("config", {}):
                if key.startswith(("volatile.", "image.")):
                    out.append(Diag(d.file, *d.at(("config", key), key=True),
                                    f"`{key}` is managed by LXD: volatile.* and image.* keys cannot be set"))
    return out


def check_repo(root: Path) -> tuple[list[Diag], list[Doc]]:
    diags: list[Diag] = []
    docs = load_repo(root, diags)
    for d in docs:
        kind = d.value.get("kind")
        if "kind" not in d.value:
            diags.append(Diag(d.file, *d.at(()), "missing required field `kind` (one of " + ", ".join(KIND_FILES) + ")"))
            d.schema_ok = False
        elif not isinstance(kind, str) or kind not in KIND_FILES:
            diags.append(Diag(d.file, *d.at(("kind",)), f"unknown kind `{kind}` (one of " + ", ".join(KIND_FILES) + ")"))
            d.schema_ok = False
        else:
            errs = schema_diags(d)
            diags += errs
            d.schema_ok = not errs
    diags += semantic_diags(docs)
    diags.sort(key=lambda x: (x.file, x.line, x.col, x.message))
    return diags, docs


# --------------------------------------------------------------------------- modes

def mode_repo(root: Path) -> int:
    diags, _ = check_repo(root)
    for d in diags:
        print(d)
    return 1 if diags else 0


MODELINE = re.compile(r"^# yaml-language-server: \$schema=(\S+)$")


def mode_examples(root: Path) -> int:
    diags, docs = check_repo(root)
    problems = [str(d) for d in diags]
    by_file: dict[Path, set] = {}
    for d in docs:
        by_file.setdefault(d.path, set()).add(d.kind)
        if not FLEET.is_valid(d.value):
            problems.append(f"{d.file}: valid against {KIND_FILES[d.kind]} but not against fleet.json")
    for path, kinds in sorted(by_file.items()):
        rel = path.relative_to(root).as_posix()
        first = path.read_text().splitlines()[0]
        m = MODELINE.match(first)
        if not m:
            problems.append(f"{rel}:1:1: missing `# yaml-language-server: $schema=...` modeline")
            continue
        want = KIND_FILES[next(iter(kinds))] if len(kinds) == 1 else "fleet.json"
        got = (path.parent / m.group(1)).resolve()
        if got != HERE / want:
            problems.append(f"{rel}:1:1: modeline points at {m.group(1)}, expected the path of schema/{want}")
    for p in problems:
        print(p)
    print(f"{len(docs)} documents in {len(by_file)} files: {'OK' if not problems else 'FAILED'}")
    return 1 if problems else 0


EXPECTED = re.compile(r"^(.+?):(\d+):(\d+): (.+)$")


def mode_corpus(root: Path) -> int:
    failed = 0
    cases = sorted(p for p in root.iterdir() if p.is_dir())
    for case in cases:
        exp_file = case / "expected.txt"
        if not exp_file.is_file():
            print(f"{case.name}: no expected.txt")
            failed += 1
            continue
        expected = []
        for n, line in enumerate(exp_file.read_text().splitlines(), 1):
            if not line.strip() or line.startswith("#"):
                continue
            m = EXPECTED.match(line)
            if not m:
                print(f"{case.name}/expected.txt:{n}: malformed line {line!r}")
                failed += 1
                continue
            expected.append((m.group(1), int(m.group(2)), int(m.group(3)), m.group(4)))
        diags, _ = check_repo(case)

        def matches(d: Diag, e) -> bool:
            return (d.file == e[0] and d.line == e[1] and (d.syntax or d.col == e[2])
                    and e[3].lower() in d.message.lower())

        missing = [e for e in expected if not any(matches(d, e) for d in diags)]
        unexpected = [d for d in diags if not any(matches(d, e) for e in expected)]
        status = "ok" if not missing and not unexpected else "FAIL"
        print(f"{status:4} {case.name} ({len(expected)} expected, {len(diags)} diagnostics)")
        for e in missing:
            print(f"     missing:    {e[0]}:{e[1]}:{e[2]}: {e[3]}")
        for d in unexpected:
            print(f"     unexpected: {d}")
        if status != "ok":
            failed += 1
    print(f"{len(cases) - failed}/{len(cases)} cases ok")
    return 1 if failed else 0


def rust_struct_fields(src: str) -> dict[str, set]:
    """Field names of each `pub struct` in the model, after serde renames, minus observed ones."""
    out = {}
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", src, re.S):
        fields, pending_attrs = set(), ""
        for line in m.group(2).splitlines():
            line = line.strip()
            if line.startswith("///") or line.startswith("#["):
                pending_attrs += line + "\n"
                continue
            f = re.match(r"pub (\w+):", line)
            if f:
                name = f.group(1)
                r = re.search(r'rename = "([^"]+)"', pending_attrs)
                if r:
                    name = r.group(1)
                if "Observed" not in pending_attrs:
                    fields.add(name)
                pending_attrs = ""
        out[m.group(1)] = fields
    return out


def mode_schemas() -> int:
    problems = []
    structs = rust_struct_fields((ROOT / "src/model/mod.rs").read_text())
    rust_of = {"Cluster": "ClusterSpec", "Snap": "SnapSettings"}
    # Fields the Rust type has but a fleet file must not: computed by the loader.
    not_in_fleet = {("Certificate", "fingerprint")}
    for file in sorted(HERE.glob("*.json")):
        schema = json.loads(file.read_text())
        Draft202012Validator.check_schema(schema)
        for key in ("$schema", "$id", "title", "description", "type", "required"):
            if key not in schema:
                problems.append(f"{file.name}: no `{key}`")
        if schema.get("$id") != "https://lxd-gitops.dev/schema/" + file.name:
            problems.append(f"{file.name}: $id does not match the file name")

        def walk(node, where):
            if isinstance(node, dict):
                for name, sub in node.get("properties", {}).items():
                    if isinstance(sub, dict) and "description" not in sub:
                        problems.append(f"{file.name}: {where}/properties/{name} has no description")
                for k, sub in node.items():
                    if k not in ("if", "not", "dependentSchemas"):  # conditions, not fields editors show
                        walk(sub, f"{where}/{k}")
            elif isinstance(node, list):
                for i, sub in enumerate(node):
                    walk(sub, f"{where}/{i}")
        walk(schema, "#")
        if file.name == "fleet.json":
            continue
        if schema.get("additionalProperties") is not False:
            problems.append(f"{file.name}: additionalProperties must be false")
        kind = schema["properties"]["kind"]["const"]
        want = set(structs[rust_of.get(kind, kind)]) | {"kind"} | ({"cluster"} if kind != "Cluster" else set())
        want -= {f for k, f in not_in_fleet if k == kind}
        have = set(schema["properties"])
        if want != have:
            problems.append(f"{file.name}: fields differ from the Rust type: missing {sorted(want - have)}, extra {sorted(have - want)}")
        nested = {"Cluster": [("Policy", ("policy",)), ("SyncWindow", ("policy", "sync_windows", "items")),
                              ("SnapDefaults", ("snap",))],
                  "Image": [("ImageSource", ("source",)), ("ImageAlias", ("aliases", "items"))]}
        for struct, path in nested.get(kind, []):
            node = schema
            for p in path:
                node = node["items"] if p == "items" else node["properties"][p]
            node_props = set(node.get("properties", {}))
            if node_props != structs[struct]:
                problems.append(f"{file.name}: {'.'.join(path)} fields differ from Rust {struct}: "
                                f"{sorted(structs[struct] ^ node_props)}")
    for p in problems:
        print(p)
    print("schemas: " + ("OK" if not problems else "FAILED"))
    return 1 if problems else 0


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[1] == "schemas":
        return mode_schemas()
    if len(argv) == 3 and argv[1] in ("repo", "examples", "corpus"):
        root = Path(argv[2]).resolve()
        return {"repo": mode_repo, "examples": mode_examples, "corpus": mode_corpus}[argv[1]](root)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
