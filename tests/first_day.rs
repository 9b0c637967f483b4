//! An operator's first day without the container: clean logs on a pipe (colours only on a
//! terminal without NO_COLOR, via util-linux `script`), bad log levels and the
//! template's placeholders refused, `status` without credentials, reading a stopped mirror as
//! a user who cannot write its directory, and `roomsync stand-in`.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

const BIN: &str = env!("CARGO_BIN_EXE_roomsync");

fn roomsync(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .env_remove("RUST_LOG")
        .env_remove("ROOMSYNC_CONFIG")
        .env_remove("CREDENTIALS_DIRECTORY")
        .env_remove("JOURNAL_STREAM")
        .env_remove("NO_COLOR");
    for (k, v) in envs {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

async fn roomsync_async(args: &[&str], envs: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let envs: Vec<(String, String)> = envs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let envs: Vec<(&str, &str)> = envs.iter().map(|(k, v)| (&k[..], &v[..])).collect();
        roomsync(&args, &envs)
    })
    .await
    .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn has_timestamp(line: &str) -> bool {
    let b = line.as_bytes();
    b.len() > 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[..4].iter().all(u8::is_ascii_digit)
}

#[tokio::test]
async fn piped_stderr_has_no_escapes_and_keeps_timestamps() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let config = env.config.to_str().unwrap();
    let out = roomsync_async(
        &["--sync-now", "--config", config],
        &[("TERM", "xterm-256color")],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert!(stderr.contains("sync run 1 succeeded"), "{stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "escape sequences on a pipe:\n{stderr}"
    );
    assert!(stderr.lines().all(has_timestamp), "{stderr}");
}

#[tokio::test]
async fn stderr_named_by_journal_stream_gets_no_timestamps_or_escapes() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let log = env.dir.path().join("stderr.log");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    use std::os::unix::fs::MetadataExt;
    let stream = format!("{}:{}", meta.dev(), meta.ino());
    let config = env.config.to_str().unwrap().to_string();
    let status = tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(["--sync-now", "--config", &config])
            .env_remove("RUST_LOG")
            .env("JOURNAL_STREAM", stream)
            .stdout(Stdio::null())
            .stderr(file)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(status.code(), Some(0));
    let stderr = std::fs::read_to_string(&log).unwrap();
    if Path::new("/run/systemd/journal/socket").exists() {
        // A journald is listening: the entries went to it natively, none to stderr.
        assert_eq!(stderr, "", "lines on stderr although journald took them");
    } else {
        // No journald to talk to: still lines for the journal stream, without our own time.
        assert!(stderr.contains("sync run 1 succeeded"), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "{stderr}");
        assert!(!stderr.lines().any(has_timestamp), "timestamps:\n{stderr}");
    }
}

#[tokio::test]
async fn a_log_level_that_is_no_level_or_filter_exits_2_naming_it() {
    let env = TestEnv::new().await;
    let config = env.config.to_str().unwrap().to_string();
    for level in [
        "warning",
        "verbose",
        "Roomsync",
        "roomsync=loud",
        "info,warning",
        "",
    ] {
        env.write_config("", &format!("[log]\nlevel = \"{level}\""));
        for args in [
            &["--sync-now", "--config", &config][..],
            &["--config", &config],
        ] {
            let out = roomsync(args, &[]);
            assert_eq!(
                out.status.code(),
                Some(2),
                "level {level:?}: {}",
                text(&out.stderr)
            );
            let stderr = text(&out.stderr);
            assert!(stderr.contains("log.level"), "{stderr}");
        }
    }
    env.write_config("", "");
    for rust_log in ["warning", "roomsync=verbose", "info,[bad"] {
        for args in [
            &["--sync-now", "--config", &config][..],
            &["status", "--config", &config],
            &["stand-in", "--listen", "127.0.0.1:0"],
        ] {
            let out = roomsync(args, &[("RUST_LOG", rust_log)]);
            assert_eq!(out.status.code(), Some(2), "RUST_LOG={rust_log:?} {args:?}");
            assert!(
                text(&out.stderr).contains("RUST_LOG"),
                "{}",
                text(&out.stderr)
            );
        }
    }
    assert!(!env.db.exists(), "nothing was touched");
}

#[tokio::test]
async fn level_names_and_filters_that_parse_are_accepted() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let config = env.config.to_str().unwrap().to_string();
    for level in ["WARN", "off", "roomsync=debug,warn", "info,sqlx=warn"] {
        env.write_config("", &format!("[log]\nlevel = \"{level}\""));
        let out = roomsync_async(&["--sync-now", "--config", &config], &[]).await;
        assert_eq!(out.status.code(), Some(0), "{level}: {}", text(&out.stderr));
    }
}

/// The daemon's log from start to SIGTERM, under `envs`.
async fn daemon_log(env: &TestEnv, envs: &[(&str, &str)]) -> String {
    let log = env.dir.path().join("daemon.log");
    let mut cmd = Command::new(BIN);
    cmd.args(["--config", env.config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in envs {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&log)
        .unwrap()
        .contains("sync run 1 succeeded")
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        wait_child(&mut child, Duration::from_secs(5)).await,
        Some(0)
    );
    std::fs::read_to_string(&log).unwrap()
}

async fn wait_child(child: &mut Child, limit: Duration) -> Option<i32> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("process did not exit within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn dependencies_stay_below_info_unless_the_filter_asks() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let log = daemon_log(&env, &[]).await;
    assert!(log.contains("roomsync daemon started"), "{log}");
    assert!(
        !log.contains("tokio_cron_scheduler"),
        "scheduler chatter at info:\n{log}"
    );

    std::fs::remove_file(&env.db).unwrap();
    let log = daemon_log(
        &env,
        &[("RUST_LOG", "tokio_cron_scheduler=info,roomsync=info")],
    )
    .await;
    assert!(
        log.contains("Job creator created"),
        "asked for, not shown:\n{log}"
    );
}

/// A config with `[database]` only, or with an incomplete `[dingtalk]` and an unreadable secret.
fn credential_less_configs(env: &TestEnv) -> Vec<String> {
    let db = env.db.display();
    vec![
        format!("[database]\npath = \"{db}\"\n"),
        format!(
            "[dingtalk]\napp_key = \"dingxxxxxxxxxxxxxxxx\"\npage_size = 0\n\
             app_secret_file = \"/nonexistent/app_secret\"\n\n[database]\npath = \"{db}\"\n"
        ),
    ]
}

#[tokio::test]
async fn status_needs_only_the_database_path() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    let config = env.config.to_str().unwrap().to_string();
    for text_of_config in credential_less_configs(&env) {
        std::fs::write(&env.config, &text_of_config).unwrap();
        let out = roomsync_async(&["status", "--config", &config], &[]).await;
        assert_eq!(
            out.status.code(),
            Some(0),
            "{text_of_config}\n{}",
            text(&out.stderr)
        );
        assert!(text(&out.stdout).contains("active rooms: 3"));
        assert!(text(&out.stdout).contains("fresh"));
        // The same file is still refused where credentials are needed.
        assert_eq!(
            roomsync(&["--sync-now", "--config", &config], &[])
                .status
                .code(),
            Some(2)
        );
    }
    // database.path from the environment, like every key.
    std::fs::write(&env.config, "").unwrap();
    let db = env.db.to_str().unwrap().to_string();
    let out = roomsync_async(
        &["status", "--config", &config],
        &[("ROOMSYNC__DATABASE__PATH", &db)],
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // What status does read is still checked.
    for bad in [
        "[database]\npath = \"\"\n",
        "[database]\npaht = \"x\"\n",
        "[database\n",
    ] {
        std::fs::write(&env.config, bad).unwrap();
        let out = roomsync(&["status", "--config", &config], &[]);
        assert_eq!(out.status.code(), Some(2), "{bad}: {}", text(&out.stderr));
    }
}

/// Runs `roomsync status` on `config` as a user who may read but not write `dir`: as root,
/// `nobody` (setpriv); otherwise ourselves, with `dir` made read-only.
fn status_as_reader(config: &Path, dir: &Path) -> Output {
    let root = effective_uid() == 0;
    let bin = binary_for_nobody();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&bin.1);
        c
    } else {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        Command::new(BIN)
    };
    let out = cmd
        .args(["status", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    if !root {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    out
}

/// The binary where `nobody` may run it (the build directory may sit below one it cannot
/// enter, a checkout under /root say): a hard link, or a copy, in a directory of its own.
fn binary_for_nobody() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.path().join("roomsync");
    if std::fs::hard_link(BIN, &path).is_err() {
        std::fs::copy(BIN, &path).unwrap();
    }
    (dir, path)
}

/// The effective uid, from /proc (no libc needed).
fn effective_uid() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    line.split_whitespace().nth(2).unwrap().parse().unwrap()
}

#[tokio::test]
async fn a_reader_who_cannot_write_the_directory_opens_a_stopped_mirror() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    // Readable by others: the reader gets read access, never write.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let dir = env.dir.path().join("mirror");
    std::fs::create_dir(&dir).unwrap();
    let db = dir.join("rooms.db");
    std::fs::write(
        &env.config,
        std::fs::read_to_string(&env.config)
            .unwrap()
            .replace(&env.db.display().to_string(), &db.display().to_string()),
    )
    .unwrap();
    // The reader runs `roomsync status` with this config: readable by others here.
    std::fs::set_permissions(&env.config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let config = env.config.to_str().unwrap().to_string();
    let out = roomsync_async(&["--sync-now", "--config", &config], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The process has ended: the mirror is stopped, and its WAL files stayed.
    assert!(dir.join("rooms.db-wal").exists() && dir.join("rooms.db-shm").exists());
    assert_eq!(
        std::fs::metadata(dir.join("rooms.db-wal")).unwrap().len(),
        0,
        "WAL emptied"
    );

    let out = status_as_reader(&env.config, &dir);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(
        text(&out.stdout).contains("active rooms: 3"),
        "{}",
        text(&out.stdout)
    );

    // The control: the same reader, a copy of the database without its WAL files. SQLite
    // would have to create them, which this reader may not.
    let bare = env.dir.path().join("bare");
    std::fs::create_dir(&bare).unwrap();
    std::fs::copy(&db, bare.join("rooms.db")).unwrap();
    let bare_config = env.dir.path().join("bare.toml");
    std::fs::write(
        &bare_config,
        format!(
            "[database]\npath = \"{}\"\n",
            bare.join("rooms.db").display()
        ),
    )
    .unwrap();
    let out = status_as_reader(&bare_config, &bare);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the reader could write after all"
    );
    assert!(
        text(&out.stderr).contains("readonly database"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test]
async fn the_template_placeholders_exit_2_naming_the_key() {
    let env = TestEnv::new().await;
    let config = env.config.to_str().unwrap().to_string();
    let cases = [
        ("app_key = \"dingxxxxxxxxxxxxxxxx\"", "dingtalk.app_key"),
        ("app_key = \"DINGXXXXXXXXXXXXXXXX\"", "dingtalk.app_key"),
        ("union_id = \"xxxxxxxxxxxxxxxxxxxx\"", "dingtalk.union_id"),
        ("app_secret = \"YOUR-APP-SECRET\"", "dingtalk.app_secret"),
    ];
    for (line, key) in cases {
        env.write_config(line, "");
        for args in [
            &["--sync-now", "--config", &config][..],
            &["--config", &config],
        ] {
            let out = roomsync(args, &[]);
            let stderr = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{line}: {stderr}");
            assert!(
                stderr.contains(&format!("{key}:")) && stderr.contains("placeholder"),
                "{stderr}"
            );
        }
    }
    // The shipped template itself, with a secret given: refused before any request.
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/roomsync.toml");
    let out = roomsync(
        &["--sync-now", "--config", template.to_str().unwrap()],
        &[("ROOMSYNC__DINGTALK__APP_SECRET", "s3cr3t-value")],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("dingtalk.app_key"),
        "{}",
        text(&out.stderr)
    );
    assert!(env.server.received_requests().await.unwrap().is_empty());
    assert!(!env.db.exists());
}

/// `roomsync stand-in` on an ephemeral port: its base URL from the line it prints.
struct StandInProcess {
    child: Child,
    base_url: String,
}

impl StandInProcess {
    fn start(extra: &[&str], notify: &Path) -> StandInProcess {
        let mut child = Command::new(BIN)
            .args(["stand-in", "--listen", "127.0.0.1:0", "--rooms", "250"])
            .args(extra)
            .env_remove("RUST_LOG")
            .env("NOTIFY_SOCKET", notify)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let base_url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no URL in {line:?}"))
            .trim_end_matches([':', '/'])
            .to_string();
        StandInProcess { child, base_url }
    }
}

impl Drop for StandInProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn stand_in_config(env: &TestEnv, base_url: &str) {
    std::fs::write(
        &env.config,
        format!(
            "[dingtalk]\nbase_url = \"{base_url}\"\napp_key = \"{}\"\nunion_id = \"{}\"\n\
             app_secret = \"{}\"\n\n[database]\npath = \"{}\"\n",
            roomsync::standin::APP_KEY,
            roomsync::standin::UNION_ID,
            roomsync::standin::APP_SECRET,
            env.db.display()
        ),
    )
    .unwrap();
}

#[tokio::test]
async fn the_stand_in_runs_as_a_process_of_its_own() {
    let env = TestEnv::new().await;
    let socket = env.dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&socket).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut standin = StandInProcess::start(&["--page-latency", "300ms"], &socket);
    let mut buf = [0u8; 256];
    let n = notify.recv(&mut buf).unwrap();
    assert!(text(&buf[..n]).contains("READY=1"), "{}", text(&buf[..n]));

    stand_in_config(&env, &standin.base_url);
    let config = env.config.to_str().unwrap().to_string();
    let started = Instant::now();
    let out = roomsync_async(&["--sync-now", "--config", &config], &[]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).starts_with("sync run 1 succeeded: 3 pages, rooms seen 250, added 250"),
        "{}",
        text(&out.stdout)
    );
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "three pages at 300 ms each"
    );

    Command::new("kill")
        .args(["-TERM", &standin.child.id().to_string()])
        .status()
        .unwrap();
    assert_eq!(
        wait_child(&mut standin.child, Duration::from_secs(5)).await,
        Some(0)
    );
}

#[tokio::test]
async fn a_stand_in_revision_changes_one_room_in_twenty() {
    let env = TestEnv::new().await;
    let socket = env.dir.path().join("notify.sock");
    let _notify = UnixDatagram::bind(&socket).unwrap();
    let first = StandInProcess::start(&[], &socket);
    stand_in_config(&env, &first.base_url);
    let config = env.config.to_str().unwrap().to_string();
    assert_eq!(
        roomsync_async(&["--sync-now", "--config", &config], &[])
            .await
            .status
            .code(),
        Some(0)
    );
    drop(first);
    let second = StandInProcess::start(&["--revision", "1"], &socket);
    stand_in_config(&env, &second.base_url);
    let out = roomsync_async(&["--sync-now", "--config", &config], &[]).await;
    assert!(
        text(&out.stdout).contains("added 0, updated 12, removed 0"),
        "{}",
        text(&out.stdout)
    );
}

#[tokio::test]
async fn status_tells_a_reader_outside_the_group_that_it_may_not_read() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    env.sync().await;
    // A directory of mode 0700: root reads it, nobody (or a non-root runner, with it made 0000)
    // not.
    std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let root = effective_uid() == 0;
    let bin = binary_for_nobody();
    let mut cmd = if root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=nobody", "--regid=nogroup", "--clear-groups"])
            .arg(&bin.1);
        c
    } else {
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o000)).unwrap();
        Command::new(BIN)
    };
    // The config must stay readable: put a copy where the reader can see it.
    let config = std::env::temp_dir().join(format!("roomsync-status-{}.toml", std::process::id()));
    std::fs::copy(&env.config, &config).unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    let out = cmd
        .args(["status", "--config", config.to_str().unwrap()])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    std::fs::remove_file(&config).unwrap();
    if !root {
        std::fs::set_permissions(env.dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Permission denied") && stderr.contains("group"),
        "{stderr}"
    );
    assert!(!stderr.contains("no sync has run yet"), "{stderr}");
}

/// `roomsync --sync-now` on a pseudo-terminal (util-linux `script`), its output as seen there.
async fn sync_now_on_a_terminal(env: &TestEnv, no_color: Option<&str>) -> String {
    let command = format!("{BIN} --sync-now --config {}", env.config.display());
    let no_color = no_color.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut cmd = Command::new("script");
        cmd.args(["--quiet", "--return", "--command", &command, "/dev/null"])
            .env_remove("RUST_LOG")
            .env_remove("NO_COLOR")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null());
        if let Some(v) = no_color {
            cmd.env("NO_COLOR", v);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stdout));
        text(&out.stdout)
    })
    .await
    .unwrap()
}

#[tokio::test]
async fn colours_only_on_a_terminal_without_no_color() {
    let env = TestEnv::new().await;
    env.reset_upstream(&rooms_in_pages(3)).await;
    let shown = sync_now_on_a_terminal(&env, None).await;
    assert!(shown.contains("sync run 1 succeeded"), "{shown}");
    assert!(
        shown.contains("\u{1b}["),
        "no colours on a terminal:\n{shown}"
    );
    let shown = sync_now_on_a_terminal(&env, Some("1")).await;
    assert!(shown.contains("sync run 2 succeeded"), "{shown}");
    assert!(
        !shown.contains('\u{1b}'),
        "colours despite NO_COLOR:\n{shown}"
    );
}
