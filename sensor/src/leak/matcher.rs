//! Multi-needle streaming search: one pass over a response for every form of
//! every credential.  Chunks are searched in place; only a carry of
//! (longest needle − 1) bytes is copied to find matches across chunk boundaries.

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, MatchKind};

use memchr::memmem;

enum Engine {
    None,
    Single(Box<memmem::Finder<'static>>),
    Multi(AhoCorasick),
}

/// Finds every (overlapping) occurrence of every needle; needles are reported by index.
pub struct Matcher {
    engine: Engine,
    max_len: usize,
    /// Engine pattern index → caller's needle index (empty needles dropped).
    ids: Vec<usize>,
}

/// Per-stream state: bytes seen so far and the carry across the last boundary.
#[derive(Default)]
pub struct StreamState {
    carry: Vec<u8>,
    pos: u64,
}

impl Drop for StreamState {
    fn drop(&mut self) {
        // The carry may hold credential bytes echoed by the response.
        zeroize::Zeroize::zeroize(&mut self.carry);
    }
}

impl StreamState {
    pub fn new() -> Self {
        Self::default()
    }
    /// Bytes fed so far.
    pub fn position(&self) -> u64 {
        self.pos
    }
}

impl Matcher {
    /// Empty needles are never reported (they would match everywhere).
    pub fn new<P: AsRef<[u8]>>(needles: &[P]) -> Self {
        let ids: Vec<usize> = (0..needles.len())
            .filter(|&i| !needles[i].as_ref().is_empty())
            .collect();
        let max_len = needles.iter().map(|n| n.as_ref().len()).max().unwrap_or(0);
        let engine = match ids.len() {
            0 => Engine::None,
            1 => Engine::Single(Box::new(
                memmem::Finder::new(needles[ids[0]].as_ref()).into_owned(),
            )),
            _ => Engine::Multi(
                AhoCorasickBuilder::new()
                    .match_kind(MatchKind::Standard)
                    .build(ids.iter().map(|&i| needles[i].as_ref()))
                    .expect("aho-corasick over a bounded needle set builds"),
            ),
        };
        Matcher {
            engine,
            max_len,
            ids,
        }
    }

    pub fn longest_needle(&self) -> usize {
        self.max_len
    }

    fn search(&self, hay: &[u8], base: u64, min_end: usize, on: &mut dyn FnMut(usize, u64)) {
        match &self.engine {
            Engine::None => {}
            Engine::Single(f) => {
                let n = f.needle().len();
                // First start whose end is past `min_end`.
                let from = min_end.saturating_sub(n - 1).min(hay.len());
                // Overlapping occurrences too (`aa` twice in `aaa`), like the automaton.
                let mut at = from;
                while let Some(s) = f.find(&hay[at..]) {
                    on(self.ids[0], base + (at + s) as u64);
                    at += s + 1;
                }
            }
            Engine::Multi(ac) => {
                for m in ac.find_overlapping_iter(hay) {
                    if m.end() > min_end {
                        on(self.ids[m.pattern().as_usize()], base + m.start() as u64);
                    }
                }
            }
        }
    }

    /// Feeds the next chunk of a stream; `on(needle, absolute_offset)` for each match.
    pub fn feed(&self, st: &mut StreamState, chunk: &[u8], on: &mut dyn FnMut(usize, u64)) {
        if chunk.is_empty() {
            return;
        }
        let keep = self.max_len.saturating_sub(1);
        if !matches!(self.engine, Engine::None) {
            // Matches straddling the boundary: start in the carry, end in this chunk.
            if !st.carry.is_empty() {
                let carry_len = st.carry.len();
                let head = &chunk[..keep.min(chunk.len())];
                let mut window = Vec::with_capacity(carry_len + head.len());
                window.extend_from_slice(&st.carry);
                window.extend_from_slice(head);
                let base = st.pos - carry_len as u64;
                let mut filtered = |i: usize, off: u64| {
                    if off < st.pos {
                        on(i, off)
                    }
                };
                self.search(&window, base, carry_len, &mut filtered);
                zeroize::Zeroize::zeroize(&mut window);
            }
            self.search(chunk, st.pos, 0, on);
        }
        st.pos += chunk.len() as u64;
        if keep > 0 {
            if chunk.len() >= keep {
                zeroize::Zeroize::zeroize(&mut st.carry);
                st.carry.clear();
                st.carry.extend_from_slice(&chunk[chunk.len() - keep..]);
            } else {
                st.carry.extend_from_slice(chunk);
                let excess = st.carry.len().saturating_sub(keep);
                if excess > 0 {
                    st.carry.drain(..excess);
                }
            }
        }
    }

    /// Searches a whole chunked stream.
    pub fn find_in_chunks<'a, I>(&self, chunks: I, mut on: impl FnMut(usize, u64))
    where
        I: IntoIterator<Item = &'a [u8]>,
    {
        let mut st = StreamState::new();
        for c in chunks {
            self.feed(&mut st, c, &mut on);
        }
    }
}

/// Baseline for benchmarks: one memmem pass per needle over the same chunks
/// (with the same carry), reporting every match.
pub fn naive_find_in_chunks<P: AsRef<[u8]>>(
    needles: &[P],
    chunks: &[&[u8]],
    mut on: impl FnMut(usize, u64),
) {
    for (i, n) in needles.iter().enumerate() {
        if n.as_ref().is_empty() {
            continue;
        }
        let m = Matcher {
            engine: Engine::Single(Box::new(memmem::Finder::new(n.as_ref()).into_owned())),
            max_len: n.as_ref().len(),
            ids: vec![0],
        };
        m.find_in_chunks(chunks.iter().copied(), |_, off| on(i, off));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(m: &Matcher, chunks: &[&[u8]]) -> Vec<(usize, u64)> {
        let mut v = vec![];
        m.find_in_chunks(chunks.iter().copied(), |i, o| v.push((i, o)));
        v.sort();
        v
    }

    #[test]
    fn single_and_multi_across_boundaries() {
        let m1 = Matcher::new(&[b"abcdef"]);
        let hay = b"xxabcdefyyabcdef";
        for split in 0..=hay.len() {
            let (a, b) = hay.split_at(split);
            assert_eq!(all(&m1, &[a, b]), vec![(0, 2), (0, 10)], "split {split}");
        }
        let m2 = Matcher::new(&[&b"abcdef"[..], b"cde", b"defyya"]);
        for split in 0..=hay.len() {
            let (a, b) = hay.split_at(split);
            assert_eq!(
                all(&m2, &[a, b]),
                vec![(0, 2), (0, 10), (1, 4), (1, 12), (2, 5)],
                "split {split}"
            );
        }
        // Byte-by-byte chunks.
        let bytes: Vec<&[u8]> = hay.chunks(1).collect();
        assert_eq!(all(&m2, &bytes).len(), 5);
        let mut naive = vec![];
        naive_find_in_chunks(&[&b"abcdef"[..], b"cde", b"defyya"], &bytes, |i, o| {
            naive.push((i, o))
        });
        naive.sort();
        assert_eq!(naive, all(&m2, &[hay]));
    }

    #[test]
    fn no_needles_no_matches() {
        let m = Matcher::new::<&[u8]>(&[]);
        assert!(all(&m, &[b"anything"]).is_empty());
        let m = Matcher::new(&[&b""[..], b"x"]);
        assert_eq!(all(&m, &[b"axa"]), vec![(1, 1)]);
    }
}
