//! One claimed run, executed on this node: its secrets opened, its kind
//! (`kinds::JobKind`) run with a timeout and a cancel token, its output flushed to the
//! store meanwhile, its ending handed to the completer. The [`Slot`] it
//! holds is dropped when the ending is recorded, whatever happened.

use super::complete::Ending;
use super::{Active, RunQueue, Slot};
use crate::executor::{ExecContext, ExecResult};
use crate::kinds::{fields, JobKind};
use crate::metrics::{JobLabel, KindLabel};
use crate::output::OutputBuffer;
use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use steward_domain::{JobSpec, RunHandle, RunId, RunStatus};
use steward_store::{Job, Run, RunUpdate};
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

pub(super) fn spawn(queue: &Arc<RunQueue>, slot: Slot, run: Run, job: Arc<Job>) {
    let cancel = CancellationToken::new();
    let output = OutputBuffer::new(queue.settings.output_limit);
    queue.active().insert(
        run.id,
        Active {
            cancel: cancel.clone(),
            output: output.clone(),
        },
    );
    queue.started.notify_waiters();
    let q = queue.clone();
    queue.executions.spawn(async move {
        // Leaves the registry however the execution ends (a panic too): a
        // run not in it is no longer renewed, so its lease runs out and the
        // rescuer records it, releasing its locks.
        let _registered = Registered {
            queue: q.clone(),
            run: run.id,
        };
        execute(&q, run, job, cancel, output).await;
        drop(slot);
    });
}

struct Registered {
    queue: Arc<RunQueue>,
    run: steward_domain::RunId,
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Some(a) = self.queue.active().remove(&self.run) {
            a.output.close();
        }
    }
}

async fn execute(
    queue: &Arc<RunQueue>,
    run: Run,
    job: Arc<Job>,
    cancel: CancellationToken,
    output: OutputBuffer,
) {
    let started_at = run.started_at.unwrap_or_else(|| queue.clock.now());
    queue.metrics.runs_running.inc();
    tracing::info!(run = %run.id, job = %job.name(), trigger = run.trigger.as_str(), attempt = run.attempt, "run started");
    let ctx = context(queue, &run, &job, &cancel, &output);
    let spec = &job.definition.spec;
    let prepared = match queue.settings.kinds.get(spec.kind()) {
        Ok(kind) => open_secrets(queue, kind, spec, &output)
            .await
            .map(|spec| (kind, spec)),
        // A job saved when this Steward had a kind it no longer has.
        Err(e) => Err(e.message),
    };
    let mut result = match prepared {
        Ok((kind, spec)) => match wait_for_instant(kind, &ctx).await {
            Ok(()) => kind.execute(&spec, &ctx).await,
            Err(cancelled) => cancelled,
        },
        Err(e) => {
            ctx.note(&e);
            ExecResult::failed(e)
        }
    };
    // An error message, or the kind's outcome, may quote what the process
    // or server said.
    result.outcome.error = result.outcome.error.map(|e| output.mask(&e));
    result.outcome.detail = result.outcome.detail.map(|d| stored_outcome(d, &output));
    if result.status == RunStatus::Cancelled && queue.shutting_down.load(Ordering::SeqCst) {
        result.outcome.error =
            Some("cancelled: Steward shut down and the grace period ran out".into());
    }
    // A run that ended before its instant (cancelled, or failed while being
    // prepared) is recorded as ending at it: never before it started.
    let finished_at = queue.clock.now().max(started_at);
    let captured = output.snapshot();
    let (done, recorded) = oneshot::channel();
    let ending = Ending {
        run: run.clone(),
        job: job.clone(),
        update: RunUpdate {
            status: result.status,
            finished_at,
            outcome: result.outcome,
            output: Some(storable(captured.text)),
            output_truncated: captured.truncated,
        },
        done,
    };
    let held = if queue.completer.send(ending).is_ok() {
        recorded.await.unwrap_or(false)
    } else {
        false
    };
    if !held {
        tracing::error!(run = %run.id, job = %job.name(), "the end of this run was not recorded: its claim no longer held (rescued after its lease expired) or the completer stopped");
    }
    queue.metrics.runs_running.dec();
    observe_end(queue, &job, result.status, started_at, finished_at);
    tracing::info!(run = %run.id, job = %job.name(), status = result.status.as_str(), "run finished");
}

/// For a run prepared ahead of its instant, with a kind that does not wait
/// itself (`JobKind::prepares_ahead`): waits for the instant, unless the
/// run is cancelled first.
async fn wait_for_instant(kind: &dyn JobKind, ctx: &ExecContext) -> Result<(), ExecResult> {
    if kind.prepares_ahead() || ctx.until_start().is_zero() {
        return Ok(());
    }
    tokio::select! {
        () = ctx.clock.sleep_until(ctx.start_at) => Ok(()),
        () = ctx.cancel.cancelled() => Err(ExecResult::cancelled_before_start()),
    }
}

fn observe_end(
    queue: &RunQueue,
    job: &Job,
    status: RunStatus,
    started_at: chrono::DateTime<chrono::Utc>,
    finished_at: chrono::DateTime<chrono::Utc>,
) {
    let label = JobLabel {
        job: job.name().to_string(),
    };
    let m = &queue.metrics;
    m.job_last_finish
        .get_or_create(&label)
        .set(finished_at.timestamp());
    if status == RunStatus::Succeeded {
        m.job_last_success
            .get_or_create(&label)
            .set(finished_at.timestamp());
    }
    queue.count_finished(status, 1);
    let secs = (finished_at - started_at)
        .to_std()
        .unwrap_or_default()
        .as_secs_f64();
    m.run_duration
        .get_or_create(&KindLabel {
            kind: job.definition.spec.kind().into(),
        })
        .observe(secs);
}

fn context(
    queue: &RunQueue,
    run: &Run,
    job: &Job,
    cancel: &CancellationToken,
    output: &OutputBuffer,
) -> ExecContext {
    ExecContext {
        run: run.id,
        start_at: run.started_at.unwrap_or_else(|| queue.clock.now()),
        timeout: job.definition.policies.timeout.get(),
        cancel: cancel.clone(),
        stopping: queue.stopping.clone(),
        output: output.clone(),
        clock: queue.clock.clone(),
        env: vec![
            ("STEWARD_RUN_ID".into(), run.id.to_string()),
            ("STEWARD_JOB_NAME".into(), job.name().to_string()),
            ("STEWARD_ATTEMPT".into(), run.attempt.to_string()),
        ]
        .into_iter()
        .chain(run.scheduled_for.map(|t| {
            (
                "STEWARD_SCHEDULED_FOR".into(),
                t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            )
        }))
        .collect(),
        on_hold: {
            // Recorded in batches (see `record_handles`): one transaction
            // per started command would queue before every other writer.
            let handles = queue.handles.clone();
            let id = run.id;
            let kind = job.definition.spec.kind().to_owned();
            Box::new(move |data| {
                let _ = handles.send((
                    id,
                    RunHandle {
                        kind: kind.clone(),
                        data,
                    },
                ));
            })
        },
    }
}

/// Records the handles executing runs hold (a command's process group),
/// all those waiting in one transaction: what a restart after a crash gives
/// each kind to reconcile.
pub(super) async fn record_handles(
    queue: Arc<RunQueue>,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<(steward_domain::RunId, RunHandle)>,
) {
    while let Some(batch) = queue.next_batch(&mut rx, usize::MAX).await {
        let written = async {
            let mut tx = queue.store.write().await?;
            for (run, handle) in &batch {
                tx.set_run_handle(*run, handle).await?;
            }
            tx.commit().await
        };
        if let Err(e) = written.await {
            tracing::warn!(runs = batch.len(), error = %e, "could not record the handles of runs");
        }
    }
}

/// The attempt's spec with `${secret:NAME}` filled in, and the values set
/// as masks on its output. Borrowed unchanged when it references nothing.
async fn open_secrets<'a>(
    queue: &RunQueue,
    kind: &dyn JobKind,
    spec: &'a JobSpec,
    output: &OutputBuffer,
) -> Result<Cow<'a, JobSpec>, String> {
    let names = fields::references(kind, spec).map_err(|e| e.to_string())?;
    if names.is_empty() {
        return Ok(Cow::Borrowed(spec));
    }
    let names: Vec<_> = names.into_iter().collect();
    let opened = queue
        .settings
        .secrets
        .open(&names)
        .await
        .map_err(|e| format!("could not open the job's secrets: {e}"))?;
    output.set_masks(
        opened
            .iter()
            .flat_map(|(_, v)| crate::secrets::mask_forms(v))
            .collect(),
    );
    let values = opened.into_iter().collect();
    fields::fill_in(kind, spec, &values).map(Cow::Owned)
}

/// A kind's outcome as it is stored and shown: every string masked like the
/// output, and always an object (the API document says so), a bare value
/// kept under `value`.
fn stored_outcome(mut detail: serde_json::Value, output: &OutputBuffer) -> serde_json::Value {
    fn mask_strings(v: &mut serde_json::Value, output: &OutputBuffer) {
        match v {
            serde_json::Value::String(s) => *s = output.mask(s),
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|i| mask_strings(i, output))
            }
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|i| mask_strings(i, output))
            }
            _ => {}
        }
    }
    mask_strings(&mut detail, output);
    if detail.is_object() {
        detail
    } else {
        serde_json::json!({ "value": detail })
    }
}

/// How often the output of executing runs is written to the store.
const OUTPUT_FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Writes the output kept so far (bounded by `executor.output_limit`) of
/// every executing run that printed since the last pass, all in one
/// transaction, every [`OUTPUT_FLUSH_EVERY`]: what a run prints reaches the
/// store while it runs, so a crash of Steward keeps it (the final record
/// replaces it). One transaction per run per second would, with many runs
/// printing, queue before every other writer.
pub(super) async fn flush_outputs(queue: Arc<RunQueue>) {
    let mut tick = tokio::time::interval(OUTPUT_FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Lines pushed as of the last write, per run.
    let mut written: HashMap<RunId, u64> = HashMap::new();
    loop {
        tokio::select! {
            biased;
            () = queue.finished.cancelled() => return,
            _ = tick.tick() => {}
        }
        let changed: Vec<(RunId, OutputBuffer, u64)> = {
            let active = queue.active();
            written.retain(|id, _| active.contains_key(id));
            active
                .iter()
                .map(|(id, a)| (*id, a.output.clone(), a.output.lines_pushed()))
                .filter(|(id, _, pushed)| *pushed != written.get(id).copied().unwrap_or(0))
                .collect()
        };
        if changed.is_empty() {
            continue;
        }
        let batch: Vec<(RunId, String, bool)> = changed
            .iter()
            .map(|(id, output, _)| {
                let kept = output.snapshot();
                (*id, storable(kept.text), kept.truncated)
            })
            .collect();
        let saved = async {
            let mut tx = queue.store.write().await?;
            for (run, text, truncated) in &batch {
                tx.save_run_output(*run, text, *truncated).await?;
            }
            tx.commit().await
        };
        match saved.await {
            Ok(()) => written.extend(changed.into_iter().map(|(id, _, pushed)| (id, pushed))),
            Err(e) => {
                tracing::warn!(runs = batch.len(), error = %e, "could not save the output of running runs so far");
            }
        }
    }
}

/// Output as every backend can store it: PostgreSQL text holds no NUL, so a
/// NUL a process printed becomes U+FFFD instead of failing the record.
fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}
