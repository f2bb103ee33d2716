//! Dataset options: the format and its reading options, set from key/value pairs that come
//! from the catalog file, `read_*` table functions, `CREATE EXTERNAL TABLE` or the Rust API.

use std::fmt;
use std::str::FromStr;

use datafusion::arrow::datatypes::DataType;

use super::DatasetError;

/// A file format Strata reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Format {
    /// Apache Parquet.
    Parquet,
    /// Comma (or otherwise) separated values.
    Csv,
    /// Newline-delimited JSON.
    Json,
    /// Arrow IPC file format.
    Arrow,
    /// Apache Avro.
    Avro,
}

impl Format {
    /// The lowercase name used in SQL and the catalog file.
    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Json => "json",
            Format::Arrow => "arrow",
            Format::Avro => "avro",
        }
    }

    /// The format a file extension (without compression suffix) stands for.
    pub fn from_extension(ext: &str) -> Option<Format> {
        match ext.to_ascii_lowercase().as_str() {
            "parquet" | "parq" | "pq" => Some(Format::Parquet),
            "csv" | "tsv" | "txt" => Some(Format::Csv),
            "json" | "ndjson" | "jsonl" => Some(Format::Json),
            "arrow" | "ipc" | "feather" | "arrows" => Some(Format::Arrow),
            "avro" => Some(Format::Avro),
            _ => None,
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = DatasetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Format::Parquet),
            "csv" | "tsv" => Ok(Format::Csv),
            "json" | "ndjson" | "jsonl" => Ok(Format::Json),
            "arrow" | "ipc" | "feather" => Ok(Format::Arrow),
            "avro" => Ok(Format::Avro),
            other => Err(DatasetError::Option {
                key: "format".into(),
                message: format!(
                    "unknown format '{other}'; valid formats are parquet, csv, tsv, json, ndjson, arrow, avro"
                ),
            }),
        }
    }
}

/// Compression of a text file (CSV or JSON).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Compression {
    /// Not compressed.
    None,
    /// gzip (`.gz`).
    Gzip,
    /// bzip2 (`.bz2`).
    Bzip2,
    /// xz (`.xz`).
    Xz,
    /// zstd (`.zst`).
    Zstd,
}

impl Compression {
    /// The compression a file suffix stands for.
    pub fn from_extension(ext: &str) -> Option<Compression> {
        match ext.to_ascii_lowercase().as_str() {
            "gz" | "gzip" => Some(Compression::Gzip),
            "bz2" | "bzip2" => Some(Compression::Bzip2),
            "xz" => Some(Compression::Xz),
            "zst" | "zstd" => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The file suffix, with its dot, or "" for none.
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Bzip2 => ".bz2",
            Compression::Xz => ".xz",
            Compression::Zstd => ".zst",
        }
    }
}

impl FromStr for Compression {
    type Err = DatasetError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" | "uncompressed" | "" => Ok(Compression::None),
            "auto" => Ok(Compression::None),
            other => Compression::from_extension(other).ok_or_else(|| DatasetError::Option {
                key: "compression".into(),
                message: format!(
                    "unknown compression '{other}'; valid values are none, gzip, bzip2, xz, zstd"
                ),
            }),
        }
    }
}

/// How to read a dataset. Every field left `None` is inferred.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DatasetOptions {
    /// The file format; inferred from file extensions when `None`.
    pub format: Option<Format>,
    /// Compression of CSV/JSON files; inferred from file extensions when `None`.
    pub compression: Option<Compression>,
    /// CSV: whether the first line is a header (default true).
    pub header: Option<bool>,
    /// CSV: the field delimiter (default `,`, or tab for `.tsv` files).
    pub delimiter: Option<u8>,
    /// CSV: the quote character (default `"`).
    pub quote: Option<u8>,
    /// CSV: the escape character.
    pub escape: Option<u8>,
    /// CSV: the string that stands for NULL (default: the empty field).
    pub null_string: Option<String>,
    /// How many records to read to infer a CSV/JSON schema.
    pub schema_infer_max_records: Option<usize>,
    /// Only files whose name ends with this are read; inferred when `None`.
    pub file_extension: Option<String>,
    /// Discover `key=value/` directories as partition columns (default true).
    pub hive_partitioning: Option<bool>,
    /// Declared partition column types; others are inferred.
    #[serde(skip)]
    pub partition_types: Vec<(String, DataType)>,
    /// The table (`name` or `schema.name`) when the location is a database URL.
    #[serde(default)]
    pub table: Option<String>,
}

impl DatasetOptions {
    /// The option keys [`DatasetOptions::set`] accepts.
    pub const KEYS: &'static [&'static str] = &[
        "format",
        "compression",
        "header",
        "delimiter",
        "delim",
        "sep",
        "quote",
        "escape",
        "null",
        "nullstr",
        "null_string",
        "schema_infer_max_records",
        "file_extension",
        "hive_partitioning",
        "table",
    ];

    /// Options with the format set.
    pub fn with_format(format: Format) -> Self {
        DatasetOptions {
            format: Some(format),
            ..Default::default()
        }
    }

    /// Set one option from its textual value. Unknown keys are an error naming the valid ones.
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), DatasetError> {
        let lkey = key.to_ascii_lowercase();
        let lkey = lkey
            .strip_prefix("format.")
            .map(str::to_string)
            .unwrap_or(lkey);
        match lkey.as_str() {
            "format" => {
                if value.eq_ignore_ascii_case("tsv") && self.delimiter.is_none() {
                    self.delimiter = Some(b'\t');
                }
                self.format = Some(value.parse()?);
            }
            "compression" => self.compression = Some(value.parse()?),
            "header" | "has_header" => self.header = Some(parse_bool(key, value)?),
            "delimiter" | "delim" | "sep" => self.delimiter = Some(parse_char(key, value)?),
            "quote" => self.quote = Some(parse_char(key, value)?),
            "escape" => self.escape = Some(parse_char(key, value)?),
            "null" | "nullstr" | "null_string" | "null_value" => {
                self.null_string = Some(value.to_string())
            }
            "schema_infer_max_records" | "schema_infer_max_rec" | "sample_size" => {
                self.schema_infer_max_records =
                    Some(value.parse().map_err(|_| DatasetError::Option {
                        key: key.into(),
                        message: format!("expected a positive integer, got '{value}'"),
                    })?)
            }
            "file_extension" => self.file_extension = Some(value.to_string()),
            "hive_partitioning" => self.hive_partitioning = Some(parse_bool(key, value)?),
            "table" => self.table = Some(value.to_string()),
            _ => {
                let hint = crate::error::closest(&lkey, Self::KEYS.iter().copied())
                    .map(|c| format!("did you mean '{c}'? "))
                    .unwrap_or_default();
                return Err(DatasetError::Option {
                    key: key.into(),
                    message: format!(
                        "unknown option; {hint}valid options are {}",
                        Self::KEYS.join(", ")
                    ),
                });
            }
        }
        Ok(())
    }

    /// Declare the type of a partition column (e.g. from `partition_columns = { year = "int" }`).
    pub fn set_partition_type(
        &mut self,
        column: &str,
        type_name: &str,
    ) -> Result<(), DatasetError> {
        let dt = parse_type_name(type_name).ok_or_else(|| DatasetError::Option {
            key: column.into(),
            message: format!(
                "unknown partition column type '{type_name}'; use a SQL type such as BIGINT, INTEGER, VARCHAR, DATE, BOOLEAN, DOUBLE or DECIMAL(10,2)"
            ),
        })?;
        self.partition_types.retain(|(c, _)| c != column);
        self.partition_types.push((column.to_string(), dt));
        Ok(())
    }
}

/// A SQL type name to an Arrow type, for declared partition columns: the names `CAST`
/// takes (`BIGINT`, `VARCHAR`, `DATE`, `DECIMAL(10,2)`, ...), plus `string` and `long`.
pub fn parse_type_name(name: &str) -> Option<DataType> {
    crate::types::parse_sql_type(name)
}

fn parse_bool(key: &str, value: &str) -> Result<bool, DatasetError> {
    match value.to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" => Ok(false),
        _ => Err(DatasetError::Option {
            key: key.into(),
            message: format!("expected true or false, got '{value}'"),
        }),
    }
}

fn parse_char(key: &str, value: &str) -> Result<u8, DatasetError> {
    let v = match value {
        "\\t" | "tab" => "\t",
        other => other,
    };
    match v.as_bytes() {
        [b] => Ok(*b),
        _ => Err(DatasetError::Option {
            key: key.into(),
            message: format!("expected a single character, got '{value}'"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_parse_and_reject_unknown_keys() {
        let mut o = DatasetOptions::default();
        o.set("format", "tsv").unwrap();
        assert_eq!(o.format, Some(Format::Csv));
        assert_eq!(o.delimiter, Some(b'\t'));
        o.set("header", "false").unwrap();
        assert_eq!(o.header, Some(false));
        let err = o.set("hedaer", "true").unwrap_err().to_string();
        assert!(err.contains("did you mean 'header'"), "{err}");
        assert!(o.set("delimiter", "ab").is_err());
        assert!(
            o.set("format", "xlsx")
                .unwrap_err()
                .to_string()
                .contains("valid formats")
        );
    }
}
