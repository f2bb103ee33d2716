//! Object stores: a registry that builds S3, GCS, Azure and HTTP stores on first use from the
//! URL, the environment and per-store settings, with bounded timeouts so an unreachable
//! endpoint fails instead of hanging.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::{ClientConfigKey, ClientOptions, ObjectStore, RetryConfig};
use url::Url;

/// Settings for the stores whose URLs start with `prefix` (e.g. `s3://bucket` or `s3://`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StoreSettings {
    /// The URL prefix these settings apply to.
    pub prefix: String,
    /// Builder options by key (`endpoint`, `region`, `access_key_id`, `allow_http`, ...),
    /// named as the `object_store` crate names them for the store's kind.
    pub options: HashMap<String, String>,
}

/// Errors building a store.
#[derive(Debug, Clone, thiserror::Error)]
#[error("object store {url}: {message}")]
pub struct StoreError {
    /// The store's URL.
    pub url: String,
    /// Why it could not be built.
    pub message: String,
}

/// Builds and caches object stores by scheme and host.
#[derive(Debug)]
pub struct StoreRegistry {
    settings: Vec<StoreSettings>,
    timeout: Duration,
    stores: RwLock<HashMap<String, Arc<dyn ObjectStore>>>,
}

impl StoreRegistry {
    /// A registry with per-prefix settings and a request timeout.
    pub fn new(settings: Vec<StoreSettings>, timeout: Duration) -> Self {
        let mut stores: HashMap<String, Arc<dyn ObjectStore>> = HashMap::new();
        stores.insert("file://".into(), Arc::new(LocalFileSystem::new()));
        StoreRegistry {
            settings,
            timeout,
            stores: RwLock::new(stores),
        }
    }

    fn key(url: &Url) -> String {
        let host = url.host_str().unwrap_or("");
        match url.port() {
            Some(p) => format!("{}://{}:{}", url.scheme(), host, p),
            None => format!("{}://{}", url.scheme(), host),
        }
    }

    fn settings_for(&self, url: &Url) -> HashMap<String, String> {
        // Broader prefixes first, so the most specific one wins.
        let text = url.as_str();
        let mut matching: Vec<&StoreSettings> = self
            .settings
            .iter()
            .filter(|s| text.starts_with(s.prefix.trim_end_matches('/')))
            .collect();
        matching.sort_by_key(|s| s.prefix.len());
        let mut out = HashMap::new();
        for s in matching {
            out.extend(s.options.clone());
        }
        out
    }

    fn client_options(&self, opts: &HashMap<String, String>) -> Result<ClientOptions, String> {
        let mut client = ClientOptions::new()
            .with_timeout(self.timeout)
            .with_connect_timeout(self.timeout.min(Duration::from_secs(5)));
        for (k, v) in opts {
            if let Ok(key) = k.parse::<ClientConfigKey>() {
                client = client.with_config(key, v);
            }
        }
        Ok(client)
    }

    fn retry(&self) -> RetryConfig {
        RetryConfig {
            max_retries: 3,
            retry_timeout: self.timeout,
            ..Default::default()
        }
    }

    /// Build a store for `url` (not cached).
    pub fn build(&self, url: &Url) -> Result<Arc<dyn ObjectStore>, StoreError> {
        let err = |message: String| StoreError {
            url: Self::key(url),
            message,
        };
        let opts = self.settings_for(url);
        let client = self.client_options(&opts).map_err(err)?;
        let host = url.host_str().unwrap_or_default().to_string();
        let unknown = |k: &str, kind: &str| err(format!("unknown {kind} option '{k}'"));
        let store: Arc<dyn ObjectStore> = match url.scheme() {
            "s3" | "s3a" => {
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(&host)
                    .with_client_options(client)
                    .with_retry(self.retry());
                let mut has_region = std::env::var("AWS_REGION").is_ok()
                    || std::env::var("AWS_DEFAULT_REGION").is_ok();
                for (k, v) in &opts {
                    if k.parse::<ClientConfigKey>().is_ok() {
                        continue;
                    }
                    let key: AmazonS3ConfigKey = k.parse().map_err(|_| unknown(k, "S3"))?;
                    if matches!(key, AmazonS3ConfigKey::Region) {
                        has_region = true;
                    }
                    if matches!(key, AmazonS3ConfigKey::Endpoint) && v.starts_with("http://") {
                        b = b.with_allow_http(true);
                    }
                    b = b.with_config(key, v);
                }
                if !has_region {
                    b = b.with_region("us-east-1");
                }
                Arc::new(b.build().map_err(|e| err(e.to_string()))?)
            }
            "gs" | "gcs" => {
                let mut b = GoogleCloudStorageBuilder::from_env()
                    .with_bucket_name(&host)
                    .with_client_options(client)
                    .with_retry(self.retry());
                for (k, v) in &opts {
                    if k.parse::<ClientConfigKey>().is_ok() {
                        continue;
                    }
                    let key: GoogleConfigKey = k.parse().map_err(|_| unknown(k, "GCS"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| err(e.to_string()))?)
            }
            "az" | "azure" | "abfs" | "abfss" => {
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_url(url.as_str())
                    .with_client_options(client)
                    .with_retry(self.retry());
                for (k, v) in &opts {
                    if k.parse::<ClientConfigKey>().is_ok() {
                        continue;
                    }
                    let key: AzureConfigKey = k.parse().map_err(|_| unknown(k, "Azure"))?;
                    b = b.with_config(key, v);
                }
                Arc::new(b.build().map_err(|e| err(e.to_string()))?)
            }
            "http" | "https" => {
                let base = Self::key(url);
                let client = if url.scheme() == "http" {
                    client.with_allow_http(true)
                } else {
                    client
                };
                Arc::new(
                    HttpBuilder::new()
                        .with_url(base)
                        .with_client_options(client)
                        .with_retry(self.retry())
                        .build()
                        .map_err(|e| err(e.to_string()))?,
                )
            }
            "file" => Arc::new(LocalFileSystem::new()),
            other => return Err(err(format!("unsupported scheme '{other}'"))),
        };
        Ok(store)
    }
}

impl ObjectStoreRegistry for StoreRegistry {
    fn register_store(
        &self,
        url: &Url,
        store: Arc<dyn ObjectStore>,
    ) -> Option<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(Self::key(url), store)
    }

    fn deregister_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        self.stores
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&Self::key(url))
            .ok_or_else(|| DataFusionError::Execution(format!("no store registered for {url}")))
    }

    fn get_store(&self, url: &Url) -> DfResult<Arc<dyn ObjectStore>> {
        let key = Self::key(url);
        if let Some(s) = self
            .stores
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return Ok(s.clone());
        }
        let store = self
            .build(url)
            .map_err(|e| DataFusionError::External(Box::new(e)))?;
        let mut stores = self.stores.write().unwrap_or_else(|p| p.into_inner());
        Ok(stores.entry(key).or_insert(store).clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_are_built_per_bucket_with_settings() {
        let reg = StoreRegistry::new(
            vec![StoreSettings {
                prefix: "s3://bucket".into(),
                options: HashMap::from([
                    ("endpoint".to_string(), "http://127.0.0.1:1".to_string()),
                    ("access_key_id".to_string(), "k".to_string()),
                    ("secret_access_key".to_string(), "s".to_string()),
                ]),
            }],
            Duration::from_secs(1),
        );
        let a = reg
            .get_store(&Url::parse("s3://bucket/x").unwrap())
            .unwrap();
        let b = reg
            .get_store(&Url::parse("s3://bucket/y").unwrap())
            .unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let bad = StoreRegistry::new(
            vec![StoreSettings {
                prefix: "s3://".into(),
                options: HashMap::from([("no_such_key".to_string(), "1".to_string())]),
            }],
            Duration::from_secs(1),
        );
        let e = bad.build(&Url::parse("s3://b/").unwrap()).unwrap_err();
        assert!(e.message.contains("no_such_key"), "{e}");
    }

    #[test]
    fn gcs_and_azure_urls_build_stores() {
        let reg = StoreRegistry::new(
            vec![
                StoreSettings {
                    prefix: "gs://".into(),
                    options: HashMap::from([("skip_signature".to_string(), "true".to_string())]),
                },
                StoreSettings {
                    prefix: "abfss://".into(),
                    options: HashMap::from([("skip_signature".to_string(), "true".to_string())]),
                },
            ],
            Duration::from_secs(1),
        );
        reg.build(&Url::parse("gs://bucket/dir/").unwrap()).unwrap();
        reg.build(&Url::parse("abfss://container@account.dfs.core.windows.net/dir/").unwrap())
            .unwrap();
        let e = reg.build(&Url::parse("ftp://host/x").unwrap()).unwrap_err();
        assert!(e.message.contains("unsupported scheme"), "{e}");
    }
}
