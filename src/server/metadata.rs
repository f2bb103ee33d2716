//! What Flight SQL clients ask about the server before they query: the SQL types it speaks
//! (as JDBC's `getTypeInfo` shows them) and the keys of its tables (datasets have none).

use std::sync::Arc;

use arrow_flight::sql::metadata::{XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder};
use arrow_flight::sql::{Nullable, Searchable, XdbcDataType, XdbcDatetimeSubcode};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};

/// The SQL types queries can use and return.
pub(super) fn xdbc_types() -> XdbcTypeInfoData {
    let mut builder = XdbcTypeInfoDataBuilder::new();
    let numeric = |name: &str, data_type: XdbcDataType, size: i32| XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        column_size: Some(size),
        nullable: Nullable::NullabilityNullable,
        searchable: Searchable::Full,
        unsigned_attribute: Some(false),
        local_type_name: Some(name.to_string()),
        sql_data_type: data_type,
        num_prec_radix: Some(10),
        ..Default::default()
    };
    let quoted = |name: &str, data_type: XdbcDataType, prefix: &str| XdbcTypeInfo {
        type_name: name.to_string(),
        data_type,
        literal_prefix: Some(prefix.to_string()),
        literal_suffix: Some("'".to_string()),
        nullable: Nullable::NullabilityNullable,
        case_sensitive: true,
        searchable: Searchable::Full,
        local_type_name: Some(name.to_string()),
        sql_data_type: data_type,
        ..Default::default()
    };
    builder.append(XdbcTypeInfo {
        type_name: "BOOLEAN".into(),
        data_type: XdbcDataType::XdbcBit,
        column_size: Some(1),
        nullable: Nullable::NullabilityNullable,
        searchable: Searchable::Basic,
        local_type_name: Some("BOOLEAN".into()),
        sql_data_type: XdbcDataType::XdbcBit,
        ..Default::default()
    });
    builder.append(numeric("TINYINT", XdbcDataType::XdbcTinyint, 3));
    builder.append(numeric("SMALLINT", XdbcDataType::XdbcSmallint, 5));
    builder.append(numeric("INTEGER", XdbcDataType::XdbcInteger, 10));
    builder.append(numeric("BIGINT", XdbcDataType::XdbcBigint, 19));
    builder.append(numeric("REAL", XdbcDataType::XdbcReal, 7));
    builder.append(numeric("DOUBLE", XdbcDataType::XdbcDouble, 15));
    builder.append(XdbcTypeInfo {
        create_params: Some(vec!["precision".into(), "scale".into()]),
        fixed_prec_scale: true,
        minimum_scale: Some(0),
        maximum_scale: Some(38),
        ..numeric("DECIMAL", XdbcDataType::XdbcDecimal, 38)
    });
    builder.append(quoted("VARCHAR", XdbcDataType::XdbcVarchar, "'"));
    builder.append(XdbcTypeInfo {
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeUnknown),
        ..quoted("DATE", XdbcDataType::XdbcDate, "DATE '")
    });
    builder.append(XdbcTypeInfo {
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTime),
        ..quoted("TIME", XdbcDataType::XdbcTime, "TIME '")
    });
    builder.append(XdbcTypeInfo {
        datetime_subcode: Some(XdbcDatetimeSubcode::XdbcSubcodeTimestamp),
        ..quoted("TIMESTAMP", XdbcDataType::XdbcTimestamp, "TIMESTAMP '")
    });
    builder.append(XdbcTypeInfo {
        case_sensitive: false,
        searchable: Searchable::Basic,
        ..quoted("VARBINARY", XdbcDataType::XdbcVarbinary, "X'")
    });
    builder
        .build()
        .expect("the server's type list is well formed")
}

/// The columns of a `GetPrimaryKeys` answer.
pub(super) fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// The columns of a `GetExportedKeys`, `GetImportedKeys` or `GetCrossReference` answer.
pub(super) fn foreign_keys_schema() -> SchemaRef {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("pk_catalog_name", true),
        text("pk_db_schema_name", true),
        text("pk_table_name", false),
        text("pk_column_name", false),
        text("fk_catalog_name", true),
        text("fk_db_schema_name", true),
        text("fk_table_name", false),
        text("fk_column_name", false),
        Field::new("key_sequence", DataType::Int32, false),
        text("fk_key_name", true),
        text("pk_key_name", true),
        Field::new("update_rule", DataType::UInt8, false),
        Field::new("delete_rule", DataType::UInt8, false),
    ]))
}
