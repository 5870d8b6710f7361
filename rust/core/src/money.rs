//! Exact money.
//!
//! The unit is the picodollar (10⁻¹² USD). Prices are quoted per million tokens with at
//! most six decimals (`$0.075 / Mtok`), so one token costs a whole number of picodollars
//! and a request's cost is an exact integer: no rounding anywhere between the price table
//! and the ledger. An `i64` holds up to ~9.2 million dollars, far above one request;
//! sums over many requests are kept in `i128`.

use crate::error::{CoreError, CoreResult};

/// 10⁻¹² USD.
pub type Picodollars = i64;

pub const PICOS_PER_USD: i64 = 1_000_000_000_000;
const PICO_DECIMALS: usize = 12;

/// Token counts as the gateway normalises them from any provider.
///
/// `input_tokens` is the whole prompt; `cached_input_tokens` (read from a prompt cache) and
/// `cache_write_tokens` (written to one) are parts of it, billed at their own prices.
/// `output_tokens` includes `reasoning_tokens`, which are billed as output; they are kept
/// apart only for reporting. (Anthropic reports cache reads and writes outside
/// `input_tokens`; its adapter adds them in.)
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cached_input_tokens: u64,
    pub cache_write_tokens: u64,
    pub reasoning_tokens: u64,
}

/// Prices in picodollars per token, which is the same number as dollars per million
/// tokens times 10⁶ (so `$2.50 / Mtok` is `2_500_000`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: Picodollars,
    pub output: Picodollars,
    pub cached_input: Picodollars,
    pub cache_write: Picodollars,
}

impl Price {
    /// The exact cost of `usage` at this price.
    pub fn cost(&self, usage: &Usage) -> CoreResult<Picodollars> {
        let discounted = usage
            .cached_input_tokens
            .checked_add(usage.cache_write_tokens)
            .ok_or_else(|| overflow("cached + cache-write tokens"))?;
        if discounted > usage.input_tokens {
            return Err(CoreError::InvalidArgument(format!(
                "cached ({}) and cache-write ({}) tokens exceed input tokens ({})",
                usage.cached_input_tokens, usage.cache_write_tokens, usage.input_tokens
            )));
        }
        if usage.reasoning_tokens > usage.output_tokens {
            return Err(CoreError::InvalidArgument(format!(
                "reasoning tokens ({}) exceed output tokens ({})",
                usage.reasoning_tokens, usage.output_tokens
            )));
        }
        let parts = [
            (usage.input_tokens - discounted, self.input),
            (usage.cached_input_tokens, self.cached_input),
            (usage.cache_write_tokens, self.cache_write),
            (usage.output_tokens, self.output),
        ];
        let mut total: i128 = 0;
        for (tokens, price) in parts {
            total += i128::from(tokens) * i128::from(price);
        }
        Picodollars::try_from(total).map_err(|_| overflow("request cost"))
    }
}

/// The charge for `seconds` of a local GPU priced at `per_second` picodollars per
/// GPU-second (config `price.per_gpu_second`).
///
/// The price is exact and the time is measured: the product of the two, the time taken
/// exactly as the float it is (a binary fraction), is computed in integers and rounded to
/// the picodollar, half to even. Negative or non-finite times are refused.
pub fn gpu_time_cost(per_second: Picodollars, seconds: f64) -> CoreResult<Picodollars> {
    if per_second < 0 {
        return Err(CoreError::InvalidArgument(
            "a GPU-second price cannot be negative".into(),
        ));
    }
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(CoreError::InvalidArgument(format!(
            "a GPU time must be a finite number of seconds ≥ 0, got {seconds}"
        )));
    }
    // seconds = mantissa × 2^exponent exactly (IEEE 754 double, finite, ≥ 0).
    let bits = seconds.to_bits();
    let biased = ((bits >> 52) & 0x7ff) as i32;
    let fraction = i128::from(bits & ((1u64 << 52) - 1));
    let (mantissa, exponent) = if biased == 0 {
        (fraction, -1074)
    } else {
        (fraction | (1 << 52), biased - 1075)
    };
    // < 2^63 × 2^53: fits an i128.
    let product = i128::from(per_second) * mantissa;
    let charge = if exponent >= 0 {
        u32::try_from(exponent)
            .ok()
            .filter(|&e| e < 127 && product.leading_zeros() > e + 1)
            .map(|e| product << e)
            .ok_or_else(|| overflow("GPU-time charge"))?
    } else {
        shift_right_half_even(product, exponent.unsigned_abs())
    };
    Picodollars::try_from(charge).map_err(|_| overflow("GPU-time charge"))
}

/// `value / 2^shift` for `value ≥ 0`, rounded half to even.
fn shift_right_half_even(value: i128, shift: u32) -> i128 {
    if shift >= 127 {
        return 0; // value < 2^117: below half a picodollar
    }
    let whole = value >> shift;
    let rest = value - (whole << shift);
    let half = 1i128 << (shift - 1);
    if rest > half || (rest == half && whole % 2 == 1) {
        whole + 1
    } else {
        whole
    }
}

#[cold]
#[inline(never)]
fn overflow(what: &str) -> CoreError {
    CoreError::Overflow(what.to_string())
}

/// Parses a decimal dollar amount (`"2.5"`, `"0.000075"`, `"-1"`) exactly.
/// More than twelve decimals is an error rather than a silent rounding.
pub fn parse_usd(text: &str) -> CoreResult<Picodollars> {
    let bad = || CoreError::InvalidArgument(format!("not a dollar amount: {text:?}"));
    let trimmed = text.trim();
    let (negative, digits) = match trimmed.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, trimmed.strip_prefix('+').unwrap_or(trimmed)),
    };
    let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if (whole.is_empty() && frac.is_empty()) || !all_digits(whole) || !all_digits(frac) {
        return Err(bad());
    }
    let frac = frac.trim_end_matches('0');
    if frac.len() > PICO_DECIMALS {
        return Err(CoreError::InvalidArgument(format!(
            "{text:?} has more than {PICO_DECIMALS} decimals"
        )));
    }
    let whole: i64 = if whole.is_empty() {
        0
    } else {
        whole.parse().map_err(|_| bad())?
    };
    let frac_picos: i64 = if frac.is_empty() {
        0
    } else {
        let scale = 10_i64.pow((PICO_DECIMALS - frac.len()) as u32);
        frac.parse::<i64>().map_err(|_| bad())? * scale
    };
    let picos = whole
        .checked_mul(PICOS_PER_USD)
        .and_then(|w| w.checked_add(frac_picos))
        .ok_or_else(|| overflow("dollar amount"))?;
    Ok(if negative { -picos } else { picos })
}

/// Formats picodollars as a plain decimal dollar string with no trailing zeros
/// (`1_500_000` → `"0.0000015"`, `0` → `"0"`); exact, for headers and reports.
pub fn format_usd(picos: i128) -> String {
    let sign = if picos < 0 { "-" } else { "" };
    let magnitude = picos.unsigned_abs();
    let per_usd = PICOS_PER_USD as u128;
    let (whole, frac) = (magnitude / per_usd, magnitude % per_usd);
    if frac == 0 {
        return format!("{sign}{whole}");
    }
    let frac = format!("{frac:0width$}", width = PICO_DECIMALS);
    format!("{sign}{whole}.{}", frac.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn cost_bills_cached_and_written_tokens_at_their_own_price() {
        // claude-sonnet-4-5: $3 in, $15 out, $0.30 cache read, $3.75 cache write.
        let price = Price {
            input: 3_000_000,
            output: 15_000_000,
            cached_input: 300_000,
            cache_write: 3_750_000,
        };
        let usage = Usage {
            input_tokens: 1_000,
            output_tokens: 200,
            cached_input_tokens: 600,
            cache_write_tokens: 100,
            reasoning_tokens: 0,
        };
        // 300 × 3e6 + 600 × 3e5 + 100 × 3.75e6 + 200 × 15e6
        assert_eq!(
            price.cost(&usage),
            Ok(900_000_000 + 180_000_000 + 375_000_000 + 3_000_000_000)
        );
    }

    #[test]
    fn cost_rejects_parts_larger_than_the_whole() {
        let usage = Usage {
            input_tokens: 10,
            cached_input_tokens: 11,
            ..Usage::default()
        };
        assert!(matches!(
            Price::default().cost(&usage),
            Err(CoreError::InvalidArgument(_))
        ));
        let usage = Usage {
            output_tokens: 1,
            reasoning_tokens: 2,
            ..Usage::default()
        };
        assert!(matches!(
            Price::default().cost(&usage),
            Err(CoreError::InvalidArgument(_))
        ));
    }

    #[test]
    fn cost_refuses_to_overflow() {
        let price = Price {
            input: i64::MAX,
            ..Price::default()
        };
        let usage = Usage {
            input_tokens: 2,
            ..Usage::default()
        };
        assert!(matches!(price.cost(&usage), Err(CoreError::Overflow(_))));
    }

    #[test]
    fn gpu_time_cost_is_exact_and_rounds_half_to_even() {
        // $0.0008 per GPU-second for 1.5 s: $0.0012.
        assert_eq!(gpu_time_cost(800_000_000, 1.5), Ok(1_200_000_000));
        // 3 picodollars per second for 0.5 s is 1.5: rounds to 2; for 2.5 s, 7.5 → 8;
        // 1 per second for 0.5 s is 0.5: rounds to 0 (even).
        assert_eq!(gpu_time_cost(3, 0.5), Ok(2));
        assert_eq!(gpu_time_cost(3, 2.5), Ok(8));
        assert_eq!(gpu_time_cost(1, 0.5), Ok(0));
        // Past 2^53 picodollars a float product loses the last digits; this does not.
        let per_second = 900 * PICOS_PER_USD + 1;
        assert_eq!(gpu_time_cost(per_second, 1_000.0), Ok(per_second * 1_000));
        assert_eq!(gpu_time_cost(0, 12.0), Ok(0));
        assert_eq!(gpu_time_cost(5, 0.0), Ok(0));
        // $1 per second for the float nearest 1/3 s: its exact value, to the picodollar.
        assert_eq!(gpu_time_cost(PICOS_PER_USD, 1.0 / 3.0), Ok(333_333_333_333));
        // The smallest subnormal time costs nothing; a whole second costs the price.
        assert_eq!(gpu_time_cost(i64::MAX, f64::from_bits(1)), Ok(0));
        assert_eq!(gpu_time_cost(i64::MAX, 1.0), Ok(i64::MAX));
    }

    #[test]
    fn gpu_time_cost_refuses_bad_times_and_overflow() {
        for bad in [-1.0, f64::NAN, f64::INFINITY] {
            assert!(matches!(
                gpu_time_cost(1, bad),
                Err(CoreError::InvalidArgument(_))
            ));
        }
        assert!(matches!(
            gpu_time_cost(-1, 1.0),
            Err(CoreError::InvalidArgument(_))
        ));
        assert!(matches!(
            gpu_time_cost(i64::MAX, 1e12),
            Err(CoreError::Overflow(_))
        ));
    }

    #[test]
    fn parse_usd_is_exact() {
        assert_eq!(parse_usd("2.5"), Ok(2_500_000_000_000));
        assert_eq!(parse_usd("0.000075"), Ok(75_000_000));
        assert_eq!(parse_usd("-1"), Ok(-PICOS_PER_USD));
        assert_eq!(parse_usd(".5"), Ok(500_000_000_000));
        assert_eq!(parse_usd("0.000000000001"), Ok(1));
        assert!(parse_usd("0.0000000000001").is_err());
        for bad in ["", ".", "abc", "1.2.3", "1e5", "--1", " "] {
            assert!(parse_usd(bad).is_err(), "{bad:?} should not parse");
        }
    }

    #[test]
    fn format_usd_trims_and_signs() {
        assert_eq!(format_usd(0), "0");
        assert_eq!(format_usd(1_500_000), "0.0000015");
        assert_eq!(format_usd(-2_500_000_000_000), "-2.5");
        assert_eq!(
            format_usd(i128::from(i64::MAX) * 4),
            "36893488.147419103228"
        );
    }

    proptest! {
        #[test]
        fn format_then_parse_round_trips(picos in any::<i64>().prop_map(|p| p / 4)) {
            prop_assert_eq!(parse_usd(&format_usd(i128::from(picos))), Ok(picos));
        }

        #[test]
        fn cost_is_additive_over_splits(
            a in 0u64..1_000_000, b in 0u64..1_000_000, out in 0u64..1_000_000,
            input in 0i64..100_000_000, output in 0i64..100_000_000,
        ) {
            let price = Price { input, output, cached_input: input / 10, cache_write: input };
            let whole = Usage { input_tokens: a + b, output_tokens: out, ..Usage::default() };
            let first = Usage { input_tokens: a, output_tokens: out, ..Usage::default() };
            let second = Usage { input_tokens: b, ..Usage::default() };
            prop_assert_eq!(
                price.cost(&whole).unwrap(),
                price.cost(&first).unwrap() + price.cost(&second).unwrap()
            );
        }
    }
}
