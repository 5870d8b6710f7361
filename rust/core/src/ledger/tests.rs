use std::sync::Arc;
use std::time::Duration;

use proptest::prelude::*;

use super::store::SqliteStore;
use super::*;

const T0: i64 = 1_764_000_000_000; // 2025-11-24T16:00:00Z
const USD: i64 = crate::money::PICOS_PER_USD;

fn budget(scope: Scope, name: Option<&str>, window: Window, limit: i64) -> BudgetSpec {
    BudgetSpec {
        scope,
        name: name.map(str::to_string),
        window,
        limit,
        soft_fraction: 0.8,
    }
}

fn entry(cost: i64, team: Option<&str>, ts_ms: i64) -> Entry {
    Entry {
        ts_ms,
        request_id: format!("req-{cost}-{ts_ms}"),
        key: Some("k1".into()),
        team: team.map(str::to_string),
        route: "smart".into(),
        deployment: Some("smart#0".into()),
        model_group: Some("smart".into()),
        provider: Some("openai".into()),
        model: Some("gpt-4.1".into()),
        usage: Usage {
            input_tokens: 10,
            output_tokens: 5,
            ..Usage::default()
        },
        cost,
        status: 200,
        cache: "miss".into(),
        ..Entry::default()
    }
}

fn subject<'a>(team: Option<&'a str>) -> Subject<'a> {
    Subject {
        key: Some("k1"),
        user: None,
        team,
        model_group: Some("smart"),
    }
}

#[test]
fn reserve_holds_the_worst_case_and_settle_swaps_in_the_real_cost() {
    let ledger = Ledger::new(
        vec![budget(Scope::Team, Some("a"), Window::Day, 10 * USD)],
        T0,
    )
    .unwrap();
    let h1 = ledger.reserve(&subject(Some("a")), 6 * USD, T0).unwrap();
    // 6 held: a second 6 does not fit, and nothing is held for it.
    let err = ledger
        .reserve(&subject(Some("a")), 6 * USD, T0)
        .unwrap_err();
    assert_eq!(
        err,
        CoreError::BudgetExceeded {
            scope: "team:a/day".into(),
            remaining: 4 * i128::from(USD)
        }
    );
    assert_eq!(
        ledger.remaining(&subject(Some("a")), T0),
        Some(4 * i128::from(USD))
    );
    ledger.settle(h1, entry(2 * USD, Some("a"), T0)).unwrap();
    assert_eq!(
        ledger.remaining(&subject(Some("a")), T0),
        Some(8 * i128::from(USD))
    );
    // Another team is not limited by it.
    assert_eq!(ledger.remaining(&subject(Some("b")), T0), None);
    assert!(ledger.reserve(&subject(Some("b")), 100 * USD, T0).is_ok());
    // A settled hold cannot be settled or released again.
    assert!(matches!(
        ledger.settle(h1, entry(1, Some("a"), T0)),
        Err(CoreError::NotFound(_))
    ));
    assert!(!ledger.release(h1));
}

#[test]
fn a_refusal_holds_nothing_anywhere() {
    let ledger = Ledger::new(
        vec![
            budget(Scope::Global, None, Window::Total, 100 * USD),
            budget(Scope::Key, Some("k1"), Window::Hour, USD),
        ],
        T0,
    )
    .unwrap();
    assert!(ledger.reserve(&subject(None), 2 * USD, T0).is_err());
    let status = ledger.budgets(T0);
    assert!(status.iter().all(|b| b.reserved == 0), "{status:?}");
}

#[test]
fn a_request_that_costs_nothing_passes_an_overspent_budget() {
    let ledger = Ledger::new(vec![budget(Scope::Global, None, Window::Total, USD)], T0).unwrap();
    // Real cost above the worst case can overspend; only new holds are refused after it.
    let h = ledger.reserve(&subject(None), USD, T0).unwrap();
    ledger.settle(h, entry(2 * USD, None, T0)).unwrap();
    assert!(ledger.reserve(&subject(None), 1, T0).is_err());
    assert!(ledger.reserve(&subject(None), 0, T0).is_ok());
    assert_eq!(ledger.remaining(&subject(None), T0), Some(0));
}

#[test]
fn counter_windows_choose_what_the_books_hold() {
    let specs = vec![
        budget(Scope::Global, None, Window::Total, 100 * USD),
        budget(Scope::Team, Some("a"), Window::Day, 10 * USD),
        budget(Scope::Team, Some("b"), Window::Day, 10 * USD),
        budget(Scope::Key, Some("k1"), Window::Month, 10 * USD),
        budget(Scope::Model, Some("smart"), Window::Hour, 10 * USD),
        budget(Scope::User, Some("u"), Window::Hour, 10 * USD),
    ];
    let windows = counter_windows(&specs, &subject(Some("a")), T0);
    let chosen: Vec<usize> = windows.iter().map(|w| w.index).collect();
    assert_eq!(chosen, vec![0, 1, 3, 4]);
    assert_eq!((windows[0].start, windows[0].end), (0, 0));
    let day = Window::Day.start(T0);
    assert_eq!(
        (windows[1].start, windows[1].end),
        (day, day + window::DAY_MS)
    );
    // The books hold exactly the budgets the shared counter would.
    let ledger = Ledger::new(specs, T0).unwrap();
    ledger.reserve(&subject(Some("a")), USD, T0).unwrap();
    let held: Vec<usize> = ledger
        .budgets(T0)
        .iter()
        .enumerate()
        .filter(|(_, b)| b.reserved > 0)
        .map(|(i, _)| i)
        .collect();
    assert_eq!(held, chosen);
}

#[test]
fn release_gives_the_hold_back() {
    let ledger = Ledger::new(
        vec![budget(Scope::Model, Some("smart"), Window::Month, USD)],
        T0,
    )
    .unwrap();
    let h = ledger.reserve(&subject(None), USD, T0).unwrap();
    assert_eq!(ledger.remaining(&subject(None), T0), Some(0));
    assert!(ledger.release(h));
    assert_eq!(ledger.remaining(&subject(None), T0), Some(i128::from(USD)));
}

#[test]
fn windows_reset_spending_but_not_holds() {
    let ledger = Ledger::new(
        vec![budget(Scope::Global, None, Window::Hour, 10 * USD)],
        T0,
    )
    .unwrap();
    ledger.settle(0, entry(9 * USD, None, T0)).unwrap();
    let h = ledger.reserve(&subject(None), USD, T0).unwrap();
    assert_eq!(ledger.remaining(&subject(None), T0), Some(0));
    let next_hour = T0 + window::HOUR_MS;
    assert_eq!(
        ledger.remaining(&subject(None), next_hour),
        Some(9 * i128::from(USD))
    );
    ledger.settle(h, entry(USD / 2, None, next_hour)).unwrap();
    assert_eq!(
        ledger.remaining(&subject(None), next_hour),
        Some(i128::from(USD) * 19 / 2)
    );
}

#[test]
fn soft_limit_fires_once_per_window() {
    let ledger = Ledger::new(vec![budget(Scope::Global, None, Window::Day, 10 * USD)], T0).unwrap();
    assert!(ledger
        .settle(0, entry(7 * USD, None, T0))
        .unwrap()
        .soft_crossed
        .is_empty());
    assert_eq!(
        ledger.settle(0, entry(USD, None, T0)).unwrap().soft_crossed,
        vec![0]
    );
    assert!(ledger
        .settle(0, entry(USD, None, T0))
        .unwrap()
        .soft_crossed
        .is_empty());
}

#[test]
fn set_budget_updates_in_place_and_remove_keeps_holds_consistent() {
    let ledger = Ledger::new(
        vec![
            budget(Scope::Team, Some("a"), Window::Day, USD),
            budget(Scope::Global, None, Window::Day, USD),
        ],
        T0,
    )
    .unwrap();
    let h = ledger.reserve(&subject(Some("a")), USD / 2, T0).unwrap();
    ledger
        .set_budget(budget(Scope::Team, Some("a"), Window::Day, 3 * USD), T0)
        .unwrap();
    assert_eq!(ledger.budgets(T0).len(), 2);
    assert!(ledger.remove_budget(Scope::Team, Some("a"), Window::Day));
    assert!(ledger.release(h));
    assert_eq!(ledger.budgets(T0)[0].reserved, 0);
    assert!(ledger
        .set_budget(budget(Scope::Team, None, Window::Day, USD), T0)
        .is_err());
    assert!(ledger
        .set_budget(budget(Scope::Global, None, Window::Day, -1), T0)
        .is_err());
}

#[test]
fn reports_group_by_dimension_and_period() {
    let ledger = Ledger::default();
    ledger.settle(0, entry(3, Some("a"), T0)).unwrap();
    ledger
        .settle(0, entry(4, Some("b"), T0 + 25 * window::HOUR_MS))
        .unwrap();
    ledger
        .settle(0, entry(5, Some("a"), T0 + 26 * window::HOUR_MS))
        .unwrap();
    let by_team = ledger.report(Dim::Team, None, i64::MIN, i64::MAX);
    assert_eq!(by_team.len(), 2);
    assert_eq!(
        (by_team[0].group.as_deref(), by_team[0].totals.cost),
        (Some("a"), 8)
    );
    let by_day = ledger.report(Dim::Total, Some(Window::Day), i64::MIN, i64::MAX);
    assert_eq!(
        by_day.iter().map(|r| r.totals.cost).collect::<Vec<_>>(),
        vec![3, 9]
    );
    let since = ledger.report(Dim::Total, None, T0 + window::HOUR_MS, i64::MAX);
    assert_eq!(since[0].totals.cost, 9);
    assert_eq!(since[0].totals.requests, 2);
}

#[test]
fn old_hours_fold_into_days_and_totals_stay_exact() {
    let ledger = Ledger::default();
    let day0 = Window::Day.start(T0);
    for h in 0..48 {
        ledger
            .settle(0, entry(h + 1, None, day0 + h * window::HOUR_MS))
            .unwrap();
    }
    assert_eq!(
        ledger
            .report(Dim::Total, Some(Window::Hour), i64::MIN, i64::MAX)
            .len(),
        48
    );
    // Ten days later, those hours are whole days; day and total reports do not change.
    let by_day = ledger.report(Dim::Total, Some(Window::Day), i64::MIN, i64::MAX);
    ledger
        .settle(0, entry(1_000, None, day0 + 10 * window::DAY_MS))
        .unwrap();
    let hours = ledger.report(
        Dim::Total,
        Some(Window::Hour),
        i64::MIN,
        day0 + window::DAY_MS * 9,
    );
    assert_eq!(
        hours.iter().map(|r| r.period_start).collect::<Vec<_>>(),
        vec![Some(day0), Some(day0 + window::DAY_MS)]
    );
    let by_day_after = ledger.report(
        Dim::Total,
        Some(Window::Day),
        i64::MIN,
        day0 + window::DAY_MS * 9,
    );
    assert_eq!(by_day_after, by_day);
    // An entry that arrives late for an old hour lands in its day.
    ledger
        .settle(0, entry(5, None, day0 + 3 * window::HOUR_MS))
        .unwrap();
    let first = &ledger.report(Dim::Total, Some(Window::Day), i64::MIN, i64::MAX)[0];
    assert_eq!(first.totals.cost, (1..=24).sum::<i64>() as i128 + 5);
    assert_eq!(
        ledger.report(Dim::Model, None, i64::MIN, i64::MAX)[0]
            .totals
            .requests,
        50
    );
}

fn temp_path(name: &str) -> String {
    let dir = std::env::temp_dir().join(format!("hf-ledger-{}-{name}", std::process::id()));
    let _ = std::fs::remove_file(&dir);
    dir.to_string_lossy().into_owned()
}

#[test]
fn the_store_rebuilds_the_books() {
    let path = temp_path("rebuild.db");
    let budgets = vec![
        budget(Scope::Team, Some("a"), Window::Month, 100 * USD),
        budget(Scope::Global, None, Window::Hour, 100 * USD),
    ];
    let now = T0 + 30 * window::HOUR_MS;
    let ledger = Ledger::new(budgets.clone(), now).unwrap();
    for i in 0..50 {
        let team = if i % 3 == 0 { Some("a") } else { None };
        ledger
            .settle(0, entry(USD / 7 + i, team, T0 + (i % 31) * window::HOUR_MS))
            .unwrap();
    }
    let mut store = SqliteStore::open(&path, true).unwrap();
    let pending = ledger.take_pending(usize::MAX, Duration::ZERO);
    assert_eq!(pending.len(), 50);
    store.append(&pending).unwrap();
    drop(store);

    let rebuilt = Ledger::new(budgets, now).unwrap();
    let store = SqliteStore::open_read_only(&path).unwrap();
    assert_eq!(store.load_into(&rebuilt).unwrap(), 50);
    assert_eq!(rebuilt.pending_len(), 0);
    for dim in Dim::ALL {
        for period in [
            None,
            Some(Window::Hour),
            Some(Window::Day),
            Some(Window::Month),
        ] {
            assert_eq!(
                rebuilt.report(dim, period, i64::MIN, i64::MAX),
                ledger.report(dim, period, i64::MIN, i64::MAX)
            );
        }
    }
    let spent = |l: &Ledger| l.budgets(now).iter().map(|b| b.spent).collect::<Vec<_>>();
    assert_eq!(spent(&rebuilt), spent(&ledger));

    // Export pages through every entry in order, as written.
    let first = store.export_page(i64::MIN, i64::MAX, 0, 30, None).unwrap();
    let rest = store
        .export_page(i64::MIN, i64::MAX, first.last().unwrap().id, 30, None)
        .unwrap();
    assert_eq!((first.len(), rest.len()), (30, 20));
    let exported: Vec<Entry> = first.into_iter().chain(rest).map(|r| r.entry).collect();
    let written: Vec<Entry> = pending.into_iter().map(|e| Entry { seq: 0, ..e }).collect();
    assert_eq!(exported, written);
    let late = store
        .export_page(T0 + 30 * window::HOUR_MS, i64::MAX, 0, 100, None)
        .unwrap();
    assert_eq!(late.len(), 1);
    drop(store);

    let store = SqliteStore::open(&path, false).unwrap();
    store
        .save_budget(&("team".into(), "a".into(), "day".into(), 5, 0.5, false))
        .unwrap();
    store
        .save_budget(&("team".into(), "a".into(), "day".into(), 7, 0.5, true))
        .unwrap();
    assert_eq!(
        store.budgets().unwrap(),
        vec![("team".into(), "a".into(), "day".into(), 7, 0.5, true)]
    );
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}

#[test]
fn a_file_from_before_parent_id_reads_and_migrates() {
    // The table as the first release wrote it: every column up to `estimated`.
    let path = temp_path("before-parent.db");
    {
        let old = rusqlite::Connection::open(&path).unwrap();
        let columns = super::store::COLUMNS;
        let create = super::store::SCHEMA
            .split(");")
            .next()
            .unwrap()
            .replace(",\n    parent_id TEXT", "");
        assert!(!create.contains("parent_id"));
        old.execute_batch(&format!("{create});")).unwrap();
        old.execute_batch(&format!(
            "INSERT INTO ledger_entries ({columns}) VALUES (1, 'old', NULL, NULL, NULL, '', \
             'smart', NULL, NULL, NULL, NULL, 1, 1, 0, 0, 0, 5, 0, 1.0, NULL, 200, 'miss', 0, 0)"
        ))
        .unwrap();
    }
    // Read-only (a report while an old server runs): no migration, parent_id reads None.
    let reader = SqliteStore::open_read_only(&path).unwrap();
    let rows = reader.export_page(i64::MIN, i64::MAX, 0, 10, None).unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].entry.parent_id, None);
    // No column, so no chain's steps: an empty answer, not an SQL error.
    let chain = reader.export_page(i64::MIN, i64::MAX, 0, 10, Some("old"));
    assert_eq!(chain.unwrap(), vec![]);
    drop(reader);
    // Opened for writing: the column is added, old rows keep NULL, new rows carry theirs.
    let mut store = SqliteStore::open(&path, false).unwrap();
    let mut step = entry(7, None, 2);
    step.parent_id = Some("req-parent".into());
    store.append(&[step]).unwrap();
    let rows = store.export_page(i64::MIN, i64::MAX, 0, 10, None).unwrap();
    let parents: Vec<_> = rows.iter().map(|r| r.entry.parent_id.clone()).collect();
    assert_eq!(parents, vec![None, Some("req-parent".to_string())]);
    drop(store);
    // A second open finds the column and changes nothing.
    let store = SqliteStore::open(&path, false).unwrap();
    assert_eq!(store.count().unwrap(), 2);
    drop(store);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}

#[test]
fn export_by_parent_id_finds_one_chains_steps_through_its_index() {
    let path = temp_path("by-parent.db");
    let mut store = SqliteStore::open(&path, false).unwrap();
    let mut entries = Vec::new();
    for i in 0..40 {
        let mut e = entry(i + 1, None, T0 + i);
        // Three chains interleaved with plain requests; chain "c1" has 6 steps.
        e.parent_id = (i % 2 == 0).then(|| format!("c{}", i % 3));
        entries.push(e);
    }
    store.append(&entries).unwrap();
    let wanted: Vec<Entry> = entries
        .iter()
        .filter(|e| e.parent_id.as_deref() == Some("c1"))
        .map(|e| Entry {
            seq: 0,
            ..e.clone()
        })
        .collect();
    assert_eq!(wanted.len(), 6);
    // Paged, in order, with the time window still applied.
    let first = store
        .export_page(i64::MIN, i64::MAX, 0, 4, Some("c1"))
        .unwrap();
    let last_id = first.last().unwrap().id;
    let rest = store
        .export_page(i64::MIN, i64::MAX, last_id, 4, Some("c1"))
        .unwrap();
    let got: Vec<Entry> = first.into_iter().chain(rest).map(|r| r.entry).collect();
    assert_eq!(got, wanted);
    let late = store
        .export_page(T0 + 20, i64::MAX, 0, 100, Some("c1"))
        .unwrap();
    assert_eq!(late.len(), 3); // the steps at T0+22, +28 and +34
    assert_eq!(
        store
            .export_page(i64::MIN, i64::MAX, 0, 100, Some("none"))
            .unwrap(),
        vec![]
    );
    drop(store);
    // SQLite answers from the partial index, not by scanning every entry.
    let conn = rusqlite::Connection::open(&path).unwrap();
    let sql = super::store::export_sql(true, true);
    let plan: Vec<String> = conn
        .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
        .unwrap()
        .query_map(rusqlite::params![0, i64::MIN, i64::MAX, 10, "c1"], |r| {
            r.get::<_, String>(3)
        })
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert!(
        plan.iter().any(|p| p.contains("ledger_entries_parent")),
        "{plan:?}"
    );
    drop(conn);
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
}

#[test]
fn concurrent_reservations_never_overspend() {
    let limit = 1_000 * USD;
    let ledger =
        Arc::new(Ledger::new(vec![budget(Scope::Global, None, Window::Total, limit)], T0).unwrap());
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let ledger = Arc::clone(&ledger);
            std::thread::spawn(move || {
                for i in 0..2_000i64 {
                    let worst = (i % 17 + 1) * USD / 10;
                    if let Ok(h) = ledger.reserve(&subject(None), worst, T0) {
                        // Real cost never above the worst case; some fail and release.
                        if (i + t) % 5 == 0 {
                            ledger.release(h);
                        } else {
                            ledger.settle(h, entry(worst - i % 3, None, T0)).unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let b = &ledger.budgets(T0)[0];
    assert!(
        b.spent <= i128::from(limit),
        "spent {} over {}",
        b.spent,
        limit
    );
    assert_eq!(b.reserved, 0);
    let total: i128 = ledger.report(Dim::Total, None, i64::MIN, i64::MAX)[0]
        .totals
        .cost;
    assert_eq!(total, b.spent);
}

proptest! {
    #[test]
    fn aggregates_equal_the_sum_of_entries_at_every_level(
        items in proptest::collection::vec((0i64..1_000_000_000, 0usize..3, 0usize..3, 0i64..2_000), 1..80)
    ) {
        let ledger = Ledger::default();
        let teams = [None, Some("a"), Some("b")];
        let mut total: i128 = 0;
        for (cost, team, key, hour) in &items {
            let mut e = entry(*cost, teams[*team], T0 + hour * window::HOUR_MS + 17);
            e.key = teams[*key].map(|k| format!("key-{k}"));
            e.deployment = Some(format!("smart#{key}"));
            ledger.settle(0, e).unwrap();
            total += i128::from(*cost);
        }
        for dim in Dim::ALL {
            for period in [None, Some(Window::Hour), Some(Window::Day), Some(Window::Month)] {
                let rows = ledger.report(dim, period, i64::MIN, i64::MAX);
                let sum: i128 = rows.iter().map(|r| r.totals.cost).sum();
                let requests: u64 = rows.iter().map(|r| r.totals.requests).sum();
                // Dimensions an entry may lack (team, key) sum to at most the total.
                match dim {
                    Dim::Team | Dim::Key | Dim::User => prop_assert!(sum <= total),
                    _ => {
                        prop_assert_eq!(sum, total);
                        prop_assert_eq!(requests, items.len() as u64);
                    }
                }
            }
        }
        let by_team: i128 = ledger.report(Dim::Team, None, i64::MIN, i64::MAX).iter().map(|r| r.totals.cost).sum();
        let teamless: i128 = items.iter().filter(|i| i.1 == 0).map(|i| i128::from(i.0)).sum();
        prop_assert_eq!(by_team + teamless, total);
    }

    #[test]
    fn holds_and_spend_never_pass_the_limit(
        ops in proptest::collection::vec((0u8..3, 0i64..5_000), 1..200), limit in 0i64..100_000
    ) {
        let ledger = Ledger::new(vec![budget(Scope::Global, None, Window::Total, limit)], T0).unwrap();
        let mut open = Vec::new();
        for (op, amount) in ops {
            match op {
                0 => if let Ok(h) = ledger.reserve(&subject(None), amount, T0) { open.push((h, amount)) },
                1 => if let Some((h, worst)) = open.pop() { ledger.settle(h, entry(worst.min(amount), None, T0)).unwrap(); },
                _ => if let Some((h, _)) = open.pop() { prop_assert!(ledger.release(h)); },
            }
            let b = &ledger.budgets(T0)[0];
            prop_assert!(b.spent + b.reserved <= i128::from(limit));
        }
    }
}
