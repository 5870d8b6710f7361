//! The durable journal in a SQLite file.
//!
//! WAL mode, one writer: the background writer takes every entry queued since its last
//! commit and writes them in one transaction (group commit), so the cost of a commit is
//! shared by all the requests that finished meanwhile. With `synchronous = FULL` a commit
//! is on stable storage when `append` returns; with `NORMAL` it survives the process being
//! killed (the WAL is in the OS's hands) but not a power cut.
//!
//! Readers (`ledger report` while `serve` runs) use their own connections: WAL lets them
//! read while the writer writes.

use std::collections::HashMap;

use rusqlite::types::ValueRef;
use rusqlite::{params, Connection, OpenFlags};

use super::{Entry, Ledger, Summary, Totals};
use crate::error::{CoreError, CoreResult};

/// The schema; the PostgreSQL store keeps the same columns.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS ledger_entries (
    id INTEGER PRIMARY KEY,
    ts_ms INTEGER NOT NULL,
    request_id TEXT NOT NULL,
    key_name TEXT,
    user_name TEXT,
    team TEXT,
    tags TEXT NOT NULL DEFAULT '',
    route TEXT NOT NULL,
    deployment TEXT,
    model_group TEXT,
    provider TEXT,
    model TEXT,
    input_tokens INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cached_input_tokens INTEGER NOT NULL,
    cache_write_tokens INTEGER NOT NULL,
    reasoning_tokens INTEGER NOT NULL,
    cost INTEGER NOT NULL,
    saved_cost INTEGER NOT NULL,
    latency_ms REAL NOT NULL,
    ttft_ms REAL,
    status INTEGER NOT NULL,
    cache TEXT NOT NULL,
    fallbacks INTEGER NOT NULL,
    estimated INTEGER NOT NULL,
    parent_id TEXT
);
CREATE INDEX IF NOT EXISTS ledger_entries_ts ON ledger_entries (ts_ms);
CREATE TABLE IF NOT EXISTS ledger_budgets (
    scope TEXT NOT NULL,
    name TEXT NOT NULL,
    \"window\" TEXT NOT NULL,
    limit_picos BIGINT NOT NULL,
    soft_fraction DOUBLE PRECISION NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (scope, name, \"window\")
);
";

const INSERT: &str = "INSERT INTO ledger_entries (ts_ms, request_id, key_name, user_name, team, \
    tags, route, deployment, model_group, provider, model, input_tokens, output_tokens, \
    cached_input_tokens, cache_write_tokens, reasoning_tokens, cost, saved_cost, latency_ms, \
    ttft_ms, status, cache, fallbacks, estimated, parent_id) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, \
    ?19, ?20, ?21, ?22, ?23, ?24, ?25)";

/// The `GROUP BY` that rebuilds the books from PostgreSQL on restart: the server sums and
/// sends one row per hour and combination of dimensions, far fewer than entries.
pub const SUMMARY_QUERY: &str = "SELECT (ts_ms / 3600000) * 3600000 AS hour, key_name, user_name, \
    team, model_group, deployment, provider, route, COUNT(*), \
    SUM(CASE WHEN status >= 400 THEN 1 ELSE 0 END), SUM(estimated), \
    SUM(CASE WHEN cache IN ('hit', 'semantic-hit') THEN 1 ELSE 0 END), \
    SUM(input_tokens), SUM(output_tokens), SUM(cached_input_tokens), SUM(cache_write_tokens), \
    SUM(reasoning_tokens), SUM(cost), SUM(saved_cost) \
    FROM ledger_entries GROUP BY 1, 2, 3, 4, 5, 6, 7, 8";

/// A budget changed through the admin API, as stored: `(scope, name or "", window, limit,
/// soft_fraction, deleted)`.
pub type StoredBudget = (String, String, String, i64, f64, bool);

/// The columns `export_page` returns after the row id, in the order of `INSERT`, before
/// `parent_id` (which a file from before it, opened read-only and so not migrated, lacks).
pub const COLUMNS: &str = "ts_ms, request_id, key_name, user_name, team, tags, route, \
    deployment, model_group, provider, model, input_tokens, output_tokens, cached_input_tokens, \
    cache_write_tokens, reasoning_tokens, cost, saved_cost, latency_ms, ttft_ms, status, cache, \
    fallbacks, estimated";

/// Columns added after the first release: `(name, type)`. A file without one gets it by
/// `ALTER TABLE ... ADD COLUMN` when opened for writing (existing rows read NULL, and
/// SQLite adds a nullable column without rewriting the table).
const ADDED_COLUMNS: &[(&str, &str)] = &[("parent_id", "TEXT")];

/// Finds a chain's steps for `export_page` (created after `ADDED_COLUMNS` are in place).
pub const PARENT_INDEX: &str = "CREATE INDEX IF NOT EXISTS ledger_entries_parent \
    ON ledger_entries (parent_id) WHERE parent_id IS NOT NULL";

/// One exported row: the row id, then `COLUMNS`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportRow {
    pub id: i64,
    pub entry: Entry,
}

/// All access to a ledger file from one process goes through this connection: SQLite's
/// POSIX locks are per process, so a second SQLite library (Python's `sqlite3`) closing the
/// same file would drop this one's locks and could delete its write-ahead log.
const SCAN_QUERY: &str = "SELECT ts_ms, key_name, user_name, team, model_group, deployment, \
    provider, route, status, estimated, cache, input_tokens, output_tokens, cached_input_tokens, \
    cache_write_tokens, reasoning_tokens, cost, saved_cost FROM ledger_entries";

pub struct SqliteStore {
    conn: Connection,
    // Whether the table has `parent_id` (false only for an old file opened read-only).
    has_parent: bool,
}

fn storage(err: rusqlite::Error) -> CoreError {
    CoreError::Storage(format!("ledger store: {err}"))
}

impl SqliteStore {
    /// Opens (creating if needed) the ledger file.
    pub fn open(path: &str, synchronous_full: bool) -> CoreResult<SqliteStore> {
        let conn = Connection::open(path).map_err(storage)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(storage)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(storage)?;
        if !mode.eq_ignore_ascii_case("wal") && path != ":memory:" {
            return Err(CoreError::Storage(format!(
                "ledger store: {path} cannot use write-ahead logging (journal_mode is {mode})"
            )));
        }
        let sync = if synchronous_full { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
            .map_err(storage)?;
        conn.execute_batch(SCHEMA).map_err(storage)?;
        migrate(&conn)?;
        Ok(SqliteStore {
            conn,
            has_parent: true,
        })
    }

    /// Whether a commit past this many pages of write-ahead log also copies the log into
    /// the database file (SQLite's default, 1000 pages) or, with 0, never does: then
    /// `checkpoint` on a second connection does it, so a committer on a latency-sensitive
    /// thread never waits for the copy and its fsyncs.
    pub fn set_autocheckpoint(&self, pages: u32) -> CoreResult<()> {
        self.conn
            .execute_batch(&format!("PRAGMA wal_autocheckpoint = {pages};"))
            .map_err(storage)
    }

    /// Copies the committed write-ahead log into the database file without blocking
    /// writers on other connections (a PASSIVE checkpoint).
    pub fn checkpoint(&self) -> CoreResult<()> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
            .map_err(storage)
    }

    /// Opens an existing ledger file read-only (reports while the server writes).
    pub fn open_read_only(path: &str) -> CoreResult<SqliteStore> {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(path, flags).map_err(storage)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(storage)?;
        let has_parent = entry_columns(&conn)?.iter().any(|c| c == "parent_id");
        Ok(SqliteStore { conn, has_parent })
    }

    /// Writes `entries` in one transaction; they are durable when this returns `Ok`.
    pub fn append(&mut self, entries: &[Entry]) -> CoreResult<()> {
        let tx = self.conn.transaction().map_err(storage)?;
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(storage)?;
            for e in entries {
                let tokens = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                insert
                    .execute(params![
                        e.ts_ms,
                        e.request_id,
                        e.key,
                        e.user,
                        e.team,
                        e.tags,
                        e.route,
                        e.deployment,
                        e.model_group,
                        e.provider,
                        e.model,
                        tokens(e.usage.input_tokens),
                        tokens(e.usage.output_tokens),
                        tokens(e.usage.cached_input_tokens),
                        tokens(e.usage.cache_write_tokens),
                        tokens(e.usage.reasoning_tokens),
                        e.cost,
                        e.saved_cost,
                        e.latency_ms,
                        e.ttft_ms,
                        e.status,
                        e.cache,
                        e.fallbacks,
                        e.estimated,
                        e.parent_id,
                    ])
                    .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }

    /// Rebuilds `ledger`'s aggregates and budget state from every stored entry; returns the
    /// number of entries read.
    pub fn load_into(&self, ledger: &Ledger) -> CoreResult<u64> {
        // One pass over the rows, summed per hour and combination of names in memory: far
        // faster than SQLite's GROUP BY, which sorts every row on eight text columns.
        let mut stmt = self.conn.prepare(SCAN_QUERY).map_err(storage)?;
        let mut rows = stmt.query([]).map_err(storage)?;
        let mut names: HashMap<Box<[u8]>, u32> = HashMap::new();
        let mut groups: HashMap<(i64, [u32; 7]), Totals> = HashMap::new();
        let mut count = 0u64;
        while let Some(row) = rows.next().map_err(storage)? {
            let mut ids = [u32::MAX; 7];
            for (slot, id) in ids.iter_mut().enumerate() {
                if let ValueRef::Text(text) = row.get_ref(slot + 1).map_err(storage)? {
                    let next = names.len() as u32;
                    *id = match names.get(text) {
                        Some(&id) => id,
                        None => *names.entry(text.into()).or_insert(next),
                    };
                }
            }
            let n = |i: usize| -> CoreResult<u64> {
                Ok(row.get::<_, i64>(i).map_err(storage)?.max(0) as u64)
            };
            let status = n(8)?;
            let cache = row.get_ref(10).map_err(storage)?;
            let hit = matches!(
                cache,
                ValueRef::Text(b"hit") | ValueRef::Text(b"semantic-hit")
            );
            let one = Totals {
                requests: 1,
                errors: u64::from(status >= 400),
                estimated: n(9)?.min(1),
                cache_hits: u64::from(hit),
                input_tokens: n(11)?,
                output_tokens: n(12)?,
                cached_input_tokens: n(13)?,
                cache_write_tokens: n(14)?,
                reasoning_tokens: n(15)?,
                cost: i128::from(row.get::<_, i64>(16).map_err(storage)?),
                saved_cost: i128::from(row.get::<_, i64>(17).map_err(storage)?),
            };
            let ts: i64 = row.get(0).map_err(storage)?;
            let hour = ts.div_euclid(super::window::HOUR_MS) * super::window::HOUR_MS;
            groups.entry((hour, ids)).or_default().add(&one);
            count += 1;
        }
        let mut by_id = vec![String::new(); names.len()];
        for (name, id) in names {
            by_id[id as usize] = String::from_utf8_lossy(&name).into_owned();
        }
        let name = |id: u32| (id != u32::MAX).then(|| by_id[id as usize].clone());
        for ((hour_ms, ids), totals) in groups {
            ledger.load(&Summary {
                hour_ms,
                key: name(ids[0]),
                user: name(ids[1]),
                team: name(ids[2]),
                model_group: name(ids[3]),
                deployment: name(ids[4]),
                provider: name(ids[5]),
                route: name(ids[6]),
                totals,
            });
        }
        Ok(count)
    }

    /// Budgets changed through the admin API.
    pub fn budgets(&self) -> CoreResult<Vec<StoredBudget>> {
        let mut stmt = self
            .conn
            .prepare(
                "SELECT scope, name, \"window\", limit_picos, soft_fraction, deleted \
                 FROM ledger_budgets ORDER BY scope, name, \"window\"",
            )
            .map_err(storage)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    r.get(5)?,
                ))
            })
            .map_err(storage)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(storage)
    }

    /// Keeps a budget change (or removal) so it outlives a restart.
    pub fn save_budget(&self, b: &StoredBudget) -> CoreResult<()> {
        self.conn
            .execute(
                "INSERT INTO ledger_budgets (scope, name, \"window\", limit_picos, soft_fraction, \
                 deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6) \
                 ON CONFLICT (scope, name, \"window\") DO UPDATE SET \
                 limit_picos = excluded.limit_picos, soft_fraction = excluded.soft_fraction, \
                 deleted = excluded.deleted",
                params![b.0, b.1, b.2, b.3, b.4, b.5],
            )
            .map(|_| ())
            .map_err(storage)
    }

    /// Up to `limit` entries with `id > after_id` and `since_ms <= ts_ms < until_ms` (and,
    /// given `parent_id`, the steps of that prompt chain only), in insertion order (page
    /// through with the last row's id).
    pub fn export_page(
        &self,
        since_ms: i64,
        until_ms: i64,
        after_id: i64,
        limit: usize,
        parent_id: Option<&str>,
    ) -> CoreResult<Vec<ExportRow>> {
        if parent_id.is_some() && !self.has_parent {
            return Ok(Vec::new()); // a file from before chains holds no chain's steps
        }
        let sql = export_sql(self.has_parent, parent_id.is_some());
        let mut stmt = self.conn.prepare_cached(&sql).map_err(storage)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let mut args: Vec<&dyn rusqlite::ToSql> = vec![&after_id, &since_ms, &until_ms, &limit];
        if let Some(parent) = &parent_id {
            args.push(parent);
        }
        let rows = stmt
            .query_map(&*args, |r| {
                let n =
                    |i: usize| -> rusqlite::Result<u64> { Ok(r.get::<_, i64>(i)?.max(0) as u64) };
                Ok(ExportRow {
                    id: r.get(0)?,
                    entry: Entry {
                        seq: 0,
                        ts_ms: r.get(1)?,
                        request_id: r.get(2)?,
                        key: r.get(3)?,
                        user: r.get(4)?,
                        team: r.get(5)?,
                        tags: r.get(6)?,
                        route: r.get(7)?,
                        deployment: r.get(8)?,
                        model_group: r.get(9)?,
                        provider: r.get(10)?,
                        model: r.get(11)?,
                        usage: crate::money::Usage {
                            input_tokens: n(12)?,
                            output_tokens: n(13)?,
                            cached_input_tokens: n(14)?,
                            cache_write_tokens: n(15)?,
                            reasoning_tokens: n(16)?,
                        },
                        cost: r.get(17)?,
                        saved_cost: r.get(18)?,
                        latency_ms: r.get(19)?,
                        ttft_ms: r.get(20)?,
                        status: r.get(21)?,
                        cache: r.get(22)?,
                        fallbacks: r.get(23)?,
                        estimated: r.get(24)?,
                        parent_id: r.get(25)?,
                    },
                })
            })
            .map_err(storage)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(storage)
    }

    /// The number of stored entries.
    pub fn count(&self) -> CoreResult<u64> {
        self.conn
            .query_row("SELECT COUNT(*) FROM ledger_entries", [], |row| {
                row.get::<_, i64>(0)
            })
            .map(|n| n as u64)
            .map_err(storage)
    }
}

/// The export query; with `by_parent`, `?5` is a chain's parent id, found through the
/// partial index on `parent_id` (the chain's few steps, not a scan of every entry).
pub fn export_sql(has_parent: bool, by_parent: bool) -> String {
    let parent = if has_parent { "parent_id" } else { "NULL" };
    let filter = if by_parent { "parent_id = ?5 AND " } else { "" };
    format!(
        "SELECT id, {COLUMNS}, {parent} FROM ledger_entries WHERE {filter}id > ?1 \
         AND ts_ms >= ?2 AND ts_ms < ?3 ORDER BY id LIMIT ?4"
    )
}

/// The columns of `ledger_entries` in this file (empty when the table does not exist).
fn entry_columns(conn: &Connection) -> CoreResult<Vec<String>> {
    let mut stmt = conn
        .prepare("SELECT name FROM pragma_table_info('ledger_entries')")
        .map_err(storage)?;
    let names = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(storage)?;
    names.collect::<Result<Vec<_>, _>>().map_err(storage)
}

/// Brings a file written by an older version up to `SCHEMA`: each missing column is added.
fn migrate(conn: &Connection) -> CoreResult<()> {
    let present = entry_columns(conn)?;
    for (name, kind) in ADDED_COLUMNS {
        if !present.iter().any(|c| c == name) {
            conn.execute_batch(&format!(
                "ALTER TABLE ledger_entries ADD COLUMN {name} {kind}"
            ))
            .map_err(storage)?;
        }
    }
    // Only chain steps carry a parent: a partial index costs the other entries nothing.
    conn.execute_batch(PARENT_INDEX).map_err(storage)
}
