//! A small deterministic generator (xorshift64) for tests that want many
//! varied inputs, the same on every run.

pub(crate) struct XorShift(u64);

impl XorShift {
    /// `seed` must not be 0 (xorshift stays at 0 forever).
    pub(crate) fn new(seed: u64) -> XorShift {
        assert_ne!(seed, 0, "a zero seed gives only zeros");
        XorShift(seed)
    }

    /// The next state (every bit of it is used by some tests).
    pub(crate) fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`0` when `n` is 0).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}
