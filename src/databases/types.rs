//! How each backend's column types read as Arrow types: PostgreSQL's from its catalog, with
//! the types its driver cannot read (or reads wrongly) read through a cast, SQLite's by its
//! rules of type affinity, and MySQL's `BOOLEAN` columns found among its `TINYINT(1)`s.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, IntervalUnit, Schema, SchemaRef, TimeUnit,
};
use datafusion::common::TableReference;
use datafusion::error::Result as DfResult;

use super::tables::{Pool, fetch, mysql_database, root_message, sql_literal};

/// The precision and scale of PostgreSQL's `numeric` without a declared one, which holds
/// any number: 18 digits before the point and 20 after.
const BARE_NUMERIC: (u8, i8) = (38, 20);

/// How Strata reads a PostgreSQL column whose type (or a domain's base type) is named `ty`
/// (`element` for an array of it), with type modifier `typmod`: the Arrow type, and whether
/// the SELECT casts the column to it. Its driver reads numbers, booleans, text, bytes, dates
/// and times, intervals and arrays of most of them as they are; `money` is read as
/// `numeric(19,2)` (the driver gives its cents); and everything else as its text in
/// PostgreSQL (`char(n)` without its trailing blanks, as PostgreSQL's own casts give it, so
/// that values compare, group and join alike there and in Strata).
pub(super) fn postgres_type(ty: &str, typmod: i32, element: Option<&str>) -> (DataType, bool) {
    let text = (DataType::Utf8, true);
    if let Some(element) = element {
        let listed = matches!(
            element,
            "int2"
                | "int4"
                | "int8"
                | "float4"
                | "float8"
                | "bool"
                | "text"
                | "bytea"
                | "oid"
                | "numeric"
        );
        return match postgres_native(element, typmod) {
            Some(item) if listed => (
                DataType::List(Arc::new(Field::new("item", item, true))),
                false,
            ),
            _ => text,
        };
    }
    match ty {
        "money" => (DataType::Decimal128(19, 2), true),
        _ => postgres_native(ty, typmod).map_or(text, |t| (t, false)),
    }
}

/// The Arrow type of a PostgreSQL type its driver reads as it is.
fn postgres_native(ty: &str, typmod: i32) -> Option<DataType> {
    Some(match ty {
        "int2" => DataType::Int16,
        "int4" => DataType::Int32,
        "int8" => DataType::Int64,
        "float4" => DataType::Float32,
        "float8" => DataType::Float64,
        "bool" => DataType::Boolean,
        "text" | "varchar" | "name" => DataType::Utf8,
        "bytea" => DataType::Binary,
        "oid" => DataType::UInt32,
        "date" => DataType::Date32,
        "time" => DataType::Time64(TimeUnit::Nanosecond),
        "timestamp" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        "interval" => DataType::Interval(IntervalUnit::MonthDayNano),
        "numeric" => {
            let (precision, scale) = numeric_modifier(typmod)?;
            DataType::Decimal128(precision, scale)
        }
        _ => return None,
    })
}

/// The precision and scale `numeric(p,s)` keeps in its type modifier, where a `Decimal128`
/// holds them (precision up to 38, scale from 0 to the precision).
fn numeric_modifier(typmod: i32) -> Option<(u8, i8)> {
    if typmod < 0 {
        return Some(BARE_NUMERIC);
    }
    let packed = typmod - 4;
    let precision = (packed >> 16) & 0xffff;
    // The scale is 11 bits with a sign (PostgreSQL 15 allows it below 0 and above p).
    let scale = ((packed & 0x7ff) ^ 1024) - 1024;
    match (u8::try_from(precision), i8::try_from(scale)) {
        (Ok(p), Ok(s)) if (1..=38).contains(&p) && s >= 0 && s as u8 <= p => Some((p, s)),
        _ => None,
    }
}

/// The columns of the PostgreSQL table `reference` as Strata reads them ([`postgres_type`]),
/// and the positions of those read through a cast.
pub(super) async fn postgres_schema(
    pool: &Pool,
    reference: &TableReference,
) -> Result<(SchemaRef, Vec<usize>), String> {
    let sql = format!(
        "SELECT r.rel IS NOT NULL AS found, a.attname::text AS name, b.typname::text AS ty, \
         CASE WHEN t.typtype = 'd' THEN t.typtypmod ELSE a.atttypmod END AS typmod, \
         e.typname::text AS element, a.attnotnull AS required \
         FROM (SELECT to_regclass({}) AS rel) r \
         LEFT JOIN pg_attribute a ON a.attrelid = r.rel AND a.attnum > 0 AND NOT a.attisdropped \
         LEFT JOIN pg_type t ON t.oid = a.atttypid \
         LEFT JOIN pg_type b ON b.oid = \
           CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END \
         LEFT JOIN pg_type e ON e.oid = b.typelem AND b.typcategory = 'A' \
         ORDER BY a.attnum",
        sql_literal(&reference.to_quoted_string())
    );
    let columns = fetch(
        pool,
        sql,
        Arc::new(Schema::new(vec![
            Field::new("found", DataType::Boolean, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("ty", DataType::Utf8, true),
            Field::new("typmod", DataType::Int32, true),
            Field::new("element", DataType::Utf8, true),
            Field::new("required", DataType::Boolean, true),
        ])),
    )
    .await
    .map_err(|e| root_message(&e))?;
    let mut fields = Vec::new();
    let mut casts = Vec::new();
    let mut found = false;
    for batch in &columns {
        let (Some(exists), Some(names), Some(types), Some(mods), Some(elements), Some(required)) = (
            batch.column(0).as_boolean_opt(),
            batch.column(1).as_string_opt::<i32>(),
            batch.column(2).as_string_opt::<i32>(),
            batch.column(3).as_primitive_opt::<Int32Type>(),
            batch.column(4).as_string_opt::<i32>(),
            batch.column(5).as_boolean_opt(),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            found |= exists.value(i);
            if names.is_null(i) {
                continue;
            }
            let element = (!elements.is_null(i)).then(|| elements.value(i));
            let (ty, cast) = postgres_type(types.value(i), mods.value(i), element);
            if cast {
                casts.push(fields.len());
            }
            let nullable = required.is_null(i) || !required.value(i);
            fields.push(Field::new(names.value(i), ty, nullable));
        }
    }
    if !found {
        return Err(format!(
            "relation {} does not exist",
            reference.to_quoted_string()
        ));
    }
    Ok((Arc::new(Schema::new(fields)), casts))
}

/// The Arrow type of an SQLite column declared `declared`, by SQLite's rules of type
/// affinity: INT integers, CHAR/CLOB/TEXT text, BLOB (or no type) bytes, REAL/FLOA/DOUB
/// floats; of the numeric rest, BOOL is a boolean, DATE and TIME text (as SQLite stores
/// them), and anything else (NUMERIC, DECIMAL) a float.
pub(super) fn sqlite_type(declared: &str) -> DataType {
    let t = declared.to_ascii_uppercase();
    if t.contains("INT") {
        DataType::Int64
    } else if t.contains("CHAR") || t.contains("CLOB") || t.contains("TEXT") {
        DataType::Utf8
    } else if t.contains("BLOB") || t.is_empty() {
        DataType::Binary
    } else if t.contains("REAL") || t.contains("FLOA") || t.contains("DOUB") {
        DataType::Float64
    } else if t.contains("BOOL") {
        DataType::Boolean
    } else if t.contains("DATE") || t.contains("TIME") {
        DataType::Utf8
    } else {
        DataType::Float64
    }
}

/// The schema of an SQLite table from its columns' declared types ([`sqlite_type`]); a
/// column declared without a type keeps the type its values were read as (`read`).
pub(super) async fn sqlite_schema(
    pool: &Pool,
    reference: &TableReference,
    read: &SchemaRef,
) -> Result<SchemaRef, String> {
    let sql = format!(
        "SELECT name, type, \"notnull\" AS n FROM pragma_table_info({}{})",
        sql_literal(reference.table()),
        reference
            .schema()
            .map_or(String::new(), |s| format!(", {}", sql_literal(s)))
    );
    let columns = fetch(
        pool,
        sql,
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("type", DataType::Utf8, true),
            Field::new("n", DataType::Int64, true),
        ])),
    )
    .await
    .map_err(|e| root_message(&e))?;
    let mut fields = Vec::new();
    for batch in &columns {
        let (Some(names), Some(types), Some(required)) = (
            batch.column(0).as_string_opt::<i32>(),
            batch.column(1).as_string_opt::<i32>(),
            batch.column(2).as_primitive_opt::<Int64Type>(),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            let name = names.value(i);
            let declared = types.value(i);
            let ty = match read.field_with_name(name) {
                Ok(f) if declared.is_empty() && f.data_type() != &DataType::Null => {
                    f.data_type().clone()
                }
                _ => sqlite_type(declared),
            };
            fields.push(Field::new(name, ty, required.value(i) == 0));
        }
    }
    if fields.is_empty() {
        return Err("no such table".into());
    }
    Ok(Arc::new(Schema::new(fields)))
}

/// The columns of a MySQL table declared `BOOLEAN` (stored as `TINYINT(1)`).
pub(super) async fn mysql_booleans(
    pool: &Pool,
    reference: &TableReference,
) -> DfResult<Vec<String>> {
    let sql = format!(
        "SELECT CAST(COLUMN_NAME AS CHAR) AS c FROM information_schema.COLUMNS \
         WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} AND LOWER(COLUMN_TYPE) = 'tinyint(1)'",
        mysql_database(reference),
        sql_literal(reference.table())
    );
    let schema = Arc::new(Schema::new(vec![Field::new("c", DataType::Utf8, true)]));
    let batches = fetch(pool, sql, schema).await?;
    Ok(batches
        .iter()
        .filter_map(|b| b.column(0).as_string_opt::<i32>().cloned())
        .flat_map(|c| c.iter().flatten().map(str::to_string).collect::<Vec<_>>())
        .collect())
}

/// `schema` with the integer columns named in `flags` as booleans.
pub(super) fn with_booleans(schema: &SchemaRef, flags: &[String]) -> SchemaRef {
    let fields: Vec<Field> = schema
        .fields()
        .iter()
        .map(|f| {
            let integer = matches!(f.data_type(), DataType::Int8 | DataType::UInt8);
            if integer && flags.iter().any(|n| n == f.name()) {
                f.as_ref().clone().with_data_type(DataType::Boolean)
            } else {
                f.as_ref().clone()
            }
        })
        .collect();
    Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_columns_take_the_type_their_declaration_gives() {
        for (declared, ty) in [
            ("INTEGER", DataType::Int64),
            ("BIGINT UNSIGNED", DataType::Int64),
            ("VARCHAR(20)", DataType::Utf8),
            ("text", DataType::Utf8),
            ("BLOB", DataType::Binary),
            ("", DataType::Binary),
            ("DOUBLE PRECISION", DataType::Float64),
            ("DECIMAL(10,2)", DataType::Float64),
            ("BOOLEAN", DataType::Boolean),
            ("DATETIME", DataType::Utf8),
        ] {
            assert_eq!(sqlite_type(declared), ty, "{declared}");
        }
    }

    #[test]
    fn postgres_columns_read_as_their_arrow_type_or_through_a_cast() {
        // numeric(12,2) and numeric(40,2) as PostgreSQL stores their modifiers.
        let numeric = |p: i32, s: i32| ((p << 16) | s) + 4;
        let list = |t: DataType| DataType::List(Arc::new(Field::new("item", t, true)));
        for (ty, typmod, element, read) in [
            ("int4", -1, None, (DataType::Int32, false)),
            (
                "numeric",
                numeric(12, 2),
                None,
                (DataType::Decimal128(12, 2), false),
            ),
            ("numeric", -1, None, (DataType::Decimal128(38, 20), false)),
            ("numeric", numeric(40, 2), None, (DataType::Utf8, true)),
            ("money", -1, None, (DataType::Decimal128(19, 2), true)),
            ("bpchar", 14, None, (DataType::Utf8, true)),
            ("uuid", -1, None, (DataType::Utf8, true)),
            ("inet", -1, None, (DataType::Utf8, true)),
            ("macaddr8", -1, None, (DataType::Utf8, true)),
            ("varchar", 24, None, (DataType::Utf8, false)),
            ("_int4", -1, Some("int4"), (list(DataType::Int32), false)),
            ("_text", -1, Some("text"), (list(DataType::Utf8), false)),
            ("_uuid", -1, Some("uuid"), (DataType::Utf8, true)),
            ("_date", -1, Some("date"), (DataType::Utf8, true)),
        ] {
            assert_eq!(postgres_type(ty, typmod, element), read, "{ty}");
        }
    }
}
