//! What a dataset holds, for discovery (the dashboard's Datasets page): its format, locations,
//! files, bytes, partitions and schema, listed fresh from its store.

use std::collections::BTreeSet;
use std::path::PathBuf;

use datafusion::arrow::datatypes::Schema;
use datafusion::catalog::{Session, TableProvider};
use serde::Serialize;

use super::{DatasetTable, Location, data_files};

/// One table of an engine, as a catalog browser shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DatasetSummary {
    /// The table's name.
    pub name: String,
    /// `dataset` (files), `table` (made by SQL, in memory) or `view`.
    pub kind: &'static str,
    /// The file format, for a dataset.
    pub format: Option<String>,
    /// Where its files are, as written.
    pub locations: Vec<String>,
    /// How many data files.
    pub files: Option<usize>,
    /// Their total size.
    pub bytes: Option<u64>,
    /// The hive-style partition columns found.
    pub partition_columns: Vec<PartitionSummary>,
    /// How many partition directories hold files (none: no partitions).
    pub partitions: Option<usize>,
    /// Its columns.
    pub columns: Vec<ColumnSummary>,
    /// Why it could not be listed, if it could not.
    pub error: Option<String>,
}

/// A partition column of a dataset.
#[derive(Debug, Clone, Serialize)]
pub struct PartitionSummary {
    /// The key in `key=value/`.
    pub name: String,
    /// Its type.
    pub data_type: String,
    /// How many distinct values were seen.
    pub distinct_values: usize,
}

/// A column of a table.
#[derive(Debug, Clone, Serialize)]
pub struct ColumnSummary {
    /// Its name.
    pub name: String,
    /// Its Arrow type, as `DESCRIBE` shows it.
    pub data_type: String,
    /// Whether it may hold NULL.
    pub nullable: bool,
}

impl DatasetSummary {
    /// A dataset that could not be resolved, with why.
    pub fn unreadable(name: &str, error: String) -> Self {
        DatasetSummary {
            error: Some(error),
            ..Self::empty(name, "dataset")
        }
    }

    /// A dataset in use: its schema as it was read, and its files listed now.
    pub async fn of_dataset(name: &str, table: &DatasetTable, state: &dyn Session) -> Self {
        let recipe = table.recipe();
        let schema = table.schema();
        let mut summary = DatasetSummary {
            format: Some(recipe.format.to_string()),
            locations: recipe.locations.clone(),
            columns: columns(&schema),
            ..Self::empty(name, "dataset")
        };
        let base = recipe
            .base_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("."));
        let listed = async {
            let locations = recipe
                .locations
                .iter()
                .map(|l| Location::parse(l, &base))
                .collect::<Result<Vec<_>, _>>()?;
            data_files(&locations, &recipe.extension, state).await
        };
        let files = match listed.await {
            Ok(files) => files,
            Err(e) => {
                summary.error = Some(e.to_string());
                return summary;
            }
        };
        summary.files = Some(files.len());
        summary.bytes = Some(files.iter().map(|f| f.meta.size).sum());
        let directories: BTreeSet<&str> = files
            .iter()
            .filter_map(|f| f.partition.as_deref())
            .collect();
        summary.partitions = (!directories.is_empty()).then_some(directories.len());
        summary.partition_columns = recipe
            .partitions
            .iter()
            .map(|key| {
                let prefix = format!("{key}=");
                let values: BTreeSet<&str> = directories
                    .iter()
                    .flat_map(|d| d.split('/'))
                    .filter_map(|part| part.strip_prefix(prefix.as_str()))
                    .collect();
                PartitionSummary {
                    name: key.clone(),
                    data_type: schema
                        .field_with_name(key)
                        .map(|f| f.data_type().to_string())
                        .unwrap_or_default(),
                    distinct_values: values.len(),
                }
            })
            .collect();
        summary
    }

    fn empty(name: &str, kind: &'static str) -> Self {
        DatasetSummary {
            name: name.to_string(),
            kind,
            format: None,
            locations: Vec::new(),
            files: None,
            bytes: None,
            partition_columns: Vec::new(),
            partitions: None,
            columns: Vec::new(),
            error: None,
        }
    }

    /// A table that is not files (made by `CREATE TABLE` or a view): its kind and columns.
    pub fn of_table(name: &str, kind: &'static str, schema: &Schema) -> Self {
        DatasetSummary {
            columns: columns(schema),
            ..Self::empty(name, kind)
        }
    }
}

fn columns(schema: &Schema) -> Vec<ColumnSummary> {
    schema
        .fields()
        .iter()
        .map(|f| ColumnSummary {
            name: f.name().clone(),
            data_type: f.data_type().to_string(),
            nullable: f.is_nullable(),
        })
        .collect()
}
