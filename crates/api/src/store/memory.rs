//! The storage under `peapod run`'s in-memory store. redb's own memory backend grows by
//! `Vec::resize`, which writes every new byte: opening a store touched ~190 pages (0.5 ms of
//! page faults on the start of every `peapod run`) that redb had not written yet. Here a growth
//! takes a fresh zeroed allocation (calloc: its pages stay the kernel's zero page until written)
//! and copies only what was there.

use redb::StorageBackend;
use std::io;
use std::sync::{PoisonError, RwLock};

#[derive(Default)]
pub(crate) struct Memory(RwLock<Vec<u8>>);

impl std::fmt::Debug for Memory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let len = self.0.read().unwrap_or_else(PoisonError::into_inner).len();
        f.debug_struct("Memory").field("len", &len).finish()
    }
}

fn out_of_range() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        "beyond the end of the store's memory",
    )
}

/// `offset..offset + len` as a range inside `size` bytes.
fn span(offset: u64, len: usize, size: usize) -> io::Result<std::ops::Range<usize>> {
    let start = usize::try_from(offset).map_err(|_| out_of_range())?;
    let end = start.checked_add(len).ok_or_else(out_of_range)?;
    if end > size {
        return Err(out_of_range());
    }
    Ok(start..end)
}

impl StorageBackend for Memory {
    fn len(&self) -> io::Result<u64> {
        Ok(self.0.read().unwrap_or_else(PoisonError::into_inner).len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> io::Result<()> {
        let data = self.0.read().unwrap_or_else(PoisonError::into_inner);
        out.copy_from_slice(&data[span(offset, out.len(), data.len())?]);
        Ok(())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = usize::try_from(len).map_err(|_| out_of_range())?;
        let mut data = self.0.write().unwrap_or_else(PoisonError::into_inner);
        if len <= data.len() {
            data.truncate(len);
            return Ok(());
        }
        let mut grown = vec![0u8; len];
        grown[..data.len()].copy_from_slice(&data);
        *data = grown;
        Ok(())
    }

    fn sync_data(&self) -> io::Result<()> {
        Ok(())
    }

    fn write(&self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut data = self.0.write().unwrap_or_else(PoisonError::into_inner);
        let range = span(offset, bytes.len(), data.len())?;
        data[range].copy_from_slice(bytes);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_with_zeros_keeps_what_was_written_and_refuses_beyond_the_end() {
        let m = Memory::default();
        m.set_len(8).expect("grow");
        m.write(2, b"abc").expect("write");
        m.set_len(1 << 20).expect("grow more");
        let mut out = [9u8; 6];
        m.read(0, &mut out).expect("read");
        assert_eq!(&out, b"\0\0abc\0");
        let mut tail = [9u8; 4];
        m.read((1 << 20) - 4, &mut tail).expect("read the end");
        assert_eq!(tail, [0; 4]);
        assert!(m.read((1 << 20) - 3, &mut tail).is_err());
        assert!(m.write(u64::MAX, b"x").is_err());
        m.set_len(4).expect("shrink");
        assert_eq!(m.len().expect("len"), 4);
        assert!(m.write(3, b"xy").is_err());
    }
}
