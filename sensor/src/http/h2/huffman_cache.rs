//! Huffman-coded strings decoded lately, one cache per thread.
//!
//! nginx sends its response headers (server, date, content-type,
//! last-modified, etag…) as Huffman-coded literals in every response, the
//! same bytes each time: it adds them to the dynamic table but never refers
//! to them there.  Decoding them was ~20 % of the HTTP/2 pipeline.  A
//! Huffman string's decoding depends on nothing but its bytes, so one cache
//! serves every connection the thread parses.  Never-indexed literals are
//! not offered to it: the encoder marked them sensitive (RFC 7541 §7.1.3),
//! to be kept out of tables.
//!
//! Bounded: `SLOTS` entries of at most `MAX_CODED` coded bytes (≤ ~11 KiB
//! per thread); a slot holds the string last decoded there.

use std::cell::RefCell;

use super::hpack::{huffman_decode, HpackError};

/// Entries per thread (a power of two: the slot is the hash's top bits).
const SLOTS: usize = 64;
/// Longer strings are decoded every time (long values rarely repeat).
const MAX_CODED: usize = 64;

#[derive(Default)]
struct Slot {
    coded: Vec<u8>,
    decoded: Vec<u8>,
}

thread_local! {
    static CACHE: RefCell<Vec<Slot>> = const { RefCell::new(Vec::new()) };
}

/// The slot for `coded`: a hash of its length and of up to 8 bytes at each end.
fn slot_of(coded: &[u8]) -> usize {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let word = |b: &[u8]| {
        let mut w = [0u8; 8];
        w[..b.len()].copy_from_slice(b);
        u64::from_le_bytes(w)
    };
    let n = coded.len();
    let head = word(&coded[..n.min(8)]);
    let tail = word(&coded[n.saturating_sub(8)..]);
    let h = ((n as u64 ^ head).wrapping_mul(K) ^ tail).wrapping_mul(K);
    (h >> (64 - SLOTS.trailing_zeros())) as usize
}

/// Appends the decoding of `coded` to `out`, as [`huffman_decode`] does.
pub(crate) fn decode(coded: &[u8], out: &mut Vec<u8>) -> Result<(), HpackError> {
    if coded.len() > MAX_CODED {
        return huffman_decode(coded, out);
    }
    CACHE.with_borrow_mut(|slots| {
        if slots.is_empty() {
            slots.resize_with(SLOTS, Slot::default);
        }
        let slot = &mut slots[slot_of(coded)];
        // A fresh slot holds the empty string, whose decoding is empty: right too.
        if slot.coded == coded {
            out.extend_from_slice(&slot.decoded);
            return Ok(());
        }
        let start = out.len();
        huffman_decode(coded, out)?;
        slot.coded.clear();
        slot.coded.extend_from_slice(coded);
        slot.decoded.clear();
        slot.decoded.extend_from_slice(&out[start..]);
        Ok(())
    })
}

/// Whether the thread's cache holds `coded` (tests).
#[cfg(test)]
pub(crate) fn holds(coded: &[u8]) -> bool {
    CACHE.with_borrow(|slots| slots.get(slot_of(coded)).is_some_and(|s| s.coded == coded))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn huffman_encode(s: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        super::super::hpack::huffman_encode(s, &mut v);
        v
    }

    fn fresh(coded: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        huffman_decode(coded, &mut v).unwrap();
        v
    }

    #[test]
    fn hits_misses_and_evictions_decode_as_uncached() {
        // More strings than slots, so slots are shared and replaced; each
        // round decodes every string again, in another order, after others.
        let strings: Vec<Vec<u8>> = (0..SLOTS * 4)
            .map(|i| format!("value-{i}-{}", "x".repeat(i % 50)).into_bytes())
            .chain([Vec::new(), b"a".to_vec(), vec![b'z'; 200]])
            .collect();
        let coded: Vec<Vec<u8>> = strings.iter().map(|s| huffman_encode(s)).collect();
        assert!(coded.iter().any(|c| c.len() > MAX_CODED));
        assert!(coded.iter().filter(|c| c.len() <= MAX_CODED).count() > SLOTS);
        for round in 0..3 {
            for k in 0..coded.len() {
                let i = (k * (2 * round + 1)) % coded.len();
                let mut out = b"prefix".to_vec();
                decode(&coded[i], &mut out).unwrap();
                assert_eq!(&out[..6], b"prefix");
                assert_eq!(out[6..], strings[i], "string {i}, round {round}");
                assert_eq!(out[6..], fresh(&coded[i]));
            }
        }
    }

    #[test]
    fn errors_are_not_cached() {
        // EOS inside a string: an error each time, and the slot is not filled.
        let bad = [0xff, 0xff, 0xff, 0xff];
        assert!(decode(&bad, &mut Vec::new()).is_err());
        assert!(!holds(&bad));
        assert!(decode(&bad, &mut Vec::new()).is_err());
    }

    #[test]
    fn slots_spread() {
        let used: std::collections::HashSet<usize> = (0..SLOTS * 4)
            .map(|i| slot_of(&huffman_encode(format!("header-value-{i}").as_bytes())))
            .collect();
        assert!(
            used.len() > SLOTS / 2,
            "{} of {SLOTS} slots used",
            used.len()
        );
    }
}
