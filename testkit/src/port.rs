//! Free loopback ports.
//!
//! The kernel picks a port that is free now; it may be taken again before
//! the caller binds it, so the callers that start servers retry on "address
//! in use".

use std::net::{Ipv4Addr, TcpListener, UdpSocket};

/// A TCP port on 127.0.0.1 that was free a moment ago.
pub fn free_tcp_port() -> u16 {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .expect("binding 127.0.0.1:0")
        .port()
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|s| s.local_addr())
        .expect("binding 127.0.0.1:0/udp")
        .port()
}

/// `n` distinct TCP ports on 127.0.0.1 that were free a moment ago, for
/// servers that need several at once (cluster nodes and their bus ports).
pub fn free_tcp_ports(n: usize) -> Vec<u16> {
    // Hold every listener until all are chosen so none repeats.
    let held: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("binding 127.0.0.1:0"))
        .collect();
    held.iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}
