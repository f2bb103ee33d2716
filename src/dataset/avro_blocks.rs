//! The block structure of Avro container files, checked before the reader sees them. The
//! reader trusts each block's record count and byte size: a block that says it holds no
//! records but has bytes made it loop forever (a query nothing could cancel), and sizes past
//! the end of the file are read as given. Each block's records are then walked from the
//! writer schema (see `avro_records`): records that leave bytes over hung the reader too.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;

use super::avro_records::{Layout, Stop};

/// Blocks walked per file at most; a real file of any size this check is for has fewer.
const MAX_BLOCKS: usize = 10_000_000;

/// What is wrong with the Avro container file at `location` (`size` bytes), if anything the
/// reader would not report by itself. A file that does not start like an Avro container is
/// left to the reader.
pub(super) async fn check(
    store: &Arc<dyn ObjectStore>,
    location: &Path,
    size: u64,
) -> Result<(), String> {
    let mut reader = Bytes {
        store,
        location,
        size,
        at: 0,
        buffer: Vec::new(),
        buffer_start: 0,
    };
    if reader.take(4).await? != b"Obj\x01" {
        return Ok(());
    }
    // The header's metadata: a map of byte strings, in blocks of entries.
    let (mut schema, mut codec) = (None, None);
    loop {
        let count = reader.long().await?;
        if count == 0 {
            break;
        }
        if count < 0 {
            // A negative count is followed by the block's size in bytes.
            reader.long().await?;
        }
        for _ in 0..count.unsigned_abs() {
            let key = reader.sized("a metadata key").await?;
            let value = reader.sized("a metadata value").await?;
            match key.as_slice() {
                b"avro.schema" => schema = Some(value),
                b"avro.codec" => codec = Some(value),
                _ => {}
            }
        }
    }
    // Without a schema this walk understands, only the blocks' frames are checked.
    let layout = schema.as_deref().and_then(Layout::parse);
    let codec = codec.unwrap_or_else(|| b"null".to_vec());
    let sync = reader.take(16).await?;
    for _ in 0..MAX_BLOCKS {
        if reader.at >= size {
            return Ok(());
        }
        let at = reader.at;
        let count = reader.long().await?;
        let bytes = reader.long().await?;
        if count < 0 || bytes < 0 {
            return Err(format!(
                "corrupt Avro file: a block at offset {at} gives {count} records in {bytes} bytes"
            ));
        }
        if count == 0 && bytes > 0 {
            return Err(format!(
                "corrupt Avro file: a block at offset {at} holds {bytes} bytes but no records"
            ));
        }
        let data = reader.sized_as(bytes, "a block").await?;
        if reader.take(16).await? != sync {
            return Err(format!(
                "corrupt Avro file: the block at offset {at} does not end with the file's sync marker"
            ));
        }
        let Some(layout) = &layout else { continue };
        let Some(data) = decompress(&codec, data)
            .map_err(|why| format!("corrupt Avro file: the block at offset {at} {why}"))?
        else {
            continue;
        };
        match layout.check_block(&data, count as u64) {
            Ok(()) => {}
            Err(Stop::Corrupt(why)) => {
                return Err(format!(
                    "corrupt Avro file: the block at offset {at} does not match the file's schema: {why}"
                ));
            }
            Err(Stop::GiveUp) => return Ok(()),
        }
    }
    Ok(())
}

/// A block's bytes as the reader decodes them; `None` for a codec this check does not know,
/// which the reader reports itself.
fn decompress(codec: &[u8], data: Vec<u8>) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    let failed = |e: std::io::Error| format!("does not decompress: {e}");
    match codec {
        b"null" => return Ok(Some(data)),
        b"deflate" => {
            flate2::read::DeflateDecoder::new(data.as_slice())
                .read_to_end(&mut out)
                .map_err(failed)?;
        }
        b"snappy" => {
            // The compressed bytes, then the CRC-32 of the uncompressed ones.
            let Some(body) = data.len().checked_sub(4) else {
                return Err("is too short for a snappy block and its checksum".to_string());
            };
            out = snap::raw::Decoder::new()
                .decompress_vec(&data[..body])
                .map_err(|e| format!("does not decompress: {e}"))?;
            let crc = u32::from_be_bytes(data[body..].try_into().expect("four bytes"));
            if crc32fast::hash(&out) != crc {
                return Err("does not match its snappy checksum".to_string());
            }
        }
        b"zstandard" => {
            zstd::stream::read::Decoder::new(data.as_slice())
                .and_then(|mut d| d.read_to_end(&mut out))
                .map_err(failed)?;
        }
        b"bzip2" => {
            bzip2::read::BzDecoder::new(data.as_slice())
                .read_to_end(&mut out)
                .map_err(failed)?;
        }
        b"xz" => {
            liblzma::read::XzDecoder::new(data.as_slice())
                .read_to_end(&mut out)
                .map_err(failed)?;
        }
        _ => return Ok(None),
    }
    Ok(Some(out))
}

/// Reads a file's bytes in order, a chunk at a time.
struct Bytes<'a> {
    store: &'a Arc<dyn ObjectStore>,
    location: &'a Path,
    size: u64,
    /// The offset of the next byte to read.
    at: u64,
    buffer: Vec<u8>,
    buffer_start: u64,
}

impl Bytes<'_> {
    const CHUNK: u64 = 64 * 1024;

    async fn byte(&mut self) -> Result<u8, String> {
        if self.at >= self.size {
            return Err(format!(
                "corrupt Avro file: it ends in the middle of a value at offset {}",
                self.at
            ));
        }
        let end = self.buffer_start + self.buffer.len() as u64;
        if self.at < self.buffer_start || self.at >= end {
            let stop = (self.at + Self::CHUNK).min(self.size);
            self.buffer = self
                .store
                .get_range(self.location, self.at..stop)
                .await
                .map_err(|e| e.to_string())?
                .to_vec();
            self.buffer_start = self.at;
        }
        let b = self.buffer[(self.at - self.buffer_start) as usize];
        self.at += 1;
        Ok(b)
    }

    async fn take(&mut self, n: usize) -> Result<Vec<u8>, String> {
        let mut out = Vec::with_capacity(n);
        for _ in 0..n {
            out.push(self.byte().await?);
        }
        Ok(out)
    }

    /// A length, then that many bytes.
    async fn sized(&mut self, what: &str) -> Result<Vec<u8>, String> {
        let length = self.long().await?;
        self.sized_as(length, what).await
    }

    /// The next `length` bytes, once they are known to be in the file.
    async fn sized_as(&mut self, length: i64, what: &str) -> Result<Vec<u8>, String> {
        let start = self.at;
        self.skip(length, what).await?;
        let end = self.at;
        let buffered = self.buffer_start..self.buffer_start + self.buffer.len() as u64;
        if buffered.contains(&start) && end <= buffered.end {
            let from = (start - self.buffer_start) as usize;
            return Ok(self.buffer[from..from + (end - start) as usize].to_vec());
        }
        let bytes = self
            .store
            .get_range(self.location, start..end)
            .await
            .map_err(|e| e.to_string())?;
        Ok(bytes.to_vec())
    }

    /// An Avro `long`: a zigzag-encoded variable-length integer.
    async fn long(&mut self) -> Result<i64, String> {
        let mut value: u64 = 0;
        for shift in (0..64).step_by(7) {
            let b = self.byte().await?;
            value |= u64::from(b & 0x7f) << shift;
            if b & 0x80 == 0 {
                return Ok((value >> 1) as i64 ^ -((value & 1) as i64));
            }
        }
        Err(format!(
            "corrupt Avro file: an integer longer than 10 bytes at offset {}",
            self.at
        ))
    }

    async fn skip(&mut self, length: i64, what: &str) -> Result<(), String> {
        let end = u64::try_from(length)
            .ok()
            .and_then(|n| self.at.checked_add(n))
            .filter(|&end| end <= self.size);
        match end {
            Some(end) => {
                self.at = end;
                Ok(())
            }
            None => Err(format!(
                "corrupt Avro file: {what} of {length} bytes at offset {} runs past the end ({} bytes)",
                self.at, self.size
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::avro_records::tests::long;
    use super::*;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    /// A container of records of one `long` and the given blocks (count, data): each byte
    /// below 0x80 is one record.
    fn file(blocks: &[(i64, &[u8])]) -> Vec<u8> {
        let sync = *b"0123456789abcdef";
        let mut f = b"Obj\x01".to_vec();
        f.extend(long(1));
        for s in [
            &b"avro.schema"[..],
            br#"{"type":"record","name":"r","fields":[{"name":"x","type":"long"}]}"#,
        ] {
            f.extend(long(s.len() as i64));
            f.extend(s);
        }
        f.extend(long(0));
        f.extend(sync);
        for (count, data) in blocks {
            f.extend(long(*count));
            f.extend(long(data.len() as i64));
            f.extend(*data);
            f.extend(sync);
        }
        f
    }

    async fn outcome(bytes: Vec<u8>) -> Result<(), String> {
        let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let path = Path::from("f.avro");
        let size = bytes.len() as u64;
        store.put(&path, PutPayload::from(bytes)).await.unwrap();
        check(&store, &path, size).await
    }

    #[tokio::test]
    async fn well_formed_blocks_pass() {
        assert_eq!(outcome(file(&[(2, b"ab"), (1, b"c")])).await, Ok(()));
        assert_eq!(outcome(file(&[])).await, Ok(()));
        // Not an Avro container at all: the reader says so itself.
        assert_eq!(outcome(b"hello".to_vec()).await, Ok(()));
    }

    #[tokio::test]
    async fn a_block_with_bytes_and_no_records_is_refused() {
        let err = outcome(file(&[(2, b"ab"), (0, b"x")])).await.unwrap_err();
        assert!(err.contains("holds 1 bytes but no records"), "{err}");
    }

    #[tokio::test]
    async fn sizes_past_the_end_and_lost_sync_markers_are_refused() {
        let mut f = file(&[(1, b"abcdefghijklmnopqrstuvwxyz")]);
        let cut = f.len() - 30;
        f.truncate(cut);
        let err = outcome(f).await.unwrap_err();
        assert!(err.contains("runs past the end"), "{err}");

        let mut f = file(&[(3, b"abc"), (1, b"d")]);
        let last = f.len() - 1;
        f[last] ^= 1;
        let err = outcome(f).await.unwrap_err();
        assert!(err.contains("sync marker"), "{err}");
    }

    #[tokio::test]
    async fn records_that_leave_bytes_over_are_refused() {
        let err = outcome(file(&[(2, b"ab"), (1, b"cd")])).await.unwrap_err();
        assert!(
            err.contains("does not match the file's schema: its 1 records take 1 of its 2 bytes"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn compressed_blocks_are_walked_once_decompressed() {
        use std::io::Write;
        let mut deflated = flate2::write::DeflateEncoder::new(Vec::new(), Default::default());
        deflated.write_all(b"abc").unwrap();
        let deflated = deflated.finish().unwrap();
        let with_codec = |blocks: &[(i64, &[u8])]| {
            let mut f = file(blocks);
            // Give the header a second entry: the codec.
            let at = 4;
            assert_eq!(f[at], 2, "one metadata entry");
            f[at] = 4;
            let schema_end = f.windows(2).position(|w| w == b"}]").unwrap() + 3;
            let mut entry = long(10);
            entry.extend(b"avro.codec");
            entry.extend(long(7));
            entry.extend(b"deflate");
            f.splice(schema_end..schema_end, entry);
            f
        };
        assert_eq!(outcome(with_codec(&[(3, &deflated)])).await, Ok(()));
        let err = outcome(with_codec(&[(2, &deflated)])).await.unwrap_err();
        assert!(err.contains("its 2 records take 2 of its 3 bytes"), "{err}");
        let err = outcome(with_codec(&[(1, b"not deflate")]))
            .await
            .unwrap_err();
        assert!(err.contains("does not decompress"), "{err}");
    }
}
