//! An exact prefix cache: the keys and values a prompt left in its [`PathCache`], kept so that a
//! later prompt starting with the same tokens, run along the same route, starts from them
//! instead of recomputing them. Causal attention makes a position's keys and values depend on
//! the tokens up to it and on the route alone, and attention sums over key blocks of fixed
//! absolute positions ([`crate::layer`]), so reuse changes no output, to the bit.
//!
//! Entries are whole prompts under a route key (the caller's name for a route: a layer path, a
//! token router at a knob). Lookup finds the entry sharing the longest token prefix; insertion
//! replaces an entry the new prompt extends and evicts the least recently used entries past a
//! budget in bytes. Each entry carries the caller's data about its positions (`T`: e.g. the
//! prompt's scored tokens), so that what a hit skips computing can still be reported.

use crate::cache::PathCache;
use crate::error::Result;

/// Hits, misses and size, for a server's `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PrefixStats {
    /// Lookups that reused at least one position.
    pub hits: u64,
    /// Lookups that reused none.
    pub misses: u64,
    /// Token positions reused, over all hits.
    pub reused_tokens: u64,
    /// Entries evicted to stay within the budget.
    pub evictions: u64,
    /// Entries held.
    pub entries: usize,
    /// Bytes of keys and values held.
    pub bytes: usize,
}

/// What a lookup found: a cache holding the first `reused` positions of the prompt, and the
/// entry's data.
#[derive(Debug, Clone)]
pub struct PrefixHit<T> {
    /// The entry's cache, rewound to `reused` positions; extend it from there.
    pub cache: PathCache,
    /// Positions reused (`0 < reused < prompt length`).
    pub reused: usize,
    /// The entry's data.
    pub data: T,
}

#[derive(Debug)]
struct Entry<T> {
    route: u64,
    tokens: Vec<u32>,
    cache: PathCache,
    data: T,
    bytes: usize,
    used: u64,
}

/// Prompts' keys and values under an LRU budget (see the module doc).
#[derive(Debug)]
pub struct PrefixCache<T> {
    budget: usize,
    entries: Vec<Entry<T>>,
    clock: u64,
    stats: PrefixStats,
}

impl<T: Clone> PrefixCache<T> {
    /// A cache holding at most `budget` bytes of keys and values (0: holds nothing).
    pub fn new(budget: usize) -> Self {
        Self {
            budget,
            entries: Vec::new(),
            clock: 0,
            stats: PrefixStats::default(),
        }
    }

    /// True when the budget allows holding anything.
    pub fn enabled(&self) -> bool {
        self.budget > 0
    }

    /// Hits, misses and size so far.
    pub fn stats(&self) -> PrefixStats {
        PrefixStats {
            entries: self.entries.len(),
            bytes: self.entries.iter().map(|e| e.bytes).sum(),
            ..self.stats
        }
    }

    /// The entry under `route` from which `prompt` reuses the most positions: `reuse(shared,
    /// data)` says how many of the `shared` leading tokens the caller can take from an entry
    /// (0: none), and at least `keep_last` (≥ 1: a pass needs a row to give logits) of the
    /// prompt's positions are left to compute. A hit counts and refreshes the entry; `None`
    /// counts as a miss.
    pub fn lookup(
        &mut self,
        route: u64,
        prompt: &[u32],
        keep_last: usize,
        reuse: impl Fn(usize, &T) -> usize,
    ) -> Result<Option<PrefixHit<T>>> {
        let limit = prompt.len().saturating_sub(keep_last.max(1));
        let best = self
            .entries
            .iter_mut()
            .filter(|e| e.route == route)
            .map(|e| {
                let shared = common_prefix(&e.tokens, prompt);
                (reuse(shared, &e.data).min(shared).min(limit), e)
            })
            .filter(|(n, _)| *n > 0)
            .max_by_key(|(n, e)| (*n, e.used));
        let Some((reused, entry)) = best else {
            self.stats.misses += 1;
            return Ok(None);
        };
        self.clock += 1;
        entry.used = self.clock;
        let mut cache = entry.cache.clone();
        cache.rewind_to(reused)?;
        self.stats.hits += 1;
        self.stats.reused_tokens += reused as u64;
        Ok(Some(PrefixHit {
            cache,
            reused,
            data: entry.data.clone(),
        }))
    }

    /// The longest prefix `prompt` shares with an entry under `route`, without counting a
    /// lookup (a scheduler deciding what to run together).
    pub fn shared(&self, route: u64, prompt: &[u32]) -> usize {
        (self.entries.iter())
            .filter(|e| e.route == route)
            .map(|e| common_prefix(&e.tokens, prompt))
            .max()
            .unwrap_or(0)
    }

    /// Keeps `cache` (holding exactly `tokens`' positions) under `route`. An entry whose tokens
    /// the new ones extend is replaced; if an entry already holds these tokens and more, it is
    /// only refreshed. Least recently used entries go until the budget holds; an entry larger
    /// than the whole budget is not kept.
    pub fn insert(&mut self, route: u64, tokens: Vec<u32>, cache: PathCache, data: T) {
        let bytes = cache.size_in_bytes();
        if bytes > self.budget || cache.len() != tokens.len() {
            return;
        }
        self.clock += 1;
        let clock = self.clock;
        if let Some(e) = self
            .entries
            .iter_mut()
            .find(|e| e.route == route && e.tokens.starts_with(&tokens))
        {
            e.used = clock;
            return;
        }
        self.entries
            .retain(|e| !(e.route == route && tokens.starts_with(&e.tokens)));
        self.entries.push(Entry {
            route,
            tokens,
            cache,
            data,
            bytes,
            used: clock,
        });
        let mut held: usize = self.entries.iter().map(|e| e.bytes).sum();
        while held > self.budget {
            let oldest = (0..self.entries.len())
                .min_by_key(|&i| self.entries[i].used)
                .expect("held > 0 implies an entry");
            held -= self.entries.swap_remove(oldest).bytes;
            self.stats.evictions += 1;
        }
    }
}

/// Length of the longest common prefix of `a` and `b`.
pub fn common_prefix(a: &[u32], b: &[u32]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::KvSlot;
    use crate::path::LayerPath;
    use candle_core::{Device, Tensor};

    /// A one-layer cache of `n` positions (4 f32 keys and values each: 32 bytes a position).
    fn cache(n: usize) -> PathCache {
        let path = LayerPath::full(1);
        let mut slot = KvSlot::new();
        let kv = Tensor::zeros((1, 1, n, 4), candle_core::DType::F32, &Device::Cpu).unwrap();
        slot.append(&kv, &kv).unwrap();
        PathCache::from_slots(&path, vec![slot], n).unwrap()
    }

    #[test]
    fn finds_the_longest_shared_prefix_under_the_same_route() {
        let mut c = PrefixCache::new(1 << 20);
        c.insert(1, vec![1, 2, 3, 4], cache(4), "a");
        c.insert(1, vec![1, 2, 9], cache(3), "b");
        c.insert(2, vec![1, 2, 3, 4, 5], cache(5), "other route");
        let hit = c.lookup(1, &[1, 2, 3, 7, 8], 1, |n, _| n).unwrap().unwrap();
        assert_eq!((hit.reused, hit.data, hit.cache.len()), (3, "a", 3));
        // The prompt's last position is always left to compute.
        let hit = c.lookup(1, &[1, 2, 3, 4], 1, |n, _| n).unwrap().unwrap();
        assert_eq!(hit.reused, 3);
        assert!(c.lookup(1, &[5, 6], 1, |n, _| n).unwrap().is_none());
        assert!(c.lookup(1, &[1, 2, 3], 1, |_, _| 0).unwrap().is_none());
        let s = c.stats();
        assert_eq!((s.hits, s.misses, s.reused_tokens, s.entries), (2, 2, 6, 3));
    }

    #[test]
    fn extending_replaces_and_the_budget_evicts_the_least_recently_used() {
        let mut c = PrefixCache::new(10 * 32);
        c.insert(1, vec![1, 2], cache(2), ());
        c.insert(1, vec![1, 2, 3], cache(3), ());
        assert_eq!(
            c.stats().entries,
            1,
            "the longer prompt replaces its prefix"
        );
        c.insert(1, vec![1, 2], cache(2), ());
        assert_eq!(
            c.stats().entries,
            1,
            "a prefix of an entry is not stored twice"
        );
        c.insert(1, vec![7, 7, 7], cache(3), ());
        c.lookup(1, &[1, 2, 3, 4], 1, |n, _| n).unwrap().unwrap();
        c.insert(1, vec![8, 8, 8, 8], cache(4), ());
        // 3 + 3 + 4 positions fit exactly, 32 bytes each; one more evicts [7, 7, 7], the least
        // recently used.
        assert_eq!(c.stats().bytes, 10 * 32);
        c.insert(1, vec![9], cache(1), ());
        assert!(c.lookup(1, &[7, 7, 7, 1], 1, |n, _| n).unwrap().is_none());
        assert!(c.lookup(1, &[1, 2, 3, 1], 1, |n, _| n).unwrap().is_some());
        assert_eq!(c.stats().evictions, 1);
        c.insert(1, (0..11).collect(), cache(11), ());
        assert!(
            c.lookup(1, &[0, 1, 2], 1, |n, _| n).unwrap().is_none(),
            "over budget"
        );
    }
}
