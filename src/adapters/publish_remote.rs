//! Publication to the targets outside this machine: both documents to an object store with
//! conditional writes and a read-back of the pair, or the JWKS into a GCP workload identity
//! provider.

use super::published::{Documents, ObjectOutcome, PublishError, TargetError};
use crate::documents::DISCOVERY_CONTENT_TYPE;
use crate::gcp_provider::{GcpError, Iam};
use crate::http::block_on;
use crate::plan::{Target, TargetKind};
use crate::stores::conditional::{self, Current, Document, Written};
use crate::stores::{self, document_keys};

/// Writes (or with `dry_run`, compares) the documents of an object-store or provider target.
pub fn publish(
    target: &Target,
    documents: &Documents,
    dry_run: bool,
) -> Result<Vec<ObjectOutcome>, PublishError> {
    if let TargetKind::GcpWorkloadIdentityProvider(provider) = &target.kind {
        return block_on(async {
            let iam = Iam::connect(provider).await?;
            let before = iam.jwks_json().await?;
            let written = match before {
                Some(stored) if stored == documents.jwks => Written::Unchanged,
                Some(_) => Written::Replaced,
                None => Written::Created,
            };
            if written != Written::Unchanged && !dry_run {
                iam.upload(&documents.jwks).await?;
            }
            Ok::<_, GcpError>(vec![ObjectOutcome {
                url: format!("{}/v1/{} (oidc.jwksJson)", provider.endpoint, provider.name),
                written,
            }])
        })
        .map_err(PublishError::nothing_written);
    }
    let objects = target
        .kind
        .objects()
        .expect("local directories are written by the caller");
    let store = stores::open(&target.kind)
        .expect("an object-store target")
        .map_err(PublishError::nothing_written)?;
    let [jwks_key, discovery_key] = document_keys(&objects.prefix);
    // In this order: see `document_keys`.
    let docs = [
        Document {
            key: &jwks_key,
            body: documents.jwks.as_bytes(),
            content_type: &objects.jwks_content_type,
            cache_control: &objects.cache_control,
        },
        Document {
            key: &discovery_key,
            body: documents.discovery.as_bytes(),
            content_type: DISCOVERY_CONTENT_TYPE,
            cache_control: &objects.cache_control,
        },
    ];
    block_on(async {
        let mut outcomes = Vec::new();
        for doc in &docs {
            let written = if dry_run {
                match conditional::current(&store, doc).await {
                    Ok(Current::Absent) => Written::Created,
                    Ok(Current::Present { same: true, .. }) => Written::Unchanged,
                    Ok(Current::Present { .. }) => Written::Replaced,
                    Err(e) => return Err(PublishError::after(outcomes, e)),
                }
            } else {
                match conditional::write(&store, doc).await {
                    Ok(written) => written,
                    Err(e) => return Err(PublishError::after(outcomes, e)),
                }
            };
            outcomes.push(ObjectOutcome {
                url: store.object_url(doc.key),
                written,
            });
        }
        if dry_run {
            return Ok(outcomes);
        }
        // Each write was conditional on its own read, so two writers can still interleave and
        // leave one's JWKS beside the other's discovery document; reading the pair back once
        // both are written catches it (the writer that came last sees its own pair).
        let mut overwritten = Vec::new();
        for doc in &docs {
            if let Err(e) = conditional::confirm(&store, doc).await {
                overwritten.push(TargetError::from(e));
            }
        }
        match overwritten.is_empty() {
            true => Ok(outcomes),
            false => Err(PublishError::after(
                outcomes,
                TargetError::ReadBack(overwritten),
            )),
        }
    })
}
