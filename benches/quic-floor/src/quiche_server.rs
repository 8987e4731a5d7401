//! The relay on Cloudflare's quiche through tokio-quiche. tokio-quiche runs
//! each connection in its own worker task and hands the application the raw
//! `quiche::Connection` (no stream objects), so the relay is written against
//! its `ApplicationOverQuic` hooks: read the stream in `process_reads`,
//! queue acks and relayed messages, write them in `process_writes`.
//! A sender's messages reach its receiver's worker through the same mpsc as
//! on the other stacks.

use std::net::SocketAddr;

use bytes::Bytes;
use futures_util::StreamExt as _;
use tokio::sync::mpsc;
use tokio_quiche::metrics::DefaultMetrics;
use tokio_quiche::quic::{HandshakeInfo, QuicheConnection};
use tokio_quiche::settings::{CertificateKind, Hooks, QuicSettings, TlsCertificatePaths};
use tokio_quiche::{ApplicationOverQuic, ConnectionParams, QuicResult, quiche};

use crate::server::{ACK_BYTES, Pending, QUEUE, READY};

enum Role {
    /// The 8-byte header has not arrived yet.
    Unknown,
    Sender(mpsc::Sender<Bytes>),
    Receiver(mpsc::Receiver<Bytes>),
    /// The receiver's sender went away.
    Done,
}

struct Relay {
    size: usize,
    pending: Pending,
    role: Role,
    /// The client's one bidirectional stream.
    stream: Option<u64>,
    scratch: Vec<u8>,
    /// Bytes read and not yet a whole header or message.
    input: Vec<u8>,
    /// Bytes to write on the stream, from `written` on.
    output: Vec<u8>,
    written: usize,
}

impl Relay {
    fn parse(&mut self) -> QuicResult<()> {
        let mut used = 0;
        if matches!(self.role, Role::Unknown) && self.input.len() >= 8 {
            let pair = u32::from_le_bytes(self.input[..4].try_into()?);
            let role = u32::from_le_bytes(self.input[4..8].try_into()?);
            used = 8;
            self.role = match role {
                1 => {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    self.pending.lock().expect("not poisoned").insert(pair, tx);
                    Role::Receiver(rx)
                }
                0 => match self.pending.lock().expect("not poisoned").remove(&pair) {
                    Some(peer) => Role::Sender(peer),
                    None => return Err(format!("pair {pair}: sender before its receiver").into()),
                },
                _ => return Err(format!("pair {pair}: unknown role {role}").into()),
            };
            self.output.push(READY);
        }
        if let Role::Sender(peer) = &self.role {
            while self.input.len() - used >= self.size {
                let m = &self.input[used..used + self.size];
                let mut ack = [0u8; ACK_BYTES];
                ack[..8].copy_from_slice(&m[..8]);
                self.output.extend_from_slice(&ack);
                // process_reads cannot wait: a full queue (never at this
                // load) ends the connection.
                peer.try_send(Bytes::copy_from_slice(m))?;
                used += self.size;
            }
        }
        self.input.drain(..used);
        Ok(())
    }
}

impl ApplicationOverQuic for Relay {
    fn on_conn_established(
        &mut self,
        _qconn: &mut QuicheConnection,
        _handshake_info: &HandshakeInfo,
    ) -> QuicResult<()> {
        Ok(())
    }

    fn should_act(&self) -> bool {
        true
    }

    async fn wait_for_data(&mut self, _qconn: &mut QuicheConnection) -> QuicResult<()> {
        match &mut self.role {
            // Cancel safe: a message is moved to `output` as soon as it is
            // taken from the queue.
            Role::Receiver(rx) => match rx.recv().await {
                Some(m) => {
                    self.output.extend_from_slice(&m);
                    while let Ok(m) = rx.try_recv() {
                        self.output.extend_from_slice(&m);
                    }
                }
                None => self.role = Role::Done,
            },
            _ => std::future::pending().await,
        }
        Ok(())
    }

    fn process_reads(&mut self, qconn: &mut QuicheConnection) -> QuicResult<()> {
        let readable: Vec<u64> = qconn.readable().collect();
        for id in readable {
            self.stream = Some(id);
            loop {
                match qconn.stream_recv(id, &mut self.scratch) {
                    Ok((n, _fin)) => self.input.extend_from_slice(&self.scratch[..n]),
                    Err(quiche::Error::Done) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
        self.parse()
    }

    fn process_writes(&mut self, qconn: &mut QuicheConnection) -> QuicResult<()> {
        let Some(id) = self.stream else {
            return Ok(());
        };
        if self.written < self.output.len() {
            match qconn.stream_send(id, &self.output[self.written..], false) {
                Ok(n) => self.written += n,
                Err(quiche::Error::Done) => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.written == self.output.len() {
            self.output.clear();
            self.written = 0;
        }
        Ok(())
    }
}

/// Serves the relay on `addr` until the process ends.
pub(crate) async fn serve(addr: SocketAddr, size: usize, pending: Pending) -> anyhow::Result<()> {
    // tokio-quiche loads the certificate from files.
    let (cert, key) = crate::stack::self_signed()?;
    let dir = std::env::temp_dir().join(format!("quic-floor-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (cert_path, key_path) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert_path, cert.pem())?;
    std::fs::write(&key_path, key.serialize_pem())?;

    let mut settings = QuicSettings::default();
    settings.alpn = vec![crate::stack::ALPN.to_vec()];
    let socket = tokio::net::UdpSocket::from_std(crate::stack::udp_socket(addr)?)?;
    let params = ConnectionParams::new_server(
        settings,
        TlsCertificatePaths {
            cert: cert_path.to_str().expect("utf-8 temp dir"),
            private_key: key_path.to_str().expect("utf-8 temp dir"),
            kind: CertificateKind::X509,
        },
        Hooks::default(),
    );
    let mut listeners = tokio_quiche::listen([socket], params, DefaultMetrics)?;
    let mut accepted = listeners.remove(0);
    while let Some(conn) = accepted.next().await {
        match conn {
            Ok(conn) => {
                conn.start(Relay {
                    size,
                    pending: pending.clone(),
                    role: Role::Unknown,
                    stream: None,
                    scratch: vec![0; 64 * 1024],
                    input: Vec::new(),
                    output: Vec::new(),
                    written: 0,
                });
            }
            Err(e) => eprintln!("quiche accept: {e}"),
        }
    }
    Ok(())
}
