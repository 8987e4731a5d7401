//! Newline-delimited JSON framing for the WebTransport control stream.

use bytes::{Bytes, BytesMut};

/// A line longer than the decoder's limit arrived (or is arriving): the
/// connection must be closed with 1009 without reading further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("line longer than {limit} bytes")]
pub struct LineTooLong {
    /// The limit that was exceeded.
    pub limit: usize,
}

/// Splits a byte stream into lines without ever buffering more than
/// `max_line` bytes of an unfinished line.
///
/// ```
/// use pantheon_protocol::ndjson::LineDecoder;
/// let mut d = LineDecoder::new(64);
/// d.extend(b"{\"type\":\"ping\"}\n{\"ty");
/// assert_eq!(&d.next_line().unwrap().unwrap()[..], b"{\"type\":\"ping\"}");
/// assert_eq!(d.next_line().unwrap(), None);
/// ```
#[derive(Debug)]
pub struct LineDecoder {
    buf: BytesMut,
    max_line: usize,
    /// Bytes at the front of `buf` already known to hold no `\n`.
    scanned: usize,
}

impl LineDecoder {
    /// A decoder that refuses lines over `max_line` bytes (without the `\n`;
    /// a `\r` before it counts).
    pub fn new(max_line: usize) -> Self {
        Self {
            buf: BytesMut::new(),
            max_line,
            scanned: 0,
        }
    }

    /// Appends bytes read from the stream.
    pub fn extend(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// Bytes buffered and not yet returned.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// How many more bytes may be read before the limit is certainly hit;
    /// a reader uses it to never pull more than that from the transport.
    pub fn room_left(&self) -> usize {
        (self.max_line + 1).saturating_sub(self.buf.len())
    }

    /// The next complete line, without its `\n` (and `\r`). Empty lines are
    /// skipped: they may serve as keepalives.
    pub fn next_line(&mut self) -> Result<Option<Bytes>, LineTooLong> {
        loop {
            let Some(pos) = self.buf[self.scanned..].iter().position(|&b| b == b'\n') else {
                self.scanned = self.buf.len();
                if self.buf.len() > self.max_line {
                    return Err(LineTooLong {
                        limit: self.max_line,
                    });
                }
                return Ok(None);
            };
            let end = self.scanned + pos;
            self.scanned = 0;
            let mut line = self.buf.split_to(end + 1);
            line.truncate(end);
            // The limit counts a trailing `\r` like an unfinished line does,
            // so a line is refused or not however the reads split it.
            if line.len() > self.max_line {
                return Err(LineTooLong {
                    limit: self.max_line,
                });
            }
            if line.last() == Some(&b'\r') {
                line.truncate(line.len() - 1);
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Ok(Some(line.freeze()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_across_reads() {
        let mut d = LineDecoder::new(16);
        d.extend(b"ab");
        assert_eq!(d.next_line(), Ok(None));
        d.extend(b"c\r\n\n  \nde");
        assert_eq!(d.next_line().unwrap().as_deref(), Some(&b"abc"[..]));
        assert_eq!(d.next_line(), Ok(None));
        d.extend(b"f\n");
        assert_eq!(d.next_line().unwrap().as_deref(), Some(&b"def"[..]));
        assert_eq!(d.buffered(), 0);
    }

    #[test]
    fn refuses_long_lines_before_they_end() {
        let mut d = LineDecoder::new(4);
        d.extend(b"1234");
        assert_eq!(d.next_line(), Ok(None));
        assert_eq!(d.room_left(), 1);
        d.extend(b"5");
        assert_eq!(d.next_line(), Err(LineTooLong { limit: 4 }));

        let mut d = LineDecoder::new(4);
        d.extend(b"12345\n");
        assert_eq!(d.next_line(), Err(LineTooLong { limit: 4 }));
    }
}
