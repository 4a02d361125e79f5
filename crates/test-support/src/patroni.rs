//! A PostgreSQL high-availability cluster for tests (Debian's `patroni` and
//! `etcd-server` packages): one etcd and three Patroni-managed PostgreSQL
//! nodes on free loopback ports in a temporary folder, with synchronous
//! replication. Tests kill, pause or switch over its leader, and measure how
//! long the cluster itself takes to promote another node.
//!
//! Every node trusts connections from loopback (the superuser `postgres`,
//! the replication user `replicator`), so its URLs carry no password.
//! Logs go to `etcd.log` and `nodeN/patroni.log` (Patroni's and PostgreSQL's
//! output) in the folder; when the cluster does not come up, the error ends
//! with their last lines.

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use super::http;
use super::postgres_server::{
    as_postgres, find_bin, free_port, give_to_postgres, pause_server, postmaster, psql,
    resume_server, stat_field,
};

/// The cluster's name in etcd (Patroni's `scope`).
const SCOPE: &str = "tracker-test";

/// How long the cluster may take to come up healthy.
const START_LIMIT: Duration = Duration::from_secs(120);

/// How long a promotion (after a kill, or a switchover), or standbys
/// catching up, may take.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

/// How often the cluster's state is polled while waiting.
const POLL: Duration = Duration::from_millis(100);

/// How many lines of each log a failed start shows.
const TAIL_LINES: usize = 15;

/// One PostgreSQL node as configured: its Patroni name and its ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Patroni's name for it, `node1` to `node3`.
    pub name: String,
    /// PostgreSQL's port on 127.0.0.1.
    pub port: u16,
    /// Patroni's REST API port on 127.0.0.1.
    pub api_port: u16,
}

/// A member's role, as Patroni's `/cluster` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// The primary, holding the leader key.
    Leader,
    /// The standby that the leader's commits wait for.
    SyncStandby,
    /// Any other standby.
    Replica,
    /// A role this helper does not use (e.g. a standby cluster's leader).
    #[serde(other)]
    Other,
}

/// One member of the cluster as Patroni's `/cluster` reports it now.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Member {
    /// Its name, `node1` to `node3`.
    pub name: String,
    /// Leader, sync standby or replica.
    pub role: Role,
    /// PostgreSQL's state as Patroni sees it (`running`, `starting`, `stopped`, ...).
    pub state: String,
    /// PostgreSQL's port.
    pub port: u16,
    /// The WAL timeline it is on, when known.
    #[serde(default)]
    pub timeline: Option<u64>,
    /// Replication lag in bytes (standbys), when known.
    #[serde(default, deserialize_with = "lag")]
    pub lag: Option<u64>,
}

impl Member {
    fn is(&self, role: Role) -> bool {
        self.role == role && self.state == "running"
    }
}

/// Patroni reports an unknown lag as the text `unknown`.
fn lag<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    Ok(serde_json::Value::deserialize(d)?.as_u64())
}

#[derive(Deserialize)]
struct ClusterState {
    members: Vec<Member>,
}

/// The leader that [`PatroniCluster::kill_leader`] killed, and when.
#[derive(Debug, Clone)]
pub struct Killed {
    /// The killed leader's name.
    pub leader: String,
    /// Just after both `kill -9` were sent.
    pub at: Instant,
}

/// A change of leader, timed by the cluster: from the kill or the
/// switchover request until the new leader accepts writes.
#[derive(Debug, Clone)]
pub struct Promotion {
    /// The old leader's name.
    pub from: String,
    /// The new leader's name.
    pub to: String,
    /// When the kill or the switchover happened.
    pub started: Instant,
    /// From `started` until Patroni reported the new leader running and it
    /// was out of recovery.
    pub took: Duration,
}

/// A running cluster: one etcd, three Patroni nodes. Everything is killed
/// (`kill -9` of each process group and postmaster) and the folder removed
/// on drop, also when the test fails.
#[derive(Debug)]
pub struct PatroniCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    nodes: Vec<Node>,
    /// etcd and each node's Patroni, each the leader of its process group.
    children: Mutex<Vec<(String, Child)>>,
    started_in: Duration,
}

impl PatroniCluster {
    /// Starts etcd and three Patroni nodes and waits (up to 120 s) until they
    /// are healthy: a leader, a sync standby and a replica, both standbys
    /// streaming from the leader.
    pub fn start() -> io::Result<Self> {
        let begun = Instant::now();
        for (program, package) in [("patroni", "patroni"), ("etcd", "etcd-server")] {
            if Command::new(program).arg("--version").output().is_err() {
                return Err(io::Error::other(format!(
                    "{program} is not installed (apt-get install {package})"
                )));
            }
        }
        let dir = tempfile::Builder::new()
            .prefix("tracker-patroni-")
            .tempdir()?;
        let mut cluster = PatroniCluster {
            dir,
            bin: find_bin()?,
            nodes: Vec::new(),
            children: Mutex::new(Vec::new()),
            started_in: Duration::ZERO,
        };
        let etcd_port = free_port()?;
        for n in 1..=3 {
            cluster.nodes.push(Node {
                name: format!("node{n}"),
                port: free_port()?,
                api_port: free_port()?,
            });
        }
        for node in &cluster.nodes {
            let folder = cluster.node_dir(&node.name);
            std::fs::create_dir(&folder)?;
            std::fs::write(
                folder.join("patroni.yml"),
                patroni_config(node, &folder, &cluster.bin, etcd_port),
            )?;
        }
        give_to_postgres(cluster.dir.path())?;

        cluster.start_etcd(etcd_port)?;
        for node in &cluster.nodes {
            let folder = cluster.node_dir(&node.name);
            let mut command = as_postgres("patroni");
            command.arg(folder.join("patroni.yml"));
            cluster.spawn(&node.name, command, &folder.join("patroni.log"))?;
        }
        cluster.wait_until("healthy", begun + START_LIMIT, |c| c.healthy())?;
        cluster.started_in = begun.elapsed();
        Ok(cluster)
    }

    /// Starts etcd (v3 API) and waits until it answers `/health`.
    fn start_etcd(&self, port: u16) -> io::Result<()> {
        let peer = free_port()?;
        let mut command = Command::new("etcd");
        command
            .args(["--name", "etcd", "--data-dir"])
            .arg(self.dir.path().join("etcd"))
            .arg(format!("--listen-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--listen-peer-urls=http://127.0.0.1:{peer}"))
            .arg(format!(
                "--initial-advertise-peer-urls=http://127.0.0.1:{peer}"
            ))
            .arg(format!("--initial-cluster=etcd=http://127.0.0.1:{peer}"));
        self.spawn("etcd", command, &self.dir.path().join("etcd.log"))?;
        self.wait_until(
            "etcd answering",
            Instant::now() + START_LIMIT,
            |_| match http::request(port, "GET", "/health", "", Duration::from_secs(2)) {
                Ok((200, _)) => Ok(()),
                Ok((status, body)) => Err(format!("etcd /health: {status} {body}")),
                Err(e) => Err(format!("etcd /health: {e}")),
            },
        )
    }

    /// Spawns `command` as the leader of a process group of its own, its
    /// output appended to `log`.
    fn spawn(&self, name: &str, mut command: Command, log: &Path) -> io::Result<()> {
        let log = File::options().create(true).append(true).open(log)?;
        let child = command
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .map_err(|e| io::Error::other(format!("starting {name}: {e}")))?;
        self.children
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((name.to_owned(), child));
        Ok(())
    }

    /// Polls `check` until it passes, or fails at `deadline` with the last
    /// reason and the logs' tails.
    fn wait_until<T>(
        &self,
        what: &str,
        deadline: Instant,
        check: impl Fn(&Self) -> Result<T, String>,
    ) -> io::Result<T> {
        loop {
            match check(self) {
                Ok(value) => return Ok(value),
                Err(why) if Instant::now() >= deadline => {
                    return Err(io::Error::other(format!(
                        "the Patroni cluster was not {what} in time: {why}\n{}",
                        self.log_tails()
                    )));
                }
                Err(_) => std::thread::sleep(POLL),
            }
        }
    }

    /// A leader, a sync standby and a replica, all running, and both standbys
    /// streaming from the leader (one synchronously).
    fn healthy(&self) -> Result<(), String> {
        let members = self.members().map_err(|e| e.to_string())?;
        let count = |role| members.iter().filter(|m| m.is(role)).count();
        let (leaders, sync, replicas) = (
            count(Role::Leader),
            count(Role::SyncStandby),
            count(Role::Replica),
        );
        if (leaders, sync, replicas) != (1, 1, 1) {
            return Err(format!("members: {members:?}"));
        }
        let leader = self.leader().map_err(|e| e.to_string())?;
        let streaming = self
            .psql(
                &leader.name,
                "postgres",
                "SELECT count(*) FILTER (WHERE state = 'streaming') || ' streaming, ' \
                 || count(*) FILTER (WHERE sync_state = 'sync') || ' sync' \
                 FROM pg_stat_replication",
            )
            .map_err(|e| e.to_string())?;
        if streaming != "2 streaming, 1 sync" {
            return Err(format!("replication from {}: {streaming}", leader.name));
        }
        Ok(())
    }

    /// How long [`Self::start`] took until the cluster was healthy.
    pub fn started_in(&self) -> Duration {
        self.started_in
    }

    /// The three nodes as configured.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The configured node called `name`.
    pub fn node(&self, name: &str) -> io::Result<&Node> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| io::Error::other(format!("no node called {name}")))
    }

    /// The members as Patroni's `/cluster` reports them now, asked of the
    /// first node whose REST API answers.
    pub fn members(&self) -> io::Result<Vec<Member>> {
        let mut last = io::Error::other("no node to ask");
        for node in &self.nodes {
            match http::request(node.api_port, "GET", "/cluster", "", Duration::from_secs(2)) {
                Ok((200, body)) => {
                    let state: ClusterState = serde_json::from_str(&body).map_err(|e| {
                        io::Error::other(format!("{}'s /cluster: {e}: {body}", node.name))
                    })?;
                    return Ok(state.members);
                }
                Ok((status, body)) => {
                    last = io::Error::other(format!("{}'s /cluster: {status} {body}", node.name));
                }
                Err(e) => last = io::Error::other(format!("{}'s /cluster: {e}", node.name)),
            }
        }
        Err(last)
    }

    /// The running leader.
    pub fn leader(&self) -> io::Result<Member> {
        let members = self.members()?;
        members
            .iter()
            .find(|m| m.is(Role::Leader))
            .cloned()
            .ok_or_else(|| io::Error::other(format!("no running leader: {members:?}")))
    }

    /// `127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3`: every node, in order.
    pub fn hosts(&self) -> String {
        self.nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A libpq multi-host URL for `database` on all three nodes as the
    /// superuser: `postgres://postgres@H1,H2,H3/DATABASE?target_session_attrs=ATTRS`.
    pub fn url(&self, database: &str, target_session_attrs: &str) -> String {
        format!(
            "postgres://postgres@{}/{database}?target_session_attrs={target_session_attrs}",
            self.hosts()
        )
    }

    /// A URL for `database` on the node called `name` alone.
    pub fn node_url(&self, name: &str, database: &str) -> io::Result<String> {
        let node = self.node(name)?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{database}",
            node.port
        ))
    }

    /// Runs SQL as the superuser on the node called `name` (over its Unix
    /// socket) and returns psql's unaligned output.
    pub fn psql(&self, name: &str, database: &str, sql: &str) -> io::Result<String> {
        let node = self.node(name)?;
        psql(&self.bin, &self.node_dir(name), node.port, database, sql)
    }

    /// Waits (up to 60 s) until every running standby has replayed all the
    /// WAL the leader has written so far (a database just created, a
    /// migration), so that reads on any standby see it.
    pub fn wait_for_standbys(&self) -> io::Result<()> {
        let leader = self.leader()?;
        let written = self.psql(&leader.name, "postgres", "SELECT pg_current_wal_lsn()")?;
        let caught_up = format!("SELECT pg_last_wal_replay_lsn() >= '{written}'::pg_lsn");
        self.wait_until(
            &format!("caught up with {} (WAL up to {written})", leader.name),
            Instant::now() + WAIT_LIMIT,
            |c| {
                let members = c.members().map_err(|e| e.to_string())?;
                let standbys = members
                    .iter()
                    .filter(|m| m.is(Role::SyncStandby) || m.is(Role::Replica));
                for standby in standbys {
                    let done = c
                        .psql(&standby.name, "postgres", &caught_up)
                        .map_err(|e| e.to_string())?;
                    if done != "t" {
                        return Err(format!("{} is behind", standby.name));
                    }
                }
                Ok(())
            },
        )
    }

    /// Pauses the PostgreSQL server of node `name` (`SIGSTOP` of its
    /// postmaster and every process it started) while its Patroni runs on:
    /// its connections stay open and nothing answers. A leader's Patroni
    /// then waits in a query to its server and cannot renew the leader key,
    /// so another node is promoted after the TTL.
    pub fn pause(&self, name: &str) -> io::Result<()> {
        self.node(name)?;
        pause_server(&self.data_dir(name))
    }

    /// Resumes what [`Self::pause`] paused (`SIGCONT`).
    pub fn resume(&self, name: &str) -> io::Result<()> {
        self.node(name)?;
        resume_server(&self.data_dir(name))
    }

    /// `kill -9` of the leader's Patroni and of its postmaster, as a crash
    /// of its machine would do; returns the leader's name and the moment.
    pub fn kill_leader(&self) -> io::Result<Killed> {
        let leader = self.leader()?;
        let postmaster = self
            .postmaster(&leader.name)
            .ok_or_else(|| io::Error::other(format!("{} has no postmaster", leader.name)))?;
        self.kill_group(&leader.name);
        kill(&postmaster.pid.to_string())?;
        Ok(Killed {
            leader: leader.name,
            at: Instant::now(),
        })
    }

    /// Waits (up to 60 s) until a node other than `old` leads and accepts
    /// writes; the promotion is timed from `since`.
    pub fn wait_for_new_leader(&self, old: &str, since: Instant) -> io::Result<Promotion> {
        let to = self.wait_until(
            &format!("led by a node other than {old}"),
            Instant::now() + WAIT_LIMIT,
            |c| {
                let leader = c.leader().map_err(|e| e.to_string())?;
                if leader.name == old {
                    return Err(format!("{old} still leads"));
                }
                let recovering = c
                    .psql(&leader.name, "postgres", "SELECT pg_is_in_recovery()")
                    .map_err(|e| e.to_string())?;
                if recovering != "f" {
                    return Err(format!("{} is still in recovery", leader.name));
                }
                Ok(leader.name)
            },
        )?;
        Ok(Promotion {
            from: old.to_owned(),
            to,
            started: since,
            took: since.elapsed(),
        })
    }

    /// A planned switchover from the leader to its sync standby (Patroni's
    /// `POST /switchover`, what `patronictl switchover` sends), once the
    /// cluster has both; waits until the standby leads and accepts writes.
    pub fn switchover(&self) -> io::Result<Promotion> {
        let (leader, candidate) = self.wait_until(
            "ready for a switchover (a leader and a sync standby)",
            Instant::now() + WAIT_LIMIT,
            |c| {
                let members = c.members().map_err(|e| e.to_string())?;
                let find = |role| members.iter().find(|m| m.is(role)).map(|m| m.name.clone());
                match (find(Role::Leader), find(Role::SyncStandby)) {
                    (Some(leader), Some(sync)) => Ok((leader, sync)),
                    _ => Err(format!("members: {members:?}")),
                }
            },
        )?;
        let api_port = self.node(&leader)?.api_port;
        let body = format!(r#"{{"leader":"{leader}","candidate":"{candidate}"}}"#);
        let started = Instant::now();
        let (status, answer) = http::request(api_port, "POST", "/switchover", &body, WAIT_LIMIT)?;
        if status != 200 {
            return Err(io::Error::other(format!(
                "switchover from {leader} to {candidate}: {status} {answer}"
            )));
        }
        self.wait_for_new_leader(&leader, started)
    }

    fn node_dir(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// The postmaster of node `name`, from its `postmaster.pid`, if that
    /// process is still that node's server.
    fn postmaster(&self, name: &str) -> Option<Postmaster> {
        let pid = postmaster(&self.data_dir(name))?;
        let group = stat_field(pid, 2)?;
        Some(Postmaster { pid, group })
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.node_dir(name).join("data")
    }

    /// `kill -9` of the process group of `name`'s Patroni (or etcd).
    fn kill_group(&self, name: &str) {
        let children = self.children.lock().unwrap_or_else(|e| e.into_inner());
        for (_, child) in children.iter().filter(|(n, _)| n == name) {
            let _ = kill(&format!("-{}", child.id()));
        }
    }

    /// The last lines of etcd's and every node's log.
    fn log_tails(&self) -> String {
        let mut logs = vec![self.dir.path().join("etcd.log")];
        logs.extend(
            self.nodes
                .iter()
                .map(|n| self.node_dir(&n.name).join("patroni.log")),
        );
        logs.iter()
            .map(|path| {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                let tail = lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n  ");
                format!("--- {}:\n  {tail}", path.display())
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// A node's postmaster: its pid and its process group (Patroni starts it in
/// a session of its own, with its backends).
struct Postmaster {
    pid: u32,
    group: u32,
}

/// `kill -9 TARGET` (a pid, or `-PGID` for a process group).
fn kill(target: &str) -> io::Result<()> {
    let status = Command::new("kill")
        .args(["-KILL", "--", target])
        .stderr(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(io::Error::other(format!("kill -9 {target} failed")));
    }
    Ok(())
}

impl Drop for PatroniCluster {
    fn drop(&mut self) {
        // Patroni first, so that it does not start a killed server again.
        for node in &self.nodes {
            self.kill_group(&node.name);
        }
        for node in &self.nodes {
            if let Some(postmaster) = self.postmaster(&node.name) {
                let _ = kill(&format!("-{}", postmaster.group));
            }
        }
        self.kill_group("etcd");
        let children = self.children.get_mut().unwrap_or_else(|e| e.into_inner());
        for (_, child) in children.iter_mut() {
            let _ = child.wait();
        }
    }
}

/// Patroni's configuration for `node`: etcd v3 on loopback, `ttl: 10` with
/// `loop_wait + 2 * retry_timeout <= ttl` as Patroni needs, synchronous mode,
/// trust for loopback, the node's socket in its own folder.
fn patroni_config(node: &Node, folder: &Path, bin: &Path, etcd_port: u16) -> String {
    format!(
        "scope: {SCOPE}
name: {name}
restapi:
  listen: 127.0.0.1:{api}
  connect_address: 127.0.0.1:{api}
etcd3:
  hosts: 127.0.0.1:{etcd_port}
bootstrap:
  dcs:
    ttl: 10
    loop_wait: 2
    retry_timeout: 4
    maximum_lag_on_failover: 1048576
    synchronous_mode: true
    postgresql:
      use_pg_rewind: true
      parameters:
        wal_level: replica
        hot_standby: 'on'
        wal_log_hints: 'on'
        max_wal_senders: 10
        max_replication_slots: 10
  initdb:
    - encoding: UTF8
    - auth: trust
postgresql:
  listen: 127.0.0.1:{port}
  connect_address: 127.0.0.1:{port}
  data_dir: {folder}/data
  bin_dir: {bin}
  pgpass: {folder}/pgpass
  pg_hba:
    - local all all trust
    - host all all 127.0.0.1/32 trust
    - host replication replicator 127.0.0.1/32 trust
  authentication:
    superuser:
      username: postgres
    replication:
      username: replicator
  parameters:
    unix_socket_directories: '{folder}'
    fsync: 'off'
",
        name = node.name,
        api = node.api_port,
        port = node.port,
        folder = folder.display(),
        bin = bin.display(),
    )
}
