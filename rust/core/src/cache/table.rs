//! The exact-match table: byte keys → byte values with a TTL each, bounded by an LRU.
//!
//! The exact cache keeps answers here under a hash of the request; the semantic cache keeps
//! each entry's payload here under its id (so TTL and LRU are the same code for both, and
//! `put` reports the evicted keys so the caller can drop their vectors). Slots live in one
//! `Vec` linked into a recency list by index: a hit is a hash lookup plus four index writes,
//! no allocation.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use crate::error::{CoreError, CoreResult};

const NIL: u32 = u32::MAX;

struct Slot {
    key: Box<[u8]>,
    value: Vec<u8>,
    expires_at: f64,
    scope: u64,
    prev: u32,
    next: u32,
}

/// Why an entry left the table (counted separately for metrics).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableCounters {
    pub evictions: u64,
    pub expirations: u64,
}

pub struct ExactTable {
    map: HashMap<Box<[u8]>, u32>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    /// Most recently used.
    head: u32,
    /// Least recently used: the next to go.
    tail: u32,
    max_entries: usize,
    counters: TableCounters,
}

impl ExactTable {
    pub fn new(max_entries: usize) -> CoreResult<Self> {
        if max_entries == 0 || max_entries >= NIL as usize {
            return Err(CoreError::InvalidArgument(format!(
                "max_entries must be between 1 and {}, got {max_entries}",
                NIL - 1
            )));
        }
        Ok(Self {
            map: HashMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            max_entries,
            counters: TableCounters::default(),
        })
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    pub fn counters(&self) -> TableCounters {
        self.counters
    }

    fn unlink(&mut self, i: u32) {
        let (prev, next) = (self.slots[i as usize].prev, self.slots[i as usize].next);
        if prev == NIL {
            self.head = next;
        } else {
            self.slots[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.slots[next as usize].prev = prev;
        }
    }

    fn link_front(&mut self, i: u32) {
        self.slots[i as usize].prev = NIL;
        self.slots[i as usize].next = self.head;
        if self.head != NIL {
            self.slots[self.head as usize].prev = i;
        }
        self.head = i;
        if self.tail == NIL {
            self.tail = i;
        }
    }

    fn drop_slot(&mut self, i: u32) -> Box<[u8]> {
        self.unlink(i);
        let slot = &mut self.slots[i as usize];
        let key = std::mem::take(&mut slot.key);
        slot.value = Vec::new();
        self.map.remove(&key);
        self.free.push(i);
        key
    }

    /// The value under `key` if present and not expired at `now` (unix seconds); a hit
    /// makes it the most recently used, an expired entry is dropped.
    pub fn get(&mut self, key: &[u8], now: f64) -> Option<&[u8]> {
        let i = *self.map.get(key)?;
        if self.slots[i as usize].expires_at <= now {
            self.drop_slot(i);
            self.counters.expirations += 1;
            return None;
        }
        self.unlink(i);
        self.link_front(i);
        Some(&self.slots[i as usize].value)
    }

    /// Like `get` without touching recency: `(value, expires_at, scope)`.
    pub fn peek(&self, key: &[u8], now: f64) -> Option<(&[u8], f64, u64)> {
        let slot = &self.slots[*self.map.get(key)? as usize];
        (slot.expires_at > now).then_some((&slot.value, slot.expires_at, slot.scope))
    }

    /// Stores `value` until `expires_at`; returns the keys pushed out to stay within
    /// `max_entries` (least recently used first).
    pub fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        expires_at: f64,
        scope: u64,
        now: f64,
    ) -> Vec<Box<[u8]>> {
        if let Some(&i) = self.map.get(key) {
            let slot = &mut self.slots[i as usize];
            slot.value = value;
            slot.expires_at = expires_at;
            slot.scope = scope;
            self.unlink(i);
            self.link_front(i);
            return Vec::new();
        }
        let mut evicted = Vec::new();
        while self.map.len() >= self.max_entries && self.tail != NIL {
            let victim = self.tail;
            if self.slots[victim as usize].expires_at <= now {
                self.counters.expirations += 1;
            } else {
                self.counters.evictions += 1;
            }
            evicted.push(self.drop_slot(victim));
        }
        let key: Box<[u8]> = key.into();
        let slot = Slot {
            key: key.clone(),
            value,
            expires_at,
            scope,
            prev: NIL,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        self.map.insert(key, i);
        self.link_front(i);
        evicted
    }

    pub fn remove(&mut self, key: &[u8]) -> bool {
        match self.map.get(key) {
            Some(&i) => {
                self.drop_slot(i);
                true
            }
            None => false,
        }
    }

    /// Drops every entry stored with `scope`; returns their keys.
    pub fn remove_scope(&mut self, scope: u64) -> Vec<Box<[u8]>> {
        let victims: Vec<u32> = self
            .map
            .values()
            .copied()
            .filter(|&i| self.slots[i as usize].scope == scope)
            .collect();
        victims.into_iter().map(|i| self.drop_slot(i)).collect()
    }

    /// Drops every entry expired at `now`; returns their keys.
    pub fn purge_expired(&mut self, now: f64) -> Vec<Box<[u8]>> {
        let victims: Vec<u32> = self
            .map
            .values()
            .copied()
            .filter(|&i| self.slots[i as usize].expires_at <= now)
            .collect();
        self.counters.expirations += victims.len() as u64;
        victims.into_iter().map(|i| self.drop_slot(i)).collect()
    }

    pub fn clear(&mut self) -> usize {
        let n = self.map.len();
        self.map.clear();
        self.slots.clear();
        self.free.clear();
        self.head = NIL;
        self.tail = NIL;
        n
    }

    /// Keys from least to most recently used.
    pub fn keys(&self) -> Vec<Box<[u8]>> {
        let mut out = Vec::with_capacity(self.map.len());
        let mut i = self.tail;
        while i != NIL {
            out.push(self.slots[i as usize].key.clone());
            i = self.slots[i as usize].prev;
        }
        out
    }

    /// Writes every live entry, oldest first (so a reload restores the recency order), to
    /// a temporary file renamed over `path`.
    pub fn save(&self, path: &Path, now: f64) -> CoreResult<()> {
        let tmp = path.with_extension("tmp");
        let io = |e: std::io::Error| CoreError::Storage(format!("{}: {e}", path.display()));
        {
            let mut w = BufWriter::new(File::create(&tmp).map_err(io)?);
            w.write_all(TABLE_MAGIC).map_err(io)?;
            let mut i = self.tail;
            while i != NIL {
                let s = &self.slots[i as usize];
                if s.expires_at > now {
                    w.write_all(&(s.key.len() as u32).to_le_bytes())
                        .map_err(io)?;
                    w.write_all(&s.key).map_err(io)?;
                    w.write_all(&(s.value.len() as u32).to_le_bytes())
                        .map_err(io)?;
                    w.write_all(&s.value).map_err(io)?;
                    w.write_all(&s.expires_at.to_le_bytes()).map_err(io)?;
                    w.write_all(&s.scope.to_le_bytes()).map_err(io)?;
                }
                i = s.prev;
            }
            w.flush().map_err(io)?;
            w.get_ref().sync_all().map_err(io)?;
        }
        std::fs::rename(&tmp, path).map_err(io)
    }

    /// Loads entries saved by [`save`](Self::save) that are still fresh at `now` into a
    /// table of `max_entries` (the newest win when the snapshot holds more).
    pub fn load(path: &Path, max_entries: usize, now: f64) -> CoreResult<Self> {
        let bad = |what: &str| {
            CoreError::Storage(format!(
                "{}: not a valid table snapshot ({what})",
                path.display()
            ))
        };
        let file =
            File::open(path).map_err(|e| CoreError::Storage(format!("{}: {e}", path.display())))?;
        let mut r = BufReader::new(file);
        let mut magic = [0u8; 8];
        r.read_exact(&mut magic).map_err(|_| bad("truncated"))?;
        if &magic != TABLE_MAGIC {
            return Err(bad("bad magic"));
        }
        let mut table = Self::new(max_entries)?;
        let mut word = [0u8; 4];
        loop {
            match r.read(&mut word[..1]) {
                Ok(0) => break,
                Ok(_) => {}
                Err(_) => return Err(bad("read error")),
            }
            r.read_exact(&mut word[1..]).map_err(|_| bad("truncated"))?;
            let field = |r: &mut BufReader<File>, len: usize| -> CoreResult<Vec<u8>> {
                if len > 1 << 30 {
                    return Err(bad("field too long"));
                }
                let mut v = vec![0u8; len];
                r.read_exact(&mut v).map_err(|_| bad("truncated"))?;
                Ok(v)
            };
            let key = field(&mut r, u32::from_le_bytes(word) as usize)?;
            r.read_exact(&mut word).map_err(|_| bad("truncated"))?;
            let value = field(&mut r, u32::from_le_bytes(word) as usize)?;
            let tail = field(&mut r, 16)?;
            let expires_at =
                f64::from_le_bytes(tail[..8].try_into().map_err(|_| bad("truncated"))?);
            let scope = u64::from_le_bytes(tail[8..].try_into().map_err(|_| bad("truncated"))?);
            if expires_at > now {
                table.put(&key, value, expires_at, scope, now);
            }
        }
        table.counters = TableCounters::default();
        Ok(table)
    }
}

const TABLE_MAGIC: &[u8; 8] = b"HFEXT001";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lru_evicts_least_recently_used() {
        let mut t = ExactTable::new(2).unwrap();
        assert!(t.put(b"a", b"1".to_vec(), 100.0, 0, 0.0).is_empty());
        assert!(t.put(b"b", b"2".to_vec(), 100.0, 0, 0.0).is_empty());
        assert_eq!(t.get(b"a", 1.0), Some(&b"1"[..]));
        let evicted = t.put(b"c", b"3".to_vec(), 100.0, 0, 1.0);
        assert_eq!(evicted, vec![Box::from(&b"b"[..])]);
        assert_eq!(t.get(b"b", 1.0), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.counters().evictions, 1);
        assert_eq!(t.keys(), vec![Box::from(&b"a"[..]), Box::from(&b"c"[..])]);
    }

    #[test]
    fn ttl_expires_entries() {
        let mut t = ExactTable::new(10).unwrap();
        t.put(b"k", b"v".to_vec(), 10.0, 7, 0.0);
        assert!(t.get(b"k", 9.9).is_some());
        assert!(t.get(b"k", 10.0).is_none());
        assert!(t.is_empty());
        assert_eq!(t.counters().expirations, 1);
        t.put(b"x", b"v".to_vec(), 5.0, 7, 0.0);
        t.put(b"y", b"v".to_vec(), 50.0, 8, 0.0);
        assert_eq!(t.purge_expired(6.0).len(), 1);
        assert_eq!(t.remove_scope(8).len(), 1);
        assert!(t.is_empty());
    }

    #[test]
    fn snapshot_roundtrip_keeps_order_and_drops_expired() {
        let path = std::env::temp_dir().join(format!("hf-table-{}.bin", std::process::id()));
        let mut t = ExactTable::new(10).unwrap();
        t.put(b"old", b"1".to_vec(), 100.0, 1, 0.0);
        t.put(b"gone", b"2".to_vec(), 5.0, 1, 0.0);
        t.put(b"new", b"3".to_vec(), 100.0, 2, 0.0);
        t.save(&path, 1.0).unwrap();
        let u = ExactTable::load(&path, 10, 6.0).unwrap();
        assert_eq!(
            u.keys(),
            vec![Box::from(&b"old"[..]), Box::from(&b"new"[..])]
        );
        assert_eq!(u.peek(b"new", 6.0), Some((&b"3"[..], 100.0, 2)));
        std::fs::write(&path, b"HFEXT001\x05\x00").unwrap();
        assert!(ExactTable::load(&path, 10, 0.0).is_err());
        std::fs::remove_file(&path).unwrap();
    }
}
