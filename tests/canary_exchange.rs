//! Relying-party canaries against stand-ins of the clouds' token endpoints that verify as the
//! clouds do: they fetch the discovery document and JWKS published over HTTPS, check iss, aud,
//! sub, exp and the signature, and refuse unknown kids. A real session (the executor, the real
//! publisher and key files, the canary exchange) drives a rotation on a sandbox-like plan; the
//! gate must pass on acceptance, hold on a stale JWKS until the party refreshes, and hold on a
//! wrong audience, with the cloud's own words in `keyrot status`.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chrono::Utc;
use keyrot::atomic_file::{self, Existing};
use keyrot::decision::{Gate, Phase};
use keyrot::executor::Pause;
use keyrot::keys::SigningKey;
use keyrot::session::Session;
use keyrot::state::TriggerKind;
use standin::relying_party::{Cloud, RelyingPartyServer};
use standin::static_server::StaticServer;
use standin::sts::Sts;

const ROLE: &str = "arn:aws:iam::123456789012:role/keyrot-canary";
const PROVIDER: &str = "//iam.googleapis.com/projects/123456/locations/global/workloadIdentityPools/k8s/providers/test";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const CLIENT: &str = "00000000-1111-2222-3333-444444444444";

/// The published issuer (an HTTPS static server over `www/`) and the directory everything is in.
struct Issuer {
    runtime: tokio::runtime::Runtime,
    _server: StaticServer,
    dir: tempfile::TempDir,
    url: String,
    ca_pem: Vec<u8>,
}

impl Issuer {
    fn start() -> Issuer {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let www = dir.path().join("www");
        std::fs::create_dir_all(&www).unwrap();
        let tls = dir.path().join("tls");
        let server = runtime
            .block_on(StaticServer::start(
                &www,
                "127.0.0.1:0".parse().unwrap(),
                &tls,
            ))
            .unwrap();
        let url = format!("{}/test", server.url());
        let ca_pem = std::fs::read(tls.join("ca.crt")).unwrap();
        Issuer {
            runtime,
            _server: server,
            dir,
            url,
            ca_pem,
        }
    }

    /// A relying party of `cloud` trusting this issuer for `audience` and the default subject;
    /// with `caching`, it keeps the JWKS it first fetches.
    fn party(&self, cloud: Cloud, audience: &str, caching: bool) -> RelyingPartyServer {
        let mut sts = Sts::new(&self.url, audience, &self.ca_pem).unwrap();
        if caching {
            sts = sts.caching_jwks();
        }
        let subject = keyrot::plan::DEFAULT_CANARY_SUBJECT;
        self.runtime
            .block_on(RelyingPartyServer::start(cloud, sts, subject))
            .unwrap()
    }

    /// A sandbox-like plan publishing to `www/test` with `canary` (a flow mapping) on its target,
    /// and the cluster's first key (a fixture) in place.
    fn plan(&self, canary: &str) -> PathBuf {
        let dir = self.dir.path();
        let plan = dir.join("plan.yaml");
        std::fs::write(
            &plan,
            format!(
                "cluster: test\nflavour: custom\ntestPlan: true\nkey: {{ algorithm: ES256 }}\n\
                 stateDir: state\nprivateKeyDir: keys\n\
                 apiserver:\n  verificationKeyFile: pki/sa.pub\n  signingKeyFile: pki/sa.key\n  restart: none\n\
                 probe: none\nissuer:\n  url: {}\n\
                 targets:\n  - name: www\n    localDirectory: www/test\n    cacheMaxAge: 1s\n    canary: {canary}\n\
                 timings: {{ publishSettle: 1s, retireAfter: 1h, gateTimeout: 60s, retryBackoff: 1s, retryBackoffMax: 2s }}\n",
                self.url
            ),
        )
        .unwrap();
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).unwrap();
        let fixture = common::pem("ec-p256-sec1-private.pem");
        let key = SigningKey::from_pem_file(&fixture).unwrap();
        let private = std::fs::read(&fixture).unwrap();
        atomic_file::write(&pki.join("sa.key"), &private, 0o600, Existing::Refuse).unwrap();
        let public = key.public().to_spki_pem();
        atomic_file::write(
            &pki.join("sa.pub"),
            public.as_bytes(),
            0o644,
            Existing::Refuse,
        )
        .unwrap();
        plan
    }
}

/// Runs the session until the rotation reaches promotion or waits on `stop_at` for the
/// relying parties; returns the last waiting decision's reason for that gate, if it stopped there.
fn run_until(session: &mut Session, stop_at_canary: bool) -> Option<String> {
    let started = Instant::now();
    loop {
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "the rotation did not get past publish in 60 s: {:?}",
            session.rotation()
        );
        let pause = session
            .run(&mut || false, &mut |_, _| {})
            .unwrap_or_else(|e| panic!("the session stopped: {e}"));
        let Pause::Waiting(decision) = pause else {
            unreachable!("nothing asks the session to stop")
        };
        let phase = session.rotation().map(|r| r.phase);
        if phase.is_none_or(|p| p > Phase::Publish) {
            return None;
        }
        if let Some(blocked) = decision
            .blocked_by
            .iter()
            .find(|b| b.gate == Gate::RelyingPartiesAccept)
            && stop_at_canary
        {
            return Some(blocked.reason.clone());
        }
        let wait = decision
            .wake_at
            .map_or(Duration::from_millis(200), |t| {
                (t - Utc::now()).to_std().unwrap_or_default()
            })
            .min(Duration::from_secs(2));
        std::thread::sleep(wait);
    }
}

fn open(plan: &Path) -> Session {
    let plan = keyrot::plan::load(plan).unwrap();
    let (mut session, _) = Session::open(plan).unwrap();
    session.trigger(TriggerKind::Rotate, false).unwrap();
    session
}

fn status_json(plan: &Path) -> serde_json::Value {
    let run = common::keyrot_ok(["status", "-c", plan.to_str().unwrap(), "--output", "json"]);
    serde_json::from_str(&run.stdout).unwrap()
}

/// The reason `keyrot status` gives for the relying-parties-accept gate.
fn status_reason(plan: &Path) -> String {
    let status = status_json(plan);
    let blocked = status["blocked_by"].as_array().unwrap();
    blocked
        .iter()
        .find(|b| b["gate"] == "relying-parties-accept")
        .unwrap_or_else(|| panic!("status shows no relying-parties-accept: {status:#}"))["reason"]
        .as_str()
        .unwrap()
        .to_string()
}

fn signing_kid(plan: &Path) -> String {
    let plan = keyrot::plan::load(plan).unwrap();
    let observed = keyrot::observe::observe_files(&plan).unwrap();
    observed.signing_kid().unwrap().to_string()
}

#[test]
fn aws_sts_accepts_the_canary_and_the_new_key_is_promoted() {
    let issuer = Issuer::start();
    let party = issuer.party(
        Cloud::Aws {
            role_arn: ROLE.into(),
        },
        "sts.amazonaws.com",
        false,
    );
    let plan = issuer.plan(&format!(
        "{{ kind: aws-sts, roleArn: \"{ROLE}\", endpoint: \"{}\" }}",
        party.url()
    ));
    let mut session = open(&plan);
    assert_eq!(run_until(&mut session, true), None);
    let new = session.rotation().unwrap().new_kid.clone().unwrap();
    assert_eq!(session.rotation().unwrap().phase, Phase::Retire);
    assert_eq!(signing_kid(&plan), new);
    assert_eq!((party.exchanges(), party.accepted()), (1, 1));
    let record = keyrot::canary::record::read(&session.plan().state_dir);
    let www = record.target("www").unwrap();
    assert_eq!((www.attempts, www.failures), (1, 0));
    assert_eq!(www.last.as_ref().unwrap().kid, new);
    println!("exchanges: {}", party.exchanges());
}

#[test]
fn a_gcp_pool_with_a_stale_jwks_blocks_promotion_until_it_refreshes() {
    let issuer = Issuer::start();
    let audience = format!("https:{PROVIDER}");
    let party = issuer.party(
        Cloud::Gcp {
            provider: PROVIDER.into(),
        },
        &audience,
        true,
    );
    let plan = issuer.plan(&format!(
        "{{ kind: gcp-sts, provider: \"{PROVIDER}\", endpoint: \"{}\" }}",
        party.url()
    ));
    // The pool fetched the issuer's keys before the rotation, and keeps them.
    common::keyrot_ok(["publish", "-c", plan.to_str().unwrap()]);
    issuer.runtime.block_on(party.sts().prime_jwks()).unwrap();
    let old = signing_kid(&plan);

    let mut session = open(&plan);
    let reason = run_until(&mut session, true).expect("the gate holds");
    let new = session.rotation().unwrap().new_kid.clone().unwrap();
    assert!(
        reason.contains(&format!(
            "www refused a token signed by {new}: GCP STS answered 400: invalid_grant: no key with kid"
        )),
        "{reason}"
    );
    assert_eq!(
        signing_kid(&plan),
        old,
        "nothing signs before the pool accepts"
    );
    drop(session);
    assert_eq!(
        status_reason(&plan),
        reason,
        "status shows the cloud's words"
    );

    // Still holding the old JWKS at the next look.
    let mut session = Session::open(keyrot::plan::load(&plan).unwrap()).unwrap().0;
    assert!(run_until(&mut session, true).is_some());
    assert_eq!(party.accepted(), 0);
    let refused = party.exchanges();
    assert!(refused >= 2, "{refused} exchanges");

    // The pool refreshes its cache: the next exchange passes and the new key signs.
    party.sts().forget_jwks();
    assert_eq!(run_until(&mut session, false), None);
    assert_eq!(signing_kid(&plan), new);
    assert_eq!(party.accepted(), 1);
    let record = keyrot::canary::record::read(&session.plan().state_dir);
    let www = record.target("www").unwrap();
    assert_eq!(
        (www.attempts, www.failures),
        (refused as u64 + 1, refused as u64)
    );
    println!("exchanges: {}", party.exchanges());
}

#[test]
fn entra_refuses_a_canary_for_another_audience_and_status_quotes_it() {
    let issuer = Issuer::start();
    let party = issuer.party(
        Cloud::Entra {
            tenant: TENANT.into(),
            client_id: CLIENT.into(),
        },
        "api://AzureADTokenExchange",
        false,
    );
    let plan = issuer.plan(&format!(
        "{{ kind: entra, tenant: \"{TENANT}\", clientId: \"{CLIENT}\", audience: \"api://wrong\", endpoint: \"{}\" }}",
        party.url()
    ));
    let old = signing_kid(&plan);
    let mut session = open(&plan);
    let reason = run_until(&mut session, true).expect("the gate holds");
    assert!(
        reason.contains("Entra ID answered 400: invalid_client: AADSTS70021: No matching federated identity record"),
        "{reason}"
    );
    assert!(!reason.contains("eyJ"), "no token in the reason: {reason}");
    drop(session);
    assert_eq!(status_reason(&plan), reason);
    assert_eq!(signing_kid(&plan), old);
    assert_eq!(party.accepted(), 0);
    println!("exchanges: {}", party.exchanges());
}
