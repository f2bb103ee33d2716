//! Confinement: the files and stores a confined engine (such as `strata serve`'s) may read
//! and write — its catalog's datasets, folders given as read and write roots, and the object
//! store URLs its catalog names. Statements are checked before anything runs; the local
//! file store checks every path again, so a path no statement check saw (a symlink, a table
//! created earlier) cannot leave the roots either.

use std::path::{Component, Path, PathBuf};

use datafusion::sql::parser::Statement as DfStatement;
use url::Url;

use crate::sql::{ArgValue, TableFunctionCall};

/// Where a confined engine may read and write. Paths are compared after symlinks and `..`
/// are resolved.
#[derive(Debug, Clone, Default)]
pub struct Confinement {
    read: Vec<PathBuf>,
    write: Vec<PathBuf>,
    urls: Vec<String>,
}

/// Why an access was refused: one line naming the location and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

impl Confinement {
    /// Nothing but what is added: roots, stores, and (by the engine) the catalog's datasets.
    pub fn new() -> Self {
        Confinement::default()
    }

    /// Let statements read files under `dir`.
    pub fn read_root(mut self, dir: impl AsRef<Path>) -> Result<Self, Refused> {
        self.read.push(canonical_root(dir.as_ref())?);
        Ok(self)
    }

    /// Let statements write (and read) files under `dir`.
    pub fn write_root(mut self, dir: impl AsRef<Path>) -> Result<Self, Refused> {
        self.write.push(canonical_root(dir.as_ref())?);
        Ok(self)
    }

    /// Let statements read URLs that start with `prefix` (e.g. `s3://bucket/trips/`).
    pub fn store(mut self, prefix: impl Into<String>) -> Self {
        self.urls.push(prefix.into());
        self
    }

    /// Allow reading a dataset's location: a local file, folder or glob (its folder), or a
    /// URL. Used for the catalog's datasets, which a confined engine always serves.
    pub(crate) fn allow_dataset(&mut self, location: &str) {
        match local_path(location) {
            Some(path) => {
                if let Ok(p) = resolve(&glob_base(&path)) {
                    self.read.push(p);
                }
            }
            None => self.urls.push(location.to_string()),
        }
    }

    /// Whether a statement may run: every location it reads (`FROM 'path'`, `read_*`,
    /// `list_files`, `parquet_metadata`, `CREATE EXTERNAL TABLE ... LOCATION`) is allowed, it
    /// writes (`COPY ... TO`) only under the write roots, and it sets nothing that would
    /// widen what the engine reaches (`datafusion.catalog.*`, `datafusion.runtime.*`).
    /// `is_dataset` tells a catalog table's name, which a table function may take instead
    /// of a location.
    pub fn check_statement(
        &self,
        stmt: &DfStatement,
        calls: &[(String, TableFunctionCall)],
        is_dataset: &dyn Fn(&str) -> bool,
    ) -> Result<(), Refused> {
        for (_, call) in calls {
            for arg in &call.positional {
                let values = match arg {
                    ArgValue::Text(t) => std::slice::from_ref(t),
                    ArgValue::List(l) => l.as_slice(),
                };
                for v in values.iter().filter(|v| !is_dataset(v)) {
                    self.check_read(v)?;
                }
            }
        }
        match stmt {
            DfStatement::CreateExternalTable(c) => {
                c.locations.iter().try_for_each(|l| self.check_read(l))
            }
            DfStatement::CopyTo(c) => self.check_write(&c.target),
            DfStatement::Explain(e) => self.check_statement(&e.statement, &[], is_dataset),
            DfStatement::Statement(_) | DfStatement::Reset(_) => {
                match crate::sql::changed_setting(stmt) {
                    Some(name) => check_setting(&name),
                    None => Ok(()),
                }
            }
        }
    }

    /// Whether a statement may read `location` (a path, glob or URL).
    pub fn check_read(&self, location: &str) -> Result<(), Refused> {
        match local_path(location) {
            Some(path) => {
                let resolved = resolve(&glob_base(&path))?;
                if self
                    .read
                    .iter()
                    .chain(&self.write)
                    .any(|r| resolved.starts_with(r))
                {
                    Ok(())
                } else {
                    Err(Refused(format!(
                        "'{location}' is outside the folders this server may read{}",
                        listed(" (", &self.read, ")")
                    )))
                }
            }
            None => self.check_url(location),
        }
    }

    /// Whether a statement may write to `location`.
    pub fn check_write(&self, location: &str) -> Result<(), Refused> {
        let Some(path) = local_path(location) else {
            return Err(Refused(format!(
                "'{location}': this server writes only to local folders under its write roots"
            )));
        };
        let resolved = resolve(&path)?;
        if self.write.iter().any(|r| resolved.starts_with(r)) {
            Ok(())
        } else if self.write.is_empty() {
            Err(Refused(format!(
                "'{location}': this server has no folder it may write to (--write-root)"
            )))
        } else {
            Err(Refused(format!(
                "'{location}' is outside the folders this server may write to{}",
                listed(" (", &self.write, ")")
            )))
        }
    }

    fn check_url(&self, location: &str) -> Result<(), Refused> {
        let normalized = normalize_url(location);
        if self
            .urls
            .iter()
            .any(|u| normalized.starts_with(&normalize_url(u)))
        {
            Ok(())
        } else {
            Err(Refused(format!(
                "'{location}' is not a store this server's catalog names"
            )))
        }
    }

    /// Whether the object store for `url` (scheme and host) serves any allowed location.
    pub(crate) fn check_store(&self, url: &Url) -> Result<(), Refused> {
        if url.scheme() == "file" {
            return Ok(());
        }
        let key = normalize_url(url.as_str());
        let key = key.trim_end_matches('/');
        let serves = |u: &String| {
            let u = normalize_url(u);
            u == key || u.starts_with(&format!("{key}/"))
        };
        if self.urls.iter().any(serves) {
            Ok(())
        } else {
            Err(Refused(format!(
                "'{url}' is not a store this server's catalog names"
            )))
        }
    }

    /// The store-level check of a local path (absolute, as the file store sees it).
    pub(crate) fn check_local(&self, path: &Path, write: bool) -> Result<(), Refused> {
        let resolved = resolve(path)?;
        let allowed = if write {
            self.write.iter().any(|r| resolved.starts_with(r))
        } else {
            self.read
                .iter()
                .chain(&self.write)
                .any(|r| resolved.starts_with(r))
        };
        if allowed {
            Ok(())
        } else {
            Err(Refused(format!(
                "{} is outside the folders this server may {}",
                path.display(),
                if write { "write to" } else { "read" }
            )))
        }
    }
}

fn listed(open: &str, roots: &[PathBuf], close: &str) -> String {
    if roots.is_empty() {
        return String::new();
    }
    let names: Vec<String> = roots.iter().map(|r| r.display().to_string()).collect();
    format!("{open}{}{close}", names.join(", "))
}

/// Whether a client of a confined engine may change setting `name`: not the settings that
/// widen what the engine reaches or uses (`datafusion.catalog.*`, `datafusion.runtime.*`),
/// except the default catalog and schema that names are looked up in.
pub fn check_setting(name: &str) -> Result<(), Refused> {
    let name = name.trim().replace(['"', '`'], "").to_ascii_lowercase();
    if [
        "datafusion.catalog.default_catalog",
        "datafusion.catalog.default_schema",
    ]
    .contains(&name.as_str())
    {
        return Ok(());
    }
    match ["datafusion.catalog.", "datafusion.runtime."]
        .iter()
        .find(|p| name.contains(*p))
    {
        Some(p) => Err(Refused(format!(
            "{p}* settings cannot be changed on this server"
        ))),
        None => Ok(()),
    }
}

fn canonical_root(dir: &Path) -> Result<PathBuf, Refused> {
    std::fs::canonicalize(dir).map_err(|e| Refused(format!("root folder {}: {e}", dir.display())))
}

/// A location as a local path (relative ones from the working folder), or `None` for a URL.
fn local_path(location: &str) -> Option<PathBuf> {
    if let Some(rest) = location.strip_prefix("file://") {
        return Some(PathBuf::from(rest));
    }
    if location.contains("://") {
        return None;
    }
    let path = PathBuf::from(location);
    Some(if path.is_absolute() {
        path
    } else {
        std::env::current_dir().unwrap_or_default().join(path)
    })
}

/// The folder a glob starts from: its components before the first with a wildcard.
fn glob_base(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in path.components() {
        if c.as_os_str()
            .to_string_lossy()
            .contains(['*', '?', '[', '{'])
        {
            break;
        }
        out.push(c);
    }
    out
}

/// `path` with symlinks and `..` resolved: the longest existing ancestor canonicalized, and
/// the rest (which does not exist yet) applied to it.
fn resolve(path: &Path) -> Result<PathBuf, Refused> {
    let mut existing = path.to_path_buf();
    let mut rest: Vec<std::ffi::OsString> = Vec::new();
    loop {
        match std::fs::canonicalize(&existing) {
            Ok(mut base) => {
                for part in rest.iter().rev() {
                    match Path::new(part).components().next() {
                        Some(Component::ParentDir) => {
                            base.pop();
                        }
                        Some(Component::CurDir) | None => {}
                        _ => base.push(part),
                    }
                }
                return Ok(base);
            }
            Err(_) => {
                let Some(name) = existing.file_name().map(|n| n.to_os_string()) else {
                    // `..` at the end, or the root: step up lexically.
                    if existing.ends_with("..") {
                        rest.push("..".into());
                        existing.pop();
                        continue;
                    }
                    return Err(Refused(format!("'{}' cannot be resolved", path.display())));
                };
                rest.push(name);
                if !existing.pop() {
                    return Err(Refused(format!("'{}' cannot be resolved", path.display())));
                }
            }
        }
    }
}

/// A URL compared by scheme, host and path, with `s3a://` as `s3://`.
fn normalize_url(text: &str) -> String {
    let text = text.trim();
    match text.strip_prefix("s3a://") {
        Some(rest) => format!("s3://{rest}"),
        None => text.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_stay_under_the_roots_through_symlinks_and_dot_dot() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(root.join("sub")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.csv"), "a\n1\n").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        let c = Confinement::new().read_root(&root).unwrap();
        let at = |p: &Path| p.display().to_string();
        assert!(c.check_read(&at(&root.join("sub"))).is_ok());
        assert!(c.check_read(&at(&root.join("sub/*.csv"))).is_ok());
        assert!(c.check_read(&at(&root.join("missing/x.csv"))).is_ok());
        assert!(c.check_read(&at(&root.join("link/secret.csv"))).is_err());
        assert!(c.check_read(&at(&root.join("sub/../../outside"))).is_err());
        assert!(
            c.check_read(&at(&root.join("missing/../../outside")))
                .is_err()
        );
        assert!(c.check_read("/etc/passwd").is_err());
        assert!(c.check_read("s3://bucket/x").is_err());
        assert!(c.check_write(&at(&root.join("out/"))).is_err());
        let c = c.write_root(&root).unwrap().store("s3://bucket/trips/");
        assert!(c.check_write(&at(&root.join("out/"))).is_ok());
        assert!(c.check_write(&at(&root.join("link/x"))).is_err());
        assert!(c.check_read("s3://bucket/trips/2024/*.parquet").is_ok());
        assert!(c.check_read("s3a://bucket/trips/2024/").is_ok());
        assert!(c.check_read("s3://bucket/other/").is_err());
        let store = |u: &str| c.check_store(&Url::parse(u).unwrap());
        assert!(store("s3://bucket").is_ok());
        assert!(store("s3://elsewhere").is_err());
    }
}
