//! Calendar windows in UTC, on integer milliseconds since the Unix epoch.
//!
//! Budgets reset at the start of each hour, day or calendar month (UTC); every window
//! boundary is a whole hour, which is why the ledger can keep its aggregates per hour and
//! still answer for days, months and budget windows exactly.

pub const HOUR_MS: i64 = 3_600_000;
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// A budget window or a report period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Window {
    Hour,
    Day,
    Month,
    Total,
}

impl Window {
    pub fn parse(text: &str) -> Option<Window> {
        Some(match text {
            "hour" => Window::Hour,
            "day" => Window::Day,
            "month" => Window::Month,
            "total" => Window::Total,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
            Window::Total => "total",
        }
    }

    /// The first millisecond of the window holding `ts_ms` (`i64::MIN` for `Total`).
    pub fn start(self, ts_ms: i64) -> i64 {
        match self {
            Window::Hour => ts_ms.div_euclid(HOUR_MS) * HOUR_MS,
            Window::Day => ts_ms.div_euclid(DAY_MS) * DAY_MS,
            Window::Month => {
                let (y, m, _) = civil_from_days(ts_ms.div_euclid(DAY_MS));
                days_from_civil(y, m, 1) * DAY_MS
            }
            Window::Total => i64::MIN,
        }
    }

    /// The first millisecond after the window that starts at `start` (`i64::MAX` for `Total`).
    pub fn end(self, start: i64) -> i64 {
        match self {
            Window::Hour => start + HOUR_MS,
            Window::Day => start + DAY_MS,
            Window::Month => {
                let (y, m, _) = civil_from_days(start.div_euclid(DAY_MS));
                let (y, m) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                days_from_civil(y, m, 1) * DAY_MS
            }
            Window::Total => i64::MAX,
        }
    }

    /// `(start, end)` of the window holding `now_ms`, for counters kept outside this
    /// process: the key of a window's counter contains `start`, and `end` says when the
    /// counter can be dropped. `Total` never ends and is `(0, 0)`, so its key never changes.
    pub fn counter_bounds(self, now_ms: i64) -> (i64, i64) {
        match self {
            Window::Total => (0, 0),
            _ => {
                let start = self.start(now_ms);
                (start, self.end(start))
            }
        }
    }
}

// Howard Hinnant's algorithms (http://howardhinnant.github.io/date_algorithms.html):
// exact for every day in the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn month_boundaries_follow_the_calendar() {
        // 2024-02-29T13:00:00Z is in the month that starts 2024-02-01 and ends 2024-03-01.
        let ts = 1_709_211_600_000;
        let start = Window::Month.start(ts);
        assert_eq!(start, 1_706_745_600_000);
        assert_eq!(Window::Month.end(start), 1_709_251_200_000);
        // December rolls into the next year.
        let dec = 1_734_000_000_000; // 2024-12-12
        assert_eq!(
            Window::Month.end(Window::Month.start(dec)),
            1_735_689_600_000
        );
        assert_eq!(Window::Day.start(ts), 1_709_164_800_000);
        assert_eq!(Window::Hour.start(ts + 1), ts);
    }

    #[test]
    fn counter_bounds_are_the_window_and_total_is_zero() {
        let ts = 1_709_211_600_000; // 2024-02-29T13:00:00Z
        assert_eq!(
            Window::Month.counter_bounds(ts),
            (1_706_745_600_000, 1_709_251_200_000)
        );
        assert_eq!(Window::Hour.counter_bounds(ts), (ts, ts + HOUR_MS));
        assert_eq!(Window::Total.counter_bounds(ts), (0, 0));
    }

    proptest! {
        #[test]
        fn every_window_holds_its_instant_and_is_hour_aligned(ts in -10_000_000_000_000i64..10_000_000_000_000) {
            for w in [Window::Hour, Window::Day, Window::Month] {
                let start = w.start(ts);
                prop_assert!(start <= ts && ts < w.end(start));
                prop_assert_eq!(start % HOUR_MS, 0);
                prop_assert_eq!(w.start(w.end(start)), w.end(start));
            }
        }
    }
}
