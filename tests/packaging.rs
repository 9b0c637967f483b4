//! What the Debian package ships besides the binary: the man pages and completions in dist/
//! match the command line's definition, and debian/changelog names the crate's version.

use std::path::Path;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

#[test]
fn man_pages_and_completions_match_the_command_line() {
    let update = std::env::var_os("ROOMSYNC_UPDATE_GENERATED").is_some();
    let mut stale = Vec::new();
    for file in roomsync::manual::generated_files() {
        let path = Path::new(ROOT).join(&file.path);
        if std::fs::read(&path).ok().as_deref() == Some(&file.contents[..]) {
            continue;
        }
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &file.contents).unwrap();
        } else {
            stale.push(file.path);
        }
    }
    assert!(
        stale.is_empty(),
        "generated from src/cli.rs but differing from the files (run \
         `ROOMSYNC_UPDATE_GENERATED=1 cargo test --test packaging` and commit): {stale:?}"
    );
}

#[test]
fn the_man_page_covers_every_option_and_command() {
    let files = roomsync::manual::generated_files();
    let page = files
        .iter()
        .find(|f| f.path == "dist/man/roomsync.1")
        .unwrap();
    let page = String::from_utf8_lossy(&page.contents);
    for needle in [
        ".TH roomsync 1",
        "\\-\\-sync\\-now",
        "\\-\\-allow\\-mass\\-removal",
        "\\-\\-demo",
        "\\-\\-config",
        "roomsync\\-status(1)",
        "roomsync\\-stand\\-in(1)",
        ".SH \"EXIT STATUS\"",
        ".SH ENVIRONMENT",
        ".SH FILES",
        "/etc/roomsync/roomsync.toml",
    ] {
        assert!(
            page.contains(needle),
            "roomsync.1 lacks {needle:?}:\n{page}"
        );
    }
    let paths: Vec<&str> = files.iter().map(|f| f.path.as_str()).collect();
    for path in [
        "dist/man/roomsync-status.1",
        "dist/man/roomsync-stand-in.1",
        "dist/completions/roomsync.bash",
        "dist/completions/_roomsync",
        "dist/completions/roomsync.fish",
    ] {
        assert!(paths.contains(&path), "{path} is not generated: {paths:?}");
    }
}

#[test]
fn the_debian_changelog_names_this_version() {
    let changelog = std::fs::read_to_string(Path::new(ROOT).join("debian/changelog")).unwrap();
    let first = changelog.lines().next().unwrap_or_default();
    let expected = format!("roomsync ({}-1) ", env!("CARGO_PKG_VERSION"));
    assert!(
        first.starts_with(&expected),
        "debian/changelog starts with {first:?}; a new version needs an entry starting with {expected:?}"
    );
}
