//! Writing one document to a store without losing another writer's change: read what is there
//! (body, headers, ETag/generation), skip the write when it is already right, else write only
//! if the object is still the one read (`PutMode::Update`) or still absent (`PutMode::Create`);
//! and reading it back once its pair is written, to catch a writer that came after.

use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ObjectStoreExt, PutMode, PutOptions, PutPayload, UpdateVersion,
};

use super::Store;

/// One object to write: its key, body and the two headers verifiers see.
#[derive(Debug, Clone)]
pub struct Document<'a> {
    pub key: &'a ObjectPath,
    pub body: &'a [u8],
    pub content_type: &'a str,
    pub cache_control: &'a str,
}

/// What a key holds now, as a conditional write needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Current {
    Absent,
    Present {
        version: UpdateVersion,
        /// Body, Content-Type and Cache-Control are already the ones to write.
        same: bool,
    },
}

/// What a write did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    Unchanged,
    Created,
    Replaced,
}

impl std::fmt::Display for Written {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Written::Unchanged => "unchanged",
            Written::Created => "created",
            Written::Replaced => "replaced",
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Someone else wrote the object between keyrot's read and its write.
    #[error(
        "{url}: another writer {what} it between keyrot's read and its write; keyrot did not \
         overwrite it (stop the other writer, then publish again)"
    )]
    ConcurrentWriter { url: String, what: &'static str },
    /// The object no longer holds what keyrot wrote (or found right) when the pair is read back.
    #[error(
        "{url}: read back after publishing, it no longer holds what keyrot wrote: a second writer \
         published to this target meanwhile, and the target may serve a JWKS and a discovery \
         document from different writers (stop the other writer, then publish again)"
    )]
    Overwritten { url: String },
    #[error("{url}: cannot read it: {}", described(error))]
    Read {
        url: String,
        error: object_store::Error,
    },
    #[error("{url}: cannot write it: {}", described(error))]
    Write {
        url: String,
        error: object_store::Error,
    },
}

/// A store's error with its causes, credential-bearing query values cut.
fn described(error: &object_store::Error) -> String {
    crate::http::redact(&crate::http::chain(error))
}

/// Reads the object under the document's key.
pub async fn current(store: &Store, doc: &Document<'_>) -> Result<Current, WriteError> {
    let failed = |error| WriteError::Read {
        url: store.object_url(doc.key),
        error,
    };
    let found = match store.client.get(doc.key).await {
        Ok(found) => found,
        Err(object_store::Error::NotFound { .. }) => return Ok(Current::Absent),
        Err(e) => return Err(failed(e)),
    };
    let version = UpdateVersion {
        e_tag: found.meta.e_tag.clone(),
        version: found.meta.version.clone(),
    };
    let header = |attribute| {
        found
            .attributes
            .get(&attribute)
            .map(|v| v.as_ref().to_string())
    };
    let headers_same = header(Attribute::ContentType).as_deref() == Some(doc.content_type)
        && header(Attribute::CacheControl).as_deref() == Some(doc.cache_control);
    let body = found.bytes().await.map_err(failed)?;
    Ok(Current::Present {
        version,
        same: headers_same && body.as_ref() == doc.body,
    })
}

/// Writes the document if `expected` is still what the key holds.
pub async fn put(
    store: &Store,
    doc: &Document<'_>,
    expected: &Current,
) -> Result<Written, WriteError> {
    let url = store.object_url(doc.key);
    let (mode, written) = match expected {
        Current::Absent => (PutMode::Create, Written::Created),
        Current::Present { version, .. } => (PutMode::Update(version.clone()), Written::Replaced),
    };
    let mut attributes = Attributes::new();
    attributes.insert(Attribute::ContentType, doc.content_type.to_string().into());
    attributes.insert(
        Attribute::CacheControl,
        doc.cache_control.to_string().into(),
    );
    let options = PutOptions {
        mode,
        attributes,
        ..PutOptions::default()
    };
    let payload = PutPayload::from(doc.body.to_vec());
    match store.client.put_opts(doc.key, payload, options).await {
        Ok(_) => Ok(written),
        Err(object_store::Error::AlreadyExists { .. }) => Err(WriteError::ConcurrentWriter {
            url,
            what: "created",
        }),
        Err(object_store::Error::Precondition { .. }) => Err(WriteError::ConcurrentWriter {
            url,
            what: "changed",
        }),
        Err(error) => Err(WriteError::Write { url, error }),
    }
}

/// Reads, then writes only what differs, conditionally.
pub async fn write(store: &Store, doc: &Document<'_>) -> Result<Written, WriteError> {
    match current(store, doc).await? {
        Current::Present { same: true, .. } => Ok(Written::Unchanged),
        expected => put(store, doc, &expected).await,
    }
}

/// Reads the object back: it must still hold the document, body and headers.
pub async fn confirm(store: &Store, doc: &Document<'_>) -> Result<(), WriteError> {
    match current(store, doc).await? {
        Current::Present { same: true, .. } => Ok(()),
        _ => Err(WriteError::Overwritten {
            url: store.object_url(doc.key),
        }),
    }
}
