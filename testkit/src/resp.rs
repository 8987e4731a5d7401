//! A small RESP2 client: enough for the tests to ask Redis things
//! themselves (`PING`, `AUTH`, `CLUSTER INFO`, `SCAN`, `PTTL`), over TCP or
//! TLS. Not a general client: one request at a time, no redirections.

use rustls::pki_types::ServerName;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// `+OK`
    Simple(String),
    /// `-ERR ...`
    Error(String),
    /// `:42`
    Int(i64),
    /// `$n` bulk string; `None` for `$-1`.
    Bulk(Option<Vec<u8>>),
    /// `*n` array; `None` for `*-1`.
    Array(Option<Vec<Value>>),
}

impl Value {
    /// The value as text: simple and bulk strings (lossy), integers.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Simple(s) => Some(s.clone()),
            Self::Bulk(Some(b)) => Some(String::from_utf8_lossy(b).into_owned()),
            Self::Int(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// The integer of `:n`.
    pub fn int(&self) -> Option<i64> {
        match self {
            Self::Int(n) => Some(*n),
            _ => None,
        }
    }

    /// The elements of an array.
    pub fn items(&self) -> &[Value] {
        match self {
            Self::Array(Some(v)) => v,
            _ => &[],
        }
    }
}

/// Why a command failed (not a Redis error reply, which is a [`Value`]).
#[derive(Debug)]
pub enum Error {
    /// Connecting, TLS, reading or writing failed.
    Io(std::io::Error),
    /// The reply was not RESP.
    Protocol(String),
    /// No reply within the time limit.
    Timeout,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "I/O: {e}"),
            Self::Protocol(m) => write!(f, "not RESP: {m}"),
            Self::Timeout => write!(f, "timed out"),
        }
    }
}

impl std::error::Error for Error {}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Self::Io(e)
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One connection.
pub struct Conn {
    io: BufReader<Box<dyn Stream>>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn").finish_non_exhaustive()
    }
}

/// Every operation is bounded by this.
const LIMIT: Duration = Duration::from_secs(5);

impl Conn {
    /// A plain TCP connection.
    pub async fn connect(addr: SocketAddr) -> Result<Self, Error> {
        let tcp = bounded(TcpStream::connect(addr)).await??;
        tcp.set_nodelay(true)?;
        Ok(Self::over(Box::new(tcp)))
    }

    /// A TLS connection verified against `config`'s roots, for the name
    /// `127.0.0.1`.
    pub async fn connect_tls(
        addr: SocketAddr,
        config: Arc<rustls::ClientConfig>,
    ) -> Result<Self, Error> {
        let tcp = bounded(TcpStream::connect(addr)).await??;
        tcp.set_nodelay(true)?;
        let name = ServerName::IpAddress(addr.ip().into());
        let tls = bounded(tokio_rustls::TlsConnector::from(config).connect(name, tcp)).await??;
        Ok(Self::over(Box::new(tls)))
    }

    fn over(io: Box<dyn Stream>) -> Self {
        Self {
            io: BufReader::new(io),
        }
    }

    /// Sends one command and reads its reply.
    pub async fn cmd<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Result<Value, Error> {
        let mut req = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            let a = a.as_ref();
            req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            req.extend_from_slice(a);
            req.extend_from_slice(b"\r\n");
        }
        bounded(async {
            self.io.get_mut().write_all(&req).await?;
            self.io.get_mut().flush().await?;
            read_value(&mut self.io).await
        })
        .await?
    }

    /// `cmd`, with an error reply turned into a panic: for test set-up.
    pub async fn must<S: AsRef<[u8]>>(&mut self, args: &[S]) -> Value {
        let shown: Vec<String> = args
            .iter()
            .map(|a| String::from_utf8_lossy(a.as_ref()).into_owned())
            .collect();
        match self.cmd(args).await {
            Ok(Value::Error(e)) => panic!("redis {shown:?}: {e}"),
            Ok(v) => v,
            Err(e) => panic!("redis {shown:?}: {e}"),
        }
    }

    /// Every key matching `pattern`, by `SCAN` (on this node only).
    pub async fn scan(&mut self, pattern: &str) -> Result<Vec<String>, Error> {
        let mut cursor = "0".to_owned();
        let mut keys = Vec::new();
        loop {
            let reply = self
                .cmd(&["SCAN", &cursor, "MATCH", pattern, "COUNT", "1000"])
                .await?;
            let items = reply.items();
            let (Some(next), Some(batch)) = (items.first().and_then(Value::text), items.get(1))
            else {
                return Err(Error::Protocol(format!("SCAN reply {reply:?}")));
            };
            keys.extend(batch.items().iter().filter_map(Value::text));
            if next == "0" {
                return Ok(keys);
            }
            cursor = next;
        }
    }

    /// The keys matching `pattern` that have no expiry (`PTTL` -1), with
    /// their type.
    pub async fn keys_without_ttl(&mut self, pattern: &str) -> Result<Vec<String>, Error> {
        let mut out = Vec::new();
        for key in self.scan(pattern).await? {
            // -2: gone since the scan saw it.
            if self.cmd(&["PTTL", &key]).await?.int() == Some(-1) {
                let kind = self.cmd(&["TYPE", &key]).await?.text().unwrap_or_default();
                out.push(format!("{key} ({kind})"));
            }
        }
        Ok(out)
    }
}

async fn bounded<T>(fut: impl Future<Output = T>) -> Result<T, Error> {
    tokio::time::timeout(LIMIT, fut)
        .await
        .map_err(|_| Error::Timeout)
}

async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Result<String, Error> {
    let mut line = String::new();
    if r.read_line(&mut line).await? == 0 {
        return Err(Error::Io(std::io::ErrorKind::UnexpectedEof.into()));
    }
    if !line.ends_with("\r\n") {
        return Err(Error::Protocol(format!("unterminated line {line:?}")));
    }
    line.truncate(line.len() - 2);
    Ok(line)
}

fn read_value<'a, R: AsyncBufReadExt + Unpin + Send>(
    r: &'a mut R,
) -> std::pin::Pin<Box<dyn Future<Output = Result<Value, Error>> + Send + 'a>> {
    Box::pin(async move {
        let line = read_line(r).await?;
        let (kind, rest) = line.split_at(line.len().min(1));
        let num = || {
            rest.parse::<i64>()
                .map_err(|_| Error::Protocol(format!("bad length in {line:?}")))
        };
        Ok(match kind {
            "+" => Value::Simple(rest.to_owned()),
            "-" => Value::Error(rest.to_owned()),
            ":" => Value::Int(num()?),
            "$" => {
                let n = num()?;
                if n < 0 {
                    Value::Bulk(None)
                } else {
                    let mut buf = vec![0; n as usize + 2];
                    r.read_exact(&mut buf).await?;
                    buf.truncate(n as usize);
                    Value::Bulk(Some(buf))
                }
            }
            "*" => {
                let n = num()?;
                if n < 0 {
                    Value::Array(None)
                } else {
                    let mut items = Vec::with_capacity((n as usize).min(1024));
                    for _ in 0..n {
                        items.push(read_value(r).await?);
                    }
                    Value::Array(Some(items))
                }
            }
            _ => return Err(Error::Protocol(format!("unknown reply {line:?}"))),
        })
    })
}
