//! `portguard`: the command line (see `portguard::cli`).

fn main() -> std::process::ExitCode {
    portguard::cli::main()
}
