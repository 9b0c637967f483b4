//! The daemon as the tests start it: the real binary with its stderr in a file and a
//! notification socket standing in for systemd.

use std::fs::File;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TestEnv;

const BIN: &str = env!("CARGO_BIN_EXE_roomsync");

/// A daemon process with its stderr in a file and a notification socket standing in for systemd.
pub struct Daemon {
    child: Option<Child>,
    log: PathBuf,
    notify: UnixDatagram,
}

impl Daemon {
    pub fn start(env: &TestEnv, extra_env: &[(&str, &str)]) -> Daemon {
        Self::start_as(env, extra_env, &[])
    }

    /// Like [`Daemon::start`], the command prefixed with `wrapper` (e.g. `setpriv` to run it
    /// as another user).
    pub fn start_as(env: &TestEnv, extra_env: &[(&str, &str)], wrapper: &[&str]) -> Daemon {
        let log = env
            .dir
            .path()
            .join(format!("daemon-{}.log", fastrand_suffix()));
        let socket = env
            .dir
            .path()
            .join(format!("notify-{}.sock", fastrand_suffix()));
        let notify = UnixDatagram::bind(&socket).unwrap();
        // Writable by a daemon started as another user too, so a READY=1 it sends is seen.
        std::fs::set_permissions(&socket, std::os::unix::fs::PermissionsExt::from_mode(0o777))
            .unwrap();
        notify
            .set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        // Through a shell that execs the daemon, so WATCHDOG_PID can name the daemon's own pid
        // as systemd does.
        let mut cmd = Command::new(wrapper.first().copied().unwrap_or("sh"));
        if !wrapper.is_empty() {
            cmd.args(&wrapper[1..]).arg("sh");
        }
        cmd.args([
            "-c",
            "export WATCHDOG_PID=$$; exec \"$0\" \"$@\"",
            BIN,
            "--config",
            env.config.to_str().unwrap(),
        ])
        .env_remove("RUST_LOG")
        .env("NOTIFY_SOCKET", &socket)
        .stdout(Stdio::null())
        .stderr(Stdio::from(File::create(&log).unwrap()));
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        Daemon {
            child: Some(cmd.spawn().unwrap()),
            log,
            notify,
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Notifications received so far (drains the socket).
    pub fn notifications(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        while let Ok(n) = self.notify.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().unwrap().id().to_string();
        Command::new("kill").args([signal, &pid]).status().unwrap();
    }

    /// Waits for the process to exit; panics after `limit`.
    pub async fn wait(&mut self, limit: Duration) -> i32 {
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                child.kill().unwrap();
                panic!("daemon did not exit within {limit:?}; log:\n{}", self.log());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn fastrand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

/// Polls `check` every 20 ms until it holds; panics with the daemon log after `limit`.
pub async fn until<F, Fut>(daemon: &Daemon, limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}; log:\n{}",
            daemon.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Succeeded runs so far; 0 while the daemon is still creating the database.
pub async fn succeeded_runs(env: &TestEnv) -> i64 {
    env.try_scalar("SELECT COUNT(*) FROM sync_runs WHERE status = 'succeeded'")
        .await
        .unwrap_or(0)
}
