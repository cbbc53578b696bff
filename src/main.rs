use std::process::ExitCode;

fn main() -> ExitCode {
    tenant_access::cli::run(tenant_access::cli::parse_args())
}
