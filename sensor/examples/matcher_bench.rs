//! Matcher throughput, for `cargo xtask bench` (matcher): scans of a 1 MiB
//! response body for 1, 16, 64 and 256 credentials, against the naive
//! baseline (one `memchr::memmem` pass per needle).
//!
//!     cargo run --release -p sensor --example matcher_bench -- [--runs N] [--min-ms MS]
//!
//! Prints one JSON object: for every run, needle count and variant, the
//! seconds one scan takes and the matches it found (every variant must find
//! the same).  Variants run interleaved, rotated each run.

use std::time::{Duration, Instant};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use memchr::memmem;

const BODY_BYTES: usize = 1 << 20;
const NEEDLE_COUNTS: [usize; 4] = [1, 16, 64, 256];

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn alnum(&mut self, n: usize) -> String {
        const A: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
        (0..n)
            .map(|_| A[(self.next() % A.len() as u64) as usize] as char)
            .collect()
    }
}

/// Credentials of the shapes the sensor meets, sharing the usual prefixes
/// (which is what makes prefilters work hard).
fn needles(n: usize, rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| match i % 4 {
            0 => format!("sk_live_{}", rng.alnum(32)),
            1 => format!("ghp_{}", rng.alnum(36)),
            2 => format!("eyJhbGciOiJIUzI1NiJ9.{}", rng.alnum(40)),
            _ => rng.alnum(40),
        })
        .map(String::into_bytes)
        .collect()
}

/// A JSON API response body with the first bytes of the needles' prefixes all
/// over it, and one real occurrence of the last needle near the end.
fn body(needles: &[Vec<u8>], rng: &mut Rng) -> Vec<u8> {
    let mut b = Vec::with_capacity(BODY_BYTES + 256);
    let mut i = 0u64;
    while b.len() < BODY_BYTES - 200 {
        let s = format!(
            "{{\"id\":{i},\"sku\":\"sk_{}\",\"owner\":\"gh_{}\",\"token\":\"ey{}\"}},",
            rng.alnum(6),
            rng.alnum(5),
            rng.alnum(8)
        );
        b.extend_from_slice(s.as_bytes());
        i += 1;
    }
    b.extend_from_slice(b"{\"echo\":\"");
    b.extend_from_slice(needles.last().expect("at least one needle"));
    b.extend_from_slice(b"\"}");
    b.resize(BODY_BYTES, b' ');
    b
}

trait Variant {
    fn name(&self) -> &'static str;
    fn scan(&self, hay: &[u8]) -> usize;
}

struct Naive(Vec<memmem::Finder<'static>>);
impl Variant for Naive {
    fn name(&self) -> &'static str {
        "naive_memmem"
    }
    fn scan(&self, hay: &[u8]) -> usize {
        self.0.iter().map(|f| f.find_iter(hay).count()).sum()
    }
}

/// aho-corasick as the design describes it (Teddy via the automatic prefilter
/// for few needles, a DFA for many); the reference for `sensor::leak::matcher`.
struct Ac(AhoCorasick);
impl Variant for Ac {
    fn name(&self) -> &'static str {
        "aho_corasick"
    }
    fn scan(&self, hay: &[u8]) -> usize {
        self.0.find_overlapping_iter(hay).count()
    }
}

/// Non-overlapping leftmost-first search: lets aho-corasick use its packed
/// (Teddy) searcher for up to 64 needles.
struct AcLeftmost(AhoCorasick);
impl Variant for AcLeftmost {
    fn name(&self) -> &'static str {
        "aho_corasick_leftmost"
    }
    fn scan(&self, hay: &[u8]) -> usize {
        self.0.find_iter(hay).count()
    }
}

/// The sensor's own matcher (`sensor::leak::matcher`): anchors + Teddy,
/// every overlapping occurrence, fed as one chunk.
struct Sensor(sensor::leak::matcher::Matcher);
impl Variant for Sensor {
    fn name(&self) -> &'static str {
        "sensor_matcher"
    }
    fn scan(&self, hay: &[u8]) -> usize {
        let mut n = 0;
        self.0.find_in_chunks([hay], |_, _| n += 1);
        n
    }
}

fn time_scan(v: &dyn Variant, hay: &[u8], min: Duration) -> (f64, usize, u64) {
    let mut iters = 0u64;
    let mut found = 0;
    let start = Instant::now();
    while iters == 0 || start.elapsed() < min {
        found = std::hint::black_box(v.scan(std::hint::black_box(hay)));
        iters += 1;
    }
    (start.elapsed().as_secs_f64() / iters as f64, found, iters)
}

fn main() {
    let mut runs = 5usize;
    let mut min_ms = 200u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().and_then(|v| v.parse().ok()).unwrap_or(runs),
            "--min-ms" => min_ms = args.next().and_then(|v| v.parse().ok()).unwrap_or(min_ms),
            other => {
                eprintln!("matcher_bench: unknown argument {other}");
                std::process::exit(2);
            }
        }
    }
    let min = Duration::from_millis(min_ms);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut rows = Vec::new();
    let mut builds = Vec::new();
    for &n in &NEEDLE_COUNTS {
        let ns = needles(n, &mut rng);
        let hay = body(&ns, &mut rng);
        let leaked: Vec<&'static [u8]> = ns
            .iter()
            .map(|x| &*Box::leak(x.clone().into_boxed_slice()))
            .collect();
        let t = Instant::now();
        let naive = Naive(leaked.iter().map(|x| memmem::Finder::new(*x)).collect());
        let naive_build = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let ac = Ac(AhoCorasick::builder()
            .match_kind(MatchKind::Standard)
            .build(&ns)
            .expect("valid needles"));
        let ac_build = t.elapsed().as_secs_f64();
        let kind: AhoCorasickKind = ac.0.kind();
        let t = Instant::now();
        let acl = AcLeftmost(
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(&ns)
                .expect("valid needles"),
        );
        let acl_build = t.elapsed().as_secs_f64();
        let lkind: AhoCorasickKind = acl.0.kind();
        builds.push(format!(
            "{{\"needles\":{n},\"naive_memmem_build_s\":{naive_build:.9},\"aho_corasick_build_s\":{ac_build:.9},\"aho_corasick_kind\":\"{kind:?}\",\"aho_corasick_leftmost_build_s\":{acl_build:.9},\"aho_corasick_leftmost_kind\":\"{lkind:?}\"}}"
        ));
        let t = Instant::now();
        let ours = Sensor(sensor::leak::matcher::Matcher::new(&ns));
        let ours_build = t.elapsed().as_secs_f64();
        builds.push(format!(
            "{{\"needles\":{n},\"sensor_matcher_build_s\":{ours_build:.9}}}"
        ));
        let variants: Vec<&dyn Variant> = vec![&naive, &ac, &acl, &ours];
        for run in 0..runs {
            let k = run % variants.len();
            let order: Vec<&dyn Variant> = variants[k..]
                .iter()
                .chain(variants[..k].iter())
                .copied()
                .collect();
            let mut found_by = Vec::new();
            for v in order {
                let (secs, found, iters) = time_scan(v, &hay, min);
                found_by.push(found);
                rows.push(format!(
                    "{{\"run\":{run},\"needles\":{n},\"variant\":\"{}\",\"seconds_per_scan\":{secs:.9},\"matches\":{found},\"iterations\":{iters}}}",
                    v.name()
                ));
            }
            if found_by.iter().any(|&f| f != found_by[0]) {
                eprintln!("matcher_bench: variants disagree on the matches: {found_by:?}");
                std::process::exit(1);
            }
        }
    }
    println!(
        "{{\"body_bytes\":{BODY_BYTES},\"min_ms\":{min_ms},\"builds\":[{}],\"rows\":[{}]}}",
        builds.join(","),
        rows.join(",")
    );
}
