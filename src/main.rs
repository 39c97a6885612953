fn main() {
    std::process::exit(ringship::cli::main());
}
