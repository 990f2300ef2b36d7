//! Prometheus metrics in the text exposition format, from atomics.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the apply-duration histogram, in seconds.
const BUCKETS: [f64; 10] = [0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// Everything `/metrics` reports.
#[derive(Default)]
pub(crate) struct Metrics {
    reconciles: Mutex<BTreeMap<&'static str, u64>>,
    deliveries: Mutex<BTreeMap<&'static str, u64>>,
    apply_buckets: [AtomicU64; BUCKETS.len()],
    apply_count: AtomicU64,
    apply_sum_micros: AtomicU64,
}

impl Metrics {
    /// Counts a reconcile by result (`applied`, `no_changes`, `drift_reported`, `failed`).
    pub(crate) fn reconcile(&self, result: &'static str) {
        *self
            .reconciles
            .lock()
            .expect("metrics")
            .entry(result)
            .or_default() += 1;
    }

    /// Counts a webhook delivery by outcome.
    pub(crate) fn delivery(&self, outcome: &'static str) {
        *self
            .deliveries
            .lock()
            .expect("metrics")
            .entry(outcome)
            .or_default() += 1;
    }

    /// Records an apply's duration.
    pub(crate) fn apply(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        for (bucket, bound) in self.apply_buckets.iter().zip(BUCKETS) {
            if seconds <= bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.apply_count.fetch_add(1, Ordering::Relaxed);
        self.apply_sum_micros
            .fetch_add(took.as_micros() as u64, Ordering::Relaxed);
    }

    /// The exposition text; `depth` is the queue's current depth.
    pub(crate) fn render(&self, depth: usize, log_pollers: usize, log_streams: usize) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP jaam_reconciles_total Reconciles by result.\n# TYPE jaam_reconciles_total counter"
        );
        for (result, count) in self.reconciles.lock().expect("metrics").iter() {
            let _ = writeln!(out, "jaam_reconciles_total{{result=\"{result}\"}} {count}");
        }
        let _ = writeln!(
            out,
            "# HELP jaam_queue_depth Stacks waiting to be reconciled.\n# TYPE jaam_queue_depth gauge\njaam_queue_depth {depth}"
        );
        let _ = writeln!(
            out,
            "# HELP jaam_log_pollers Sites whose log group is polled for open streams.\n# TYPE jaam_log_pollers gauge\njaam_log_pollers {log_pollers}"
        );
        let _ = writeln!(
            out,
            "# HELP jaam_log_streams Open build-log streams.\n# TYPE jaam_log_streams gauge\njaam_log_streams {log_streams}"
        );
        let _ = writeln!(
            out,
            "# HELP jaam_webhook_deliveries_total GitHub deliveries by outcome.\n# TYPE jaam_webhook_deliveries_total counter"
        );
        for (outcome, count) in self.deliveries.lock().expect("metrics").iter() {
            let _ = writeln!(
                out,
                "jaam_webhook_deliveries_total{{outcome=\"{outcome}\"}} {count}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP jaam_apply_duration_seconds How long applies took.\n# TYPE jaam_apply_duration_seconds histogram"
        );
        for (bucket, bound) in self.apply_buckets.iter().zip(BUCKETS) {
            let _ = writeln!(
                out,
                "jaam_apply_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.apply_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "jaam_apply_duration_seconds_bucket{{le=\"+Inf\"}} {count}\njaam_apply_duration_seconds_sum {}\njaam_apply_duration_seconds_count {count}",
            self.apply_sum_micros.load(Ordering::Relaxed) as f64 / 1e6
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_should_render_prometheus_text() {
        let metrics = Metrics::default();
        metrics.reconcile("applied");
        metrics.reconcile("applied");
        metrics.delivery("accepted");
        metrics.apply(Duration::from_millis(300));
        let text = metrics.render(3, 0, 0);
        assert!(text.contains("jaam_reconciles_total{result=\"applied\"} 2"));
        assert!(text.contains("jaam_queue_depth 3"));
        assert!(text.contains("jaam_webhook_deliveries_total{outcome=\"accepted\"} 1"));
        assert!(text.contains("jaam_apply_duration_seconds_bucket{le=\"0.25\"} 0"));
        assert!(text.contains("jaam_apply_duration_seconds_bucket{le=\"0.5\"} 1"));
        assert!(text.contains("jaam_apply_duration_seconds_count 1"));
    }
}
