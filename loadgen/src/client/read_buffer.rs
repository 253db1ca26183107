//! The buffer a stream reads its socket into: it starts at 2 KiB and
//! doubles, up to 16 KiB, each time a read fills it. An idle stream (a
//! quiet topic, a keep-alive now and then) so holds 2 KiB instead of 16,
//! which is most of the load generator's memory at tens of thousands of
//! streams; a busy one grows to 16 KiB reads within three of them, and
//! from then on reads without allocating.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};

/// The size a buffer starts at.
pub const INITIAL: usize = 2 * 1024;

/// The size a buffer grows to at most: the most bytes one read takes.
pub const MAX: usize = 16 * 1024;

/// A growable read buffer; see the module documentation.
#[derive(Debug)]
pub struct ReadBuffer {
    /// Zero-filled when grown, so that reads can take `&mut [u8]`.
    bytes: Vec<u8>,
}

impl Default for ReadBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl ReadBuffer {
    /// A buffer of [`INITIAL`] bytes.
    pub fn new() -> Self {
        Self {
            bytes: vec![0; INITIAL],
        }
    }

    /// The bytes, read and not: as many as its size now.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, mutably (to move unread bytes to the front).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.bytes
    }

    /// Reads once from `stream` into the buffer after its first `from`
    /// bytes, which are kept: the bytes read (0 at end of stream, or when
    /// `from` is already the whole buffer). A read that fills the buffer
    /// doubles it (up to [`MAX`]) for the next one, keeping what it holds.
    pub fn poll_read<R: AsyncRead + Unpin>(
        &mut self,
        from: usize,
        cx: &mut Context<'_>,
        stream: &mut R,
    ) -> Poll<io::Result<usize>> {
        let mut out = ReadBuf::new(&mut self.bytes[from..]);
        if out.remaining() == 0 {
            return Poll::Ready(Ok(0));
        }
        std::task::ready!(Pin::new(stream).poll_read(cx, &mut out))?;
        let n = out.filled().len();
        if from + n == self.bytes.len() && self.bytes.len() < MAX {
            self.bytes.resize((self.bytes.len() * 2).min(MAX), 0);
        }
        Poll::Ready(Ok(n))
    }

    /// [`poll_read`](Self::poll_read) as a future.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: bytes are only taken in the poll that returns them.
    pub async fn read<R: AsyncRead + Unpin>(
        &mut self,
        from: usize,
        stream: &mut R,
    ) -> io::Result<usize> {
        poll_fn(|cx| self.poll_read(from, cx, stream)).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn grows_only_when_a_read_fills_it_and_keeps_what_it_holds() {
        let data: Vec<u8> = (0..=255u8).cycle().take(64 * 1024).collect();
        let mut stream = &data[..];
        let mut buf = ReadBuffer::new();
        // A short read (a slice reader gives what fits): no growth.
        let mut short = &data[..100];
        assert_eq!(buf.read(0, &mut short).await.unwrap(), 100);
        assert_eq!(buf.as_slice().len(), INITIAL);
        // Full reads double it, keeping the bytes read, up to MAX.
        let mut sizes = Vec::new();
        let mut offset = 0;
        for _ in 0..5 {
            let n = buf.read(0, &mut stream).await.unwrap();
            assert_eq!(&buf.as_slice()[..n], &data[offset..offset + n]);
            offset += n;
            sizes.push((n, buf.as_slice().len()));
        }
        assert_eq!(
            sizes,
            [
                (INITIAL, 2 * INITIAL),
                (2 * INITIAL, 4 * INITIAL),
                (4 * INITIAL, MAX),
                (MAX, MAX),
                (MAX, MAX),
            ]
        );
        // Reading after kept bytes: they stay; a full buffer reads nothing.
        buf.as_mut_slice()[..3].copy_from_slice(b"abc");
        let mut rest = &b"xyz"[..];
        assert_eq!(buf.read(3, &mut rest).await.unwrap(), 3);
        assert_eq!(&buf.as_slice()[..6], b"abcxyz");
        assert_eq!(buf.read(MAX, &mut stream).await.unwrap(), 0);
    }
}
