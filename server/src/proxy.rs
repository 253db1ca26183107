//! Behind proxies: who the client is when a trusted proxy connects for it.
//!
//! A peer whose address is in `--trusted-proxy` (CIDR blocks) may say who
//! its client is, in one of two ways:
//!
//! - with `--proxy-protocol`, a PROXY protocol header (v1 text or v2
//!   binary, HAProxy's specification) before anything else on the
//!   connection: [`read_header`]; the connection is then the client's;
//! - otherwise, per request, the `X-Forwarded-For` header: the client is
//!   the right-most address that is not itself a trusted proxy
//!   ([`Trusted::forwarded_client`]), so a client cannot forge its way past the
//!   proxies by sending the header itself.
//!
//! An untrusted peer's headers say nothing: its address is its own. The
//! per-address limit ([`crate::peers`]) and the logs use the address
//! found here. Parsing only: this module neither reads sockets except
//! through [`read_header`] nor decides any limit.

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

use axum::http::HeaderMap;
use tokio::io::{AsyncRead, AsyncReadExt as _};

/// A block of addresses, `ADDR/PREFIX` or one address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this block (an IPv4 address written as IPv6,
    /// `::ffff:a.b.c.d`, is taken as the IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                masked(u32::from(ip).into(), 32, self.prefix)
                    == masked(u32::from(net).into(), 32, self.prefix)
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                masked(u128::from(ip), 128, self.prefix)
                    == masked(u128::from(net), 128, self.prefix)
            }
            _ => false,
        }
    }
}

/// The top `prefix` bits of the `width`-bit number `bits`, shifted down.
fn masked(bits: u128, width: u32, prefix: u8) -> u128 {
    let drop = width - u32::from(prefix);
    if drop >= 128 { 0 } else { bits >> drop }
}

/// `ip`, with an IPv4-mapped IPv6 address turned into its IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| format!("{s:?} is not an address or ADDRESS/PREFIX block"))?,
        );
        let width = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => width,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= width)
                .ok_or_else(|| format!("{s:?}: the prefix must be 0 to {width}"))?,
        };
        Ok(Self { network, prefix })
    }
}

impl TryFrom<String> for Cidr {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Cidr> for String {
    fn from(cidr: Cidr) -> Self {
        cidr.to_string()
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The trusted proxies.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trusted {
    blocks: Vec<Cidr>,
}

impl Trusted {
    /// Trusts the peers in `blocks`.
    pub fn new(blocks: Vec<Cidr>) -> Self {
        Self { blocks }
    }

    /// Whether a peer at `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.blocks.iter().any(|block| block.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The client of a request that the trusted proxy `peer` forwarded:
    /// the right-most address of `X-Forwarded-For` that is not a trusted
    /// proxy (addresses left of it were written by the client itself and
    /// prove nothing), or `peer` when the header is absent or malformed.
    pub fn forwarded_client(&self, headers: &HeaderMap, peer: SocketAddr) -> SocketAddr {
        let hops = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect::<Vec<_>>();
        for hop in hops.iter().rev() {
            let Some(ip) = parse_hop(hop) else {
                return peer;
            };
            if !self.contains(ip) {
                return SocketAddr::new(ip, 0);
            }
        }
        peer
    }
}

/// One `X-Forwarded-For` entry: an address, possibly with a port
/// (`a.b.c.d:p`, `[v6]:p`).
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(ip) = hop.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    hop.parse::<SocketAddr>().ok().map(|a| canonical(a.ip()))
}

/// The PROXY protocol v2 signature.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";

/// The longest v1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;

/// Most bytes of TLVs a v2 header may carry here (they are skipped).
const V2_MAX_EXTRA: usize = 4096;

/// A PROXY protocol header that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    /// The connection failed or ended first.
    #[error("reading the PROXY header: {0}")]
    Io(#[from] io::Error),
    /// The bytes are not a PROXY header.
    #[error("malformed PROXY protocol header: {0}")]
    Malformed(&'static str),
}

/// Reads a PROXY protocol header (v1 or v2) from the start of `io`,
/// consuming exactly its bytes: the client's address, or `None` when the
/// header says the connection is the proxy's own (v1 `UNKNOWN`, v2
/// `LOCAL`, or an address family other than TCP over IPv4/IPv6).
///
/// # Errors
///
/// [`HeaderError`] when the connection fails or the bytes are not a PROXY
/// header.
///
/// # Cancel safety
///
/// Not cancel safe: a dropped read loses the bytes read so far (callers
/// drop the connection with it).
pub async fn read_header<IO: AsyncRead + Unpin>(
    io: &mut IO,
) -> Result<Option<SocketAddr>, HeaderError> {
    let mut start = [0u8; 12];
    io.read_exact(&mut start[..5]).await?;
    if &start[..5] == b"PROXY" {
        return read_v1(io).await;
    }
    io.read_exact(&mut start[5..]).await?;
    if start != V2_SIGNATURE {
        return Err(HeaderError::Malformed("no PROXY signature"));
    }
    read_v2(io).await
}

/// The rest of a v1 header after `PROXY`, byte by byte up to its CRLF
/// (nothing past it is consumed).
async fn read_v1<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<Option<SocketAddr>, HeaderError> {
    let mut line = Vec::with_capacity(V1_MAX);
    line.extend_from_slice(b"PROXY");
    while !line.ends_with(b"\r\n") {
        if line.len() >= V1_MAX {
            return Err(HeaderError::Malformed("v1 header longer than 107 bytes"));
        }
        line.push(io.read_u8().await?);
    }
    parse_v1(&line)
}

/// A whole v1 header line, CRLF included.
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let text = std::str::from_utf8(&line[..line.len() - 2])
        .map_err(|_| HeaderError::Malformed("v1 header is not ASCII"))?;
    let fields: Vec<&str> = text.split(' ').collect();
    match fields.as_slice() {
        ["PROXY", "UNKNOWN", ..] => Ok(None),
        [
            "PROXY",
            family @ ("TCP4" | "TCP6"),
            source,
            _dest,
            port,
            _dport,
        ] => {
            let ip: IpAddr = source
                .parse()
                .map_err(|_| HeaderError::Malformed("v1 source address"))?;
            if (*family == "TCP4") != ip.is_ipv4() {
                return Err(HeaderError::Malformed("v1 address of the wrong family"));
            }
            let port = port
                .parse()
                .map_err(|_| HeaderError::Malformed("v1 source port"))?;
            Ok(Some(SocketAddr::new(canonical(ip), port)))
        }
        _ => Err(HeaderError::Malformed("v1 header fields")),
    }
}

/// The rest of a v2 header after its signature.
async fn read_v2<IO: AsyncRead + Unpin>(io: &mut IO) -> Result<Option<SocketAddr>, HeaderError> {
    let mut fixed = [0u8; 4];
    io.read_exact(&mut fixed).await?;
    let [version_command, family, len_hi, len_lo] = fixed;
    let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
    if version_command >> 4 != 2 {
        return Err(HeaderError::Malformed("v2 version"));
    }
    if len > 216 + V2_MAX_EXTRA {
        return Err(HeaderError::Malformed("v2 header too long"));
    }
    let mut rest = vec![0u8; len];
    io.read_exact(&mut rest).await?;
    parse_v2(version_command & 0x0F, family, &rest)
}

/// A v2 header's command, family byte and address block.
fn parse_v2(command: u8, family: u8, block: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    match command {
        0 => return Ok(None), // LOCAL: the proxy's own connection.
        1 => {}
        _ => return Err(HeaderError::Malformed("v2 command")),
    }
    let short = HeaderError::Malformed("v2 address block too short");
    match family {
        // TCP over IPv4: source, destination, source port, destination port.
        0x11 => {
            let b: &[u8; 12] = block
                .get(..12)
                .and_then(|b| b.try_into().ok())
                .ok_or(short)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Ok(Some(SocketAddr::new(
                IpAddr::V4(ip),
                u16::from_be_bytes([b[8], b[9]]),
            )))
        }
        // TCP over IPv6.
        0x21 => {
            let b: &[u8; 36] = block
                .get(..36)
                .and_then(|b| b.try_into().ok())
                .ok_or(short)?;
            let mut octets = [0u8; 16];
            octets.copy_from_slice(&b[..16]);
            let ip = canonical(IpAddr::V6(Ipv6Addr::from(octets)));
            Ok(Some(SocketAddr::new(
                ip,
                u16::from_be_bytes([b[32], b[33]]),
            )))
        }
        // UNSPEC, UDP or UNIX: not a TCP client.
        _ => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn blocks_hold_their_addresses_only() {
        let ten = cidr("10.0.0.0/8");
        assert!(ten.contains(ip("10.1.2.3")) && !ten.contains(ip("11.0.0.1")));
        assert!(ten.contains(ip("::ffff:10.9.9.9")), "IPv4-mapped");
        assert!(cidr("127.0.0.1").contains(ip("127.0.0.1")));
        assert!(!cidr("127.0.0.1").contains(ip("127.0.0.2")));
        assert!(cidr("0.0.0.0/0").contains(ip("203.0.113.9")));
        assert!(!cidr("0.0.0.0/0").contains(ip("::1")));
        assert!(cidr("fd00::/8").contains(ip("fd12::1")));
        assert!(!cidr("fd00::/8").contains(ip("fe80::1")));
        assert!(cidr("::/0").contains(ip("2001:db8::1")));
        assert!(cidr("192.168.1.0/31").contains(ip("192.168.1.1")));
        assert!(!cidr("192.168.1.0/31").contains(ip("192.168.1.2")));
        assert_eq!(cidr("10.0.0.0/8").to_string(), "10.0.0.0/8");
        for bad in ["10.0.0.0/33", "::/129", "nope", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn the_client_is_the_right_most_untrusted_hop() {
        let trusted = Trusted::new(vec![cidr("10.0.0.0/8")]);
        let peer: SocketAddr = "10.0.0.5:4000".parse().unwrap();
        let with = |value: &'static str| {
            let mut headers = HeaderMap::new();
            headers.append("x-forwarded-for", HeaderValue::from_static(value));
            trusted.forwarded_client(&headers, peer).ip()
        };
        assert_eq!(with("203.0.113.7"), ip("203.0.113.7"));
        // A client that forged the header is still the hop the proxy saw.
        assert_eq!(with("1.1.1.1, 203.0.113.7"), ip("203.0.113.7"));
        assert_eq!(with("203.0.113.7, 10.0.0.9"), ip("203.0.113.7"));
        assert_eq!(with("[2001:db8::1]:443"), ip("2001:db8::1"));
        assert_eq!(with("203.0.113.7:5555"), ip("203.0.113.7"));
        assert_eq!(with("garbage"), peer.ip());
        assert_eq!(with("10.0.0.1, 10.0.0.2"), peer.ip());
        assert_eq!(trusted.forwarded_client(&HeaderMap::new(), peer), peer);
    }

    async fn header(bytes: &[u8]) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
        let mut input = bytes;
        let parsed = read_header(&mut input).await;
        (parsed, input.to_vec())
    }

    #[tokio::test]
    async fn v1_headers_give_the_source_and_consume_only_themselves() {
        let (parsed, rest) =
            header(b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\nGET / HTTP/1.1\r\n").await;
        assert_eq!(parsed.unwrap(), Some("203.0.113.7:56324".parse().unwrap()));
        assert_eq!(rest, b"GET / HTTP/1.1\r\n");
        let (parsed, _) = header(b"PROXY TCP6 2001:db8::1 ::1 1000 443\r\n").await;
        assert_eq!(parsed.unwrap(), Some("[2001:db8::1]:1000".parse().unwrap()));
        let (parsed, _) = header(b"PROXY UNKNOWN\r\n").await;
        assert_eq!(parsed.unwrap(), None);
        for bad in [
            &b"PROXY TCP4 2001:db8::1 ::1 1 2\r\n"[..],
            b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n",
            b"PROXY SCTP 1.2.3.4 5.6.7.8 1 2\r\n",
            b"GET / HTTP/1.1\r\n\r\n",
        ] {
            assert!(
                header(bad).await.0.is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        let endless = [b"PROXY ".as_slice(), &[b'x'; 200]].concat();
        assert!(header(&endless).await.0.is_err());
    }

    #[tokio::test]
    async fn v2_headers_give_the_source_and_skip_their_tlvs() {
        let mut v4 = V2_SIGNATURE.to_vec();
        v4.extend_from_slice(&[0x21, 0x11, 0, 12 + 3]);
        v4.extend_from_slice(&[203, 0, 113, 7, 10, 0, 0, 1, 0xDC, 0x04, 1, 187]);
        v4.extend_from_slice(&[0x04, 0, 0]); // an empty TLV (NOOP)
        v4.extend_from_slice(b"GET");
        let (parsed, rest) = header(&v4).await;
        assert_eq!(parsed.unwrap(), Some("203.0.113.7:56324".parse().unwrap()));
        assert_eq!(rest, b"GET");

        let mut v6 = V2_SIGNATURE.to_vec();
        v6.extend_from_slice(&[0x21, 0x21, 0, 36]);
        let mut source = [0u8; 16];
        source[..2].copy_from_slice(&[0x20, 0x01]);
        source[15] = 1;
        v6.extend_from_slice(&source);
        v6.extend_from_slice(&[0; 16]);
        v6.extend_from_slice(&[0x03, 0xE8, 0, 0]);
        let (parsed, _) = header(&v6).await;
        assert_eq!(parsed.unwrap(), Some("[2001::1]:1000".parse().unwrap()));

        let mut local = V2_SIGNATURE.to_vec();
        local.extend_from_slice(&[0x20, 0x00, 0, 0]);
        assert_eq!(header(&local).await.0.unwrap(), None);

        let mut short = V2_SIGNATURE.to_vec();
        short.extend_from_slice(&[0x21, 0x11, 0, 4, 1, 2, 3, 4]);
        assert!(header(&short).await.0.is_err());
        let mut wrong = V2_SIGNATURE.to_vec();
        wrong[11] = b'X';
        wrong.extend_from_slice(&[0x21, 0x11, 0, 0]);
        assert!(header(&wrong).await.0.is_err());
    }
}
