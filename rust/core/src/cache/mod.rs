//! The response cache's native parts: the hashing embedder, the vector index (exact SIMD
//! scan + HNSW, per-scope partitions) and the exact-match table with TTL and LRU.
//!
//! Python decides what to cache and under which key; everything here is pure data
//! structures with no notion of requests or tenants beyond an opaque `u64` scope.

pub mod embedder;
pub mod index;
pub mod simd;
pub mod table;

pub use embedder::HashingEmbedder;
pub use index::{IndexParams, StorageKind, VectorIndex};
pub use table::{ExactTable, TableCounters};

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Clustered unit vectors, like real embeddings (and harder for a graph than uniform
    /// noise is for the scan).
    fn clustered(n: usize, dim: usize, clusters: usize, seed: u64) -> Vec<f32> {
        let mut state = seed | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
        };
        let centres: Vec<f32> = (0..clusters * dim).map(|_| next()).collect();
        let mut out = Vec::with_capacity(n * dim);
        for i in 0..n {
            let c = &centres[(i % clusters) * dim..(i % clusters + 1) * dim];
            let row: Vec<f32> = c.iter().map(|x| x + 0.6 * next()).collect();
            let norm = row.iter().map(|x| x * x).sum::<f32>().sqrt();
            out.extend(row.iter().map(|x| x / norm));
        }
        out
    }

    fn params(storage: StorageKind, ann_threshold: usize) -> IndexParams {
        IndexParams {
            storage,
            ann_threshold,
            ..IndexParams::default()
        }
    }

    #[test]
    fn hnsw_recall_against_exact_scan() {
        let dim = 48;
        let n = 3000;
        // Queries come from the same distribution as the entries (held out), as in a cache.
        let all = clustered(n + 200, dim, 30, 7);
        let (data, queries) = all.split_at(n * dim);
        for storage in [StorageKind::F32, StorageKind::F16, StorageKind::I8] {
            let mut index = VectorIndex::new(dim, params(storage, 500)).unwrap();
            let ids: Vec<i64> = (0..n as i64).collect();
            index.add_batch(9, &ids, data).unwrap();
            assert_eq!(index.scopes(), vec![(9, n, true)]);
            let mut hits = 0;
            for q in queries.chunks_exact(dim) {
                let approx = index.search(9, q, 10, None, false).unwrap();
                let exact = index.search(9, q, 10, None, true).unwrap();
                assert_eq!(approx.len(), 10);
                assert!(approx.windows(2).all(|w| w[0].1 >= w[1].1));
                hits += usize::from(approx[0].0 == exact[0].0);
            }
            assert!(hits >= 196, "{storage:?}: recall@1 {hits}/200");
        }
    }

    #[test]
    fn scopes_never_mix_and_deletes_are_honoured() {
        let dim = 16;
        let data = clustered(300, dim, 5, 3);
        let mut index = VectorIndex::new(dim, params(StorageKind::F32, 100)).unwrap();
        for (i, row) in data.chunks_exact(dim).enumerate() {
            index.add((i % 3) as u64, i as i64, row).unwrap();
        }
        for (i, q) in data.chunks_exact(dim).enumerate().take(60) {
            let scope = (i % 3) as u64;
            let found = index.search(scope, q, 5, None, false).unwrap();
            assert_eq!(found[0].0, i as i64);
            assert!((found[0].1 - 1.0).abs() < 1e-4);
            assert!(found.iter().all(|(id, _)| (*id % 3) as u64 == scope));
        }
        for i in (0..300).step_by(3) {
            assert!(index.remove(i));
        }
        assert!(!index.remove(0));
        assert!(index
            .search(0, &data[..dim], 5, None, false)
            .unwrap()
            .is_empty());
        assert_eq!(index.len(), 200);
        assert_eq!(index.remove_scope(1).len(), 100);
        assert_eq!(index.len(), 100);
        assert!(matches!(
            index.search(2, &[0.0; 3], 1, None, false),
            Err(crate::CoreError::Dimension { .. })
        ));
    }

    #[test]
    fn snapshot_roundtrip_answers_the_same() {
        let dim = 24;
        let data = clustered(700, dim, 10, 5);
        let path = std::env::temp_dir().join(format!("hf-index-{}.bin", std::process::id()));
        for storage in [StorageKind::F32, StorageKind::F16, StorageKind::I8] {
            let mut index = VectorIndex::new(dim, params(storage, 300)).unwrap();
            let ids: Vec<i64> = (0..700).collect();
            index.add_batch(1, &ids[..400], &data[..400 * dim]).unwrap();
            index.add_batch(2, &ids[400..], &data[400 * dim..]).unwrap();
            index.remove(5);
            index.save(&path).unwrap();
            let loaded = VectorIndex::load(&path).unwrap();
            assert_eq!(loaded.len(), 699);
            assert_eq!(loaded.scopes(), index.scopes());
            for q in data.chunks_exact(dim).take(50) {
                for scope in [1, 2] {
                    assert_eq!(
                        loaded.search(scope, q, 3, None, false).unwrap(),
                        index.search(scope, q, 3, None, false).unwrap()
                    );
                }
            }
        }
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
        assert!(matches!(
            VectorIndex::load(&path),
            Err(crate::CoreError::Storage(_))
        ));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn compaction_keeps_every_live_entry_findable() {
        let dim = 8;
        let data = clustered(400, dim, 4, 11);
        let mut index = VectorIndex::new(dim, params(StorageKind::F32, 64)).unwrap();
        let ids: Vec<i64> = (0..400).collect();
        index.add_batch(0, &ids, &data).unwrap();
        for i in 0..300 {
            index.remove(i);
        }
        assert_eq!(index.len(), 100);
        for (i, q) in data.chunks_exact(dim).enumerate().skip(300) {
            assert_eq!(
                index.search(0, q, 1, Some(200), false).unwrap()[0].0,
                i as i64
            );
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// Whatever is inserted and deleted, the exact scan returns the true top-k of the
        /// live entries in its scope, and the graph search finds each stored vector itself.
        #[test]
        fn exact_scan_is_the_true_top_k(
            n in 1usize..200,
            deletes in proptest::collection::vec(0i64..200, 0..50),
            seed in 1u64..1000,
            k in 1usize..8,
        ) {
            let dim = 12;
            let data = clustered(n, dim, 3, seed);
            let mut index = VectorIndex::new(dim, params(StorageKind::F32, 50)).unwrap();
            let ids: Vec<i64> = (0..n as i64).collect();
            index.add_batch(4, &ids, &data).unwrap();
            for d in &deletes {
                index.remove(*d);
            }
            let live: Vec<i64> = ids.iter().copied().filter(|i| !deletes.contains(i)).collect();
            prop_assert_eq!(index.len(), live.len());
            let q = &data[..dim];
            let found = index.search(4, q, k, None, true).unwrap();
            let mut truth: Vec<(i64, f32)> = live
                .iter()
                .map(|&i| (i, simd::dot_f32(q, &data[i as usize * dim..(i as usize + 1) * dim])))
                .collect();
            truth.sort_by(|a, b| b.1.total_cmp(&a.1));
            truth.truncate(k);
            prop_assert_eq!(found.len(), truth.len());
            for (f, t) in found.iter().zip(&truth) {
                prop_assert!((f.1 - t.1).abs() < 1e-4);
            }
            for &i in live.iter().take(20) {
                let row = &data[i as usize * dim..(i as usize + 1) * dim];
                let top = index.search(4, row, 1, Some(64), false).unwrap();
                prop_assert!((top[0].1 - 1.0).abs() < 1e-4);
            }
        }
    }
}
