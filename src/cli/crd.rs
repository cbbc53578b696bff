use std::path::PathBuf;
use std::process::ExitCode;

use super::CliError;
use crate::adapters::manifests::to_yaml_stream;

#[derive(Debug, clap::Args)]
pub(super) struct CrdArgs {
    /// Write one file per CRD into this directory instead of printing them.
    #[arg(long)]
    output_dir: Option<PathBuf>,
}

pub(super) fn run(args: &CrdArgs) -> Result<ExitCode, CliError> {
    let crds = crate::api::crds();
    let Some(dir) = &args.output_dir else {
        let yaml = to_yaml_stream(&crds).map_err(|e| CliError::Input(e.to_string()))?;
        print!("{yaml}");
        return Ok(ExitCode::SUCCESS);
    };
    for crd in &crds {
        let path = dir.join(crate::api::crd_file_name(crd));
        let yaml = to_yaml_stream(std::slice::from_ref(crd)).map_err(|e| CliError::Input(e.to_string()))?;
        std::fs::write(&path, yaml)
            .map_err(|source| CliError::Write { path: path.display().to_string(), source })?;
    }
    Ok(ExitCode::SUCCESS)
}
