fn main() -> std::process::ExitCode {
    meterlake::cli::main()
}
