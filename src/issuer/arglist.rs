//! The editors' shared core: an argument list, which of its arguments set the issuer flags, and
//! the smallest rewrite that gives those flags new values.
//!
//! Every layout is a list of arguments, one flag per entry: a manifest's command list, k3s's
//! `kube-apiserver-arg`, a unit's continuation lines. The layouts find the entries and render
//! new ones in their own style; this module decides which entries stay, go or are added, so
//! all of them change the same few entries in the same places.

use super::{Flag, IssuerFlags, TextError};

/// The flag an argument sets and its value, when it is one of the three.
pub(crate) type Found = Option<(Flag, String)>;

/// How `edit_args` changes a list of arguments: which go (by flag name) and which come, placed
/// at `anchor` (the first that goes, else after the last).
pub(crate) struct ArgsEdit<'a> {
    pub removed: Vec<usize>,
    pub added: Vec<&'a String>,
    /// `None` when the list is empty.
    pub anchor: Option<usize>,
}

/// The change that takes every argument of the flags `removes` off `args` (each `--name=value`)
/// and puts the arguments of `adds` that are missing in; `None` when there is nothing to do.
pub(crate) fn args_edit<'a>(
    args: &[&str],
    removes: &[&str],
    adds: &'a [String],
) -> Option<ArgsEdit<'a>> {
    let sets = |arg: &str| {
        let arg = arg.strip_prefix("--").unwrap_or_default();
        removes.contains(&arg.split_once('=').map_or(arg, |(name, _)| name))
    };
    let removed: Vec<usize> = (0..args.len()).filter(|&k| sets(args[k])).collect();
    let added: Vec<&String> = adds
        .iter()
        .filter(|a| !args.contains(&a.as_str()))
        .collect();
    if removed.is_empty() && added.is_empty() {
        return None;
    }
    Some(ArgsEdit {
        anchor: removed.first().copied().or(args.len().checked_sub(1)),
        removed,
        added,
    })
}

/// What an argument `name=value` (without leading dashes) sets, if it is one of the three flags.
pub(crate) fn classify(arg: &str) -> Result<Found, TextError> {
    let (name, value) = match arg.split_once('=') {
        Some((name, value)) => (name, Some(value)),
        None => (arg, None),
    };
    for flag in Flag::ALL {
        if name == flag.name() {
            return match value {
                Some(value) => Ok(Some((flag, value.to_string()))),
                None => Err(TextError::Unsupported(format!(
                    "`{arg}` has no `=value`; write it as `--{}=value`",
                    flag.name()
                ))),
            };
        }
        // k3s's `name+=value` and `name-=value` merge with its own defaults in ways that a
        // plain list cannot express: refuse rather than guess.
        if name.trim_end_matches(['+', '-']) == flag.name() {
            return Err(TextError::Unsupported(format!(
                "`{arg}` appends to or prepends to the distribution's default; write the \
                 values as `{}=value` entries",
                flag.name()
            )));
        }
    }
    Ok(None)
}

/// The flags a list gives kube-apiserver; flags the list does not set take `implicit`'s value
/// (what the distribution passes by itself, or nothing).
pub(crate) fn flags_from(found: &[Found], implicit: &IssuerFlags) -> IssuerFlags {
    let values = |flag: Flag| -> Vec<&String> {
        found
            .iter()
            .flatten()
            .filter(|(f, _)| *f == flag)
            .map(|(_, v)| v)
            .collect()
    };
    let issuers = values(Flag::Issuer);
    let jwks = values(Flag::JwksUri);
    let audiences = values(Flag::ApiAudiences);
    IssuerFlags {
        issuers: if issuers.is_empty() {
            implicit.issuers.clone()
        } else {
            issuers.into_iter().cloned().collect()
        },
        // A string flag given twice: the last one wins.
        jwks_uri: match jwks.last() {
            Some(v) => Some(v.to_string()),
            None => implicit.jwks_uri.clone(),
        },
        // A comma-separated list flag given twice: the values add up. An empty list is the
        // same as no flag: kube-apiserver falls back to its default.
        api_audiences: if audiences.is_empty() {
            implicit.api_audiences.clone()
        } else {
            let list: Vec<String> = audiences
                .iter()
                .flat_map(|v| v.split(','))
                .filter(|a| !a.is_empty())
                .map(str::to_string)
                .collect();
            (!list.is_empty()).then_some(list)
        },
    }
}

/// An entry of the rewritten list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Entry {
    /// Argument `i` of the original list, unchanged.
    Keep(usize),
    /// A new argument `--flag=value`.
    New(Flag, String),
}

/// The rewritten list: what each original argument becomes (itself, nothing, or several
/// entries), then the entries added after the last argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Rewrite {
    pub per_arg: Vec<Vec<Entry>>,
    pub appended: Vec<Entry>,
}

/// The smallest change to a list whose arguments set `found`, taking the flags from `current`
/// (as `flags_from` computed them) to `target`.
///
/// Only a flag whose value changes is touched. Issuers only added after the listed ones (the
/// accept step) go right after the last issuer entry, every entry staying where it is; any
/// other change of the issuers writes them as one group where the first issuer was, reusing the
/// original entry of every value that stays. A flag the list lacks goes right after the
/// issuers; a flag it has is replaced where it is.
pub(crate) fn rewrite(found: &[Found], current: &IssuerFlags, target: &IssuerFlags) -> Rewrite {
    let is = |i: usize, flag: Flag| matches!(&found[i], Some((f, _)) if *f == flag);
    let first = |flag: Flag| (0..found.len()).find(|&i| is(i, flag));
    let first_issuer = first(Flag::Issuer);
    let last_issuer = (0..found.len()).rev().find(|&i| is(i, Flag::Issuer));
    let first_jwks = first(Flag::JwksUri);
    let first_audiences = first(Flag::ApiAudiences);

    let issuers_change = current.issuers != target.issuers;
    // `current.issuers` are the entries' values whenever the list has an issuer entry.
    let added_issuers = match last_issuer {
        Some(_) if issuers_change => target.issuers.strip_prefix(current.issuers.as_slice()),
        _ => None,
    };
    let regroup_issuers = issuers_change && added_issuers.is_none();
    let jwks_change = current.jwks_uri != target.jwks_uri;
    let audiences_change = current.api_audiences != target.api_audiences;
    let jwks_entry: Vec<Entry> = target
        .jwks_uri
        .iter()
        .map(|v| Entry::New(Flag::JwksUri, v.clone()))
        .collect();
    let audiences_entry: Vec<Entry> = target
        .api_audiences
        .iter()
        .map(|list| Entry::New(Flag::ApiAudiences, list.join(",")))
        .collect();

    let mut after_issuers: Vec<Entry> = added_issuers
        .unwrap_or_default()
        .iter()
        .map(|v| Entry::New(Flag::Issuer, v.clone()))
        .collect();
    if jwks_change && first_jwks.is_none() {
        after_issuers.extend(jwks_entry.clone());
    }
    if audiences_change && first_audiences.is_none() {
        after_issuers.extend(audiences_entry.clone());
    }
    let issuers_end = if regroup_issuers {
        first_issuer
    } else {
        last_issuer
    };

    let mut per_arg = Vec::with_capacity(found.len());
    for (i, arg) in found.iter().enumerate() {
        let mut entries = match arg {
            Some((Flag::Issuer, _)) if regroup_issuers => {
                if Some(i) == first_issuer {
                    issuer_group(found, &target.issuers)
                } else {
                    Vec::new()
                }
            }
            Some((Flag::JwksUri, _)) if jwks_change => {
                if Some(i) == first_jwks {
                    jwks_entry.clone()
                } else {
                    Vec::new()
                }
            }
            Some((Flag::ApiAudiences, _)) if audiences_change => {
                if Some(i) == first_audiences {
                    audiences_entry.clone()
                } else {
                    Vec::new()
                }
            }
            _ => vec![Entry::Keep(i)],
        };
        if Some(i) == issuers_end {
            entries.append(&mut after_issuers);
        }
        per_arg.push(entries);
    }

    let mut appended = Vec::new();
    if first_issuer.is_none() {
        if issuers_change {
            appended.extend(
                target
                    .issuers
                    .iter()
                    .map(|v| Entry::New(Flag::Issuer, v.clone())),
            );
        }
        appended.append(&mut after_issuers);
    }
    Rewrite { per_arg, appended }
}

/// The issuers in target order, each the original entry when one had that value.
fn issuer_group(found: &[Found], issuers: &[String]) -> Vec<Entry> {
    let mut used = vec![false; found.len()];
    issuers
        .iter()
        .map(|value| {
            let original = (0..found.len())
                .find(|&j| !used[j] && matches!(&found[j], Some((Flag::Issuer, v)) if v == value));
            match original {
                Some(j) => {
                    used[j] = true;
                    Entry::Keep(j)
                }
                None => Entry::New(Flag::Issuer, value.clone()),
            }
        })
        .collect()
}

/// Checks that the edited text gives kube-apiserver exactly `target`: a last guard against a
/// rewrite the layout's own reader would understand differently.
pub(crate) fn check_result(read_back: IssuerFlags, target: &IssuerFlags) -> Result<(), TextError> {
    if read_back == *target {
        Ok(())
    } else {
        Err(TextError::Unsupported(format!(
            "the edited file would read back as {:?} instead of {:?}; this is a bug in keyrot",
            read_back.to_args(),
            target.to_args()
        )))
    }
}

/// Refuses text with carriage returns: every editor works line by line on `\n` endings.
pub(crate) fn refuse_carriage_returns(text: &str) -> Result<(), TextError> {
    if text.contains('\r') {
        return Err(TextError::Unsupported(
            "the file has carriage returns (CRLF line endings); keyrot edits files with \\n \
             line endings only"
                .into(),
        ));
    }
    Ok(())
}

/// `text` with the line of each argument replaced by what the argument became: `arg_lines[k]`
/// is argument k's line; `appended` entries go after line `append_after`. `render` gives the
/// line of an entry. Every other line is kept as it is.
pub(crate) fn replace_lines(
    text: &str,
    arg_lines: &[usize],
    rewrite: &Rewrite,
    append_after: usize,
    render: impl Fn(&Entry) -> String,
) -> String {
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        match arg_lines.iter().position(|&l| l == i) {
            Some(k) => out.extend(rewrite.per_arg[k].iter().map(&render)),
            None => out.push(line.to_string()),
        }
        if i == append_after {
            out.extend(rewrite.appended.iter().map(&render));
        }
    }
    join_lines(out, text)
}

/// Lines joined with `\n`, ending with one when `original` did.
pub(crate) fn join_lines(lines: Vec<String>, original: &str) -> String {
    let mut text = lines.join("\n");
    if original.ends_with('\n') && !text.is_empty() {
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(args: &[&str]) -> Vec<Found> {
        args.iter().map(|a| classify(a).unwrap()).collect()
    }

    fn flags(issuers: &[&str], jwks: Option<&str>, audiences: Option<&[&str]>) -> IssuerFlags {
        IssuerFlags {
            issuers: issuers.iter().map(|s| s.to_string()).collect(),
            jwks_uri: jwks.map(str::to_string),
            api_audiences: audiences.map(|a| a.iter().map(|s| s.to_string()).collect()),
        }
    }

    #[test]
    fn classifies_the_three_flags_and_nothing_else() {
        assert_eq!(
            classify("service-account-issuer=https://a").unwrap(),
            Some((Flag::Issuer, "https://a".into()))
        );
        assert_eq!(
            classify("api-audiences=a,b").unwrap(),
            Some((Flag::ApiAudiences, "a,b".into()))
        );
        assert_eq!(
            classify("service-account-key-file=/etc/sa.pub").unwrap(),
            None
        );
        assert_eq!(classify("v=2").unwrap(), None);
        assert!(classify("service-account-issuer").is_err());
        assert!(classify("api-audiences+=extra").is_err());
    }

    #[test]
    fn repeated_flags_read_as_kube_apiserver_reads_them() {
        let list = found(&[
            "service-account-issuer=https://a",
            "api-audiences=x,y",
            "service-account-jwks-uri=https://one",
            "service-account-issuer=https://b",
            "service-account-jwks-uri=https://two",
            "api-audiences=z",
        ]);
        assert_eq!(
            flags_from(&list, &IssuerFlags::default()),
            flags(
                &["https://a", "https://b"],
                Some("https://two"),
                Some(&["x", "y", "z"])
            )
        );
        let empty = found(&["api-audiences="]);
        assert_eq!(
            flags_from(&empty, &IssuerFlags::default()).api_audiences,
            None
        );
    }

    #[test]
    fn new_issuer_goes_before_the_kept_old_entry_and_new_flags_follow_the_issuers() {
        let list = found(&[
            "secure-port=6443",
            "service-account-issuer=https://old",
            "v=2",
        ]);
        let current = flags(&["https://old"], None, None);
        let target = flags(
            &["https://new", "https://old"],
            Some("https://new/jwks"),
            Some(&["https://new", "https://old"]),
        );
        let rewrite = rewrite(&list, &current, &target);
        assert_eq!(
            rewrite.per_arg,
            vec![
                vec![Entry::Keep(0)],
                vec![
                    Entry::New(Flag::Issuer, "https://new".into()),
                    Entry::Keep(1),
                    Entry::New(Flag::JwksUri, "https://new/jwks".into()),
                    Entry::New(Flag::ApiAudiences, "https://new,https://old".into()),
                ],
                vec![Entry::Keep(2)],
            ]
        );
        assert!(rewrite.appended.is_empty());
    }

    #[test]
    fn existing_flags_are_replaced_in_place_and_unchanged_ones_left_alone() {
        let list = found(&[
            "api-audiences=https://new,https://old",
            "service-account-issuer=https://new",
            "service-account-issuer=https://old",
            "service-account-jwks-uri=https://new/jwks",
        ]);
        let current = flags_from(&list, &IssuerFlags::default());
        let target = flags(
            &["https://new"],
            Some("https://new/jwks"),
            Some(&["https://new"]),
        );
        let rewrite = rewrite(&list, &current, &target);
        assert_eq!(
            rewrite.per_arg,
            vec![
                vec![Entry::New(Flag::ApiAudiences, "https://new".into())],
                vec![Entry::Keep(1)],
                vec![],
                vec![Entry::Keep(3)],
            ]
        );
    }

    #[test]
    fn a_list_without_issuers_gets_them_appended() {
        let list = found(&["audit-log-maxage=30"]);
        let current = flags(&["https://old"], None, Some(&["https://old", "k3s"]));
        let target = flags(
            &["https://new", "https://old"],
            Some("https://new/jwks"),
            Some(&["https://new", "https://old", "k3s"]),
        );
        let rewrite = rewrite(&list, &current, &target);
        assert_eq!(rewrite.per_arg, vec![vec![Entry::Keep(0)]]);
        assert_eq!(
            rewrite.appended,
            vec![
                Entry::New(Flag::Issuer, "https://new".into()),
                Entry::New(Flag::Issuer, "https://old".into()),
                Entry::New(Flag::JwksUri, "https://new/jwks".into()),
                Entry::New(Flag::ApiAudiences, "https://new,https://old,k3s".into()),
            ]
        );
    }

    #[test]
    fn accepted_issuers_follow_the_last_issuer_entry_and_every_entry_stays_in_place() {
        let list = found(&[
            "service-account-issuer=https://old",
            "v=2",
            "service-account-issuer=https://older",
            "secure-port=6443",
        ]);
        let current = flags_from(&list, &IssuerFlags::default());
        let target = flags(
            &["https://old", "https://older", "https://new"],
            None,
            Some(&["https://old", "https://older", "https://new"]),
        );
        let rewrite = rewrite(&list, &current, &target);
        assert_eq!(
            rewrite.per_arg,
            vec![
                vec![Entry::Keep(0)],
                vec![Entry::Keep(1)],
                vec![
                    Entry::Keep(2),
                    Entry::New(Flag::Issuer, "https://new".into()),
                    Entry::New(
                        Flag::ApiAudiences,
                        "https://old,https://older,https://new".into()
                    ),
                ],
                vec![Entry::Keep(3)],
            ]
        );
        assert!(rewrite.appended.is_empty());
    }
}
