//! The snapd client against the stand-in snapd over the local (unix socket)
//! transport: every call, happy and error paths.
//!
//! snapd itself cannot run on the build machine (no systemd, no squashfs mounts),
//! so this exercises the protocol as `lxd_gitops::snap::standin` implements it from
//! snapd's documented API; it cannot catch where real snapd differs from that.

use lxd_gitops::snap::client::{conf_value_text, flatten_conf};
use lxd_gitops::snap::standin::{Standin, StandinOptions, StandinServer};
use lxd_gitops::snap::{ChangeStatus, SnapError, SnapdClient, SnapdErrorKind, Transport};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(10);

struct Fixture {
    standin: Standin,
    client: SnapdClient,
    _server: StandinServer,
    _dir: tempfile::TempDir,
}

async fn start(options: StandinOptions) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("snapd.socket");
    let standin = Standin::new(options);
    let server = standin.serve(&socket).await.unwrap();
    let client = SnapdClient::connect("m1", &Transport::Local { socket }).await.unwrap();
    Fixture { standin, client, _server: server, _dir: dir }
}

fn fast() -> StandinOptions {
    StandinOptions { step_delay: Duration::from_millis(40), ..StandinOptions::default() }
}

fn set(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.map(str::to_string))).collect()
}

#[tokio::test]
async fn snap_info_reads_revision_as_string_and_channels() {
    let f = start(fast()).await;
    let info = f.client.snap_info("lxd").await.unwrap();
    assert_eq!(info.name, "lxd");
    assert_eq!(info.version, "5.0.2-838e1b2");
    assert_eq!(info.revision, "24322");
    assert_eq!(info.channel.as_deref(), Some("5.0/stable"));
    assert_eq!(info.tracking_channel.as_deref(), Some("5.0/stable"));
    assert_eq!(info.status, "active");
    assert_eq!(info.confinement.as_deref(), Some("strict"));
}

#[tokio::test]
async fn snap_info_of_a_missing_snap_is_not_installed() {
    let f = start(StandinOptions { installed: false, ..fast() }).await;
    let e = f.client.snap_info("lxd").await.unwrap_err();
    assert!(matches!(&e, SnapError::NotInstalled { snap, .. } if snap == "lxd"), "{e}");
    let text = e.to_string();
    assert!(text.contains("member m1") && text.contains("GET /v2/snaps/lxd"), "{text}");
    assert!(text.contains("not installed"), "{text}");
    // Writes to a missing snap fail the same way.
    let e = f.client.set_conf("lxd", &set(&[("daemon.debug", Some("true"))])).await.unwrap_err();
    assert!(matches!(e, SnapError::NotInstalled { .. }), "{e}");
}

#[tokio::test]
async fn set_conf_is_a_change_that_goes_do_doing_done() {
    let f = start(StandinOptions { step_delay: Duration::from_millis(500), ..StandinOptions::default() }).await;
    assert!(f.client.get_conf("lxd", &[]).await.unwrap().is_empty());

    let id =
        f.client.set_conf("lxd", &set(&[("daemon.debug", Some("true")), ("lxcfs.cfs", Some("true"))])).await.unwrap();
    let c = f.client.change(&id).await.unwrap();
    assert_eq!((c.status, c.ready), (ChangeStatus::Do, false));
    assert_eq!(c.kind, "configure-snap");
    assert_eq!(c.summary, "Change configuration of \"lxd\" snap");
    assert_eq!(c.tasks[0].kind, "run-hook");
    // Not visible before the change is done.
    assert!(f.client.get_conf("lxd", &[]).await.unwrap().is_empty());

    tokio::time::sleep(Duration::from_millis(600)).await;
    let c = f.client.change(&id).await.unwrap();
    assert_eq!((c.status, c.ready), (ChangeStatus::Doing, false));

    let c = f.client.wait_change(&id, WAIT).await.unwrap();
    assert_eq!((c.status, c.ready), (ChangeStatus::Done, true));
    assert!(c.ready_time.is_some() && c.err.is_none());
    assert_eq!((c.tasks[0].progress.done, c.tasks[0].progress.total), (1, 1));

    // Whole document: nested, as snapd stores it.
    let doc = f.client.get_conf("lxd", &[]).await.unwrap();
    assert_eq!(doc["daemon"], json!({"debug": "true"}));
    assert_eq!(flatten_conf(&doc).len(), 2);
    // By key: dotted keys.
    let got = f.client.get_conf("lxd", &["daemon.debug", "lxcfs.cfs"]).await.unwrap();
    assert_eq!(got["daemon.debug"], json!("true"));
    assert_eq!(conf_value_text(&got["lxcfs.cfs"]), "true");
}

#[tokio::test]
async fn unset_keys_are_absent_not_errors() {
    let f = start(fast()).await;
    let id = f.client.set_conf("lxd", &set(&[("daemon.debug", Some("true"))])).await.unwrap();
    f.client.wait_change(&id, WAIT).await.unwrap();

    let got = f.client.get_conf("lxd", &["daemon.debug", "ui.enable"]).await.unwrap();
    assert_eq!(got.keys().collect::<Vec<_>>(), ["daemon.debug"]);
    // snapd answered option-not-found to the per-key request; the client then read
    // the whole document once.
    let reqs = f.standin.requests();
    assert!(
        reqs.ends_with(&[
            "GET /v2/snaps/lxd/conf?keys=daemon.debug,ui.enable".to_string(),
            "GET /v2/snaps/lxd/conf".to_string(),
        ]),
        "{reqs:?}"
    );

    // None unsets (JSON null).
    let id = f.client.set_conf("lxd", &set(&[("daemon.debug", None)])).await.unwrap();
    f.client.wait_change(&id, WAIT).await.unwrap();
    assert!(f.client.get_conf("lxd", &["daemon.debug"]).await.unwrap().is_empty());
    assert_eq!(serde_json::Value::Object(f.standin.conf()), json!({"daemon": {}}));
}

#[tokio::test]
async fn invalid_option_names_are_refused() {
    let f = start(fast()).await;
    let e = f.client.set_conf("lxd", &set(&[("Daemon.Debug", Some("x"))])).await.unwrap_err();
    assert!(
        matches!(&e, SnapError::Api { status: 400, kind: SnapdErrorKind::None, message, .. }
            if message.contains("invalid option name")),
        "{e}"
    );
}

#[tokio::test]
async fn refresh_to_the_current_channel_is_none() {
    let f = start(fast()).await;
    assert_eq!(f.client.refresh("lxd", "5.0/stable").await.unwrap(), None);
    // `5.0` means `5.0/stable`.
    assert_eq!(f.client.refresh("lxd", "5.0").await.unwrap(), None);
}

#[tokio::test]
async fn refresh_to_a_new_track_bumps_the_revision() {
    let f = start(fast()).await;
    f.standin.publish("5.21/stable", 31333, "5.21.3-c5ae129");
    let id = f.client.refresh("lxd", "5.21/stable").await.unwrap().expect("an update");
    let c = f.client.wait_change(&id, WAIT).await.unwrap();
    assert_eq!(c.kind, "refresh-snap");
    assert_eq!(c.summary, "Refresh \"lxd\" snap from \"5.21/stable\" channel");
    assert!(c.tasks.iter().any(|t| t.kind == "download-snap"));
    let info = f.client.snap_info("lxd").await.unwrap();
    assert_eq!(info.revision, "31333");
    assert_eq!(info.version, "5.21.3-c5ae129");
    assert_eq!(info.tracking_channel.as_deref(), Some("5.21/stable"));
    // Now current.
    assert_eq!(f.client.refresh("lxd", "5.21/stable").await.unwrap(), None);

    // A channel nobody published to still serves a newer revision.
    let id = f.client.refresh("lxd", "6.1/stable").await.unwrap().unwrap();
    f.client.wait_change(&id, WAIT).await.unwrap();
    let info = f.client.snap_info("lxd").await.unwrap();
    assert_eq!(info.revision, "31334");
}

#[tokio::test]
async fn refresh_to_a_channel_with_the_same_revision_only_switches() {
    let f = start(fast()).await;
    f.standin.publish("5.0/candidate", 24322, "5.0.2-838e1b2");
    let id = f.client.refresh("lxd", "5.0/candidate").await.unwrap().unwrap();
    let c = f.client.wait_change(&id, WAIT).await.unwrap();
    assert_eq!(c.kind, "refresh-snap");
    assert_eq!(c.tasks.iter().map(|t| t.kind.as_str()).collect::<Vec<_>>(), ["switch-snap-channel"]);
    let info = f.client.snap_info("lxd").await.unwrap();
    assert_eq!(info.revision, "24322");
    assert_eq!(info.tracking_channel.as_deref(), Some("5.0/candidate"));
}

#[tokio::test]
async fn a_busy_snap_is_a_conflict() {
    let f = start(StandinOptions { step_delay: Duration::from_millis(300), ..StandinOptions::default() }).await;
    let id = f.client.set_conf("lxd", &set(&[("daemon.debug", Some("true"))])).await.unwrap();
    let e = f.client.refresh("lxd", "5.21/stable").await.unwrap_err();
    match &e {
        SnapError::Conflict { change_kind, .. } => {
            assert_eq!(change_kind.as_deref(), Some("configure-snap"))
        }
        other => panic!("expected Conflict, got {other}"),
    }
    assert_eq!(e.kind(), Some(SnapdErrorKind::SnapChangeConflict));
    let text = e.to_string();
    assert!(text.contains("POST /v2/snaps/lxd") && text.contains("409"), "{text}");
    f.client.wait_change(&id, WAIT).await.unwrap();

    // A change started elsewhere (say an auto-refresh) blocks config writes too.
    f.standin.start_external_change("auto-refresh", Duration::from_millis(400));
    let e = f.client.set_conf("lxd", &set(&[("ui.enable", Some("true"))])).await.unwrap_err();
    assert!(matches!(&e, SnapError::Conflict { change_kind: Some(k), .. } if k == "auto-refresh"), "{e}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let id = f.client.set_conf("lxd", &set(&[("ui.enable", Some("true"))])).await.unwrap();
    f.client.wait_change(&id, WAIT).await.unwrap();
}

#[tokio::test]
async fn a_failed_change_is_an_error_with_snapds_text() {
    let f = start(fast()).await;
    f.standin.fail_next_change("run hook \"configure\": invalid value for daemon.group");
    let id = f.client.set_conf("lxd", &set(&[("daemon.group", Some("nope"))])).await.unwrap();
    let e = f.client.wait_change(&id, WAIT).await.unwrap_err();
    let SnapError::ChangeFailed { change, .. } = &e else {
        panic!("expected ChangeFailed, got {e}");
    };
    assert_eq!(change.status, ChangeStatus::Error);
    let text = e.to_string();
    assert!(text.contains("ended Error"), "{text}");
    assert!(text.contains("cannot perform the following tasks"), "{text}");
    assert!(text.contains("invalid value for daemon.group"), "{text}");
    assert!(text.contains("failed tasks: [Run configure hook of \"lxd\" snap"), "{text}");
    assert!(!text.contains('\n'), "one line, the reason with the failure: {text}");
    // Nothing was applied.
    assert!(f.client.get_conf("lxd", &[]).await.unwrap().is_empty());

    // Only the next change fails.
    let id = f.client.set_conf("lxd", &set(&[("daemon.group", Some("adm"))])).await.unwrap();
    f.client.wait_change(&id, WAIT).await.unwrap();
}

#[tokio::test]
async fn abort_and_timeouts() {
    let f = start(StandinOptions { step_delay: Duration::from_secs(5), ..StandinOptions::default() }).await;
    let id = f.client.set_conf("lxd", &set(&[("daemon.debug", Some("true"))])).await.unwrap();
    let e = f.client.wait_change(&id, Duration::from_millis(150)).await.unwrap_err();
    assert!(matches!(e, SnapError::ChangeTimeout { last_status: ChangeStatus::Do, .. }), "{e}");

    let c = f.client.abort_change(&id).await.unwrap();
    assert_eq!((c.status, c.ready), (ChangeStatus::Hold, true));
    let e = f.client.wait_change(&id, WAIT).await.unwrap_err();
    assert!(e.to_string().contains("ended Hold"), "{e}");
    // Nothing pending any more.
    let e = f.client.abort_change(&id).await.unwrap_err();
    assert!(matches!(&e, SnapError::Api { status: 400, message, .. } if message.contains("nothing pending")), "{e}");
    // Aborted: the snap is free again and nothing was applied.
    assert!(f.client.get_conf("lxd", &[]).await.unwrap().is_empty());
    assert_eq!(f.client.refresh("lxd", "5.0/stable").await.unwrap(), None);
}

#[tokio::test]
async fn unknown_changes_are_not_found() {
    let f = start(fast()).await;
    let e = f.client.change(&lxd_gitops::snap::ChangeId("999".into())).await.unwrap_err();
    assert!(matches!(&e, SnapError::Api { status: 404, .. }), "{e}");
}

#[tokio::test]
async fn transport_and_io_errors_name_member_and_request() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nothing.socket");
    let e = SnapdClient::connect("m7", &Transport::Local { socket: socket.clone() }).await.unwrap_err();
    assert!(matches!(e, SnapError::Transport { .. }), "{e}");
    assert!(e.to_string().contains("m7") && e.to_string().contains("nothing.socket"));

    // The socket disappears after connecting (snapd restarting).
    let f = start(fast()).await;
    drop(f._server);
    let e = f.client.snap_info("lxd").await.unwrap_err();
    assert!(matches!(e, SnapError::Io { .. }), "{e}");
    let text = e.to_string();
    assert!(text.contains("member m1") && text.contains("GET /v2/snaps/lxd"), "{text}");
    assert!(text.contains("cannot connect"), "{text}");
}
