//! The ring as the API returns it (a clear error for anything but a keyrot ring, nothing
//! rewritten), the ring changes each node may make, membership, and the status people read.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use keyrot::decision::Gate;
use keyrot::decision::ha::{Expected, Joining, NewKey, RingChange, apply, expected_members};
use keyrot::ha::ring::{KeyRole, Ring, RingError};
use keyrot::keys::{Alg, GenerateSpec, SigningKey};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, 12, 0, 0).unwrap()
}

fn key() -> (String, String) {
    let key = SigningKey::generate(GenerateSpec::P256).unwrap();
    (key.public().kid().to_string(), key.public().to_spki_pem())
}

fn joining(kid: &str, pem: &str, address: Option<&str>) -> Joining {
    Joining {
        address: address.map(str::to_string),
        keys: vec![NewKey {
            kid: kid.into(),
            alg: Alg::ES256,
            public_key: pem.into(),
            role: KeyRole::Signing,
        }],
    }
}

/// A ring of `cp-1` and `cp-2` sharing one key, each with an address.
fn ring_of_two() -> Ring {
    let (kid, pem) = key();
    let ring = apply(
        None,
        &RingChange::Create(joining(&kid, &pem, Some("10.0.0.1"))),
        "cp-1",
        None,
        t0(),
    )
    .unwrap();
    apply(
        Some(&ring),
        &RingChange::Join(joining(&kid, &pem, Some("10.0.0.2"))),
        "cp-2",
        None,
        t0(),
    )
    .unwrap()
}

#[test]
fn a_ring_survives_its_own_rendering_and_a_shared_key_has_both_owners() {
    let ring = ring_of_two();
    let parsed = Ring::parse(&ring.render()).unwrap();
    assert_eq!(parsed, ring);
    assert_eq!(ring.keys.len(), 1);
    assert_eq!(
        ring.keys[0].owners,
        BTreeSet::from(["cp-1".into(), "cp-2".into()])
    );
}

#[test]
fn a_configmap_that_is_not_a_keyrot_ring_is_refused_with_the_reason() {
    let good = ring_of_two().render();
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "is not a keyrot ring"),
        ("{}".into(), "is not a keyrot ring"),
        (good.replace("\"format\": 1", "\"format\": 2"), "format 2"),
        (
            good.replace("\"leaderEpoch\"", "\"colour\": 1, \"leaderEpoch\""),
            "unknown field",
        ),
    ];
    for (text, expected) in cases {
        let error = Ring::parse(&text).unwrap_err().to_string();
        assert!(error.contains(expected), "{text:?}: {error}");
    }
    let mut twice = ring_of_two();
    twice.keys.push(twice.keys[0].clone());
    assert!(
        matches!(Ring::parse(&twice.render()), Err(RingError::Inconsistent(m)) if m.contains("listed twice"))
    );
    let mut swapped = ring_of_two();
    swapped.keys[0].public_key = key().1;
    assert!(
        matches!(Ring::parse(&swapped.render()), Err(RingError::Inconsistent(m)) if m.contains("holds"))
    );
}

#[test]
fn a_leader_change_needs_the_lease_and_a_deposed_leaders_epoch_is_refused() {
    let ring = ring_of_two();
    let start = RingChange::StartRotation {
        id: "r1".into(),
        cause: "schedule".into(),
    };
    assert!(
        apply(Some(&ring), &start, "cp-1", None, t0()).is_err(),
        "no Lease, no leader change"
    );
    let started = apply(Some(&ring), &start, "cp-1", Some(4), t0()).unwrap();
    assert_eq!(started.leader_epoch, 4);
    let stale = apply(
        Some(&started),
        &RingChange::EnterPhase(keyrot::decision::Phase::Stage),
        "cp-2",
        Some(3),
        t0(),
    );
    let error = stale.unwrap_err().0;
    assert!(error.contains("epoch 3 is older"), "{error}");
}

#[test]
fn the_restart_turn_is_one_nodes_at_a_time() {
    let ring = ring_of_two();
    let taken = apply(Some(&ring), &RingChange::TakeTurn, "cp-1", None, t0()).unwrap();
    assert!(
        apply(Some(&taken), &RingChange::TakeTurn, "cp-2", None, t0())
            .unwrap_err()
            .0
            .contains("cp-1 has the turn")
    );
    let release = RingChange::ReleaseTurn {
        serves: vec![],
        signs: None,
    };
    assert!(apply(Some(&taken), &release, "cp-2", None, t0()).is_err());
    let released = apply(Some(&taken), &release, "cp-1", None, t0()).unwrap();
    assert!(released.turn.is_none());
}

#[test]
fn removing_a_node_retires_its_own_keys_releases_its_turn_and_is_recorded() {
    let ring = ring_of_two();
    let (kid, pem) = key();
    // cp-3 joins with a key of its own, takes the turn, then dies.
    let ring = apply(
        Some(&ring),
        &RingChange::Join(joining(&kid, &pem, None)),
        "cp-3",
        None,
        t0(),
    )
    .unwrap();
    let ring = apply(Some(&ring), &RingChange::TakeTurn, "cp-3", None, t0()).unwrap();
    let later = t0() + TimeDelta::hours(1);
    let removed = apply(
        Some(&ring),
        &RingChange::RemoveNode {
            node: "cp-3".into(),
            by: "cp-1 (alice)".into(),
        },
        "cp-1",
        None,
        later,
    )
    .unwrap();
    assert!(!removed.members.contains_key("cp-3"));
    assert!(removed.turn.is_none());
    let own = removed.key(&kid).unwrap();
    assert_eq!(
        own.role,
        KeyRole::Retiring,
        "it may have signed tokens still in use"
    );
    assert_eq!(own.since, later);
    let shared = &removed.keys[0];
    assert_eq!(
        shared.role,
        KeyRole::Signing,
        "the others still sign with the shared key"
    );
    let record = removed.removals.last().unwrap();
    assert_eq!(
        (record.node.as_str(), record.by.as_str(), record.at),
        ("cp-3", "cp-1 (alice)", later)
    );
    assert_eq!(record.retired_kids, vec![kid]);
    // The plan still names cp-3: the removal keeps it out of the expected members.
    let named = Expected::Named(["cp-1", "cp-2", "cp-3"].map(String::from).into());
    assert_eq!(expected_members(&removed, &named).unwrap().len(), 2);
}

#[test]
fn discovered_apiservers_without_a_member_block_by_address_and_an_unreadable_list_blocks_too() {
    let ring = ring_of_two();
    let all = Expected::Addresses(Ok(vec!["10.0.0.1".into(), "10.0.0.2".into()]));
    assert_eq!(expected_members(&ring, &all).unwrap().len(), 2);
    let third = Expected::Addresses(Ok(vec![
        "10.0.0.1".into(),
        "10.0.0.2".into(),
        "10.0.0.3".into(),
    ]));
    let blocked = expected_members(&ring, &third).unwrap_err();
    assert_eq!(blocked.gate, Gate::Membership);
    assert!(blocked.reason.contains("10.0.0.3"), "{}", blocked.reason);
    let unreadable = Expected::Addresses(Err("403 Forbidden".into()));
    let blocked = expected_members(&ring, &unreadable).unwrap_err();
    assert!(
        blocked.reason.contains("403 Forbidden"),
        "{}",
        blocked.reason
    );
}

#[test]
fn a_node_joining_with_a_retired_shared_key_makes_it_signing_again() {
    // kubeadm join --control-plane brings the old shared key; the others must verify it.
    let ring = ring_of_two();
    let kid = ring.keys[0].kid.clone();
    let pem = ring.keys[0].public_key.clone();
    let mut retired = ring.clone();
    retired.keys[0].role = KeyRole::Retiring;
    retired.keys[0].owners.clear();
    let joined = apply(
        Some(&retired),
        &RingChange::Join(joining(&kid, &pem, None)),
        "cp-4",
        None,
        t0() + TimeDelta::days(1),
    )
    .unwrap();
    let key = joined.key(&kid).unwrap();
    assert_eq!(key.role, KeyRole::Signing);
    assert!(key.owners.contains("cp-4"));
}

#[test]
fn the_status_names_every_node_with_what_it_serves_signs_and_when_it_last_acknowledged() {
    let ring = ring_of_two();
    let ring = apply(
        Some(&ring),
        &RingChange::Ack {
            serves: vec![ring.keys[0].kid.clone()],
            signs: Some(ring.keys[0].kid.clone()),
        },
        "cp-2",
        None,
        t0(),
    )
    .unwrap();
    let plan = keyrot::plan::parse(
        std::path::Path::new("/etc/keyrot/plan.yaml"),
        "cluster: c\nflavour: kubeadm\nissuer: { url: \"https://oidc.example.com/c\" }\n\
         targets: [{ name: web, localDirectory: /var/www/oidc }]\n\
         ha: { nodeName: cp-1, members: [cp-1, cp-2, cp-3] }\n",
    )
    .unwrap();
    let expected = Expected::Named(["cp-1", "cp-2", "cp-3"].map(String::from).into());
    let ring = apply(
        Some(&ring),
        &RingChange::Request {
            by: "cp-2 (bob)".into(),
        },
        "cp-2",
        None,
        t0(),
    )
    .unwrap();
    let now = t0() + TimeDelta::minutes(2);
    let status =
        keyrot::ha::status::status(&plan, "cp-1", Some(ring.clone()), None, &expected, now);
    let text = keyrot::ha::status::render_text(&status, now);
    for line in [
        "  cp-1 (10.0.0.1)",
        "  cp-2 (10.0.0.2)",
        "requested by cp-2 (bob)",
        "leader: none",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(
        text.contains("last ack: 2026-03-01T12:00:00+00:00 (2m ago)"),
        "{text}"
    );
    assert!(text.contains("next: started rotation"), "{text}");
    // Once the rotation is started, cp-3 (named, never joined) blocks it by name.
    let started = apply(
        Some(&ring),
        &RingChange::StartRotation {
            id: "r".into(),
            cause: "requested".into(),
        },
        "cp-1",
        Some(1),
        now,
    )
    .unwrap();
    let status = keyrot::ha::status::status(&plan, "cp-1", Some(started), None, &expected, now);
    let text = keyrot::ha::status::render_text(&status, now);
    assert!(
        text.contains("waiting: membership: cp-3 named in ha.members never joined"),
        "{text}"
    );
}
