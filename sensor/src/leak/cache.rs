//! Built matchers, reused by the pairs that carry the same credentials.
//!
//! Building a matcher (every form of every credential, anchors, a Teddy
//! searcher) cost more than everything else a small pair costs; a client
//! sends the same key on request after request, so the built matcher is kept
//! and reused.
//!
//! Secrets: an entry holds the credential's forms (the matcher's needles)
//! and a copy of the values it was built from (to check a hit), all zeroized
//! when the entry goes.  Entries are found by a keyed hash of the credential
//! set (SipHash with a random per-process key: nothing derived from a value
//! can be read back from the table), the table is bounded (LRU,
//! [`MATCHER_CACHE_ENTRIES`]), and an entry unused for [`MATCHER_CACHE_IDLE`]
//! is dropped at the next lookup.  Nothing here is logged.
//!
//! A set is kept from its second sighting on: the first time, only a keyed
//! hash of it is noted (a small direct-mapped table, [`DOORKEEPER_SLOTS`]), and
//! the caller builds for one use.  A stream of never-repeated credentials so
//! neither churns the table nor leaves their matchers behind.
//!
//! Two credential sets never share a matcher: a hash hit is only used when
//! the stored values are byte-for-byte those of the request; a collision is
//! a miss, and the new set replaces the old one.

use std::hash::{BuildHasher, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lru::LruCache;
use zeroize::Zeroizing;

use super::extract::Credential;
use crate::finding::CredentialType;

/// Credential sets whose matcher is kept (each entry is a few KiB).
pub const MATCHER_CACHE_ENTRIES: usize = 2048;
/// A set whose values add up to more than this is never kept: its matcher
/// (several forms of every value) is built for each use.  Bounds the cache
/// at about `MATCHER_CACHE_ENTRIES` × 8 × this (~128 MiB) whatever clients
/// send, against ~4 GiB for 64 credentials of `MAX_CREDENTIAL_LEN` each.
pub const MAX_CACHED_SET_BYTES: usize = 8 * 1024;
/// An entry not used for this long is dropped (its secrets with it).
pub const MATCHER_CACHE_IDLE: Duration = Duration::from_secs(60);

/// Hashes of recently seen sets (first sightings), per cached entry.
pub const DOORKEEPER_PER_ENTRY: usize = 4;

/// What the built value is for: this one lookup, or the cache (many uses).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    Once,
    Cached,
}

/// The answer of [`MatcherCache::lookup`].
pub enum Lookup<T> {
    /// The value built before for exactly this set.
    Hit(Arc<T>),
    /// First sighting: build for this one use, keep nothing.
    Once,
    /// Seen before: build to keep, then [`MatcherCache::insert`].
    Keep(Ticket),
}

/// Where a value to keep goes (the set's keyed hash) and when it was asked for.
pub struct Ticket {
    key: u64,
    now: Instant,
}

/// What a matcher is built from, per credential: the value and what, besides
/// the value, decides its needles.
#[derive(PartialEq, Eq)]
struct CredKey {
    value: Zeroizing<Vec<u8>>,
    vendor_prefix_len: usize,
    basic: bool,
    /// Searched for percent-decoded too (derived from the value when set).
    percent_decoded: bool,
}

impl CredKey {
    fn of(c: &Credential) -> CredKey {
        CredKey {
            value: c.value.clone(),
            vendor_prefix_len: c.vendor_prefix_len,
            basic: c.kind == CredentialType::BasicCredentials,
            percent_decoded: c.percent_decoded.is_some(),
        }
    }

    fn matches(&self, c: &Credential) -> bool {
        self.value[..] == c.value[..]
            && self.vendor_prefix_len == c.vendor_prefix_len
            && self.basic == (c.kind == CredentialType::BasicCredentials)
            && self.percent_decoded == c.percent_decoded.is_some()
    }
}

struct Entry<T> {
    creds: Vec<CredKey>,
    variant: u64,
    built: Arc<T>,
    last_used: Instant,
}

impl<T> Entry<T> {
    fn matches(&self, creds: &[Credential], variant: u64) -> bool {
        self.variant == variant
            && self.creds.len() == creds.len()
            && self.creds.iter().zip(creds).all(|(k, c)| k.matches(c))
    }
}

/// Lookups so far (for tests and metrics).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheStats {
    pub hits: u64,
    /// Lookups that built (first sightings included).
    pub misses: u64,
    /// Misses that were first sightings: built for one use, not kept.
    pub first_seen: u64,
    /// Entries dropped to stay within the bound.
    pub evictions: u64,
    /// Entries dropped because they were idle too long.
    pub expired: u64,
}

struct Inner<T> {
    map: LruCache<u64, Entry<T>>,
    /// Direct-mapped: slot `hash % len` holds the last first-seen hash there
    /// (0 = empty; hashes are stored with the low bit set).
    seen: Box<[u64]>,
    stats: CacheStats,
}

/// A bounded map from credential sets (plus a caller-chosen `variant` of
/// how the value is built) to something built from them.
pub struct MatcherCache<T, S = std::hash::RandomState> {
    inner: Mutex<Inner<T>>,
    hasher: S,
    idle: Duration,
}

impl<T> MatcherCache<T> {
    pub fn new(entries: usize, idle: Duration) -> Self {
        Self::with_hasher(entries, idle, std::hash::RandomState::new())
    }
}

impl<T, S: BuildHasher> MatcherCache<T, S> {
    pub fn with_hasher(entries: usize, idle: Duration, hasher: S) -> Self {
        MatcherCache {
            inner: Mutex::new(Inner {
                map: LruCache::new(NonZeroUsize::new(entries.max(1)).expect("non-zero")),
                seen: vec![0; (entries.max(1) * DOORKEEPER_PER_ENTRY).next_power_of_two()]
                    .into_boxed_slice(),
                stats: CacheStats::default(),
            }),
            hasher,
            idle,
        }
    }

    fn key(&self, creds: &[Credential], variant: u64) -> u64 {
        let mut h = self.hasher.build_hasher();
        h.write_u64(variant);
        h.write_usize(creds.len());
        for c in creds {
            h.write_usize(c.value.len());
            h.write(&c.value);
            h.write_usize(c.vendor_prefix_len);
            h.write_u8(u8::from(c.kind == CredentialType::BasicCredentials));
            h.write_u8(u8::from(c.percent_decoded.is_some()));
        }
        h.finish()
    }

    /// The value built for exactly `creds` (same values, same order) and
    /// `variant`, building it with `build` on a miss: for one use the first
    /// time the set is seen, for the cache the second time.  `build` runs
    /// without the lock held.
    pub fn get_or_build(
        &self,
        creds: &[Credential],
        variant: u64,
        build: impl FnOnce(Use) -> T,
    ) -> Arc<T> {
        match self.lookup(creds, variant) {
            Lookup::Hit(built) => built,
            Lookup::Once => Arc::new(build(Use::Once)),
            Lookup::Keep(ticket) => self.insert(ticket, creds, variant, build(Use::Cached)),
        }
    }

    /// What to do for `creds` and `variant`: use the value built for exactly
    /// this set, build one for this use only (first sighting), or build one
    /// to keep (second sighting) and hand it to [`MatcherCache::insert`].
    pub fn lookup(&self, creds: &[Credential], variant: u64) -> Lookup<T> {
        if creds.iter().map(|c| c.value.len()).sum::<usize>() > MAX_CACHED_SET_BYTES {
            let mut inner = self.lock();
            inner.stats.misses += 1;
            inner.stats.first_seen += 1;
            return Lookup::Once;
        }
        let key = self.key(creds, variant);
        let now = Instant::now();
        let mut inner = self.lock();
        Self::expire(&mut inner, now, self.idle);
        let Inner { map, seen, stats } = &mut *inner;
        if let Some(e) = map.get_mut(&key) {
            if e.matches(creds, variant) {
                e.last_used = now;
                stats.hits += 1;
                return Lookup::Hit(e.built.clone());
            }
        }
        stats.misses += 1;
        let slot = (key as usize) & (seen.len() - 1);
        if seen[slot] != key | 1 {
            seen[slot] = key | 1;
            stats.first_seen += 1;
            return Lookup::Once;
        }
        Lookup::Keep(Ticket { key, now })
    }

    /// Keeps `built`, made for the set a [`Lookup::Keep`] was answered for.
    pub fn insert(&self, ticket: Ticket, creds: &[Credential], variant: u64, built: T) -> Arc<T> {
        let built = Arc::new(built);
        let entry = Entry {
            creds: creds.iter().map(CredKey::of).collect(),
            variant,
            built: built.clone(),
            last_used: ticket.now,
        };
        let key = ticket.key;
        let mut inner = self.lock();
        if let Some((old_key, _)) = inner.map.push(key, entry) {
            if old_key != key {
                inner.stats.evictions += 1;
            }
        }
        built
    }

    /// Drops entries unused for longer than `idle`, least recently used first.
    fn expire(inner: &mut Inner<T>, now: Instant, idle: Duration) {
        while let Some((_, e)) = inner.map.peek_lru() {
            if now.saturating_duration_since(e.last_used) <= idle {
                break;
            }
            inner.map.pop_lru();
            inner.stats.expired += 1;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<T>> {
        // A panic while holding the lock leaves nothing half-written that
        // matters here (at worst a missing entry).
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn stats(&self) -> CacheStats {
        self.lock().stats
    }

    pub fn len(&self) -> usize {
        self.lock().map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops every entry (and the secrets they hold) and every sighting.
    pub fn clear(&self) {
        let mut inner = self.lock();
        inner.map.clear();
        inner.seen.fill(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::finding::CredentialSource;

    fn cred(v: &str) -> Credential {
        Credential {
            source: CredentialSource::Header,
            name: "x-api-key".into(),
            kind: CredentialType::ApiKey,
            value: Zeroizing::new(v.as_bytes().to_vec()),
            vendor_prefix_len: 0,
            jwt_signature: None,
            percent_decoded: None,
            sent_as_cookies: Vec::new(),
            protocol_echo: None,
        }
    }

    /// What was built, and from what (to check nothing is shared).
    fn build_of(creds: &[Credential]) -> Vec<Vec<u8>> {
        creds.iter().map(|c| c.value.to_vec()).collect()
    }

    fn get(
        cache: &MatcherCache<Vec<Vec<u8>>, impl BuildHasher>,
        creds: &[Credential],
    ) -> Arc<Vec<Vec<u8>>> {
        cache.get_or_build(creds, 0, |_| build_of(creds))
    }

    /// Seen once (not kept), then built for the cache.
    fn admit(cache: &MatcherCache<Vec<Vec<u8>>, impl BuildHasher>, creds: &[Credential]) {
        let uses: Vec<Use> = (0..2)
            .map(|_| {
                let mut used = None;
                cache.get_or_build(creds, 0, |u| {
                    used = Some(u);
                    build_of(creds)
                });
                used.expect("a miss builds")
            })
            .collect();
        assert_eq!(uses, [Use::Once, Use::Cached]);
    }

    #[test]
    fn hit_and_miss() {
        let cache = MatcherCache::new(8, MATCHER_CACHE_IDLE);
        let a = [cred("AAAAAAAAAAAA1")];
        let b = [cred("BBBBBBBBBBBB2")];
        let once = get(&cache, &a);
        assert_eq!(*once, build_of(&a));
        assert!(cache.is_empty(), "a first sighting is not kept");
        let first = get(&cache, &a);
        let again = get(&cache, &a);
        assert!(
            Arc::ptr_eq(&first, &again),
            "same set: the built value is reused"
        );
        admit(&cache, &b);
        assert_eq!(*get(&cache, &b), build_of(&b));
        assert_eq!(
            cache.stats(),
            CacheStats {
                hits: 2,
                misses: 4,
                first_seen: 2,
                evictions: 0,
                expired: 0
            }
        );
        // Another variant of the same set is its own entry.
        for _ in 0..2 {
            let v = cache.get_or_build(&a, 1, |_| vec![b"variant".to_vec()]);
            assert_eq!(*v, vec![b"variant".to_vec()]);
        }
        assert_eq!(cache.stats().misses, 6);
        assert_eq!(cache.len(), 3);
    }

    #[test]
    fn order_kind_and_prefix_are_part_of_the_set() {
        let cache = MatcherCache::new(8, MATCHER_CACHE_IDLE);
        let (x, y) = (cred("XXXXXXXXXXXX1"), cred("YYYYYYYYYYYY2"));
        let xy = [cred("XXXXXXXXXXXX1"), cred("YYYYYYYYYYYY2")];
        let yx = [y, x];
        admit(&cache, &xy);
        assert_eq!(*get(&cache, &yx), build_of(&yx));
        assert_eq!(*get(&cache, &xy[..1]), build_of(&xy[..1]));
        let mut basic = cred("XXXXXXXXXXXX1");
        basic.kind = CredentialType::BasicCredentials;
        let mut prefixed = cred("XXXXXXXXXXXX1");
        prefixed.vendor_prefix_len = 4;
        get(&cache, &[basic]);
        get(&cache, &[prefixed]);
        assert_eq!(cache.stats().hits, 0);
        assert_eq!(cache.stats().misses, 6);
        assert_eq!(*get(&cache, &xy), build_of(&xy));
        assert_eq!(cache.stats().hits, 1);
    }

    #[test]
    fn evicts_least_recently_used_at_the_bound() {
        // A fixed hasher: which sightings share a doorkeeper slot is the same every run.
        let hasher =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let cache = MatcherCache::with_hasher(3, MATCHER_CACHE_IDLE, hasher);
        let sets: Vec<[Credential; 1]> = (0..4)
            .map(|i| [cred(&format!("KEY-{i}-abcdefgh"))])
            .collect();
        for s in &sets[..3] {
            admit(&cache, s);
        }
        get(&cache, &sets[0]); // 0 is now the most recent; 1 the least
        assert_eq!(cache.stats().hits, 1);
        admit(&cache, &sets[3]);
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.stats().evictions, 1);
        get(&cache, &sets[0]);
        get(&cache, &sets[2]);
        assert_eq!(cache.stats().hits, 3, "0 and 2 were kept");
        let misses = cache.stats().misses;
        let mut used = None;
        cache.get_or_build(&sets[1], 0, |u| {
            used = Some(u);
            build_of(&sets[1])
        });
        assert_eq!(cache.stats().misses, misses + 1, "1 was evicted");
        assert_eq!(used, Some(Use::Cached), "and is still known as seen");
        assert_eq!(cache.len(), 3);
    }

    /// Every set hashes to the same key: a hit is still only taken when the
    /// values are the same, so no set ever gets another's matcher.
    #[test]
    fn colliding_sets_never_share() {
        #[derive(Clone, Default)]
        struct Constant;
        struct Zero;
        impl Hasher for Zero {
            fn finish(&self) -> u64 {
                0
            }
            fn write(&mut self, _: &[u8]) {}
        }
        impl BuildHasher for Constant {
            type Hasher = Zero;
            fn build_hasher(&self) -> Zero {
                Zero
            }
        }
        let cache = MatcherCache::with_hasher(8, MATCHER_CACHE_IDLE, Constant);
        let sets: Vec<[Credential; 1]> = (0..5)
            .map(|i| [cred(&format!("COLLIDE-{i}-abcdefgh"))])
            .collect();
        for round in 0..3 {
            for s in &sets {
                assert_eq!(*get(&cache, s), build_of(s), "round {round}");
            }
        }
        assert_eq!(cache.stats().hits, 0);
        assert_eq!(cache.stats().misses, 15);
        assert_eq!(cache.len(), 1);
        // The last one is there and is reused.
        let last = &sets[4];
        let a = get(&cache, last);
        assert!(Arc::ptr_eq(&a, &get(&cache, last)));
        // A prefix of a stored value is not the value.
        assert_eq!(
            *get(&cache, &[cred("COLLIDE-4-abcdefg")]),
            build_of(&[cred("COLLIDE-4-abcdefg")])
        );
    }

    #[test]
    fn idle_entries_expire() {
        let cache = MatcherCache::new(8, Duration::ZERO);
        let a = [cred("AAAAAAAAAAAA1")];
        let b = [cred("BBBBBBBBBBBB2")];
        admit(&cache, &a);
        assert_eq!(cache.len(), 1);
        std::thread::sleep(Duration::from_millis(2));
        admit(&cache, &b); // the lookups drop a (idle longer than zero)
        assert_eq!(cache.stats().expired, 1);
        cache.clear();
        assert!(cache.is_empty());
    }
}
