//! Micro-benchmarks of the protocol codecs on the hot path of a relay:
//! decoding what clients send, encoding what the gateway relays, giving it a
//! per-recipient `seq`, and splitting the WebTransport NDJSON stream.
//!
//! `cargo bench -p pantheon-benches --bench codec`

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use pantheon_protocol::{
    LineDecoder, PeerId, Request, RoomName, ServerMessage, decode_client, encode_server, with_seq,
};
use std::hint::black_box;

/// A typical Chrome audio+video offer, about 1.5 KB of SDP.
const SDP_OFFER: &str = "v=0\r\n\
o=- 4611731400430051336 2 IN IP4 127.0.0.1\r\n\
s=-\r\n\
t=0 0\r\n\
a=group:BUNDLE 0 1\r\n\
a=extmap-allow-mixed\r\n\
a=msid-semantic: WMS 1f9a3c2e-7d4b-4c8e-9a51-2b6f0e3d8c71\r\n\
m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0 8 13 110 126\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zp3X\r\n\
a=ice-pwd:9kQm2rTfLw8vYh1sXcBn4aJd\r\n\
a=ice-options:trickle\r\n\
a=fingerprint:sha-256 4F:2A:9C:11:7E:D0:3B:85:C6:19:E2:5F:A8:70:DB:34:0E:9D:62:B7:F1:28:C4:5A:83:1E:6D:F9:27:BC:40:93\r\n\
a=setup:actpass\r\n\
a=mid:0\r\n\
a=extmap:1 urn:ietf:params:rtp-hdrext:ssrc-audio-level\r\n\
a=extmap:2 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time\r\n\
a=extmap:3 http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01\r\n\
a=sendrecv\r\n\
a=msid:1f9a3c2e-7d4b-4c8e-9a51-2b6f0e3d8c71 a7c4e1d2-5b3f-4e60-8d9a-0c2b7f1e6a35\r\n\
a=rtcp-mux\r\n\
a=rtpmap:111 opus/48000/2\r\n\
a=rtcp-fb:111 transport-cc\r\n\
a=fmtp:111 minptime=10;useinbandfec=1\r\n\
a=rtpmap:63 red/48000/2\r\n\
a=fmtp:63 111/111\r\n\
a=ssrc:3735928559 cname:q8Jd2LmXv0sTzR4w\r\n\
m=video 9 UDP/TLS/RTP/SAVPF 96 97 98 99\r\n\
c=IN IP4 0.0.0.0\r\n\
a=rtcp:9 IN IP4 0.0.0.0\r\n\
a=ice-ufrag:Zp3X\r\n\
a=ice-pwd:9kQm2rTfLw8vYh1sXcBn4aJd\r\n\
a=ice-options:trickle\r\n\
a=setup:actpass\r\n\
a=mid:1\r\n\
a=sendrecv\r\n\
a=rtcp-mux\r\n\
a=rtcp-rsize\r\n\
a=rtpmap:96 VP8/90000\r\n\
a=rtcp-fb:96 goog-remb\r\n\
a=rtcp-fb:96 transport-cc\r\n\
a=rtcp-fb:96 ccm fir\r\n\
a=rtcp-fb:96 nack\r\n\
a=rtcp-fb:96 nack pli\r\n\
a=rtpmap:97 rtx/90000\r\n\
a=fmtp:97 apt=96\r\n\
a=rtpmap:98 VP9/90000\r\n\
a=fmtp:98 profile-id=0\r\n\
a=ssrc-group:FID 2882400001 2882400002\r\n\
a=ssrc:2882400001 cname:q8Jd2LmXv0sTzR4w\r\n\
a=ssrc:2882400002 cname:q8Jd2LmXv0sTzR4w\r\n";

/// JSON-escapes SDP text (only `\r` and `\n` need it here).
fn escape(s: &str) -> String {
    s.replace('\r', "\\r").replace('\n', "\\n")
}

fn offer_request() -> String {
    format!(
        r#"{{"type":"signal","id":1842,"room":"team-42:standup","to":"p_9b1e6c04d2a87f3e5c10","data":{{"type":"offer","sdp":"{}"}}}}"#,
        escape(SDP_OFFER)
    )
}

const ICE_REQUEST: &str = r#"{"type":"signal","id":1843,"room":"team-42:standup","to":"p_9b1e6c04d2a87f3e5c10","data":{"candidate":"candidate:842163049 1 udp 1677729535 203.0.113.7 61764 typ srflx raddr 192.168.1.20 rport 61764 generation 0 ufrag Zp3X network-cost 999","sdpMid":"0","sdpMLineIndex":0,"usernameFragment":"Zp3X"}}"#;

/// A join whose meta has to be parsed, checked and re-serialized compact.
const JOIN_REQUEST: &str = r#"{ "type": "join", "id": 7, "room": "team-42:standup.video~main",
  "meta": {
    "name": "Ada Lovelace", "user": "u_5f2c9e", "clientType": "desktop",
    "avatar": "https://cdn.example.org/avatars/u_5f2c9e.png?size=128&v=3",
    "models": ["whisper-small", "llama-3.2-3b-instruct-q4", "nomic-embed-text"],
    "batteryState": { "level": 0.83, "charging": false },
    "capabilities": { "audio": true, "video": true, "screen": false, "codecs": ["opus", "VP8", "VP9", "H264"] },
    "joinedAt": 1767225600123, "locale": "en-GB", "tz": "Europe/London"
  } }"#;

fn decode(c: &mut Criterion) {
    let offer = offer_request();
    let mut g = c.benchmark_group("decode_client");
    for (name, text) in [
        ("signal_sdp_offer", offer.as_str()),
        ("signal_ice_candidate", ICE_REQUEST),
        ("join_with_meta", JOIN_REQUEST),
    ] {
        assert!(decode_client(text.as_bytes()).is_ok(), "{name} decodes");
        g.throughput(Throughput::Bytes(text.len() as u64));
        g.bench_function(format!("{name} ({} B)", text.len()), |b| {
            b.iter(|| decode_client(black_box(text.as_bytes())))
        });
    }
    g.finish();
}

/// The signal the gateway relays for the offer above.
fn relayed_offer() -> ServerMessage {
    let Request::Signal { room, data, .. } = decode_client(offer_request().as_bytes())
        .expect("offer decodes")
        .request
    else {
        unreachable!("the offer is a signal")
    };
    ServerMessage::Signal {
        room,
        from: PeerId::new("p_6f1c2e0a9d3b47c815e2").expect("valid peer"),
        data,
    }
}

fn encode(c: &mut Criterion) {
    let signal = relayed_offer();
    let body = encode_server(&signal);
    let left = ServerMessage::PeerLeft {
        room: RoomName::new("team-42:standup").expect("valid room"),
        peer: PeerId::new("p_6f1c2e0a9d3b47c815e2").expect("valid peer"),
        reason: pantheon_protocol::LeaveReason::Disconnected,
    };

    let mut g = c.benchmark_group("encode_server");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function(format!("signal_sdp_offer ({} B)", body.len()), |b| {
        b.iter(|| encode_server(black_box(&signal)))
    });
    let small = encode_server(&left);
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function(format!("peer_left ({} B)", small.len()), |b| {
        b.iter(|| encode_server(black_box(&left)))
    });
    g.finish();

    let mut g = c.benchmark_group("with_seq");
    g.throughput(Throughput::Bytes(body.len() as u64));
    g.bench_function(format!("signal_sdp_offer ({} B)", body.len()), |b| {
        b.iter(|| with_seq(black_box(&body), black_box(1_234_567)))
    });
    g.throughput(Throughput::Bytes(small.len() as u64));
    g.bench_function(format!("peer_left ({} B)", small.len()), |b| {
        b.iter(|| with_seq(black_box(&small), black_box(1_234_567)))
    });
    g.finish();
}

/// A WebTransport stream, one offer then three candidates, repeated to 1 MiB,
/// read in fixed-size chunks as a QUIC stream delivers them.
fn line_decoder(c: &mut Criterion) {
    let offer = offer_request();
    let mut stream = Vec::new();
    while stream.len() < 1 << 20 {
        stream.extend_from_slice(offer.as_bytes());
        stream.push(b'\n');
        for _ in 0..3 {
            stream.extend_from_slice(ICE_REQUEST.as_bytes());
            stream.push(b'\n');
        }
    }
    let expected_lines = stream.iter().filter(|&&b| b == b'\n').count();

    let mut g = c.benchmark_group("line_decoder");
    g.throughput(Throughput::Bytes(stream.len() as u64));
    for chunk in [1_200usize, 16 * 1024] {
        g.bench_function(format!("1MiB_in_{chunk}B_reads"), |b| {
            b.iter_batched_ref(
                || LineDecoder::new(4 * 65_536),
                |d| {
                    let mut lines = 0;
                    for piece in stream.chunks(chunk) {
                        d.extend(piece);
                        while let Some(line) = d.next_line().expect("lines fit") {
                            black_box(&line);
                            lines += 1;
                        }
                    }
                    assert_eq!(lines, expected_lines);
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, decode, encode, line_decoder);
criterion_main!(benches);
