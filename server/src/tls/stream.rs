//! A TLS server stream over rustls' unbuffered API, with buffers this
//! server owns and frees while the stream is idle.
//!
//! Why it exists: an idle HTTP/1.1 stream over tokio-rustls held 10,674 B
//! of heap against 3,050 B plain (dhat, docs/performance.md section 6),
//! 4,096 B of it rustls' own read buffer, which its buffered connection
//! keeps at 4 KiB for the connection's life and has no call to free. Here
//! rustls keeps no record buffer of its own: bytes read from the socket land in a
//! buffer on the stack and are processed there; only a partial record is
//! copied to the heap (the stream's `incoming`), and freed once it is
//! whole. Records to send are encrypted into a buffer freed after each
//! flush, and decrypted data not yet read is kept only until it is read.
//!
//! What it handles (rustls does all of TLS; this owns buffers and drives
//! [`process_tls_records`](rustls::unbuffered::UnbufferedConnectionCommon::process_tls_records)'s states):
//! - the handshake ([`accept`]; the caller bounds it in time), ALPN
//!   included ([`TlsStream::alpn_protocol`]);
//! - application data both ways, in pieces of any size: a read returns
//!   what is decrypted, a write encrypts at most one record's worth
//!   ([`WRITE_CHUNK`]) and, while encrypted bytes wait for the socket,
//!   takes no more (backpressure: at most one chunk is buffered); a
//!   vectored write's slices (a batch's pieces) are gathered into one
//!   record, and one system call;
//! - TLS 1.3 post-handshake messages: the server's NewSessionTickets and
//!   its answer to a client's KeyUpdate are queued by rustls and sent
//!   before anything written after them;
//! - close_notify both ways: the peer's ends reading (a read returns 0);
//!   [`AsyncWrite::poll_shutdown`] sends ours; a socket's end without one
//!   also ends reading once the handshake is done;
//! - alerts and errors: rustls' error becomes an [`io::Error`] of kind
//!   `InvalidData`, after the alert rustls queued for it is sent if the
//!   socket takes it at once.
//!
//! The configuration is taken once per connection, so a certificate
//! reloaded by SIGHUP ([`super::Tls::reload`]) serves new connections
//! only.

use std::future::poll_fn;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use rustls::ServerConfig;
use rustls::server::{ServerConnectionData, UnbufferedServerConnection};
use rustls::unbuffered::{
    ConnectionState, EncodeError, EncryptError, UnbufferedStatus, WriteTraffic,
};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The most plaintext one write encrypts: one TLS record's worth.
pub const WRITE_CHUNK: usize = 16 * 1024;

/// The most read from the socket at once, into a buffer on the stack: a
/// whole record and its header and tag.
const READ_CHUNK: usize = 16 * 1024 + 256;

/// Room guessed for the record overhead (header, tag, content type) of
/// one write, before rustls says how much it needs.
const RECORD_OVERHEAD: usize = 64;

/// Completes a TLS handshake on `io` with `config`, as a server.
///
/// # Errors
///
/// The socket's error; `UnexpectedEof` when the peer leaves during the
/// handshake; `InvalidData` with rustls' reason when the handshake fails.
pub async fn accept<IO>(io: IO, config: Arc<ServerConfig>) -> io::Result<TlsStream<IO>>
where
    IO: AsyncRead + AsyncWrite + Unpin,
{
    let conn = UnbufferedServerConnection::new(config).map_err(invalid)?;
    let mut stream = TlsStream {
        io,
        incoming: Vec::new(),
        session: Session {
            conn: Box::new(conn),
            outgoing: Vec::new(),
            sent: 0,
            plain: Vec::new(),
            taken: 0,
            read_closed: false,
            close_sent: false,
        },
    };
    poll_fn(|cx| stream.poll_handshake(cx)).await?;
    Ok(stream)
}

/// A server's TLS stream over `IO`, after its handshake.
pub struct TlsStream<IO> {
    io: IO,
    /// TLS bytes received and not yet processed: the start of a record
    /// still arriving (or of a handshake message spanning records). Empty,
    /// and unallocated, between records.
    incoming: Vec<u8>,
    session: Session,
}

impl<IO> std::fmt::Debug for TlsStream<IO> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsStream")
            .field("incoming", &self.incoming.len())
            .field(
                "outgoing",
                &(self.session.outgoing.len() - self.session.sent),
            )
            .field("plain", &(self.session.plain.len() - self.session.taken))
            .finish_non_exhaustive()
    }
}

impl<IO> TlsStream<IO> {
    /// The protocol the client and server agreed on by ALPN, if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.session.conn.alpn_protocol()
    }
}

/// The connection's state and the buffers that are not the socket's
/// incoming bytes (kept apart so that both can be borrowed at once).
struct Session {
    /// Boxed: a connection's task is not sized by rustls' state.
    conn: Box<UnbufferedServerConnection>,
    /// Encrypted bytes to send, and how many of them were sent; freed once
    /// all are.
    outgoing: Vec<u8>,
    sent: usize,
    /// Decrypted bytes not yet read, and how many of them were read; freed
    /// once all are.
    plain: Vec<u8>,
    taken: usize,
    /// The peer sent close_notify, or its socket ended.
    read_closed: bool,
    /// close_notify is queued.
    close_sent: bool,
}

/// What [`Session::process`] is asked to do once the connection may send
/// application data.
#[derive(Clone, Copy)]
enum Act<'a> {
    /// Nothing: process what was received.
    Receive,
    /// Encrypt these bytes.
    Encrypt(&'a [u8]),
    /// Queue close_notify.
    Close,
}

/// Where [`Session::process`] stopped.
enum Reached {
    /// It needs more bytes from the peer (during the handshake, or to read).
    Bytes,
    /// It did what was asked: `n` bytes were encrypted.
    Done(usize),
    /// Both sides sent close_notify: nothing more can be sent.
    Closed,
}

/// The next step of [`Session::process`]'s loop.
enum Step {
    /// Process again.
    Again,
    /// Stop here.
    Stop(Reached),
}

impl Session {
    /// Processes the records in `incoming` until the connection needs more
    /// bytes or `act` is done, queuing what it has to send in `outgoing`
    /// and what it decrypted in `plain`. Returns how many bytes of
    /// `incoming` it consumed (to drop before the next call), and where it
    /// stopped.
    fn process(&mut self, incoming: &mut [u8], act: Act<'_>) -> (usize, io::Result<Reached>) {
        let mut consumed = 0;
        loop {
            let UnbufferedStatus { discard, state } =
                self.conn.process_tls_records(&mut incoming[consumed..]);
            let step = match state {
                Ok(state) => handle(
                    state,
                    act,
                    &mut self.outgoing,
                    &mut self.plain,
                    &mut self.read_closed,
                ),
                Err(e) => Err(invalid(e)),
            };
            consumed += discard;
            match step {
                Ok(Step::Again) => {}
                Ok(Step::Stop(reached)) => return (consumed, Ok(reached)),
                Err(e) => {
                    self.queue_alert();
                    return (consumed, Err(e));
                }
            }
        }
    }

    /// Queues the alert rustls has for the error it just returned, if any.
    fn queue_alert(&mut self) {
        // A few states at most: the alert's record, then its transmission.
        for _ in 0..4 {
            let UnbufferedStatus { state, .. } = self.conn.process_tls_records(&mut []);
            match state {
                Ok(ConnectionState::EncodeTlsData(mut data)) => {
                    if append(&mut self.outgoing, 0, |out| {
                        data.encode(out).map_err(encode_error)
                    })
                    .is_err()
                    {
                        return;
                    }
                }
                Ok(ConnectionState::TransmitTlsData(transmit)) => transmit.done(),
                _ => return,
            }
        }
    }

    /// Copies decrypted bytes into `buf`; false when there are none.
    fn give(&mut self, buf: &mut ReadBuf<'_>) -> bool {
        let ready = &self.plain[self.taken..];
        if ready.is_empty() || buf.remaining() == 0 {
            return false;
        }
        let n = ready.len().min(buf.remaining());
        buf.put_slice(&ready[..n]);
        self.taken += n;
        if self.taken == self.plain.len() {
            self.plain = Vec::new();
            self.taken = 0;
        }
        true
    }
}

/// Handles one state of the connection.
fn handle(
    state: ConnectionState<'_, '_, ServerConnectionData>,
    act: Act<'_>,
    outgoing: &mut Vec<u8>,
    plain: &mut Vec<u8>,
    read_closed: &mut bool,
) -> io::Result<Step> {
    match state {
        ConnectionState::ReadTraffic(mut records) => {
            while let Some(record) = records.next_record() {
                plain.extend_from_slice(record.map_err(invalid)?.payload);
            }
        }
        ConnectionState::EncodeTlsData(mut data) => {
            append(outgoing, 0, |out| data.encode(out).map_err(encode_error))?;
        }
        // Queued in order in `outgoing`, whose bytes go before any queued
        // after them: as good as transmitted.
        ConnectionState::TransmitTlsData(transmit) => transmit.done(),
        ConnectionState::PeerClosed => *read_closed = true,
        ConnectionState::Closed => {
            *read_closed = true;
            return Ok(Step::Stop(Reached::Closed));
        }
        ConnectionState::BlockedHandshake => return Ok(Step::Stop(Reached::Bytes)),
        ConnectionState::WriteTraffic(traffic) => {
            return act_on(traffic, act, outgoing).map(Step::Stop);
        }
        // Early data is not enabled (`max_early_data_size` is 0).
        _ => return Err(io::Error::other("unexpected TLS connection state")),
    }
    Ok(Step::Again)
}

/// Does `act` once the connection may send application data.
fn act_on(
    mut traffic: WriteTraffic<'_, ServerConnectionData>,
    act: Act<'_>,
    outgoing: &mut Vec<u8>,
) -> io::Result<Reached> {
    match act {
        Act::Receive => Ok(Reached::Bytes),
        Act::Encrypt(data) => {
            append(outgoing, data.len() + RECORD_OVERHEAD, |out| {
                traffic.encrypt(data, out).map_err(encrypt_error)
            })?;
            Ok(Reached::Done(data.len()))
        }
        Act::Close => {
            append(outgoing, RECORD_OVERHEAD, |out| {
                traffic.queue_close_notify(out).map_err(encrypt_error)
            })?;
            Ok(Reached::Done(0))
        }
    }
}

/// Why rustls did not write into a buffer.
enum Short {
    /// The buffer was too small: this is the size needed.
    Needs(usize),
    /// Anything else.
    Failed(io::Error),
}

fn encode_error(e: EncodeError) -> Short {
    match e {
        EncodeError::InsufficientSize(size) => Short::Needs(size.required_size),
        other => Short::Failed(io::Error::other(other)),
    }
}

fn encrypt_error(e: EncryptError) -> Short {
    match e {
        EncryptError::InsufficientSize(size) => Short::Needs(size.required_size),
        other => Short::Failed(io::Error::other(other)),
    }
}

/// Appends to `out` what `write` writes into a buffer of `guess` bytes,
/// or of the size it then says it needs.
fn append(
    out: &mut Vec<u8>,
    guess: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, Short>,
) -> io::Result<()> {
    let start = out.len();
    out.resize(start + guess, 0);
    let written = match write(&mut out[start..]) {
        Ok(written) => Ok(written),
        Err(Short::Needs(size)) => {
            out.resize(start + size, 0);
            write(&mut out[start..])
        }
        Err(failed) => Err(failed),
    };
    match written {
        Ok(written) => {
            out.truncate(start + written);
            Ok(())
        }
        Err(Short::Needs(size)) => {
            out.truncate(start);
            Err(io::Error::other(format!(
                "TLS record of {size} B does not fit"
            )))
        }
        Err(Short::Failed(e)) => {
            out.truncate(start);
            Err(e)
        }
    }
}

/// rustls' error as an I/O error.
fn invalid(e: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl<IO: AsyncRead + AsyncWrite + Unpin> TlsStream<IO> {
    /// Drives the handshake: sends what the connection has to send, reads
    /// what it needs, until it is done.
    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            ready!(self.poll_send(cx))?;
            if !self.session.conn.is_handshaking() {
                return Poll::Ready(Ok(()));
            }
            if self.session.read_closed {
                return Poll::Ready(Err(io::ErrorKind::UnexpectedEof.into()));
            }
            ready!(self.poll_receive(cx))?;
        }
    }

    /// Sends the encrypted bytes queued, then frees their buffer.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let session = &mut self.session;
        while session.sent < session.outgoing.len() {
            let unsent = &session.outgoing[session.sent..];
            match ready!(Pin::new(&mut self.io).poll_write(cx, unsent))? {
                0 => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                n => session.sent += n,
            }
        }
        session.outgoing = Vec::new();
        session.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads what the socket has (into a buffer on the stack) and
    /// processes it: decrypted bytes go to the session, what the
    /// connection answers is queued, a partial record is kept.
    fn poll_receive(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut stack = [MaybeUninit::<u8>::uninit(); READ_CHUNK];
        let mut buf = ReadBuf::uninit(&mut stack);
        ready!(Pin::new(&mut self.io).poll_read(cx, &mut buf))?;
        let read = buf.filled_mut();
        if read.is_empty() {
            self.session.read_closed = true;
            return Poll::Ready(Ok(()));
        }
        let processed = if self.incoming.is_empty() {
            let (consumed, reached) = self.session.process(read, Act::Receive);
            self.incoming.extend_from_slice(&read[consumed..]);
            reached
        } else {
            self.incoming.extend_from_slice(read);
            self.process_incoming(Act::Receive)
        };
        if self.session.read_closed {
            // What follows close_notify is not read.
            self.incoming = Vec::new();
        }
        Poll::Ready(self.failing(cx, processed).map(drop))
    }

    /// Processes the partial record kept (none, between records) for `act`.
    fn process_incoming(&mut self, act: Act<'_>) -> io::Result<Reached> {
        let (consumed, reached) = self.session.process(&mut self.incoming, act);
        self.incoming.drain(..consumed);
        if self.incoming.is_empty() {
            self.incoming = Vec::new();
        }
        reached
    }

    /// `result`, after trying once to send the alert queued for its error.
    fn failing<T>(&mut self, cx: &mut Context<'_>, result: io::Result<T>) -> io::Result<T> {
        if result.is_err() {
            let _ = self.poll_send(cx);
        }
        result
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncRead for TlsStream<IO> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.session.give(buf) || this.session.read_closed || buf.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            // What the connection answered (a key update, an alert) goes
            // out while reading; a socket not ready for it is polled again
            // at the next read or write.
            if let Poll::Ready(Err(e)) = this.poll_send(cx) {
                return Poll::Ready(Err(e));
            }
            ready!(this.poll_receive(cx))?;
        }
    }
}

impl<IO: AsyncRead + AsyncWrite + Unpin> AsyncWrite for TlsStream<IO> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // Backpressure: nothing more is taken while bytes wait.
        ready!(this.poll_send(cx))?;
        if data.is_empty() {
            return Poll::Ready(Ok(0));
        }
        if this.session.close_sent {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        let chunk = &data[..data.len().min(WRITE_CHUNK)];
        let written = match this.process_incoming(Act::Encrypt(chunk)) {
            Ok(Reached::Done(n)) => n,
            Ok(Reached::Closed) => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Ok(Reached::Bytes) => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
            Err(e) => return Poll::Ready(this.failing(cx, Err(e))),
        };
        // Started now; the rest goes at the next write or flush.
        if let Poll::Ready(Err(e)) = this.poll_send(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(written))
    }

    /// The slices, up to one record's worth, as one record: a batch
    /// gathered from pieces (a chunk's size line, its data, its end) costs
    /// one record and one write system call, not one a piece.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        slices: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let first = slices.iter().find(|slice| !slice.is_empty());
        match first {
            Some(first) if first.len() < WRITE_CHUNK => {
                let total = slices.iter().map(|slice| slice.len()).sum::<usize>();
                // Freed once encrypted.
                let mut gathered = Vec::with_capacity(total.min(WRITE_CHUNK));
                for slice in slices {
                    let room = WRITE_CHUNK - gathered.len();
                    gathered.extend_from_slice(&slice[..slice.len().min(room)]);
                }
                self.poll_write(cx, &gathered)
            }
            Some(first) => self.poll_write(cx, first),
            None => self.poll_write(cx, &[]),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.session.close_sent {
            this.session.close_sent = true;
            // Closed already (both close_notify sent) needs nothing more.
            if let Err(e) = this.process_incoming(Act::Close) {
                return Poll::Ready(this.failing(cx, Err(e)));
            }
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::task::Waker;

    use rustls::pki_types::{CertificateDer, ServerName};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _, DuplexStream, duplex};
    use tokio_rustls::TlsConnector;
    use tokio_rustls::client::TlsStream as ClientStream;

    use super::*;
    use crate::tls::{Tls, TlsFiles, ring_provider};

    /// The server's configuration for a fresh certificate, and a client
    /// that trusts it offering `alpn`.
    fn pair(alpn: &[&[u8]]) -> (Arc<ServerConfig>, TlsConnector, tempfile::TempDir) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let files = TlsFiles {
            cert: dir.path().join("cert.pem"),
            key: dir.path().join("key.pem"),
        };
        std::fs::write(&files.cert, made.cert.pem()).unwrap();
        std::fs::write(&files.key, made.signing_key.serialize_pem()).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::clone(made.cert.der())).unwrap();
        let mut client = rustls::ClientConfig::builder_with_provider(Arc::new(ring_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        client.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let server = Tls::load(&files).unwrap().config();
        (server, TlsConnector::from(Arc::new(client)), dir)
    }

    /// Both ends of a handshake over a pipe of `capacity` bytes each way.
    async fn connected(
        alpn: &[&[u8]],
        capacity: usize,
    ) -> (TlsStream<DuplexStream>, ClientStream<DuplexStream>) {
        let (config, connector, _dir) = pair(alpn);
        let (server, client) = duplex(capacity);
        let name = ServerName::try_from("localhost").unwrap();
        let (server, client) =
            tokio::join!(accept(server, config), connector.connect(name, client));
        (server.unwrap(), client.unwrap())
    }

    #[tokio::test]
    async fn alpn_chooses_and_data_goes_both_ways_in_pieces_then_both_close() {
        let (server, mut client) = connected(&[b"http/1.1"], 1000).await;
        assert_eq!(server.alpn_protocol(), Some(&b"http/1.1"[..]));
        let (h2, _) = connected(&[b"h2", b"http/1.1"], 1000).await;
        assert_eq!(h2.alpn_protocol(), Some(&b"h2"[..]));

        // The server echoes until the client's close_notify, then sends its own.
        let echo = tokio::spawn(async move {
            let (mut read, mut write) = tokio::io::split(server);
            let echoed = tokio::io::copy(&mut read, &mut write).await.unwrap();
            write.shutdown().await.unwrap();
            echoed
        });
        // More than a record, through a pipe smaller than one: every read
        // and write is partial, and each side waits on the other.
        let sent: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let (mut read, mut write) = tokio::io::split(&mut client);
        let writing = async {
            write.write_all(&sent).await.unwrap();
            write.shutdown().await.unwrap();
        };
        let mut received = Vec::new();
        let reading = read.read_to_end(&mut received);
        let ((), read_result) = tokio::join!(writing, reading);
        read_result.expect("the server's close_notify ends the stream cleanly");
        assert_eq!(received, sent);
        assert_eq!(echo.await.unwrap(), sent.len() as u64);
    }

    #[tokio::test]
    async fn a_clients_key_update_is_answered_and_data_goes_on() {
        let (mut server, mut client) = connected(&[b"http/1.1"], 64 * 1024).await;
        let mut byte = [0; 1];
        for round in 0..3u8 {
            // A KeyUpdate asking the server to update its keys too.
            client.get_mut().1.refresh_traffic_keys().unwrap();
            client.write_all(&[round]).await.unwrap();
            server.read_exact(&mut byte).await.unwrap();
            assert_eq!(byte, [round]);
            // Readable only if the server's KeyUpdate came first.
            server.write_all(&[round + 10]).await.unwrap();
            server.flush().await.unwrap();
            client.read_exact(&mut byte).await.unwrap();
            assert_eq!(byte, [round + 10]);
        }
    }

    #[tokio::test]
    async fn a_vectored_write_sends_its_slices_in_order() {
        let (mut server, mut client) = connected(&[b"http/1.1"], 64 * 1024).await;
        assert!(server.is_write_vectored());
        let slices = [&b"5\r\n"[..], b"", b"hello", b"\r\n"].map(io::IoSlice::new);
        let written = server.write_vectored(&slices).await.unwrap();
        assert_eq!(written, 10);
        server.flush().await.unwrap();
        let mut received = [0; 10];
        client.read_exact(&mut received).await.unwrap();
        assert_eq!(&received, b"5\r\nhello\r\n");
    }

    #[tokio::test]
    async fn a_write_takes_no_more_while_encrypted_bytes_wait() {
        let capacity = 4096;
        let (mut server, _client) = connected(&[b"http/1.1"], capacity).await;
        let data = vec![7; 1 << 20];
        let mut cx = Context::from_waker(Waker::noop());
        let mut taken = 0;
        // The client reads nothing: the pipe fills, then writes wait.
        for _ in 0..data.len() {
            match Pin::new(&mut server).poll_write(&mut cx, &data[taken..]) {
                Poll::Ready(Ok(n)) => taken += n,
                Poll::Ready(Err(e)) => panic!("{e}"),
                Poll::Pending => break,
            }
        }
        assert!(
            taken <= capacity + WRITE_CHUNK,
            "{taken} B taken while the peer reads nothing"
        );
        assert!(
            Pin::new(&mut server)
                .poll_write(&mut cx, &data[taken..])
                .is_pending()
        );
    }

    #[tokio::test]
    async fn a_peer_that_does_not_speak_tls_gets_an_alert_and_an_error() {
        let (config, _, _dir) = pair(&[]);
        let (server, mut client) = duplex(4096);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let err = accept(server, config).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        let mut reply = Vec::new();
        client.read_to_end(&mut reply).await.unwrap();
        assert_eq!(reply.first(), Some(&0x15), "an alert record: {reply:?}");
    }

    #[tokio::test]
    async fn a_peer_gone_during_the_handshake_is_an_unexpected_end() {
        let (config, _, _dir) = pair(&[]);
        let (server, client) = duplex(4096);
        drop(client);
        let err = accept(server, config).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
