//! The block structure of Avro container files, checked before the reader sees them. The
//! reader trusts each block's record count and byte size: a block that says it holds no
//! records but has bytes made it loop forever (a query nothing could cancel), and sizes past
//! the end of the file are read as given.

use std::sync::Arc;

use object_store::ObjectStore;
use object_store::ObjectStoreExt;
use object_store::path::Path;

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
            for _ in 0..2 {
                let length = reader.long().await?;
                reader.skip(length, "a metadata entry").await?;
            }
        }
    }
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
        reader.skip(bytes, "a block").await?;
        if reader.take(16).await? != sync {
            return Err(format!(
                "corrupt Avro file: the block at offset {at} does not end with the file's sync marker"
            ));
        }
    }
    Ok(())
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
    use super::*;
    use object_store::PutPayload;
    use object_store::memory::InMemory;

    fn long(v: i64) -> Vec<u8> {
        let mut z = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        loop {
            let b = (z & 0x7f) as u8;
            z >>= 7;
            if z == 0 {
                out.push(b);
                return out;
            }
            out.push(b | 0x80);
        }
    }

    /// A container with one metadata entry and the given blocks (count, data).
    fn file(blocks: &[(i64, &[u8])]) -> Vec<u8> {
        let sync = *b"0123456789abcdef";
        let mut f = b"Obj\x01".to_vec();
        f.extend(long(1));
        for s in [
            &b"avro.schema"[..],
            br#"{"type":"record","name":"r","fields":[]}"#,
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

        let mut f = file(&[(1, b"abc"), (1, b"d")]);
        let last = f.len() - 1;
        f[last] ^= 1;
        let err = outcome(f).await.unwrap_err();
        assert!(err.contains("sync marker"), "{err}");
    }
}
