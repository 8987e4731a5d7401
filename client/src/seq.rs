//! `seq` tracking (PROTOCOL.md §2): every server message after `welcome`
//! carries the next `seq`, without gap or repeat, continuing from the
//! client's `last_seq` after a resume.

use std::fmt;

/// What was wrong with a message's `seq`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeqError {
    /// A message after `welcome` carried no `seq`.
    Missing,
    /// `welcome` carried a `seq`.
    OnWelcome(u64),
    /// Messages were skipped: `got` is above `expected`.
    Gap {
        /// The `seq` that should have come.
        expected: u64,
        /// The `seq` that came.
        got: u64,
    },
    /// A `seq` at or below one already seen.
    Repeat {
        /// The `seq` that should have come.
        expected: u64,
        /// The `seq` that came.
        got: u64,
    },
}

impl fmt::Display for SeqError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Missing => f.write_str("message without seq"),
            Self::OnWelcome(seq) => write!(f, "welcome carries seq {seq}"),
            Self::Gap { expected, got } => write!(f, "seq gap: expected {expected}, got {got}"),
            Self::Repeat { expected, got } => {
                write!(f, "seq repeat: expected {expected}, got {got}")
            }
        }
    }
}

/// The highest `seq` seen, and how often the sequence was broken.
#[derive(Debug, Clone, Default)]
pub(crate) struct SeqTracker {
    last: u64,
    errors: u64,
}

impl SeqTracker {
    /// A tracker whose next expected `seq` is `last + 1` (0 for a new
    /// session, the resumed `last_seq` after a successful resume).
    pub(crate) fn new(last: u64) -> Self {
        Self { last, errors: 0 }
    }

    /// The highest `seq` seen (or the starting point).
    pub(crate) fn last(&self) -> u64 {
        self.last
    }

    /// How many messages broke the sequence.
    pub(crate) fn errors(&self) -> u64 {
        self.errors
    }

    /// Checks `welcome`, which must carry no `seq`.
    pub(crate) fn welcome(&mut self, seq: Option<u64>) -> Result<(), SeqError> {
        match seq {
            None => Ok(()),
            Some(seq) => self.fail(SeqError::OnWelcome(seq)),
        }
    }

    /// Checks the `seq` of a message after `welcome`. After a gap the
    /// tracker continues from the new `seq`; a repeat leaves it where it was.
    pub(crate) fn observe(&mut self, seq: Option<u64>) -> Result<(), SeqError> {
        let Some(got) = seq else {
            return self.fail(SeqError::Missing);
        };
        let expected = self.last.saturating_add(1);
        if got == expected {
            self.last = got;
            Ok(())
        } else if got > expected {
            self.last = got;
            self.fail(SeqError::Gap { expected, got })
        } else {
            self.fail(SeqError::Repeat { expected, got })
        }
    }

    fn fail(&mut self, e: SeqError) -> Result<(), SeqError> {
        self.errors += 1;
        Err(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_order_from_one() {
        let mut t = SeqTracker::new(0);
        assert_eq!(t.welcome(None), Ok(()));
        for seq in 1..=5 {
            assert_eq!(t.observe(Some(seq)), Ok(()));
        }
        assert_eq!((t.last(), t.errors()), (5, 0));
    }

    #[test]
    fn resume_continues_after_last_seq() {
        let mut t = SeqTracker::new(41);
        assert_eq!(t.observe(Some(42)), Ok(()));
        assert_eq!(t.last(), 42);
        let mut fresh = SeqTracker::new(41);
        assert_eq!(
            fresh.observe(Some(1)),
            Err(SeqError::Repeat {
                expected: 42,
                got: 1
            })
        );
    }

    #[test]
    fn gap_is_counted_and_skipped_over() {
        let mut t = SeqTracker::new(0);
        t.observe(Some(1)).unwrap();
        assert_eq!(
            t.observe(Some(3)),
            Err(SeqError::Gap {
                expected: 2,
                got: 3
            })
        );
        // The tracker follows the server after a gap, so one gap is one error.
        assert_eq!(t.observe(Some(4)), Ok(()));
        assert_eq!((t.last(), t.errors()), (4, 1));
    }

    #[test]
    fn repeat_is_counted_and_ignored() {
        let mut t = SeqTracker::new(0);
        t.observe(Some(1)).unwrap();
        t.observe(Some(2)).unwrap();
        assert_eq!(
            t.observe(Some(2)),
            Err(SeqError::Repeat {
                expected: 3,
                got: 2
            })
        );
        assert_eq!(t.observe(Some(3)), Ok(()));
        assert_eq!((t.last(), t.errors()), (3, 1));
    }

    #[test]
    fn missing_seq_and_seq_on_welcome_are_errors() {
        let mut t = SeqTracker::new(0);
        assert_eq!(t.welcome(Some(1)), Err(SeqError::OnWelcome(1)));
        assert_eq!(t.observe(None), Err(SeqError::Missing));
        assert_eq!((t.last(), t.errors()), (0, 2));
        assert_eq!(
            SeqError::Gap {
                expected: 2,
                got: 5
            }
            .to_string(),
            "seq gap: expected 2, got 5"
        );
    }
}
