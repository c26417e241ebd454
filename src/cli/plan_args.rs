//! Arguments and helpers shared by the subcommands that work from a rotation plan.

use std::path::PathBuf;

use keyrot::plan::Plan;

/// `-c/--config PLAN`.
#[derive(Debug, Clone, clap::Args)]
pub struct PlanArg {
    /// The rotation plan (YAML), e.g. rotation-plans/sandbox.yaml.
    #[arg(short = 'c', long = "config", value_name = "PLAN")]
    pub path: PathBuf,
}

impl PlanArg {
    /// The validated plan; every problem is reported with file:line:column.
    pub fn load(&self) -> anyhow::Result<Plan> {
        Ok(keyrot::plan::load(&self.path)?)
    }
}

/// Text for people, JSON for tools.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    #[default]
    Text,
    Json,
}
