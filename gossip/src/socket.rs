//! The datagram seam: the one place gossip touches the network.
//!
//! The driver sends and receives through a [`DatagramSocket`]. Production uses
//! tokio's `UdpSocket`; a simulator plugs in its own socket (datagrams that
//! are delayed, lost, duplicated or reordered on purpose), so the same driver,
//! core and foca run in both.

use std::future::Future;
use std::io;
use std::net::SocketAddr;

/// A bound datagram socket, as the gossip driver uses it.
pub trait DatagramSocket: Send + Sync + 'static {
    /// Sends one datagram to `to`; the bytes sent.
    fn send_to(
        &self,
        packet: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send;

    /// Waits for one datagram, copies it into `buf` (cut to its length, as a
    /// kernel does) and returns its length and sender. Must be cancel-safe: the
    /// driver polls it in a `select!`, and a datagram must not be lost when
    /// another branch wins.
    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send;
}

impl DatagramSocket for tokio::net::UdpSocket {
    fn send_to(
        &self,
        packet: &[u8],
        to: SocketAddr,
    ) -> impl Future<Output = io::Result<usize>> + Send {
        tokio::net::UdpSocket::send_to(self, packet, to)
    }

    fn recv_from(
        &self,
        buf: &mut [u8],
    ) -> impl Future<Output = io::Result<(usize, SocketAddr)>> + Send {
        tokio::net::UdpSocket::recv_from(self, buf)
    }
}
