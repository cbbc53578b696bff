use std::process::ExitCode;

use clap::Parser as _;

fn main() -> ExitCode {
    tenant_access::cli::run(tenant_access::cli::Cli::parse())
}
