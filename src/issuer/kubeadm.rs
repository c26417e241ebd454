//! The kubeadm editor: the issuer flags in the static pod manifest's kube-apiserver command list.
//!
//! serde_yaml checks that the manifest parses and finds the kube-apiserver container's command
//! list; the edit itself is made on the text, so comments and formatting survive and only the
//! lines of the three flags change. New lines copy the style of the issuer line kubeadm wrote
//! (`    - --flag=value`) and go next to it. The text-level list must hold exactly what
//! serde_yaml parsed, otherwise the manifest is refused and left alone.
//!
//! The kubelet restarts the static pod when the manifest's content changes. Note that
//! `kubeadm upgrade` regenerates the manifest from the cluster's ClusterConfiguration: the
//! same flags belong in its `apiServer.extraArgs` too, or an upgrade reverts them.

use serde_yaml::Value;

use super::arglist::{self, Entry, Found};
use super::yaml_list::{self, Item};
use super::{Flag, IssuerFlags, MigrationStep, TextEdit, TextError, next_flags};

/// The issuer flags the manifest gives kube-apiserver.
pub fn read_flags(text: &str) -> Result<IssuerFlags, TextError> {
    let list = command_list(text)?;
    Ok(arglist::flags_from(&list.found, &IssuerFlags::default()))
}

/// Every `--name=value` argument of kube-apiserver's command, as `name=value`.
pub(crate) fn arguments(text: &str) -> Result<Vec<String>, TextError> {
    Ok(parsed_command(text)?
        .iter()
        .filter_map(|arg| arg.strip_prefix("--"))
        .map(str::to_string)
        .collect())
}

/// The manifest after `step`; the text is unchanged when the step was applied already.
pub fn edit_text(text: &str, step: &MigrationStep) -> Result<TextEdit, TextError> {
    let list = command_list(text)?;
    let before = arglist::flags_from(&list.found, &IssuerFlags::default());
    let after = next_flags(&before, step)?;
    if after == before {
        return Ok(TextEdit {
            flags_before: before,
            flags_after: after,
            text: text.to_string(),
        });
    }
    let rewrite = arglist::rewrite(&list.found, &before, &after);
    // New lines look like the issuer line kubeadm wrote (there is always one: `next_flags`
    // refuses a manifest without it).
    let anchor = list
        .found
        .iter()
        .position(|f| matches!(f, Some((Flag::Issuer, _))))
        .unwrap_or(0);
    let anchor = &list.items[anchor];
    let lines: Vec<&str> = text.lines().collect();
    let arg_lines: Vec<usize> = list.items.iter().map(|item| item.line).collect();
    let last = *arg_lines
        .last()
        .expect("a command list with an issuer is not empty");
    let edited = arglist::replace_lines(text, &arg_lines, &rewrite, last, |entry| match entry {
        Entry::Keep(k) => lines[list.items[*k].line].to_string(),
        Entry::New(flag, value) => {
            format!("{}{}", anchor.prefix, anchor.style.render(&flag.arg(value)))
        }
    });
    arglist::check_result(read_flags(&edited)?, &after)?;
    Ok(TextEdit {
        flags_before: before,
        flags_after: after,
        text: edited,
    })
}

/// The manifest with every argument of the flags `removes` taken out of kube-apiserver's command
/// and `adds` written where the first of them was (or after the last argument), in the style of
/// the line they replace. The text is unchanged when there is nothing to do.
pub fn edit_args(text: &str, removes: &[&str], adds: &[String]) -> Result<String, TextError> {
    let list = command_list(text)?;
    let args: Vec<&str> = list.items.iter().map(|i| i.value.as_str()).collect();
    let Some(edit) = arglist::args_edit(&args, removes, adds) else {
        return Ok(text.to_string());
    };
    let (Some(anchor), Some(last)) = (edit.anchor, list.items.last()) else {
        return Err(unsupported("kube-apiserver's command is empty"));
    };
    let anchor = &list.items[anchor];
    let removed: Vec<&Item> = edit.removed.iter().map(|&k| &list.items[k]).collect();
    let new_lines: Vec<String> = edit
        .added
        .iter()
        .map(|arg| format!("{}{}", anchor.prefix, anchor.style.render(arg)))
        .collect();
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let is_removed = removed.iter().any(|item| item.line == i);
        if removed.first().is_some_and(|first| first.line == i) {
            out.extend(new_lines.iter().cloned());
        }
        if !is_removed {
            out.push(line.to_string());
        }
        if removed.is_empty() && i == last.line {
            out.extend(new_lines.iter().cloned());
        }
    }
    Ok(arglist::join_lines(out, text))
}

/// The kube-apiserver container's command list, as items of the text.
struct CommandList {
    items: Vec<Item>,
    found: Vec<Found>,
}

fn command_list(text: &str) -> Result<CommandList, TextError> {
    arglist::refuse_carriage_returns(text)?;
    let command = parsed_command(text)?;
    let lines: Vec<&str> = text.lines().collect();
    // Every `command:` key whose block list holds exactly the parsed command.
    let mut candidates: Vec<Vec<Item>> = lines
        .iter()
        .enumerate()
        .filter(|(_, line)| {
            let key = line.trim_start();
            let key = key.strip_prefix("- ").unwrap_or(key).trim_start();
            key.trim_end() == "command:"
        })
        .filter_map(|(i, _)| yaml_list::block_items(&lines, i))
        .filter(|items| items.iter().map(|item| &item.value).eq(command.iter()))
        .collect();
    let items = match candidates.len() {
        1 => candidates.remove(0),
        0 => {
            return Err(unsupported(
                "kube-apiserver's command list is not written as kubeadm writes it (a block \
                 list under `command:`, one `- --flag=value` per line); edit it by hand",
            ));
        }
        _ => {
            return Err(unsupported(
                "several command lists in the file match kube-apiserver's; edit it by hand",
            ));
        }
    };
    let found = items
        .iter()
        .map(|item| match item.value.strip_prefix("--") {
            Some(arg) => arglist::classify(arg),
            None => Ok(None),
        })
        .collect::<Result<_, _>>()?;
    Ok(CommandList { items, found })
}

/// The kube-apiserver container's command as serde_yaml parses it.
fn parsed_command(text: &str) -> Result<Vec<String>, TextError> {
    let doc: Value = serde_yaml::from_str(text)
        .map_err(|e| TextError::Unsupported(format!("the manifest does not parse as YAML: {e}")))?;
    let containers = doc
        .get("spec")
        .and_then(|spec| spec.get("containers"))
        .and_then(Value::as_sequence)
        .ok_or_else(|| unsupported("no spec.containers list: not a static pod manifest"))?;
    let mut apiservers = containers
        .iter()
        .filter(|c| c.get("name").and_then(Value::as_str) == Some("kube-apiserver"));
    let container = match (apiservers.next(), apiservers.next()) {
        (Some(container), None) => container,
        (None, _) => return Err(unsupported("no container named kube-apiserver")),
        (Some(_), Some(_)) => return Err(unsupported("several containers named kube-apiserver")),
    };
    if container.get("args").is_some() {
        return Err(unsupported(
            "the kube-apiserver container has `args:`; keyrot edits manifests whose flags are \
             all in `command:`, as kubeadm writes them",
        ));
    }
    let command = container
        .get("command")
        .and_then(Value::as_sequence)
        .ok_or_else(|| unsupported("the kube-apiserver container has no `command:` list"))?;
    command
        .iter()
        .map(|arg| {
            arg.as_str()
                .map(str::to_string)
                .ok_or_else(|| unsupported("kube-apiserver's command list holds a non-string"))
        })
        .collect()
}

fn unsupported(reason: &str) -> TextError {
    TextError::Unsupported(reason.to_string())
}

/// What to put in kubeadm's ClusterConfiguration so that `kubeadm upgrade`, which regenerates
/// the manifest from it, keeps `flags`. keyrot does not edit the `kubeadm-config` ConfigMap: it
/// is shared by every node and versioned by kubeadm. Only v1beta4 (kubeadm 1.31 and later) can
/// hold a flag twice: its `extraArgs` is a list of `name`/`value` pairs where v1beta3 has a map.
pub fn cluster_configuration_hint(flags: &IssuerFlags) -> String {
    let mut entries = String::new();
    for arg in flags.to_args() {
        let (name, value) = arg
            .trim_start_matches('-')
            .split_once('=')
            .expect("to_args writes --name=value");
        entries.push_str(&format!("    - name: {name}\n      value: {value}\n"));
    }
    format!(
        "kubeadm: put the same flags in the ClusterConfiguration of the kubeadm-config \
         ConfigMap (`kubectl -n kube-system edit configmap kubeadm-config`), or the next \
         `kubeadm upgrade` writes the manifest without them. With kubeadm.k8s.io/v1beta4, \
         apiServer.extraArgs gets these entries in place of any for the same names:\n\
         \x20 apiServer:\n    extraArgs:\n{entries}\
         v1beta3's extraArgs is a map and holds one issuer only: move to v1beta4 first \
         (`kubeadm config migrate`), or apply these flags to the manifest again after each \
         upgrade.\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMALL: &str = "\
apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - kube-apiserver
    - --secure-port=6443
    # kubeadm writes no comments; people do
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    image: registry.k8s.io/kube-apiserver:v1.33.2
    name: kube-apiserver
";

    fn add() -> MigrationStep {
        MigrationStep::AddNewIssuerFirst {
            new_issuer: "https://oidc.example.com/c1".into(),
            new_jwks_uri: "https://oidc.example.com/c1/openid/v1/jwks".into(),
        }
    }

    #[test]
    fn inserts_next_to_the_issuer_line_and_keeps_comments() {
        let edit = edit_text(SMALL, &add()).unwrap();
        assert_eq!(
            edit.text,
            "\
apiVersion: v1
kind: Pod
spec:
  containers:
  - command:
    - kube-apiserver
    - --secure-port=6443
    # kubeadm writes no comments; people do
    - --service-account-issuer=https://oidc.example.com/c1
    - --service-account-issuer=https://kubernetes.default.svc.cluster.local
    - --service-account-jwks-uri=https://oidc.example.com/c1/openid/v1/jwks
    - --api-audiences=https://oidc.example.com/c1,https://kubernetes.default.svc.cluster.local
    - --service-account-key-file=/etc/kubernetes/pki/sa.pub
    image: registry.k8s.io/kube-apiserver:v1.33.2
    name: kube-apiserver
"
        );
    }

    #[test]
    fn a_flow_style_command_is_refused() {
        let manifest = "spec:\n  containers:\n  - name: kube-apiserver\n    command: [kube-apiserver, --service-account-issuer=https://a]\n";
        let err = edit_text(manifest, &add()).unwrap_err();
        assert!(
            err.to_string().contains("not written as kubeadm writes it"),
            "{err}"
        );
    }

    #[test]
    fn flags_in_args_are_refused() {
        let manifest = "spec:\n  containers:\n  - name: kube-apiserver\n    command:\n    - kube-apiserver\n    args:\n    - --service-account-issuer=https://a\n";
        let err = edit_text(manifest, &add()).unwrap_err();
        assert!(err.to_string().contains("has `args:`"), "{err}");
    }

    #[test]
    fn the_cluster_configuration_hint_lists_each_flag_as_a_v1beta4_entry() {
        let flags = IssuerFlags {
            issuers: vec!["https://new.example/c".into(), "https://old.example".into()],
            jwks_uri: Some("https://new.example/c/openid/v1/jwks".into()),
            api_audiences: Some(vec![
                "https://new.example/c".into(),
                "https://old.example".into(),
            ]),
        };
        let hint = cluster_configuration_hint(&flags);
        assert!(
            hint.contains(
                "  apiServer:
    extraArgs:
    - name: service-account-issuer
      value: https://new.example/c
    - name: service-account-issuer
      value: https://old.example
    - name: service-account-jwks-uri
      value: https://new.example/c/openid/v1/jwks
    - name: api-audiences
      value: https://new.example/c,https://old.example
v1beta3's extraArgs is a map"
            ),
            "{hint}"
        );
        // The entries are YAML as kubeadm reads it.
        let yaml = hint
            .lines()
            .skip_while(|l| !l.starts_with("  apiServer:"))
            .take_while(|l| l.starts_with(' '))
            .collect::<Vec<_>>()
            .join("\n");
        let parsed: Value = serde_yaml::from_str(&yaml).unwrap();
        let entries = parsed["apiServer"]["extraArgs"].as_sequence().unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[1]["value"], "https://old.example");
    }
}
