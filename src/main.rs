/// Many small allocations freed on other threads: mimalloc handles that far better than
/// the system allocator (see Cargo.toml).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    meterlake::cli::main()
}
