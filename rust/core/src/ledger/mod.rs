//! The cost ledger: budgets with reserve/settle/release, aggregates, and the journal queue.
//!
//! One [`Ledger`] holds, behind one mutex:
//! - the budgets, each with what is spent in its current window and what is held by
//!   requests in flight (`reserve` holds the worst case, `settle` swaps it for the real cost,
//!   `release` drops it), so concurrent requests can never spend past a limit;
//! - aggregates per hour for every dimension (key, user, team, model group, deployment,
//!   provider, route, and the total), in `i128`, from which reports by hour/day/month and by
//!   any dimension are computed without touching the store;
//! - the journal queue: settled entries waiting for the durable store's background writer,
//!   numbered by a sequence so the writer can say up to which entry is on disk.
//!
//! Money is integer picodollars throughout (see [`crate::money`]).

pub mod store;
pub mod window;

use std::collections::HashMap;

use parking_lot::{Condvar, Mutex};

use crate::error::{CoreError, CoreResult};
use crate::money::{Picodollars, Usage};
pub use window::Window;

/// Whose spending a budget limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    Global,
    Key,
    User,
    Team,
    /// A deployment's model group (the `name` deployments share in config).
    Model,
}

impl Scope {
    pub fn parse(text: &str) -> Option<Scope> {
        Some(match text {
            "global" => Scope::Global,
            "key" => Scope::Key,
            "user" => Scope::User,
            "team" => Scope::Team,
            "model" => Scope::Model,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Global => "global",
            Scope::Key => "key",
            Scope::User => "user",
            Scope::Team => "team",
            Scope::Model => "model",
        }
    }
}

/// A budget as configured: at most `limit` picodollars per `window`.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetSpec {
    pub scope: Scope,
    /// The key name, user, team or model group; `None` only for `Global`.
    pub name: Option<String>,
    pub window: Window,
    pub limit: Picodollars,
    /// The share of the limit at which a soft-limit warning fires once per window.
    pub soft_fraction: f64,
}

impl BudgetSpec {
    /// `global`, `team:research`, ... with the window: `team:research/month`.
    pub fn label(&self) -> String {
        match &self.name {
            Some(name) => format!("{}:{}/{}", self.scope.as_str(), name, self.window.as_str()),
            None => format!("{}/{}", self.scope.as_str(), self.window.as_str()),
        }
    }

    /// Whether this budget limits `subject`'s spending: the global budget limits everyone,
    /// the others only the key, user, team or model group they name.
    pub fn applies_to(&self, subject: &Subject<'_>) -> bool {
        let name = self.name.as_deref();
        match self.scope {
            Scope::Global => true,
            Scope::Key => subject.key.is_some() && subject.key == name,
            Scope::User => subject.user.is_some() && subject.user == name,
            Scope::Team => subject.team.is_some() && subject.team == name,
            Scope::Model => subject.model_group.is_some() && subject.model_group == name,
        }
    }
}

/// One budget that applies to a request, and its current window as a counter kept
/// outside this process (Redis, PostgreSQL) keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterWindow {
    /// The budget's position in the list it was chosen from.
    pub index: usize,
    /// See [`Window::counter_bounds`].
    pub start: i64,
    pub end: i64,
}

/// The budgets of `specs` that apply to `subject`, each with its window at `now_ms`: what
/// a shared counter must hold and check, all or none, for one request. The same matching
/// and calendar as the in-process books, so both count the same windows.
pub fn counter_windows(
    specs: &[BudgetSpec],
    subject: &Subject<'_>,
    now_ms: i64,
) -> Vec<CounterWindow> {
    specs
        .iter()
        .enumerate()
        .filter(|(_, spec)| spec.applies_to(subject))
        .map(|(index, spec)| {
            let (start, end) = spec.window.counter_bounds(now_ms);
            CounterWindow { index, start, end }
        })
        .collect()
}

/// A budget's state now.
#[derive(Debug, Clone, PartialEq)]
pub struct BudgetStatus {
    pub spec: BudgetSpec,
    pub window_start: i64,
    pub spent: i128,
    pub reserved: i128,
}

impl BudgetStatus {
    /// What is left to reserve (never below zero).
    pub fn remaining(&self) -> i128 {
        (i128::from(self.spec.limit) - self.spent - self.reserved).max(0)
    }
}

/// Who a request is for, as far as budgets care. Tags are recorded but not budgeted.
#[derive(Debug, Clone, Copy, Default)]
pub struct Subject<'a> {
    pub key: Option<&'a str>,
    pub user: Option<&'a str>,
    pub team: Option<&'a str>,
    pub model_group: Option<&'a str>,
}

/// One request's line in the ledger, as stored.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Entry {
    /// Assigned by the ledger when settled; increasing.
    pub seq: u64,
    pub ts_ms: i64,
    pub request_id: String,
    pub key: Option<String>,
    pub user: Option<String>,
    pub team: Option<String>,
    /// Comma-separated.
    pub tags: String,
    pub route: String,
    pub deployment: Option<String>,
    pub model_group: Option<String>,
    pub provider: Option<String>,
    pub model: Option<String>,
    pub usage: Usage,
    pub cost: Picodollars,
    pub saved_cost: Picodollars,
    pub latency_ms: f64,
    pub ttft_ms: Option<f64>,
    pub status: u16,
    pub cache: String,
    pub fallbacks: u32,
    pub estimated: bool,
    /// The request this one is a step of (a prompt chain's request id); `None` for most.
    pub parent_id: Option<String>,
}

/// Sums over a set of entries. Money in `i128`, so no total can overflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    pub requests: u64,
    pub errors: u64,
    pub estimated: u64,
    pub cache_hits: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
    pub cost: i128,
    pub saved_cost: i128,
}

impl Totals {
    fn of(entry: &Entry) -> Totals {
        Totals {
            requests: 1,
            errors: u64::from(entry.status >= 400),
            estimated: u64::from(entry.estimated),
            cache_hits: u64::from(entry.cache == "hit" || entry.cache == "semantic-hit"),
            input_tokens: entry.usage.input_tokens,
            output_tokens: entry.usage.output_tokens,
            cached_input_tokens: entry.usage.cached_input_tokens,
            cache_write_tokens: entry.usage.cache_write_tokens,
            reasoning_tokens: entry.usage.reasoning_tokens,
            cost: i128::from(entry.cost),
            saved_cost: i128::from(entry.saved_cost),
        }
    }

    pub fn add(&mut self, other: &Totals) {
        self.requests += other.requests;
        self.errors += other.errors;
        self.estimated += other.estimated;
        self.cache_hits += other.cache_hits;
        self.input_tokens += other.input_tokens;
        self.output_tokens += other.output_tokens;
        self.cached_input_tokens += other.cached_input_tokens;
        self.cache_write_tokens += other.cache_write_tokens;
        self.reasoning_tokens += other.reasoning_tokens;
        self.cost += other.cost;
        self.saved_cost += other.saved_cost;
    }
}

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dim {
    Total,
    Key,
    User,
    Team,
    Model,
    Deployment,
    Provider,
    Route,
}

impl Dim {
    pub const ALL: [Dim; 8] = [
        Dim::Total,
        Dim::Key,
        Dim::User,
        Dim::Team,
        Dim::Model,
        Dim::Deployment,
        Dim::Provider,
        Dim::Route,
    ];

    pub fn parse(text: &str) -> Option<Dim> {
        Some(match text {
            "total" => Dim::Total,
            "key" => Dim::Key,
            "user" => Dim::User,
            "team" => Dim::Team,
            "model" => Dim::Model,
            "deployment" => Dim::Deployment,
            "provider" => Dim::Provider,
            "route" => Dim::Route,
            _ => return None,
        })
    }
}

/// The part of an hour's aggregates one group of entries contributes; what the store's
/// `GROUP BY` hands back on restart.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub hour_ms: i64,
    pub key: Option<String>,
    pub user: Option<String>,
    pub team: Option<String>,
    pub model_group: Option<String>,
    pub deployment: Option<String>,
    pub provider: Option<String>,
    pub route: Option<String>,
    pub totals: Totals,
}

/// One row of a report.
#[derive(Debug, Clone, PartialEq)]
pub struct ReportRow {
    /// The dimension's value (`None`: not set on those entries, or the `Total` dimension).
    pub group: Option<String>,
    /// The period's first millisecond when grouped by period.
    pub period_start: Option<i64>,
    pub totals: Totals,
}

/// What settling changed beyond the books: budgets that crossed their soft limit.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Settled {
    pub seq: u64,
    pub soft_crossed: Vec<usize>,
}

struct Budget {
    spec: BudgetSpec,
    window_start: i64,
    spent: i128,
    reserved: i128,
    soft_warned: bool,
}

impl Budget {
    fn roll(&mut self, now_ms: i64) {
        let start = self.spec.window.start(now_ms);
        if start > self.window_start {
            self.window_start = start;
            self.spent = 0;
            self.soft_warned = false;
        }
    }

    fn matches(&self, subject: &Subject<'_>) -> bool {
        self.spec.applies_to(subject)
    }

    fn status(&self) -> BudgetStatus {
        BudgetStatus {
            spec: self.spec.clone(),
            window_start: self.window_start,
            spent: self.spent,
            reserved: self.reserved,
        }
    }

    /// Books `cost` spent at `ts_ms`; true when this crossed the soft limit.
    fn spend(&mut self, cost: i128, ts_ms: i64) -> bool {
        self.roll(ts_ms);
        if self.spec.window.start(ts_ms) != self.window_start {
            return false; // a late entry from a window that is already closed
        }
        self.spent += cost;
        let soft = (self.spec.limit as f64 * self.spec.soft_fraction) as i128;
        if !self.soft_warned && self.spec.soft_fraction > 0.0 && self.spent >= soft {
            self.soft_warned = true;
            return true;
        }
        false
    }
}

struct Hold {
    amount: i128,
    budgets: Vec<usize>,
}

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct AggKey {
    dim: Dim,
    name: u32,
    hour: i64,
}

/// Names interned to small integers so an aggregate update hashes three words.
#[derive(Default)]
struct Names {
    ids: HashMap<String, u32>,
    names: Vec<String>,
}

impl Names {
    const NONE: u32 = u32::MAX;

    fn id(&mut self, name: Option<&str>) -> u32 {
        let Some(name) = name else { return Self::NONE };
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = self.names.len() as u32;
        self.names.push(name.to_string());
        self.ids.insert(name.to_string(), id);
        id
    }

    fn name(&self, id: u32) -> Option<&str> {
        (id != Self::NONE).then(|| self.names[id as usize].as_str())
    }
}

#[derive(Default)]
struct State {
    budgets: Vec<Budget>,
    holds: HashMap<u64, Hold>,
    next_hold: u64,
    aggs: HashMap<AggKey, Totals>,
    names: Names,
    pending: Vec<Entry>,
    next_seq: u64,
    /// The last seq the store reported durable.
    durable_seq: u64,
    /// Aggregate cells before this instant are whole days (see `HOURLY_DETAIL_MS`).
    hourly_from: i64,
}

/// How long aggregates keep hourly detail. Older hours are folded into their day, so the
/// books of a long-running server grow by days, not hours; reports by day and month, and
/// every budget, stay exact (their boundaries are whole days).
pub const HOURLY_DETAIL_MS: i64 = 8 * window::DAY_MS;

/// The ledger's in-memory books; thread-safe.
#[derive(Default)]
pub struct Ledger {
    state: Mutex<State>,
    work: Condvar,
}

impl Ledger {
    pub fn new(budgets: Vec<BudgetSpec>, now_ms: i64) -> CoreResult<Ledger> {
        let ledger = Ledger::default();
        ledger.state.lock().compact(now_ms);
        for spec in budgets {
            ledger.set_budget(spec, now_ms)?;
        }
        Ok(ledger)
    }

    /// Adds a budget, or replaces the limit and soft fraction of the one with the same
    /// scope, name and window (keeping what it has spent).
    pub fn set_budget(&self, spec: BudgetSpec, now_ms: i64) -> CoreResult<()> {
        if spec.limit < 0 {
            return Err(CoreError::InvalidArgument(format!(
                "budget {} has a negative limit",
                spec.label()
            )));
        }
        if (spec.scope == Scope::Global) != spec.name.is_none() {
            return Err(CoreError::InvalidArgument(format!(
                "budget {}: a global budget has no name, every other scope needs one",
                spec.label()
            )));
        }
        if !(0.0..=1.0).contains(&spec.soft_fraction) {
            return Err(CoreError::InvalidArgument(format!(
                "budget {}: soft_fraction must be between 0 and 1",
                spec.label()
            )));
        }
        let mut state = self.state.lock();
        let same = |b: &&mut Budget| {
            b.spec.scope == spec.scope && b.spec.name == spec.name && b.spec.window == spec.window
        };
        if let Some(budget) = state.budgets.iter_mut().find(same) {
            budget.spec.limit = spec.limit;
            budget.spec.soft_fraction = spec.soft_fraction;
            budget.soft_warned = false;
            return Ok(());
        }
        let window_start = spec.window.start(now_ms);
        state.budgets.push(Budget {
            spec,
            window_start,
            spent: 0,
            reserved: 0,
            soft_warned: false,
        });
        Ok(())
    }

    /// Removes a budget; false when there was none. Holds on it are dropped with it.
    pub fn remove_budget(&self, scope: Scope, name: Option<&str>, window: Window) -> bool {
        let mut state = self.state.lock();
        let Some(index) = state.budgets.iter().position(|b| {
            b.spec.scope == scope && b.spec.name.as_deref() == name && b.spec.window == window
        }) else {
            return false;
        };
        state.budgets.remove(index);
        for hold in state.holds.values_mut() {
            hold.budgets.retain(|&i| i != index);
            for i in hold.budgets.iter_mut() {
                if *i > index {
                    *i -= 1;
                }
            }
        }
        true
    }

    pub fn budgets(&self, now_ms: i64) -> Vec<BudgetStatus> {
        let mut state = self.state.lock();
        state
            .budgets
            .iter_mut()
            .map(|b| {
                b.roll(now_ms);
                b.status()
            })
            .collect()
    }

    /// Holds `amount` against every budget that applies to `subject`, all or none; returns
    /// the hold's handle. Refuses with `BudgetExceeded` naming the first budget that cannot
    /// cover it; a zero amount always passes.
    pub fn reserve(
        &self,
        subject: &Subject<'_>,
        amount: Picodollars,
        now_ms: i64,
    ) -> CoreResult<u64> {
        if amount < 0 {
            return Err(CoreError::InvalidArgument(
                "a reservation cannot be negative".into(),
            ));
        }
        let amount = i128::from(amount);
        let mut state = self.state.lock();
        let mut applies = Vec::new();
        for (i, budget) in state.budgets.iter_mut().enumerate() {
            if budget.matches(subject) {
                budget.roll(now_ms);
                let left = i128::from(budget.spec.limit) - budget.spent - budget.reserved;
                // A request that can cost nothing (a free local model, a cache hit) is never
                // refused, even by a budget already overspent.
                if amount > 0 && amount > left {
                    return Err(exceeded(&budget.spec, left));
                }
                applies.push(i);
            }
        }
        for &i in &applies {
            state.budgets[i].reserved += amount;
        }
        state.next_hold += 1;
        let handle = state.next_hold;
        state.holds.insert(
            handle,
            Hold {
                amount,
                budgets: applies,
            },
        );
        Ok(handle)
    }

    /// Drops a hold without spending; false when it was already settled or released.
    pub fn release(&self, handle: u64) -> bool {
        let mut state = self.state.lock();
        let Some(hold) = state.holds.remove(&handle) else {
            return false;
        };
        for i in hold.budgets {
            state.budgets[i].reserved -= hold.amount;
        }
        true
    }

    /// Books a finished request: swaps its hold (if any) for the real cost in every budget
    /// that applies, adds it to the aggregates and queues it for the store.
    ///
    /// `handle` 0 means no hold (a cache hit, a request refused before routing): the
    /// budgets are then chosen from the entry itself. A handle already settled or released
    /// is refused, so a retried settle cannot book a request twice.
    pub fn settle(&self, handle: u64, mut entry: Entry) -> CoreResult<Settled> {
        let mut state = self.state.lock();
        let hold = if handle == 0 {
            None
        } else {
            Some(
                state
                    .holds
                    .remove(&handle)
                    .ok_or_else(|| already_settled(handle))?,
            )
        };
        let budgets = match hold {
            Some(hold) => {
                for &i in &hold.budgets {
                    state.budgets[i].reserved -= hold.amount;
                }
                hold.budgets
            }
            None => {
                let subject = Subject {
                    key: entry.key.as_deref(),
                    user: entry.user.as_deref(),
                    team: entry.team.as_deref(),
                    model_group: entry.model_group.as_deref(),
                };
                (0..state.budgets.len())
                    .filter(|&i| state.budgets[i].matches(&subject))
                    .collect()
            }
        };
        let mut soft_crossed = Vec::new();
        for i in budgets {
            if state.budgets[i].spend(i128::from(entry.cost), entry.ts_ms) {
                soft_crossed.push(i);
            }
        }
        let totals = Totals::of(&entry);
        state.compact(entry.ts_ms);
        state.aggregate(
            entry.ts_ms.div_euclid(window::HOUR_MS) * window::HOUR_MS,
            [
                entry.key.as_deref(),
                entry.user.as_deref(),
                entry.team.as_deref(),
                entry.model_group.as_deref(),
                entry.deployment.as_deref(),
                entry.provider.as_deref(),
                Some(entry.route.as_str()),
            ],
            &totals,
        );
        state.next_seq += 1;
        entry.seq = state.next_seq;
        let seq = entry.seq;
        state.pending.push(entry);
        drop(state);
        self.work.notify_one();
        Ok(Settled { seq, soft_crossed })
    }

    /// Rebuilds from the store: adds one group of stored entries to the aggregates and to
    /// the budgets whose current window holds its hour. Nothing is queued for the store.
    pub fn load(&self, summary: &Summary) {
        let mut state = self.state.lock();
        let subject = Subject {
            key: summary.key.as_deref(),
            user: summary.user.as_deref(),
            team: summary.team.as_deref(),
            model_group: summary.model_group.as_deref(),
        };
        for budget in state.budgets.iter_mut() {
            if budget.matches(&subject)
                && budget.spec.window.start(summary.hour_ms) == budget.window_start
            {
                budget.spent += summary.totals.cost;
            }
        }
        state.aggregate(
            summary.hour_ms,
            [
                summary.key.as_deref(),
                summary.user.as_deref(),
                summary.team.as_deref(),
                summary.model_group.as_deref(),
                summary.deployment.as_deref(),
                summary.provider.as_deref(),
                summary.route.as_deref(),
            ],
            &summary.totals,
        );
    }

    /// The smallest amount left across the budgets that apply (`None`: no budget applies).
    pub fn remaining(&self, subject: &Subject<'_>, now_ms: i64) -> Option<i128> {
        let mut state = self.state.lock();
        let mut least: Option<i128> = None;
        for budget in state.budgets.iter_mut() {
            if budget.matches(subject) {
                budget.roll(now_ms);
                let left = budget.status().remaining();
                least = Some(least.map_or(left, |l| l.min(left)));
            }
        }
        least
    }

    /// Totals grouped by `dim` and, when `period` is given, by hour/day/month, over entries
    /// with `since_ms <= time < until_ms` (resolved to whole hours). Sorted by period, then
    /// by cost, largest first.
    pub fn report(
        &self,
        dim: Dim,
        period: Option<Window>,
        since_ms: i64,
        until_ms: i64,
    ) -> Vec<ReportRow> {
        let state = self.state.lock();
        let since = since_ms
            .div_euclid(window::HOUR_MS)
            .saturating_mul(window::HOUR_MS);
        let mut groups: HashMap<(u32, i64), Totals> = HashMap::new();
        for (key, totals) in &state.aggs {
            if key.dim != dim || key.hour < since || key.hour >= until_ms {
                continue;
            }
            let bucket = match period {
                Some(Window::Total) | None => i64::MIN,
                Some(w) => w.start(key.hour),
            };
            groups.entry((key.name, bucket)).or_default().add(totals);
        }
        let mut rows: Vec<ReportRow> = groups
            .into_iter()
            .map(|((name, bucket), totals)| ReportRow {
                group: state.names.name(name).map(str::to_string),
                period_start: (bucket != i64::MIN).then_some(bucket),
                totals,
            })
            .collect();
        rows.sort_by(|a, b| {
            a.period_start
                .cmp(&b.period_start)
                .then(b.totals.cost.cmp(&a.totals.cost))
                .then(a.group.cmp(&b.group))
        });
        rows
    }

    /// Takes up to `max` queued entries (oldest first), waiting up to `timeout` for one.
    pub fn take_pending(&self, max: usize, timeout: std::time::Duration) -> Vec<Entry> {
        let mut state = self.state.lock();
        if state.pending.is_empty() {
            let _ = self.work.wait_for(&mut state, timeout);
        }
        if state.pending.len() <= max {
            std::mem::take(&mut state.pending)
        } else {
            state.pending.drain(..max).collect()
        }
    }

    /// Puts entries the store failed to write back at the front of the queue.
    pub fn requeue(&self, mut entries: Vec<Entry>) {
        let mut state = self.state.lock();
        entries.append(&mut state.pending);
        state.pending = entries;
    }

    pub fn pending_len(&self) -> usize {
        self.state.lock().pending.len()
    }

    /// Wakes a writer blocked in `take_pending` (to shut down).
    pub fn wake(&self) {
        self.work.notify_all();
    }

    /// The store reports entries up to `seq` durable.
    pub fn mark_durable(&self, seq: u64) {
        let mut state = self.state.lock();
        state.durable_seq = state.durable_seq.max(seq);
    }

    pub fn durable_seq(&self) -> u64 {
        self.state.lock().durable_seq
    }
}

impl State {
    /// Folds hourly cells older than `HOURLY_DETAIL_MS` before `now_ms` into their day (at
    /// most once a day: a scan of the cells).
    fn compact(&mut self, now_ms: i64) {
        let from = Window::Day.start(now_ms.saturating_sub(HOURLY_DETAIL_MS));
        if from <= self.hourly_from {
            return;
        }
        self.hourly_from = from;
        let old: Vec<AggKey> = self
            .aggs
            .keys()
            .filter(|k| k.hour < from && Window::Day.start(k.hour) != k.hour)
            .copied()
            .collect();
        for key in old {
            if let Some(totals) = self.aggs.remove(&key) {
                let day = AggKey {
                    hour: Window::Day.start(key.hour),
                    ..key
                };
                self.aggs.entry(day).or_default().add(&totals);
            }
        }
    }

    fn aggregate(&mut self, hour: i64, names: [Option<&str>; 7], totals: &Totals) {
        let hour = if hour < self.hourly_from {
            Window::Day.start(hour)
        } else {
            hour
        };
        self.aggs
            .entry(AggKey {
                dim: Dim::Total,
                name: Names::NONE,
                hour,
            })
            .or_default()
            .add(totals);
        for (dim, name) in Dim::ALL[1..].iter().zip(names) {
            if name.is_some() {
                let name = self.names.id(name);
                self.aggs
                    .entry(AggKey {
                        dim: *dim,
                        name,
                        hour,
                    })
                    .or_default()
                    .add(totals);
            }
        }
    }
}

#[cold]
#[inline(never)]
fn exceeded(spec: &BudgetSpec, left: i128) -> CoreError {
    let left = left.max(0);
    CoreError::BudgetExceeded {
        scope: spec.label(),
        remaining: left,
    }
}

#[cold]
#[inline(never)]
fn already_settled(handle: u64) -> CoreError {
    CoreError::NotFound(format!(
        "reservation {handle} was already settled or released"
    ))
}

#[cfg(test)]
mod tests;
