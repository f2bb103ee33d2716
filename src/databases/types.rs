//! How each backend's column types read as Arrow types: PostgreSQL's and MySQL's from their
//! catalogs, with the types their drivers cannot read (or read wrongly) read through a cast in
//! the SELECT sent, and SQLite's by its rules of type affinity.

use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::{
    DataType, Field, Int32Type, Int64Type, IntervalUnit, Schema, SchemaRef, TimeUnit,
};
use datafusion::common::TableReference;

use super::tables::{Pool, driver_message, fetch, mysql_database, root_message, sql_literal};

/// How the SELECT reads a column whose type the driver does not read as Strata reads it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reading {
    /// Cast, in the database, to its type in the table's schema.
    Cast,
    /// Not at all: neither the driver nor a cast reads its type (named here).
    Refused(String),
}

/// The columns of a table read otherwise than as they are: their positions and how.
pub(crate) type Readings = Vec<(usize, Reading)>;

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
) -> Result<(SchemaRef, Readings), String> {
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
                casts.push((fields.len(), Reading::Cast));
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

/// How Strata reads a MySQL column of type `ty` (`DATA_TYPE`, e.g. `int`), declared as
/// `declared` (`COLUMN_TYPE`, e.g. `int(10) unsigned`) with numeric `precision` and `scale`:
/// the Arrow type, and whether (and through which function) the SELECT casts it to it. Its
/// driver reads numbers, text, bytes, dates and times; `BOOLEAN` (stored as `TINYINT(1)`)
/// is read as a boolean, as MySQL's own tools show it; any other type (`UUID`, `INET6`…) as
/// its text, but for spatial values, whose text the driver cannot read (it comes as a
/// `LONGTEXT` expression): a query that reads them fails, naming the column.
pub(super) fn mysql_type(
    ty: &str,
    declared: &str,
    precision: Option<i64>,
    scale: Option<i64>,
) -> (DataType, Option<Reading>) {
    let unsigned = declared.contains("unsigned");
    let integer = |signed: DataType, unsigned_type: DataType| match unsigned {
        true => unsigned_type,
        false => signed,
    };
    let native = match ty {
        "tinyint" if declared == "tinyint(1)" => DataType::Boolean,
        "tinyint" => integer(DataType::Int8, DataType::UInt8),
        "smallint" => integer(DataType::Int16, DataType::UInt16),
        "mediumint" | "int" | "integer" => integer(DataType::Int32, DataType::UInt32),
        "bigint" => integer(DataType::Int64, DataType::UInt64),
        "year" => DataType::Int16,
        "bit" => DataType::UInt64,
        "decimal" | "numeric" => {
            let (p, s) = (precision.unwrap_or(10), scale.unwrap_or(0));
            match (u8::try_from(p), i8::try_from(s)) {
                (Ok(p @ 1..=38), Ok(s)) => DataType::Decimal128(p, s),
                (Ok(p @ 39..=76), Ok(s)) => DataType::Decimal256(p, s),
                _ => return (DataType::Utf8, Some(Reading::Cast)),
            }
        }
        "float" => DataType::Float32,
        "double" | "real" => DataType::Float64,
        "char" | "varchar" | "tinytext" | "text" | "mediumtext" | "longtext" | "json" | "enum"
        | "set" => DataType::Utf8,
        "binary" | "varbinary" | "tinyblob" | "blob" | "mediumblob" | "longblob" => {
            DataType::Binary
        }
        "date" => DataType::Date32,
        "time" => DataType::Time64(TimeUnit::Nanosecond),
        "datetime" | "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "geometry" | "point" | "linestring" | "polygon" | "multipoint" | "multilinestring"
        | "multipolygon" | "geometrycollection" | "geomcollection" => {
            return (DataType::Binary, Some(Reading::Refused(ty.to_string())));
        }
        _ => return (DataType::Utf8, Some(Reading::Cast)),
    };
    (native, None)
}

/// The columns of the MySQL table `reference` as Strata reads them ([`mysql_type`]), and
/// those read through a cast.
pub(super) async fn mysql_schema(
    pool: &Pool,
    reference: &TableReference,
) -> Result<(SchemaRef, Readings), String> {
    let sql = format!(
        "SELECT CAST(COLUMN_NAME AS CHAR(64)) AS name, \
         CAST(LOWER(DATA_TYPE) AS CHAR(64)) AS ty, \
         CAST(LOWER(COLUMN_TYPE) AS CHAR(4096)) AS declared, \
         CAST(NUMERIC_PRECISION AS SIGNED) AS p, CAST(NUMERIC_SCALE AS SIGNED) AS s, \
         CAST(IS_NULLABLE = 'YES' AS SIGNED) AS nullable \
         FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = {} AND TABLE_NAME = {} \
         ORDER BY ORDINAL_POSITION",
        mysql_database(reference),
        sql_literal(reference.table())
    );
    let columns = fetch(
        pool,
        sql,
        Arc::new(Schema::new(vec![
            Field::new("name", DataType::Utf8, true),
            Field::new("ty", DataType::Utf8, true),
            Field::new("declared", DataType::Utf8, true),
            Field::new("p", DataType::Int64, true),
            Field::new("s", DataType::Int64, true),
            Field::new("nullable", DataType::Int64, true),
        ])),
    )
    .await
    .map_err(|e| driver_message(&e.to_string()))?;
    let mut fields = Vec::new();
    let mut casts = Vec::new();
    for batch in &columns {
        let (Some(names), Some(types), Some(declared), Some(p), Some(s), Some(nullable)) = (
            batch.column(0).as_string_opt::<i32>(),
            batch.column(1).as_string_opt::<i32>(),
            batch.column(2).as_string_opt::<i32>(),
            batch.column(3).as_primitive_opt::<Int64Type>(),
            batch.column(4).as_primitive_opt::<Int64Type>(),
            batch.column(5).as_primitive_opt::<Int64Type>(),
        ) else {
            continue;
        };
        for i in 0..batch.num_rows() {
            let number =
                |a: &datafusion::arrow::array::Int64Array| (!a.is_null(i)).then(|| a.value(i));
            let (ty, cast) = mysql_type(types.value(i), declared.value(i), number(p), number(s));
            if let Some(reading) = cast {
                casts.push((fields.len(), reading));
            }
            fields.push(Field::new(names.value(i), ty, nullable.value(i) != 0));
        }
    }
    if fields.is_empty() {
        return Err("no such table".into());
    }
    Ok((Arc::new(Schema::new(fields)), casts))
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

    #[test]
    fn mysql_columns_read_as_their_arrow_type_through_a_cast_or_not_at_all() {
        let refused = |ty: &str| Some(Reading::Refused(ty.into()));
        for (ty, declared, p, s, read) in [
            (
                "tinyint",
                "tinyint(1)",
                None,
                None,
                (DataType::Boolean, None),
            ),
            (
                "tinyint",
                "tinyint(1) unsigned",
                None,
                None,
                (DataType::UInt8, None),
            ),
            (
                "bigint",
                "bigint(20) unsigned",
                None,
                None,
                (DataType::UInt64, None),
            ),
            (
                "decimal",
                "decimal(12,2)",
                Some(12),
                Some(2),
                (DataType::Decimal128(12, 2), None),
            ),
            (
                "decimal",
                "decimal(40,5)",
                Some(40),
                Some(5),
                (DataType::Decimal256(40, 5), None),
            ),
            ("year", "year(4)", None, None, (DataType::Int16, None)),
            ("json", "longtext", None, None, (DataType::Utf8, None)),
            (
                "uuid",
                "uuid",
                None,
                None,
                (DataType::Utf8, Some(Reading::Cast)),
            ),
            (
                "inet6",
                "inet6",
                None,
                None,
                (DataType::Utf8, Some(Reading::Cast)),
            ),
            (
                "point",
                "point",
                None,
                None,
                (DataType::Binary, refused("point")),
            ),
        ] {
            assert_eq!(mysql_type(ty, declared, p, s), read, "{declared}");
        }
    }
}
