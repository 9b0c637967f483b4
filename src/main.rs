//! The `roomsync` binary: everything is in the library, starting at [`roomsync::cli::main`].

fn main() -> std::process::ExitCode {
    roomsync::cli::main()
}
