//! `mpgate-emulator`: a local AWS Marketplace Metering service for tests (see `mpgate::emulator`).

fn main() {
    std::process::exit(mpgate::emulator::main());
}
