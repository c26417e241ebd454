//! What the Debian package ships, checked without building it: the maintainer scripts, the asset
//! list, the man pages and completions (`scripts/package.sh --check` builds and installs it).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Runs a maintainer script as dpkg does for another root (`dpkg --root`): with DPKG_ROOT set.
fn maintainer_script(script: &str, argument: &str, root: &Path) {
    let run = Command::new("sh")
        .arg(repo(&format!("packaging/debian/{script}")))
        .arg(argument)
        .env("DPKG_ROOT", root)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{script} {argument}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
}

fn mode_and_owner(path: &Path) -> (u32, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.permissions().mode() & 0o7777, meta.uid())
}

fn keyrot(args: &[&str]) -> String {
    let run = Command::new(env!("CARGO_BIN_EXE_keyrot"))
        .args(args)
        .output()
        .unwrap();
    assert!(run.status.success(), "keyrot {args:?}: {run:?}");
    String::from_utf8(run.stdout).unwrap()
}

/// The commands, from `keyrot --help`.
fn commands() -> Vec<String> {
    let names = listed_commands(&keyrot(&["--help"]));
    assert!(names.len() > 10, "{names:?}");
    names
}

/// The subcommands of `command` (none for most).
fn subcommands(command: &str) -> Vec<String> {
    let help = keyrot(&[command, "--help"]);
    match help.contains("Commands:\n") {
        true => listed_commands(&help),
        false => Vec::new(),
    }
}

/// The names in a `--help` text's Commands: section, `help` left out.
fn listed_commands(help: &str) -> Vec<String> {
    let listed = help
        .split("Commands:\n")
        .nth(1)
        .and_then(|rest| rest.split("\n\n").next())
        .expect("a Commands: section");
    let names: Vec<String> = listed
        .lines()
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect();
    names
}

#[test]
fn postinst_makes_the_plan_and_state_directories_root_only() {
    let root = tempfile::tempdir().unwrap();
    // A state directory left readable by an earlier manual install is narrowed too.
    let state = root.path().join("var/lib/keyrot");
    std::fs::create_dir_all(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();

    maintainer_script("postinst", "configure", root.path());
    for dir in ["etc/keyrot", "var/lib/keyrot"] {
        assert_eq!(mode_and_owner(&root.path().join(dir)), (0o700, 0), "{dir}");
    }
}

#[test]
fn purge_deletes_the_state_and_keeps_the_operators_plan() {
    let root = tempfile::tempdir().unwrap();
    maintainer_script("postinst", "configure", root.path());
    let plan = root.path().join("etc/keyrot/plan.yaml");
    std::fs::write(&plan, "cluster: x\n").unwrap();
    let state = root.path().join("var/lib/keyrot");
    std::fs::write(state.join("state.json"), "{}").unwrap();

    maintainer_script("postrm", "remove", root.path());
    assert!(
        state.join("state.json").exists(),
        "remove deleted the state"
    );
    maintainer_script("postrm", "purge", root.path());
    assert!(!state.exists(), "purge kept the state");
    assert!(plan.exists(), "purge deleted the operator's plan");
}

#[test]
fn the_unit_runs_the_binary_where_the_package_puts_it() {
    let unit = read("systemd/keyrot.service");
    assert!(
        unit.lines()
            .any(|l| l == "ExecStart=/usr/bin/keyrot run -c /etc/keyrot/plan.yaml"),
        "{unit}"
    );
    let manifest = read("Cargo.toml");
    assert!(manifest.contains(r#"["target/release/keyrot", "usr/bin/", "755"]"#));
    assert!(
        manifest.contains(
            r#"["systemd/keyrot.service", "usr/lib/systemd/system/keyrot.service", "644"]"#
        )
    );
    // cargo-deb adds the enable-and-start snippets only for `systemd-units`: the unit stays off.
    assert!(!manifest.contains("systemd-units"));
}

#[test]
fn every_packaged_file_exists_or_is_generated_by_the_package_script() {
    let manifest = read("Cargo.toml");
    let assets = manifest
        .split("\nassets = [\n")
        .nth(1)
        .and_then(|rest| rest.split("\n]").next())
        .expect("an assets list");
    let script = read("scripts/package.sh");
    let mut sources = 0;
    for line in assets.lines() {
        let source = line.trim().trim_start_matches("[\"");
        let source = &source[..source.find('"').expect("a quoted source")];
        sources += 1;
        if let Some(name) = source.strip_prefix("target/package/generated/completions/") {
            assert!(
                script.contains(&format!("\"$generated/completions/{name}\"")),
                "scripts/package.sh does not write {name}"
            );
        } else if source.starts_with("target/") {
            // The binary and the man pages: built by scripts/package.sh.
            continue;
        } else {
            let (dir, pattern) = source.rsplit_once('/').unwrap_or((".", source));
            let suffix = pattern.strip_prefix('*').unwrap_or(pattern);
            let found = std::fs::read_dir(repo(dir))
                .unwrap()
                .flatten()
                .filter(|e| {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if pattern.starts_with('*') {
                        name.ends_with(suffix)
                    } else {
                        name == pattern
                    }
                })
                .count();
            assert!(found > 0, "{source} matches no file");
        }
    }
    assert!(sources >= 9, "{assets}");
    for script in ["postinst", "postrm"] {
        let path = repo(&format!("packaging/debian/{script}"));
        let (mode, _) = mode_and_owner(&path);
        assert_eq!(mode & 0o111, 0o111, "{script} is not executable");
    }
}

#[test]
fn man_pages_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("man");
    keyrot(&["man", "--out-dir", &out.display().to_string()]);
    let mut pages: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    pages.sort();
    // A command with subcommands gets a page for each of them too.
    let mut want: Vec<String> = commands()
        .iter()
        .flat_map(|c| {
            let nested: Vec<String> = subcommands(c)
                .iter()
                .map(|sub| format!("keyrot-{c}-{sub}.1"))
                .collect();
            nested.into_iter().chain([format!("keyrot-{c}.1")])
        })
        .chain(["keyrot.1".to_string()])
        .collect();
    want.sort();
    assert_eq!(pages, want);
    let doctor = std::fs::read_to_string(out.join("keyrot-doctor.1")).unwrap();
    assert!(doctor.contains(".TH keyrot-doctor 1"), "{doctor}");
    assert!(doctor.contains("\\-\\-kubeconfig"), "{doctor}");
    assert_eq!(mode_and_owner(&out.join("keyrot.1")).0, 0o644);
}

#[test]
fn completions_offer_every_command_in_each_shell() {
    let commands = commands();
    for shell in ["bash", "zsh", "fish"] {
        let script = keyrot(&["completions", shell]);
        for command in &commands {
            assert!(script.contains(command.as_str()), "{shell}: no {command}");
        }
    }
    // The bash script loads and registers itself.
    let dir = tempfile::tempdir().unwrap();
    let bash = dir.path().join("keyrot.bash");
    std::fs::write(&bash, keyrot(&["completions", "bash"])).unwrap();
    let run = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p keyrot", bash.display()))
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
}
