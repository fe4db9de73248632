//! `lxd-gitops login`: make the reconciler's client certificate trusted by a cluster.
//!
//! Creates the key pair in the credentials folder if missing (key mode 0600), then
//! adds the certificate to the cluster's trust store with a trust token from
//! `lxc config trust add`. The token carries the server's fingerprint, which pins
//! the connection; it must match the Cluster's `fingerprint` in the fleet.

use super::{load_fleet, or_exit, pick_clusters, runtime, runtime_config, EXIT_ERROR};
use lxd_gitops::lxd::identity::{credentials_dir, ClientIdentity, TrustToken};
use lxd_gitops::lxd::{ConnectOptions, LxdClient, TrustRequirement};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The fleet repository (to find the cluster's credentials name and pin).
    #[arg(default_value = ".")]
    pub path: PathBuf,
    #[arg(long)]
    pub cluster: String,
    /// A trust token from `lxc config trust add --name lxd-gitops` (never logged).
    #[arg(long, env = "LXD_GITOPS_TRUST_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Runtime configuration (credentials folder).
    #[arg(long)]
    pub config: Option<PathBuf>,
}

pub fn run(args: Args) -> ExitCode {
    let fleet = or_exit!(load_fleet(&args.path));
    let spec = or_exit!(pick_clusters(&fleet, Some(&args.cluster)))[0].spec.clone();
    let config = or_exit!(runtime_config(args.config.as_ref()));
    let token = match TrustToken::decode(&args.token) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    if !token.fingerprint.eq_ignore_ascii_case(&spec.fingerprint) {
        eprintln!(
            "error: the token is from a server with fingerprint {}, but the fleet pins cluster `{}` to {}",
            token.fingerprint, spec.name, spec.fingerprint
        );
        return ExitCode::from(EXIT_ERROR);
    }
    let dir = config.as_ref().and_then(|c| c.credentials_dir.clone()).unwrap_or_else(credentials_dir);
    let id = ClientIdentity::at(&dir, &spec.credentials);
    match id.ensure("lxd-gitops") {
        Ok(true) => eprintln!("created a client key pair in {}", id.cert_path.parent().unwrap_or(&dir).display()),
        Ok(false) => {}
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    }
    let (cert, key) = match id.load(&spec.credentials) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_ERROR);
        }
    };
    let mut endpoints: Vec<String> = token.addresses.iter().map(|a| format!("https://{a}")).collect();
    endpoints.extend(spec.endpoints.iter().filter(|e| e.starts_with("https://")).cloned());
    let opts = ConnectOptions { trust: TrustRequirement::AllowUntrusted, ..ConnectOptions::default() };
    let rt = runtime();
    let result: Result<(), String> = rt.block_on(async {
        let client =
            LxdClient::connect(&endpoints, &token.fingerprint, &cert, &key, opts).await.map_err(|e| e.to_string())?;
        if client.is_trusted().await.map_err(|e| e.to_string())? {
            return Ok(());
        }
        // LXD 5.0 takes the whole token in `password`; the token decides name and restrictions.
        let body = serde_json::json!({"type": "client", "name": token.client_name, "password": args.token.trim()});
        let outcome = client.post("/1.0/certificates", &body).await.map_err(|e| e.to_string())?;
        client.finish(outcome, std::time::Duration::from_secs(30)).await.map_err(|e| e.to_string())?;
        Ok(())
    });
    match result {
        Ok(()) => {
            let fp = lxd_gitops::lxd::identity::pem_fingerprint(&cert).unwrap_or_default();
            println!("trusted by cluster {} (server fingerprint {})", spec.name, token.fingerprint);
            println!("client certificate fingerprint: {fp}");
            println!("pin in the fleet's Cluster: fingerprint: \"{}\"", token.fingerprint);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: adding the client certificate to cluster {}: {e}", spec.name);
            ExitCode::from(EXIT_ERROR)
        }
    }
}
