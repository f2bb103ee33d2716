//! SQL names for Arrow types, as DuckDB and PostgreSQL write them (`VARCHAR`, `BIGINT`,
//! `DECIMAL(15,2)`, `INTEGER[]`, `STRUCT(a INTEGER)`), shown by `DESCRIBE`, `SHOW COLUMNS`,
//! `information_schema.columns` and error messages; and the SQL type names Strata accepts
//! beyond DataFusion's, so every name it shows is accepted back.

use std::borrow::Cow;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{Array, ArrayRef, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{
    DataType, Field, FieldRef, Fields, Schema, SchemaRef, TimeUnit, UnionMode,
};
use datafusion::catalog::{Session, TableProvider};
use datafusion::common::tree_node::{Transformed, TreeNode};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableType, provider_as_source, source_as_provider};
use datafusion::error::Result as DfResult;
use datafusion::logical_expr::planner::TypePlanner;
use datafusion::logical_expr::{
    Expr, LogicalPlan, LogicalPlanBuilder, TableProviderFilterPushDown,
};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::scalar::ScalarValue;
use datafusion::sql::sqlparser::ast::{self, ArrayElemTypeDef, ExactNumberInfo, TimezoneInfo};
use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The SQL name of an Arrow type: `VARCHAR` for every string type, `BIGINT`, `DOUBLE`,
/// `DECIMAL(15,2)`, `DATE`, `TIMESTAMP` (nanoseconds; `TIMESTAMP(6)` for microseconds),
/// `BLOB`, `INTEGER[]`, `STRUCT(a INTEGER, b VARCHAR)`, `MAP(VARCHAR, BIGINT)`. Types SQL
/// has no name for keep their Arrow name.
pub fn sql_name(dt: &DataType) -> String {
    match dt {
        DataType::Null => "NULL".into(),
        DataType::Boolean => "BOOLEAN".into(),
        DataType::Int8 => "TINYINT".into(),
        DataType::Int16 => "SMALLINT".into(),
        DataType::Int32 => "INTEGER".into(),
        DataType::Int64 => "BIGINT".into(),
        DataType::UInt8 => "UTINYINT".into(),
        DataType::UInt16 => "USMALLINT".into(),
        DataType::UInt32 => "UINTEGER".into(),
        DataType::UInt64 => "UBIGINT".into(),
        DataType::Float16 => "FLOAT2".into(),
        DataType::Float32 => "FLOAT".into(),
        DataType::Float64 => "DOUBLE".into(),
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR".into(),
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "BLOB".into(),
        DataType::Date32 | DataType::Date64 => "DATE".into(),
        DataType::Time32(_) | DataType::Time64(_) => "TIME".into(),
        DataType::Timestamp(unit, tz) => {
            let base = match unit {
                TimeUnit::Second => "TIMESTAMP(0)",
                TimeUnit::Millisecond => "TIMESTAMP(3)",
                TimeUnit::Microsecond => "TIMESTAMP(6)",
                TimeUnit::Nanosecond => "TIMESTAMP",
            };
            match tz {
                Some(_) => format!("{base} WITH TIME ZONE"),
                None => base.into(),
            }
        }
        DataType::Interval(_) => "INTERVAL".into(),
        DataType::Decimal32(p, s)
        | DataType::Decimal64(p, s)
        | DataType::Decimal128(p, s)
        | DataType::Decimal256(p, s) => format!("DECIMAL({p},{s})"),
        DataType::List(f)
        | DataType::LargeList(f)
        | DataType::ListView(f)
        | DataType::LargeListView(f) => format!("{}[]", sql_name(f.data_type())),
        DataType::FixedSizeList(f, n) => format!("{}[{n}]", sql_name(f.data_type())),
        DataType::Struct(fields) => format!("STRUCT({})", named_fields(fields.iter())),
        DataType::Union(fields, UnionMode::Sparse | UnionMode::Dense) => {
            format!("UNION({})", named_fields(fields.iter().map(|(_, f)| f)))
        }
        DataType::Map(entries, _) => match entries.data_type() {
            DataType::Struct(kv) if kv.len() == 2 => format!(
                "MAP({}, {})",
                sql_name(kv[0].data_type()),
                sql_name(kv[1].data_type())
            ),
            other => other.to_string(),
        },
        DataType::Dictionary(_, values) => sql_name(values),
        DataType::RunEndEncoded(_, values) => sql_name(values.data_type()),
        DataType::Duration(_) => dt.to_string(),
    }
}

fn named_fields<'a>(fields: impl Iterator<Item = &'a FieldRef>) -> String {
    fields
        .map(|f| format!("{} {}", identifier(f.name()), sql_name(f.data_type())))
        .collect::<Vec<_>>()
        .join(", ")
}

/// A name as SQL reads it back: bare when it is a lower-case word, quoted otherwise.
fn identifier(name: &str) -> Cow<'_, str> {
    let plain = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_lowercase() || c == '_')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if plain {
        Cow::Borrowed(name)
    } else {
        Cow::Owned(format!("\"{}\"", name.replace('"', "\"\"")))
    }
}

/// The SQL type names DataFusion does not know and Strata shows or DuckDB users write:
/// `UTINYINT` … `UBIGINT`, `HUGEINT`, `BLOB`, `FLOAT2`, `TIMESTAMP_S`/`_MS`/`_US`/`_NS`,
/// `MAP(K, V)`, and the ClickHouse-style `Int64`, `UInt8`, `Float64`.
#[derive(Debug, Default)]
pub struct StrataTypes;

impl TypePlanner for StrataTypes {
    fn plan_type_field(&self, sql_type: &ast::DataType) -> DfResult<Option<FieldRef>> {
        let planned = match sql_type {
            ast::DataType::Map(key, value) => {
                let (Some(k), Some(v)) = (scalar_type(key), scalar_type(value)) else {
                    return Ok(None);
                };
                Some(map_type(k, v))
            }
            other => extra_type(other),
        };
        Ok(planned.map(|t| Arc::new(Field::new("", t, true))))
    }
}

fn map_type(key: DataType, value: DataType) -> DataType {
    let entries = Fields::from(vec![
        Field::new("key", key, false),
        Field::new("value", value, true),
    ]);
    DataType::Map(
        Arc::new(Field::new("entries", DataType::Struct(entries), false)),
        false,
    )
}

/// Only the types DataFusion's planner rejects.
fn extra_type(sql_type: &ast::DataType) -> Option<DataType> {
    use ast::DataType as S;
    Some(match sql_type {
        S::UTinyInt | S::UInt8 => DataType::UInt8,
        S::USmallInt | S::UInt16 => DataType::UInt16,
        S::UInt32 => DataType::UInt32,
        S::UBigInt | S::UInt64 => DataType::UInt64,
        S::Int16 => DataType::Int16,
        S::Int32 => DataType::Int32,
        S::Int64 => DataType::Int64,
        S::Float32 => DataType::Float32,
        S::Float64 => DataType::Float64,
        S::HugeInt => DataType::Decimal128(38, 0),
        S::Blob(_)
        | S::Binary(_)
        | S::Varbinary(_)
        | S::Bytes(_)
        | S::TinyBlob
        | S::MediumBlob
        | S::LongBlob => DataType::Binary,
        S::Custom(name, modifiers) if modifiers.is_empty() && name.0.len() == 1 => {
            match name.to_string().to_ascii_uppercase().trim_matches('"') {
                "UINTEGER" | "UINT" => DataType::UInt32,
                "FLOAT2" | "HALF" => DataType::Float16,
                "TIMESTAMP_S" => DataType::Timestamp(TimeUnit::Second, None),
                "TIMESTAMP_MS" => DataType::Timestamp(TimeUnit::Millisecond, None),
                "TIMESTAMP_US" => DataType::Timestamp(TimeUnit::Microsecond, None),
                "TIMESTAMP_NS" => DataType::Timestamp(TimeUnit::Nanosecond, None),
                _ => return None,
            }
        }
        _ => return None,
    })
}

/// A type written in SQL, as the catalog file declares partition columns (`"BIGINT"`,
/// `"DATE"`, `"DECIMAL(10,2)"`, `"VARCHAR"`), to its Arrow type; the same names `CAST`
/// takes, plus the short names `string`, `long` and `utf8`.
pub fn parse_sql_type(text: &str) -> Option<DataType> {
    match text.trim().to_ascii_lowercase().as_str() {
        "string" | "utf8" => return Some(DataType::Utf8),
        "long" => return Some(DataType::Int64),
        _ => {}
    }
    let mut parser = Parser::new(&GenericDialect {}).try_with_sql(text).ok()?;
    let parsed = parser.parse_data_type().ok()?;
    if parser.peek_token().token != Token::EOF {
        return None;
    }
    scalar_type(&parsed)
}

/// A scalar SQL type to its Arrow type (strings as `Utf8`).
fn scalar_type(sql_type: &ast::DataType) -> Option<DataType> {
    use ast::DataType as S;
    if let Some(t) = extra_type(sql_type) {
        return Some(t);
    }
    Some(match sql_type {
        S::Boolean | S::Bool => DataType::Boolean,
        S::TinyInt(_) => DataType::Int8,
        S::SmallInt(_) | S::Int2(_) => DataType::Int16,
        S::Int(_) | S::Integer(_) | S::Int4(_) => DataType::Int32,
        S::BigInt(_) | S::Int8(_) => DataType::Int64,
        S::TinyIntUnsigned(_) => DataType::UInt8,
        S::SmallIntUnsigned(_) | S::Int2Unsigned(_) => DataType::UInt16,
        S::IntUnsigned(_) | S::IntegerUnsigned(_) | S::Int4Unsigned(_) => DataType::UInt32,
        S::BigIntUnsigned(_) | S::Int8Unsigned(_) => DataType::UInt64,
        S::Float(_) | S::Real | S::Float4 => DataType::Float32,
        S::Double(ExactNumberInfo::None) | S::DoublePrecision | S::Float8 => DataType::Float64,
        S::Varchar(_) | S::Char(_) | S::Text | S::String(_) | S::CharacterVarying(_) => {
            DataType::Utf8
        }
        S::Date => DataType::Date32,
        S::Bytea => DataType::Binary,
        S::Timestamp(precision, tz) => {
            let unit = match precision {
                Some(0) => TimeUnit::Second,
                Some(3) => TimeUnit::Millisecond,
                Some(6) => TimeUnit::Microsecond,
                None | Some(9) => TimeUnit::Nanosecond,
                Some(_) => return None,
            };
            let zone = matches!(tz, TimezoneInfo::Tz | TimezoneInfo::WithTimeZone);
            DataType::Timestamp(unit, zone.then(|| "+00:00".into()))
        }
        S::Decimal(info) | S::Numeric(info) => match *info {
            ExactNumberInfo::PrecisionAndScale(p, s) => {
                let (p, s) = (u8::try_from(p).ok()?, i8::try_from(s).ok()?);
                if p == 0 || p > 38 || s as i16 > p as i16 {
                    return None;
                }
                DataType::Decimal128(p, s)
            }
            ExactNumberInfo::Precision(p) => DataType::Decimal128(u8::try_from(p).ok()?, 0),
            ExactNumberInfo::None => DataType::Decimal128(38, 10),
        },
        S::Array(ArrayElemTypeDef::SquareBracket(inner, None)) => {
            DataType::List(Arc::new(Field::new_list_field(scalar_type(inner)?, true)))
        }
        _ => return None,
    })
}

/// `STRUCT(a INTEGER, b VARCHAR)` in a type, as DuckDB writes it, becomes the
/// `STRUCT<a INTEGER, b VARCHAR>` that the parser reads. A call of the `struct` function
/// (`struct(1, 'x')`, `STRUCT(1 AS a)`) is left alone: there a name is never followed by a
/// type. Characters keep their places, so error positions stay right.
pub fn struct_types_in_angle_brackets(text: &str) -> Cow<'_, str> {
    if !text.to_ascii_lowercase().contains("struct") {
        return Cow::Borrowed(text);
    }
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, text).tokenize_with_location() else {
        return Cow::Borrowed(text);
    };
    let line_starts: Vec<usize> = std::iter::once(0)
        .chain(text.match_indices('\n').map(|(i, _)| i + 1))
        .collect();
    let offset = |loc: &datafusion::sql::sqlparser::tokenizer::Location| -> Option<usize> {
        let start = *line_starts.get((loc.line as usize).checked_sub(1)?)?;
        let line = &text[start..];
        let col = (loc.column as usize).checked_sub(1)?;
        line.char_indices().nth(col).map(|(i, _)| start + i)
    };
    // Significant tokens, with the byte offset each starts at.
    let significant: Vec<(&Token, usize)> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .filter_map(|t| Some((&t.token, offset(&t.span.start)?)))
        .collect();
    let mut swaps: Vec<(usize, char)> = Vec::new();
    for i in 0..significant.len() {
        let is_struct = matches!(significant[i].0, Token::Word(w)
            if w.quote_style.is_none() && w.value.eq_ignore_ascii_case("struct"));
        if !is_struct || significant.get(i + 1).map(|t| t.0) != Some(&Token::LParen) {
            continue;
        }
        // A field name followed by a type name: a word that is not AS.
        let name = matches!(significant.get(i + 2).map(|t| t.0), Some(Token::Word(_)));
        let type_word = matches!(significant.get(i + 3).map(|t| t.0), Some(Token::Word(w))
            if !w.value.eq_ignore_ascii_case("as"));
        if !(name && type_word) {
            continue;
        }
        let mut depth = 0usize;
        for (token, at) in &significant[i + 1..] {
            match token {
                Token::LParen => depth += 1,
                Token::RParen => {
                    depth -= 1;
                    if depth == 0 {
                        swaps.push((significant[i + 1].1, '<'));
                        swaps.push((*at, '>'));
                        break;
                    }
                }
                _ => {}
            }
        }
    }
    if swaps.is_empty() {
        return Cow::Borrowed(text);
    }
    let mut bytes = text.as_bytes().to_vec();
    for (at, c) in swaps {
        bytes[at] = c as u8;
    }
    // Only ASCII parentheses were swapped for ASCII brackets.
    Cow::Owned(String::from_utf8(bytes).unwrap_or_else(|_| text.to_string()))
}

/// Arrow type names in a message (`Int64`, `Utf8View`, `Timestamp(ns)`, `Decimal128(15, 2)`)
/// replaced by their SQL names; text inside quotes is left as it is.
pub fn sql_names_in_message(message: &str) -> Cow<'_, str> {
    const HEADS: &[&str] = &[
        "Boolean",
        "Int8",
        "Int16",
        "Int32",
        "Int64",
        "UInt8",
        "UInt16",
        "UInt32",
        "UInt64",
        "Float16",
        "Float32",
        "Float64",
        "Utf8View",
        "LargeUtf8",
        "Utf8",
        "BinaryView",
        "LargeBinary",
        "FixedSizeBinary",
        "Binary",
        "Date32",
        "Date64",
        "Time32",
        "Time64",
        "Timestamp",
        "Interval",
        "Decimal32",
        "Decimal64",
        "Decimal128",
        "Decimal256",
        "LargeListView",
        "ListView",
        "LargeList",
        "FixedSizeList",
        "List",
        "Struct",
        "Map",
        "Dictionary",
    ];
    let bytes = message.as_bytes();
    let mut out = String::new();
    let mut copied = 0;
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        if let Some(q) = quote {
            if b == q {
                quote = None;
            }
            i += 1;
            continue;
        }
        // An apostrophe inside a word ("Can't") opens no quote.
        let in_word = i > 0 && bytes[i - 1].is_ascii_alphanumeric();
        if (b == b'\'' && !in_word) || b == b'"' || b == b'`' {
            // `type 'Int64'`: a quoted type name after the word "type" is renamed too.
            let after_type = message[..i]
                .trim_end()
                .to_ascii_lowercase()
                .ends_with("type");
            let close = message[i + 1..].find(b as char).map(|c| i + 1 + c);
            if let (true, Some(close)) = (after_type, close)
                && let Ok(dt) = DataType::from_str(&message[i + 1..close])
            {
                out.push_str(&message[copied..=i]);
                out.push_str(&sql_name(&dt));
                copied = close;
                i = close + 1;
                continue;
            }
            quote = Some(b);
            i += 1;
            continue;
        }
        let starts_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if starts_word
            && b.is_ascii_uppercase()
            && let Some((end, name)) = HEADS.iter().find_map(|h| type_at(message, i, h))
        {
            out.push_str(&message[copied..i]);
            out.push_str(&name);
            copied = end;
            i = end;
            continue;
        }
        i += 1;
    }
    if copied == 0 {
        return Cow::Borrowed(message);
    }
    out.push_str(&message[copied..]);
    Cow::Owned(out)
}

/// The Arrow type named at `at` with the word `head`, if there is one: where it ends and its
/// SQL name.
fn type_at(message: &str, at: usize, head: &str) -> Option<(usize, String)> {
    let rest = &message[at..];
    if !rest.starts_with(head) {
        return None;
    }
    let after = at + head.len();
    let end = match message.as_bytes().get(after) {
        Some(b'(') => after + closing_paren(&message[after..])? + 1,
        Some(c) if c.is_ascii_alphanumeric() || *c == b'_' => return None,
        _ => after,
    };
    // "Binary operator", "Boolean expression": prose, not a type.
    let next_word = message[end..]
        .trim_start()
        .split(|c: char| !c.is_alphanumeric())
        .next();
    if end == after
        && matches!(
            next_word,
            Some("operator" | "operation" | "expression" | "expr")
        )
    {
        return None;
    }
    let dt = DataType::from_str(&message[at..end]).ok()?;
    Some((end, sql_name(&dt)))
}

/// The offset of the parenthesis closing the one `text` starts with; quotes inside count.
fn closing_paren(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut quote = None;
    for (i, b) in text.bytes().enumerate() {
        match (quote, b) {
            (Some(q), c) if c == q => quote = None,
            (Some(_), _) => {}
            (None, b'"' | b'\'') => quote = Some(b),
            (None, b'(') => depth += 1,
            (None, b')') => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
    }
    None
}

/// `plan` showing SQL type names: `DESCRIBE` lists each column's SQL type (with its Arrow
/// type in a last column, `arrow_type`), and `information_schema.columns` (which `SHOW
/// COLUMNS` reads) gives SQL types in `data_type`.
pub fn with_sql_type_names(plan: LogicalPlan) -> DfResult<LogicalPlan> {
    if let LogicalPlan::DescribeTable(describe) = &plan {
        return describe_plan(&describe.schema);
    }
    plan.transform_up(|node| match node {
        LogicalPlan::TableScan(mut scan)
            if scan.table_name.table() == "columns"
                && scan.table_name.schema() == Some("information_schema") =>
        {
            let inner = source_as_provider(&scan.source)?;
            if inner.downcast_ref::<SqlTypedColumns>().is_some() {
                return Ok(Transformed::no(LogicalPlan::TableScan(scan)));
            }
            scan.source = provider_as_source(Arc::new(SqlTypedColumns { inner }));
            Ok(Transformed::yes(LogicalPlan::TableScan(scan)))
        }
        other => Ok(Transformed::no(other)),
    })
    .map(|t| t.data)
}

/// The rows of `DESCRIBE`: column_name, data_type, is_nullable, arrow_type.
fn describe_plan(schema: &Schema) -> DfResult<LogicalPlan> {
    let text = |s: String| Expr::Literal(ScalarValue::Utf8(Some(s)), None);
    let rows: Vec<Vec<Expr>> = schema
        .fields()
        .iter()
        .map(|f| {
            vec![
                text(f.name().clone()),
                text(sql_name(f.data_type())),
                text(if f.is_nullable() { "YES" } else { "NO" }.into()),
                text(f.data_type().to_string()),
            ]
        })
        .collect();
    let names = ["column_name", "data_type", "is_nullable", "arrow_type"];
    if rows.is_empty() {
        let fields: Vec<Field> = names
            .iter()
            .map(|n| Field::new(*n, DataType::Utf8, false))
            .collect();
        let schema = datafusion::common::DFSchema::try_from(Schema::new(fields))?;
        return Ok(LogicalPlan::EmptyRelation(
            datafusion::logical_expr::EmptyRelation {
                produce_one_row: false,
                schema: Arc::new(schema),
            },
        ));
    }
    let values = LogicalPlanBuilder::values(rows)?.build()?;
    let columns: Vec<Expr> = values
        .schema()
        .columns()
        .into_iter()
        .zip(names)
        .map(|(c, name)| Expr::Column(c).alias(name))
        .collect();
    LogicalPlanBuilder::from(values).project(columns)?.build()
}

/// `information_schema.columns` with SQL type names in `data_type`.
#[derive(Debug)]
struct SqlTypedColumns {
    inner: Arc<dyn TableProvider>,
}

#[async_trait]
impl TableProvider for SqlTypedColumns {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![
            TableProviderFilterPushDown::Unsupported;
            filters.len()
        ])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        _filters: &[Expr],
        _limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.inner.schema();
        let all = self.inner.scan(state, None, &[], None).await?;
        let batches = datafusion::physical_plan::collect(all, state.task_ctx()).await?;
        let column = schema.index_of("data_type")?;
        let renamed = batches
            .into_iter()
            .map(|batch| {
                let types = batch.column(column);
                let names: StringArray = (0..types.len())
                    .map(|i| {
                        types
                            .as_any()
                            .downcast_ref::<StringArray>()
                            .filter(|a| a.is_valid(i))
                            .map(|a| {
                                let arrow = a.value(i);
                                DataType::from_str(arrow)
                                    .map(|t| sql_name(&t))
                                    .unwrap_or_else(|_| arrow.to_string())
                            })
                    })
                    .collect();
                let mut columns: Vec<ArrayRef> = batch.columns().to_vec();
                columns[column] = Arc::new(names);
                RecordBatch::try_new(batch.schema(), columns)
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(MemorySourceConfig::try_new_exec(
            &[renamed],
            schema,
            projection.cloned(),
        )?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrow_types_have_the_names_sql_users_write() {
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)));
        let fields = Fields::from(vec![
            Field::new("a", DataType::Int64, true),
            Field::new("Mixed Case", DataType::Utf8View, true),
        ]);
        let cases = [
            (DataType::Utf8View, "VARCHAR"),
            (DataType::Int64, "BIGINT"),
            (DataType::Int32, "INTEGER"),
            (DataType::Float64, "DOUBLE"),
            (DataType::Date32, "DATE"),
            (DataType::Timestamp(TimeUnit::Nanosecond, None), "TIMESTAMP"),
            (
                DataType::Timestamp(TimeUnit::Microsecond, None),
                "TIMESTAMP(6)",
            ),
            (
                DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
                "TIMESTAMP WITH TIME ZONE",
            ),
            (DataType::Decimal128(15, 2), "DECIMAL(15,2)"),
            (list.clone(), "INTEGER[]"),
            (
                DataType::Struct(fields),
                "STRUCT(a BIGINT, \"Mixed Case\" VARCHAR)",
            ),
            (
                map_type(DataType::Utf8, DataType::Int64),
                "MAP(VARCHAR, BIGINT)",
            ),
            (
                DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8)),
                "VARCHAR",
            ),
        ];
        for (dt, name) in cases {
            assert_eq!(sql_name(&dt), name, "{dt}");
        }
    }

    #[test]
    fn catalog_type_names_parse_as_sql_types() {
        assert_eq!(parse_sql_type("BIGINT"), Some(DataType::Int64));
        assert_eq!(parse_sql_type("int"), Some(DataType::Int32));
        assert_eq!(parse_sql_type("varchar"), Some(DataType::Utf8));
        assert_eq!(parse_sql_type("string"), Some(DataType::Utf8));
        assert_eq!(
            parse_sql_type("DECIMAL(10,2)"),
            Some(DataType::Decimal128(10, 2))
        );
        assert_eq!(
            parse_sql_type("TIMESTAMP(6)"),
            Some(DataType::Timestamp(TimeUnit::Microsecond, None))
        );
        assert_eq!(parse_sql_type("UBIGINT"), Some(DataType::UInt64));
        assert_eq!(parse_sql_type("BIGINT extra"), None);
        assert_eq!(parse_sql_type("nonsense"), None);
    }

    #[test]
    fn struct_types_are_read_in_duckdb_form_and_calls_are_left_alone() {
        assert_eq!(
            struct_types_in_angle_brackets("SELECT CAST(x AS STRUCT(a INT, b STRUCT(c VARCHAR)))"),
            "SELECT CAST(x AS STRUCT<a INT, b STRUCT<c VARCHAR>>)"
        );
        for unchanged in [
            "SELECT struct(1, 'x')",
            "SELECT STRUCT(1 AS a)",
            "SELECT struct(a, b) FROM t",
            "SELECT 'STRUCT(a INT)'",
        ] {
            assert_eq!(struct_types_in_angle_brackets(unchanged), unchanged);
        }
    }

    #[test]
    fn messages_name_sql_types_outside_quotes() {
        assert_eq!(
            sql_names_in_message("Cannot cast Utf8View to Int64"),
            "Cannot cast VARCHAR to BIGINT"
        );
        assert_eq!(
            sql_names_in_message("types Timestamp(ns) and Decimal128(15, 2) differ"),
            "types TIMESTAMP and DECIMAL(15,2) differ"
        );
        assert_eq!(
            sql_names_in_message("column 'Int64' of List(Int32)"),
            "column 'Int64' of INTEGER[]"
        );
        assert_eq!(
            sql_names_in_message("Binary operator failed"),
            "Binary operator failed"
        );
        assert_eq!(sql_names_in_message("Int64Array"), "Int64Array");
    }
}
