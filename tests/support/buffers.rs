//! What may sit between a stream's source and a reader that falls behind:
//! the server's queue and buffers for the stream, the kernel's send buffer
//! on the server's side, and the reader's receive buffer.
//!
//! A test that must make a reader fall behind derives how much to send from
//! these sizes as they are in force, rather than assume the host's
//! `net.ipv4.tcp_rmem` and `tcp_wmem`: receive-buffer autotuning alone may
//! grow a socket's buffer to 32 MiB or more, and the initial and largest
//! send buffers differ from host to host.

use std::net::SocketAddr;

use streamgauge_server::Config;
use streamgauge_server::direct::GATHER_BYTES;
use tokio::net::{TcpSocket, TcpStream};

use super::{Transport, within};

/// The receive buffer the tests' slow readers ask for: small, so that what
/// they have not read piles up on the server (whose queue the test can see)
/// rather than in their own kernel.
pub const SLOW_READER_WINDOW: u32 = 16 * 1024;

/// The live `net.ipv4.tcp_wmem` of this network namespace.
const TCP_WMEM: &str = "/proc/sys/net/ipv4/tcp_wmem";

/// Connects to `addr` with the receive buffer fixed at `bytes`: set before
/// connecting, which turns the kernel's autotuning of it off. Returns the
/// stream and the size in force, read back (Linux doubles the size asked
/// for, to account for its bookkeeping, and caps it at
/// `net.core.rmem_max`).
pub async fn connect_with_recv_buffer(addr: SocketAddr, bytes: u32) -> (TcpStream, u64) {
    let socket = TcpSocket::new_v4().expect("a socket");
    socket
        .set_recv_buffer_size(bytes)
        .expect("a receive buffer size");
    let in_force = socket.recv_buffer_size().expect("the receive buffer size");
    let stream = within("a connection", socket.connect(addr))
        .await
        .expect("connecting");
    (stream, u64::from(in_force))
}

/// The most the kernel's send buffer of one of the server's sockets may
/// hold: the largest figure of `net.ipv4.tcp_wmem`, which bounds its
/// autotuning. The server sets no `SO_SNDBUF` (and has no setting for it),
/// and the size of its socket's buffer read at one moment would be no
/// bound: autotuning grows it as the stream goes.
pub fn send_buffer_max() -> u64 {
    let wmem = std::fs::read_to_string(TCP_WMEM)
        .unwrap_or_else(|e| panic!("{TCP_WMEM}: {e} (these tests need Linux)"));
    wmem.split_whitespace()
        .map(|figure| {
            figure
                .parse::<u64>()
                .unwrap_or_else(|e| panic!("{TCP_WMEM}: {figure:?}: {e}"))
        })
        .max()
        .unwrap_or_else(|| panic!("{TCP_WMEM} is empty"))
}

/// The most the server holds for one stream of events costing `event`
/// bytes each (by the queue's measure, `Item::cost`), from `config`: its
/// queue, the batch its writer encoded, and what the transport holds under
/// it (for SSE, the chunks gathered into one write: up to `GATHER_BYTES`
/// and one batch past it; tungstenite's write buffer of one batch for
/// WebSocket). A queue or a batch always takes one event, however large.
pub fn server_stream_bytes(config: &Config, transport: Transport, event: usize) -> u64 {
    let queue = config.queue.max_bytes.max(event) as u64;
    let batch = config.batch.max_bytes.max(event) as u64;
    let transport_buffers = match transport {
        Transport::Sse => GATHER_BYTES as u64 + batch,
        Transport::Ws => batch,
    };
    queue + batch + transport_buffers
}

/// The most bytes of events costing `event` each that a stream on
/// `transport` may hold, from the server's queue to a reader's receive
/// buffer of `recv_buffer` bytes (as read back): a reader further behind
/// than this has overflowed its queue.
pub fn in_between(config: &Config, transport: Transport, event: usize, recv_buffer: u64) -> u64 {
    server_stream_bytes(config, transport, event) + send_buffer_max() + recv_buffer
}
