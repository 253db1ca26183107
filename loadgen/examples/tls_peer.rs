//! A local peer for measuring the load generator's own cost over TLS
//! against plain TCP: it serves this project's SSE events as fast as a
//! client reads them (`rate=0`), chunked in batches of 64 as the server
//! batches them, on any request path, over TLS with a certificate of a CA
//! it makes at start (written to `--ca-out`), or over plain TCP
//! (`--plain`). Its first line on stdout is `listening on URL`.
//!
//! Run with:
//!
//! ```text
//! cargo run --release -p streamgauge-loadgen --example tls_peer -- --ca-out /tmp/peer-ca.pem
//! streamgauge-loadgen run --target-subscribe-url https://127.0.0.1:PORT/events \
//!     --target-ca-cert /tmp/peer-ca.pem --clients 10 --duration 20s
//! ```
//!
//! (docs/loadgen.md, "The client", gives the figures and the commands.)

use std::io::Write as _;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// Events per chunk, as the server's writer batches a busy stream.
const BATCH: u64 = 64;

/// Filler of each event's data (the ticker's default size).
const SIZE: usize = 32;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1).cloned())
    };
    let plain = args.iter().any(|a| a == "--plain");
    let listen = value("--listen").unwrap_or_else(|| "127.0.0.1:0".to_owned());
    let listener = TcpListener::bind(&listen).await?;
    let addr = listener.local_addr()?;
    let acceptor = if plain {
        None
    } else {
        let ca_out = value("--ca-out").unwrap_or_else(|| "peer-ca.pem".to_owned());
        Some(acceptor(&ca_out)?)
    };
    let scheme = if plain { "http" } else { "https" };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "listening on {scheme}://{addr}")?;
    stdout.flush()?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            match acceptor {
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        let _ = serve(tls).await;
                    }
                }
                None => {
                    let _ = serve(tcp).await;
                }
            }
        });
    }
}

/// A TLS acceptor with a certificate for `127.0.0.1` signed by a CA made
/// now, whose certificate goes to `ca_out`.
fn acceptor(ca_out: &str) -> std::io::Result<tokio_rustls::TlsAcceptor> {
    let fail = |e: String| std::io::Error::other(e);
    let mut ca_params =
        rcgen::CertificateParams::new(Vec::new()).map_err(|e| fail(e.to_string()))?;
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "streamgauge tls_peer CA");
    let ca_key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).map_err(|e| fail(e.to_string()))?;
    let key = rcgen::KeyPair::generate().map_err(|e| fail(e.to_string()))?;
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .and_then(|params| params.signed_by(&key, &ca))
        .map_err(|e| fail(e.to_string()))?;
    std::fs::write(ca_out, ca.pem())?;
    let key = rustls::pki_types::PrivateKeyDer::try_from(key.serialize_der())
        .map_err(|e| fail(e.to_owned()))?;
    #[allow(deprecated, reason = "ring is the tree's one provider (TOOLCHAIN.md)")]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| fail(e.to_string()))?
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone(), ca.der().clone()], key)
        .map_err(|e| fail(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Reads a request head, then writes events until the client leaves.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 || head.len() > 16 * 1024 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n")
        .await?;
    let filler = "x".repeat(SIZE);
    let mut chunk = Vec::new();
    let mut events = String::new();
    for first in (1u64..).step_by(BATCH as usize) {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros());
        events.clear();
        for seq in first..first + BATCH {
            events.push_str(&format!(
                "id: {seq}\ndata: {{\"seq\":{seq},\"ts\":{ts},\"data\":\"{filler}\"}}\n\n"
            ));
        }
        chunk.clear();
        chunk.extend_from_slice(format!("{:x}\r\n", events.len()).as_bytes());
        chunk.extend_from_slice(events.as_bytes());
        chunk.extend_from_slice(b"\r\n");
        stream.write_all(&chunk).await?;
    }
    Ok(())
}
