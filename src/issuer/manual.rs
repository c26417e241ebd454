//! The manual editor: the exact flag change for a person to make, when keyrot edits no file.
//!
//! Used when kube-apiserver's flags live somewhere keyrot does not edit (a configuration
//! management tool, an environment file, a managed template). The person makes the change on
//! every control-plane node, restarts kube-apiserver, and runs `keyrot approve`, after which
//! keyrot checks what the apiserver serves before going on. A step is made on every node before
//! the next one starts on any: that is what lets the accept step keep every apiserver accepting
//! the tokens the others issue.

use super::{FlagError, IssuerFlags, MigrationStep, diff, next_flags};

/// The flags before and after a step, to be changed by hand.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManualChange {
    pub step: MigrationStep,
    pub before: IssuerFlags,
    pub after: IssuerFlags,
}

impl ManualChange {
    /// The change `step` makes to kube-apiserver's `current` flags.
    pub fn new(current: &IssuerFlags, step: &MigrationStep) -> Result<Self, FlagError> {
        Ok(ManualChange {
            step: step.clone(),
            before: current.clone(),
            after: next_flags(current, step)?,
        })
    }

    /// True when the flags already hold what the step writes.
    pub fn changes_nothing(&self) -> bool {
        self.before == self.after
    }

    /// The instruction and the change as a diff of the flags, one per line.
    pub fn render(&self) -> String {
        self.render_then("run `keyrot approve` so keyrot checks the apiserver and goes on")
    }

    /// `render`, ending with `then`: what the person does once kube-apiserver restarted.
    pub fn render_then(&self, then: &str) -> String {
        let tag = self.step.tag();
        if self.changes_nothing() {
            return format!(
                "kube-apiserver's issuer flags already hold what step {tag} writes; nothing to \
                 change.\n"
            );
        }
        let lines = |flags: &IssuerFlags| {
            flags
                .to_args()
                .iter()
                .map(|arg| format!("{arg}\n"))
                .collect::<String>()
        };
        let change = diff::unified(
            "kube-apiserver flags (now)",
            &format!("kube-apiserver flags (after {tag})"),
            &lines(&self.before),
            &lines(&self.after),
            3,
        );
        format!(
            "keyrot does not edit kube-apiserver's flags on this cluster: make step {tag} by \
             hand.\nOn every control-plane node, change the flags as below, in this order, \
             leaving every other flag as it is; restart kube-apiserver; then {then}.\n\n{change}"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_instruction_and_the_flag_diff() {
        let current = IssuerFlags {
            issuers: vec!["https://kubernetes.default.svc.cluster.local".into()],
            jwks_uri: None,
            api_audiences: None,
        };
        let step = MigrationStep::AddNewIssuerFirst {
            new_issuer: "https://oidc.example.com/m".into(),
            new_jwks_uri: "https://oidc.example.com/m/openid/v1/jwks".into(),
        };
        let change = ManualChange::new(&current, &step).unwrap();
        assert_eq!(
            change.render(),
            "keyrot does not edit kube-apiserver's flags on this cluster: make step add-issuer by \
             hand.\nOn every control-plane node, change the flags as below, in this order, \
             leaving every other flag as it is; restart kube-apiserver; then run `keyrot \
             approve` so keyrot checks the apiserver and goes on.\n
--- kube-apiserver flags (now)
+++ kube-apiserver flags (after add-issuer)
@@ -1,1 +1,4 @@
+--service-account-issuer=https://oidc.example.com/m
 --service-account-issuer=https://kubernetes.default.svc.cluster.local
+--service-account-jwks-uri=https://oidc.example.com/m/openid/v1/jwks
+--api-audiences=https://oidc.example.com/m,https://kubernetes.default.svc.cluster.local
"
        );
        let done = ManualChange::new(&change.after, &step).unwrap();
        assert!(done.changes_nothing());
        assert_eq!(
            done.render(),
            "kube-apiserver's issuer flags already hold what step add-issuer writes; nothing to \
             change.\n"
        );
    }

    #[test]
    fn renders_the_accept_step_with_the_old_issuer_still_first() {
        let current = IssuerFlags {
            issuers: vec!["https://kubernetes.default.svc.cluster.local".into()],
            jwks_uri: None,
            api_audiences: None,
        };
        let step = MigrationStep::AcceptNewIssuer {
            new_issuer: "https://oidc.example.com/m".into(),
        };
        let change = ManualChange::new(&current, &step).unwrap();
        assert_eq!(
            change.render(),
            "keyrot does not edit kube-apiserver's flags on this cluster: make step \
             accept-issuer by hand.\nOn every control-plane node, change the flags as below, in \
             this order, leaving every other flag as it is; restart kube-apiserver; then run \
             `keyrot approve` so keyrot checks the apiserver and goes on.\n
--- kube-apiserver flags (now)
+++ kube-apiserver flags (after accept-issuer)
@@ -1,1 +1,3 @@
 --service-account-issuer=https://kubernetes.default.svc.cluster.local
+--service-account-issuer=https://oidc.example.com/m
+--api-audiences=https://kubernetes.default.svc.cluster.local,https://oidc.example.com/m
"
        );
        let done = ManualChange::new(&change.after, &step).unwrap();
        assert!(done.changes_nothing());
    }
}
