//! Prompts' keys and values kept across the examples of an evaluation (`evaluator run`,
//! `baseline`), in the prefix cache `evaluator serve` uses
//! ([`drllm_engine::PrefixCache`]). Generating examples' prompts start alike (the chat
//! template's system turn, a few-shot preamble), so each prompt computes only what follows the
//! longest start an earlier one left, along the same route. Choice-loglik examples keep their
//! fused pass, which already runs each question's context once for all its choices; across
//! questions their contexts share only the first words. (`calibrate` runs without: it decides
//! other knobs' points from what a pass's gates saw at every prompt position.)
//!
//! Reuse is exact to the bit: attention sums over key blocks of fixed absolute positions
//! ([`drllm_engine::layer`]), so the rows computed after a hit are those a whole pass computes.

use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};

use candle_core::Tensor;
use drllm_engine::exec::{Route, Rows};
use drllm_engine::{LayerPath, LoadedModel, PathCache, PrefixCache, PrefixStats, SkippedKv};

use crate::error::Result;

/// An evaluation's prefix cache (see the module doc); shared by reference, so one command's
/// static and routed passes can use it in turn. It serves the paths and one router's routes.
/// Each entry keeps, per position, the layers a token route ran there, so that a hit reports
/// the compute of the prompt it skipped.
#[derive(Debug)]
pub struct PromptCache {
    inner: Mutex<PrefixCache<Arc<Vec<u32>>>>,
}

/// A prompt run from the longest start the cache held.
#[derive(Debug)]
pub struct Prompted {
    /// Hidden rows of the positions computed (the last is the prompt's last).
    pub hidden: Tensor,
    /// Keys and values of the whole prompt.
    pub cache: PathCache,
    /// Of the positions reused, the layers each ran (a token route's; empty for a path).
    pub reused: Vec<u32>,
}

impl PromptCache {
    /// A cache of at most `budget` bytes of keys and values (0: keeps nothing, every prompt runs
    /// whole).
    pub fn new(budget: usize) -> Self {
        Self {
            inner: Mutex::new(PrefixCache::new(budget)),
        }
    }

    /// Hits, misses, reused tokens and size so far.
    pub fn stats(&self) -> PrefixStats {
        self.lock().stats()
    }

    /// The route key of a fixed layer path.
    pub fn path_key(path: &LayerPath) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("path", path.layers()).hash(&mut h);
        h.finish()
    }

    /// The route key of a token route whose gates skip below `cut`, with `kv` for skipped
    /// tokens' keys. It tells apart the knobs of one router: a cache serves one router.
    pub fn token_key(cut: f32, kv: SkippedKv) -> u64 {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        ("tokens", cut.to_bits(), kv).hash(&mut h);
        h.finish()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PrefixCache<Arc<Vec<u32>>>> {
        // A panic while holding the lock left at worst a stale entry list, still consistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `prompt` along `route` (a path, or a token route on the full path) from the longest
    /// start the cache holds under `key`, at least 2 rows computed (a prompt's kernels). Keep
    /// it with [`PromptCache::keep`] for later prompts.
    pub fn run_prompt(
        &self,
        lm: &LoadedModel,
        prompt: &[u32],
        key: u64,
        route: Route<'_>,
    ) -> Result<Prompted> {
        let model = &lm.model;
        let hit = self.lock().lookup(key, prompt, 2, |shared, _| shared)?;
        let (mut cache, start, reused) = match hit {
            Some(h) => {
                let ran = h.data.get(..h.reused).map(<[u32]>::to_vec);
                (h.cache, h.reused, ran.unwrap_or_default())
            }
            None => {
                let path = match &route {
                    Route::Path { path, .. } => (*path).clone(),
                    _ => LayerPath::full(model.num_layers()),
                };
                (PathCache::new(&path), 0, Vec::new())
            }
        };
        let x = model.embed(&prompt[start..])?;
        let rows = Rows::Cached {
            cache: &mut cache,
            start,
        };
        let hidden = model.run_path(x, rows, route, |_, _, _| ())?.hidden;
        Ok(Prompted {
            hidden,
            cache,
            reused,
        })
    }

    /// Keeps `prompt`'s keys and values, with the layers a token route ran at each position
    /// (empty for a path).
    pub fn keep(&self, key: u64, prompt: &[u32], cache: &PathCache, ran: Vec<u32>) {
        (self.lock()).insert(key, prompt.to_vec(), cache.clone(), Arc::new(ran));
    }
}
