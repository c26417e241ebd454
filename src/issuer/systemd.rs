//! The systemd editor: the issuer flags on a kube-apiserver unit's `ExecStart=` continuation lines.
//!
//! Kubernetes the hard way writes the unit as `ExecStart=/usr/local/bin/kube-apiserver \` and
//! then one `  --flag=value \` per line. The editor changes only the lines of the three flags,
//! writes new ones with the indentation of the issuer line, and keeps every continuation
//! backslash in place (adding one only to a line that stops being the last). Flags given in an
//! `EnvironmentFile=` or in a drop-in that replaces `ExecStart=` are not read. After an edit
//! systemd must reload the unit (`systemctl daemon-reload`) before the restart: the caller's job.

use super::arglist::{self, Entry, Found};
use super::{Flag, IssuerFlags, MigrationStep, TextEdit, TextError, next_flags};

/// The issuer flags the unit's `ExecStart=` gives kube-apiserver.
pub fn read_flags(text: &str) -> Result<IssuerFlags, TextError> {
    let exec = exec_start(text)?;
    Ok(arglist::flags_from(&exec.found, &IssuerFlags::default()))
}

/// Every `--name=value` argument on `ExecStart=`'s continuation lines, as `name=value`.
pub(crate) fn arguments(text: &str) -> Result<Vec<String>, TextError> {
    let exec = exec_start(text)?;
    Ok(exec
        .lines
        .iter()
        .flat_map(|line| line.body.split_whitespace())
        .filter_map(|token| token.strip_prefix("--"))
        .map(str::to_string)
        .collect())
}

/// The unit after `step`; the text is unchanged when the step was applied already.
pub fn edit_text(text: &str, step: &MigrationStep) -> Result<TextEdit, TextError> {
    let exec = exec_start(text)?;
    let before = arglist::flags_from(&exec.found, &IssuerFlags::default());
    let after = next_flags(&before, step)?;
    if after == before {
        return Ok(TextEdit {
            flags_before: before,
            flags_after: after,
            text: text.to_string(),
        });
    }
    for value in after.to_args() {
        refuse_expansions(&value)?;
    }
    let rewrite = arglist::rewrite(&exec.found, &before, &after);
    let anchor = exec
        .found
        .iter()
        .position(|f| matches!(f, Some((Flag::Issuer, _))))
        .unwrap_or(0);
    let indent = &exec.lines[anchor].indent;

    // The command's lines after the edit: (text without the backslash, the original line's
    // backslash and the spaces before it, when it had one).
    let mut rows: Vec<(String, Option<&str>)> = Vec::new();
    let entries = rewrite.per_arg.iter().flatten().chain(&rewrite.appended);
    for entry in entries {
        rows.push(match entry {
            Entry::Keep(k) => {
                let line = &exec.lines[*k];
                (line.body.clone(), line.suffix.as_deref())
            }
            Entry::New(flag, value) => (format!("{indent}{}", flag.arg(value)), None),
        });
    }
    let edited = with_command(text, &exec, rows);
    arglist::check_result(read_flags(&edited)?, &after)?;
    Ok(TextEdit {
        flags_before: before,
        flags_after: after,
        text: edited,
    })
}

/// The unit with every argument of the flags `removes` taken off `ExecStart=` and `adds` written
/// where the first of them was (or after the last argument), with the indentation of the line
/// they replace. The text is unchanged when there is nothing to do.
pub fn edit_args(text: &str, removes: &[&str], adds: &[String]) -> Result<String, TextError> {
    let exec = exec_start(text)?;
    let args: Vec<&str> = exec.lines.iter().map(|l| l.body.trim()).collect();
    let Some(edit) = arglist::args_edit(&args, removes, adds) else {
        return Ok(text.to_string());
    };
    for arg in adds {
        refuse_expansions(arg)?;
    }
    let anchor = edit
        .anchor
        .ok_or_else(|| unsupported("ExecStart= has no arguments"))?;
    let indent = &exec.lines[anchor].indent;
    let removed = edit.removed;
    let new_rows = edit
        .added
        .into_iter()
        .map(|arg| (format!("{indent}{arg}"), None));
    let mut rows: Vec<(String, Option<&str>)> = Vec::new();
    let mut new_rows = Some(new_rows);
    for (k, line) in exec.lines.iter().enumerate() {
        if removed.first() == Some(&k) {
            rows.extend(new_rows.take().into_iter().flatten());
        }
        if !removed.contains(&k) {
            rows.push((line.body.clone(), line.suffix.as_deref()));
        }
    }
    rows.extend(new_rows.into_iter().flatten());
    Ok(with_command(text, &exec, rows))
}

/// `text` with the lines of `exec`'s arguments replaced by `rows` (each a line without its
/// continuation backslash, and the one it had, if any): every line but the last continues.
fn with_command(text: &str, exec: &ExecStart, rows: Vec<(String, Option<&str>)>) -> String {
    let rows = std::iter::once((exec.first.clone(), Some(exec.first_suffix.as_str()))).chain(rows);
    let rows: Vec<_> = rows.collect();
    let last = rows.len() - 1;
    let command: Vec<String> = rows
        .into_iter()
        .enumerate()
        .map(|(i, (body, suffix))| match (i == last, suffix) {
            (true, _) => body,
            (false, Some(suffix)) => format!("{body}{suffix}"),
            (false, None) => format!("{body} \\"),
        })
        .collect();
    let mut out: Vec<String> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i == exec.start {
            out.extend(command.iter().cloned());
        } else if i < exec.start || i > exec.end {
            out.push(line.to_string());
        }
    }
    arglist::join_lines(out, text)
}

/// The `ExecStart=` command and its continuation lines (`start..=end` in the text).
struct ExecStart {
    start: usize,
    end: usize,
    /// The `ExecStart=` line without its backslash, and the backslash with the spaces before it.
    first: String,
    first_suffix: String,
    /// Each continuation line, one argument each.
    lines: Vec<ArgLine>,
    found: Vec<Found>,
}

struct ArgLine {
    indent: String,
    body: String,
    /// The backslash and the spaces before it; `None` on the command's last line.
    suffix: Option<String>,
}

fn exec_start(text: &str) -> Result<ExecStart, TextError> {
    arglist::refuse_carriage_returns(text)?;
    let lines: Vec<&str> = text.lines().collect();
    let mut section = "";
    let mut starts = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') && trimmed.ends_with(']') {
            section = trimmed;
        } else if section == "[Service]"
            && trimmed.split_once('=').map(|(k, _)| k.trim()) == Some("ExecStart")
        {
            starts.push(i);
        }
    }
    let start = match starts[..] {
        [start] => start,
        [] => return Err(unsupported("no ExecStart= line in a [Service] section")),
        _ => {
            return Err(unsupported(
                "several ExecStart= lines; keyrot edits a unit with one",
            ));
        }
    };

    let (first, first_suffix) = split_continuation(lines[start]);
    let Some(first_suffix) = first_suffix else {
        return Err(unsupported(
            "ExecStart= has no continuation lines; keyrot edits units that give each flag its \
             own line (`  --flag=value \\`)",
        ));
    };
    let command = first.split_once('=').map_or("", |(_, c)| c);
    if let Some(token) = command
        .split_whitespace()
        .find(|token| is_issuer_flag(token))
    {
        return Err(unsupported(&format!(
            "`{token}` is on the ExecStart= line itself; put it on its own continuation line"
        )));
    }

    let mut arg_lines = Vec::new();
    let mut found = Vec::new();
    let mut end = start;
    loop {
        end += 1;
        let Some(line) = lines.get(end) else {
            return Err(unsupported(
                "the file ends in the middle of ExecStart= (a last line ending with `\\`)",
            ));
        };
        let trimmed = line.trim_start();
        if trimmed.starts_with('#') || trimmed.starts_with(';') {
            return Err(unsupported(
                "a comment inside ExecStart='s continuation lines; systemd versions differ on \
                 those, remove it",
            ));
        }
        let (body, suffix) = split_continuation(line);
        let tokens: Vec<&str> = body.split_whitespace().collect();
        let arg = match tokens[..] {
            [token] => match token.strip_prefix("--") {
                Some(arg) => arglist::classify(arg)?,
                None => None,
            },
            _ => {
                if let Some(token) = tokens.iter().find(|t| is_issuer_flag(t)) {
                    return Err(unsupported(&format!(
                        "`{token}` shares its line with other arguments; keyrot edits units \
                         that give each flag its own line"
                    )));
                }
                None
            }
        };
        if let Some((_, value)) = &arg {
            refuse_expansions(value)?;
        }
        found.push(arg);
        arg_lines.push(ArgLine {
            indent: body[..body.len() - body.trim_start().len()].to_string(),
            body: body.to_string(),
            suffix: suffix.map(str::to_string),
        });
        if suffix.is_none() {
            break;
        }
    }
    Ok(ExecStart {
        start,
        end,
        first: first.to_string(),
        first_suffix: first_suffix.to_string(),
        lines: arg_lines,
        found,
    })
}

/// A line split before its continuation backslash (and the spaces before it), if it has one.
fn split_continuation(line: &str) -> (&str, Option<&str>) {
    match line.trim_end().strip_suffix('\\') {
        Some(body) => {
            let body = body.trim_end();
            (body, Some(&line[body.len()..]))
        }
        None => (line, None),
    }
}

fn is_issuer_flag(token: &str) -> bool {
    let name = token.trim_start_matches('-');
    let name = name.split_once('=').map_or(name, |(n, _)| n);
    token.starts_with("--") && Flag::ALL.iter().any(|flag| flag.name() == name)
}

/// systemd expands `%` specifiers and `$VARIABLES` in ExecStart=, and strips quotes: a value
/// with any of them would not reach kube-apiserver as written.
fn refuse_expansions(value: &str) -> Result<(), TextError> {
    match value
        .chars()
        .find(|c| matches!(c, '%' | '$' | '"' | '\'' | '\\'))
    {
        Some(c) => Err(unsupported(&format!(
            "`{value}` contains `{c}`, which systemd interprets in ExecStart=; edit it by hand"
        ))),
        None => Ok(()),
    }
}

fn unsupported(reason: &str) -> TextError {
    TextError::Unsupported(reason.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add() -> MigrationStep {
        MigrationStep::AddNewIssuerFirst {
            new_issuer: "https://oidc.example.com/hw".into(),
            new_jwks_uri: "https://oidc.example.com/hw/openid/v1/jwks".into(),
        }
    }

    #[test]
    fn an_issuer_on_the_last_line_gets_a_backslash_and_the_new_last_line_none() {
        let unit = "[Service]\nExecStart=/usr/bin/kube-apiserver \\\n    --v=2 \\\n    --service-account-issuer=https://old.example\nRestart=always\n";
        let edit = edit_text(unit, &add()).unwrap();
        assert_eq!(
            edit.text,
            "[Service]
ExecStart=/usr/bin/kube-apiserver \\
    --v=2 \\
    --service-account-issuer=https://oidc.example.com/hw \\
    --service-account-issuer=https://old.example \\
    --service-account-jwks-uri=https://oidc.example.com/hw/openid/v1/jwks \\
    --api-audiences=https://oidc.example.com/hw,https://old.example
Restart=always
"
        );
    }

    #[test]
    fn a_flag_sharing_its_line_is_refused() {
        let unit = "[Service]\nExecStart=/usr/bin/kube-apiserver \\\n  --v=2 --service-account-issuer=https://a\n";
        let err = edit_text(unit, &add()).unwrap_err();
        assert!(err.to_string().contains("shares its line"), "{err}");
    }

    #[test]
    fn a_percent_sign_in_a_value_is_refused() {
        let unit = "[Service]\nExecStart=/usr/bin/kube-apiserver \\\n  --service-account-issuer=https://a.example/%41\n";
        let err = edit_text(unit, &add()).unwrap_err();
        assert!(err.to_string().contains("systemd interprets"), "{err}");
    }
}
