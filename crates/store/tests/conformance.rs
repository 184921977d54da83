//! One suite for every backend: each case takes a `&dyn Store` and states the
//! semantics the services rely on (exactly-once occurrences, the run state
//! machine, transactions that apply whole or not at all, one audit chain).
//! `backends!` runs every case on each backend; a new backend adds one module
//! there, a new table adds its cases here.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use chrono::{DateTime, Utc};
use std::sync::Arc;
use steward_domain::{
    AuditContext, AuditRecord, JobDefinition, JobId, JobName, RunOutcome, RunStatus, SecretName,
    Trigger, Username,
};
use steward_store::access::{Grantee, NewSession, NewToken, NewUser};
use steward_store::{NewRun, RunFilter, RunUpdate, Store, StoreError};

fn def(name: &str) -> JobDefinition {
    serde_json::from_value(
        serde_json::json!({"name": name, "spec": {"kind": "command", "argv": ["true"]}}),
    )
    .unwrap()
}
fn t(s: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + s, 0).unwrap()
}
fn audit(i: i64) -> AuditRecord {
    AuditContext::system("test").record(
        t(i),
        "job.update",
        format!("job:j{i}"),
        serde_json::json!({"n": {"from": i, "to": i + 1}}),
    )
}
fn scheduled(job: JobId, at: DateTime<Utc>) -> NewRun {
    NewRun {
        job_id: job,
        job_name: JobName::parse("a").unwrap(),
        status: RunStatus::Queued,
        trigger: Trigger::Schedule,
        scheduled_for: Some(at),
        not_before: None,
        attempt: 1,
        parent_run_id: None,
        created_at: at,
        start_deadline: None,
        error: None,
    }
}
fn ending(status: RunStatus, at: DateTime<Utc>) -> RunUpdate {
    RunUpdate {
        status,
        finished_at: at,
        outcome: RunOutcome::default(),
        output: None,
        output_truncated: false,
    }
}

async fn job(s: &dyn Store, name: &str) -> steward_store::Job {
    let mut tx = s.write().await.unwrap();
    let job = tx.create_job(&def(name), t(0)).await.unwrap();
    tx.append_audit(&audit(0)).await.unwrap();
    tx.commit().await.unwrap();
    job
}

async fn insert(s: &dyn Store, run: &NewRun) -> Result<steward_store::Run, StoreError> {
    let mut tx = s.write().await?;
    let r = tx.insert_run(run).await?;
    tx.commit().await?;
    Ok(r)
}

async fn start(s: &dyn Store, id: steward_domain::RunId, at: DateTime<Utc>) -> bool {
    let mut tx = s.write().await.unwrap();
    let started = tx
        .claim_run(id, "node-a", at, at + chrono::Duration::seconds(30))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    started
}

async fn finish(
    s: &dyn Store,
    id: steward_domain::RunId,
    u: &RunUpdate,
) -> Result<bool, StoreError> {
    let mut tx = s.write().await?;
    let done = tx.finish_run(id, u).await?;
    tx.commit().await?;
    Ok(done)
}

mod cases {
    pub use super::claims::two_nodes_never_claim_the_same_run;
    use super::*;

    pub async fn a_duplicate_job_name_is_a_conflict(s: &dyn Store) {
        job(s, "a").await;
        let mut tx = s.write().await.unwrap();
        let e = tx.create_job(&def("a"), t(0)).await.unwrap_err();
        assert!(
            matches!(e, StoreError::Conflict(ref m) if m.contains("already exists")),
            "{e:?}"
        );
    }

    pub async fn an_occurrence_is_recorded_once(s: &dyn Store) {
        let job = job(s, "a").await;
        insert(s, &scheduled(job.id, t(60))).await.unwrap();
        let e = insert(s, &scheduled(job.id, t(60))).await.unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        // Manual runs at the same instant are not occurrences.
        let mut manual = scheduled(job.id, t(60));
        manual.trigger = Trigger::Manual;
        insert(s, &manual).await.unwrap();
    }

    pub async fn the_cursor_only_moves_forward(s: &dyn Store) {
        let job = job(s, "a").await;
        for (to, want) in [(60, 60), (30, 60), (90, 90)] {
            let mut tx = s.write().await.unwrap();
            tx.advance_cursor(job.id, t(to)).await.unwrap();
            tx.commit().await.unwrap();
            let got = s.read().await.unwrap().get_job(job.id).await.unwrap();
            assert_eq!(got.schedule_cursor, Some(t(want)), "after {to}");
        }
    }

    pub async fn the_first_ending_wins_and_pruning_keeps_the_newest(s: &dyn Store) {
        let job = job(s, "a").await;
        let mut ids = vec![];
        for i in 0..5 {
            let r = insert(s, &scheduled(job.id, t(i))).await.unwrap();
            assert!(start(s, r.id, t(i)).await);
            assert!(!start(s, r.id, t(i)).await);
            let mut end = ending(RunStatus::Succeeded, t(i + 1));
            end.output = Some(format!("out {i}"));
            end.outcome.detail = Some(serde_json::json!({"exit_code": i, "kind_owned": [i]}));
            assert!(finish(s, r.id, &end).await.unwrap());
            end.status = RunStatus::Failed;
            assert!(!finish(s, r.id, &end).await.unwrap());
            ids.push(r.id);
        }
        let mut rx = s.read().await.unwrap();
        assert_eq!(
            rx.get_run(ids[0]).await.unwrap().status,
            RunStatus::Succeeded
        );
        // The kind's outcome is kept as the data it gave, not a column of it.
        assert_eq!(
            rx.get_run(ids[1]).await.unwrap().outcome,
            Some(serde_json::json!({"exit_code": 1, "kind_owned": [1]}))
        );
        assert_eq!(
            rx.run_output(ids[4]).await.unwrap().as_deref(),
            Some("out 4")
        );
        drop(rx);
        let mut tx = s.write().await.unwrap();
        assert_eq!(tx.prune_runs(job.id, 2).await.unwrap(), 3);
        tx.commit().await.unwrap();
        let mut rx = s.read().await.unwrap();
        let left = rx
            .list_runs(&RunFilter {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(
            left.iter().map(|r| r.id).collect::<Vec<_>>(),
            vec![ids[4], ids[3]]
        );
        let page = rx
            .list_runs(&RunFilter {
                limit: 10,
                before: Some(ids[4]),
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.len(), 1);
        let endings = rx.last_endings().await.unwrap();
        assert_eq!(endings.len(), 1);
        assert_eq!(endings[0].finished, t(5));
        assert_eq!(endings[0].succeeded, Some(t(5)));
    }

    pub async fn status_changes_follow_the_domain_state_machine(s: &dyn Store) {
        let job = job(s, "a").await;
        let r = insert(s, &scheduled(job.id, t(1))).await.unwrap();
        // A run that never started cannot have succeeded, failed or timed out.
        for status in [RunStatus::Succeeded, RunStatus::Failed, RunStatus::TimedOut] {
            assert!(
                !finish(s, r.id, &ending(status, t(2))).await.unwrap(),
                "{status}"
            );
        }
        let e = finish(s, r.id, &ending(RunStatus::Running, t(2)))
            .await
            .unwrap_err();
        assert!(matches!(e, StoreError::Conflict(_)), "{e:?}");
        assert!(finish(s, r.id, &ending(RunStatus::Cancelled, t(2)))
            .await
            .unwrap());
        assert!(!start(s, r.id, t(3)).await);
        let got = s.read().await.unwrap().get_run(r.id).await.unwrap();
        assert_eq!(got.status, RunStatus::Cancelled);
    }

    /// The rescuer takes runs whose lease ran out, and at a node's start
    /// every run that node had claimed; their locks go with them.
    pub async fn rescue_takes_expired_leases_and_a_restarted_nodes_claims(s: &dyn Store) {
        let job = job(s, "a").await;
        let a = insert(s, &scheduled(job.id, t(1))).await.unwrap();
        let b = insert(s, &scheduled(job.id, t(2))).await.unwrap();
        let c = insert(s, &scheduled(job.id, t(3))).await.unwrap();
        assert!(start(s, a.id, t(1)).await); // node-a, lease until t(31)
        let lock = steward_domain::LockName::parse("restic:offsite").unwrap();
        let mut tx = s.write().await.unwrap();
        assert!(tx.claim_run(c.id, "node-b", t(3), t(100)).await.unwrap());
        tx.take_lock(&lock, a.id, 1).await.unwrap();
        let handle = steward_domain::RunHandle {
            kind: "command".into(),
            data: serde_json::json!({"process_group": 4242}),
        };
        tx.set_run_handle(a.id, &handle).await.unwrap();
        // Only a running run holds anything: a queued one is left alone.
        tx.set_run_handle(b.id, &handle).await.unwrap();
        assert!(tx.request_cancel(a.id, t(2)).await.unwrap());
        assert!(
            !tx.request_cancel(b.id, t(2)).await.unwrap(),
            "only a running run"
        );
        // Renewal extends only the claimant's own runs among those it names.
        assert_eq!(
            tx.renew_leases("node-b", &[a.id, c.id], t(120))
                .await
                .unwrap(),
            1
        );
        tx.commit().await.unwrap();
        assert_eq!(
            s.read()
                .await
                .unwrap()
                .cancel_requests("node-a")
                .await
                .unwrap(),
            vec![a.id]
        );

        let mut tx = s.write().await.unwrap();
        let rescued = tx.rescue_expired(t(40), false).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(rescued.len(), 1, "{rescued:?}");
        assert_eq!(rescued[0].run, a.id);
        assert_eq!(rescued[0].handle.as_ref(), Some(&handle));
        assert_eq!(rescued[0].claimed_by.as_deref(), Some("node-a"));
        assert!(rescued[0].cancel_requested);
        let mut rx = s.read().await.unwrap();
        let got = rx.get_run(a.id).await.unwrap();
        assert_eq!(got.status, RunStatus::Abandoned);
        assert!(got.error.unwrap().contains("lease of node-a expired"));
        assert!(rx
            .lock_holders(std::slice::from_ref(&lock))
            .await
            .unwrap()
            .is_empty());
        assert_eq!(rx.get_run(c.id).await.unwrap().status, RunStatus::Running);
        drop(rx);
        // An ending recorded after the rescue is refused: the claim is gone.
        let mut tx = s.write().await.unwrap();
        assert!(!tx
            .finish_claimed(a.id, "node-a", &ending(RunStatus::Succeeded, t(41)))
            .await
            .unwrap());
        // A Steward starting (the only one on its database): every running
        // run is abandoned at once, whoever had claimed it.
        let rescued = tx.rescue_expired(t(41), true).await.unwrap();
        tx.commit().await.unwrap();
        assert_eq!(
            rescued.iter().map(|r| r.run).collect::<Vec<_>>(),
            vec![c.id]
        );
        let mut rx = s.read().await.unwrap();
        assert_eq!(rx.get_run(b.id).await.unwrap().status, RunStatus::Queued);
        assert_eq!(rx.queued_count().await.unwrap(), 1);
        drop(rx);
        // Deleting the job removes its runs.
        let mut tx = s.write().await.unwrap();
        tx.delete_job(job.id).await.unwrap();
        tx.commit().await.unwrap();
        let e = s.read().await.unwrap().get_run(a.id).await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    }

    /// Queued runs are served oldest due instant first, a page at a time;
    /// an occurrence is recorded once however often it is enqueued; a run
    /// past its start deadline is skipped saying how long it waited.
    pub async fn the_queue_is_served_in_order_and_claimed_once(s: &dyn Store) {
        let job = job(s, "a").await;
        let mut runs: Vec<NewRun> = [30, 10, 20]
            .iter()
            .map(|i| scheduled(job.id, t(*i)))
            .collect();
        runs.push(scheduled(job.id, t(10))); // the same occurrence again
        let mut late = scheduled(job.id, t(5));
        late.trigger = Trigger::Manual;
        late.scheduled_for = None;
        late.start_deadline = Some(t(8));
        runs.push(late);
        // A manual run due at t(28): never served ahead of its time.
        let mut held = scheduled(job.id, t(1));
        held.trigger = Trigger::Manual;
        held.scheduled_for = None;
        held.not_before = Some(t(28));
        runs.push(held);
        let mut tx = s.write().await.unwrap();
        assert_eq!(tx.enqueue_runs(&runs).await.unwrap(), 5);
        tx.commit().await.unwrap();

        let wake = s
            .read()
            .await
            .unwrap()
            .queue_wake(t(7), t(7))
            .await
            .unwrap();
        assert!(wake.due_now);
        assert_eq!(wake.next, Some(t(8) + chrono::Duration::milliseconds(1)));
        assert!(!wake.to_prepare);
        assert_eq!(
            wake.next_scheduled,
            Some(t(10)),
            "the manual run is not scheduled"
        );
        let wake = s
            .read()
            .await
            .unwrap()
            .queue_wake(t(7), t(15))
            .await
            .unwrap();
        assert!(wake.to_prepare, "t(10) may be prepared by t(15)");
        assert_eq!(
            wake.next_scheduled,
            Some(t(20)),
            "the next one beyond t(15)"
        );
        let mut tx = s.write().await.unwrap();
        assert_eq!(tx.skip_expired(t(9)).await.unwrap(), 1);
        let page = tx.due_runs(t(25), t(25), None, &[], 1).await.unwrap();
        assert_eq!(page[0].run.scheduled_for, Some(t(10)));
        assert_eq!(page[0].job.id, job.id);
        let next = tx
            .due_runs(
                t(25),
                t(25),
                Some((page[0].due_at, page[0].run.id)),
                &[],
                10,
            )
            .await
            .unwrap();
        assert_eq!(next.len(), 1, "t(30) is not due at t(25)");
        let ahead = tx
            .due_runs(
                t(25),
                t(30),
                Some((page[0].due_at, page[0].run.id)),
                &[],
                10,
            )
            .await
            .unwrap();
        assert_eq!(
            ahead.iter().map(|d| d.due_at).collect::<Vec<_>>(),
            [t(20), t(30)],
            "a scheduled run due by t(30) is served to prepare ahead, after those due now; \
             the manual one due at t(28) is not"
        );
        assert_eq!(next[0].run.scheduled_for, Some(t(20)));
        assert!(
            tx.due_runs(t(25), t(25), None, &[job.id], 10)
                .await
                .unwrap()
                .is_empty(),
            "a job left out of the pass"
        );
        tx.set_waiting(next[0].run.id, "waiting for lock x")
            .await
            .unwrap();
        assert!(tx
            .claim_run(page[0].run.id, "n", t(25), t(55))
            .await
            .unwrap());
        assert!(!tx
            .claim_run(page[0].run.id, "m", t(25), t(55))
            .await
            .unwrap());
        assert!(tx
            .skip_queued(next[0].run.id, t(26), "skipped: because")
            .await
            .unwrap());
        tx.commit().await.unwrap();

        let mut rx = s.read().await.unwrap();
        let expired = rx
            .list_runs(&RunFilter {
                job_id: Some(job.id),
                status: Some(RunStatus::Skipped),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        let why: Vec<_> = expired.iter().filter_map(|r| r.error.clone()).collect();
        assert!(
            why.iter()
                .any(|e| e.contains("missed its start deadline after 4 s in the queue")),
            "{why:?}"
        );
        assert!(why.iter().any(|e| e == "skipped: because"), "{why:?}");
        let claimed = rx.get_run(page[0].run.id).await.unwrap();
        assert_eq!(
            (claimed.status, claimed.claimed_by.as_deref()),
            (RunStatus::Running, Some("n"))
        );
        assert_eq!(
            rx.running_runs_of(&[job.id]).await.unwrap(),
            vec![(job.id, claimed.id)]
        );
        drop(rx);
        let mut tx = s.write().await.unwrap();
        assert!(
            !tx.finish_claimed(claimed.id, "m", &ending(RunStatus::Succeeded, t(27)))
                .await
                .unwrap(),
            "another node's claim"
        );
        assert!(tx
            .finish_claimed(claimed.id, "n", &ending(RunStatus::Succeeded, t(27)))
            .await
            .unwrap());
        tx.commit().await.unwrap();
        // t(30) and the manual run due at t(28).
        assert_eq!(s.read().await.unwrap().queued_count().await.unwrap(), 2);
    }

    /// Job lists page by cursor in name or next-run order, and filter by
    /// tag, name part (wildcards literal), enabled and last status (kept by
    /// the database on every ending).
    pub async fn job_lists_page_and_filter(s: &dyn Store) {
        use steward_store::{JobCursor, JobQuery, JobSort};
        let mut tx = s.write().await.unwrap();
        let mut ids = std::collections::HashMap::new();
        for (name, tags, enabled, next) in [
            ("a_b", vec!["db"], true, Some(30)),
            ("axb", vec!["db", "nightly"], true, Some(10)),
            ("c", vec![], false, None),
            ("d", vec!["nightly"], true, Some(10)),
            ("e", vec![], true, None),
        ] {
            let mut d = def(name);
            d.tags = tags
                .into_iter()
                .map(|t| steward_domain::Tag::parse(t).unwrap())
                .collect();
            d.enabled = enabled;
            let job = tx.create_job(&d, t(0)).await.unwrap();
            tx.set_next_run(job.id, next.map(t), None).await.unwrap();
            ids.insert(name, job.id);
        }
        tx.commit().await.unwrap();
        let names = |jobs: Vec<steward_store::Job>| -> Vec<String> {
            jobs.iter().map(|j| j.name().to_string()).collect()
        };
        let page = |q: JobQuery| async move {
            let mut rx = s.read().await.unwrap();
            rx.list_jobs_page(&q).await.unwrap()
        };
        // By name, two at a time, following the cursor.
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let got = page(JobQuery {
                after: after.clone(),
                limit: 2,
                ..Default::default()
            })
            .await;
            if got.is_empty() {
                break;
            }
            after = Some(JobCursor::Name(got.last().unwrap().name().clone()));
            all.extend(names(got));
        }
        assert_eq!(all, ["a_b", "axb", "c", "d", "e"]);
        // By next run: soonest first, ties by name, none last.
        let got = page(JobQuery {
            sort: JobSort::NextRun,
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(got[0].next_run_at, Some(t(10)));
        assert_eq!(names(got), ["axb", "d", "a_b", "c", "e"]);
        let got = page(JobQuery {
            sort: JobSort::NextRun,
            after: Some(JobCursor::NextRun(
                Some(t(10)),
                JobName::parse("d").unwrap(),
            )),
            limit: 2,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got), ["a_b", "c"]);
        let got = page(JobQuery {
            sort: JobSort::NextRun,
            after: Some(JobCursor::NextRun(None, JobName::parse("c").unwrap())),
            limit: 2,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got), ["e"]);
        // A next run computed from an older copy of the job does not win.
        let mut tx = s.write().await.unwrap();
        tx.set_next_run(ids["e"], Some(t(1)), Some(t(99)))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let got = page(JobQuery {
            sort: JobSort::NextRun,
            limit: 1,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got), ["axb"], "a stale write moved e");
        // Filters.
        let tag = |t: &str| Some(steward_domain::Tag::parse(t).unwrap());
        let got = page(JobQuery {
            tag: tag("nightly"),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got), ["axb", "d"]);
        let got = page(JobQuery {
            name_contains: Some("A_B".into()),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got), ["a_b"], "'_' is not a wildcard");
        let got = page(JobQuery {
            name_contains: Some("%".into()),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert!(got.is_empty(), "'%' is not a wildcard");
        let got = page(JobQuery {
            enabled: Some(false),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got), ["c"]);
        // Tags follow the definition.
        let mut tx = s.write().await.unwrap();
        let mut d = def("d");
        d.tags = vec![];
        tx.update_job(ids["d"], &d, t(1)).await.unwrap();
        tx.commit().await.unwrap();
        let got = page(JobQuery {
            tag: tag("nightly"),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got), ["axb"]);
        // The last status is whatever ended last, however it was written.
        let run = insert(s, &scheduled(ids["e"], t(5))).await.unwrap();
        assert!(finish(s, run.id, &ending(RunStatus::Cancelled, t(6)))
            .await
            .unwrap());
        let mut skipped = scheduled(ids["d"], t(7));
        skipped.status = RunStatus::Skipped;
        skipped.error = Some("skipped".into());
        let mut tx = s.write().await.unwrap();
        tx.enqueue_runs(&[skipped]).await.unwrap();
        tx.commit().await.unwrap();
        let got = page(JobQuery {
            last_status: Some(RunStatus::Cancelled),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got), ["e"]);
        let got = page(JobQuery {
            last_status: Some(RunStatus::Skipped),
            limit: 10,
            ..Default::default()
        })
        .await;
        assert_eq!(names(got.clone()), ["d"]);
        assert_eq!(got[0].last_status, Some(RunStatus::Skipped));
    }

    /// A lock holding lives exactly as long as its run runs: every ending
    /// (recorded by its node, cancelled through the store) releases it.
    pub async fn lock_holdings_end_with_their_run(s: &dyn Store) {
        let job = job(s, "weekly").await;
        let lock = steward_domain::LockName::parse("pg:main").unwrap();
        let a = insert(s, &scheduled(job.id, t(1))).await.unwrap();
        let b = insert(s, &scheduled(job.id, t(2))).await.unwrap();
        let mut tx = s.write().await.unwrap();
        for r in [a.id, b.id] {
            assert!(tx.claim_run(r, "n", t(3), t(33)).await.unwrap());
            tx.take_lock(&lock, r, 2).await.unwrap();
        }
        tx.commit().await.unwrap();
        let holders = s
            .read()
            .await
            .unwrap()
            .lock_holders(std::slice::from_ref(&lock))
            .await
            .unwrap();
        assert_eq!(holders.len(), 2);
        assert_eq!(
            (
                holders[0].run,
                holders[0].holders,
                holders[0].job_name.as_str()
            ),
            (a.id, 2, "weekly")
        );
        assert!(finish(s, b.id, &ending(RunStatus::Cancelled, t(4)))
            .await
            .unwrap());
        let mut tx = s.write().await.unwrap();
        assert!(tx
            .finish_claimed(a.id, "n", &ending(RunStatus::Failed, t(5)))
            .await
            .unwrap());
        tx.commit().await.unwrap();
        assert!(s
            .read()
            .await
            .unwrap()
            .lock_holders(&[lock])
            .await
            .unwrap()
            .is_empty());
    }

    /// An error between two writes leaves neither: the change and its audit
    /// record are kept together or not at all.
    pub async fn a_transaction_not_committed_leaves_nothing(s: &dyn Store) {
        let mut tx = s.write().await.unwrap();
        tx.create_job(&def("ghost"), t(0)).await.unwrap();
        tx.append_audit(&audit(1)).await.unwrap();
        drop(tx);
        let mut rx = s.read().await.unwrap();
        assert!(rx
            .find_job(&JobName::parse("ghost").unwrap())
            .await
            .unwrap()
            .is_none());
        assert_eq!(rx.audit_head().await.unwrap(), None);
        drop(rx);
        // And the next write proceeds normally (the writer was released).
        job(s, "real").await;
        assert_eq!(s.verify_audit().await.unwrap().entries, 1);
    }

    /// A read transaction sees one snapshot: a write committed while it is
    /// open does not appear in it.
    pub async fn a_read_transaction_is_one_snapshot(s: &dyn Store) {
        job(s, "a").await;
        let mut rx = s.read().await.unwrap();
        assert_eq!(rx.list_jobs().await.unwrap().len(), 1);
        job(s, "b").await;
        assert_eq!(rx.list_jobs().await.unwrap().len(), 1);
        drop(rx);
        assert_eq!(s.read().await.unwrap().list_jobs().await.unwrap().len(), 2);
    }

    /// Concurrent writers each append; the chain has one order and verifies.
    pub async fn concurrent_audit_appends_keep_one_chain(s: Arc<dyn Store>) {
        let mut tasks = vec![];
        for w in 0..8 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0..25 {
                    let mut tx = s.write().await.unwrap();
                    tx.append_audit(&audit(w * 100 + i)).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let report = s.verify_audit().await.unwrap();
        assert_eq!(report.entries, 200);
        assert_eq!(report.problem, None);
        let page = s.read().await.unwrap().audit_page(0, 1000).await.unwrap();
        let mut prevs: Vec<&str> = page.iter().map(|e| e.prev_hash.as_str()).collect();
        prevs.sort_unstable();
        prevs.dedup();
        assert_eq!(prevs.len(), 200, "two entries share a predecessor");
    }

    pub async fn audit_lists_filter_by_event_family_actor_target_and_time(s: &dyn Store) {
        let mut tx = s.write().await.unwrap();
        for (i, event) in ["job.create", "job.update", "user.create", "jobless.x"]
            .iter()
            .enumerate()
        {
            let mut r = audit(i as i64);
            r.event = (*event).to_owned();
            tx.append_audit(&r).await.unwrap();
        }
        tx.commit().await.unwrap();
        let mut rx = s.read().await.unwrap();
        let ids =
            |v: Vec<steward_store::audit::AuditEntry>| v.iter().map(|e| e.id).collect::<Vec<_>>();
        let f = |event: Option<&str>| steward_store::audit::AuditFilter {
            event: event.map(str::to_owned),
            limit: 10,
            ..Default::default()
        };
        assert_eq!(
            ids(rx.list_audit(&f(Some("job"))).await.unwrap()),
            vec![2, 1],
            "a family, not a prefix of a word"
        );
        assert_eq!(
            ids(rx.list_audit(&f(Some("job.update"))).await.unwrap()),
            vec![2]
        );
        assert_eq!(
            ids(rx.list_audit(&f(None)).await.unwrap()),
            vec![4, 3, 2, 1]
        );
        let mut by = f(None);
        by.target = Some("job:j2".into());
        by.actor = Some("test".into());
        assert_eq!(ids(rx.list_audit(&by).await.unwrap()), vec![3]);
        let mut window = f(None);
        window.since = Some(t(1));
        window.until = Some(t(3));
        window.before = Some(3);
        assert_eq!(ids(rx.list_audit(&window).await.unwrap()), vec![2]);
    }

    /// Write transactions are serialised across processes too (PostgreSQL:
    /// the advisory lock; SQLite: the file lock): two stores on one database
    /// appending at once keep one chain, and an occurrence both try to record
    /// is recorded once.
    pub async fn two_processes_on_one_database_keep_one_chain_and_one_occurrence(
        a: Arc<dyn Store>,
        b: Arc<dyn Store>,
    ) {
        let j = job(&*a, "shared").await;
        let mut tasks = vec![];
        for w in 0..8 {
            let s = if w % 2 == 0 { a.clone() } else { b.clone() };
            tasks.push(tokio::spawn(async move {
                let mut recorded = 0;
                for i in 0..20 {
                    let mut tx = s.write().await.unwrap();
                    tx.append_audit(&audit(w * 100 + i)).await.unwrap();
                    tx.commit().await.unwrap();
                    if insert(&*s, &scheduled(j.id, t(1000 + i))).await.is_ok() {
                        recorded += 1;
                    }
                }
                recorded
            }));
        }
        let mut recorded = 0;
        for task in tasks {
            recorded += task.await.unwrap();
        }
        assert_eq!(recorded, 20, "each occurrence recorded exactly once");
        for s in [&a, &b] {
            let report = s.verify_audit().await.unwrap();
            assert_eq!(report.entries, 161, "{report:?}");
            assert_eq!(report.problem, None);
        }
    }

    pub async fn jobs_naming_a_secret_are_found_and_go_with_their_job(s: &dyn Store) {
        let a = job(s, "a").await;
        let b = job(s, "b").await;
        let key = SecretName::parse("db_password").unwrap();
        let other = SecretName::parse("other").unwrap();
        let mut tx = s.write().await.unwrap();
        tx.set_job_secrets(a.id, &[key.clone(), other.clone()])
            .await
            .unwrap();
        tx.set_job_secrets(b.id, std::slice::from_ref(&key))
            .await
            .unwrap();
        tx.commit().await.unwrap();
        let names = |v: Vec<JobName>| {
            v.into_iter()
                .map(|n| n.as_str().to_owned())
                .collect::<Vec<_>>()
        };
        let mut rx = s.read().await.unwrap();
        assert_eq!(
            names(rx.jobs_naming_secret(&key).await.unwrap()),
            ["a", "b"]
        );
        drop(rx);
        let mut tx = s.write().await.unwrap();
        tx.set_job_secrets(a.id, &[]).await.unwrap();
        tx.delete_job(b.id).await.unwrap();
        tx.commit().await.unwrap();
        let mut rx = s.read().await.unwrap();
        assert!(rx.jobs_naming_secret(&key).await.unwrap().is_empty());
        assert!(rx.jobs_naming_secret(&other).await.unwrap().is_empty());
    }

    pub async fn secrets_are_replaced_and_resealed_only_if_unchanged(s: &dyn Store) {
        let name = SecretName::parse("k").unwrap();
        let mut tx = s.write().await.unwrap();
        assert!(tx
            .put_secret(&name, "d", "sealed-1", 1, t(0))
            .await
            .unwrap());
        assert!(!tx
            .put_secret(&name, "d", "sealed-2", 1, t(1))
            .await
            .unwrap());
        tx.commit().await.unwrap();
        let mut rx = s.read().await.unwrap();
        let stale = rx.stale_sealed(2, 10).await.unwrap();
        assert_eq!(stale.len(), 1);
        assert_eq!(rx.key_versions_in_use().await.unwrap(), vec![1]);
        drop(rx);
        let mut tx = s.write().await.unwrap();
        assert!(tx.reseal(&stale[0], "sealed-3", 2).await.unwrap());
        // The same cell read before the first reseal no longer matches.
        assert!(!tx.reseal(&stale[0], "sealed-4", 2).await.unwrap());
        tx.commit().await.unwrap();
        let mut rx = s.read().await.unwrap();
        let sealed = rx
            .sealed_secrets(std::slice::from_ref(&name))
            .await
            .unwrap();
        assert_eq!(sealed, vec![(name.clone(), "sealed-3".to_owned())]);
        drop(rx);
        let mut tx = s.write().await.unwrap();
        tx.delete_secret(&name).await.unwrap();
        let e = tx.delete_secret(&name).await.unwrap_err();
        assert!(matches!(e, StoreError::NotFound(_)), "{e:?}");
    }

    pub async fn accounts_roles_groups_sessions_and_tokens(s: &dyn Store) {
        let mut tx = s.write().await.unwrap();
        let viewer = tx
            .find_role("viewer")
            .await
            .unwrap()
            .expect("built-in role");
        let operator = tx
            .find_role("operator")
            .await
            .unwrap()
            .expect("built-in role");
        let u = tx
            .create_user(
                &NewUser {
                    username: Username::parse("ada").unwrap(),
                    email: Some("ada@example.test".into()),
                    password_hash: "h1".into(),
                    must_change: false,
                    roles: vec![viewer.id],
                },
                t(0),
            )
            .await
            .unwrap();
        let g = tx.create_group("ops", t(0)).await.unwrap();
        tx.set_members(g.id, &[u.id, u.id]).await.unwrap();
        tx.set_grants(Grantee::Group(g.id), &[operator.id, operator.id])
            .await
            .unwrap();
        tx.commit().await.unwrap();

        let mut rx = s.read().await.unwrap();
        let mut roles: Vec<String> = rx
            .effective_roles(u.id)
            .await
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        roles.sort();
        assert_eq!(roles, ["operator", "viewer"]);
        assert_eq!(
            rx.find_user_by_email("ada@example.test")
                .await
                .unwrap()
                .map(|x| x.id),
            Some(u.id)
        );
        drop(rx);

        let mut tx = s.write().await.unwrap();
        let mut sessions = vec![];
        for i in 0..3u8 {
            sessions.push(
                tx.create_session(&NewSession {
                    token_hash: [i; 32],
                    user_id: u.id,
                    now: t(0),
                    expires_at: t(3600),
                    address: None,
                    user_agent: None,
                })
                .await
                .unwrap(),
            );
        }
        for i in 0..2u8 {
            tx.create_token(&NewToken {
                token_hash: [100 + i; 32],
                hint: "st_x".into(),
                user_id: u.id,
                name: format!("t{i}"),
                scopes: steward_domain::PermissionSet::EMPTY,
                created_at: t(0),
                expires_at: None,
            })
            .await
            .unwrap();
        }
        assert_eq!(
            tx.delete_sessions(u.id, Some(sessions[0])).await.unwrap(),
            2
        );
        assert!(!tx.delete_session(u.id, sessions[1]).await.unwrap());
        assert_eq!(tx.revoke_tokens_of(u.id, t(5)).await.unwrap(), 2);
        assert_eq!(tx.revoke_tokens_of(u.id, t(6)).await.unwrap(), 0);
        tx.set_password(u.id, "h2", true, t(7)).await.unwrap();
        tx.create_reset(&[7; 32], u.id, t(7), t(100)).await.unwrap();
        tx.commit().await.unwrap();

        let mut rx = s.read().await.unwrap();
        assert_eq!(rx.list_sessions(u.id).await.unwrap().len(), 1);
        assert!(rx.find_session(&[0; 32]).await.unwrap().is_some());
        assert!(rx.find_session(&[1; 32]).await.unwrap().is_none());
        assert!(rx
            .list_tokens(Some(u.id))
            .await
            .unwrap()
            .iter()
            .all(|k| k.revoked_at == Some(t(5))));
        let user = rx.get_user(u.id).await.unwrap();
        assert_eq!(
            (user.password_hash.as_str(), user.must_change),
            ("h2", true)
        );
        assert_eq!(rx.reset_user(&[7; 32], t(8)).await.unwrap(), Some(u.id));
        assert_eq!(
            rx.reset_user(&[7; 32], t(200)).await.unwrap(),
            None,
            "expired"
        );
        drop(rx);

        let mut tx = s.write().await.unwrap();
        assert_eq!(tx.consume_reset(&[7; 32], t(8)).await.unwrap(), Some(u.id));
        assert_eq!(
            tx.consume_reset(&[7; 32], t(9)).await.unwrap(),
            None,
            "used once"
        );
        tx.create_reset(&[8; 32], u.id, t(9), t(100)).await.unwrap();
        assert_eq!(tx.delete_pending_resets(u.id).await.unwrap(), 1);
        tx.delete_user(u.id).await.unwrap();
        tx.commit().await.unwrap();
        let mut rx = s.read().await.unwrap();
        assert!(
            rx.find_session(&[0; 32]).await.unwrap().is_none(),
            "sessions go with the user"
        );
        assert_eq!(rx.count_users().await.unwrap(), 0);
    }
}

mod claims {
    use super::{job, scheduled, t, Arc, NewRun, Store};

    /// Claims one due run at a time on its own write transaction, as a
    /// dispatcher does, until none is left; returns what it claimed.
    async fn drain(s: Arc<dyn Store>, node: &'static str) -> Vec<steward_domain::RunId> {
        let mut mine = Vec::new();
        loop {
            let mut tx = s.write().await.unwrap();
            let due = tx.due_runs(t(1000), t(1000), None, &[], 1).await.unwrap();
            let Some(d) = due.first() else { return mine };
            if tx
                .claim_run(d.run.id, node, t(1000), t(1030))
                .await
                .unwrap()
            {
                mine.push(d.run.id);
            }
            tx.commit().await.unwrap();
        }
    }

    /// Two nodes draining one queue: every run is claimed exactly once.
    pub async fn two_nodes_never_claim_the_same_run(a: Arc<dyn Store>, b: Arc<dyn Store>) {
        let job = job(&*a, "a").await;
        let runs: Vec<NewRun> = (0..200).map(|i| scheduled(job.id, t(i))).collect();
        let mut tx = a.write().await.unwrap();
        assert_eq!(tx.enqueue_runs(&runs).await.unwrap(), 200);
        tx.commit().await.unwrap();
        let (x, y) = tokio::join!(
            tokio::spawn(drain(a.clone(), "node-a")),
            tokio::spawn(drain(b.clone(), "node-b"))
        );
        let (x, y) = (x.unwrap(), y.unwrap());
        let mut all: Vec<_> = x.iter().chain(&y).copied().collect();
        all.sort();
        all.dedup();
        assert_eq!(
            all.len(),
            200,
            "claimed {} + {} distinct {}",
            x.len(),
            y.len(),
            all.len()
        );
        assert_eq!(x.len() + y.len(), 200, "a run was claimed twice");
    }
}

/// Every case on one backend: `$open` yields a [`Backend`].
macro_rules! suite {
    ($backend:ident => $open:expr; [$($case:ident),*] [$($shared:ident),*] [$($two:ident),*]) => {
        mod $backend {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let backend = $open.await;
                    cases::$case(&*backend.store).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $shared() {
                    let backend = $open.await;
                    cases::$shared(backend.store.clone()).await;
                }
            )*
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $two() {
                    let backend = $open.await;
                    cases::$two(backend.store.clone(), backend.other.clone()).await;
                }
            )*
        }
    };
}

/// The case list, once; each backend line runs all of it.
macro_rules! backends {
    ($($backend:ident => $open:expr;)*) => {$(
        suite!($backend => $open; [
            a_duplicate_job_name_is_a_conflict,
            an_occurrence_is_recorded_once,
            the_cursor_only_moves_forward,
            the_first_ending_wins_and_pruning_keeps_the_newest,
            status_changes_follow_the_domain_state_machine,
            rescue_takes_expired_leases_and_a_restarted_nodes_claims,
            the_queue_is_served_in_order_and_claimed_once,
            lock_holdings_end_with_their_run,
            job_lists_page_and_filter,
            a_transaction_not_committed_leaves_nothing,
            a_read_transaction_is_one_snapshot,
            jobs_naming_a_secret_are_found_and_go_with_their_job,
            audit_lists_filter_by_event_family_actor_target_and_time,
            secrets_are_replaced_and_resealed_only_if_unchanged,
            accounts_roles_groups_sessions_and_tokens
        ] [
            concurrent_audit_appends_keep_one_chain
        ] [
            two_processes_on_one_database_keep_one_chain_and_one_occurrence,
            two_nodes_never_claim_the_same_run
        ]);
    )*};
}

struct Backend {
    store: Arc<dyn Store>,
    /// A second store on the same database, as another Steward process would
    /// open it (its own connections; on SQLite its own writer).
    other: Arc<dyn Store>,
    _dir: tempfile::TempDir,
}

async fn sqlite() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("steward.db");
    let store = steward_store::SqliteStore::open(&path).await.unwrap();
    let other = steward_store::SqliteStore::open(&path).await.unwrap();
    Backend {
        store: Arc::new(store),
        other: Arc::new(other),
        _dir: dir,
    }
}

/// A database of its own on the shared test cluster (see `steward-testkit`).
async fn postgres() -> Backend {
    let dir = tempfile::tempdir().unwrap();
    let url = steward_testkit::Cluster::shared().create_database().await;
    let anchor = Some(dir.path().join("audit.head"));
    let store = steward_store::PgStore::connect(&url, anchor.clone())
        .await
        .unwrap();
    let other = steward_store::PgStore::connect(&url, anchor).await.unwrap();
    Backend {
        store: Arc::new(store),
        other: Arc::new(other),
        _dir: dir,
    }
}

backends! {
    sqlite => sqlite();
    postgres => postgres();
}
