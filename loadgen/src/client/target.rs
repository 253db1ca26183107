//! The server under test, and dialing it: a URL resolved to the address
//! that accepts (the `url` crate parses it), and a TCP connection per
//! client from one of several loopback source addresses, so that one
//! process can open more connections than one port range holds.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;

use super::stream::ClientError;

/// How long a connection (TCP, request, response head or handshake) may
/// take before it counts as a timeout.
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

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
/// HTTP's default, as a browser sends it).
fn authority(host: &str, port: u16) -> String {
    if port == 80 {
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
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.trim_matches(['[', ']']), port))
            .await
            .map_err(|e| anyhow::anyhow!("--url {url:?}: cannot resolve {host}: {e}"))?
            .collect();
        let addr = Self::first_accepting(&addrs)
            .await
            .ok_or_else(|| anyhow::anyhow!("--url {url:?}: {host} resolves to no address"))?;
        Ok(Self {
            addr,
            host: authority(&host, port),
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

    /// `http://host:port`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.host)
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

    /// A TCP connection for client `id`.
    pub(super) async fn dial(&self, id: usize) -> Result<TcpStream, ClientError> {
        self.dial_from(self.source(id), None).await
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
