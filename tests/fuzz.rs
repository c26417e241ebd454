//! Fuzzing on stable Rust: the plan parser, the PEM reader, the state loader and the HA ring
//! parser fed mutations of the committed corpus (`fuzz/corpus/{plan,pem,state,ring}/`). Each
//! input must give Ok or a clean error, never a panic, and the file it was read from must be left
//! as it was.
//!
//! Mutations are proptest strategies over corpus entries (bit flips, inserted tokens, deletions,
//! duplications, splices from another entry), so failures shrink to a small input and persist
//! in `tests/fuzz.proptest-regressions`. `cargo test --test fuzz` runs a bounded number of cases
//! per target; `FUZZ_CASES=100000 cargo test --release --test fuzz` runs longer (see README).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use chrono::{TimeZone, Utc};
use keyrot::keys::SigningKey;
use keyrot::keys::reader::read_file;
use keyrot::state::{State, StateStore};
use proptest::prelude::*;
use proptest::sample::Index;

/// Cases per target in the normal test run: a few seconds in a debug build.
const CASES: u32 = 1500;

fn cases() -> u32 {
    std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(CASES)
}

fn corpus(kind: &str) -> &'static [Vec<u8>] {
    static PLAN: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static PEM: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static STATE: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    static RING: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    let cell = match kind {
        "plan" => &PLAN,
        "pem" => &PEM,
        "ring" => &RING,
        _ => &STATE,
    };
    cell.get_or_init(|| {
        let dir = Path::new("fuzz/corpus").join(kind);
        let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.unwrap().path())
            .collect();
        paths.sort();
        let entries: Vec<Vec<u8>> = paths.iter().map(|p| std::fs::read(p).unwrap()).collect();
        assert!(!entries.is_empty(), "{} is empty", dir.display());
        entries
    })
}

/// Tokens that matter to the three formats, inserted whole: a random byte seldom makes one.
const TOKENS: &[&str] = &[
    "-----BEGIN ",
    "-----END ",
    "PUBLIC KEY-----\n",
    "PRIVATE KEY-----\n",
    "EC PRIVATE KEY-----\n",
    "CERTIFICATE-----\n",
    "\n",
    "\r\n",
    ": ",
    "- ",
    "{",
    "}",
    "[",
    "]",
    "\"",
    ",",
    "&a ",
    "*a",
    "!!binary ",
    "null",
    "-1",
    "0",
    "18446744073709551616",
    "9999999999d",
    "999999999999h",
    "0 0 0 31 2 *",
    "@every 1s",
    "9999-12-31T23:59:59Z",
    "-262143-01-01T00:00:00Z",
    "\u{0}",
    "\u{1b}[2J",
    "é",
    "MII",
    "====",
];

#[derive(Debug, Clone)]
enum Mutation {
    FlipBit(Index, u8),
    Insert(Index, usize),
    Delete(Index, usize),
    Duplicate(Index, usize, Index),
    Splice(Index, Index, usize, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(at, bit)| Mutation::FlipBit(at, bit)),
        (any::<Index>(), 0..TOKENS.len()).prop_map(|(at, t)| Mutation::Insert(at, t)),
        (any::<Index>(), 1usize..64).prop_map(|(at, n)| Mutation::Delete(at, n)),
        (any::<Index>(), 1usize..64, any::<Index>())
            .prop_map(|(at, n, to)| Mutation::Duplicate(at, n, to)),
        (any::<Index>(), any::<Index>(), 1usize..256, any::<Index>())
            .prop_map(|(other, at, n, to)| Mutation::Splice(other, at, n, to)),
    ]
}

fn apply(mut data: Vec<u8>, mutation: &Mutation, corpus: &[Vec<u8>]) -> Vec<u8> {
    // Positions are taken modulo the length at the time, so every mutation applies.
    let at = |i: &Index, data: &[u8]| i.index(data.len() + 1);
    match mutation {
        Mutation::FlipBit(i, bit) if !data.is_empty() => {
            let i = i.index(data.len());
            data[i] ^= 1 << bit;
        }
        Mutation::FlipBit(..) => {}
        Mutation::Insert(i, token) => {
            let i = at(i, &data);
            data.splice(i..i, TOKENS[*token].bytes());
        }
        Mutation::Delete(i, n) => {
            let i = at(i, &data);
            let end = (i + n).min(data.len());
            data.drain(i..end);
        }
        Mutation::Duplicate(i, n, to) => {
            let i = at(i, &data);
            let piece = data[i..(i + n).min(data.len())].to_vec();
            let to = at(to, &data);
            data.splice(to..to, piece);
        }
        Mutation::Splice(other, i, n, to) => {
            let other = &corpus[other.index(corpus.len())];
            let i = at(i, other);
            let piece = &other[i..(i + n).min(other.len())];
            let to = at(to, &data);
            data.splice(to..to, piece.iter().copied());
        }
    }
    data
}

/// A corpus entry with up to eight mutations (none: the entry itself).
fn input(kind: &'static str) -> impl Strategy<Value = Vec<u8>> {
    let entries = corpus(kind);
    (0..entries.len(), prop::collection::vec(mutation(), 0..8)).prop_map(
        move |(entry, mutations)| {
            mutations
                .iter()
                .fold(entries[entry].clone(), |data, m| apply(data, m, entries))
        },
    )
}

/// Runs `read` on `data` written at `path`, then checks the file is as it was: a loader reads,
/// it never repairs or rewrites.
fn read_untouched<T>(path: &Path, data: &[u8], read: impl FnOnce(&Path) -> T) -> T {
    std::fs::write(path, data).unwrap();
    let out = read(path);
    assert_eq!(
        std::fs::read(path).unwrap(),
        data,
        "{} changed",
        path.display()
    );
    out
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn plans_load_or_fail_cleanly(data in input("plan")) {
        let dir = tempfile::tempdir().unwrap();
        let loaded = read_untouched(&dir.path().join("plan.yaml"), &data, |path| {
            keyrot::plan::load(path)
        });
        match loaded {
            // A plan that loads is used: its schedule and timings must not overflow later.
            Ok(plan) => {
                let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
                keyrot::decision::next_rotation_due(&plan, &State::default(), now);
                keyrot::decision::retry_time(&plan, u32::MAX, now);
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn pem_files_read_or_fail_cleanly(data in input("pem")) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        if let Ok(report) = read_untouched(&path, &data, read_file) {
            for key in report.keys() {
                prop_assert!(!key.kid().is_empty());
                let _ = key.describe();
            }
            let _: Vec<String> = report.warnings().collect();
            let _ = keyrot::documents::render_jwks(&report.keys().cloned().collect::<Vec<_>>());
        }
        if let Err(e) = read_untouched(&path, &data, SigningKey::from_pem_file) {
            prop_assert!(!e.to_string().is_empty());
        }
    }

    /// A ring as a ConfigMap hands it over (the API is input too): parsed or refused with a
    /// reason, and a ring that parses is one every node can decide on and show.
    #[test]
    fn rings_parse_or_fail_cleanly(data in input("ring")) {
        let text = String::from_utf8_lossy(&data);
        match keyrot::ha::ring::Ring::parse(&text) {
            Ok(ring) => {
                let plan = ring_plan();
                let now = Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap();
                let expected = keyrot::decision::ha::Expected::Named(Default::default());
                let status = keyrot::ha::status::status(plan, "cp-1", Some(ring.clone()), None, &expected, now);
                let _ = keyrot::ha::status::render_text(&status, now);
                // Every node decides on it too: here a node whose files hold the ring's keys.
                let ids: Vec<keyrot::decision::KeyId> = ring
                    .keys
                    .iter()
                    .map(|k| keyrot::decision::KeyId { kid: k.kid.clone(), alg: k.alg })
                    .collect();
                let kids: Vec<String> = ids.iter().map(|k| k.kid.clone()).collect();
                let local = keyrot::decision::ha::LocalView {
                    bundle: Some(ids.clone()),
                    signing: ids.first().cloned(),
                    public_keys: Default::default(),
                    private_keys: Vec::new(),
                    apiserver: keyrot::decision::Probed::Seen(kids.clone()),
                    token_kid: keyrot::decision::Probed::Seen(kids.first().cloned().unwrap_or_default()),
                    targets: Vec::new(),
                };
                for (me, leading) in [("cp-1", Some(ring.leader_epoch)), ("cp-2", None), ("cp-9", None)] {
                    let observed = keyrot::decision::ha::HaObserved {
                        me,
                        address: None,
                        ring: Some(&ring),
                        expected: &expected,
                        local: &local,
                        leading,
                    };
                    let _ = keyrot::decision::ha::decide(plan, &observed, now);
                }
                prop_assert_eq!(keyrot::ha::ring::Ring::parse(&ring.render()), Ok(ring));
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn state_files_load_or_fail_cleanly(data in input("state")) {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        let loaded = read_untouched(&store.state_path(), &data, |_| store.read());
        if let Err(e) = loaded {
            prop_assert!(!e.to_string().is_empty());
        }
    }
}

/// An HA plan for deciding on fuzzed rings.
fn ring_plan() -> &'static keyrot::plan::Plan {
    static PLAN: OnceLock<keyrot::plan::Plan> = OnceLock::new();
    PLAN.get_or_init(|| {
        keyrot::plan::parse(
            Path::new("/etc/keyrot/plan.yaml"),
            "cluster: c\nflavour: kubeadm\nissuer: { url: \"https://oidc.example.com/c\" }\n\
             targets: [{ name: web, localDirectory: /var/www/oidc }]\n\
             schedule: { cron: \"0 3 * * SUN\" }\n\
             ha: { nodeName: cp-1, members: [cp-1, cp-2] }\n",
        )
        .unwrap()
    })
}

/// The corpus itself loads the way its names say: the fuzzing starts from inputs that reach deep.
#[test]
fn the_corpus_reaches_past_the_parsers() {
    let plans_that_load = std::fs::read_dir("fuzz/corpus/plan")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| keyrot::plan::load(p).is_ok())
        .count();
    assert!(plans_that_load >= 4, "{plans_that_load} plans load");
    for entry in std::fs::read_dir("fuzz/corpus/state").unwrap() {
        let path = entry.unwrap().path();
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::new(dir.path());
        std::fs::copy(&path, store.state_path()).unwrap();
        assert!(store.read().unwrap().is_some(), "{}", path.display());
    }
    assert!(corpus("pem").len() >= 20);
    for entry in std::fs::read_dir("fuzz/corpus/ring").unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            keyrot::ha::ring::Ring::parse(&text).is_ok(),
            "{}",
            path.display()
        );
    }
}
