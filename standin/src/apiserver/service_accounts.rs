//! ServiceAccounts kept in memory: just enough for a client to find or create its probe account.
//!
//! Every namespace is taken to exist, and has a `default` account as soon as anyone looks, as
//! kube's service-account controller makes sure of in a real cluster.

use std::collections::BTreeMap;
use std::sync::Mutex;

use serde_json::{Value, json};

use super::objects::{timestamp, uuid_from};

#[derive(Debug, Default)]
pub struct ServiceAccounts {
    inner: Mutex<Store>,
}

#[derive(Debug, Default)]
struct Store {
    accounts: BTreeMap<(String, String), Account>,
    /// Kubernetes' resourceVersion: increases with every write.
    version: u64,
}

#[derive(Debug, Clone)]
struct Account {
    uid: String,
    created: i64,
    resource_version: u64,
}

/// Creating an account that exists.
#[derive(Debug, PartialEq, Eq)]
pub struct AlreadyExists;

impl ServiceAccounts {
    /// The account as a Kubernetes object, if it exists.
    pub fn get(&self, namespace: &str, name: &str, now: i64) -> Option<Value> {
        let mut store = self.inner.lock().expect("no panics while holding the lock");
        if name == "default" {
            store.insert_if_missing(namespace, name, now);
        }
        let account = store.accounts.get(&key(namespace, name))?;
        Some(object(namespace, name, account))
    }

    /// The account's uid, if it exists.
    pub fn uid(&self, namespace: &str, name: &str, now: i64) -> Option<String> {
        let object = self.get(namespace, name, now)?;
        Some(object["metadata"]["uid"].as_str()?.to_string())
    }

    pub fn create(&self, namespace: &str, name: &str, now: i64) -> Result<Value, AlreadyExists> {
        let mut store = self.inner.lock().expect("no panics while holding the lock");
        if store.accounts.contains_key(&key(namespace, name)) {
            return Err(AlreadyExists);
        }
        let account = store.insert_if_missing(namespace, name, now);
        Ok(object(namespace, name, &account))
    }

    /// A `ServiceAccountList` of the namespace.
    pub fn list(&self, namespace: &str, now: i64) -> Value {
        let mut store = self.inner.lock().expect("no panics while holding the lock");
        store.insert_if_missing(namespace, "default", now);
        let items: Vec<Value> = store
            .accounts
            .iter()
            .filter(|((ns, _), _)| ns == namespace)
            .map(|((ns, name), account)| object(ns, name, account))
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccountList",
            "metadata": {"resourceVersion": store.version.to_string()},
            "items": items,
        })
    }
}

impl Store {
    fn insert_if_missing(&mut self, namespace: &str, name: &str, now: i64) -> Account {
        if let Some(existing) = self.accounts.get(&key(namespace, name)) {
            return existing.clone();
        }
        self.version += 1;
        let account = Account {
            // Derived from the name so that several stand-ins (the apiservers of one control
            // plane) accept each other's tokens, whose claims carry the account's uid.
            uid: uuid_from(&format!("serviceaccount/{namespace}/{name}")),
            created: now,
            resource_version: self.version,
        };
        self.accounts.insert(key(namespace, name), account.clone());
        account
    }
}

fn key(namespace: &str, name: &str) -> (String, String) {
    (namespace.to_string(), name.to_string())
}

fn object(namespace: &str, name: &str, account: &Account) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "ServiceAccount",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": account.uid,
            "resourceVersion": account.resource_version.to_string(),
            "creationTimestamp": timestamp(account.created),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_accounts_are_found_and_not_created_twice() {
        let accounts = ServiceAccounts::default();
        assert_eq!(accounts.get("ns", "probe", 0), None);
        let created = accounts.create("ns", "probe", 0).unwrap();
        assert_eq!(accounts.get("ns", "probe", 5), Some(created.clone()));
        assert_eq!(accounts.create("ns", "probe", 9), Err(AlreadyExists));
        assert_eq!(accounts.get("other", "probe", 0), None);
        assert_eq!(
            accounts.uid("ns", "probe", 0).as_deref(),
            created["metadata"]["uid"].as_str()
        );
    }

    #[test]
    fn every_namespace_has_a_default_account() {
        let accounts = ServiceAccounts::default();
        let uid = accounts.uid("anywhere", "default", 0).unwrap();
        assert_eq!(accounts.uid("anywhere", "default", 0), Some(uid));
        let list = accounts.list("anywhere", 0);
        assert_eq!(list["items"].as_array().unwrap().len(), 1);
        assert_eq!(list["items"][0]["metadata"]["name"], "default");
    }
}
