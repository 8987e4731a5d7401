//! Feeds arbitrary bytes to both decoders, as one frame and as an NDJSON
//! stream cut into chunks, and checks what must hold for any input:
//!
//! - no panic (and, under the sanitizer, no memory error in dependencies);
//! - a rejection is always `bad_request` and only echoes a valid `id`;
//! - an accepted message re-encodes to itself (server ones through `with_seq`);
//! - `LineDecoder` never buffers more than its limit between reads, and yields
//!   the same lines (and the same refusal) however the stream is chunked.

#![no_main]

use libfuzzer_sys::fuzz_target;
use pantheon_protocol::{
    ErrorCode, LineDecoder, MAX_ID, decode_client, decode_server, encode_client, encode_server,
    with_seq,
};

fuzz_target!(|data: &[u8]| {
    check_message(data);

    // The first two bytes pick the line limit and the read size; the rest is
    // the stream.
    let [limit, chunk, stream @ ..] = data else {
        return;
    };
    let max_line = usize::from(*limit) * 4;
    let chunk = usize::from(*chunk).max(1);
    let whole = lines(stream, max_line, stream.len().max(1));
    let chunked = lines(stream, max_line, chunk);
    assert_eq!(whole, chunked, "chunks of {chunk}, limit {max_line}");
    for line in &whole.0 {
        check_message(line);
    }
});

/// Every line the decoder yields, and whether it refused one.
fn lines(stream: &[u8], max_line: usize, chunk: usize) -> (Vec<Vec<u8>>, bool) {
    let mut decoder = LineDecoder::new(max_line);
    let mut out = Vec::new();
    for piece in stream.chunks(chunk) {
        assert!(decoder.buffered() <= max_line);
        decoder.extend(piece);
        loop {
            match decoder.next_line() {
                Ok(Some(line)) => {
                    assert!(!line.contains(&b'\n'));
                    assert!(line.len() <= max_line);
                    out.push(line.to_vec());
                }
                Ok(None) => break,
                Err(e) => {
                    assert_eq!(e.limit, max_line);
                    return (out, true);
                }
            }
        }
    }
    (out, false)
}

fn check_message(bytes: &[u8]) {
    match decode_client(bytes) {
        Ok(msg) => {
            let again = encode_client(&msg);
            assert_eq!(decode_client(again.as_bytes()), Ok(msg), "{again}");
        }
        Err(rejection) => {
            assert_eq!(rejection.error.code(), ErrorCode::BadRequest);
            assert!(rejection.id.is_none_or(|id| id <= MAX_ID));
        }
    }
    if let Ok(received) = decode_server(bytes) {
        let body = encode_server(&received.message);
        let wire = match received.seq {
            Some(seq) => with_seq(&body, seq),
            None => body,
        };
        assert_eq!(decode_server(&wire), Ok(received));
    }
}
