//! A bare WebSocket peer over a plain TCP socket: it performs the
//! handshake, then never reads nor writes until asked, so it never answers
//! a ping. Library clients flush queued pongs as soon as they read, and
//! fail on the socket the server has closed before surfacing its close
//! frame; this peer just reads the raw frames.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::within;

/// A frame from the server: its opcode and payload.
pub type Frame = (u8, Vec<u8>);

/// A connected peer that has completed the opening handshake.
pub struct RawWs {
    stream: TcpStream,
    /// Bytes read past the handshake response.
    pending: Vec<u8>,
}

impl RawWs {
    /// Connects to `path` on `addr` and completes the handshake.
    pub async fn connect(addr: SocketAddr, path: &str) -> Self {
        let stream = within("a TCP connection", TcpStream::connect(addr))
            .await
            .unwrap();
        Self::handshake(stream, addr, path).await
    }

    /// Completes the handshake for `path` over `stream`, a connection to
    /// `addr` that the test made itself.
    pub async fn handshake(mut stream: TcpStream, addr: SocketAddr, path: &str) -> Self {
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut received = Vec::new();
        let header_end = within("the handshake response", async {
            loop {
                let mut chunk = [0u8; 1024];
                let n = stream.read(&mut chunk).await.unwrap();
                assert!(n > 0, "connection closed during the handshake");
                received.extend_from_slice(&chunk[..n]);
                if let Some(at) = received.windows(4).position(|w| w == b"\r\n\r\n") {
                    return at + 4;
                }
            }
        })
        .await;
        let head = String::from_utf8_lossy(&received[..header_end]);
        assert!(
            head.starts_with("HTTP/1.1 101"),
            "handshake refused: {head}"
        );
        Self {
            stream,
            pending: received[header_end..].to_vec(),
        }
    }

    /// Writes `bytes` (whole client frames, masked) as they are.
    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.expect("writing frames");
    }

    /// The socket, and the bytes already read past the handshake.
    #[allow(dead_code, reason = "for the heap test binary's raw clients")]
    pub fn into_inner(self) -> (TcpStream, Vec<u8>) {
        (self.stream, self.pending)
    }

    /// Reads until the server closes the connection; returns its frames.
    pub async fn frames_until_closed(mut self) -> Vec<Frame> {
        let mut bytes = self.pending;
        within(
            "the server to close the connection",
            self.stream.read_to_end(&mut bytes),
        )
        .await
        .expect("reading until the server closes");
        parse_frames(&bytes)
    }
}

/// The close code of the close frame among `frames`, if any.
pub fn close_code(frames: &[Frame]) -> Option<u16> {
    frames
        .iter()
        .find(|(opcode, _)| *opcode == 0x8)
        .and_then(|(_, payload)| Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?])))
}

/// Splits unmasked server frames (RFC 6455, 5.2).
fn parse_frames(mut bytes: &[u8]) -> Vec<Frame> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let (len, header) = match bytes[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(bytes[2..10].try_into().unwrap())).unwrap(),
                10,
            ),
            n => (usize::from(n), 2),
        };
        assert!(bytes.len() >= header + len, "truncated frame");
        frames.push((opcode, bytes[header..header + len].to_vec()));
        bytes = &bytes[header + len..];
    }
    frames
}
