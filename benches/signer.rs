//! The external signer's Sign over its unix socket: latency p50/p99 of one client calling in a
//! row, and signs per second with 4 clients at once, for RS256 (RSA-2048) and ES256 (P-256).
//!
//! The signer runs in this process on its own runtime, as in `keyrot run`; the clients speak
//! gRPC over the socket exactly as kube-apiserver does, so the figures include the transport.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::measuring;
use keyrot::signer::Signer;
use keyrot::signer::proto::v1;

const CLIENTS: usize = 4;

/// A kube-apiserver-sized payload: the claims of a projected token, base64url.
const CLAIMS: &str = "eyJhdWQiOlsiaHR0cHM6Ly9rdWJlcm5ldGVzLmRlZmF1bHQuc3ZjLmNsdXN0ZXIubG9jYWwiXSwiZXhwIjoxNzAwMDAzNjA3LCJpYXQiOjE3MDAwMDAwMDAsImlzcyI6Imh0dHBzOi8vaXNzdWVyLmV4YW1wbGUuY29tL3Rlc3QiLCJrdWJlcm5ldGVzLmlvIjp7Im5hbWVzcGFjZSI6ImRlZmF1bHQiLCJwb2QiOnsibmFtZSI6InAiLCJ1aWQiOiIxIn0sInNlcnZpY2VhY2NvdW50Ijp7Im5hbWUiOiJkZWZhdWx0IiwidWlkIjoiMiJ9fSwibmJmIjoxNzAwMDAwMDAwLCJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6ZGVmYXVsdDpkZWZhdWx0In0";

fn start(dir: &Path, private: &str, public: &str) -> Signer {
    let pem = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/pem");
    std::fs::create_dir_all(dir.join("pki")).unwrap();
    std::fs::copy(pem.join(public), dir.join("pki/sa.pub")).unwrap();
    std::fs::copy(pem.join(private), dir.join("pki/sa.key")).unwrap();
    let path = dir.join("plan.yaml");
    let text = "cluster: bench\nflavour: custom\ntestPlan: true\nstateDir: state\n\
                apiserver:\n  verificationKeyFile: pki/sa.pub\n  signingKeyFile: pki/sa.key\n  \
                restart: externalSigner\nprobe: none\nissuer:\n  url: https://issuer.example.com/b\n\
                targets:\n  - name: www\n    localDirectory: www\n    cacheMaxAge: 1s\n\
                signer:\n  socket: signer.sock\n";
    std::fs::write(&path, text).unwrap();
    let plan = keyrot::plan::parse(&path, text).unwrap();
    Signer::start(&plan).unwrap().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    let (sequential, per_client) = if measuring() { (2000, 500) } else { (3, 2) };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for (alg, private, public) in [
        ("RS256", "rsa-pkcs1-private.pem", "rsa-spki-public.pem"),
        (
            "ES256",
            "ec-p256-sec1-private.pem",
            "ec-p256-spki-public.pem",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let _signer = start(dir.path(), private, public);
        let socket = dir.path().join("signer.sock");
        let client = || {
            let _entered = runtime.enter();
            v1::external_jwt_signer_client::ExternalJwtSignerClient::new(
                keyrot::signer::client::channel(&socket),
            )
        };
        let sign = |mut c: v1::external_jwt_signer_client::ExternalJwtSignerClient<_>| async move {
            c.sign(v1::SignJwtRequest {
                claims: CLAIMS.into(),
            })
            .await
            .expect("Sign answers");
            c
        };
        // One client, one call after another: the latency kube-apiserver sees per TokenRequest.
        let mut times = runtime.block_on(async {
            let mut c = client();
            c = sign(c).await; // connect outside the timing
            let mut times = Vec::with_capacity(sequential);
            for _ in 0..sequential {
                let start = Instant::now();
                c = sign(c).await;
                times.push(start.elapsed());
            }
            times
        });
        times.sort();
        // Several clients at once: what the two cores sustain.
        let started = Instant::now();
        runtime.block_on(async {
            let tasks: Vec<_> = (0..CLIENTS)
                .map(|_| {
                    let mut c = client();
                    tokio::spawn(async move {
                        for _ in 0..per_client {
                            c = sign(c).await;
                        }
                    })
                })
                .collect();
            for task in tasks {
                task.await.unwrap();
            }
        });
        let elapsed = started.elapsed();
        if measuring() {
            println!(
                "Sign {alg}: p50 {:?}, p99 {:?} over {sequential} calls; {:.0} signs/s with {CLIENTS} clients",
                percentile(&times, 0.50),
                percentile(&times, 0.99),
                (CLIENTS * per_client) as f64 / elapsed.as_secs_f64()
            );
        }
    }
}
