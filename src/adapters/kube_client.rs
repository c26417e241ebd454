//! A kube client from a kubeconfig file, with the current-thread runtime that drives it: how
//! every blocking adapter talking to a Kubernetes API starts (the probe, HA coordination).

use std::path::Path;

use super::AdapterError;

/// Reads `kubeconfig` and builds a client on its own runtime; `purpose` names the runtime in
/// the error when it cannot start ("probe", "HA").
pub fn connect(
    kubeconfig: &Path,
    purpose: &str,
) -> Result<(tokio::runtime::Runtime, kube::Client), AdapterError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| AdapterError::io(&e, format!("cannot start the {purpose} runtime: {e}")))?;
    let what = |e: &dyn std::fmt::Display| {
        AdapterError::permanent(format!("{}: {e}", kubeconfig.display()))
    };
    // kube's own message for an unreadable file repeats the path, quoted twice; open it first
    // so the common case (missing, no permission) reads as one clean line.
    std::fs::File::open(kubeconfig).map_err(|e| what(&e))?;
    let config = kube::config::Kubeconfig::read_from(kubeconfig).map_err(|e| what(&e))?;
    let client = runtime.block_on(async {
        let options = kube::config::KubeConfigOptions::default();
        let config = kube::Config::from_custom_kubeconfig(config, &options)
            .await
            .map_err(|e| what(&e))?;
        kube::Client::try_from(config).map_err(|e| what(&e))
    })?;
    Ok((runtime, client))
}
