//! Where a dataset lives: a local path, a `file://` URL or an object-store URL, each
//! possibly ending in a glob (`*`, `**`, `?`, `[...]`), turned into a DataFusion
//! `ListingTableUrl` (which filters by glob on every store, not only locally).

use std::path::{Path, PathBuf};

use datafusion::datasource::listing::ListingTableUrl;
use url::Url;

use super::DatasetError;

const GLOB_CHARS: [char; 3] = ['*', '?', '['];

/// The URL schemes Strata understands.
pub const SCHEMES: &[&str] = &[
    "file", "s3", "s3a", "gs", "gcs", "az", "azure", "abfs", "abfss", "http", "https",
];

/// Whether `text` looks like a location rather than a table name: it has a scheme, a path
/// separator, or a known file extension.
pub fn looks_like_location(text: &str) -> bool {
    if let Some((scheme, _)) = text.split_once("://") {
        return SCHEMES.contains(&scheme.to_ascii_lowercase().as_str());
    }
    if text.contains('/') || text.contains('\\') {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    let stem = ["gz", "bz2", "xz", "zst"]
        .iter()
        .find_map(|c| lower.strip_suffix(&format!(".{c}")))
        .unwrap_or(&lower);
    stem.rsplit_once('.')
        .is_some_and(|(_, ext)| super::Format::from_extension(ext).is_some())
}

/// A parsed location.
#[derive(Debug, Clone)]
pub struct Location {
    /// What the user wrote.
    pub original: String,
    /// The URL DataFusion lists and reads.
    pub url: ListingTableUrl,
    /// Whether a glob is part of the location.
    pub has_glob: bool,
    /// Whether the location names a collection (a directory, a prefix or a glob).
    pub is_collection: bool,
    /// The glob's matcher, where `*` stays within a folder (see [`Location::names`]).
    matcher: Option<globset::GlobMatcher>,
}

impl Location {
    /// Parse `text`, resolving relative local paths against `base_dir`.
    pub fn parse(text: &str, base_dir: &Path) -> Result<Location, DatasetError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(DatasetError::InvalidLocation {
                location: text.into(),
                message: "empty location".into(),
            });
        }
        let invalid = |message: String| DatasetError::InvalidLocation {
            location: text.into(),
            message,
        };

        let (url, glob) = if let Some((scheme, _)) = trimmed.split_once("://") {
            let scheme = scheme.to_ascii_lowercase();
            if !SCHEMES.contains(&scheme.as_str()) {
                return Err(invalid(format!(
                    "unsupported scheme '{scheme}://'; supported are {}",
                    SCHEMES
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            let (base, glob) = split_glob(trimmed);
            let base = if glob.is_some() && !base.ends_with('/') {
                format!("{base}/")
            } else {
                base.to_string()
            };
            let url = Url::parse(&base).map_err(|e| invalid(e.to_string()))?;
            if scheme == "file" {
                let path = url
                    .to_file_path()
                    .map_err(|_| invalid("not a valid file:// URL".into()))?;
                (local_url(&path, glob.is_some())?, glob)
            } else {
                (url, glob)
            }
        } else {
            let (base, glob) = split_glob(trimmed);
            let path = Path::new(base);
            let path: PathBuf = if path.is_absolute() {
                path.to_path_buf()
            } else {
                base_dir.join(path)
            };
            let path = normalize(&path);
            if glob.is_none() && !path.exists() {
                return Err(DatasetError::NotFound {
                    location: text.into(),
                });
            }
            if glob.is_some() && !path.is_dir() {
                return Err(DatasetError::NoFiles {
                    location: text.into(),
                    glob: true,
                });
            }
            (local_url(&path, glob.is_some() || path.is_dir())?, glob)
        };

        let has_glob = glob.is_some();
        let matcher = match glob {
            Some(g) => Some(
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .map_err(|e| invalid(format!("invalid glob '{g}': {e}")))?
                    .compile_matcher(),
            ),
            None => None,
        };
        let listing = ListingTableUrl::try_new(url, None).map_err(|e| invalid(e.to_string()))?;
        let listing = match &glob {
            Some(g) => listing
                .with_glob(g)
                .map_err(|e| invalid(format!("invalid glob '{g}': {e}")))?,
            None => listing,
        };
        Ok(Location {
            original: text.to_string(),
            is_collection: has_glob || listing.is_collection(),
            url: listing,
            has_glob,
            matcher,
        })
    }

    /// Whether a listed file is one this location names. In a glob, `*`, `?` and `[...]`
    /// stay within one folder and `**` crosses folders, as in DuckDB and the shell
    /// (DataFusion's own matching lets `*` cross folders); `key=value` folders are passed
    /// over, so `data/v/*.parquet` reaches the files of a hive-partitioned folder.
    pub fn names(&self, file: &object_store::path::Path) -> bool {
        let Some(matcher) = &self.matcher else {
            return true;
        };
        let Some(parts) = self.url.strip_prefix(file) else {
            return false;
        };
        let relative: Vec<&str> = parts.filter(|s| !s.contains('=')).collect();
        matcher.is_match(relative.join("/"))
    }
}

impl Location {
    /// Parse a location that is written to: it may not exist yet, and is a directory
    /// unless it names a file with an extension.
    pub fn parse_for_write(text: &str) -> Result<Location, DatasetError> {
        let base = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        if text.contains("://") || Path::new(text).exists() {
            return Location::parse(text, &base);
        }
        let path = normalize(&base.join(text));
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let is_dir = text.ends_with('/') || !name.contains('.');
        let url = local_url(&path, is_dir)?;
        let listing =
            ListingTableUrl::try_new(url, None).map_err(|e| DatasetError::InvalidLocation {
                location: text.into(),
                message: e.to_string(),
            })?;
        Ok(Location {
            original: text.to_string(),
            is_collection: is_dir,
            url: listing,
            has_glob: false,
            matcher: None,
        })
    }
}

/// Split a location at the last separator before the first segment containing a glob
/// character: `data/x/**/*.parquet` -> (`data/x/`, `**/*.parquet`).
fn split_glob(text: &str) -> (&str, Option<&str>) {
    let Some(first) = text.find(GLOB_CHARS) else {
        return (text, None);
    };
    match text[..first].rfind('/') {
        Some(sep) => (&text[..=sep], Some(&text[sep + 1..])),
        None => ("./", Some(text)),
    }
}

fn local_url(path: &Path, is_dir: bool) -> Result<Url, DatasetError> {
    let made = if is_dir {
        Url::from_directory_path(path)
    } else {
        Url::from_file_path(path)
    };
    made.map_err(|_| DatasetError::InvalidLocation {
        location: path.display().to_string(),
        message: "cannot be turned into a file URL".into(),
    })
}

/// Remove `.` and `..` components without touching the file system.
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
            other => out.push(other.as_os_str()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_split_at_the_first_wild_segment() {
        assert_eq!(
            split_glob("data/v/**/*.parquet"),
            ("data/v/", Some("**/*.parquet"))
        );
        assert_eq!(split_glob("*.csv"), ("./", Some("*.csv")));
        assert_eq!(split_glob("s3://b/p/x?.csv"), ("s3://b/p/", Some("x?.csv")));
        assert_eq!(split_glob("data/a.csv"), ("data/a.csv", None));
    }

    #[test]
    fn locations_are_recognised() {
        assert!(looks_like_location("data/x.parquet"));
        assert!(looks_like_location("x.csv.gz"));
        assert!(looks_like_location("s3://bucket/key"));
        assert!(!looks_like_location("violations"));
        assert!(!looks_like_location("ftp://x/y"));
    }

    #[test]
    fn object_store_globs_keep_their_pattern() {
        let loc = Location::parse("s3://bucket/dir/**/*.parquet", Path::new("/")).unwrap();
        assert!(loc.has_glob);
        assert_eq!(loc.url.prefix().as_ref(), "dir");
        assert!(loc.url.get_glob().is_some());
    }

    #[test]
    fn missing_local_path_is_not_found() {
        let err = Location::parse("no/such/file.csv", Path::new("/tmp")).unwrap_err();
        assert!(matches!(err, DatasetError::NotFound { .. }), "{err}");
    }
}
