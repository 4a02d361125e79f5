//! High availability on a real Patroni cluster (`just ha-test`;
//! `TEST_PATRONI=1`): the cluster itself fails over and switches over, and
//! `tracker serve` on a multi-host URL follows both without losing an
//! acknowledged write.

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsString;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use db_core::{Settings, url::DatabaseUrl};
use tempfile::TempDir;
use test_support::{PatroniCluster, Promotion, Role, free_port, report};

use crate::chaos::{Outcome, drive, recovery};
use crate::serve::{Running, start};

/// Writing clients; one more client only reads.
const WRITERS: usize = 8;

/// Starts a cluster on a blocking thread.
async fn start_cluster() -> Arc<PatroniCluster> {
    let cluster = tokio::task::spawn_blocking(PatroniCluster::start)
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("starting the Patroni cluster: {e}"));
    Arc::new(cluster)
}

/// Runs a blocking call on the cluster off the runtime's threads.
async fn on_cluster<T: Send + 'static>(
    cluster: &Arc<PatroniCluster>,
    call: impl FnOnce(&PatroniCluster) -> std::io::Result<T> + Send + 'static,
) -> T {
    let cluster = cluster.clone();
    tokio::task::spawn_blocking(move || call(&cluster))
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A cluster with the tracker's database migrated on its leader and
/// replayed on the standbys, and `tracker serve` on it (in a folder of its
/// own, returned to live as long as it) with writes on the read-write node,
/// reads on the standbys, and the `extra` variables. Returns the leader's
/// name too.
async fn tracker_on_cluster(
    extra: &[(&str, OsString)],
) -> (Arc<PatroniCluster>, String, Running, TempDir) {
    let cluster = start_cluster().await;
    let leader = on_cluster(&cluster, |c| c.leader()).await.name;
    let name = leader.clone();
    on_cluster(&cluster, move |c| {
        c.psql(&name, "postgres", "CREATE DATABASE tracker")
    })
    .await;
    let on_leader = cluster.node_url(&leader, "tracker").unwrap();
    let settings = Settings::new(DatabaseUrl::parse(&on_leader, "DATABASE_URL").unwrap());
    migration::up(&settings, Duration::from_secs(60))
        .await
        .unwrap();
    // A read on a standby that has not replayed the migrations yet would fail.
    on_cluster(&cluster, |c| c.wait_for_standbys()).await;

    let mut vars = vec![
        (
            "DATABASE_URL",
            OsString::from(cluster.url("tracker", "read-write")),
        ),
        (
            "DB_REPLICA_URLS",
            OsString::from(cluster.url("tracker", "standby")),
        ),
    ];
    vars.extend_from_slice(extra);
    let dir = tempfile::tempdir().unwrap();
    let addr = format!("127.0.0.1:{}", free_port().unwrap());
    let app = start(dir.path(), &["serve", "--addr", &addr], &vars).await;
    (cluster, leader, app, dir)
}

/// The cluster comes up with a leader, a sync standby and a replica; a
/// commit on the leader is on the sync standby when the commit returns;
/// `kill -9` of the leader promotes a standby that has that commit; a
/// switchover moves the leader again.
#[test_support::needs(patroni)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_patroni_cluster_fails_over_and_switches_over() {
    let cluster = start_cluster().await;
    let members = on_cluster(&cluster, |c| c.members()).await;
    let roles: Vec<Role> = members.iter().map(|m| m.role).collect();
    assert_eq!(members.len(), 3, "{members:?}");
    assert!(roles.contains(&Role::Leader), "{members:?}");
    assert!(roles.contains(&Role::SyncStandby), "{members:?}");
    let leader = on_cluster(&cluster, |c| c.leader()).await;
    assert!(
        cluster.url("app", "read-write").starts_with(&format!(
            "postgres://postgres@127.0.0.1:{},127.0.0.1:{},127.0.0.1:{}/app?",
            cluster.nodes()[0].port,
            cluster.nodes()[1].port,
            cluster.nodes()[2].port
        )),
        "{}",
        cluster.url("app", "read-write")
    );

    let name = leader.name.clone();
    on_cluster(&cluster, move |c| {
        c.psql(&name, "postgres", "CREATE TABLE committed (n int)")?;
        c.psql(&name, "postgres", "INSERT INTO committed VALUES (1)")
    })
    .await;
    let killed = on_cluster(&cluster, |c| c.kill_leader()).await;
    assert_eq!(killed.leader, leader.name);
    let old = killed.leader.clone();
    let failover = on_cluster(&cluster, move |c| c.wait_for_new_leader(&old, killed.at)).await;
    assert_ne!(failover.to, leader.name);
    let to = failover.to.clone();
    let rows = on_cluster(&cluster, move |c| {
        c.psql(&to, "postgres", "SELECT count(*) FROM committed")
    })
    .await;
    assert_eq!(rows, "1", "the commit acknowledged before the kill is lost");

    let switchover = on_cluster(&cluster, |c| c.switchover()).await;
    assert_eq!(switchover.from, failover.to);
    assert_ne!(switchover.to, switchover.from);
    assert_eq!(
        on_cluster(&cluster, |c| c.leader()).await.name,
        switchover.to
    );
    report(&format!(
        "patroni cluster (3 nodes, ttl 10): healthy {:.1}s after start; kill -9 of leader {}: {} promoted after {:.1}s; switchover {} -> {}: {:.1}s",
        cluster.started_in().as_secs_f64(),
        failover.from,
        failover.to,
        failover.took.as_secs_f64(),
        switchover.from,
        switchover.to,
        switchover.took.as_secs_f64(),
    ));
    assert!(
        failover.took < Duration::from_secs(30),
        "promotion took {:?} with ttl 10",
        failover.took
    );

    // `tracker db check` on the cluster's host list: the new leader is the
    // primary, the old one a standby with its lag once it has rejoined, and
    // the killed node unreachable.
    let url = OsString::from(cluster.url("postgres", "read-write"));
    let line = |stdout: &str, name: &str| {
        let node = cluster.nodes().iter().find(|n| n.name == name).unwrap();
        let host = format!("primary 127.0.0.1:{} ", node.port);
        let found = stdout.lines().find(|l| l.trim_start().starts_with(&host));
        found.map(str::to_owned).unwrap_or_default()
    };
    let dir = tempfile::tempdir().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let stdout = loop {
        let output = crate::cli::tracker(
            dir.path(),
            &["db", "check"],
            &[("DATABASE_URL", url.clone())],
        );
        let (stdout, stderr) = crate::cli::text(&output);
        assert_eq!(output.status.code(), Some(0), "{stdout}{stderr}");
        if line(&stdout, &switchover.from).contains(" standby, lag ") || Instant::now() > deadline {
            break stdout;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    report(&format!("patroni cluster: tracker db check:\n{stdout}"));
    assert!(
        line(&stdout, &switchover.to).ends_with(" primary"),
        "{stdout}"
    );
    assert!(
        line(&stdout, &switchover.from).contains(" standby, lag "),
        "{stdout}"
    );
    assert!(
        line(&stdout, &killed.leader).contains(" unreachable: "),
        "{stdout}"
    );
}

/// What the clients saw from one event until the next (or the end): the
/// requests answered in between.
struct Window {
    /// Failed requests by status (`error` when there was no answer).
    failed: BTreeMap<String, usize>,
    /// Seconds from the event until the first write sent after it succeeded.
    writes_back: Option<f64>,
    /// The longest stretch without an acknowledged write, from the last one
    /// before the event to the end of the window; `None` for its end when
    /// no write was acknowledged after it.
    stall: (Instant, Option<Instant>),
    /// Reads answered (and failed) during that stretch.
    reads_answered: usize,
    reads_failed: usize,
    /// Writes acknowledged in this window, and how many of them are missing.
    acknowledged: usize,
    lost: usize,
}

/// When a request was answered.
fn answered(o: &Outcome) -> Instant {
    o.at + o.latency
}

impl Window {
    fn of(outcomes: &[Outcome], from: Instant, until: Instant, stored: &HashSet<&str>) -> Self {
        let inside: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| answered(o) >= from && answered(o) < until)
            .collect();
        let mut failed = BTreeMap::new();
        for o in inside.iter().filter(|o| o.status != Ok(200)) {
            let key = match &o.status {
                Ok(code) => code.to_string(),
                Err(_) => "error".to_owned(),
            };
            *failed.entry(key).or_insert(0) += 1;
        }
        let writes: Vec<Outcome> = outcomes
            .iter()
            .filter(|o| o.write.is_some())
            .cloned()
            .collect();
        let mut acks: Vec<Instant> = writes
            .iter()
            .filter(|o| o.status == Ok(200) && answered(o) < until)
            .map(answered)
            .collect();
        acks.sort();
        let last_before = acks.iter().rev().find(|t| **t < from).copied();
        let mut stall = (last_before.unwrap_or(from), None);
        let mut previous = stall.0;
        for &t in acks.iter().filter(|t| **t >= from) {
            if stall.1.is_some_and(|end| t - previous > end - stall.0) {
                stall = (previous, Some(t));
            } else if stall.1.is_none() {
                stall.1 = Some(t);
            }
            previous = t;
        }
        let reads: Vec<&&Outcome> = inside
            .iter()
            .filter(|o| o.write.is_none())
            .filter(|o| answered(o) >= stall.0 && stall.1.is_none_or(|end| answered(o) <= end))
            .collect();
        let acknowledged: Vec<&str> = inside
            .iter()
            .filter(|o| o.status == Ok(200))
            .filter_map(|o| o.write.as_deref())
            .collect();
        Window {
            failed,
            writes_back: recovery(&writes, from),
            stall,
            reads_answered: reads.iter().filter(|o| o.status == Ok(200)).count(),
            reads_failed: reads.iter().filter(|o| o.status != Ok(200)).count(),
            acknowledged: acknowledged.len(),
            lost: acknowledged.iter().filter(|n| !stored.contains(*n)).count(),
        }
    }

    /// Seconds without an acknowledged write, if writes came back.
    fn stalled(&self) -> Option<f64> {
        self.stall.1.map(|end| (end - self.stall.0).as_secs_f64())
    }

    fn line(&self, event: &str, promotion: &Promotion) -> String {
        let seconds = |s: Option<f64>| s.map_or("never".to_owned(), |s| format!("{s:.2}s"));
        format!(
            "{event} ({} -> {}): the cluster promoted in {:.2}s; a write sent after the {event} \
             succeeded after {}; no write acknowledged for {} (from {:+.2}s); failed requests {:?}; \
             reads answered meanwhile {} (failed {}); writes acknowledged {}, lost {}",
            promotion.from,
            promotion.to,
            promotion.took.as_secs_f64(),
            seconds(self.writes_back),
            seconds(self.stalled()),
            signed(self.stall.0, promotion.started),
            self.failed,
            self.reads_answered,
            self.reads_failed,
            self.acknowledged,
            self.lost,
        )
    }
}

/// Seconds from `reference` to `t`, negative when `t` is before it.
fn signed(t: Instant, reference: Instant) -> f64 {
    match t.checked_duration_since(reference) {
        Some(after) => after.as_secs_f64(),
        None => -(reference - t).as_secs_f64(),
    }
}

/// Waits (up to 60 s) until a write sent after `since` succeeded.
async fn writes_back(outcomes: &std::sync::Mutex<Vec<Outcome>>, since: Instant) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        let back = outcomes
            .lock()
            .unwrap()
            .iter()
            .any(|o| o.at >= since && o.write.is_some() && o.status == Ok(200));
        if back {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `tracker serve` on the three nodes' multi-host URL (writes on the
/// read-write node, reads on the standbys), 8 writing clients and a reader;
/// then `kill -9` of the leader, and once writes are back a planned
/// switchover. For each: no acknowledged write lost, failures are 503s, no
/// stretch without an acknowledged write longer than the cluster's own
/// promotion time + 2 s (and after the kill, a write sent after it succeeds
/// within that time), and reads keep being answered meanwhile.
#[test_support::needs(patroni, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ha_failover_and_switchover_lose_no_acknowledged_write() {
    let extra = [
        ("DB_ACQUIRE_TIMEOUT", OsString::from("2s")),
        ("DB_CONNECT_TIMEOUT", OsString::from("1s")),
    ];
    let (cluster, _, mut app, _dir) = tracker_on_cluster(&extra).await;

    let stop = Arc::new(AtomicBool::new(false));
    let begun = Instant::now();
    let (outcomes, clients) = drive(
        &app.base,
        WRITERS + 1,
        |worker, _| worker < WRITERS,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    let killed = on_cluster(&cluster, |c| c.kill_leader()).await;
    let old = killed.leader.clone();
    let failover = on_cluster(&cluster, move |c| c.wait_for_new_leader(&old, killed.at)).await;
    writes_back(&outcomes, failover.started).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let switchover = on_cluster(&cluster, |c| c.switchover()).await;
    writes_back(&outcomes, switchover.started).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let end = Instant::now();
    app.terminate();
    let (code, _) = app.wait(Duration::from_secs(15)).await;

    let outcomes = outcomes.lock().unwrap().clone();
    let to = switchover.to.clone();
    let stored = on_cluster(&cluster, move |c| {
        c.psql(
            &to,
            "tracker",
            "SELECT full_name FROM employees WHERE position = 'chaos'",
        )
    })
    .await;
    let stored: HashSet<&str> = stored.lines().collect();
    let before = Window::of(&outcomes, begun, failover.started, &stored);
    let kill = Window::of(&outcomes, failover.started, switchover.started, &stored);
    let planned = Window::of(&outcomes, switchover.started, end, &stored);
    let other: Vec<&Outcome> = outcomes
        .iter()
        .filter(|o| !matches!(o.status, Ok(200) | Ok(503)))
        .collect();
    report(&format!(
        "ha: Patroni cluster of 3 (synchronous, ttl 10) healthy {:.1}s after start; \
         tracker serve on the multi-host URL, {WRITERS} writing clients and 1 reader, {} requests in {:.0}s",
        cluster.started_in().as_secs_f64(),
        outcomes.len(),
        (end - begun).as_secs_f64(),
    ));
    report(&format!(
        "ha: before: writes acknowledged {}, lost {}; failed requests {:?}",
        before.acknowledged, before.lost, before.failed
    ));
    report(&format!(
        "ha: {}",
        kill.line("kill -9 of the leader", &failover)
    ));
    report(&format!("ha: {}", planned.line("switchover", &switchover)));

    assert_eq!(code, Some(0), "the app exited badly");
    assert_eq!(
        before.lost + kill.lost + planned.lost,
        0,
        "acknowledged writes lost"
    );
    let errors: Vec<String> = app
        .logs()
        .into_iter()
        .filter(|l| l.contains("ERROR"))
        .take(5)
        .collect();
    assert!(
        other.is_empty(),
        "answers other than 200 and 503 (seconds after the kill, write or read, status): {:?}; \
         the app's first errors: {errors:#?}",
        other
            .iter()
            .take(5)
            .map(|o| (signed(o.at, failover.started), o.write.is_some(), &o.status))
            .collect::<Vec<_>>()
    );
    let limit = failover.took.as_secs_f64() + 2.0;
    assert!(
        kill.writes_back.is_some_and(|s| s <= limit),
        "after the kill, writes came back after {:?}s, not within {limit:.2}s",
        kill.writes_back
    );
    for (event, window, promotion) in [
        ("kill", &kill, &failover),
        ("switchover", &planned, &switchover),
    ] {
        let limit = promotion.took.as_secs_f64() + 2.0;
        assert!(
            window.stalled().is_some_and(|s| s <= limit),
            "around the {event}, no write was acknowledged for {:?}s, more than {limit:.2}s",
            window.stalled()
        );
        assert!(
            window.reads_answered > 0,
            "no read was answered while writes were stalled around the {event}"
        );
    }
}

/// The leader's PostgreSQL paused (`SIGSTOP` of its postmaster and every
/// backend), under 8 writing clients and a reader through `tracker serve`
/// on the multi-host URL with the default settings: Patroni promotes
/// another node once the leader key expires, and the pool follows it
/// instead of waiting on the paused one. No request takes longer than 8 s,
/// failures are 503s, writes succeed within 2 s of the promotion, none of
/// the acknowledged writes is missing on the new leader, and SIGTERM, sent
/// while the old leader is still paused, ends the process with code 0
/// within 10 s. What Patroni does once the old leader answers again is
/// reported, not asserted: that is the cluster's business (see
/// docs/scaling.md).
#[test_support::needs(patroni, chaos)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_ha_a_paused_leader_is_left_for_the_new_one() {
    let (cluster, leader, mut app, _dir) = tracker_on_cluster(&[]).await;

    let stop = Arc::new(AtomicBool::new(false));
    let (outcomes, clients) = drive(
        &app.base,
        WRITERS + 1,
        |worker, _| worker < WRITERS,
        stop.clone(),
    );
    tokio::time::sleep(Duration::from_secs(5)).await;

    let paused = leader.clone();
    on_cluster(&cluster, move |c| c.pause(&paused)).await;
    let paused_at = Instant::now();
    let old = leader.clone();
    let promotion = on_cluster(&cluster, move |c| c.wait_for_new_leader(&old, paused_at)).await;
    let promoted = promotion.started + promotion.took;
    writes_back(&outcomes, promoted).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    let exit = crate::pause::stop(&mut app).await;

    let outcomes = outcomes.lock().unwrap().clone();
    let chaos = "SELECT full_name FROM employees WHERE position = 'chaos'";
    let to = promotion.to.clone();
    let stored = on_cluster(&cluster, move |c| c.psql(&to, "tracker", chaos)).await;
    let tally = crate::pause::Tally::of(&outcomes, &stored.lines().collect());
    let writes: Vec<Outcome> = outcomes
        .iter()
        .filter(|o| o.write.is_some())
        .cloned()
        .collect();
    let back = recovery(&writes, promoted);
    report(&format!(
        "ha pause: the leader {} paused (its PostgreSQL; ttl 10), {} promoted {:.2}s later; \
         {WRITERS} writing clients and 1 reader, default settings: {}; a write sent after the promotion \
         succeeded after {}; SIGTERM with the old leader still paused to exit {:?} in {:.2}s",
        promotion.from,
        promotion.to,
        promotion.took.as_secs_f64(),
        tally.line(),
        back.map_or("never".to_owned(), |s| format!("{s:.2}s")),
        exit.0,
        exit.1.as_secs_f64(),
    ));

    // The old leader answers again: which node leads then, and how many of
    // the acknowledged writes it has.
    let resumed = leader.clone();
    on_cluster(&cluster, move |c| c.resume(&resumed)).await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = on_cluster(&cluster, move |c| {
        let leader = c.leader()?.name;
        let rows = c.psql(&leader, "tracker", chaos)?;
        Ok((leader, rows))
    })
    .await;
    let kept = crate::pause::Tally::of(&outcomes, &after.1.lines().collect());
    report(&format!(
        "ha pause: 10 s after SIGCONT of {} Patroni has {} as the leader, with {} of the {} acknowledged writes",
        promotion.from,
        after.0,
        kept.acknowledged - kept.lost,
        kept.acknowledged,
    ));

    tally.assert_targets();
    assert!(
        back.is_some_and(|s| s <= 2.0),
        "writes came back {back:?}s after the promotion"
    );
    crate::pause::assert_exit(exit, &app);
}
