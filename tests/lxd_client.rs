//! End-to-end tests of `lxd::LxdClient` against a real LXD daemon (never mocks).
//!
//! Owns: proving the client's contract on the wire: pinning, trust, failover,
//! both transports, ETags, operations (success, failure, vanished), uploads and
//! request counting. Must not: skip when LXD is unavailable; it fails instead.
//!
//! Each test uses the standalone daemon of `common::standalone` (started on
//! demand in a temporary LXD_DIR on 127.0.0.x). When the lab of branch `lab`
//! (`common::lab::lab()`, a real cluster) is merged, the cluster-only checks
//! (same certificate on every member, failover between members) belong there.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use common::standalone::{shared, Identity, Standalone};
use lxd_gitops::lxd::{
    fingerprint_of_der, fingerprint_of_pem, ApiPath, AuthStatus, ConnectOptions, ETag, LxdClient, LxdError, LxdRequest,
    Method, Outcome, TrustRequirement,
};
use rustls_pki_types::pem::PemObject;
use serde_json::{json, Value};
use sha2::Digest;

const WAIT: Duration = Duration::from_secs(60);

async fn connect_as(
    endpoints: &[&str],
    fingerprint: &str,
    id: &Identity,
    opts: ConnectOptions,
) -> Result<LxdClient, LxdError> {
    let endpoints: Vec<String> = endpoints.iter().map(|s| s.to_string()).collect();
    LxdClient::connect(&endpoints, fingerprint, &id.cert_pem, &id.key_pem, opts).await
}

async fn https(d: &Standalone) -> LxdClient {
    connect_as(&[&d.endpoint], &d.fingerprint, &d.trusted, ConnectOptions::default()).await.expect("connect over https")
}

async fn unix(d: &Standalone) -> LxdClient {
    LxdClient::connect(std::slice::from_ref(&d.unix_endpoint), "", "", "", ConnectOptions::default())
        .await
        .expect("connect over the unix socket")
}

/// A name no other test (or earlier run against the same daemon) uses.
fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::SeqCst))
}

#[tokio::test]
async fn pinned_fingerprint_connects_and_server_is_trusted() {
    let d = shared();
    let c = https(&d).await;
    assert_eq!(c.endpoint(), d.endpoint);
    let info = c.server_info().await.unwrap();
    assert_eq!(info.auth, AuthStatus::Trusted);
    assert!(c.is_trusted().await.unwrap());
    assert_eq!(info.certificate_fingerprint.as_deref(), Some(d.fingerprint.as_str()));
    assert!(info.server_name.is_some());
    assert!(info.has_extension("etag") && info.has_extension("projects"));
    assert!(!info.clustered);
    assert!(info.etag.is_some(), "GET /1.0 carries an ETag");
}

#[tokio::test]
async fn every_key_format_operators_use_is_accepted() {
    let d = shared();
    for id in [&d.trusted, &d.trusted_rsa, &d.trusted_sec1] {
        let c = connect_as(&[&d.endpoint], &d.fingerprint, id, ConnectOptions::default())
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", id.key_pem.lines().next().unwrap_or_default()));
        assert!(c.is_trusted().await.unwrap());
    }
}

#[tokio::test]
async fn wrong_fingerprint_is_final_and_says_what_it_got() {
    let d = shared();
    let wrong = "0".repeat(64);
    // The unix socket after it would work: a mismatch must not fail over to it.
    let err =
        connect_as(&[&d.endpoint, &d.unix_endpoint], &wrong, &d.trusted, ConnectOptions::default()).await.unwrap_err();
    match &err {
        LxdError::FingerprintMismatch { endpoint, expected, got } => {
            assert_eq!(endpoint, &d.endpoint);
            assert_eq!(expected, &wrong);
            assert_eq!(got, &d.fingerprint);
        }
        other => panic!("expected FingerprintMismatch, got {other:?}"),
    }
    assert_eq!(
        err.to_string(),
        format!(
            "server certificate fingerprint {} does not match the pinned {wrong} for {}",
            d.fingerprint, d.endpoint
        )
    );
}

#[tokio::test]
async fn untrusted_certificate_is_reported_with_the_way_out() {
    let d = shared();
    let err = connect_as(&[&d.endpoint], &d.fingerprint, &d.untrusted, ConnectOptions::default()).await.unwrap_err();
    assert!(matches!(err, LxdError::Untrusted { .. }), "{err:?}");
    assert!(err.to_string().contains("lxd-gitops login"), "{err}");

    // `login` connects anyway; then any real call is refused the same way.
    let opts = ConnectOptions { trust: TrustRequirement::AllowUntrusted, ..Default::default() };
    let c = connect_as(&[&d.endpoint], &d.fingerprint, &d.untrusted, opts).await.unwrap();
    let info = c.server_info().await.unwrap();
    assert_eq!(info.auth, AuthStatus::Untrusted);
    assert_eq!(info.certificate_fingerprint, None, "untrusted clients see no environment");
    let err = c.get::<Value>("/1.0/profiles").await.unwrap_err();
    match err {
        LxdError::Untrusted { method, path, .. } => {
            assert_eq!((method.as_str(), path.as_str()), ("GET", "/1.0/profiles"))
        }
        other => panic!("expected Untrusted, got {other:?}"),
    }
}

#[tokio::test]
async fn unreachable_endpoint_fails_over_to_the_next() {
    let d = shared();
    let dead = "https://127.0.0.6:1";
    let c = connect_as(&[dead, &d.endpoint], &d.fingerprint, &d.trusted, ConnectOptions::default()).await.unwrap();
    assert_eq!(c.endpoint(), d.endpoint);
    assert!(c.is_trusted().await.unwrap());

    let missing_socket = format!("unix:{}/nope.socket", d.dir.display());
    let err =
        connect_as(&[dead, &missing_socket], &d.fingerprint, &d.trusted, ConnectOptions::default()).await.unwrap_err();
    match &err {
        LxdError::AllEndpointsFailed { attempts } => {
            assert_eq!(attempts.len(), 2, "{err}");
            assert_eq!(attempts[0].0, dead);
            assert!(attempts[0].1.contains("127.0.0.6"), "{err}");
        }
        other => panic!("expected AllEndpointsFailed, got {other:?}"),
    }
}

#[tokio::test]
async fn hung_endpoints_time_out_and_fail_over() {
    let d = shared();
    // Accepts TCP connections and never speaks: the TLS handshake hangs.
    let tcp = std::net::TcpListener::bind("127.0.0.7:0").unwrap();
    let hung_https = format!("https://{}", tcp.local_addr().unwrap());
    // Accepts unix connections (backlog) and never answers a request.
    let sock = d.dir.join(format!("{}.socket", unique("hung")));
    let _unix = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    let hung_unix = format!("unix:{}", sock.display());
    let opts = ConnectOptions {
        connect_timeout: Duration::from_secs(1),
        request_timeout: Duration::from_secs(2),
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let c =
        connect_as(&[&hung_https, &hung_unix, &d.endpoint], &d.fingerprint, &d.trusted, opts.clone()).await.unwrap();
    assert_eq!(c.endpoint(), d.endpoint);
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());

    let err = connect_as(&[&hung_https, &hung_unix], &d.fingerprint, &d.trusted, opts).await.unwrap_err();
    let LxdError::AllEndpointsFailed { attempts } = &err else { panic!("expected AllEndpointsFailed, got {err:?}") };
    assert_eq!(attempts.len(), 2);
    assert!(attempts[1].1.contains("did not finish within 2s"), "{err}");
    std::fs::remove_file(&sock).unwrap();
}

#[tokio::test]
async fn unix_socket_transport_reads_and_writes() {
    let d = shared();
    let c = unix(&d).await;
    assert_eq!(c.endpoint(), d.unix_endpoint);
    assert!(c.is_trusted().await.unwrap(), "the socket is full admin");
    profile_round_trip(&c).await;
}

#[tokio::test]
async fn https_transport_reads_and_writes() {
    let d = shared();
    profile_round_trip(&https(&d).await).await;
}

/// Create (201 + Location), read with ETag, PUT with it, PUT with the stale one
/// (412), delete; then read the deleted profile (404).
async fn profile_round_trip(c: &LxdClient) {
    let name = unique("p");
    let created =
        c.post("/1.0/profiles", &json!({"name": name, "description": "v1", "config": {"user.a": "1"}})).await.unwrap();
    match &created {
        Outcome::Sync(s) => {
            assert_eq!(s.status, 201);
            assert_eq!(s.location.as_deref(), Some(format!("/1.0/profiles/{name}").as_str()));
        }
        other => panic!("profile create is sync, got {other:?}"),
    }
    let path = ApiPath::new("/1.0/profiles").segment(&name).project("default").to_string();
    let (mut profile, etag): (Value, _) = c.get(&path).await.unwrap();
    let etag = etag.expect("profiles carry an ETag");
    profile["description"] = json!("v2");
    c.put(&path, &profile, Some(&etag)).await.unwrap();

    profile["description"] = json!("v3");
    let err = c.put(&path, &profile, Some(&etag)).await.unwrap_err();
    match &err {
        LxdError::PreconditionFailed { method, path: p, message } => {
            assert_eq!(method, "PUT");
            assert_eq!(p, &path);
            assert!(message.starts_with("ETag doesn't match"), "{message}");
        }
        other => panic!("expected PreconditionFailed, got {other:?}"),
    }
    // Quotes are optional in If-Match.
    let (_, fresh): (Value, _) = c.get(&path).await.unwrap();
    let unquoted = ETag::parse(fresh.unwrap().as_str()).unwrap();
    c.execute(LxdRequest::new(Method::Put, path.clone()).json(&profile).unwrap().header("If-Match", unquoted.as_str()))
        .await
        .unwrap();
    let (now, _): (Value, _) = c.get(&path).await.unwrap();
    assert_eq!(now["description"], "v3");

    c.delete(&path).await.unwrap();
    let err = c.get::<Value>(&path).await.unwrap_err();
    assert!(err.is_not_found(), "{err:?}");
}

#[tokio::test]
async fn lxd_error_text_is_kept_verbatim() {
    let d = shared();
    let c = https(&d).await;
    let err = c.patch("/1.0/profiles/default", &json!({"config": {"bogus.key": "1"}}), None).await.unwrap_err();
    match &err {
        LxdError::Api { method, path, status, message } => {
            assert_eq!((method.as_str(), path.as_str()), ("PATCH", "/1.0/profiles/default"));
            assert!(matches!(*status, 400 | 500), "LXD 5.0.2 answers 400 or 500 here, got {status}");
            assert!(message.contains("bogus.key"), "{message}");
        }
        other => panic!("expected Api, got {other:?}"),
    }
    let err = c.delete("/1.0/profiles/default").await.unwrap_err();
    assert!(
        matches!(&err, LxdError::Api { status: 403, message, .. } if message.contains("cannot be deleted")),
        "{err:?}"
    );
}

#[tokio::test]
async fn async_operations_succeed_fail_and_vanish() {
    let d = shared();
    let c = https(&d).await;
    let name = unique("i");
    let create = json!({"name": name, "type": "container", "source": {"type": "none"}});
    let instances = ApiPath::new("/1.0/instances").project("default").to_string();

    let op = match c.post(&instances, &create).await.unwrap() {
        Outcome::Async(op) => op,
        other => panic!("instance create is async, got {other:?}"),
    };
    assert_eq!(op.description(), "Creating instance");
    let done = c.wait_operation(&op, WAIT).await.unwrap();
    assert_eq!(done.status_code, 200);
    assert_eq!(done.status, "Success");

    // LXD accepts the duplicate (202) and fails the operation.
    let dup = match c.post(&instances, &create).await.unwrap() {
        Outcome::Async(op) => op,
        other => panic!("duplicate create is still async in 5.0.2, got {other:?}"),
    };
    let err = c.wait_operation(&dup, WAIT).await.unwrap_err();
    match &err {
        LxdError::Operation { id, description, err: text } => {
            assert_eq!(id, dup.id());
            assert_eq!(description, "Creating instance");
            assert!(text.contains("already exists"), "{text}");
        }
        other => panic!("expected Operation, got {other:?}"),
    }

    // Deleting is async too; `finish` waits for it.
    let path = ApiPath::new("/1.0/instances").segment(&name).project("default").to_string();
    let outcome = c.delete(&path).await.unwrap();
    let Outcome::Async(del) = outcome.clone() else { panic!("instance delete is async") };
    c.finish(outcome, WAIT).await.unwrap();
    assert!(c.get::<Value>(&path).await.unwrap_err().is_not_found());

    // Finished operations are forgotten after about five seconds.
    tokio::time::sleep(Duration::from_secs(7)).await;
    let err = c.wait_operation(&del, WAIT).await.unwrap_err();
    assert!(matches!(err, LxdError::OperationVanished { .. }), "{err:?}");
    assert!(err.to_string().contains("vanished before it could be waited on"), "{err}");
}

#[tokio::test]
async fn waiting_past_the_deadline_times_out() {
    let d = shared();
    let c = https(&d).await;
    // A token operation never finishes on its own: a wait on it must time out.
    let outcome =
        c.post("/1.0/certificates", &json!({"name": unique("tok"), "type": "client", "token": true})).await.unwrap();
    let Outcome::Async(op) = outcome else { panic!("token requests are async") };
    assert_eq!(op.state.class, "token");
    assert!(op.state.metadata["secret"].is_string());
    let started = std::time::Instant::now();
    let err = c.wait_operation(&op, Duration::from_secs(2)).await.unwrap_err();
    assert!(matches!(err, LxdError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!err.to_string().contains(op.state.metadata["secret"].as_str().unwrap()));
    c.delete(&op.url).await.unwrap();
}

#[tokio::test]
async fn image_upload_streams_a_file_with_headers_over_both_transports() {
    let d = shared();
    let work = d.dir.join(unique("img"));
    std::fs::create_dir_all(work.join("rootfs")).unwrap();
    let arch = String::from_utf8(std::process::Command::new("uname").arg("-m").output().unwrap().stdout).unwrap();
    std::fs::write(
        work.join("metadata.yaml"),
        format!("architecture: {}\ncreation_date: 1700000000\nproperties:\n  os: it\n", arch.trim()),
    )
    .unwrap();
    let tarball = work.join("image.tar");
    let st = std::process::Command::new("tar")
        .arg("-C")
        .arg(&work)
        .arg("-cf")
        .arg(&tarball)
        .args(["metadata.yaml", "rootfs"])
        .status()
        .unwrap();
    assert!(st.success());
    let data = std::fs::read(&tarball).unwrap();
    let fp = hex::encode(sha2::Sha256::digest(&data));

    for c in [https(&d).await, unix(&d).await] {
        let before = c.request_count();
        let upload = LxdRequest::new(Method::Post, "/1.0/images?project=default")
            .file(&tarball, "application/octet-stream")
            .header("X-LXD-fingerprint", &fp)
            .header("X-LXD-filename", "image.tar")
            .header("X-LXD-public", "false")
            .header("X-LXD-properties", "os=it&release=x y");
        let meta = c.finish(c.execute(upload).await.unwrap(), WAIT).await.unwrap();
        assert_eq!(meta["fingerprint"], fp.as_str(), "{}", c.endpoint());
        assert_eq!(meta["size"], data.len().to_string(), "size is a string in 5.0.2");

        let path = ApiPath::new("/1.0/images").segment(&fp).to_string();
        let (image, etag): (Value, _) = c.get(&path).await.unwrap();
        assert!(etag.is_some());
        assert_eq!(image["properties"]["release"], "x y");
        let export = c.get_raw(&format!("{path}/export")).await.unwrap();
        assert_eq!(export.status, 200);
        assert_eq!(hex::encode(sha2::Sha256::digest(&export.body)), fp);
        c.finish(c.delete(&path).await.unwrap(), WAIT).await.unwrap();
        assert!(c.request_count() > before);
    }
    std::fs::remove_dir_all(&work).unwrap();
}

#[tokio::test]
async fn request_count_is_exact() {
    let d = shared();
    let c = https(&d).await;
    assert_eq!(c.request_count(), 1, "connect costs one GET /1.0");
    let before = c.request_count();
    let _: (Vec<String>, _) = c.get("/1.0/profiles").await.unwrap();
    let _: (Vec<Value>, _) =
        c.get(&ApiPath::new("/1.0/instances").recursion(1).project("default").to_string()).await.unwrap();
    assert_eq!(c.request_count(), before + 2);
    // Errors are not retried and count once.
    let _ = c.get::<Value>("/1.0/profiles/does-not-exist").await.unwrap_err();
    assert_eq!(c.request_count(), before + 3);
    // Clones share the counter.
    let c2 = c.clone();
    c2.server_info().await.unwrap();
    assert_eq!(c.request_count(), before + 4);
}

#[tokio::test]
async fn client_certificate_fingerprint_matches_the_trust_store() {
    let d = shared();
    let c = https(&d).await;
    let (certs, _): (Vec<Value>, _) = c.get("/1.0/certificates?recursion=1").await.unwrap();
    let ours = fingerprint_of_pem(&d.trusted.cert_pem).unwrap();
    let entry = certs.iter().find(|e| e["name"] == "trusted").expect("trusted entry");
    assert_eq!(entry["fingerprint"], ours.as_str());
    // And the server fingerprint is the formula applied to what GET /1.0 shows.
    let (root, _): (Value, _) = c.get("/1.0").await.unwrap();
    let pem = root["environment"]["certificate"].as_str().unwrap();
    assert_eq!(fingerprint_of_pem(pem).unwrap(), d.fingerprint);
    let der = rustls_pki_types::CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
    assert_eq!(fingerprint_of_der(&der), d.fingerprint);
}

#[tokio::test]
async fn operations_in_other_projects_are_waited_on_in_their_project() {
    let d = shared();
    let c = https(&d).await;
    let project = unique("proj");
    // Without its own profiles the project uses the default project's, which
    // have the root disk.
    let body = json!({"name": project, "config": {"features.profiles": "false", "features.images": "false"}});
    c.post("/1.0/projects", &body).await.unwrap();
    let name = unique("i");
    let instances = ApiPath::new("/1.0/instances").project(&project).to_string();
    let Outcome::Async(op) = c.post(&instances, &json!({"name": name, "source": {"type": "none"}})).await.unwrap()
    else {
        panic!("instance create is async")
    };
    // LXD 5.0.2 leaves the project out of the URL; the client adds the request's.
    assert_eq!(op.url, format!("/1.0/operations/{}?project={project}", op.id()));
    c.wait_operation(&op, WAIT).await.unwrap();
    let (list, _): (Vec<String>, _) = c.get(&instances).await.unwrap();
    assert_eq!(list, vec![format!("/1.0/instances/{name}?project={project}")]);
    let path = ApiPath::new("/1.0/instances").segment(&name).project(&project).to_string();
    c.finish(c.delete(&path).await.unwrap(), WAIT).await.unwrap();
    c.delete(&ApiPath::new("/1.0/projects").segment(&project).to_string()).await.unwrap();
}

#[tokio::test]
async fn reads_and_unsent_writes_are_retried_then_reported() {
    // A daemon of its own, stopped under the client's feet.
    let d = Standalone::start();
    let c = https(&d).await;
    let endpoint = d.endpoint.clone();
    drop(d);
    let before = c.request_count();
    let err = c.get::<Value>("/1.0/profiles").await.unwrap_err();
    assert!(matches!(&err, LxdError::Connect { endpoint: e, .. } if *e == endpoint), "{err:?}");
    assert_eq!(c.request_count(), before + 3, "a read is tried three times");
    // Nothing reached the server, so even a write may be tried again.
    let err = c.post("/1.0/profiles", &json!({"name": "x"})).await.unwrap_err();
    assert!(err.is_connect_failure(), "{err:?}");
    assert_eq!(c.request_count(), before + 6);
}

#[tokio::test]
async fn a_restricted_certificate_is_trusted_but_refused_outside_its_projects() {
    let d = shared();
    let admin = https(&d).await;
    let project = unique("rp");
    admin.post("/1.0/projects", &json!({"name": project, "config": {"features.profiles": "false"}})).await.unwrap();
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["restricted".to_string()]).unwrap().self_signed(&key).unwrap();
    let name = unique("restricted");
    // POST /1.0/certificates takes base64 of the DER, without PEM armour.
    let b64 = base64::Engine::encode(&base64::engine::general_purpose::STANDARD, cert.der());
    let body = json!({"name": name, "type": "client", "restricted": true, "projects": [project], "certificate": b64});
    let Outcome::Sync(added) = admin.post("/1.0/certificates", &body).await.unwrap() else { panic!("sync") };
    assert_eq!(added.status, 201);
    let fp = fingerprint_of_der(cert.der());
    assert_eq!(added.location.as_deref(), Some(format!("/1.0/certificates/{fp}").as_str()));

    let id = Identity { cert_pem: cert.pem(), key_pem: key.serialize_pem() };
    let c = connect_as(&[&d.endpoint], &d.fingerprint, &id, ConnectOptions::default()).await.unwrap();
    assert!(c.is_trusted().await.unwrap());
    let (_, _): (Vec<String>, _) = c.get(&ApiPath::new("/1.0/instances").project(&project).to_string()).await.unwrap();
    // Same "not authorized" text as for an untrusted certificate, but logging in
    // again would not help: an API error, not Untrusted.
    let err = c.get::<Vec<String>>("/1.0/instances?project=default").await.unwrap_err();
    assert!(matches!(&err, LxdError::Api { status: 403, message, .. } if message == "not authorized"), "{err:?}");

    admin.delete(&format!("/1.0/certificates/{fp}")).await.unwrap();
    admin.delete(&ApiPath::new("/1.0/projects").segment(&project).to_string()).await.unwrap();
}
