//! `kube-apiserver-standin`: the parts of kube-apiserver keyrot relies on, for end-to-end tests.
//!
//! Prints `listening on https://ADDR` as its only stdout line once it accepts connections.
//! `kill -HUP $(cat PIDFILE)` simulates a kube-apiserver restart: connections are refused for
//! `--restart-delay`, the key files are read again, and if they are now unusable the process
//! exits non-zero, as a real apiserver would crash-loop. A rotation plan restarts it with a
//! `command` restart running exactly that. With `--issuer-flags-manifest`, the issuer flags
//! come from that kubeadm-style manifest, read again at every restart, as a kubelet restarts a
//! static pod with its manifest's command; ServiceAccounts survive, as they do in etcd.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use standin::apiserver::{Apiserver, Config, KeyFlags, ServiceAccounts};
use standin::https;
use standin::tls::TestPki;
use tokio::net::TcpListener;
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Parser)]
#[command(version, about = "A kube-apiserver stand-in for keyrot's tests")]
struct Args {
    /// Address to listen on; port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Verification key file (repeatable; keys are taken in flag order, then file order).
    #[arg(
        long = "service-account-key-file",
        required_unless_present_any = ["signing_endpoint", "key_flags_from_manifest"],
        conflicts_with = "signing_endpoint"
    )]
    key_files: Vec<PathBuf>,
    /// The key new tokens are signed with.
    #[arg(
        long = "service-account-signing-key-file",
        required_unless_present_any = ["signing_endpoint", "key_flags_from_manifest"],
        conflicts_with = "signing_endpoint"
    )]
    signing_key_file: Option<PathBuf>,
    /// The external JWT signer's unix socket: keys and signatures come from it (KEP-740).
    #[arg(long = "service-account-signing-endpoint")]
    signing_endpoint: Option<PathBuf>,
    /// Issuer (repeatable): the first issues tokens, all are accepted.
    #[arg(
        long = "service-account-issuer",
        required_unless_present = "issuer_flags_manifest"
    )]
    issuers: Vec<String>,
    /// The discovery document's jwks_uri [default: https://LISTEN-ADDRESS/openid/v1/jwks].
    #[arg(long = "service-account-jwks-uri")]
    jwks_uri: Option<String>,
    /// Comma-separated audiences the API accepts [default: the issuers].
    #[arg(long = "api-audiences", value_delimiter = ',')]
    api_audiences: Option<Vec<String>>,
    /// Take the three issuer flags from this kubeadm-style manifest's kube-apiserver command
    /// instead, at start and at every restart.
    #[arg(long, conflicts_with_all = ["issuers", "jwks_uri", "api_audiences"])]
    issuer_flags_manifest: Option<PathBuf>,
    /// Take the key flags from that manifest too, at every restart: the key files, or the
    /// signing endpoint (kube-apiserver refuses both at once, and so does the stand-in).
    #[arg(long, requires = "issuer_flags_manifest")]
    key_flags_from_manifest: bool,
    /// Directory holding the test CA (`ca.crt`) and server certificate; created if needed.
    #[arg(long)]
    tls_dir: PathBuf,
    /// File to write this process's id to, for `kill -HUP`.
    #[arg(long)]
    pid_file: Option<PathBuf>,
    /// How long a simulated restart refuses connections.
    #[arg(long, default_value = "300ms", value_parser = humantime::parse_duration)]
    restart_delay: Duration,
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kube-apiserver-standin: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let mut config = config_now(&args)?;
    let tls = TestPki::ensure(&args.tls_dir)?.server_config()?;
    let accounts = Arc::new(ServiceAccounts::default());
    let mut hangups = signal(SignalKind::hangup()).context("cannot handle SIGHUP")?;

    // The default jwks_uri names the bound port, so bind first; nothing is announced and no
    // connection is accepted until the key files have been read.
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    let mut apiserver = Apiserver::start(&config, address, accounts.clone())?;
    if let Some(pid_file) = &args.pid_file {
        std::fs::write(pid_file, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write {}", pid_file.display()))?;
    }
    println!("listening on https://{address}");

    let mut listener = Some(listener);
    loop {
        let listening = listener.take().expect("a listener for every generation");
        let api = Arc::new(apiserver);
        let handler: https::Handler = Arc::new(move |request| api.handle(request));
        let serving = tokio::spawn(https::serve(listening, tls.clone(), handler));
        hangups.recv().await;

        // Down: the listener and every open connection go away with the task.
        serving.abort();
        let _ = serving.await;
        eprintln!(
            "restarting: refusing connections for {:?}",
            args.restart_delay
        );
        tokio::time::sleep(args.restart_delay).await;
        config = config_now(&args).context("restart failed; staying down")?;
        apiserver = Apiserver::start(&config, address, accounts.clone())
            .context("restart failed; staying down")?;
        listener = Some(rebind(address).await?);
        eprintln!(
            "restarted: {}, issuing as {}",
            apiserver.describe_keys(),
            apiserver.issuer()
        );
    }
}

/// The flags for this (re)start: from the command line, or the issuer flags from the manifest.
fn config_now(args: &Args) -> anyhow::Result<Config> {
    // With --key-flags-from-manifest these are replaced by the manifest's below.
    let keys = match (&args.signing_endpoint, &args.signing_key_file) {
        (Some(socket), _) => KeyFlags::SigningEndpoint(socket.clone()),
        (None, signing_key_file) => KeyFlags::Files {
            key_files: args.key_files.clone(),
            signing_key_file: signing_key_file.clone().unwrap_or_default(),
        },
    };
    let mut config = Config {
        keys,
        issuers: args.issuers.clone(),
        jwks_uri: args.jwks_uri.clone(),
        api_audiences: args.api_audiences.clone(),
    };
    if let Some(path) = &args.issuer_flags_manifest {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let flags = standin::manifest::issuer_flags(&text)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        if args.key_flags_from_manifest {
            config.keys = match (flags.signing_endpoint, flags.signing_key_file) {
                (Some(_), Some(_)) => anyhow::bail!(
                    "{}: service-account-signing-key-file and service-account-signing-endpoint \
                     are mutually exclusive and cannot be set at the same time",
                    path.display()
                ),
                (Some(_), None) if !flags.key_files.is_empty() => anyhow::bail!(
                    "{}: can't set `--service-account-signing-key-file` and/or \
                     `--service-account-key-file` with `--service-account-signing-endpoint` \
                     (They are mutually exclusive)",
                    path.display()
                ),
                (Some(socket), None) => KeyFlags::SigningEndpoint(socket.into()),
                (None, Some(signing)) => KeyFlags::Files {
                    key_files: flags.key_files.iter().map(PathBuf::from).collect(),
                    signing_key_file: signing.into(),
                },
                (None, None) => anyhow::bail!(
                    "{}: --service-account-signing-key-file and --service-account-issuer are \
                     required flags",
                    path.display()
                ),
            };
        }
        config.issuers = flags.issuers;
        config.jwks_uri = flags.jwks_uri;
        config.api_audiences = flags.api_audiences;
    }
    Ok(config)
}

/// Listens on the same address again. Another socket may hold the port for a moment (an
/// outgoing connection given it as its ephemeral port), so a few tries are allowed.
async fn rebind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut tries = 0;
    loop {
        match TcpListener::bind(address).await {
            Ok(listener) => return Ok(listener),
            Err(e) if tries < 20 => {
                tries += 1;
                eprintln!("cannot listen on {address} yet: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e).with_context(|| format!("cannot listen on {address} again")),
        }
    }
}
