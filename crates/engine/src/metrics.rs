//! Prometheus metrics owned by the engine. The web layer encodes the registry.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::Arc;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct JobLabel {
    pub job: String,
}

#[derive(Clone)]
pub struct Metrics {
    pub registry: Arc<Registry>,
    pub jobs: Gauge,
    pub jobs_enabled: Gauge,
    pub runs_finished: Family<StatusLabel, Counter>,
    pub runs_running: Gauge,
    pub run_duration: Family<KindLabel, Histogram>,
    pub scheduler_lag: Histogram,
    /// Runs waiting in the queue, as the dispatcher last counted them.
    pub runs_queued: Gauge,
    /// Scheduled instant → the run's claim (when its process starts).
    pub start_lag: Histogram,
    /// Unix time of each job's last successful and last finished run, for alerts
    /// such as "no success for 25 h" (per job; series removed with the job).
    pub job_last_success: Family<JobLabel, Gauge>,
    pub job_last_finish: Family<JobLabel, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("steward");
        let jobs = Gauge::default();
        let jobs_enabled = Gauge::default();
        let runs_finished = Family::<StatusLabel, Counter>::default();
        let runs_running = Gauge::default();
        let run_duration = Family::<KindLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0,
            ])
        });
        let scheduler_lag = Histogram::new([
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
        ]);
        registry.register("jobs", "Jobs defined", jobs.clone());
        registry.register("jobs_enabled", "Jobs enabled", jobs_enabled.clone());
        registry.register(
            "runs_finished",
            "Runs that reached a final state, by state",
            runs_finished.clone(),
        );
        registry.register("runs_running", "Runs executing now", runs_running.clone());
        registry.register(
            "run_duration_seconds",
            "Duration of finished runs, by job kind",
            run_duration.clone(),
        );
        let job_last_success = Family::<JobLabel, Gauge>::default();
        let job_last_finish = Family::<JobLabel, Gauge>::default();
        registry.register(
            "job_last_success_timestamp_seconds",
            "Unix time of the job's last successful run (since this process started)",
            job_last_success.clone(),
        );
        registry.register(
            "job_last_finish_timestamp_seconds",
            "Unix time of the job's last finished run (since this process started)",
            job_last_finish.clone(),
        );
        let runs_queued = Gauge::default();
        registry.register(
            "runs_queued",
            "Runs waiting in the queue (for capacity, a lock, their start time)",
            runs_queued.clone(),
        );
        let start_lag = Histogram::new([
            0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0, 300.0,
        ]);
        registry.register(
            "start_lag_seconds",
            "Delay from a scheduled instant to its run being claimed to start",
            start_lag.clone(),
        );
        registry.register(
            "scheduler_lag_seconds",
            "Delay from a scheduled instant to the scheduler recording it",
            scheduler_lag.clone(),
        );
        Self {
            registry: Arc::new(registry),
            jobs,
            jobs_enabled,
            runs_finished,
            runs_running,
            run_duration,
            scheduler_lag,
            runs_queued,
            start_lag,
            job_last_success,
            job_last_finish,
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
