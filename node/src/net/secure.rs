//! The connection seam of peer RPC: what a peer connection is before HTTP/2 runs on it.
//!
//! Without a cluster key a connection is the bare TCP stream. With one, both sides run
//! the handshake of [`super::noise`] first, under [`HANDSHAKE_TIMEOUT`], and every byte
//! after it travels in sealed frames ([`NoiseStream`]). The listener ([`accept`])
//! refuses a connection whose handshake fails or stalls, counts it in
//! `ringkv_rejected_total{channel="peer"}`, and closes it; hyper never sees it. The
//! calling side plugs in as the connector of hyper-util's client ([`PeerConnector`]), so
//! a handshake failure is a connect failure: the call was never sent.
//!
//! Bounds: a handshake reads at most two length bytes and one 48-byte message; a frame
//! is at most 65,537 bytes on the wire; a stream buffers at most one frame each way
//! plus one read chunk.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use futures::future::BoxFuture;
use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use ringkv_gossip::ClusterKeys;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

use super::noise::{
    FRAME_MAX_BYTES, FRAME_PLAINTEXT_MAX_BYTES, HANDSHAKE_MESSAGE_BYTES, Initiator, NoiseError,
    Transport, frame_len, respond,
};

/// How long a handshake may take, either side: a peer on the LAN needs a millisecond;
/// a connection that sends nothing holds a connection slot for at most this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bytes read from the socket at a time.
const READ_CHUNK_BYTES: usize = 16 * 1024;
/// The receive buffer: one whole frame (its length bytes included) and a read chunk.
/// Allocated and zeroed once per connection, so a read costs no zeroing.
const RECEIVE_BUFFER_BYTES: usize = 2 + FRAME_MAX_BYTES + READ_CHUNK_BYTES;

/// Connections refused before HTTP/2 saw them, labelled by `channel` (`peer` here).
pub const REJECTED: &str = ringkv_gossip::REJECTED_TOTAL;

/// Counts one connection in `ringkv_rejected_total{channel="peer"}`.
pub(crate) fn count_rejected() {
    metrics::counter!(REJECTED, "channel" => "peer").increment(1);
}

/// Runs the listening side's handshake on `stream` (the caller bounds it with
/// [`HANDSHAKE_TIMEOUT`]).
pub(crate) async fn accept<S>(mut stream: S, keys: &ClusterKeys) -> io::Result<NoiseStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let first = read_handshake_message(&mut stream).await?;
    let (transport, answer) = respond(keys, &first).map_err(invalid)?;
    write_handshake_message(&mut stream, &answer).await?;
    Ok(NoiseStream::new(stream, transport))
}

/// Runs the connecting side's handshake on `stream` (the caller bounds it).
pub(crate) async fn connect<S>(mut stream: S, keys: &ClusterKeys) -> io::Result<NoiseStream<S>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (initiator, first) = Initiator::start(keys).map_err(invalid)?;
    write_handshake_message(&mut stream, &first).await?;
    let answer = read_handshake_message(&mut stream).await?;
    let transport = initiator.finish(&answer).map_err(invalid)?;
    Ok(NoiseStream::new(stream, transport))
}

fn invalid(e: NoiseError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

async fn read_handshake_message<S: AsyncRead + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let mut header = [0u8; 2];
    stream.read_exact(&mut header).await?;
    // Anything but the one size is not our handshake (an HTTP/2 preface announces
    // 20,562): refuse before reading more.
    let len = frame_len(header);
    if len != HANDSHAKE_MESSAGE_BYTES {
        return Err(invalid(NoiseError::BadHandshake(format!(
            "a handshake message of {len} bytes; expected {HANDSHAKE_MESSAGE_BYTES}"
        ))));
    }
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

async fn write_handshake_message<S: AsyncWrite + Unpin>(
    stream: &mut S,
    message: &[u8],
) -> io::Result<()> {
    let mut framed = Vec::with_capacity(2 + message.len());
    framed.extend_from_slice(&(message.len() as u16).to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await?;
    stream.flush().await
}

/// A stream whose bytes travel sealed in Noise transport frames.
///
/// Writes gather in a plaintext buffer that becomes one frame when it is full or on
/// flush (hyper flushes after each batch of HTTP/2 frames), so a small message costs one
/// frame, not one per `write` call.
pub struct NoiseStream<S> {
    inner: S,
    transport: Transport,
    /// Bytes read from `inner` and not yet opened: `received[received_from..received_to]`.
    received: Box<[u8]>,
    received_from: usize,
    received_to: usize,
    /// Opened plaintext not yet read, from `plain_at`.
    plain: Vec<u8>,
    plain_at: usize,
    /// Plaintext written, not yet sealed.
    pending: Vec<u8>,
    /// Sealed bytes not yet written to `inner`, from `sealed_at`.
    sealed: Vec<u8>,
    sealed_at: usize,
    /// `inner` reached its end.
    eof: bool,
}

impl<S> std::fmt::Debug for NoiseStream<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoiseStream").finish_non_exhaustive()
    }
}

impl<S> NoiseStream<S> {
    fn new(inner: S, transport: Transport) -> Self {
        Self {
            inner,
            transport,
            received: vec![0; RECEIVE_BUFFER_BYTES].into_boxed_slice(),
            received_from: 0,
            received_to: 0,
            plain: Vec::new(),
            plain_at: 0,
            pending: Vec::new(),
            sealed: Vec::new(),
            sealed_at: 0,
            eof: false,
        }
    }

    /// The underlying stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// Opens the first whole frame in `received`, if there is one.
    fn open_buffered(&mut self) -> io::Result<bool> {
        let buffered = &self.received[self.received_from..self.received_to];
        let Some(header) = buffered.first_chunk::<2>() else {
            return Ok(false);
        };
        let len = frame_len(*header);
        if buffered.len() < 2 + len {
            return Ok(false);
        }
        self.transport
            .open_frame(&buffered[2..2 + len], &mut self.plain)
            .map_err(invalid)?;
        self.plain_at = 0;
        self.received_from += 2 + len;
        if self.received_from == self.received_to {
            (self.received_from, self.received_to) = (0, 0);
        }
        Ok(true)
    }

    /// Makes room for a read chunk after the buffered bytes: a partial frame (shorter
    /// than a whole one, or it would have been opened) moves to the front when the
    /// chunk would not fit after it.
    fn make_receive_space(&mut self) {
        if self.received_to + READ_CHUNK_BYTES > self.received.len() {
            self.received
                .copy_within(self.received_from..self.received_to, 0);
            self.received_to -= self.received_from;
            self.received_from = 0;
        }
    }

    /// Seals what is pending into one frame.
    fn seal_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        self.transport
            .seal_frame(&self.pending, &mut self.sealed)
            .map_err(invalid)?;
        self.pending.clear();
        Ok(())
    }
}

impl<S: AsyncWrite + Unpin> NoiseStream<S> {
    /// Writes sealed bytes to `inner` until none are left.
    fn poll_write_sealed(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sealed_at < self.sealed.len() {
            let written =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.sealed[self.sealed_at..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sealed_at += written;
        }
        self.sealed.clear();
        self.sealed_at = 0;
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for NoiseStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = buf.remaining().min(this.plain.len() - this.plain_at);
                buf.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                return Poll::Ready(Ok(()));
            }
            if this.open_buffered()? {
                continue;
            }
            if this.eof {
                return Poll::Ready(if this.received_from == this.received_to {
                    Ok(())
                } else {
                    Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the stream ended inside a frame",
                    ))
                });
            }
            this.make_receive_space();
            let to = this.received_to;
            let mut chunk = ReadBuf::new(&mut this.received[to..to + READ_CHUNK_BYTES]);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            let read = chunk.filled().len();
            if read == 0 {
                this.eof = true;
            } else {
                this.received_to += read;
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for NoiseStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.pending.len() >= FRAME_PLAINTEXT_MAX_BYTES {
            // A full frame waits: hand it to the socket before taking more.
            ready!(this.poll_write_sealed(cx))?;
            this.seal_pending()?;
        }
        let n = buf
            .len()
            .min(FRAME_PLAINTEXT_MAX_BYTES - this.pending.len());
        this.pending.extend_from_slice(&buf[..n]);
        if this.pending.len() >= FRAME_PLAINTEXT_MAX_BYTES && this.sealed.is_empty() {
            this.seal_pending()?;
        }
        // Push sealed bytes along when the socket takes them; never wait for it here.
        if let Poll::Ready(Err(e)) = this.poll_write_sealed(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_sealed(cx))?;
        this.seal_pending()?;
        ready!(this.poll_write_sealed(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.as_mut().poll_flush(cx))?;
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// A peer connection: bare TCP, or TCP under the cluster key.
#[derive(Debug)]
pub enum PeerStream {
    Plain(TcpStream),
    Sealed(Box<NoiseStream<TcpStream>>),
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            PeerStream::Sealed(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            PeerStream::Sealed(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_flush(cx),
            PeerStream::Sealed(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            PeerStream::Sealed(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// Secures an accepted connection: the handshake under `keys` (bounded by
/// [`HANDSHAKE_TIMEOUT`]), or the bare stream without keys. A failure is counted in
/// `ringkv_rejected_total{channel="peer"}`; the caller drops the connection.
pub(crate) async fn secure_accepted(
    stream: TcpStream,
    keys: Option<&ClusterKeys>,
) -> io::Result<PeerStream> {
    secure_accepted_within(stream, keys, HANDSHAKE_TIMEOUT).await
}

async fn secure_accepted_within(
    stream: TcpStream,
    keys: Option<&ClusterKeys>,
    limit: Duration,
) -> io::Result<PeerStream> {
    let Some(keys) = keys else {
        return Ok(PeerStream::Plain(stream));
    };
    match handshake_within(limit, accept(stream, keys)).await {
        Ok(sealed) => Ok(PeerStream::Sealed(Box::new(sealed))),
        Err(e) => {
            count_rejected();
            Err(e)
        }
    }
}

/// hyper's view of a [`PeerStream`].
#[derive(Debug)]
pub struct PeerIo(TokioIo<PeerStream>);

impl PeerIo {
    pub fn new(stream: PeerStream) -> Self {
        Self(TokioIo::new(stream))
    }
}

impl hyper::rt::Read for PeerIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        hyper::rt::Read::poll_read(Pin::new(&mut self.get_mut().0), cx, buf)
    }
}

impl hyper::rt::Write for PeerIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        hyper::rt::Write::poll_write(Pin::new(&mut self.get_mut().0), cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_flush(Pin::new(&mut self.get_mut().0), cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        hyper::rt::Write::poll_shutdown(Pin::new(&mut self.get_mut().0), cx)
    }
}

impl Connection for PeerIo {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

/// The peer client's connector: TCP (hyper-util's), then the handshake when the node
/// has a cluster key. A failed handshake is a failed connect.
#[derive(Debug, Clone)]
pub struct PeerConnector {
    tcp: HttpConnector,
    keys: Option<Arc<ClusterKeys>>,
}

impl PeerConnector {
    pub fn new(tcp: HttpConnector, keys: Option<Arc<ClusterKeys>>) -> Self {
        Self { tcp, keys }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl tower_service::Service<Uri> for PeerConnector {
    type Response = PeerIo;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<PeerIo, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        tower_service::Service::<Uri>::poll_ready(&mut self.tcp, cx).map_err(Into::into)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connecting = tower_service::Service::<Uri>::call(&mut self.tcp, uri);
        let keys = self.keys.clone();
        Box::pin(async move {
            let tcp = connecting.await?.into_inner();
            let Some(keys) = keys else {
                return Ok(PeerIo::new(PeerStream::Plain(tcp)));
            };
            let sealed = handshake_within(HANDSHAKE_TIMEOUT, connect(tcp, &keys)).await?;
            Ok(PeerIo::new(PeerStream::Sealed(Box::new(sealed))))
        })
    }
}

async fn handshake_within<T>(
    limit: Duration,
    handshake: impl Future<Output = io::Result<T>>,
) -> io::Result<T> {
    tokio::time::timeout(limit, handshake)
        .await
        .unwrap_or_else(|_| {
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the peer handshake did not finish in time",
            ))
        })
}

#[cfg(test)]
mod tests {
    use tokio::io::duplex;

    use super::*;

    fn keys(seeds: &[u8]) -> ClusterKeys {
        ClusterKeys::new(seeds.iter().map(|s| [*s; 32]).collect()).unwrap()
    }

    async fn pair(
        a: &[u8],
        b: &[u8],
    ) -> (
        io::Result<NoiseStream<tokio::io::DuplexStream>>,
        io::Result<NoiseStream<tokio::io::DuplexStream>>,
    ) {
        let (client, server) = duplex(1 << 20);
        let (ka, kb) = (keys(a), keys(b));
        tokio::join!(connect(client, &ka), accept(server, &kb))
    }

    #[tokio::test]
    async fn bytes_cross_sealed_in_both_directions_in_any_chunking() {
        // What one side writes (many small writes, one large write past a frame) the
        // other reads back exactly, and nothing of it is in the clear on the wire.
        let (client, server) = pair(&[1], &[1]).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = async {
            for chunk in big.chunks(777) {
                client.write_all(chunk).await.unwrap();
            }
            client.flush().await.unwrap();
            client.write_all(&big).await.unwrap();
            client.shutdown().await.unwrap();
            client
        };
        let reader = async {
            let mut got = Vec::new();
            server.read_to_end(&mut got).await.unwrap();
            got
        };
        let (_, got) = tokio::join!(writer, reader);
        assert_eq!(got.len(), 2 * big.len());
        assert_eq!(&got[..big.len()], &big[..]);
        assert_eq!(&got[big.len()..], &big[..]);
    }

    #[tokio::test]
    async fn many_small_frames_read_back_in_order_across_buffer_refills() {
        // Thousands of flushed (so separately sealed) small writes arrive many frames
        // per socket read and frames cut across reads; the reader gets every byte in
        // order, whatever the size of its own reads.
        let (client, server) = pair(&[1], &[1]).await;
        let (mut client, mut server) = (client.unwrap(), server.unwrap());
        let messages: Vec<Vec<u8>> = (0..3000u32)
            .map(|i| (0..(i % 700 + 1)).map(|j| (i + j) as u8).collect())
            .collect();
        let expected: Vec<u8> = messages.concat();
        let writer = async {
            for message in &messages {
                client.write_all(message).await.unwrap();
                client.flush().await.unwrap();
            }
            client.shutdown().await.unwrap();
            client
        };
        let reader = async {
            let mut got = Vec::new();
            let mut buf = [0u8; 333];
            loop {
                let n = server.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
            }
        };
        let (_, got) = tokio::join!(writer, reader);
        assert_eq!(got.len(), expected.len());
        assert!(got == expected, "the bytes came back changed or reordered");
    }

    #[tokio::test]
    async fn a_stranger_is_refused_by_the_listener() {
        // Another key fails the listener's handshake; so do a plain HTTP/2 preface and
        // a stream that ends early.
        let (_, server) = pair(&[2], &[1]).await;
        assert_eq!(server.unwrap_err().kind(), io::ErrorKind::InvalidData);
        let ring = keys(&[1]);
        let (mut stranger, server) = duplex(1024);
        stranger
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        assert_eq!(
            accept(server, &ring).await.unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        let (mut stranger, server) = duplex(1024);
        stranger.write_all(&[0, 48, 1, 2, 3]).await.unwrap();
        drop(stranger);
        assert_eq!(
            accept(server, &ring).await.unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[tokio::test]
    async fn a_frame_changed_on_the_wire_breaks_the_stream() {
        // A bit flipped between the two ends is an error to the reader, not data.
        let (client_end, mut wire_in) = duplex(1 << 16);
        let (mut wire_out, server_end) = duplex(1 << 16);
        let ring = keys(&[1]);
        let relay = async {
            // The handshake passes untouched; the first data frame gets one bit flipped.
            let mut buf = vec![0u8; 50];
            wire_in.read_exact(&mut buf).await.unwrap();
            wire_out.write_all(&buf).await.unwrap();
            let mut answer = vec![0u8; 50];
            wire_out.read_exact(&mut answer).await.unwrap();
            wire_in.write_all(&answer).await.unwrap();
            let mut frame = vec![0u8; 2 + 5 + 16];
            wire_in.read_exact(&mut frame).await.unwrap();
            frame[4] ^= 1;
            wire_out.write_all(&frame).await.unwrap();
            (wire_in, wire_out)
        };
        let client = async {
            let mut c = connect(client_end, &ring).await.unwrap();
            c.write_all(b"hello").await.unwrap();
            c.flush().await.unwrap();
            c
        };
        let server = async {
            let mut s = accept(server_end, &ring).await.unwrap();
            let mut buf = [0u8; 5];
            s.read_exact(&mut buf).await.map(|_| buf)
        };
        let (_, _, read) = tokio::join!(relay, client, server);
        assert_eq!(read.unwrap_err().kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_silent_connection_is_cut_at_the_handshake_timeout() {
        // A client that connects and sends nothing is dropped when the handshake's
        // time is up, never held.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = TcpStream::connect(addr).await.unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        let ring = keys(&[1]);
        let err = secure_accepted_within(stream, Some(&ring), Duration::from_millis(100))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }
}
