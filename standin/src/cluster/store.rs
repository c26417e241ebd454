//! The objects the cluster stand-in keeps, as etcd behind kube-apiserver does: ConfigMaps and
//! Leases, one revision counter for every write, and the recent changes a watch replays.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use serde_json::{Value, json};
use tokio::sync::watch;

use crate::apiserver::objects::{timestamp, uuid};

/// A kind the store keeps, and how its objects and kube's messages name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    ConfigMap,
    Lease,
}

impl Kind {
    /// The resource as kube's messages name it: the plural, then the group unless it is core.
    pub fn qualified(self) -> &'static str {
        match self {
            Kind::ConfigMap => "configmaps",
            Kind::Lease => "leases.coordination.k8s.io",
        }
    }

    pub fn api_version(self) -> &'static str {
        match self {
            Kind::ConfigMap => "v1",
            Kind::Lease => "coordination.k8s.io/v1",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::ConfigMap => "ConfigMap",
            Kind::Lease => "Lease",
        }
    }
}

/// Why a write was refused, each answered with its own kube `Status`.
#[derive(Debug, PartialEq, Eq)]
pub enum WriteError {
    NotFound,
    AlreadyExists,
    /// The resourceVersion given is not the stored one.
    Conflict,
    /// The body is not an object of this kind with a name (422), or names another object (400).
    Invalid(String),
    BadRequest(String),
}

/// One change, as a watch delivers it.
#[derive(Debug, Clone)]
pub struct Event {
    pub revision: u64,
    /// `ADDED`, `MODIFIED` or `DELETED`.
    pub kind_of_change: &'static str,
    pub key: Key,
    pub object: Value,
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Key {
    pub kind: Kind,
    pub namespace: String,
    pub name: String,
}

/// What a watch from a revision gets.
pub enum Since {
    /// The changes after it (possibly none yet).
    Changes(Vec<Event>),
    /// The revision is older than the kept history: kube answers `410 Gone` (Expired).
    Expired { oldest: u64 },
}

pub struct Store {
    inner: Mutex<Inner>,
    /// The latest revision, for watches waiting for the next change.
    revision: watch::Sender<u64>,
    history_limit: usize,
}

struct Inner {
    revision: u64,
    objects: BTreeMap<Key, Value>,
    history: VecDeque<Event>,
}

impl Store {
    /// An empty store keeping the last `history_limit` changes for watches.
    pub fn new(history_limit: usize) -> Self {
        Store {
            inner: Mutex::new(Inner {
                revision: 1,
                objects: BTreeMap::new(),
                history: VecDeque::new(),
            }),
            revision: watch::channel(1).0,
            history_limit,
        }
    }

    pub fn get(&self, key: &Key) -> Option<Value> {
        self.lock().objects.get(key).cloned()
    }

    /// The current revision and the objects `matching` at it.
    pub fn current(&self, matching: impl Fn(&Key) -> bool) -> (u64, Vec<Value>) {
        let inner = self.lock();
        let objects = inner
            .objects
            .iter()
            .filter(|(key, _)| matching(key))
            .map(|(_, object)| object.clone())
            .collect();
        (inner.revision, objects)
    }

    pub fn revision(&self) -> u64 {
        self.lock().revision
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.revision.subscribe()
    }

    /// POST: stores `body` as a new object named by its `metadata.name`.
    pub fn create(&self, kind: Kind, namespace: &str, body: Value) -> Result<Value, WriteError> {
        let name = object_name(kind, &body)?;
        let key = Key {
            kind,
            namespace: namespace.to_string(),
            name,
        };
        let mut inner = self.lock();
        if inner.objects.contains_key(&key) {
            return Err(WriteError::AlreadyExists);
        }
        let created = stamp(kind, &key, body, uuid(), timestamp(now()));
        Ok(self.commit(&mut inner, key, "ADDED", created))
    }

    /// PUT: replaces the object if `metadata.resourceVersion` is the stored one, or is absent (an
    /// unconditional update, which kube allows for ConfigMaps and Leases).
    pub fn replace(&self, key: Key, body: Value) -> Result<Value, WriteError> {
        let name = object_name(key.kind, &body)?;
        if name != key.name {
            return Err(WriteError::BadRequest(format!(
                "the name of the object ({name}) does not match the name on the URL ({})",
                key.name
            )));
        }
        let mut inner = self.lock();
        let Some(stored) = inner.objects.get(&key) else {
            return Err(WriteError::NotFound);
        };
        let given = body["metadata"]["resourceVersion"].as_str().unwrap_or("");
        if !given.is_empty() && given != stored["metadata"]["resourceVersion"] {
            return Err(WriteError::Conflict);
        }
        // uid and creationTimestamp belong to the server, whatever the client sends.
        let uid = stored["metadata"]["uid"].as_str().unwrap_or_default();
        let created = stored["metadata"]["creationTimestamp"]
            .as_str()
            .unwrap_or_default();
        let replaced = stamp(key.kind, &key, body, uid.into(), created.into());
        Ok(self.commit(&mut inner, key, "MODIFIED", replaced))
    }

    /// DELETE: removes the object; the deleted object carries the deletion's revision.
    pub fn delete(&self, key: Key) -> Result<Value, WriteError> {
        let mut inner = self.lock();
        let Some(object) = inner.objects.get(&key).cloned() else {
            return Err(WriteError::NotFound);
        };
        Ok(self.commit(&mut inner, key, "DELETED", object))
    }

    /// The changes to objects `matching` after `revision`.
    pub fn since(&self, revision: u64, matching: impl Fn(&Key) -> bool) -> Since {
        let inner = self.lock();
        let oldest = inner.history.front().map_or(inner.revision, |e| e.revision);
        // Nothing kept between `revision` and the oldest kept change: some may be lost.
        if revision + 1 < oldest && inner.history.len() >= self.history_limit {
            return Since::Expired { oldest };
        }
        Since::Changes(
            inner
                .history
                .iter()
                .filter(|e| e.revision > revision && matching(&e.key))
                .cloned()
                .collect(),
        )
    }

    fn commit(&self, inner: &mut Inner, key: Key, change: &'static str, object: Value) -> Value {
        inner.revision += 1;
        let revision = inner.revision;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(revision.to_string());
        if change == "DELETED" {
            inner.objects.remove(&key);
        } else {
            inner.objects.insert(key.clone(), object.clone());
        }
        inner.history.push_back(Event {
            revision,
            kind_of_change: change,
            key,
            object: object.clone(),
        });
        while inner.history.len() > self.history_limit {
            inner.history.pop_front();
        }
        self.revision.send_replace(revision);
        object
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data: every change is one insert.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn object_name(kind: Kind, body: &Value) -> Result<String, WriteError> {
    if !body.is_object() {
        return Err(WriteError::BadRequest(format!(
            "the body is not a {}",
            kind.name()
        )));
    }
    match body["metadata"]["name"].as_str() {
        Some(name) if !name.is_empty() => Ok(name.to_string()),
        _ => Err(WriteError::Invalid(format!(
            "{} \"\" is invalid: metadata.name: Required value: name or generateName is required",
            kind.name()
        ))),
    }
}

/// The object as the server stores it: the client's content with the server's metadata.
fn stamp(kind: Kind, key: &Key, mut body: Value, uid: String, created: String) -> Value {
    body["kind"] = json!(kind.name());
    body["apiVersion"] = json!(kind.api_version());
    let metadata = &mut body["metadata"];
    metadata["namespace"] = json!(key.namespace);
    metadata["uid"] = json!(uid);
    metadata["creationTimestamp"] = json!(created);
    body
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> Key {
        Key {
            kind: Kind::ConfigMap,
            namespace: "ns".into(),
            name: name.into(),
        }
    }

    fn map(name: &str, rv: Option<&str>) -> Value {
        let mut body = json!({"metadata": {"name": name}, "data": {"a": "b"}});
        if let Some(rv) = rv {
            body["metadata"]["resourceVersion"] = json!(rv);
        }
        body
    }

    #[test]
    fn every_write_takes_the_next_revision() {
        let store = Store::new(10);
        let a = store.create(Kind::ConfigMap, "ns", map("a", None)).unwrap();
        let b = store.create(Kind::Lease, "ns", map("b", None)).unwrap();
        assert_eq!(a["metadata"]["resourceVersion"], "2");
        assert_eq!(b["metadata"]["resourceVersion"], "3");
        assert_eq!(b["kind"], "Lease");
        assert_eq!(
            store.create(Kind::ConfigMap, "ns", map("a", None)),
            Err(WriteError::AlreadyExists)
        );
        let replaced = store.replace(key("a"), map("a", Some("2"))).unwrap();
        assert_eq!(replaced["metadata"]["resourceVersion"], "4");
        assert_eq!(replaced["metadata"]["uid"], a["metadata"]["uid"]);
        assert_eq!(
            store.replace(key("a"), map("a", Some("2"))),
            Err(WriteError::Conflict)
        );
        assert_eq!(store.revision(), 4);
    }

    #[test]
    fn a_watch_from_before_the_kept_history_has_expired() {
        let store = Store::new(2);
        store.create(Kind::ConfigMap, "ns", map("a", None)).unwrap();
        for _ in 0..3 {
            store.replace(key("a"), map("a", None)).unwrap();
        }
        assert!(matches!(
            store.since(1, |_| true),
            Since::Expired { oldest: 4 }
        ));
        let Since::Changes(changes) = store.since(4, |_| true) else {
            panic!("revision 4 is kept");
        };
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].kind_of_change, "MODIFIED");
    }
}
