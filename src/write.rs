//! Output that appears whole or not at all: `COPY ... TO` a local path and `INSERT INTO` a
//! table over a local directory write under a hidden temporary name beside their
//! destination, and the finished file (or each finished file of a directory) is renamed into
//! place when the last batch is written. A failure, a cancelled
//! query or a dropped result removes the temporary output; the destination is never seen
//! half-written. (On object stores each file is one multipart upload, which appears only
//! when it completes.)

use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use std::sync::Arc;

use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::TableProvider;
use datafusion::datasource::listing::{ListingTable, ListingTableConfig, ListingTableUrl};
use datafusion::datasource::{provider_as_source, source_as_provider};
use datafusion::logical_expr::LogicalPlan;
use datafusion::logical_expr::dml::{CopyTo, DmlStatement, InsertOp, WriteOp};

use crate::dataset::DatasetTable;

use crate::{Error, Result};

/// The prefix of temporary output names.
pub const TEMPORARY_PREFIX: &str = ".strata-tmp-";

static NEXT: AtomicU64 = AtomicU64::new(0);

/// Output written under a temporary name, to be published at `dest` once complete.
#[derive(Debug)]
pub struct Staged {
    temp: PathBuf,
    dest: PathBuf,
    finished: bool,
}

/// `plan` with a local COPY destination or INSERT table directory replaced by a temporary
/// one, and what to publish when it completes. Other plans are returned as they are.
pub fn stage(plan: LogicalPlan) -> (LogicalPlan, Option<Staged>) {
    let copy = match plan {
        LogicalPlan::Copy(copy) => copy,
        LogicalPlan::Dml(dml) => return stage_insert(dml),
        other => return (other, None),
    };
    let Some((temp_url, temp, dest)) = temporary_for(&copy.output_url) else {
        return (LogicalPlan::Copy(copy), None);
    };
    let staged = CopyTo {
        output_url: temp_url,
        ..copy
    };
    let staged_output = Staged {
        temp,
        dest,
        finished: false,
    };
    (LogicalPlan::Copy(staged), Some(staged_output))
}

/// An INSERT into a table over one local directory writes its files into a temporary
/// directory beside it, with the table's format and partitioning.
fn stage_insert(dml: DmlStatement) -> (LogicalPlan, Option<Staged>) {
    let staged = (|| {
        if !matches!(dml.op, WriteOp::Insert(InsertOp::Append)) {
            return None;
        }
        let provider = source_as_provider(&dml.target).ok()?;
        let listing = provider
            .downcast_ref::<ListingTable>()
            .or_else(|| provider.downcast_ref::<DatasetTable>().map(|d| d.listing()))?;
        let [path] = listing.table_paths().as_slice() else {
            return None;
        };
        if path.get_url().scheme() != "file" || !path.is_collection() {
            return None;
        }
        let dir = path.get_url().to_file_path().ok()?;
        let (url, temp, dest) = temporary_for(&format!("{}/", dir.display()))?;
        let partitions = listing.options().table_partition_cols.len();
        let schema = listing.schema();
        let file_fields = schema.fields().len().checked_sub(partitions)?;
        let file_schema = Schema::new_with_metadata(
            schema.fields()[..file_fields].to_vec(),
            schema.metadata().clone(),
        );
        let config = ListingTableConfig::new(ListingTableUrl::parse(&url).ok()?)
            .with_listing_options(listing.options().clone())
            .with_schema(Arc::new(file_schema));
        let table = ListingTable::try_new(config).ok()?;
        let target = provider_as_source(Arc::new(table));
        let plan = DmlStatement::new(
            dml.table_name.clone(),
            target,
            dml.op.clone(),
            dml.input.clone(),
        );
        Some((
            LogicalPlan::Dml(plan),
            Staged {
                temp,
                dest,
                finished: false,
            },
        ))
    })();
    match staged {
        Some((plan, staged)) => (plan, Some(staged)),
        None => (LogicalPlan::Dml(dml), None),
    }
}

/// The temporary URL for a local `url` (its extension and trailing `/` kept, so the output
/// is a file or a directory as it would have been), and the two paths.
fn temporary_for(url: &str) -> Option<(String, PathBuf, PathBuf)> {
    let (scheme, path) = match url.strip_prefix("file://") {
        Some(rest) => ("file://", rest),
        None if url.contains("://") => return None,
        None => ("", url),
    };
    let trailing = if path.ends_with('/') { "/" } else { "" };
    let trimmed = path.trim_end_matches('/');
    let (parent, name) = match trimmed.rfind('/') {
        Some(i) => (&trimmed[..=i], &trimmed[i + 1..]),
        None => ("", trimmed),
    };
    if name.is_empty() {
        return None;
    }
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let temp_name = format!("{TEMPORARY_PREFIX}{}-{n}-{name}", std::process::id());
    let temp = format!("{parent}{temp_name}");
    Some((
        format!("{scheme}{temp}{trailing}"),
        PathBuf::from(&temp),
        PathBuf::from(trimmed),
    ))
}

impl Staged {
    /// Move the finished output into place: a file replaces the destination in one rename;
    /// a directory's files are each renamed into the destination directory.
    pub fn publish(&mut self) -> Result<()> {
        self.finished = true;
        let outcome = match std::fs::symlink_metadata(&self.temp) {
            // Nothing was written (no rows into a directory).
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(e),
            Ok(meta) if meta.is_dir() => move_tree(&self.temp, &self.dest),
            Ok(_) => {
                if let Some(parent) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
                    std::fs::create_dir_all(parent).ok();
                }
                std::fs::rename(&self.temp, &self.dest)
            }
        };
        remove(&self.temp);
        outcome.map_err(|e| {
            Error::Execution(format!(
                "cannot move the finished output to {}: {e}",
                self.dest.display()
            ))
        })
    }

    /// Remove the temporary output (a failed or cancelled write).
    pub fn discard(&mut self) {
        self.finished = true;
        remove(&self.temp);
    }

    /// The error of a failed write, naming the destination (not the temporary name) and
    /// saying it is unchanged.
    pub fn explain(&self, err: Error) -> Error {
        let dest = self.dest.display().to_string();
        let message = match &err {
            Error::Execution(m) => m.clone(),
            other => other.to_string(),
        };
        let temp = self.temp.display().to_string();
        let first = message
            .lines()
            .next()
            .unwrap_or_default()
            .replace(&temp, &dest);
        // DataFusion drops the cause of a failure to finish a file.
        let cause = if first.contains("finalizing writes")
            || first.contains("writing to ObjectStore")
        {
            "the output could not be finished (a full disk or a file size limit are the usual causes)".to_string()
        } else {
            first
        };
        let outcome = if self.dest.exists() {
            format!("{dest} is unchanged")
        } else {
            "nothing was written".to_string()
        };
        Error::Execution(format!("cannot write {dest}: {cause}; {outcome}"))
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.finished {
            remove(&self.temp);
        }
    }
}

/// Each file under `from` renamed to the same place under `to`.
fn move_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            move_tree(&entry.path(), &target)?;
        } else {
            std::fs::rename(entry.path(), target)?;
        }
    }
    Ok(())
}

fn remove(path: &Path) {
    // The local object store writes a file as `NAME#N` and renames it when complete.
    if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
        let staging = format!("{}#", name.to_string_lossy());
        let dir = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(&staging) {
                let _ = std::fs::remove_file(entry.path());
            }
        }
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_names_keep_the_kind_of_output() {
        let (url, temp, dest) = temporary_for("out/x.parquet").unwrap();
        assert!(
            url.starts_with("out/.strata-tmp-") && url.ends_with("-x.parquet"),
            "{url}"
        );
        assert_eq!(temp, PathBuf::from(&url));
        assert_eq!(dest, PathBuf::from("out/x.parquet"));
        let (url, _, dest) = temporary_for("file:///tmp/parts/").unwrap();
        assert!(
            url.starts_with("file:///tmp/.strata-tmp-") && url.ends_with("-parts/"),
            "{url}"
        );
        assert_eq!(dest, PathBuf::from("/tmp/parts"));
        let (url, _, _) = temporary_for("x.csv").unwrap();
        assert!(
            url.starts_with(".strata-tmp-") && url.ends_with("-x.csv"),
            "{url}"
        );
        assert!(temporary_for("s3://bucket/x.parquet").is_none());
    }

    #[test]
    fn a_directory_is_published_file_by_file_and_a_discarded_one_vanishes() {
        let dir = std::env::temp_dir().join(format!("strata-write-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let temp = dir.join(".strata-tmp-out");
        let dest = dir.join("out");
        std::fs::create_dir_all(temp.join("k=1")).unwrap();
        std::fs::write(temp.join("k=1/a.csv"), "x\n1\n").unwrap();
        std::fs::create_dir_all(&dest).unwrap();
        std::fs::write(dest.join("old.csv"), "x\n0\n").unwrap();
        let mut staged = Staged {
            temp: temp.clone(),
            dest: dest.clone(),
            finished: false,
        };
        staged.publish().unwrap();
        assert!(dest.join("k=1/a.csv").exists() && dest.join("old.csv").exists());
        assert!(!temp.exists());

        std::fs::write(&temp, "partial").unwrap();
        drop(Staged {
            temp: temp.clone(),
            dest,
            finished: false,
        });
        assert!(!temp.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
