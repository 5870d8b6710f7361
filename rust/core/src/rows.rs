//! A SQLite file of rows that the Python layer appends to in batches and reads by query:
//! the request log's storage (one row per request, written by a background thread).
//!
//! It is here rather than in Python's `sqlite3` because of the interpreter lock: `sqlite3`
//! binds every parameter and steps every statement of a batch with the lock held between
//! steps, so a background writer and the event loop hand the lock back and forth for the
//! whole batch, and each hand-off waits for the other thread. Here the rows are converted
//! once, in one call, and the whole transaction runs with the lock released.
//!
//! One library per file: every connection to it from this process must come from here
//! (SQLite's POSIX locks are per process; a second SQLite library closing the same file
//! drops this one's locks).

use std::time::Duration;

pub use rusqlite::types::Value;
use rusqlite::{params_from_iter, Connection, OpenFlags};

use crate::error::{CoreError, CoreResult};

fn storage(err: rusqlite::Error) -> CoreError {
    CoreError::Storage(format!("sqlite: {err}"))
}

/// One connection to a rows file (or to a shared in-memory database, named by URI).
pub struct RowStore {
    conn: Connection,
}

impl RowStore {
    /// Opens (creating if needed) `target`: a path, in WAL mode with `synchronous` NORMAL or
    /// FULL, or, with `uri`, a `file:` URI (`?mode=memory&cache=shared` shares one
    /// in-memory database between the connections that name it).
    pub fn open(target: &str, uri: bool, synchronous_full: bool) -> CoreResult<RowStore> {
        let mut flags = OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        if uri {
            flags |= OpenFlags::SQLITE_OPEN_URI;
        }
        let conn = Connection::open_with_flags(target, flags).map_err(storage)?;
        conn.busy_timeout(Duration::from_secs(30))
            .map_err(storage)?;
        if uri {
            // A shared in-memory database locks per table, and a reader that meets the
            // writer's open batch fails at once (SQLITE_LOCKED: no busy timeout applies)
            // instead of waiting. Reading the batch's rows before they commit is harmless
            // here; failing an admin page is not.
            conn.execute_batch("PRAGMA read_uncommitted = 1;")
                .map_err(storage)?;
        } else {
            conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
                .map_err(storage)?;
        }
        let sync = if synchronous_full { "FULL" } else { "NORMAL" };
        conn.execute_batch(&format!("PRAGMA synchronous = {sync};"))
            .map_err(storage)?;
        Ok(RowStore { conn })
    }

    /// Runs one statement; returns the rows it changed.
    pub fn execute(&self, sql: &str, params: &[Value]) -> CoreResult<usize> {
        let mut statement = self.conn.prepare_cached(sql).map_err(storage)?;
        statement
            .execute(params_from_iter(params.iter()))
            .map_err(storage)
    }

    /// Runs `statements` in one transaction: all of them or none.
    pub fn execute_all(&mut self, statements: &[String]) -> CoreResult<()> {
        let tx = self.conn.transaction().map_err(storage)?;
        for sql in statements {
            tx.execute_batch(sql).map_err(storage)?;
        }
        tx.commit().map_err(storage)
    }

    /// The rows of a query, every column as stored.
    pub fn query(&self, sql: &str, params: &[Value]) -> CoreResult<Vec<Vec<Value>>> {
        let mut statement = self.conn.prepare_cached(sql).map_err(storage)?;
        let width = statement.column_count();
        let mut rows = statement
            .query(params_from_iter(params.iter()))
            .map_err(storage)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(storage)? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(row.get::<_, Value>(i).map_err(storage)?);
            }
            out.push(values);
        }
        Ok(out)
    }

    /// Inserts every row with `insert` (a one-row statement, one `?` per value) in one
    /// transaction: all of them or none.
    pub fn insert_all(&mut self, insert: &str, rows: &[Vec<Value>]) -> CoreResult<()> {
        let tx = self.conn.transaction().map_err(storage)?;
        {
            let mut statement = tx.prepare_cached(insert).map_err(storage)?;
            for row in rows {
                statement
                    .execute(params_from_iter(row.iter()))
                    .map_err(storage)?;
            }
        }
        tx.commit().map_err(storage)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(store: &mut RowStore) {
        store
            .execute_all(&[
                "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT NOT NULL, \
                 n INTEGER, x REAL)"
                    .to_string(),
            ])
            .unwrap();
    }

    const INSERT: &str = "INSERT INTO t (name, n, x) VALUES (?1, ?2, ?3)";

    fn row(name: &str, n: i64) -> Vec<Value> {
        vec![
            Value::Text(name.into()),
            Value::Integer(n),
            Value::Real(0.5),
        ]
    }

    #[test]
    fn rows_go_in_and_come_back_as_stored() {
        let dir = std::env::temp_dir().join(format!("hf-rows-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("rows.db");
        let _ = std::fs::remove_file(&path);
        let mut store = RowStore::open(path.to_str().unwrap(), false, false).unwrap();
        table(&mut store);
        store
            .insert_all(INSERT, &[row("a", 1), row("b", 2)])
            .unwrap();
        let rows = store
            .query(
                "SELECT name, n, x FROM t WHERE n >= ?1 ORDER BY n",
                &[Value::Integer(2)],
            )
            .unwrap();
        assert_eq!(rows, vec![row("b", 2)]);
        assert_eq!(
            store
                .execute("DELETE FROM t WHERE n < ?1", &[Value::Integer(2)])
                .unwrap(),
            1
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_batch_with_a_bad_row_writes_nothing() {
        let mut store = RowStore::open("file:hf-rows-bad?mode=memory", true, false).unwrap();
        table(&mut store);
        let bad = vec![Value::Null, Value::Integer(3), Value::Null];
        assert!(store.insert_all(INSERT, &[row("a", 1), bad]).is_err());
        assert!(store.query("SELECT * FROM t", &[]).unwrap().is_empty());
        store.insert_all(INSERT, &[row("c", 3)]).unwrap();
        assert_eq!(store.query("SELECT * FROM t", &[]).unwrap().len(), 1);
    }

    #[test]
    fn shared_memory_connections_see_one_database() {
        let name = "file:hf-rows-shared?mode=memory&cache=shared";
        let mut writer = RowStore::open(name, true, false).unwrap();
        let reader = RowStore::open(name, true, false).unwrap();
        table(&mut writer);
        writer.insert_all(INSERT, &[row("a", 1)]).unwrap();
        assert_eq!(reader.query("SELECT name FROM t", &[]).unwrap().len(), 1);
        // A reader does not fail on the writer's open batch.
        writer.execute("BEGIN IMMEDIATE", &[]).unwrap();
        writer.execute(INSERT, &row("b", 2)).unwrap();
        assert!(reader.query("SELECT name FROM t", &[]).is_ok());
        writer.execute("COMMIT", &[]).unwrap();
    }
}
