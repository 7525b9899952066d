//! Byte ranges: the HTTP `Range` header a client sends, and the spans a
//! download is cut into. Pure functions.

use std::ops::Range;

use crate::GROUP_BYTES;

/// Why a `Range` header cannot be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RangeError {
    #[error("malformed Range header {0:?}: expected bytes=FIRST-[LAST] or bytes=-SUFFIX")]
    Malformed(String),
    #[error("Range {0:?} asks for more than one range; ask for one at a time")]
    Multiple(String),
    #[error("Range {range:?} starts past the end of a {size}-byte artifact")]
    Unsatisfiable { range: String, size: u64 },
}

/// Resolve a `Range` header (RFC 9110 §14.1.2, one range) against an
/// artifact of `size` bytes: the half-open byte range to send.
pub fn parse_range(header: &str, size: u64) -> Result<Range<u64>, RangeError> {
    let malformed = || RangeError::Malformed(header.to_owned());
    let spec = header
        .trim()
        .strip_prefix("bytes=")
        .ok_or_else(malformed)?
        .trim();
    if spec.contains(',') {
        return Err(RangeError::Multiple(header.to_owned()));
    }
    let (first, last) = spec.split_once('-').ok_or_else(malformed)?;
    let (first, last) = (first.trim(), last.trim());
    let number = |s: &str| -> Result<u64, RangeError> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        s.parse().map_err(|_| malformed())
    };
    let unsatisfiable = || RangeError::Unsatisfiable {
        range: header.to_owned(),
        size,
    };
    if first.is_empty() {
        // Suffix: the last N bytes.
        let n = number(last)?;
        if n == 0 || size == 0 {
            return Err(unsatisfiable());
        }
        return Ok(size.saturating_sub(n)..size);
    }
    let start = number(first)?;
    let end = if last.is_empty() {
        size
    } else {
        let l = number(last)?;
        if l < start {
            return Err(malformed());
        }
        l.saturating_add(1).min(size)
    };
    if start >= size {
        return Err(unsatisfiable());
    }
    Ok(start..end)
}

/// Cut `range` of an artifact into spans of at most `span` bytes whose
/// inner boundaries fall on chunk-group boundaries (so each span verifies
/// on its own). `span` is rounded up to a whole number of groups.
pub fn spans(range: Range<u64>, span: u64) -> Vec<Range<u64>> {
    let span = span.max(1).div_ceil(GROUP_BYTES) * GROUP_BYTES;
    let mut out = Vec::new();
    let mut at = range.start;
    while at < range.end {
        let next = ((at / span) + 1).saturating_mul(span).min(range.end);
        out.push(at..next);
        at = next;
    }
    out
}

/// The byte ranges of `0..size` not covered by `have` (sorted, disjoint).
pub fn missing(size: u64, have: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut out = Vec::new();
    let mut at = 0;
    for r in have {
        if r.start > at {
            out.push(at..r.start.min(size));
        }
        at = at.max(r.end);
    }
    if at < size {
        out.push(at..size);
    }
    out.retain(|r| r.start < r.end);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_three_forms_resolve() {
        assert_eq!(parse_range("bytes=0-99", 1000), Ok(0..100));
        assert_eq!(parse_range("bytes=900-", 1000), Ok(900..1000));
        assert_eq!(parse_range("bytes=-100", 1000), Ok(900..1000));
        assert_eq!(parse_range("bytes=-5000", 1000), Ok(0..1000));
        assert_eq!(parse_range("bytes=990-5000", 1000), Ok(990..1000));
    }

    #[test]
    fn bad_ranges_say_why() {
        assert!(matches!(
            parse_range("items=0-1", 10),
            Err(RangeError::Malformed(_))
        ));
        assert!(matches!(
            parse_range("bytes=5-1", 10),
            Err(RangeError::Malformed(_))
        ));
        assert!(matches!(
            parse_range("bytes=a-1", 10),
            Err(RangeError::Malformed(_))
        ));
        assert!(matches!(
            parse_range("bytes=+1-2", 10),
            Err(RangeError::Malformed(_))
        ));
        assert!(matches!(
            parse_range("bytes=0-1,3-4", 10),
            Err(RangeError::Multiple(_))
        ));
        assert!(matches!(
            parse_range("bytes=10-", 10),
            Err(RangeError::Unsatisfiable { size: 10, .. })
        ));
        assert!(matches!(
            parse_range("bytes=-0", 10),
            Err(RangeError::Unsatisfiable { .. })
        ));
        assert!(matches!(
            parse_range("bytes=99999999999999999999999-", 10),
            Err(RangeError::Malformed(_))
        ));
    }

    proptest! {
        #[test]
        fn a_resolved_range_lies_inside_the_artifact(size in 0u64..1 << 40, a in any::<u64>(), b in any::<u64>(), form in 0u8..3) {
            let header = match form {
                0 => format!("bytes={a}-{b}"),
                1 => format!("bytes={a}-"),
                _ => format!("bytes=-{b}"),
            };
            if let Ok(r) = parse_range(&header, size) {
                prop_assert!(r.start < r.end, "{:?}", r);
                prop_assert!(r.end <= size);
                if form == 0 { prop_assert_eq!(r.start, a); prop_assert_eq!(r.end, b.saturating_add(1).min(size)); }
                if form == 1 { prop_assert_eq!(r.clone(), a..size); }
                if form == 2 { prop_assert_eq!(r.end - r.start, b.min(size)); }
            }
        }

        #[test]
        fn arbitrary_headers_never_panic(h in ".{0,40}", size in any::<u64>()) {
            let _ = parse_range(&h, size);
        }

        #[test]
        fn spans_tile_the_range_on_group_boundaries(start in 0u64..1 << 30, len in 0u64..1 << 26, span in 1u64..1 << 24) {
            let start = start / GROUP_BYTES * GROUP_BYTES;
            let range = start..start + len;
            let s = spans(range.clone(), span);
            let mut at = range.start;
            for r in &s {
                prop_assert_eq!(r.start, at);
                prop_assert!(r.end > r.start);
                prop_assert!(r.end - r.start <= span.div_ceil(GROUP_BYTES) * GROUP_BYTES);
                prop_assert!(r.end == range.end || r.end % GROUP_BYTES == 0);
                at = r.end;
            }
            prop_assert_eq!(at, range.end);
        }

        #[test]
        fn missing_is_the_complement(size in 0u64..10_000, cuts in proptest::collection::vec(0u64..10_000, 0..10)) {
            let mut cuts = cuts;
            cuts.sort_unstable();
            let have: Vec<_> = cuts.chunks(2).filter(|c| c.len() == 2).map(|c| c[0].min(size)..c[1].min(size)).collect();
            let gaps = missing(size, &have);
            for x in (0..size).step_by(97) {
                let in_have = have.iter().any(|r| r.contains(&x));
                let in_gap = gaps.iter().any(|r| r.contains(&x));
                prop_assert!(in_have != in_gap, "byte {} have {} gap {}", x, in_have, in_gap);
            }
        }
    }
}
