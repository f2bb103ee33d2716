//! Object stores: a registry that builds S3, GCS, Azure and HTTP stores on first use from the
//! URL, the environment and per-store settings, with bounded timeouts so an unreachable
//! endpoint fails instead of hanging.

use std::collections::HashMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;

use datafusion::error::{DataFusionError, Result as DfResult};

use crate::confine::Confinement;
use datafusion::execution::object_store::ObjectStoreRegistry;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    ClientConfigKey, ClientOptions, CopyOptions, GetOptions, GetResult, ListResult,
    MultipartUpload, ObjectMeta, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    PutResult, RenameOptions, RetryConfig,
};
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
    confinement: Option<Arc<Confinement>>,
}

impl StoreRegistry {
    /// A registry with per-prefix settings and a request timeout.
    pub fn new(settings: Vec<StoreSettings>, timeout: Duration) -> Self {
        let mut stores: HashMap<String, Arc<dyn ObjectStore>> = HashMap::new();
        stores.insert("file://".into(), Arc::new(LocalFiles::default()));
        StoreRegistry {
            settings,
            timeout,
            stores: RwLock::new(stores),
            confinement: None,
        }
    }

    /// Serve only what `confinement` allows: local paths outside it and stores its catalog
    /// does not name fail at the store, whatever asked for them.
    pub fn confined(mut self, confinement: Arc<Confinement>) -> Self {
        let local = LocalFiles {
            inner: LocalFileSystem::new(),
            confinement: Some(confinement.clone()),
        };
        self.stores
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .insert("file://".into(), Arc::new(local));
        self.confinement = Some(confinement);
        self
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
                // Our client options replace those read from the environment: keep its
                // permission to use plain HTTP (AWS_ALLOW_HTTP, or an http:// endpoint).
                let env = |k: &str| std::env::var(k).unwrap_or_default();
                if env("AWS_ALLOW_HTTP").eq_ignore_ascii_case("true")
                    || env("AWS_ENDPOINT").starts_with("http://")
                    || env("AWS_ENDPOINT_URL").starts_with("http://")
                {
                    b = b.with_allow_http(true);
                }
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
            "file" => Arc::new(LocalFiles {
                inner: LocalFileSystem::new(),
                confinement: self.confinement.clone(),
            }),
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
        if let Some(c) = &self.confinement {
            c.check_store(url)
                .map_err(|e| DataFusionError::External(Box::new(crate::Error::from(e))))?;
        }
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

/// The local file system, refusing byte ranges that end past the end of a file before
/// reading them: `LocalFileSystem` allocates the whole requested range first, so a corrupt
/// Parquet footer asking for terabytes would abort the process instead of failing the query.
/// Confined, it also refuses paths outside the confinement's folders.
#[derive(Debug, Default)]
pub struct LocalFiles {
    inner: LocalFileSystem,
    confinement: Option<Arc<Confinement>>,
}

impl LocalFiles {
    /// Refuse `location` unless the confinement (if any) allows reading or writing it.
    fn check(&self, location: &Path, write: bool) -> object_store::Result<()> {
        let Some(c) = &self.confinement else {
            return Ok(());
        };
        let path = self.inner.path_to_filesystem(location)?;
        c.check_local(&path, write)
            .map_err(|e| object_store::Error::PermissionDenied {
                path: path.display().to_string(),
                source: e.0.into(),
            })
    }
}

/// Reads byte ranges of a local file, each into a buffer of its own. Ranges that end past the
/// end of the file are refused before anything is allocated. Each buffer is filled by the
/// kernel straight from the page cache: `LocalFileSystem` zeroes it first, which cost 4% of
/// the CPU time of a Parquet scan (TPC-H q06).
fn read_ranges(path: &std::path::Path, ranges: &[Range<u64>]) -> object_store::Result<Vec<Bytes>> {
    let failed = |source: std::io::Error| object_store::Error::Generic {
        store: "LocalFileSystem",
        source: format!("{}: {source}", path.display()).into(),
    };
    let file = std::fs::File::open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::NotFound {
            object_store::Error::NotFound {
                path: path.display().to_string(),
                source: source.into(),
            }
        } else {
            failed(source)
        }
    })?;
    let size = file.metadata().map_err(failed)?.len();
    if let Some(r) = ranges.iter().find(|r| r.end > size || r.start > r.end) {
        return Err(object_store::Error::Generic {
            store: "LocalFileSystem",
            source: format!(
                "a read asked for bytes {}..{} of a {size}-byte file; \
                 the file is corrupt or changed while it was read",
                r.start, r.end
            )
            .into(),
        });
    }
    ranges
        .iter()
        .map(|r| read_range(&file, r).map_err(failed))
        .collect()
}

/// Reads `range` of `file` into a buffer the kernel fills, without zeroing it first.
#[cfg(unix)]
fn read_range(file: &std::fs::File, range: &Range<u64>) -> std::io::Result<Bytes> {
    use std::os::fd::AsRawFd;
    let len = usize::try_from(range.end - range.start).map_err(std::io::Error::other)?;
    let mut buf: Vec<u8> = Vec::with_capacity(len);
    let mut filled = 0;
    while filled < len {
        let offset =
            libc::off_t::try_from(range.start + filled as u64).map_err(std::io::Error::other)?;
        // SAFETY: the pointer and length name the buffer's unfilled capacity, which `pread`
        // only writes to; `filled` counts the bytes it has written.
        let n = unsafe {
            libc::pread(
                file.as_raw_fd(),
                buf.as_mut_ptr().add(filled).cast(),
                len - filled,
                offset,
            )
        };
        match n {
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the file ended before the bytes a read asked for; it changed while it was read",
                ));
            }
            n if n > 0 => filled += n as usize,
            _ => {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
        }
    }
    // SAFETY: all `len` bytes were written by `pread` above.
    unsafe { buf.set_len(len) };
    Ok(Bytes::from(buf))
}

/// Reads `range` of `file`.
#[cfg(not(unix))]
fn read_range(mut file: &std::fs::File, range: &Range<u64>) -> std::io::Result<Bytes> {
    use std::io::{Read, Seek, SeekFrom};
    let len = usize::try_from(range.end - range.start).map_err(std::io::Error::other)?;
    let mut buf = vec![0; len];
    file.seek(SeekFrom::Start(range.start))?;
    file.read_exact(&mut buf)?;
    Ok(Bytes::from(buf))
}

impl fmt::Display for LocalFiles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.inner)
    }
}

#[async_trait]
impl ObjectStore for LocalFiles {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.check(location, true)?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.check(location, true)?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.check(location, false)?;
        // Ranges here are clamped to the file's size before anything is read.
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.check(location, false)?;
        let path = self.inner.path_to_filesystem(location)?;
        let ranges = ranges.to_vec();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => runtime
                .spawn_blocking(move || read_ranges(&path, &ranges))
                .await
                .map_err(|e| object_store::Error::Generic {
                    store: "LocalFileSystem",
                    source: e.into(),
                })?,
            Err(_) => read_ranges(&path, &ranges),
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let Some(c) = self.confinement.clone() else {
            return self.inner.delete_stream(locations);
        };
        let fs = LocalFileSystem::new();
        let checked = locations.map(move |p| {
            let p = p?;
            let path = fs.path_to_filesystem(&p)?;
            c.check_local(&path, true)
                .map_err(|e| object_store::Error::PermissionDenied {
                    path: p.to_string(),
                    source: e.0.into(),
                })?;
            Ok(p)
        });
        self.inner.delete_stream(checked.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check(prefix.unwrap_or(&Path::default()), false) {
            Ok(()) => self.inner.list(prefix),
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        match self.check(prefix.unwrap_or(&Path::default()), false) {
            Ok(()) => self.inner.list_with_offset(prefix, offset),
            Err(e) => futures::stream::once(async { Err(e) }).boxed(),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.check(prefix.unwrap_or(&Path::default()), false)?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.check(from, false)?;
        self.check(to, true)?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.check(from, true)?;
        self.check(to, true)?;
        self.inner.rename_opts(from, to, options).await
    }
}

/// The runtime every engine, scheduler and executor starts from: object stores from
/// `stores`, and no cache of folder listings. DataFusion keeps each folder's listing for the
/// life of the process by default, so a query would not see files written since the
/// folder was first read (a `COPY` into it, another program's new files); every query lists
/// its folders again, as DuckDB does.
pub fn runtime_builder(
    stores: Arc<dyn ObjectStoreRegistry>,
) -> datafusion::execution::runtime_env::RuntimeEnvBuilder {
    use datafusion::execution::cache::cache_manager::CacheManagerConfig;
    datafusion::execution::runtime_env::RuntimeEnvBuilder::new()
        .with_object_store_registry(stores)
        .with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;

    #[tokio::test]
    async fn local_reads_past_the_end_fail_without_allocating() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("small.bin");
        std::fs::write(&file, b"0123456789").unwrap();
        let store = LocalFiles::default();
        let path = Path::from_filesystem_path(&file).unwrap();
        let got = store.get_ranges(&path, &[2..4, 8..10]).await.unwrap();
        assert_eq!(
            got,
            vec![Bytes::from_static(b"23"), Bytes::from_static(b"89")]
        );
        // 1 TiB would abort the process if it were allocated.
        let err = store
            .get_ranges(&path, &[0..2, 4..(1 << 40)])
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains("of a 10-byte file"), "{err}");
        assert_eq!(store.get_range(&path, 5..1 << 40).await.unwrap(), "56789");
    }

    #[tokio::test]
    async fn local_ranges_read_the_files_bytes_and_a_missing_file_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("large.bin");
        let bytes: Vec<u8> = (0..3_000_000u64).map(|i| (i * 7919 % 251) as u8).collect();
        std::fs::write(&file, &bytes).unwrap();
        let store = LocalFiles::default();
        let path = Path::from_filesystem_path(&file).unwrap();
        let ranges = [
            0..1,
            5..5,
            1_000..2_500_000,
            2_999_000..3_000_000,
            0..3_000_000,
        ];
        let got = store.get_ranges(&path, &ranges).await.unwrap();
        for (r, b) in ranges.iter().zip(&got) {
            assert_eq!(
                b.as_ref(),
                &bytes[r.start as usize..r.end as usize],
                "{r:?}"
            );
        }
        // Called directly, as where no runtime runs.
        let got = read_ranges(&file, &[10..20, 30..31]).unwrap();
        assert_eq!(got[0].as_ref(), &bytes[10..20]);
        assert_eq!(got[1].as_ref(), &bytes[30..31]);

        let missing = Path::from_filesystem_path(dir.path())
            .unwrap()
            .join("gone.parquet");
        let err = store.get_ranges(&missing, &[0..4, 4..8]).await.unwrap_err();
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("gone.parquet"), "{err}");
    }

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
