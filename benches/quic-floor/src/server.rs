//! The relay: what the gateway does for a signal, and nothing else. A
//! sender's message is acked to the sender and forwarded, through an mpsc,
//! to the writer of its pair's receiver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, BufReader};
use tokio::sync::mpsc;

use crate::stack::{self, Conn};
use crate::{ServerArgs, Stack};

pub(crate) const ACK_BYTES: usize = 40;
/// Written once after the header, when the server has set the connection up.
pub(crate) const READY: u8 = 0x2a;
/// Messages waiting for one receiver's writer.
pub(crate) const QUEUE: usize = 4096;

/// Receivers waiting for their sender, by pair id.
pub(crate) type Pending = Arc<Mutex<HashMap<u32, mpsc::Sender<Bytes>>>>;

pub(crate) async fn run(args: ServerArgs) -> anyhow::Result<()> {
    let pending: Pending = Arc::default();
    eprintln!(
        "quic-floor server: {} on 127.0.0.1:{}",
        args.stack.name(),
        args.port
    );
    if args.stack == Stack::Quiche {
        let addr = ([127, 0, 0, 1], args.port).into();
        return crate::quiche_server::serve(addr, args.size, pending).await;
    }
    let mut conns = stack::listen(args.stack, args.port).await?;
    while let Some(conn) = conns.recv().await {
        let pending = pending.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(conn, pending, args.size).await {
                eprintln!("connection: {e:#}");
            }
        });
    }
    Ok(())
}

async fn serve(conn: Conn, pending: Pending, size: usize) -> anyhow::Result<()> {
    let Conn {
        reader,
        mut writer,
        _keep,
    } = conn;
    let mut reader = BufReader::with_capacity(64 * 1024, reader);
    let mut header = [0u8; 8];
    reader.read_exact(&mut header).await?;
    let pair = u32::from_le_bytes(header[..4].try_into()?);
    let role = u32::from_le_bytes(header[4..].try_into()?);
    let mut batch = vec![Bytes::from_static(&[READY])];
    match role {
        // Receiver: register, then write whatever its sender relays.
        1 => {
            let (tx, mut rx) = mpsc::channel::<Bytes>(QUEUE);
            pending.lock().expect("not poisoned").insert(pair, tx);
            writer.send(&mut batch).await?;
            while let Some(m) = rx.recv().await {
                batch.push(m);
                while batch.len() < 64 {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
                writer.send(&mut batch).await?;
            }
            Ok(())
        }
        // Sender: ack every message, forward it to the receiver.
        0 => {
            let peer = pending.lock().expect("not poisoned").remove(&pair);
            let Some(peer) = peer else {
                anyhow::bail!("pair {pair}: sender before its receiver");
            };
            writer.send(&mut batch).await?;
            loop {
                let mut m = BytesMut::zeroed(size);
                match reader.read_exact(&mut m).await {
                    Ok(_) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e.into()),
                }
                let mut ack = BytesMut::zeroed(ACK_BYTES);
                ack[..8].copy_from_slice(&m[..8]);
                batch.push(ack.freeze());
                peer.send(m.freeze()).await?;
                // Acks for messages already read together go out in one write.
                if reader.buffer().len() < size {
                    writer.send(&mut batch).await?;
                }
            }
        }
        _ => anyhow::bail!("pair {pair}: unknown role {role}"),
    }
}
