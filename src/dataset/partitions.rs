//! Hive-style partition discovery: `key=value/` directories become typed columns
//! (integers stay integers, ISO dates become dates), so filters on them prune directories.

use datafusion::arrow::datatypes::DataType;
use object_store::ObjectMeta;

use super::{DatasetError, Location};

/// A partition column discovered in (or declared for) a dataset's directory layout.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionColumn {
    /// The key in `key=value/`.
    pub name: String,
    /// Its type.
    pub data_type: DataType,
    /// How many distinct values were seen.
    pub distinct_values: usize,
}

/// Discover partition columns from the listed files of every location.
pub(super) fn discover(
    listed: &[(Location, Vec<ObjectMeta>)],
    declared: &[(String, DataType)],
) -> Result<Vec<PartitionColumn>, DatasetError> {
    let mut keys: Option<(Vec<String>, String)> = None;
    let mut values: Vec<Vec<String>> = Vec::new();
    for (loc, files) in listed {
        if !loc.is_collection {
            // A single file has no partition directories of its own.
            if !declared.is_empty() || keys.is_some() {
                return Err(DatasetError::Partitions {
                    location: loc.original.clone(),
                    message: "a single file cannot be combined with partitioned locations".into(),
                });
            }
            return Ok(Vec::new());
        }
        let prefix = loc.url.prefix().as_ref().to_string();
        for f in files {
            let path = f.location.as_ref();
            let rel = path
                .strip_prefix(&prefix)
                .unwrap_or(path)
                .trim_start_matches('/');
            let mut segs: Vec<&str> = rel.split('/').collect();
            segs.pop(); // the file name
            let pairs: Vec<(&str, &str)> = segs.iter().filter_map(|s| s.split_once('=')).collect();
            let these: Vec<String> = pairs.iter().map(|(k, _)| k.to_string()).collect();
            match &keys {
                None => {
                    keys = Some((these, path.to_string()));
                    values = pairs.iter().map(|(_, v)| vec![v.to_string()]).collect();
                }
                Some((known, example)) if *known != these => {
                    return Err(DatasetError::Partitions {
                        location: loc.original.clone(),
                        message: format!(
                            "'{example}' has partition keys [{}] but '{path}' has [{}]",
                            known.join(", "),
                            these.join(", ")
                        ),
                    });
                }
                Some(_) => {
                    for (i, (_, v)) in pairs.iter().enumerate() {
                        values[i].push(v.to_string());
                    }
                }
            }
        }
    }
    let Some((names, _)) = keys else {
        return Ok(Vec::new());
    };
    for (d, _) in declared {
        if !names.contains(d) {
            return Err(DatasetError::Partitions {
                location: listed[0].0.original.clone(),
                message: format!(
                    "declared partition column '{d}' is not among the directories' keys [{}]",
                    names.join(", ")
                ),
            });
        }
    }
    Ok(names
        .into_iter()
        .zip(values)
        .map(|(name, mut vals)| {
            let data_type = declared
                .iter()
                .find(|(d, _)| *d == name)
                .map(|(_, t)| t.clone())
                .unwrap_or_else(|| infer_type(&vals));
            vals.sort();
            vals.dedup();
            PartitionColumn {
                name,
                data_type,
                distinct_values: vals.len(),
            }
        })
        .collect())
}

/// BIGINT when every value is an integer, DATE when every value is `YYYY-MM-DD`, else VARCHAR.
fn infer_type(values: &[String]) -> DataType {
    if values.iter().all(|v| is_integer(v)) {
        DataType::Int64
    } else if values.iter().all(|v| is_iso_date(v)) {
        DataType::Date32
    } else {
        DataType::Utf8
    }
}

fn is_integer(v: &str) -> bool {
    let digits = v.strip_prefix('-').unwrap_or(v);
    !digits.is_empty() && digits.len() <= 18 && digits.bytes().all(|b| b.is_ascii_digit())
}

fn is_iso_date(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn types_are_inferred() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(infer_type(&s(&["2024", "07", "-1"])), DataType::Int64);
        assert_eq!(infer_type(&s(&["2024-01-02"])), DataType::Date32);
        assert_eq!(infer_type(&s(&["NY", "07"])), DataType::Utf8);
        assert_eq!(infer_type(&s(&["1e5"])), DataType::Utf8);
    }
}
