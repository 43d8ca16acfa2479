//! The etcd store (v3 API): the state of several gateway replicas in one etcd cluster.
//!
//! (Being written: see the replicas issue. The interface below is fixed.)

use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;

use super::{Ownership, StateError, StateStore};

/// How to reach etcd, from the config's `[state]` section.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdSettings {
    /// Client URLs of the members (`http://127.0.0.1:2379`).
    pub endpoints: Vec<String>,
    /// Every key of this platform lives under it (`/platform-gateway/prod`).
    pub prefix: String,
    /// The deadline of one state operation.
    pub timeout: Duration,
    /// Credentials, when etcd has authentication on.
    pub username: Option<String>,
    /// The password that goes with `username`.
    pub password: Option<String>,
    /// TLS to etcd.
    pub tls: Option<EtcdTls>,
}

/// TLS files for etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA bundle (PEM).
    pub ca: Option<PathBuf>,
    /// The client certificate (PEM).
    pub cert: Option<PathBuf>,
    /// The client key (PEM).
    pub key: Option<PathBuf>,
}

/// The store in etcd.
pub struct EtcdStore {
    settings: EtcdSettings,
}

impl EtcdStore {
    /// A store over the etcd cluster of `settings`.
    pub async fn connect(settings: &EtcdSettings) -> Result<EtcdStore, StateError> {
        Ok(EtcdStore {
            settings: settings.clone(),
        })
    }

    fn todo<T>(&self) -> Result<T, StateError> {
        Err(StateError::Unavailable("etcd store not built yet".into()))
    }
}

#[async_trait]
impl StateStore for EtcdStore {
    async fn get(&self, _: &str, _: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.todo()
    }
    async fn set(&self, _: &str, _: &str, _: &[u8]) -> Result<(), StateError> {
        self.todo()
    }
    async fn delete(&self, _: &str, _: &str) -> Result<(), StateError> {
        self.todo()
    }
    async fn compare_and_swap(
        &self,
        _: &str,
        _: &str,
        _: Option<&[u8]>,
        _: Option<&[u8]>,
    ) -> Result<bool, StateError> {
        self.todo()
    }
    async fn list_keys(
        &self,
        _: &str,
        _: &str,
        _: Option<&str>,
        _: usize,
    ) -> Result<Vec<String>, StateError> {
        self.todo()
    }
    async fn namespaces(&self, _: Option<&str>, _: usize) -> Result<Vec<String>, StateError> {
        self.todo()
    }
    async fn owner(&self, _: &str, _: &str) -> Result<Option<String>, StateError> {
        self.todo()
    }
    async fn record_owners(&self, _: &[Ownership]) -> Result<(), StateError> {
        self.todo()
    }
    async fn forget_owner(&self, _: &str, _: &str) -> Result<(), StateError> {
        self.todo()
    }
    async fn owners(
        &self,
        _: Option<(&str, &str)>,
        _: usize,
    ) -> Result<Vec<Ownership>, StateError> {
        self.todo()
    }
    async fn check(&self) -> Result<(), StateError> {
        self.todo()
    }
    fn describe(&self) -> String {
        format!("etcd at {}", self.settings.endpoints.join(", "))
    }
}
