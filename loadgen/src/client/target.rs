//! The server under test, and dialing it: a URL resolved to the address
//! that accepts (the `url` crate parses it), and a connection per client
//! (TCP, then TLS for an `https://` or `wss://` target) from one of several
//! loopback source addresses, so that one process can open more
//! connections than one port range holds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use super::socket::Socket;
use super::stream::ClientError;
use super::tls::Connector;

/// How long a connection (TCP, request, response head or handshake) may
/// take before it counts as a timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Loopback source addresses clients spread over (127.0.0.1 to .16), so
/// that one process can open more connections than one port range holds.
const LOOPBACK_SOURCES: u8 = 16;

/// The host and port of `url`, a base URL: `http`, a host, no user, no
/// path beyond `/`, no query or fragment.
fn host_and_port(url: &str) -> Option<(String, u16)> {
    let url = url::Url::parse(url).ok()?;
    let bare = url.scheme() == "http"
        && url.username().is_empty()
        && url.password().is_none()
        && url.path() == "/"
        && url.query().is_none()
        && url.fragment().is_none();
    Some((url.host_str()?.to_owned(), url.port_or_known_default()?)).filter(|_| bare)
}

/// The `Host` header of `host` at `port` (the port left out when it is
/// the scheme's default, as a browser sends it).
fn authority(host: &str, port: u16, tls: bool) -> String {
    if port == if tls { 443 } else { 80 } {
        host.to_owned()
    } else {
        format!("{host}:{port}")
    }
}

/// The server under test.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Target {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The `Host` header (`host:port`).
    pub host: String,
    /// Whether connections are TLS (`https://`, `wss://`).
    #[serde(default)]
    pub tls: bool,
}

impl Target {
    /// The target at `url` (`http://host:port`). A host with several
    /// addresses (`localhost`: `::1` and `127.0.0.1`) is reached at the
    /// first that accepts a connection, as a browser or curl would.
    ///
    /// # Errors
    ///
    /// A URL that is not `http://host[:port][/]`, or a host that does not
    /// resolve.
    pub async fn resolve(url: &str) -> anyhow::Result<Self> {
        let (host, port) = host_and_port(url)
            .ok_or_else(|| anyhow::anyhow!("--url {url:?}: expected http://HOST:PORT"))?;
        Self::at(&format!("--url {url:?}"), &host, port, false).await
    }

    /// The server of `url`, any `http://`, `https://`, `ws://` or `wss://`
    /// URL (a foreign target's): its host and port, TLS for the secure
    /// schemes.
    ///
    /// # Errors
    ///
    /// Not such a URL, or a host that does not resolve.
    pub async fn of_url(url: &str) -> anyhow::Result<Self> {
        let parsed = url::Url::parse(url).map_err(|e| anyhow::anyhow!("{url:?}: {e}"))?;
        let tls = match parsed.scheme() {
            "http" | "ws" => false,
            "https" | "wss" => true,
            other => anyhow::bail!("{url:?}: the scheme {other} is not http(s) or ws(s)"),
        };
        let host = parsed
            .host_str()
            .ok_or_else(|| anyhow::anyhow!("{url:?} has no host"))?;
        let port = parsed.port().unwrap_or(if tls { 443 } else { 80 });
        Self::at(&format!("{url:?}"), host, port, tls).await
    }

    /// The target `host:port`, resolved (`what` names it in errors).
    async fn at(what: &str, host: &str, port: u16, tls: bool) -> anyhow::Result<Self> {
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| anyhow::anyhow!("{what}: cannot resolve {host}: {e}"))?
            .collect();
        let addr = Self::first_accepting(&addrs)
            .await
            .ok_or_else(|| anyhow::anyhow!("{what}: {host} resolves to no address"))?;
        Ok(Self {
            addr,
            host: authority(host, port, tls),
            tls,
        })
    }

    /// The first of `addrs` that accepts a TCP connection within
    /// [`CONNECT_TIMEOUT`]; the first of them if none does (the run's
    /// reachability check then says what is wrong); `None` if there are none.
    async fn first_accepting(addrs: &[SocketAddr]) -> Option<SocketAddr> {
        if let [only] = addrs {
            return Some(*only);
        }
        for addr in addrs {
            if let Ok(Ok(_)) = timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
                return Some(*addr);
            }
        }
        addrs.first().copied()
    }

    /// `http://host:port` (`https://` over TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.host)
    }

    /// The host without its port: TLS's server name.
    pub fn hostname(&self) -> &str {
        match self.host.rsplit_once(':') {
            Some((host, port))
                if !port.ends_with(']') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                host
            }
            _ => &self.host,
        }
    }

    /// The source address client `id` binds, spreading clients of a
    /// loopback target over several loopback addresses.
    fn source(&self, id: usize) -> Option<IpAddr> {
        self.loopback_source(1 + (id % usize::from(LOOPBACK_SOURCES)) as u8)
    }

    /// `127.0.0.last` as a source address, if the target is on IPv4
    /// loopback (any 127.0.0.0/8 address reaches it then); `None` otherwise.
    pub fn loopback_source(&self, last: u8) -> Option<IpAddr> {
        matches!(self.addr.ip(), IpAddr::V4(ip) if ip.is_loopback())
            .then_some(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)))
    }

    /// A connection for client `id`: TCP, and TLS through `tls` for a
    /// TLS target.
    ///
    /// # Errors
    ///
    /// The connection or the TLS handshake failed.
    pub async fn connect(&self, id: usize, tls: Option<&Connector>) -> Result<Socket, ClientError> {
        self.connect_from(self.source(id), tls).await
    }

    /// A connection from `source` (if given): TCP, and TLS through `tls`
    /// for a TLS target.
    ///
    /// # Errors
    ///
    /// The connection or the TLS handshake failed, or the target is TLS and
    /// `tls` is `None`.
    pub async fn connect_from(
        &self,
        source: Option<IpAddr>,
        tls: Option<&Connector>,
    ) -> Result<Socket, ClientError> {
        let tcp = self.dial_from(source, None).await?;
        if !self.tls {
            return Ok(Socket::Plain(tcp));
        }
        let tls = tls.ok_or_else(|| {
            ClientError::Protocol(format!(
                "{} is a TLS target without TLS settings",
                self.host
            ))
        })?;
        let stream = tls
            .handshake(self.hostname(), tcp)
            .await
            .map_err(ClientError::Connect)?;
        Ok(Socket::Tls(Box::new(stream)))
    }

    /// A TCP connection from `source` (if given), with a receive buffer of
    /// `recv_buffer` bytes (if given; the kernel may round it).
    ///
    /// # Errors
    ///
    /// The socket could not be made, bound or connected.
    pub async fn dial_from(
        &self,
        source: Option<IpAddr>,
        recv_buffer: Option<u32>,
    ) -> Result<TcpStream, ClientError> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(ClientError::Connect)?;
        if let Some(bytes) = recv_buffer {
            socket
                .set_recv_buffer_size(bytes)
                .map_err(ClientError::Connect)?;
        }
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(ClientError::Connect)?;
        }
        socket
            .connect(self.addr)
            .await
            .map_err(ClientError::Connect)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_clients_spread_over_source_addresses() {
        let target = Target::resolve("http://127.0.0.1:9").await.unwrap();
        let sources: std::collections::HashSet<_> = (0..64).map(|id| target.source(id)).collect();
        assert_eq!(sources.len(), usize::from(LOOPBACK_SOURCES));
        assert!(Target::resolve("127.0.0.1:9").await.is_err());
        assert!(Target::resolve("http://127.0.0.1:9/path").await.is_err());
    }

    #[tokio::test]
    async fn foreign_urls_name_their_server_and_its_tls() {
        let secure = Target::of_url("wss://127.0.0.1/chat?room=1").await.unwrap();
        assert_eq!((secure.host.as_str(), secure.tls), ("127.0.0.1", true));
        assert_eq!(secure.addr.port(), 443);
        assert_eq!(secure.base_url(), "https://127.0.0.1");
        let plain = Target::of_url("http://127.0.0.1:8000/v1/x").await.unwrap();
        assert_eq!((plain.hostname(), plain.tls), ("127.0.0.1", false));
        let v6 = Target {
            host: "[::1]:8443".to_owned(),
            ..plain.clone()
        };
        assert_eq!(v6.hostname(), "[::1]");
        assert!(Target::of_url("ftp://h/x").await.is_err());
    }

    #[tokio::test]
    async fn a_host_of_several_addresses_is_reached_at_the_one_that_accepts() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = listener.local_addr().unwrap();
        // A loopback address nobody listens on at that port, first.
        let closed = SocketAddr::new(Ipv4Addr::new(127, 0, 0, 2).into(), open.port());
        assert_eq!(Target::first_accepting(&[closed, open]).await, Some(open));
        assert_eq!(Target::first_accepting(&[closed]).await, Some(closed));
        assert_eq!(Target::first_accepting(&[]).await, None);
    }
}
