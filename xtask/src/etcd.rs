//! A real etcd cluster for tests and benchmarks: N members on 127.0.0.1 with random ports and a
//! directory of their own (under the temporary directory, or a folder the caller names), killed
//! and removed on drop.
//!
//! Needs Debian's `etcd-server` (3.4) or any `etcd` on `PATH` (`ETCD` names another binary).
//! Each member logs to a file in that directory; failures quote the logs' tails.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a cluster (or a restarted member) may take to serve.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a member may take to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// A running etcd cluster. Dropping it kills every member and removes its data.
pub struct EtcdCluster {
    dir: PathBuf,
    binary: PathBuf,
    token: String,
    members: Vec<Member>,
}

struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdCluster {
    /// Start a cluster of `members` members and wait (at most 30 s) until every one serves.
    /// Panics, with the members' logs, if it does not.
    pub fn start(members: usize) -> EtcdCluster {
        EtcdCluster::start_in(&std::env::temp_dir(), members).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`EtcdCluster::start`] with the data directories and logs in a new directory under
    /// `parent` (removed on drop, like the members), failing instead of panicking: no etcd
    /// installed, or a cluster that does not serve within 30 s (the error quotes its logs).
    pub fn start_in(parent: &Path, members: usize) -> Result<EtcdCluster, String> {
        assert!(members > 0, "a cluster needs a member");
        let binary = find_etcd()?;
        // Ports are picked free and released before etcd binds them: another process may take
        // one meanwhile, so try again with new ports when that happens.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut cluster = EtcdCluster::create(parent, binary.clone(), members)?;
            for i in 0..members {
                cluster.spawn(i)?;
            }
            match cluster.wait_until(START_TIMEOUT, |c| c.all_healthy()) {
                Ok(()) => return Ok(cluster),
                Err(()) if attempt < 3 && cluster.log().contains("address already in use") => {
                    continue;
                }
                Err(()) => {
                    return Err(format!(
                        "the etcd cluster did not start within {START_TIMEOUT:?}:\n{}",
                        cluster.log()
                    ));
                }
            }
        }
    }

    fn create(parent: &Path, binary: PathBuf, members: usize) -> Result<EtcdCluster, String> {
        let id = unique();
        let dir = parent.join(format!("platform-gateway-etcd-{id}"));
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let ports = free_ports(members * 2);
        Ok(EtcdCluster {
            dir,
            binary,
            token: format!("platform-gateway-test-{id}"),
            members: (0..members)
                .map(|i| Member {
                    name: format!("m{i}"),
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    child: None,
                })
                .collect(),
        })
    }

    /// The client URLs of every member (`http://127.0.0.1:PORT`), stopped ones included.
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.members.len()).map(|i| self.endpoint(i)).collect()
    }

    /// The client URL of member `i`.
    pub fn endpoint(&self, i: usize) -> String {
        format!("http://127.0.0.1:{}", self.members[i].client_port)
    }

    /// The temporary directory: data directories and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Stop member `i` the way an operator would (SIGTERM: it hands over leadership and
    /// finishes what it was doing), killing it if it takes longer than 10 s.
    pub fn stop_member(&mut self, i: usize) {
        let Some(mut child) = self.members[i].child.take() else {
            return;
        };
        // SAFETY: kill(2) on the pid of a child that has not been waited for.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Kill member `i` at once (SIGKILL), as a crash would.
    pub fn kill_member(&mut self, i: usize) {
        if let Some(mut child) = self.members[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start member `i` again on its data directory (a no-op if it runs) and wait until it
    /// accepts connections. It serves requests once it hears from a quorum: see
    /// [`EtcdCluster::wait_healthy`].
    pub fn start_member(&mut self, i: usize) {
        if self.members[i].child.is_some() {
            return;
        }
        if let Err(e) = self.spawn(i) {
            panic!("{e}");
        }
        let port = self.members[i].client_port;
        let accepting = self.wait_until(START_TIMEOUT, |_| {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
                .is_ok()
        });
        if accepting.is_err() {
            panic!(
                "etcd member {i} did not restart within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
        }
    }

    /// Wait (at most 30 s) until every running member reports itself healthy (it has a
    /// leader and can serve a quorum read). Panics with the logs if not.
    pub fn wait_healthy(&self) {
        if self.wait_until(START_TIMEOUT, |c| c.all_healthy()).is_err() {
            panic!(
                "the etcd cluster did not become healthy within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
        }
    }

    /// The member that leads the cluster now, as the running members report it (`None` while
    /// there is no leader).
    pub fn leader(&self) -> Option<usize> {
        self.members.iter().enumerate().find_map(|(i, m)| {
            let (member_id, leader_id) = status(m.client_port).filter(|_| m.child.is_some())?;
            (member_id == leader_id).then_some(i)
        })
    }

    /// Any member that runs and does not lead the cluster.
    pub fn follower(&self) -> Option<usize> {
        let leader = self.leader()?;
        (0..self.members.len()).find(|&i| i != leader && self.members[i].child.is_some())
    }

    /// Whether member `i` runs and reports itself healthy.
    pub fn is_healthy(&self, i: usize) -> bool {
        self.members[i].child.is_some() && health(self.members[i].client_port)
    }

    /// The last lines of every member's log, for failure messages.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for m in &self.members {
            let text = std::fs::read_to_string(self.log_path(m)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(30)..];
            out.push_str(&format!(
                "--- etcd member {} ---\n{}\n",
                m.name,
                tail.join("\n")
            ));
        }
        out
    }

    fn all_healthy(&self) -> bool {
        self.members
            .iter()
            .filter(|m| m.child.is_some())
            .all(|m| health(m.client_port))
    }

    fn wait_until(&self, limit: Duration, ready: impl Fn(&Self) -> bool) -> Result<(), ()> {
        let deadline = Instant::now() + limit;
        loop {
            if ready(self) {
                return Ok(());
            }
            if Instant::now() >= deadline || self.any_exited() {
                return Err(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether a member that should run has exited (a bad flag, a port taken).
    fn any_exited(&self) -> bool {
        self.members.iter().any(|m| {
            m.child.as_ref().is_some_and(|c| {
                // try_wait needs `&mut`; ask the kernel instead: a zombie is an exited child.
                std::fs::read_to_string(format!("/proc/{}/stat", c.id()))
                    .map(|stat| stat.split(") ").nth(1).is_some_and(|s| s.starts_with('Z')))
                    .unwrap_or(true)
            })
        })
    }

    fn log_path(&self, m: &Member) -> PathBuf {
        self.dir.join(format!("{}.log", m.name))
    }

    fn spawn(&mut self, i: usize) -> Result<(), String> {
        let initial_cluster: Vec<String> = self
            .members
            .iter()
            .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
            .collect();
        let m = &self.members[i];
        let client = format!("http://127.0.0.1:{}", m.client_port);
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let log_path = self.log_path(m);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| format!("cannot open {}: {e}", log_path.display()))?;
        let mut command = Command::new(&self.binary);
        command
            .arg("--name")
            .arg(&m.name)
            .arg("--data-dir")
            .arg(self.dir.join(format!("{}.data", m.name)))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &initial_cluster.join(",")])
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .env_remove("ETCDCTL_API")
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| format!("{}: {e}", log_path.display()))?,
            )
            .stderr(log);
        // SAFETY: prctl is async-signal-safe. The member dies with the test process, even when
        // that process is killed before it can drop the cluster.
        unsafe {
            command.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        self.members[i].child = Some(child);
        Ok(())
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.members.len() {
            self.kill_member(i);
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The etcd binary: `$ETCD`, or `etcd` on `PATH`. Panics if there is none.
pub fn etcd_binary() -> PathBuf {
    find_etcd().unwrap_or_else(|e| panic!("{e}"))
}

/// The etcd binary: `$ETCD`, or `etcd` on `PATH` (`cargo xtask setup` installs Debian's
/// `etcd-server`), or why there is none.
pub fn find_etcd() -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("ETCD") {
        return Ok(PathBuf::from(path));
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            "etcd is not installed (no `etcd` on PATH, and ETCD names none): run `cargo xtask \
             setup` (it installs Debian's etcd-server), or `apt-get install etcd-server`"
                .to_string()
        })
}

/// Whether the member on `port` answers its `/health` endpoint with `"health":"true"`.
fn health(port: u16) -> bool {
    let ask = || -> std::io::Result<String> {
        let mut stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    };
    ask().is_ok_and(|reply| reply.contains("\"health\":\"true\""))
}

/// The member's own ID and its leader's, from its status (etcd's JSON gateway to gRPC).
fn status(port: u16) -> Option<(String, String)> {
    let ask = || -> std::io::Result<String> {
        let mut stream =
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.write_all(
            b"POST /v3/maintenance/status HTTP/1.1\r\nHost: 127.0.0.1\r\n\
              Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        )?;
        let mut reply = String::new();
        stream.read_to_string(&mut reply)?;
        Ok(reply)
    };
    let reply = ask().ok()?;
    // IDs are 64-bit numbers, which the gateway writes as JSON strings.
    let field = |name: &str| -> Option<String> {
        let start = reply.find(&format!("\"{name}\":\""))? + name.len() + 4;
        let end = start + reply[start..].find('"')?;
        Some(reply[start..end].to_string())
    };
    let leader = field("leader").filter(|id| id != "0")?;
    Some((field("member_id")?, leader))
}

/// `count` distinct ports that were free a moment ago.
fn free_ports(count: usize) -> Vec<u16> {
    // Hold every listener until all are picked, so the kernel hands out distinct ports.
    let listeners: Vec<TcpListener> = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind a free port"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local address").port())
        .collect()
}

/// A name no other cluster of this machine uses.
fn unique() -> String {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_stops_restarts_and_the_cluster_serves_again() {
        let mut cluster = EtcdCluster::start(3);
        assert_eq!(cluster.endpoints().len(), 3);
        assert!((0..3).all(|i| cluster.is_healthy(i)));
        let leader = cluster.leader().expect("a leader");
        let follower = cluster.follower().expect("a follower");
        assert_ne!(leader, follower);
        cluster.stop_member(1);
        cluster.kill_member(2);
        assert!(!cluster.is_healthy(1));
        cluster.start_member(1);
        cluster.start_member(2);
        cluster.wait_healthy();
        let dir = cluster.dir().to_path_buf();
        assert!(dir.join("m1.log").exists());
        drop(cluster);
        assert!(!dir.exists());
    }
}
