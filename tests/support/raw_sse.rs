//! A bare SSE client over a plain TCP socket: raw HTTP/1.1, so that a test
//! sees the exact bytes the server sends (the head, the chunks of the
//! chunked transfer coding) and reads only as much, and as late, as it
//! chooses.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// An SSE response being read: the head is taken, the body comes.
pub struct RawSse {
    stream: TcpStream,
    /// Bytes read and not yet taken.
    buffer: Vec<u8>,
}

impl RawSse {
    /// Sends `GET {path}` to `addr`; returns the stream and the response
    /// head (through its blank line).
    pub async fn get(addr: SocketAddr, path: &str) -> (Self, String) {
        let stream = within("a TCP connection", TcpStream::connect(addr))
            .await
            .expect("connecting");
        Self::get_over(stream, addr, path).await
    }

    /// Sends `GET {path}` over `stream`, a connection to `addr` that the
    /// test made itself; returns the stream and the response head.
    pub async fn get_over(stream: TcpStream, addr: SocketAddr, path: &str) -> (Self, String) {
        let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n\r\n");
        Self::send_over(stream, &[request.as_str()]).await
    }

    /// Sends a request written as `pieces`, each its own write (Nagle
    /// off), to `addr`; returns the stream and the response head.
    pub async fn send(addr: SocketAddr, pieces: &[&str]) -> (Self, String) {
        let stream = within("a TCP connection", TcpStream::connect(addr))
            .await
            .expect("connecting");
        Self::send_over(stream, pieces).await
    }

    /// Sends a request written as `pieces` over `stream`, each its own
    /// write (Nagle off); returns the stream and the response head.
    async fn send_over(mut stream: TcpStream, pieces: &[&str]) -> (Self, String) {
        stream.set_nodelay(true).expect("no Nagle");
        for piece in pieces {
            stream.write_all(piece.as_bytes()).await.expect("a request");
        }
        let mut raw = Self {
            stream,
            buffer: Vec::new(),
        };
        let head = raw.take_through(b"\r\n\r\n").await;
        (raw, String::from_utf8(head).expect("an ASCII head"))
    }

    /// The body's next chunk of the chunked transfer coding.
    pub async fn chunk(&mut self) -> Vec<u8> {
        let line = self.take_through(b"\r\n").await;
        let size = std::str::from_utf8(&line[..line.len() - 2]).expect("a chunk size");
        let size = usize::from_str_radix(size, 16).expect("a hexadecimal chunk size");
        within("a whole chunk", async {
            while self.buffer.len() < size + 2 {
                self.read_more().await;
            }
        })
        .await;
        let chunk: Vec<u8> = self.buffer.drain(..size + 2).collect();
        assert!(chunk.ends_with(b"\r\n"), "a chunk longer than its size");
        chunk[..size].to_vec()
    }

    /// The payload of the rest of a chunked body, through its last chunk.
    pub async fn rest_of_body(&mut self) -> String {
        let mut payload = Vec::new();
        loop {
            let chunk = self.chunk().await;
            if chunk.is_empty() {
                return String::from_utf8(payload).expect("UTF-8 events");
            }
            payload.extend_from_slice(&chunk);
        }
    }

    /// The socket, and the bytes of the body already read.
    pub fn into_inner(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.buffer)
    }

    /// Reads on until `delimiter` has arrived; takes everything through it.
    async fn take_through(&mut self, delimiter: &[u8]) -> Vec<u8> {
        let at = within("more of the response", async {
            loop {
                let found = self
                    .buffer
                    .windows(delimiter.len())
                    .position(|w| w == delimiter);
                if let Some(at) = found {
                    return at + delimiter.len();
                }
                self.read_more().await;
            }
        })
        .await;
        self.buffer.drain(..at).collect()
    }

    /// Reads once more from the socket.
    async fn read_more(&mut self) {
        let mut chunk = [0u8; 1024];
        let n = self.stream.read(&mut chunk).await.expect("reading");
        assert!(n > 0, "the response ended early: {:?}", self.buffer);
        self.buffer.extend_from_slice(&chunk[..n]);
    }
}
