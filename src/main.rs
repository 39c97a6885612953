fn main() {
    std::process::exit(ringship::internals::cli_main());
}
