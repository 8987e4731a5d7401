//! The PROXY protocol (HAProxy's, v1 text and v2 binary, parsed by the `ppp`
//! crate) in front of a TCP connection from a trusted proxy.
//!
//! The header is optional: a trusted proxy may send one, or speak HTTP
//! straight away (and name the client in `X-Forwarded-For`). The first bytes
//! decide. Whatever was read past the header is handed back in front of the
//! stream ([`Prefixed`]), so TLS or HTTP sees the connection as it was sent.

use bytes::{Buf, BytesMut};
use ppp::v1::Addresses as V1;
use ppp::v2::{Addresses as V2, Command};
use ppp::{HeaderResult, PartialResult};
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

const V1_PREFIX: &[u8] = b"PROXY ";
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// v1 is at most 107 bytes; v2 is 16 plus a 16-bit length, but addresses
/// and the few TLVs a load balancer adds fit well within this.
const MAX_HEADER: usize = 1024;

/// Why a connection's PROXY header was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The header is malformed.
    #[error("malformed PROXY protocol header")]
    Malformed,
    /// The header is longer than this gateway accepts.
    #[error("PROXY protocol header over {MAX_HEADER} bytes")]
    TooLong,
    /// The connection failed or ended inside the header.
    #[error("reading the PROXY protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Reads an optional PROXY header from `stream`. Returns the client address
/// it names (`None`: no header, or a `LOCAL`/`UNKNOWN` one, which the proxy
/// sends for its own health checks) and the stream with everything read past
/// the header put back in front.
pub async fn read<S>(mut stream: S) -> Result<(Option<IpAddr>, Prefixed<S>), Error>
where
    S: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(256);
    loop {
        let maybe = |sig: &[u8]| {
            let n = buf.len().min(sig.len());
            buf[..n] == sig[..n]
        };
        if !buf.is_empty() && !maybe(V1_PREFIX) && !maybe(V2_SIGNATURE) {
            return Ok((None, Prefixed::new(buf, stream)));
        }
        if buf.len() >= V1_PREFIX.len().min(V2_SIGNATURE.len()) {
            let parsed = HeaderResult::parse(&buf);
            if !parsed.is_incomplete() {
                let (client, len) = match parsed {
                    HeaderResult::V1(Ok(h)) => (v1_client(&h.addresses), h.header.len()),
                    HeaderResult::V2(Ok(h)) => (v2_client(&h), h.len()),
                    HeaderResult::V1(Err(_)) | HeaderResult::V2(Err(_)) => {
                        return Err(Error::Malformed);
                    }
                };
                buf.advance(len);
                return Ok((client, Prefixed::new(buf, stream)));
            }
        }
        if buf.len() >= MAX_HEADER {
            return Err(Error::TooLong);
        }
        if stream.read_buf(&mut buf).await? == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
    }
}

fn v1_client(a: &V1) -> Option<IpAddr> {
    match a {
        V1::Tcp4(a) => Some(a.source_address.into()),
        V1::Tcp6(a) => Some(a.source_address.into()),
        V1::Unknown => None,
    }
}

fn v2_client(h: &ppp::v2::Header<'_>) -> Option<IpAddr> {
    if h.command == Command::Local {
        return None;
    }
    match &h.addresses {
        V2::IPv4(a) => Some(a.source_address.into()),
        V2::IPv6(a) => Some(a.source_address.into()),
        V2::Unspecified | V2::Unix(_) => None,
    }
}

/// A stream with bytes already read from it put back in front.
#[derive(Debug)]
pub struct Prefixed<S> {
    prefix: BytesMut,
    inner: S,
}

impl<S> Prefixed<S> {
    /// `prefix`, then `inner`.
    pub fn new(prefix: BytesMut, inner: S) -> Self {
        Self { prefix, inner }
    }

    /// The stream underneath.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `input` `chunk` bytes at a time; returns the client and the
    /// rest of the stream.
    async fn run(input: &[u8], chunk: usize) -> Result<(Option<IpAddr>, Vec<u8>), Error> {
        let (mut tx, rx) = tokio::io::duplex(64);
        let input = input.to_vec();
        let writer = tokio::spawn(async move {
            use tokio::io::AsyncWriteExt;
            for piece in input.chunks(chunk.max(1)) {
                if tx.write_all(piece).await.is_err() {
                    return;
                }
            }
        });
        let (client, mut rest) = read(rx).await?;
        let mut out = Vec::new();
        rest.read_to_end(&mut out).await?;
        writer.await.unwrap();
        Ok((client, out))
    }

    fn v2(command: u8, family: u8, addrs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
        h.extend_from_slice(addrs);
        h
    }

    #[tokio::test]
    async fn v1_v2_or_nothing_in_any_chunking() {
        let http = b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut v1 = b"PROXY TCP4 203.0.113.7 10.0.0.1 56324 443\r\n".to_vec();
        v1.extend_from_slice(http);
        let mut v1_6 = b"PROXY TCP6 2001:db8::7 2001:db8::1 56324 443\r\n".to_vec();
        v1_6.extend_from_slice(http);
        let mut v2_4 = v2(
            1,
            0x11,
            &[198, 51, 100, 9, 10, 0, 0, 1, 0xdc, 0x04, 0x01, 0xbb],
        );
        v2_4.extend_from_slice(http);
        let mut v2_local = v2(0, 0x00, &[]);
        v2_local.extend_from_slice(http);
        let mut v1_unknown = b"PROXY UNKNOWN\r\n".to_vec();
        v1_unknown.extend_from_slice(http);
        let cases: [(&[u8], Option<&str>); 6] = [
            (&v1, Some("203.0.113.7")),
            (&v1_6, Some("2001:db8::7")),
            (&v2_4, Some("198.51.100.9")),
            (&v2_local, None),
            (&v1_unknown, None),
            (http, None),
        ];
        for (input, client) in cases {
            for chunk in [1, 3, 7, 64] {
                let (got, rest) = run(input, chunk).await.unwrap();
                assert_eq!(got, client.map(|c| c.parse().unwrap()), "chunk {chunk}");
                assert_eq!(rest, http, "chunk {chunk}");
            }
        }
    }

    #[tokio::test]
    async fn malformed_long_or_cut_headers_are_refused() {
        let bad_v1 = b"PROXY TCP4 not-an-address 10.0.0.1 1 2\r\nGET / HTTP/1.1\r\n\r\n";
        assert!(matches!(run(bad_v1, 5).await, Err(Error::Malformed)));
        let bad_v2 = v2(7, 0x11, &[0; 12]);
        assert!(matches!(run(&bad_v2, 5).await, Err(Error::Malformed)));
        let endless = [b"PROXY TCP4 ".as_slice(), &[b'1'; 2000]].concat();
        assert!(run(&endless, 100).await.is_err());
        let huge = v2(1, 0x11, &[0; 4000]);
        assert!(matches!(run(&huge, 100).await, Err(Error::TooLong)));
        assert!(matches!(run(b"PROXY TCP4 1.2", 3).await, Err(Error::Io(_))));
    }
}
