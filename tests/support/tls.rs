//! TLS and HTTP/2 for the tests: a certificate made for the test (rcgen,
//! for `localhost` and `127.0.0.1`), files the server loads, a rustls
//! client that trusts it, and HTTP/2 connections through hyper's own
//! client connection API (over TLS, or h2c with prior knowledge).

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Incoming;
use hyper::client::conn::http2;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName};
use streamgauge_server::tls::TlsFiles;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::within;

/// A certificate and its key for `localhost` and `127.0.0.1`, in PEM files
/// of a directory removed on drop.
pub struct TestCert {
    /// Its DER form, for clients to trust.
    pub der: CertificateDer<'static>,
    /// The PEM files.
    pub files: TlsFiles,
    _dir: tempfile::TempDir,
}

impl TestCert {
    /// A fresh self-signed certificate.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("a directory for the certificate");
        let (der, files) = write_cert(dir.path(), "cert.pem", "key.pem");
        Self {
            der,
            files,
            _dir: dir,
        }
    }

    /// Writes another fresh certificate over this one's files (what an
    /// operator does before SIGHUP); its DER form.
    pub fn renew(&self) -> CertificateDer<'static> {
        let dir = self
            .files
            .cert
            .parent()
            .expect("the certificate's directory");
        write_cert(dir, "cert.pem", "key.pem").0
    }

    /// A client that trusts this certificate and offers `alpn`.
    pub fn client(&self, alpn: &[&[u8]]) -> TlsConnector {
        client_trusting(&self.der, alpn)
    }
}

impl Default for TestCert {
    fn default() -> Self {
        Self::new()
    }
}

/// A self-signed certificate written to `dir/cert` and `dir/key`.
fn write_cert(dir: &Path, cert: &str, key: &str) -> (CertificateDer<'static>, TlsFiles) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .expect("a test certificate");
    let files = TlsFiles {
        cert: dir.join(cert),
        key: dir.join(key),
    };
    std::fs::write(&files.cert, made.cert.pem()).expect("writing the certificate");
    std::fs::write(&files.key, made.signing_key.serialize_pem()).expect("writing the key");
    (made.cert.der().clone(), files)
}

/// A TLS client that trusts `cert` alone and offers `alpn`.
pub fn client_trusting(cert: &CertificateDer<'static>, alpn: &[&[u8]]) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(cert.clone())
        .expect("trusting the test certificate");
    let provider = Arc::new(streamgauge_server::tls::ring_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    TlsConnector::from(Arc::new(config))
}

/// A TLS connection to `addr` through `connector`, for `127.0.0.1`.
pub async fn connect(connector: &TlsConnector, addr: SocketAddr) -> TlsStream<TcpStream> {
    let tcp = within("a TCP connection", TcpStream::connect(addr))
        .await
        .expect("connecting");
    let name = ServerName::IpAddress(addr.ip().into());
    within("the TLS handshake", connector.connect(name, tcp))
        .await
        .expect("the TLS handshake")
}

/// The certificate a TLS connection's server presented.
pub fn presented(stream: &TlsStream<TcpStream>) -> CertificateDer<'static> {
    stream
        .get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a server certificate")
        .clone()
        .into_owned()
}

/// One HTTP/2 connection's request sender (the connection runs on a task
/// of its own until the sender and every response are dropped).
pub type H2 = http2::SendRequest<Empty<Bytes>>;

/// HTTP/2 over `io` (TLS with ALPN `h2`, or plain TCP: h2c), with a
/// stream window of `window` bytes.
pub async fn h2<IO>(io: IO, window: u32) -> H2
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = within(
        "the HTTP/2 handshake",
        http2::Builder::new(TokioExecutor::new())
            .initial_stream_window_size(window)
            .handshake(TokioIo::new(io)),
    )
    .await
    .expect("the HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}

/// `GET {path}` on an HTTP/2 connection: its response, body unread.
pub async fn get(h2: &mut H2, path: &str) -> Response<Incoming> {
    let request = Request::get(format!("http://127.0.0.1{path}"))
        .body(Empty::new())
        .expect("a request");
    within(&format!("GET {path}"), h2.send_request(request))
        .await
        .expect("a response")
}

/// Reads `body` until `ready` holds of the text read so far (or it ends):
/// that text.
pub async fn read_until(body: &mut Incoming, what: &str, ready: impl Fn(&str) -> bool) -> String {
    within(what, async {
        let mut text = String::new();
        while !ready(&text) {
            match body.frame().await {
                Some(Ok(frame)) => {
                    if let Some(data) = frame.data_ref() {
                        text.push_str(&String::from_utf8_lossy(data));
                    }
                }
                Some(Err(e)) => panic!("{what}: the body failed: {e}"),
                None => break,
            }
        }
        text
    })
    .await
}

/// `GET {path}` over HTTPS (HTTP/1.1, `Connection: close`): the status and
/// the body (whose framing, a `Content-Length`, is taken off).
pub async fn get_text(connector: &TlsConnector, addr: SocketAddr, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut stream = connect(connector, addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("a request");
    let mut answer = Vec::new();
    // The server may end TLS without close_notify after `Connection:
    // close`: what was read is the answer.
    let _ = within(&format!("GET {path}"), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8(answer).expect("a text answer");
    let (head, body) = answer.split_once("\r\n\r\n").expect("a whole head");
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    (status, body.to_owned())
}
