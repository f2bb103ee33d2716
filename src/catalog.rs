//! The catalog file: datasets and store settings declared once in TOML and available in every
//! mode. Parsing only; the engine resolves each dataset when a statement first uses it.
//!
//! ```toml
//! [stores."s3://my-bucket"]
//! endpoint = "http://127.0.0.1:9000"
//! access_key_id = "${MINIO_ACCESS_KEY}"       # secrets only from the environment
//! secret_access_key = "${MINIO_SECRET_KEY}"
//!
//! [tables.trips]
//! location = "s3://my-bucket/trips/"          # or locations = [..]
//! format = "parquet"                          # optional: inferred from extensions
//! partition_columns = { year = "int" }        # optional: inferred from directories
//!
//! [tables.people]
//! location = "data/people/*.csv"              # relative to this file's folder
//! header = true
//! delimiter = ","
//!
//! [tables.orders]                             # a table in a database
//! location = "postgres://app@db.internal/shop" # password: PGPASSWORD or ~/.pgpass
//! table = "public.orders"
//!
//! [server]                                    # `strata serve`'s settings (optional)
//! flight = "0.0.0.0:50051"
//! users = "users.toml"                        # paths relative to this file's folder
//! tls_cert = "server.pem"
//! tls_key = "server.key"
//! ```
//!
//! A `[databases.NAME]` section with a `location` (a database URL) attaches a whole database:
//! its tables are `NAME.schema.table`, those of its default schema also `NAME.table`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::dataset::{DatasetError, DatasetOptions, DatasetSpec};
use crate::store::StoreSettings;

/// Errors in a catalog file. Each names the file and, where it can, the line.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CatalogError {
    /// The file cannot be read.
    #[error("cannot read catalog {path}: {message}")]
    Read {
        /// The catalog file.
        path: String,
        /// Why.
        message: String,
    },
    /// The file is not valid TOML or has an unknown key.
    #[error("{path}:{line}:{column}: {message}")]
    Parse {
        /// The catalog file.
        path: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A table section is invalid.
    #[error("{path}: table '{table}': {source}")]
    Table {
        /// The catalog file.
        path: String,
        /// The table name.
        table: String,
        /// What is wrong.
        source: DatasetError,
    },
    /// A database section is invalid.
    #[error("{path}: database '{name}': {message}")]
    Database {
        /// The catalog file.
        path: String,
        /// The name the database is attached as.
        name: String,
        /// What is wrong.
        message: String,
    },
    /// A store section is invalid (for example a secret written inline).
    #[error("{path}: store '{store}': {message}")]
    Store {
        /// The catalog file.
        path: String,
        /// The store's URL prefix.
        store: String,
        /// What is wrong.
        message: String,
    },
}

/// A parsed catalog file.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Catalog {
    /// The file it was read from.
    pub path: Option<PathBuf>,
    /// Datasets by table name, in name order.
    pub tables: Vec<(String, DatasetSpec)>,
    /// Store settings by URL prefix.
    pub stores: Vec<StoreSettings>,
    /// The `[server]` section: settings of `strata serve`, below its command line and
    /// `STRATA_*` variables.
    pub server: ServerSettings,
    /// Whole databases by the catalog name they are attached as (`[databases.NAME]`).
    pub databases: Vec<AttachedDatabase>,
}

/// A `[databases.NAME]` section: a database whose tables all appear as `NAME.schema.table`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttachedDatabase {
    /// The catalog name.
    pub name: String,
    /// Its URL (`postgres://…`, `mysql://…`, `sqlite:file.db`).
    pub location: String,
    /// The folder relative SQLite paths are resolved against: the catalog file's.
    pub base_dir: PathBuf,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDatabase {
    location: String,
    #[allow(dead_code)]
    description: Option<String>,
}

/// The `[server]` section of a catalog file; paths in it are resolved against the file's
/// folder. Each key has the name of a `strata serve` option, with `_` for `-`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    /// Address of the Flight SQL listener.
    pub flight: Option<String>,
    /// Address of the PostgreSQL listener.
    pub postgres: Option<String>,
    /// Address of the dashboard.
    pub dashboard: Option<String>,
    /// Users file.
    pub users: Option<PathBuf>,
    /// Certificate chain (PEM).
    pub tls_cert: Option<PathBuf>,
    /// Private key (PEM).
    pub tls_key: Option<PathBuf>,
    /// Authority that signs client certificates (PEM).
    pub tls_client_ca: Option<PathBuf>,
    /// Seconds a sign-in token stays valid.
    pub token_ttl: Option<u64>,
    /// Queries running at once.
    pub max_queries: Option<usize>,
    /// Queries running at once per user.
    pub max_queries_per_user: Option<usize>,
    /// Seconds a query waits in line.
    pub queue_timeout: Option<u64>,
    /// Largest result, e.g. `512M`.
    pub max_result_size: Option<String>,
    /// Memory one query may use, e.g. `1G`.
    pub query_memory: Option<String>,
    /// Connections open at once, per protocol.
    pub max_connections: Option<usize>,
    /// Seconds a connection may stay idle.
    pub idle_timeout: Option<u64>,
    /// Folders clients may read.
    #[serde(default)]
    pub roots: Vec<PathBuf>,
    /// Folders clients may write (with `allow_writes`).
    #[serde(default)]
    pub write_roots: Vec<PathBuf>,
    /// Run statements that write.
    pub allow_writes: Option<bool>,
    /// Seconds running queries get at shutdown.
    pub grace: Option<u64>,
    /// Seconds a query may run.
    pub query_timeout: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    #[serde(default)]
    tables: BTreeMap<String, RawTable>,
    #[serde(default)]
    stores: BTreeMap<String, BTreeMap<String, toml::Value>>,
    #[serde(default)]
    server: ServerSettings,
    #[serde(default)]
    databases: BTreeMap<String, RawDatabase>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    location: Option<String>,
    locations: Option<Vec<String>>,
    format: Option<String>,
    compression: Option<String>,
    header: Option<bool>,
    delimiter: Option<String>,
    quote: Option<String>,
    escape: Option<String>,
    null: Option<String>,
    schema_infer_max_records: Option<usize>,
    file_extension: Option<String>,
    hive_partitioning: Option<bool>,
    partition_columns: Option<BTreeMap<String, String>>,
    table: Option<String>,
    #[allow(dead_code)]
    description: Option<String>,
}

/// Store option keys whose values are secrets: they must come from the environment.
const SECRET_KEYS: &[&str] = &[
    "secret_access_key",
    "aws_secret_access_key",
    "session_token",
    "aws_session_token",
    "token",
    "account_key",
    "azure_storage_account_key",
    "access_key",
    "client_secret",
    "azure_client_secret",
    "sas_key",
    "sas_token",
    "azure_storage_sas_key",
    "bearer_token",
    "service_account_key",
    "google_service_account_key",
];

impl Catalog {
    /// Read and parse a catalog file.
    pub fn load(path: impl AsRef<Path>) -> Result<Catalog, CatalogError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|e| CatalogError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let base = path
            .parent()
            .map(|p| {
                if p.as_os_str().is_empty() {
                    PathBuf::from(".")
                } else {
                    p.to_path_buf()
                }
            })
            .unwrap_or_else(|| PathBuf::from("."));
        let base = std::fs::canonicalize(&base).unwrap_or(base);
        let mut cat = Catalog::parse(&text, &path.display().to_string(), &base, &|v| {
            std::env::var(v).ok()
        })?;
        cat.path = Some(path.to_path_buf());
        Ok(cat)
    }

    /// Parse catalog text. `name` is used in messages, `base_dir` resolves relative
    /// locations, `env` looks up `${VAR}` references.
    pub fn parse(
        text: &str,
        name: &str,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Catalog, CatalogError> {
        let raw: RawCatalog = toml::from_str(text).map_err(|e| {
            let p = crate::error::Position::at(text, e.span().map_or(0, |s| s.start));
            let (line, column) = (p.line, p.column);
            CatalogError::Parse {
                path: name.into(),
                line,
                column,
                message: e.message().trim().replace('\n', " "),
            }
        })?;

        let mut tables = Vec::new();
        for (tname, t) in raw.tables {
            let table_err = |source: DatasetError| CatalogError::Table {
                path: name.into(),
                table: tname.clone(),
                source,
            };
            let locations = match (t.location, t.locations) {
                (Some(l), None) => vec![l],
                (None, Some(ls)) if !ls.is_empty() => ls,
                (Some(_), Some(_)) => {
                    return Err(table_err(DatasetError::Option {
                        key: "location".into(),
                        message: "give either location or locations, not both".into(),
                    }));
                }
                _ => {
                    return Err(table_err(DatasetError::Option {
                        key: "location".into(),
                        message: "missing: every table needs a location".into(),
                    }));
                }
            };
            let mut options = DatasetOptions::default();
            let mut set = |k: &str, v: Option<String>| -> Result<(), CatalogError> {
                if let Some(v) = v {
                    options.set(k, &v).map_err(table_err)?;
                }
                Ok(())
            };
            set("format", t.format)?;
            set("compression", t.compression)?;
            set("header", t.header.map(|b| b.to_string()))?;
            set("delimiter", t.delimiter)?;
            set("quote", t.quote)?;
            set("escape", t.escape)?;
            set("null", t.null)?;
            set(
                "schema_infer_max_records",
                t.schema_infer_max_records.map(|n| n.to_string()),
            )?;
            set("file_extension", t.file_extension)?;
            set("table", t.table)?;
            set(
                "hive_partitioning",
                t.hive_partitioning.map(|b| b.to_string()),
            )?;
            for (col, ty) in t.partition_columns.unwrap_or_default() {
                options.set_partition_type(&col, &ty).map_err(table_err)?;
            }
            tables.push((
                tname.clone(),
                DatasetSpec {
                    locations,
                    options,
                    base_dir: Some(base_dir.to_path_buf()),
                },
            ));
        }

        let mut stores = Vec::new();
        for (prefix, values) in raw.stores {
            let store_err = |message: String| CatalogError::Store {
                path: name.into(),
                store: prefix.clone(),
                message,
            };
            let mut options = HashMap::new();
            for (k, v) in values {
                let text = match v {
                    toml::Value::String(s) => s,
                    toml::Value::Boolean(b) => b.to_string(),
                    toml::Value::Integer(i) => i.to_string(),
                    other => {
                        return Err(store_err(format!(
                            "option '{k}' must be a string, boolean or integer, not {}",
                            other.type_str()
                        )));
                    }
                };
                let is_ref = text.starts_with("${") && text.ends_with('}');
                if SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) && !is_ref {
                    return Err(store_err(format!(
                        "option '{k}' is a secret: write it as \"${{ENV_VAR}}\" and set that variable, never inline"
                    )));
                }
                let value = if is_ref {
                    let var = &text[2..text.len() - 1];
                    env(var).ok_or_else(|| {
                        store_err(format!(
                            "option '{k}' refers to environment variable {var}, which is not set"
                        ))
                    })?
                } else {
                    text
                };
                options.insert(k, value);
            }
            stores.push(StoreSettings { prefix, options });
        }

        let mut server = raw.server;
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base_dir.join(&*p);
            }
        };
        for path in [
            &mut server.users,
            &mut server.tls_cert,
            &mut server.tls_key,
            &mut server.tls_client_ca,
        ]
        .into_iter()
        .flatten()
        {
            resolve(path);
        }
        server.roots.iter_mut().for_each(resolve);
        server.write_roots.iter_mut().for_each(resolve);

        let mut databases = Vec::new();
        for (db, raw) in raw.databases {
            if !crate::databases::is_database_url(&raw.location) {
                return Err(CatalogError::Database {
                    path: name.into(),
                    name: db,
                    message: format!(
                        "'{}' is not a database URL (postgres://, mysql://, sqlite:)",
                        raw.location
                    ),
                });
            }
            if tables.iter().any(|(t, _)| t.eq_ignore_ascii_case(&db)) {
                return Err(CatalogError::Database {
                    path: name.into(),
                    name: db,
                    message: "a table has this name too".into(),
                });
            }
            databases.push(AttachedDatabase {
                name: db,
                location: raw.location,
                base_dir: base_dir.to_path_buf(),
            });
        }

        Ok(Catalog {
            path: None,
            tables,
            stores,
            server,
            databases,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::datatypes::DataType;

    fn parse(text: &str) -> Result<Catalog, CatalogError> {
        Catalog::parse(text, "strata.toml", Path::new("/base"), &|v| {
            (v == "KEY").then(|| "from-env".to_string())
        })
    }

    #[test]
    fn tables_and_stores_parse() {
        let c = parse(
            r#"
[tables.people]
location = "data/people/*.csv"
header = true
partition_columns = { year = "int" }

[stores."s3://b"]
endpoint = "http://localhost:9000"
secret_access_key = "${KEY}"
"#,
        )
        .unwrap();
        assert_eq!(c.tables.len(), 1);
        let (name, spec) = &c.tables[0];
        assert_eq!(name, "people");
        assert_eq!(spec.locations, vec!["data/people/*.csv"]);
        assert_eq!(spec.base_dir.as_deref(), Some(Path::new("/base")));
        assert_eq!(spec.options.header, Some(true));
        assert_eq!(c.stores[0].options["secret_access_key"], "from-env");
    }

    #[test]
    fn partition_types_are_sql_type_names() {
        let c = parse(
            "[tables.t]\nlocation = \"x/\"\npartition_columns = { year = \"SMALLINT\", day = \"DATE\", \
             price = \"DECIMAL(10,2)\", id = \"UBIGINT\" }\n",
        )
        .unwrap();
        let types: Vec<(String, DataType)> = c.tables[0].1.options.partition_types.clone();
        assert!(
            types.contains(&("year".into(), DataType::Int16)),
            "{types:?}"
        );
        assert!(
            types.contains(&("day".into(), DataType::Date32)),
            "{types:?}"
        );
        assert!(
            types.contains(&("price".into(), DataType::Decimal128(10, 2))),
            "{types:?}"
        );
        assert!(
            types.contains(&("id".into(), DataType::UInt64)),
            "{types:?}"
        );
        let e =
            parse("[tables.t]\nlocation = \"x/\"\npartition_columns = { year = \"nonsense\" }\n")
                .unwrap_err();
        assert!(
            e.to_string().contains("use a SQL type such as BIGINT"),
            "{e}"
        );
    }

    #[test]
    fn unknown_keys_name_the_key_and_line() {
        let e = parse("[tables.t]\nlocation = \"x\"\nlcoation = \"y\"\n").unwrap_err();
        let msg = e.to_string();
        assert!(msg.starts_with("strata.toml:3:"), "{msg}");
        assert!(msg.contains("lcoation"), "{msg}");
    }

    #[test]
    fn inline_secrets_and_missing_vars_are_rejected() {
        let e = parse("[stores.\"s3://b\"]\nsecret_access_key = \"abc\"\n").unwrap_err();
        assert!(e.to_string().contains("never inline"), "{e}");
        let e = parse("[stores.\"s3://b\"]\nsecret_access_key = \"${NOPE}\"\n").unwrap_err();
        assert!(e.to_string().contains("NOPE"), "{e}");
    }

    #[test]
    fn a_table_needs_a_location_and_valid_options() {
        let e = parse("[tables.t]\nformat = \"csv\"\n").unwrap_err();
        assert!(e.to_string().contains("needs a location"), "{e}");
        let e = parse("[tables.t]\nlocation = \"x\"\nformat = \"xls\"\n").unwrap_err();
        assert!(e.to_string().contains("table 't'"), "{e}");
    }

    #[test]
    fn the_server_section_holds_serve_settings_with_paths_from_the_files_folder() {
        let c = parse(
            "[server]\nflight = \"0.0.0.0:1\"\nusers = \"users.toml\"\n\
             tls_cert = \"/etc/strata/cert.pem\"\nroots = [\"data\"]\nmax_queries = 4\n",
        )
        .unwrap();
        assert_eq!(c.server.flight.as_deref(), Some("0.0.0.0:1"));
        assert_eq!(c.server.users, Some(PathBuf::from("/base/users.toml")));
        assert_eq!(
            c.server.tls_cert,
            Some(PathBuf::from("/etc/strata/cert.pem"))
        );
        assert_eq!(c.server.roots, vec![PathBuf::from("/base/data")]);
        assert_eq!(c.server.max_queries, Some(4));
        assert_eq!(c.server.postgres, None);
        let e = parse("[server]\nflihgt = \"x\"\n").unwrap_err();
        assert!(e.to_string().starts_with("strata.toml:2:"), "{e}");
        assert!(e.to_string().contains("flihgt"), "{e}");
    }

    #[test]
    fn a_database_section_names_a_database_url() {
        let c = parse("[databases.shop]\nlocation = \"sqlite:shop.db\"\n").unwrap();
        assert_eq!(
            c.databases,
            vec![AttachedDatabase {
                name: "shop".into(),
                location: "sqlite:shop.db".into(),
                base_dir: PathBuf::from("/base"),
            }]
        );
        let e = parse("[databases.shop]\nlocation = \"data/shop\"\n").unwrap_err();
        assert!(
            e.to_string().contains("database 'shop'")
                && e.to_string().contains("not a database URL"),
            "{e}"
        );
        let e =
            parse("[databases.t]\nlocation = \"sqlite:x.db\"\n[tables.t]\nlocation = \"data\"\n")
                .unwrap_err();
        assert!(e.to_string().contains("a table has this name too"), "{e}");
    }
}
