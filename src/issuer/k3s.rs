//! The k3s / RKE2 editor: the issuer flags in `config.yaml`'s `kube-apiserver-arg` list.
//!
//! Entries are `name=value` (k3s also accepts a leading `--`), as a block list, one per line,
//! or a one-line flow list `[...]`; the key is added at the end of the file when missing.
//! Other keys and entries stay byte for byte. k3s passes each entry to kube-apiserver as
//! `--name=value`, repeated names in order, replacing its own default for that name
//! (`GetArgs` in k3s's `pkg/util/args.go`).
//!
//! k3s sets `--service-account-issuer` and `--api-audiences` itself when the list does not
//! (`pkg/daemons/control/server.go`): `K3sDefaults` carries those values, for the config's
//! `cluster-domain` (default `cluster.local`), so the editor knows what the apiserver runs with
//! today and writes them out when the migration changes them.
//! Files under `config.yaml.d/` and `--kube-apiserver-arg` given on k3s's command line are not
//! read: keep the issuer flags in `config.yaml` alone.

use serde_yaml::Value;

use super::arglist::{self, Entry, Found};
use super::yaml_list::{self, Item, Style};
use super::{Flag, IssuerFlags, MigrationStep, TextEdit, TextError, next_flags};

const KEY: &str = "kube-apiserver-arg";

/// The issuer flags k3s (or RKE2) passes when `kube-apiserver-arg` does not set them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct K3sDefaults {
    pub issuer: String,
    pub api_audiences: Vec<String>,
    /// `k3s` or `rke2`: the last default audience.
    program: String,
}

impl K3sDefaults {
    /// k3s: issuer `https://kubernetes.default.svc.<cluster domain>`, audiences that issuer and
    /// `k3s`.
    pub fn k3s(cluster_domain: &str) -> Self {
        Self::for_program("k3s", cluster_domain)
    }

    /// RKE2 runs k3s's control-plane code under its own name: audiences end with `rke2`.
    pub fn rke2(cluster_domain: &str) -> Self {
        Self::for_program("rke2", cluster_domain)
    }

    fn for_program(program: &str, cluster_domain: &str) -> Self {
        let issuer = format!("https://kubernetes.default.svc.{cluster_domain}");
        K3sDefaults {
            api_audiences: vec![issuer.clone(), program.to_string()],
            issuer,
            program: program.to_string(),
        }
    }

    /// The defaults for this config: k3s derives them from its `cluster-domain`, which the
    /// config may set (`cfg.ClusterDomain` in k3s's `pkg/daemons/control/server.go`).
    fn in_config(&self, text: &str) -> Result<Self, TextError> {
        let doc: Value = serde_yaml::from_str(text)
            .map_err(|e| unsupported(format!("the config does not parse as YAML: {e}")))?;
        match doc.get("cluster-domain") {
            None | Some(Value::Null) => Ok(self.clone()),
            Some(Value::String(domain)) if !domain.trim().is_empty() => {
                Ok(Self::for_program(&self.program, domain.trim()))
            }
            Some(_) => Err(unsupported(
                "`cluster-domain` is not a domain name; fix it before changing the issuer".into(),
            )),
        }
    }

    fn implicit(&self) -> IssuerFlags {
        IssuerFlags {
            issuers: vec![self.issuer.clone()],
            jwks_uri: None,
            api_audiences: Some(self.api_audiences.clone()),
        }
    }
}

/// The issuer flags the config gives kube-apiserver, k3s's own values filling the gaps.
pub fn read_flags(text: &str, defaults: &K3sDefaults) -> Result<IssuerFlags, TextError> {
    let list = arg_list(text)?;
    Ok(arglist::flags_from(
        &list.found,
        &defaults.in_config(text)?.implicit(),
    ))
}

/// Every entry of `kube-apiserver-arg`, as `name=value` (k3s passes each as `--name=value`).
pub(crate) fn arguments(text: &str) -> Result<Vec<String>, TextError> {
    Ok(parsed_args(text)?
        .unwrap_or_default()
        .iter()
        .map(|arg| arg.strip_prefix("--").unwrap_or(arg).to_string())
        .collect())
}

/// The config after `step`; the text is unchanged when the step was applied already.
pub fn edit_text(
    text: &str,
    defaults: &K3sDefaults,
    step: &MigrationStep,
) -> Result<TextEdit, TextError> {
    let list = arg_list(text)?;
    let before = arglist::flags_from(&list.found, &defaults.in_config(text)?.implicit());
    let after = next_flags(&before, step)?;
    if after == before {
        return Ok(TextEdit {
            flags_before: before,
            flags_after: after,
            text: text.to_string(),
        });
    }
    let rewrite = arglist::rewrite(&list.found, &before, &after);
    let new_entry = NewEntry::like(&list);
    let edited = match &list.form {
        Form::Missing => {
            let mut edited = text.to_string();
            if !edited.is_empty() && !edited.ends_with('\n') {
                edited.push('\n');
            }
            edited.push_str(KEY);
            edited.push_str(":\n");
            for entry in &rewrite.appended {
                edited.push_str(&new_entry.block_line(entry));
                edited.push('\n');
            }
            edited
        }
        Form::Block { key, items } => {
            let lines: Vec<&str> = text.lines().collect();
            let arg_lines: Vec<usize> = items.iter().map(|item| item.line).collect();
            let append_after = arg_lines.last().copied().unwrap_or(*key);
            arglist::replace_lines(
                text,
                &arg_lines,
                &rewrite,
                append_after,
                |entry| match entry {
                    Entry::Keep(k) => lines[items[*k].line].to_string(),
                    entry => new_entry.block_line(entry),
                },
            )
        }
        Form::Flow {
            key,
            head,
            items,
            tail,
        } => {
            let entries: Vec<String> = rewrite
                .per_arg
                .iter()
                .flatten()
                .chain(&rewrite.appended)
                .map(|entry| match entry {
                    Entry::Keep(k) => items[*k].clone(),
                    Entry::New(flag, value) => new_entry.scalar(*flag, value),
                })
                .collect();
            let line = format!("{head}[{}]{tail}", entries.join(", "));
            let lines: Vec<String> = text
                .lines()
                .enumerate()
                .map(|(i, l)| {
                    if i == *key {
                        line.clone()
                    } else {
                        l.to_string()
                    }
                })
                .collect();
            arglist::join_lines(lines, text)
        }
    };
    arglist::check_result(read_flags(&edited, defaults)?, &after)?;
    Ok(TextEdit {
        flags_before: before,
        flags_after: after,
        text: edited,
    })
}

/// Where `kube-apiserver-arg` is in the text and how it is written.
enum Form {
    Missing,
    /// Block items under the key on line `key` (none when its value is empty).
    Block {
        key: usize,
        items: Vec<Item>,
    },
    /// A one-line flow list: the line up to `[`, each item's original text, the rest after `]`.
    Flow {
        key: usize,
        head: String,
        items: Vec<String>,
        tail: String,
    },
}

struct ArgList {
    form: Form,
    /// Each entry's value as written (`name=value` or `--name=value`) and its style.
    values: Vec<(String, Style)>,
    found: Vec<Found>,
}

fn arg_list(text: &str) -> Result<ArgList, TextError> {
    arglist::refuse_carriage_returns(text)?;
    let parsed = parsed_args(text)?;
    let lines: Vec<&str> = text.lines().collect();
    let keys: Vec<usize> = (0..lines.len())
        .filter(|&i| lines[i].starts_with(&format!("{KEY}:")))
        .collect();
    let (form, values) = match keys[..] {
        [] if parsed.is_none() => (Form::Missing, Vec::new()),
        [key] => read_form(&lines, key)?,
        _ => {
            return Err(unsupported(format!(
                "`{KEY}` is not written as a plain top-level key followed by a list; edit it by hand"
            )));
        }
    };
    if !values
        .iter()
        .map(|(v, _)| v)
        .eq(parsed.unwrap_or_default().iter())
    {
        return Err(unsupported(format!(
            "`{KEY}` is written in a form keyrot does not read (block items `- \"name=value\"` \
             one per line, or a one-line `[...]` list); edit it by hand"
        )));
    }
    let found = values
        .iter()
        .map(|(v, _)| arglist::classify(v.strip_prefix("--").unwrap_or(v)))
        .collect::<Result<_, _>>()?;
    Ok(ArgList {
        form,
        values,
        found,
    })
}

type FormAndValues = (Form, Vec<(String, Style)>);

fn read_form(lines: &[&str], key: usize) -> Result<FormAndValues, TextError> {
    let line = lines[key];
    let rest = line[KEY.len() + 1..].trim_start();
    let not_read = || {
        unsupported(format!(
            "`{KEY}` is written in a form keyrot does not read (block items `- \"name=value\"` \
             one per line, or a one-line `[...]` list); edit it by hand"
        ))
    };
    if yaml_list::only_comment(rest) {
        let items = yaml_list::block_items(lines, key).ok_or_else(not_read)?;
        let values = items.iter().map(|i| (i.value.clone(), i.style)).collect();
        return Ok((Form::Block { key, items }, values));
    }
    if rest.starts_with('[') {
        let (items, tail) = yaml_list::flow_items(rest).ok_or_else(not_read)?;
        if !yaml_list::only_comment(tail) {
            return Err(not_read());
        }
        let values = items.iter().map(|i| (i.value.clone(), i.style)).collect();
        let form = Form::Flow {
            key,
            head: line[..line.len() - rest.len()].to_string(),
            items: items.into_iter().map(|i| i.original).collect(),
            tail: tail.to_string(),
        };
        return Ok((form, values));
    }
    Err(unsupported(format!(
        "`{KEY}` holds a single value; write it as a list (`{KEY}:` then `- \"name=value\"` lines)"
    )))
}

/// `kube-apiserver-arg` as serde_yaml parses it; `None` when absent or empty.
fn parsed_args(text: &str) -> Result<Option<Vec<String>>, TextError> {
    let doc: Value = serde_yaml::from_str(text)
        .map_err(|e| unsupported(format!("the config does not parse as YAML: {e}")))?;
    let value = match &doc {
        Value::Null => return Ok(None),
        Value::Mapping(map) => map.get(KEY),
        _ => return Err(unsupported("the config is not a YAML mapping".into())),
    };
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Sequence(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| unsupported(format!("`{KEY}` holds a non-string item")))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(Value::String(_)) => Err(unsupported(format!(
            "`{KEY}` holds a single value; write it as a list (`{KEY}:` then `- \"name=value\"` lines)"
        ))),
        Some(_) => Err(unsupported(format!(
            "`{KEY}` is not a list; write it as a list (`{KEY}:` then `- \"name=value\"` lines)"
        ))),
    }
}

/// How new entries are written: like the first issuer entry, else like the first entry, else
/// as k3s's documentation writes them (`  - "name=value"`).
struct NewEntry {
    prefix: String,
    style: Style,
    dashes: &'static str,
}

impl NewEntry {
    fn like(list: &ArgList) -> Self {
        let anchor = list
            .found
            .iter()
            .position(|f| matches!(f, Some((Flag::Issuer, _))))
            .or(if list.values.is_empty() {
                None
            } else {
                Some(0)
            });
        let prefix = match (&list.form, anchor) {
            (Form::Block { items, .. }, Some(i)) => items[i].prefix.clone(),
            _ => "  - ".to_string(),
        };
        match anchor {
            Some(i) => {
                let (value, style) = &list.values[i];
                NewEntry {
                    prefix,
                    style: *style,
                    dashes: if value.starts_with("--") { "--" } else { "" },
                }
            }
            None => NewEntry {
                prefix,
                style: Style::Double,
                dashes: "",
            },
        }
    }

    fn scalar(&self, flag: Flag, value: &str) -> String {
        let arg = format!("{}{}={value}", self.dashes, flag.name());
        self.style.render(&arg)
    }

    fn block_line(&self, entry: &Entry) -> String {
        match entry {
            Entry::New(flag, value) => format!("{}{}", self.prefix, self.scalar(*flag, value)),
            Entry::Keep(_) => unreachable!("kept entries keep their own line"),
        }
    }
}

fn unsupported(reason: String) -> TextError {
    TextError::Unsupported(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add() -> MigrationStep {
        MigrationStep::AddNewIssuerFirst {
            new_issuer: "https://oidc.example.com/edge".into(),
            new_jwks_uri: "https://oidc.example.com/edge/openid/v1/jwks".into(),
        }
    }

    #[test]
    fn adds_the_key_when_missing_with_k3s_defaults_as_the_old_values() {
        let config = "write-kubeconfig-mode: \"0644\"\n";
        let edit = edit_text(config, &K3sDefaults::k3s("cluster.local"), &add()).unwrap();
        assert_eq!(
            edit.text,
            "write-kubeconfig-mode: \"0644\"
kube-apiserver-arg:
  - \"service-account-issuer=https://oidc.example.com/edge\"
  - \"service-account-issuer=https://kubernetes.default.svc.cluster.local\"
  - \"service-account-jwks-uri=https://oidc.example.com/edge/openid/v1/jwks\"
  - \"api-audiences=https://oidc.example.com/edge,https://kubernetes.default.svc.cluster.local,k3s\"
"
        );
    }

    #[test]
    fn the_configs_cluster_domain_names_the_implicit_issuer() {
        let config = "cluster-domain: corp.internal\nwrite-kubeconfig-mode: \"0644\"\n";
        let defaults = K3sDefaults::k3s("cluster.local");
        let flags = read_flags(config, &defaults).unwrap();
        assert_eq!(
            flags.issuers,
            ["https://kubernetes.default.svc.corp.internal"]
        );
        assert_eq!(
            flags.api_audiences,
            Some(vec![
                "https://kubernetes.default.svc.corp.internal".to_string(),
                "k3s".to_string()
            ])
        );
        let edit = edit_text(config, &defaults, &add()).unwrap();
        assert!(
            edit.text.contains(
                "\"service-account-issuer=https://kubernetes.default.svc.corp.internal\""
            ),
            "{}",
            edit.text
        );
        let odd = "cluster-domain: [a, b]\n";
        let err = read_flags(odd, &defaults).unwrap_err();
        assert!(err.to_string().contains("`cluster-domain`"), "{err}");
    }

    #[test]
    fn rke2_defaults_name_rke2_as_an_audience() {
        let defaults = K3sDefaults::rke2("corp.internal");
        assert_eq!(
            defaults.issuer,
            "https://kubernetes.default.svc.corp.internal"
        );
        assert_eq!(
            defaults.api_audiences,
            ["https://kubernetes.default.svc.corp.internal", "rke2"]
        );
    }

    #[test]
    fn entries_with_dashes_and_plain_style_get_new_entries_alike() {
        let config =
            "kube-apiserver-arg:\n- --service-account-issuer=https://old.example\n- --v=2\n";
        let edit = edit_text(config, &K3sDefaults::k3s("cluster.local"), &add()).unwrap();
        assert_eq!(
            edit.text,
            "kube-apiserver-arg:
- --service-account-issuer=https://oidc.example.com/edge
- --service-account-issuer=https://old.example
- --service-account-jwks-uri=https://oidc.example.com/edge/openid/v1/jwks
- --api-audiences=https://oidc.example.com/edge,https://kubernetes.default.svc.cluster.local,k3s
- --v=2
"
        );
    }

    #[test]
    fn a_single_string_value_is_refused() {
        let config = "kube-apiserver-arg: \"v=2\"\n";
        let err = edit_text(config, &K3sDefaults::k3s("cluster.local"), &add()).unwrap_err();
        assert!(err.to_string().contains("holds a single value"), "{err}");
    }
}
