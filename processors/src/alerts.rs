//! Alert rules as pure functions over plain values: given what one usage, billing or entity
//! record changed, which rules fire and for which window. A firing's `window` is the rule's
//! dedup key with it: the stage that feeds these functions stores (rule, window) once, so a
//! redelivered record, or a second record in the same window, fires nothing more.
//!
//! The alerts stage (`alerting.rs`) feeds them and stores what they return.

/// What a rule watches.
#[derive(Debug, Clone, PartialEq)]
pub enum Watch {
    /// 80 % and 100 % of the company's monthly allocation.
    Quota,
    /// The company's balance going below `credits`.
    LowBalance { credits: i64 },
    /// A new price on the watched asset.
    PriceChanged,
    /// A new version of the watched asset.
    AssetUpdated,
    /// For a seller: the asset's failed share of executions reaching `percent` in a fixed
    /// window of `window_ms`, once at least `min_executions` ran in it.
    ExecutionsFailing {
        percent: u8,
        window_ms: i64,
        min_executions: u64,
    },
}

/// A rule fired for a window: `window` is its dedup key, `reason` what a person reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Firing {
    pub window: String,
    pub reason: String,
}

/// The quota thresholds a company's usage crossed when it went from `before` to `after`
/// requests of `allocation` in the period starting at `period_start_ms` (each threshold once
/// per period, even when one batch crosses both).
pub fn quota(allocation: u64, period_start_ms: i64, before: u64, after: u64) -> Vec<Firing> {
    if allocation == 0 {
        return Vec::new();
    }
    [80u64, 100]
        .into_iter()
        .filter(|pct| {
            let at = (allocation * pct).div_ceil(100);
            before < at && after >= at
        })
        .map(|pct| Firing {
            window: format!("period:{period_start_ms}:{pct}"),
            reason: format!("{after} of {allocation} monthly requests used ({pct} %)"),
        })
        .collect()
}

/// A balance going from `before` to `after` by the ledger entry `entry_id` crossed below the
/// threshold: one firing per crossing (a top-up above it and a fall below it again fire anew).
pub fn low_balance(credits: i64, entry_id: &str, before: i64, after: i64) -> Option<Firing> {
    (before >= credits && after < credits).then(|| Firing {
        window: format!("entry:{entry_id}"),
        reason: format!("the balance fell to {after} credits, below {credits}"),
    })
}

/// A new price (history row `aph_id`) on the watched asset.
pub fn price_changed(aph_id: &str, credits: i64) -> Firing {
    Firing {
        window: format!("price:{aph_id}"),
        reason: format!("the price is now {credits} credits"),
    }
}

/// A new version of the watched asset.
pub fn asset_updated(version: i32) -> Firing {
    Firing {
        window: format!("version:{version}"),
        reason: format!("the asset changed (version {version})"),
    }
}

/// The fixed window holding `at_ms` reaching the failure share, given its counts after this
/// execution: fires at most once per window (the window's start is the key).
pub fn executions_failing(
    percent: u8,
    window_ms: i64,
    min_executions: u64,
    at_ms: i64,
    (executions, failed): (u64, u64),
) -> Option<Firing> {
    let window_ms = window_ms.max(1);
    let start = at_ms.div_euclid(window_ms) * window_ms;
    let reached =
        executions >= min_executions.max(1) && failed * 100 >= u64::from(percent) * executions;
    reached.then(|| Firing {
        window: format!("window:{start}"),
        reason: format!("{failed} of {executions} executions failed since {start}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_fires_at_80_and_100_percent_once_per_period() {
        assert!(quota(100, 0, 10, 79).is_empty());
        let f = quota(100, 7, 79, 80);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].window, "period:7:80");
        assert!(quota(100, 7, 80, 99).is_empty(), "80 % fired already");
        let both = quota(100, 7, 50, 120);
        assert_eq!(
            both.iter().map(|f| f.window.as_str()).collect::<Vec<_>>(),
            ["period:7:80", "period:7:100"]
        );
        // 80 % of 7 is 5.6: the sixth request crosses it.
        assert!(quota(7, 0, 4, 5).is_empty());
        assert_eq!(quota(7, 0, 5, 6).len(), 1);
        assert!(quota(0, 0, 0, 10).is_empty(), "unlimited plans never fire");
    }

    #[test]
    fn low_balance_fires_on_each_crossing_below() {
        assert!(low_balance(100, "e1", 150, 120).is_none());
        let f = low_balance(100, "e2", 120, 95).expect("crossed");
        assert_eq!(f.window, "entry:e2");
        assert!(low_balance(100, "e3", 95, 80).is_none(), "already below");
        assert!(
            low_balance(100, "e4", 100, 99).is_some(),
            "from exactly at the line"
        );
    }

    #[test]
    fn price_and_version_changes_are_keyed_by_what_changed() {
        assert_eq!(price_changed("aph-9", 25).window, "price:aph-9");
        assert_eq!(asset_updated(4).window, "version:4");
    }

    #[test]
    fn failing_executions_fire_once_the_window_has_enough_of_them() {
        let hour = 3_600_000;
        assert!(
            executions_failing(50, hour, 10, 5, (4, 4)).is_none(),
            "too few"
        );
        assert!(executions_failing(50, hour, 10, 5, (10, 4)).is_none());
        let f = executions_failing(50, hour, 10, hour + 5, (10, 5)).expect("half failed");
        assert_eq!(f.window, format!("window:{hour}"));
    }
}
