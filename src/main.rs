fn main() -> std::process::ExitCode {
    roomsync::cli::main()
}
