//! The vector index of the semantic cache.
//!
//! Entries live in partitions, one per scope (route/model + system prompt + tools +
//! tenant): a lookup can only ever see its own scope, which is the tenant-isolation rule
//! enforced by construction rather than by a filter that could be forgotten. A partition is
//! scanned exactly (SIMD dot products) while it is small, and gets an HNSW graph (Malkov &
//! Yashunin 2018) once it holds `ann_threshold` live entries, because a 100k × 384-d f32
//! scan costs ~15 ms on one core and the budget is 1 ms.
//!
//! Why a hand-written HNSW instead of a crate: `hnsw_rs`/`instant-distance` pull rayon,
//! serde and their own storage formats (minutes of compile on the 2-core CI box), cannot
//! store f16/int8 vectors we quantise ourselves, and none supports a per-partition graph
//! plus tombstone deletes with our snapshot format. The algorithm is ~250 lines here and is
//! tested for recall against the exact scan.
//!
//! Vectors are normalised on the way in, so every score is a cosine similarity. Storage is
//! f32, f16 (half the memory, ~1e-3 score error) or int8 (a quarter, ~1e-2).

use std::cell::RefCell;
use std::cmp::{Ordering, Reverse};
use std::collections::{BinaryHeap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use super::simd::{dequantize_i8, dot_f16, dot_f32, dot_i8, f16_to_f32, f32_to_f16, quantize_i8};
use crate::error::{CoreError, CoreResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StorageKind {
    F32,
    F16,
    I8,
}

impl StorageKind {
    pub fn parse(name: &str) -> CoreResult<Self> {
        match name {
            "f32" => Ok(Self::F32),
            "f16" => Ok(Self::F16),
            "int8" | "i8" => Ok(Self::I8),
            other => Err(CoreError::InvalidArgument(format!(
                "storage must be f32, f16 or int8, got {other:?}"
            ))),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::I8 => "int8",
        }
    }

    fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::F16 => 1,
            Self::I8 => 2,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexParams {
    pub storage: StorageKind,
    /// Links per node and layer (layer 0 keeps twice as many).
    pub m: usize,
    pub ef_construction: usize,
    /// Candidates kept while searching; raised to k when k is larger.
    pub ef_search: usize,
    /// A partition gets a graph once it holds this many live entries.
    pub ann_threshold: usize,
}

impl Default for IndexParams {
    fn default() -> Self {
        Self {
            storage: StorageKind::F32,
            m: 16,
            ef_construction: 64,
            ef_search: 96,
            ann_threshold: 4096,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
struct Scored(f32, u32);

impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Scored {
    fn cmp(&self, other: &Self) -> Ordering {
        self.0.total_cmp(&other.0).then(other.1.cmp(&self.1))
    }
}

enum Store {
    F32(Vec<f32>),
    F16(Vec<u16>),
    I8(Vec<i8>),
}

impl Store {
    fn new(kind: StorageKind) -> Self {
        match kind {
            StorageKind::F32 => Store::F32(Vec::new()),
            StorageKind::F16 => Store::F16(Vec::new()),
            StorageKind::I8 => Store::I8(Vec::new()),
        }
    }

    fn push(&mut self, v: &[f32]) {
        match self {
            Store::F32(s) => s.extend_from_slice(v),
            Store::F16(s) => s.extend(v.iter().map(|x| f32_to_f16(*x))),
            Store::I8(s) => s.extend(v.iter().map(|x| quantize_i8(*x))),
        }
    }

    #[inline]
    fn dot(&self, q: &[f32], i: usize) -> f32 {
        let d = q.len();
        match self {
            Store::F32(s) => dot_f32(q, &s[i * d..(i + 1) * d]),
            Store::F16(s) => dot_f16(q, &s[i * d..(i + 1) * d]),
            Store::I8(s) => dot_i8(q, &s[i * d..(i + 1) * d]),
        }
    }

    /// The stored vector `i`: borrowed for f32, decoded into `buf` otherwise.
    fn vector<'a>(&'a self, i: usize, dim: usize, buf: &'a mut Vec<f32>) -> &'a [f32] {
        let range = i * dim..(i + 1) * dim;
        match self {
            Store::F32(s) => &s[range],
            Store::F16(s) => {
                buf.clear();
                buf.extend(s[range].iter().map(|h| f16_to_f32(*h)));
                buf
            }
            Store::I8(s) => {
                buf.clear();
                buf.extend(s[range].iter().map(|q| dequantize_i8(*q)));
                buf
            }
        }
    }
}

#[derive(Default)]
struct Visited {
    marks: Vec<u32>,
    epoch: u32,
}

impl Visited {
    fn reset(&mut self, n: usize) {
        if self.marks.len() < n {
            self.marks.resize(n, 0);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if self.epoch == 0 {
            self.marks.fill(0);
            self.epoch = 1;
        }
    }

    #[inline]
    fn insert(&mut self, i: u32) -> bool {
        let slot = &mut self.marks[i as usize];
        if *slot == self.epoch {
            false
        } else {
            *slot = self.epoch;
            true
        }
    }
}

thread_local! {
    // One visited list per thread, reused across searches: no allocation per lookup, and
    // searches holding the read lock on different threads never share it.
    static VISITED: RefCell<Visited> = RefCell::new(Visited::default());
}

struct Graph {
    entry: u32,
    max_level: usize,
    levels: Vec<u8>,
    /// `links[node][level]`: the node's neighbours on that layer.
    links: Vec<Vec<Vec<u32>>>,
    rng: u64,
}

impl Graph {
    fn new(seed: u64) -> Self {
        Graph {
            entry: 0,
            max_level: 0,
            levels: Vec::new(),
            links: Vec::new(),
            rng: seed | 1,
        }
    }

    fn random_level(&mut self, m: usize) -> usize {
        // xorshift64*; level = floor(-ln(U) / ln(M)).
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let r = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        let u = ((r >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
        ((-u.ln() / (m as f64).ln()) as usize).min(16)
    }

    fn greedy(&self, store: &Store, q: &[f32], mut ep: u32, from: usize, to: usize) -> Scored {
        let mut best = store.dot(q, ep as usize);
        for level in (to..=from).rev() {
            loop {
                let mut changed = false;
                for &nb in &self.links[ep as usize][level] {
                    let s = store.dot(q, nb as usize);
                    if s > best {
                        best = s;
                        ep = nb;
                        changed = true;
                    }
                }
                if !changed {
                    break;
                }
            }
        }
        Scored(best, ep)
    }

    /// The `ef` best nodes on `level` reachable from `eps`, best first.
    fn search_layer(
        &self,
        store: &Store,
        q: &[f32],
        eps: &[Scored],
        ef: usize,
        level: usize,
    ) -> Vec<Scored> {
        VISITED.with_borrow_mut(|visited| {
            visited.reset(self.levels.len());
            let mut candidates: BinaryHeap<Scored> = BinaryHeap::with_capacity(ef * 4);
            let mut results: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(ef + 1);
            for ep in eps {
                if visited.insert(ep.1) {
                    candidates.push(*ep);
                    results.push(Reverse(*ep));
                }
            }
            while results.len() > ef {
                results.pop();
            }
            while let Some(c) = candidates.pop() {
                let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                if c.0 < worst && results.len() >= ef {
                    break;
                }
                for &nb in &self.links[c.1 as usize][level] {
                    if !visited.insert(nb) {
                        continue;
                    }
                    let s = store.dot(q, nb as usize);
                    let worst = results.peek().map_or(f32::NEG_INFINITY, |r| r.0 .0);
                    if results.len() < ef || s > worst {
                        candidates.push(Scored(s, nb));
                        results.push(Reverse(Scored(s, nb)));
                        if results.len() > ef {
                            results.pop();
                        }
                    }
                }
            }
            let mut out: Vec<Scored> = results.into_iter().map(|r| r.0).collect();
            out.sort_unstable_by(|a, b| b.cmp(a));
            out
        })
    }

    /// HNSW's neighbour heuristic: keep a candidate only if it is closer to the base than to
    /// every neighbour already kept, so links spread out in different directions (this is
    /// what keeps recall high on clustered data, where plain nearest-M links form cliques).
    fn select(store: &Store, dim: usize, sorted: &[Scored], m: usize) -> Vec<u32> {
        let mut kept: Vec<u32> = Vec::with_capacity(m);
        let mut buf = Vec::with_capacity(dim);
        for c in sorted {
            if kept.len() >= m {
                break;
            }
            let v = store.vector(c.1 as usize, dim, &mut buf);
            if kept.iter().all(|&r| store.dot(v, r as usize) < c.0) {
                kept.push(c.1);
            }
        }
        kept
    }

    fn insert(&mut self, store: &Store, dim: usize, node: u32, q: &[f32], p: &IndexParams) {
        let level = self.random_level(p.m);
        self.levels.push(level as u8);
        self.links.push(vec![Vec::new(); level + 1]);
        if node == 0 {
            self.entry = 0;
            self.max_level = level;
            return;
        }
        let top = self.max_level;
        let mut eps = vec![if level < top {
            self.greedy(store, q, self.entry, top, level + 1)
        } else {
            Scored(store.dot(q, self.entry as usize), self.entry)
        }];
        let mut buf = Vec::with_capacity(dim);
        for l in (0..=level.min(top)).rev() {
            let found = self.search_layer(store, q, &eps, p.ef_construction, l);
            let neighbours = Self::select(store, dim, &found, p.m);
            let max_links = if l == 0 { 2 * p.m } else { p.m };
            for &nb in &neighbours {
                let list = &mut self.links[nb as usize][l];
                list.push(node);
                if list.len() > max_links {
                    let base = store.vector(nb as usize, dim, &mut buf).to_vec();
                    let mut scored: Vec<Scored> = self.links[nb as usize][l]
                        .iter()
                        .map(|&x| Scored(store.dot(&base, x as usize), x))
                        .collect();
                    scored.sort_unstable_by(|a, b| b.cmp(a));
                    self.links[nb as usize][l] = Self::select(store, dim, &scored, max_links);
                }
            }
            self.links[node as usize][l] = neighbours;
            eps = found;
        }
        if level > top {
            self.entry = node;
            self.max_level = level;
        }
    }

    fn search(&self, store: &Store, q: &[f32], ef: usize) -> Vec<Scored> {
        let ep = if self.max_level > 0 {
            self.greedy(store, q, self.entry, self.max_level, 1)
        } else {
            Scored(store.dot(q, self.entry as usize), self.entry)
        };
        self.search_layer(store, q, &[ep], ef, 0)
    }
}

struct Partition {
    ids: Vec<i64>,
    store: Store,
    deleted: Vec<bool>,
    live: usize,
    graph: Option<Graph>,
}

impl Partition {
    fn new(kind: StorageKind) -> Self {
        Partition {
            ids: Vec::new(),
            store: Store::new(kind),
            deleted: Vec::new(),
            live: 0,
            graph: None,
        }
    }

    fn push(&mut self, id: i64, v: &[f32], p: &IndexParams, dim: usize, seed: u64) -> u32 {
        let slot = self.ids.len() as u32;
        self.ids.push(id);
        self.store.push(v);
        self.deleted.push(false);
        self.live += 1;
        match &mut self.graph {
            Some(g) => g.insert(&self.store, dim, slot, v, p),
            None if self.live >= p.ann_threshold => self.build_graph(p, dim, seed),
            None => {}
        }
        slot
    }

    fn build_graph(&mut self, p: &IndexParams, dim: usize, seed: u64) {
        let mut g = Graph::new(seed);
        let mut buf = Vec::with_capacity(dim);
        for i in 0..self.ids.len() {
            let v = self.store.vector(i, dim, &mut buf).to_vec();
            g.insert(&self.store, dim, i as u32, &v, p);
        }
        self.graph = Some(g);
    }

    fn search(&self, q: &[f32], k: usize, ef: usize, exact: bool) -> Vec<(i64, f32)> {
        let mut out = Vec::with_capacity(k);
        match &self.graph {
            Some(g) if !exact => {
                // Tombstones are walked through but never returned; ask for enough extra.
                let want = (ef.max(k) + (self.ids.len() - self.live).min(ef)).max(k);
                for s in g.search(&self.store, q, want) {
                    if !self.deleted[s.1 as usize] {
                        out.push((self.ids[s.1 as usize], s.0));
                        if out.len() == k {
                            break;
                        }
                    }
                }
            }
            _ => {
                let mut top: BinaryHeap<Reverse<Scored>> = BinaryHeap::with_capacity(k + 1);
                for i in 0..self.ids.len() {
                    if self.deleted[i] {
                        continue;
                    }
                    let s = self.store.dot(q, i);
                    if top.len() < k {
                        top.push(Reverse(Scored(s, i as u32)));
                    } else if top.peek().is_some_and(|w| s > w.0 .0) {
                        top.pop();
                        top.push(Reverse(Scored(s, i as u32)));
                    }
                }
                let mut v: Vec<Scored> = top.into_iter().map(|r| r.0).collect();
                v.sort_unstable_by(|a, b| b.cmp(a));
                out.extend(v.into_iter().map(|s| (self.ids[s.1 as usize], s.0)));
            }
        }
        out
    }
}

/// A thread-compatible index (wrap it in a lock to share it); see the module docs.
pub struct VectorIndex {
    dim: usize,
    params: IndexParams,
    parts: HashMap<u64, Partition>,
    locate: HashMap<i64, (u64, u32)>,
    seed: u64,
}

impl VectorIndex {
    pub fn new(dim: usize, params: IndexParams) -> CoreResult<Self> {
        if dim == 0 || dim > 65_536 {
            return Err(CoreError::InvalidArgument(format!(
                "dimensions must be between 1 and 65536, got {dim}"
            )));
        }
        if params.m < 2 || params.m > 256 || params.ef_construction == 0 || params.ef_search == 0 {
            return Err(CoreError::InvalidArgument(
                "m must be in 2..=256 and ef_construction, ef_search at least 1".into(),
            ));
        }
        Ok(Self {
            dim,
            params,
            parts: HashMap::new(),
            locate: HashMap::new(),
            seed: 0x5eed_cafe_f00d_d00d,
        })
    }

    pub fn dimensions(&self) -> usize {
        self.dim
    }

    pub fn params(&self) -> IndexParams {
        self.params
    }

    /// Live entries in all scopes.
    pub fn len(&self) -> usize {
        self.locate.len()
    }

    pub fn is_empty(&self) -> bool {
        self.locate.is_empty()
    }

    pub fn contains(&self, id: i64) -> bool {
        self.locate.contains_key(&id)
    }

    /// `(scope, live entries, has an ANN graph)` for every non-empty scope.
    pub fn scopes(&self) -> Vec<(u64, usize, bool)> {
        let mut v: Vec<_> = self
            .parts
            .iter()
            .filter(|(_, p)| p.live > 0)
            .map(|(s, p)| (*s, p.live, p.graph.is_some()))
            .collect();
        v.sort_unstable();
        v
    }

    fn normalised(&self, v: &[f32]) -> CoreResult<Vec<f32>> {
        if v.len() != self.dim {
            return Err(CoreError::Dimension {
                expected: self.dim,
                got: v.len(),
            });
        }
        if !v.iter().all(|x| x.is_finite()) {
            return Err(CoreError::InvalidArgument(
                "vectors must be finite (no NaN or infinity)".into(),
            ));
        }
        let norm = dot_f32(v, v).sqrt();
        Ok(if norm > 0.0 {
            v.iter().map(|x| x / norm).collect()
        } else {
            v.to_vec()
        })
    }

    /// Adds (or replaces) entry `id` in `scope`.
    pub fn add(&mut self, scope: u64, id: i64, vector: &[f32]) -> CoreResult<()> {
        let v = self.normalised(vector)?;
        self.remove(id);
        self.seed = self.seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let (params, dim, seed) = (self.params, self.dim, self.seed);
        let part = self
            .parts
            .entry(scope)
            .or_insert_with(|| Partition::new(params.storage));
        let slot = part.push(id, &v, &params, dim, seed);
        self.locate.insert(id, (scope, slot));
        Ok(())
    }

    /// Adds rows of a row-major `(ids.len(), dimensions)` buffer; all or nothing on bad input.
    pub fn add_batch(&mut self, scope: u64, ids: &[i64], vectors: &[f32]) -> CoreResult<()> {
        if vectors.len() != ids.len() * self.dim {
            return Err(CoreError::Dimension {
                expected: ids.len() * self.dim,
                got: vectors.len(),
            });
        }
        if !vectors.iter().all(|x| x.is_finite()) {
            return Err(CoreError::InvalidArgument(
                "vectors must be finite (no NaN or infinity)".into(),
            ));
        }
        for (id, row) in ids.iter().zip(vectors.chunks_exact(self.dim)) {
            self.add(scope, *id, row)?;
        }
        Ok(())
    }

    /// Removes entry `id`; false when it is not there.
    pub fn remove(&mut self, id: i64) -> bool {
        let Some((scope, slot)) = self.locate.remove(&id) else {
            return false;
        };
        let Some(part) = self.parts.get_mut(&scope) else {
            return true;
        };
        part.deleted[slot as usize] = true;
        part.live -= 1;
        if part.live == 0 {
            self.parts.remove(&scope);
        } else if part.ids.len() >= 64 && part.ids.len() - part.live > part.live {
            self.compact(scope);
        }
        true
    }

    /// Rebuilds a partition without its tombstones (amortised: it runs when more than half
    /// of the slots are dead, so each delete pays for at most one move later).
    fn compact(&mut self, scope: u64) {
        let Some(old) = self.parts.remove(&scope) else {
            return;
        };
        let mut part = Partition::new(self.params.storage);
        let mut buf = Vec::with_capacity(self.dim);
        self.seed = self.seed.wrapping_add(1);
        let mut params = self.params;
        // Insert everything flat, then build the graph once if the partition still needs it.
        params.ann_threshold = usize::MAX;
        for i in 0..old.ids.len() {
            if old.deleted[i] {
                continue;
            }
            let v = old.store.vector(i, self.dim, &mut buf).to_vec();
            let slot = part.push(old.ids[i], &v, &params, self.dim, self.seed);
            self.locate.insert(old.ids[i], (scope, slot));
        }
        if part.live >= self.params.ann_threshold {
            part.build_graph(&self.params, self.dim, self.seed);
        }
        self.parts.insert(scope, part);
    }

    /// The live entries of `scope` as ids and a row-major matrix of their (decoded) vectors:
    /// what a GPU copy of the scope is built from.
    pub fn export_scope(&self, scope: u64) -> (Vec<i64>, Vec<f32>) {
        let Some(part) = self.parts.get(&scope) else {
            return (Vec::new(), Vec::new());
        };
        let mut ids = Vec::with_capacity(part.live);
        let mut data = Vec::with_capacity(part.live * self.dim);
        let mut buf = Vec::with_capacity(self.dim);
        for (i, id) in part.ids.iter().enumerate() {
            if !part.deleted[i] {
                ids.push(*id);
                data.extend_from_slice(part.store.vector(i, self.dim, &mut buf));
            }
        }
        (ids, data)
    }

    /// Drops every entry of `scope`; returns their ids.
    pub fn remove_scope(&mut self, scope: u64) -> Vec<i64> {
        let Some(part) = self.parts.remove(&scope) else {
            return Vec::new();
        };
        let mut removed = Vec::with_capacity(part.live);
        for (i, id) in part.ids.iter().enumerate() {
            if !part.deleted[i] {
                self.locate.remove(id);
                removed.push(*id);
            }
        }
        removed
    }

    pub fn clear(&mut self) -> usize {
        let n = self.locate.len();
        self.parts.clear();
        self.locate.clear();
        n
    }

    /// The `k` entries of `scope` most similar to `query`, best first, as (id, cosine).
    /// `exact` forces the full scan (the reference for recall); `ef` overrides `ef_search`.
    pub fn search(
        &self,
        scope: u64,
        query: &[f32],
        k: usize,
        ef: Option<usize>,
        exact: bool,
    ) -> CoreResult<Vec<(i64, f32)>> {
        let q = self.normalised(query)?;
        Ok(match self.parts.get(&scope) {
            Some(part) if k > 0 => part.search(&q, k, ef.unwrap_or(self.params.ef_search), exact),
            _ => Vec::new(),
        })
    }

    /// Searches each row of a row-major query buffer; rows shorter than `k` are padded with
    /// id -1 and score -inf.
    pub fn search_batch(
        &self,
        scope: u64,
        queries: &[f32],
        k: usize,
        ef: Option<usize>,
        exact: bool,
    ) -> CoreResult<(Vec<i64>, Vec<f32>)> {
        if queries.len() % self.dim != 0 {
            return Err(CoreError::Dimension {
                expected: self.dim,
                got: queries.len() % self.dim,
            });
        }
        let n = queries.len() / self.dim;
        let mut ids = vec![-1i64; n * k];
        let mut scores = vec![f32::NEG_INFINITY; n * k];
        for (r, q) in queries.chunks_exact(self.dim).enumerate() {
            for (j, (id, s)) in self.search(scope, q, k, ef, exact)?.into_iter().enumerate() {
                ids[r * k + j] = id;
                scores[r * k + j] = s;
            }
        }
        Ok((ids, scores))
    }

    /// Writes the whole index (vectors, ids, graphs) to `path` atomically (a temporary file
    /// renamed over it), so a crash mid-write leaves the previous snapshot intact.
    pub fn save(&self, path: &Path) -> CoreResult<()> {
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| CoreError::Storage(format!("{}: {e}", path.display()));
        {
            let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
            self.write(&mut w).map_err(io)?;
            w.flush().map_err(io)?;
            w.get_ref().sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        let p = &self.params;
        w.write_all(MAGIC)?;
        for x in [
            self.dim,
            p.m,
            p.ef_construction,
            p.ef_search,
            p.ann_threshold,
        ] {
            w.write_all(&(x as u64).to_le_bytes())?;
        }
        w.write_all(&[p.storage.code()])?;
        w.write_all(&(self.parts.len() as u64).to_le_bytes())?;
        for (scope, part) in &self.parts {
            w.write_all(&scope.to_le_bytes())?;
            w.write_all(&(part.ids.len() as u64).to_le_bytes())?;
            for id in &part.ids {
                w.write_all(&id.to_le_bytes())?;
            }
            let deleted: Vec<u8> = part.deleted.iter().map(|d| u8::from(*d)).collect();
            w.write_all(&deleted)?;
            match &part.store {
                Store::F32(s) => s.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))?,
                Store::F16(s) => s.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))?,
                Store::I8(s) => s.iter().try_for_each(|x| w.write_all(&x.to_le_bytes()))?,
            }
            match &part.graph {
                None => w.write_all(&[0])?,
                Some(g) => {
                    w.write_all(&[1])?;
                    w.write_all(&g.entry.to_le_bytes())?;
                    w.write_all(&(g.max_level as u32).to_le_bytes())?;
                    w.write_all(&g.levels)?;
                    for node in &g.links {
                        for list in node {
                            w.write_all(&(list.len() as u32).to_le_bytes())?;
                            list.iter()
                                .try_for_each(|x| w.write_all(&x.to_le_bytes()))?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Reads a snapshot written by [`save`](Self::save); a damaged file is a `Storage` error,
    /// never a panic or a half-loaded index.
    pub fn load(path: &Path) -> CoreResult<Self> {
        let file =
            File::open(path).map_err(|e| CoreError::Storage(format!("{}: {e}", path.display())))?;
        let mut r = Reader(BufReader::new(file));
        Self::read(&mut r).map_err(|e| {
            CoreError::Storage(format!(
                "{}: not a valid index snapshot ({e})",
                path.display()
            ))
        })
    }

    fn read(r: &mut Reader<impl Read>) -> Result<Self, String> {
        let mut magic = [0u8; 8];
        r.exact(&mut magic)?;
        if &magic != MAGIC {
            return Err("bad magic".into());
        }
        let dim = r.usize(1 << 16)?;
        let m = r.usize(256)?;
        let ef_construction = r.usize(1 << 20)?;
        let ef_search = r.usize(1 << 20)?;
        let ann_threshold = r.u64()? as usize;
        let storage = match r.u8()? {
            0 => StorageKind::F32,
            1 => StorageKind::F16,
            2 => StorageKind::I8,
            _ => return Err("bad storage".into()),
        };
        let params = IndexParams {
            storage,
            m,
            ef_construction,
            ef_search,
            ann_threshold,
        };
        let mut index = VectorIndex::new(dim, params).map_err(|e| e.to_string())?;
        let parts = r.usize(1 << 40)?;
        for _ in 0..parts {
            let scope = r.u64()?;
            let n = r.usize(1 << 32)?;
            let mut part = Partition::new(storage);
            part.ids = (0..n)
                .map(|_| r.u64().map(|x| x as i64))
                .collect::<Result<_, _>>()?;
            let mut deleted = vec![0u8; n];
            r.exact(&mut deleted)?;
            part.deleted = deleted.iter().map(|d| *d != 0).collect();
            part.live = part.deleted.iter().filter(|d| !**d).count();
            let count = n * dim;
            part.store = match storage {
                StorageKind::F32 => Store::F32(
                    (0..count)
                        .map(|_| r.u32().map(f32::from_bits))
                        .collect::<Result<_, _>>()?,
                ),
                StorageKind::F16 => {
                    Store::F16((0..count).map(|_| r.u16()).collect::<Result<_, _>>()?)
                }
                StorageKind::I8 => Store::I8(
                    (0..count)
                        .map(|_| r.u8().map(|b| b as i8))
                        .collect::<Result<_, _>>()?,
                ),
            };
            if r.u8()? == 1 {
                let mut g = Graph::new(index.seed);
                g.entry = r.u32()?;
                g.max_level = r.u32()? as usize;
                g.levels = vec![0u8; n];
                r.exact(&mut g.levels)?;
                for node in 0..n {
                    let lv = g.levels[node] as usize;
                    if lv > 16 {
                        return Err("bad level".into());
                    }
                    let mut lists = Vec::with_capacity(lv + 1);
                    for _ in 0..=lv {
                        let c = r.u32()? as usize;
                        if c > 1024 {
                            return Err("too many links".into());
                        }
                        let list: Vec<u32> = (0..c).map(|_| r.u32()).collect::<Result<_, _>>()?;
                        if list.iter().any(|x| *x as usize >= n) {
                            return Err("link out of range".into());
                        }
                        lists.push(list);
                    }
                    g.links.push(lists);
                }
                if n > 0
                    && (g.entry as usize >= n || g.levels[g.entry as usize] as usize != g.max_level)
                {
                    return Err("bad entry point".into());
                }
                // Links on layer l must point at nodes that exist on layer l.
                for node in &g.links {
                    for (l, list) in node.iter().enumerate() {
                        if list.iter().any(|x| (g.levels[*x as usize] as usize) < l) {
                            return Err("link to a missing layer".into());
                        }
                    }
                }
                part.graph = Some(g);
            }
            for (slot, id) in part.ids.iter().enumerate() {
                if !part.deleted[slot] && index.locate.insert(*id, (scope, slot as u32)).is_some() {
                    return Err(format!("id {id} appears twice"));
                }
            }
            if part.live > 0 {
                index.parts.insert(scope, part);
            }
        }
        let mut rest = [0u8; 1];
        if r.0.read(&mut rest).map_err(|e| e.to_string())? != 0 {
            return Err("trailing bytes".into());
        }
        Ok(index)
    }
}

const MAGIC: &[u8; 8] = b"HFVIDX01";

struct Reader<R: Read>(R);

impl<R: Read> Reader<R> {
    fn exact(&mut self, buf: &mut [u8]) -> Result<(), String> {
        self.0.read_exact(buf).map_err(|e| e.to_string())
    }
    fn u8(&mut self) -> Result<u8, String> {
        let mut b = [0u8; 1];
        self.exact(&mut b)?;
        Ok(b[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        let mut b = [0u8; 2];
        self.exact(&mut b)?;
        Ok(u16::from_le_bytes(b))
    }
    fn u32(&mut self) -> Result<u32, String> {
        let mut b = [0u8; 4];
        self.exact(&mut b)?;
        Ok(u32::from_le_bytes(b))
    }
    fn u64(&mut self) -> Result<u64, String> {
        let mut b = [0u8; 8];
        self.exact(&mut b)?;
        Ok(u64::from_le_bytes(b))
    }
    fn usize(&mut self, max: u64) -> Result<usize, String> {
        let v = self.u64()?;
        if v > max {
            return Err(format!("value {v} out of range"));
        }
        Ok(v as usize)
    }
}
