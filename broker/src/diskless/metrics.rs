//! Metrics of the diskless write path, per topic (docs/operations.md lists them).

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, Opts, Registry};

pub struct DisklessMetrics {
    /// From a batch's queueing to the start of the flush that takes it.
    pub append_wait: HistogramVec,
    /// The shared object's PUT, observed for each topic in it.
    pub append_put: HistogramVec,
    /// The metadata-store commit (conflict retries included).
    pub append_commit: HistogramVec,
    /// Shared objects written holding the topic's batches.
    pub objects: IntCounterVec,
    /// The topic's bytes in each shared object.
    pub object_bytes: HistogramVec,
    /// Commits that lost a compare to another broker's append and were re-planned.
    pub commit_conflicts: IntCounterVec,
}

const SECONDS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
const BYTES: &[f64] = &[
    1024.0, 16384.0, 131072.0, 1048576.0, 4194304.0, 8388608.0, 16777216.0, 67108864.0,
];

impl DisklessMetrics {
    /// Registers the families in `registry` (the broker's, whose namespace adds
    /// `strata_`).
    pub fn register(registry: &Registry) -> Result<DisklessMetrics, prometheus::Error> {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h = HistogramVec::new(
                HistogramOpts::new(name, help).buckets(buckets.to_vec()),
                &["topic"],
            )?;
            registry.register(Box::new(h.clone()))?;
            Ok::<_, prometheus::Error>(h)
        };
        let counter = |name: &str, help: &str| {
            let c = IntCounterVec::new(Opts::new(name, help), &["topic"])?;
            registry.register(Box::new(c.clone()))?;
            Ok::<_, prometheus::Error>(c)
        };
        Ok(DisklessMetrics {
            append_wait: histogram(
                "diskless_append_wait_seconds",
                "Diskless produce: time a batch waited for its flush to start",
                SECONDS,
            )?,
            append_put: histogram(
                "diskless_append_put_seconds",
                "Diskless produce: time of the shared object's PUT",
                SECONDS,
            )?,
            append_commit: histogram(
                "diskless_append_commit_seconds",
                "Diskless produce: time of the metadata-store commit, conflict retries included",
                SECONDS,
            )?,
            objects: counter(
                "diskless_objects_total",
                "Shared objects written that hold the topic's batches",
            )?,
            object_bytes: histogram(
                "diskless_object_bytes",
                "The topic's bytes in each shared object written",
                BYTES,
            )?,
            commit_conflicts: counter(
                "diskless_commit_conflicts_total",
                "Diskless commits that lost a compare to another broker's append and were re-planned",
            )?,
        })
    }
}
