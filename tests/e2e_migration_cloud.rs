//! End to end: an issuer migration whose documents also go to a real storage server (azurite,
//! started by scripts/test.sh). Step 2 reads that target back anonymously before any flag
//! changes; afterwards old tokens still work in the cluster and new ones verify against the new
//! public URL.

mod e2e;
mod stores;

use e2e::{AUDIENCE, KUBEADM_ISSUER, Settings, World};
use standin::sts::Sts;

#[test]
fn a_migration_published_to_azure_blob_verifies_it_before_changing_the_flags() {
    let servers = stores::servers();
    let prefix = stores::unique("migration");
    let container = "keyrot-migration";
    stores::azure_container(&servers, container);
    let world = World::start(Settings {
        kubeadm_manifest: true,
        extra_targets: stores::azure_target(&servers, "azure", container, &prefix),
        ..Settings::default()
    });
    let public = world.issuer.rsplit_once('/').unwrap().0.to_string();
    let new_issuer = format!("{public}/e2e");
    let mut plan = world.plan_yaml();
    plan.push_str(&format!(
        "issuerMigration:\n  newIssuer: {new_issuer}\n  flags: {{ kubeadmManifest: manifests/kube-apiserver.yaml }}\n  gracePeriod: 24h\n  publicCaFile: tls/ca.crt\n"
    ));
    std::fs::write(world.plan_path(), plan).unwrap();
    let api = world.api();
    let old_token = world.block_on(api.token()).unwrap();

    // dropOldIssuer is off: steps 1 to 4, and the old issuer stays accepted.
    let run = world.keyrot(&["migrate-issuer"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("step 1: target azure: published"),
        "{run:?}"
    );
    assert!(run.stdout.contains("step 4:"), "{run:?}");
    assert!(run.stdout.contains("issuer migration done"), "{run:?}");

    // The blob holds the new issuer's discovery document, readable by anyone.
    let url = format!(
        "{}/{}/{container}/{prefix}/.well-known/openid-configuration",
        servers.azure_endpoint,
        stores::AZURITE_ACCOUNT
    );
    let body = world
        .block_on(async { reqwest::get(&url).await?.text().await })
        .unwrap();
    let discovery: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(discovery["issuer"], new_issuer.as_str(), "{body}");

    // Old tokens keep working in the cluster; new ones carry the new issuer and verify outside.
    assert_eq!(world.block_on(api.review(&old_token)).unwrap(), Ok(()));
    let new_token = world.block_on(api.token()).unwrap();
    assert_eq!(world.block_on(api.review(&new_token)).unwrap(), Ok(()));
    let sts = Sts::new(&new_issuer, AUDIENCE, &world.ca_pem()).unwrap();
    world.block_on(sts.verify(&new_token)).unwrap();
    assert_ne!(new_issuer, KUBEADM_ISSUER);
}
