//! The man pages and the bash, zsh and fish completions, generated from the clap definition in
//! [`crate::cli`]. Copies live in `dist/` (the Debian package and a manual install use them);
//! `tests/packaging.rs` fails when they differ from what the definition generates, and
//! rewrites them with `ROOMSYNC_UPDATE_GENERATED=1`.

use clap::CommandFactory as _;
use clap_complete::Shell;
use clap_mangen::roff::{bold, italic, roman, Roff};
use clap_mangen::Man;

use crate::cli::Cli;

/// One generated file: where it lives in the repository, and what it must hold.
#[derive(Debug)]
pub struct GeneratedFile {
    pub path: String,
    pub contents: Vec<u8>,
}

/// Every generated file: `roomsync(1)`, one page per command, and three completions.
pub fn generated_files() -> Vec<GeneratedFile> {
    let mut files = man_pages();
    files.extend(completions());
    files
}

fn command() -> clap::Command {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// `roomsync(1)` with the sections clap has no place for, then a page per command.
pub fn man_pages() -> Vec<GeneratedFile> {
    let cmd = command();
    let mut files = vec![GeneratedFile {
        path: "dist/man/roomsync.1".into(),
        contents: main_page(&cmd),
    }];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let man = Man::new(sub.clone())
            .manual("roomsync manual")
            .source(format!("roomsync {}", env!("CARGO_PKG_VERSION")));
        let mut contents = Vec::new();
        man.render(&mut contents)
            .expect("writing to a Vec cannot fail");
        files.push(GeneratedFile {
            path: format!("dist/man/{}", man.get_filename()),
            contents,
        });
    }
    files
}

/// One of clap_mangen's section renderers.
type Section = fn(&Man, &mut dyn std::io::Write) -> std::io::Result<()>;

fn main_page(cmd: &clap::Command) -> Vec<u8> {
    let man = Man::new(cmd.clone()).manual("roomsync manual");
    let mut out = Vec::new();
    let sections: [Section; 6] = [
        Man::render_title,
        Man::render_name_section,
        Man::render_synopsis_section,
        Man::render_description_section,
        Man::render_options_section,
        Man::render_subcommands_section,
    ];
    for section in sections {
        section(&man, &mut out).expect("writing to a Vec cannot fail");
    }
    out.extend(extra_sections().render().into_bytes());
    man.render_version_section(&mut out)
        .expect("writing to a Vec cannot fail");
    out
}

/// A tagged paragraph per item: `(term, explanation)`.
fn tagged(roff: &mut Roff, heading: &str, items: &[(&str, &str)]) {
    roff.control("SH", [heading]);
    for (term, text) in items {
        roff.control("TP", []);
        roff.text([bold(*term)]);
        roff.text([roman(*text)]);
    }
}

fn extra_sections() -> Roff {
    let mut roff = Roff::new();
    tagged(
        &mut roff,
        "EXIT STATUS",
        &[
            ("0", "Success. The daemon exits 0 after SIGTERM or SIGINT; status exits 0 while the last success is younger than --max-age."),
            ("1", "--sync-now: the sync failed or was interrupted (recorded in the database when it could be opened). The daemon could not start. status: the last success is older than --max-age, there is none, or the database cannot be read."),
            ("2", "Usage or configuration error, naming the key; nothing was touched."),
            ("75", "--sync-now: another sync of the same database holds the lock; nothing was touched."),
        ],
    );
    tagged(
        &mut roff,
        "ENVIRONMENT",
        &[
            ("ROOMSYNC_CONFIG", "The configuration file when --config is not given."),
            ("ROOMSYNC__<SECTION>__<KEY>", "Overrides one key of the file, e.g. ROOMSYNC__DATABASE__PATH."),
            ("CREDENTIALS_DIRECTORY", "Set by systemd's LoadCredential=: the app secret is read from its file app_secret when neither dingtalk.app_secret nor dingtalk.app_secret_file is set."),
            ("RUST_LOG", "A log level or filter; wins over [log] level."),
            ("NO_COLOR", "When set and not empty, no colours in the log even on a terminal."),
            ("JOURNAL_STREAM", "Set by systemd; when it names stderr, log entries go to the journal natively, with the fields RUN_ID and TRIGGER."),
        ],
    );
    tagged(
        &mut roff,
        "FILES",
        &[
            ("/etc/roomsync/roomsync.toml", "The configuration; every key is listed with its default."),
            ("/etc/roomsync/app_secret", "The DingTalk AppSecret, readable by root only; the service gets it through LoadCredential=."),
            ("/var/lib/roomsync/rooms.db", "The mirror, with its -wal, -shm and .lock files; readable by the group roomsync."),
            ("/usr/share/doc/roomsync/schema.md", "Every table, column and view of the mirror."),
            ("/usr/lib/systemd/system/roomsync.service", "The hardened service."),
        ],
    );
    roff.control("SH", ["SEE ALSO"]);
    roff.text([
        bold("roomsync-status"),
        roman("(1), "),
        bold("roomsync-stand-in"),
        roman("(1), "),
        bold("systemctl"),
        roman("(1), "),
        bold("journalctl"),
        roman("(1), "),
        bold("sqlite3"),
        roman("(1), and "),
        italic("/usr/share/doc/roomsync/README.md"),
        roman("."),
    ]);
    roff
}

/// Completions for the shells Debian packages completions for.
pub fn completions() -> Vec<GeneratedFile> {
    [
        (Shell::Bash, "dist/completions/roomsync.bash"),
        (Shell::Zsh, "dist/completions/_roomsync"),
        (Shell::Fish, "dist/completions/roomsync.fish"),
    ]
    .into_iter()
    .map(|(shell, path)| {
        let mut contents = Vec::new();
        clap_complete::generate(shell, &mut command(), "roomsync", &mut contents);
        GeneratedFile {
            path: path.into(),
            contents,
        }
    })
    .collect()
}
