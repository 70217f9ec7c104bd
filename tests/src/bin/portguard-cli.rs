//! The portguard command line, built by this crate so the daemon tests always run the binary
//! of the code under test (a binary of another package could be stale).

fn main() -> std::process::ExitCode {
    portguard::cli::main()
}
