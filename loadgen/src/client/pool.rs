//! One HTTP/1.1 request and its whole response over a pool of kept-alive
//! connections (plain or TLS) to one server: how a foreign target's
//! publishes are sent, at hundreds a second, without a TLS handshake each.
//! The response is read with the stream clients' own head parser and body
//! decoder, its body discarded; a connection goes back to the pool only
//! when its response was complete and the server keeps it open.

use std::sync::{Arc, Mutex};

use tokio::io::AsyncWriteExt;

use super::http::{BodyDecoder, Decoded};
use super::read_buffer::ReadBuffer;
use super::socket::Socket;
use super::sse::read_head;
use super::stream::ClientError;
use super::target::Target;
use super::tls::Connector;

/// Most idle connections kept.
const MAX_IDLE: usize = 512;

/// Connections to one server, reused.
#[derive(Debug)]
pub struct Pool {
    target: Arc<Target>,
    tls: Option<Connector>,
    idle: Mutex<Vec<Socket>>,
}

impl Pool {
    /// A pool of connections to `target`, through `tls` if it is TLS.
    pub fn new(target: Arc<Target>, tls: Option<Connector>) -> Self {
        Self {
            target,
            tls,
            idle: Mutex::new(Vec::new()),
        }
    }

    /// The `Host` of its server.
    pub fn authority(&self) -> &str {
        &self.target.host
    }

    /// Sends `request` (a whole request: head and body) and reads the
    /// response to its end: its status. A kept connection the server had
    /// closed meanwhile is replaced once, before any answer came.
    ///
    /// # Errors
    ///
    /// The connection could not be made, or the response is malformed or
    /// cut short.
    pub async fn send(&self, request: &[u8]) -> Result<u16, ClientError> {
        if let Some(socket) = self.take() {
            match self.exchange(socket, request).await {
                Err(ClientError::Connect(_) | ClientError::Closed(_)) => {}
                done => return done,
            }
        }
        let socket = self.target.connect_from(None, self.tls.as_ref()).await?;
        self.exchange(socket, request).await
    }

    fn take(&self) -> Option<Socket> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    /// `request` over `socket`, which goes back to the pool if it can.
    async fn exchange(&self, mut socket: Socket, request: &[u8]) -> Result<u16, ClientError> {
        socket
            .write_all(request)
            .await
            .map_err(ClientError::Connect)?;
        let mut buf = ReadBuffer::new();
        let (head, consumed, filled) = read_head(&mut socket, &mut buf).await?;
        let mut body = BodyDecoder::new(head.body);
        let mut decoded = body
            .decode(&buf.as_slice()[consumed..filled], &mut |_| {})
            .map_err(|e| ClientError::Protocol(e.to_string()))?;
        while decoded == Decoded::More {
            let n = buf
                .read(0, &mut socket)
                .await
                .map_err(|e| ClientError::Closed(e.to_string()))?;
            if n == 0 {
                body.at_eof()
                    .map_err(|e| ClientError::Closed(e.to_string()))?;
                return Ok(head.status);
            }
            decoded = body
                .decode(&buf.as_slice()[..n], &mut |_| {})
                .map_err(|e| ClientError::Protocol(e.to_string()))?;
        }
        if !head.close {
            let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
            if idle.len() < MAX_IDLE {
                idle.push(socket);
            }
        }
        Ok(head.status)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::AsyncReadExt;
    use tokio::net::TcpListener;

    use super::*;

    /// A server answering each request on a connection with `answer`, for
    /// `requests` requests in all; how many connections it accepted.
    async fn server(
        answer: &'static str,
        requests: usize,
    ) -> (Arc<Target>, tokio::task::JoinHandle<usize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut served, mut connections) = (0, 0);
            while served < requests {
                let (mut socket, _) = listener.accept().await.unwrap();
                connections += 1;
                let mut buf = vec![0u8; 4096];
                while served < requests {
                    let n = socket.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    socket.write_all(answer.as_bytes()).await.unwrap();
                    served += 1;
                    if answer.contains("close") {
                        break;
                    }
                }
            }
            connections
        });
        let target = Target {
            addr,
            host: addr.to_string(),
            tls: false,
        };
        (Arc::new(target), task)
    }

    const REQUEST: &[u8] = b"POST /p HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}";

    #[tokio::test]
    async fn connections_are_kept_unless_the_server_closes_them() {
        let wait = Duration::from_secs(10);
        let kept =
            "HTTP/1.1 202 Accepted\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        let (target, task) = server(kept, 3).await;
        let pool = Pool::new(target, None);
        for _ in 0..3 {
            assert_eq!(
                tokio::time::timeout(wait, pool.send(REQUEST))
                    .await
                    .unwrap()
                    .unwrap(),
                202
            );
        }
        assert_eq!(task.await.unwrap(), 1, "one connection for three requests");
        let closed = "HTTP/1.1 201 Created\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        let (target, task) = server(closed, 2).await;
        let pool = Pool::new(target, None);
        for _ in 0..2 {
            assert_eq!(
                tokio::time::timeout(wait, pool.send(REQUEST))
                    .await
                    .unwrap()
                    .unwrap(),
                201
            );
        }
        assert_eq!(task.await.unwrap(), 2);
    }
}
