//! Arrow IPC files and streams checked before the reader sees them: their footers, schemas,
//! message lengths and record batch lengths. The reader allocates what a length says, panics
//! on types it does not know, and trusts a record batch's row count when no column is read
//! (`count(*)`): a 17 KB file that claimed a billion rows took minutes to count.

use std::sync::Arc;

use datafusion::arrow::ipc;
use object_store::ObjectMeta;

use super::object_name;

/// The first Arrow IPC file the reader would choke on (a type it does not know, a block or a
/// message past the end of the file), and why.
pub(super) async fn malformed_arrow(
    store: &Arc<dyn object_store::ObjectStore>,
    base: &str,
    objects: &[ObjectMeta],
) -> Option<(String, String)> {
    use datafusion::arrow::ipc;
    use object_store::ObjectStoreExt;
    for meta in objects {
        let name = object_name(base, meta);
        let size = meta.size;
        let (Ok(head), Ok(tail)) = (
            store.get_range(&meta.location, 0..size.min(8)).await,
            store
                .get_range(&meta.location, size.saturating_sub(10)..size)
                .await,
        ) else {
            continue;
        };
        // The reader reads a file that does not start with the magic as a stream, whatever
        // its end says: each message's length must fit in the file (the reader allocates
        // what a length says before reading it).
        if !head.starts_with(b"ARROW1") {
            if let Err(why) = check_ipc_stream(store, &meta.location, size).await {
                return Some((name, why));
            }
            // Schema inference tries the file reader first, which reads a footer (and
            // allocates what its blocks say) whenever the file ends with the magic.
            if size < 16 || tail.len() < 10 || &tail[4..] != b"ARROW1" {
                continue;
            }
        }
        if size < 16 || &tail[4..] != b"ARROW1" {
            return Some((name, "truncated Arrow IPC file: it has no footer".into()));
        }
        let footer_len = i32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]);
        if footer_len <= 0 || footer_len as u64 > size - 10 {
            return Some((
                name,
                "corrupt Arrow IPC footer: its length is past the file".into(),
            ));
        }
        let Ok(footer) = store
            .get_range(&meta.location, size - 10 - footer_len as u64..size - 10)
            .await
        else {
            continue;
        };
        let problem = match ipc::root_as_footer(&footer) {
            Err(e) => Some(format!("corrupt Arrow IPC footer: {e}")),
            Ok(fb) => match check_ipc_footer(&fb, size) {
                Err(why) => Some(why),
                Ok(()) => check_file_batches(store, &meta.location, &fb).await.err(),
            },
        };
        if let Some(why) = problem {
            return Some((name, why));
        }
    }
    None
}

/// The messages of an Arrow IPC stream, walked by their lengths: each must lie within the
/// file.
async fn check_ipc_stream(
    store: &Arc<dyn object_store::ObjectStore>,
    location: &object_store::path::Path,
    size: u64,
) -> Result<(), String> {
    use datafusion::arrow::ipc;
    use object_store::ObjectStoreExt;
    let mut at = 0u64;
    let mut columns = Vec::new();
    // Enough messages for any real stream of a local file's size; the walk stops there.
    for _ in 0..100_000 {
        if at + 4 > size {
            return Ok(());
        }
        let prefix = store
            .get_range(location, at..(at + 8).min(size))
            .await
            .map_err(|e| e.to_string())?;
        let Some((length, header)) = message_prefix(&prefix) else {
            return Ok(());
        };
        if length == 0 {
            return Ok(());
        }
        let start = at + header as u64;
        if length < 0 || start + length as u64 > size {
            return Err(format!(
                "corrupt Arrow IPC stream: a message of {length} bytes at offset {at} in a file of {size}"
            ));
        }
        let metadata = store
            .get_range(location, start..start + length as u64)
            .await
            .map_err(|e| e.to_string())?;
        let message = ipc::root_as_message(&metadata)
            .map_err(|e| format!("corrupt Arrow IPC stream: {e}"))?;
        let body = message.bodyLength();
        let end = start + length as u64;
        if body < 0 || end + body as u64 > size {
            return Err(format!(
                "corrupt Arrow IPC stream: a message body of {body} bytes at offset {end} in a file of {size}"
            ));
        }
        if let Some(schema) = message.header_as_schema() {
            check_ipc_schema(&schema)?;
            columns = top_level_columns(&schema);
        }
        check_batch_length(&message, &columns, "stream")?;
        at = end + body as u64;
    }
    Ok(())
}

/// What the Arrow IPC reader would panic on or allocate without bound: a schema without
/// fields, a type it does not support, a block that reaches past the file's end.
pub(super) fn check_ipc_footer(
    footer: &datafusion::arrow::ipc::Footer<'_>,
    size: u64,
) -> Result<(), String> {
    let schema = footer
        .schema()
        .ok_or("corrupt Arrow IPC footer: no schema")?;
    check_ipc_schema(&schema)?;
    let blocks = footer
        .recordBatches()
        .into_iter()
        .flatten()
        .chain(footer.dictionaries().into_iter().flatten());
    for block in blocks {
        let (offset, meta, body) = (block.offset(), block.metaDataLength(), block.bodyLength());
        let end = (offset as i128) + (meta as i128) + (body as i128);
        if offset < 0 || meta < 0 || body < 0 || end > size as i128 {
            return Err(format!(
                "corrupt Arrow IPC file: a block of {} bytes at offset {offset} is past its end ({size} bytes)",
                meta as i128 + body as i128
            ));
        }
    }
    Ok(())
}

fn check_ipc_schema(schema: &datafusion::arrow::ipc::Schema<'_>) -> Result<(), String> {
    let fields = schema
        .fields()
        .ok_or("corrupt Arrow IPC schema: no fields")?;
    for kv in schema.custom_metadata().into_iter().flatten() {
        if kv.key().is_none() || kv.value().is_none() {
            return Err("corrupt Arrow IPC schema: metadata without a key or value".into());
        }
    }
    for field in fields {
        check_ipc_field(field, 0)?;
    }
    Ok(())
}

fn check_ipc_field(field: datafusion::arrow::ipc::Field<'_>, depth: usize) -> Result<(), String> {
    use datafusion::arrow::ipc::{DateUnit, IntervalUnit, Precision, TimeUnit, Type, UnionMode};
    let name = field.name().unwrap_or("?");
    let bad = |what: &str| {
        Err(format!(
            "corrupt Arrow IPC schema: column '{name}' has {what}"
        ))
    };
    if depth > 64 {
        return bad("types nested too deep");
    }
    let children = field.children().map_or(0, |c| c.len());
    let int_width = |w: i32| matches!(w, 8 | 16 | 32 | 64);
    let known = match field.type_type() {
        Type::Int => field.type_as_int().is_some_and(|i| int_width(i.bitWidth())),
        Type::FloatingPoint => field.type_as_floating_point().is_some_and(|f| {
            matches!(
                f.precision(),
                Precision::HALF | Precision::SINGLE | Precision::DOUBLE
            )
        }),
        Type::Date => field
            .type_as_date()
            .is_some_and(|d| matches!(d.unit(), DateUnit::DAY | DateUnit::MILLISECOND)),
        Type::Time => field.type_as_time().is_some_and(|t| {
            matches!(
                (t.unit(), t.bitWidth()),
                (TimeUnit::SECOND | TimeUnit::MILLISECOND, 32)
                    | (TimeUnit::MICROSECOND | TimeUnit::NANOSECOND, 64)
            )
        }),
        Type::Timestamp => field.type_as_timestamp().is_some_and(|t| {
            matches!(
                t.unit(),
                TimeUnit::SECOND
                    | TimeUnit::MILLISECOND
                    | TimeUnit::MICROSECOND
                    | TimeUnit::NANOSECOND
            )
        }),
        Type::Duration => field.type_as_duration().is_some_and(|t| {
            matches!(
                t.unit(),
                TimeUnit::SECOND
                    | TimeUnit::MILLISECOND
                    | TimeUnit::MICROSECOND
                    | TimeUnit::NANOSECOND
            )
        }),
        Type::Interval => field.type_as_interval().is_some_and(|i| {
            matches!(
                i.unit(),
                IntervalUnit::YEAR_MONTH | IntervalUnit::DAY_TIME | IntervalUnit::MONTH_DAY_NANO
            )
        }),
        Type::List | Type::LargeList | Type::ListView | Type::LargeListView => children == 1,
        Type::FixedSizeList => children == 1 && field.type_as_fixed_size_list().is_some(),
        Type::Map => children == 1 && field.type_as_map().is_some(),
        Type::FixedSizeBinary => field.type_as_fixed_size_binary().is_some(),
        Type::Decimal => field.type_as_decimal().is_some_and(|d| {
            u8::try_from(d.precision()).is_ok()
                && i8::try_from(d.scale()).is_ok()
                && matches!(d.bitWidth(), 32 | 64 | 128 | 256)
        }),
        Type::Union => field
            .type_as_union()
            .is_some_and(|u| matches!(u.mode(), UnionMode::Sparse | UnionMode::Dense)),
        Type::Null
        | Type::Bool
        | Type::Binary
        | Type::BinaryView
        | Type::LargeBinary
        | Type::Utf8
        | Type::Utf8View
        | Type::LargeUtf8
        | Type::Struct_
        | Type::RunEndEncoded => true,
        _ => false,
    };
    if !known {
        return bad("a type the Arrow reader does not support");
    }
    if let Some(dictionary) = field.dictionary()
        && !dictionary
            .indexType()
            .is_some_and(|i| int_width(i.bitWidth()))
    {
        return bad("a dictionary index of an unsupported type");
    }
    for kv in field.custom_metadata().into_iter().flatten() {
        if kv.key().is_none() || kv.value().is_none() {
            return bad("metadata without a key or value");
        }
    }
    for child in field.children().into_iter().flatten() {
        check_ipc_field(child, depth + 1)?;
    }
    Ok(())
}

/// Each top-level column of a schema: its name and the index of its node in a record batch
/// (a nested column's children have nodes of their own after it).
fn top_level_columns(schema: &ipc::Schema<'_>) -> Vec<(String, usize)> {
    fn nodes(field: ipc::Field<'_>, depth: usize) -> usize {
        if depth > 64 {
            return 1;
        }
        1 + field
            .children()
            .into_iter()
            .flatten()
            .map(|c| nodes(c, depth + 1))
            .sum::<usize>()
    }
    let mut at = 0;
    let mut out = Vec::new();
    for field in schema.fields().into_iter().flatten() {
        out.push((field.name().unwrap_or("?").to_string(), at));
        at += nodes(field, 0);
    }
    out
}

/// A record batch's row count must be its columns' length: the reader trusts the count alone
/// when no column is read.
fn check_batch_length(
    message: &ipc::Message<'_>,
    columns: &[(String, usize)],
    what: &str,
) -> Result<(), String> {
    let Some(batch) = message.header_as_record_batch() else {
        return Ok(());
    };
    let rows = batch.length();
    let nodes = batch.nodes();
    for (name, at) in columns {
        let length = nodes.filter(|n| *at < n.len()).map(|n| n.get(*at).length());
        match length {
            Some(length) if length == rows => {}
            Some(length) => {
                return Err(format!(
                    "corrupt Arrow IPC {what}: a record batch says it has {rows} rows but its column '{name}' has {length}"
                ));
            }
            None => {
                return Err(format!(
                    "corrupt Arrow IPC {what}: a record batch has no data for its column '{name}'"
                ));
            }
        }
    }
    if rows < 0 {
        return Err(format!(
            "corrupt Arrow IPC {what}: a record batch says it has {rows} rows"
        ));
    }
    Ok(())
}

/// The record batches a file's footer lists, each checked by its message's header.
async fn check_file_batches(
    store: &Arc<dyn object_store::ObjectStore>,
    location: &object_store::path::Path,
    footer: &ipc::Footer<'_>,
) -> Result<(), String> {
    use object_store::ObjectStoreExt;
    let Some(schema) = footer.schema() else {
        return Ok(());
    };
    let columns = top_level_columns(&schema);
    for block in footer.recordBatches().into_iter().flatten() {
        // Blocks lie within the file (checked with the footer).
        let start = block.offset() as u64;
        let metadata = store
            .get_range(location, start..start + block.metaDataLength() as u64)
            .await
            .map_err(|e| e.to_string())?;
        let (length, header) = message_prefix(&metadata).unwrap_or((0, 0));
        let message = usize::try_from(length)
            .ok()
            .and_then(|n| metadata.get(header..header + n))
            .ok_or_else(|| {
                format!("corrupt Arrow IPC file: the record batch at offset {start} has a message of {length} bytes in a block of {}", metadata.len())
            })?;
        let message = ipc::root_as_message(message).map_err(|e| {
            format!("corrupt Arrow IPC file: the record batch at offset {start}: {e}")
        })?;
        check_batch_length(&message, &columns, "file")?;
    }
    Ok(())
}

/// An encapsulated message's metadata length and where its flatbuffer starts: after the
/// continuation marker and the length, or (in old streams and files) the length alone.
/// `None` when fewer than four bytes are left.
fn message_prefix(bytes: &[u8]) -> Option<(i32, usize)> {
    let word = |i: usize| {
        bytes
            .get(i..i + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    match word(0)? {
        -1 => Some((word(4).unwrap_or(0), 8)),
        n => Some((n, 4)),
    }
}
