//! The ledger's rules, on the store itself: one record per dimension per hour, what is carried, what a restart resends.

use super::store::*;
use crate::config::scrape::Kind;

const H: u64 = 3_600_000;

fn memory() -> redb::Database {
    open(None).unwrap().0
}

fn add_at(db: &redb::Database, hour_ms: u64, dimension: &str, quantity: u64) {
    add_tagged(db, hour_ms, dimension, quantity, "");
}

fn add_tagged(db: &redb::Database, hour_ms: u64, dimension: &str, quantity: u64, tags: &str) {
    let answers = add(
        db,
        &[Increment {
            hour_ms,
            dimension: dimension.into(),
            quantity,
            tags: tags.into(),
        }],
    )
    .unwrap();
    answers[0].as_ref().unwrap();
}

fn rules(now_ms: u64) -> Rules {
    Rules {
        now_ms,
        hour_ms: H,
        flush: false,
        send_zero: false,
        dimensions: vec!["nodes".into(), "gb".into()],
    }
}

fn pending(hour_ms: u64, dimension: &str, quantity: u64) -> Pending {
    Pending {
        hour_ms,
        dimension: dimension.into(),
        quantity,
        uncertain: false,
        allocations: Vec::new(),
    }
}

fn recorded(id: &str) -> Answer {
    Answer::Recorded {
        record_id: id.into(),
        request_id: None,
    }
}

#[test]
fn each_closed_hour_is_one_record_per_dimension_and_the_open_hour_waits() {
    let db = memory();
    let t0 = 100 * H;
    add_at(&db, t0, "nodes", 2);
    add_at(&db, t0, "nodes", 3);
    add_at(&db, t0, "gb", 7);
    add_at(&db, t0 + H, "nodes", 1);
    let planned = plan(&db, &rules(t0 + H + 5)).unwrap();
    assert_eq!(planned, [pending(t0, "gb", 7), pending(t0, "nodes", 5)]);
    // Planned again (no answer yet): the same records, nothing new.
    assert_eq!(plan(&db, &rules(t0 + H + 6)).unwrap(), planned);
    for p in &planned {
        assert!(settle(&db, p, &recorded("r")).unwrap().is_some());
    }
    assert!(plan(&db, &rules(t0 + H + 7)).unwrap().is_empty());
    // The open hour's 1 node is sent once it closes.
    assert_eq!(
        plan(&db, &rules(t0 + 2 * H)).unwrap(),
        [pending(t0 + H, "nodes", 1)]
    );
}

#[test]
fn a_locked_hour_s_usage_goes_into_the_next_hour_s_record() {
    let db = memory();
    let t0 = 100 * H;
    let start = Sent {
        quantity: 0,
        how: "start".into(),
        metering_record_id: Some("start".into()),
        request_id: None,
    };
    lock(&db, t0, "nodes", &start).unwrap();
    add_at(&db, t0, "nodes", 4);
    add_at(&db, t0, "gb", 1);
    // nodes' hour is locked: carried to the next closed hour; gb is sent for its own.
    assert_eq!(plan(&db, &rules(t0 + H)).unwrap(), [pending(t0, "gb", 1)]);
    add_at(&db, t0 + H, "nodes", 1);
    let next = plan(&db, &rules(t0 + 2 * H)).unwrap();
    assert!(next.contains(&pending(t0 + H, "nodes", 5)), "{next:?}");
}

#[test]
fn a_duplicate_is_carried_and_never_sent_twice_for_its_hour() {
    let db = memory();
    let t0 = 100 * H;
    add_at(&db, t0, "nodes", 3);
    let p = plan(&db, &rules(t0 + H)).unwrap().remove(0);
    let sent = settle(&db, &p, &Answer::Duplicate { request_id: None })
        .unwrap()
        .unwrap();
    assert_eq!(sent.how, "duplicate");
    // Late usage for that hour is carried too; both join the next hour's record.
    add_at(&db, t0, "nodes", 1);
    let next = plan(&db, &rules(t0 + 2 * H)).unwrap();
    assert_eq!(next, [pending(t0 + H, "nodes", 4)]);
}

#[test]
fn out_of_the_window_is_carried_unless_an_answer_may_have_been_lost() {
    let db = memory();
    let t0 = 100 * H;
    add_at(&db, t0, "nodes", 3);
    add_at(&db, t0, "gb", 2);
    let planned = plan(&db, &rules(t0 + H)).unwrap();
    let (gb, nodes) = (&planned[0], &planned[1]);
    // nodes' attempt got no answer: it may be billed.
    settle(
        &db,
        nodes,
        &Answer::Failed {
            maybe_recorded: true,
        },
    )
    .unwrap();
    let out = Answer::OutOfWindow { request_id: None };
    assert_eq!(settle(&db, nodes, &out).unwrap().unwrap().how, "unknown");
    assert_eq!(settle(&db, gb, &out).unwrap().unwrap().how, "out-of-window");
    let next = plan(&db, &rules(t0 + 2 * H)).unwrap();
    assert_eq!(next, [pending(t0 + H, "gb", 2)]);
}

#[test]
fn an_outage_longer_than_the_window_carries_the_usage_forward() {
    let db = memory();
    let t0 = 100 * H;
    add_at(&db, t0, "nodes", 3);
    // Planned, then throttled (nothing recorded) until the hour left the window.
    plan(&db, &rules(t0 + H)).unwrap();
    let later = t0 + 7 * H + 1;
    let next = plan(&db, &rules(later)).unwrap();
    assert_eq!(next, [pending(t0 + 6 * H, "nodes", 3)]);
}

#[test]
fn a_flush_sends_the_partial_hour_and_later_usage_of_it_is_carried() {
    let db = memory();
    let t0 = 100 * H;
    add_at(&db, t0, "nodes", 2);
    let flush = Rules {
        flush: true,
        ..rules(t0 + 10)
    };
    let p = plan(&db, &flush).unwrap();
    assert_eq!(p, [pending(t0, "nodes", 2)]);
    settle(&db, &p[0], &recorded("r1")).unwrap();
    add_at(&db, t0, "nodes", 5);
    assert!(plan(&db, &rules(t0 + 20)).unwrap().is_empty());
    assert_eq!(
        plan(&db, &rules(t0 + 2 * H)).unwrap(),
        [pending(t0 + H, "nodes", 5)]
    );
}

#[test]
fn a_record_over_meter_usage_s_bound_is_capped_and_the_rest_carried() {
    let db = memory();
    let t0 = 100 * H;
    add_at(&db, t0, "nodes", MAX_QUANTITY + 10);
    let p = plan(&db, &rules(t0 + H)).unwrap();
    assert_eq!(p, [pending(t0, "nodes", MAX_QUANTITY)]);
    settle(&db, &p[0], &recorded("r")).unwrap();
    assert_eq!(
        plan(&db, &rules(t0 + 2 * H)).unwrap(),
        [pending(t0 + H, "nodes", 10)]
    );
}

#[test]
fn send_zero_records_zero_for_dimensions_without_usage() {
    let db = memory();
    let t0 = 100 * H;
    add_at(&db, t0, "nodes", 1);
    let zero = Rules {
        send_zero: true,
        ..rules(t0 + H)
    };
    assert_eq!(
        plan(&db, &zero).unwrap(),
        [pending(t0, "gb", 0), pending(t0, "nodes", 1)]
    );
}

#[test]
fn a_reopened_ledger_keeps_every_increment_and_resends_what_was_planned_as_it_was() {
    let dir = std::env::temp_dir().join(format!("mpgate-ledger-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let t0 = 100 * H;
    {
        let (db, repaired) = open(Some(&dir)).unwrap();
        assert!(!repaired, "a new file");
        add_at(&db, t0, "nodes", 3);
        add_at(&db, t0 + H, "gb", 4);
        plan(&db, &rules(t0 + H)).unwrap();
    }
    // Closed (dropped) cleanly: no repair at the next open.
    let (db, repaired) = open(Some(&dir)).unwrap();
    assert!(!repaired);
    let again = plan(&db, &rules(t0 + H + 1)).unwrap();
    assert_eq!(
        again,
        [Pending {
            uncertain: true,
            ..pending(t0, "nodes", 3)
        }]
    );
    let snapshot = snapshot(&db, t0 + H).unwrap();
    assert_eq!(snapshot.unsent().get("gb"), Some(&4));
    assert_eq!(snapshot.unsent().get("nodes"), Some(&3));
    drop(db);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tagged_usage_becomes_allocations_that_sum_to_the_record_and_are_carried_with_their_tags() {
    let db = memory();
    let t0 = 100 * H;
    let blue = r#"{"team":"blue"}"#;
    add_tagged(&db, t0, "gb", 3, blue);
    add_tagged(&db, t0, "gb", 2, blue);
    add_at(&db, t0, "gb", 4);
    add_at(&db, t0, "nodes", 1);
    let planned = plan(&db, &rules(t0 + H)).unwrap();
    let gb = Pending {
        allocations: vec![(String::new(), 4), (blue.to_string(), 5)],
        ..pending(t0, "gb", 9)
    };
    assert_eq!(planned, [gb.clone(), pending(t0, "nodes", 1)]);
    // A duplicate carries each tag set on; the next record allocates them again.
    settle(&db, &gb, &Answer::Duplicate { request_id: None }).unwrap();
    add_tagged(&db, t0 + H, "gb", 1, blue);
    let next = plan(&db, &rules(t0 + 2 * H)).unwrap();
    assert!(
        next.contains(&Pending {
            allocations: vec![(String::new(), 4), (blue.to_string(), 6)],
            ..pending(t0 + H, "gb", 10)
        }),
        "{next:?}"
    );
}

fn scraped(hour_ms: u64, dimension: &str, kind: Kind, factor: f64, value: f64) -> Sample {
    Sample {
        hour_ms,
        dimension: dimension.into(),
        kind,
        factor,
        value,
        prior: Prior::Last,
    }
}

#[test]
fn a_scraped_hour_becomes_its_aggregate_rounded_up_once_the_hour_closes() {
    let db = memory();
    let t0 = 100 * H;
    // nodes: the mean of 1 and 2 gauge samples (1.5, so 2 units); gb: a counter's
    // increases of 0.1 and 0.2, times 10 (3 units, not 4: float error is not billed).
    sample(
        &db,
        &[
            scraped(t0, "nodes", Kind::Avg, 1.0, 1.0),
            scraped(t0, "gb", Kind::Counter, 10.0, 0.1),
        ],
    )
    .unwrap();
    sample(
        &db,
        &[
            scraped(t0, "nodes", Kind::Avg, 1.0, 2.0),
            scraped(t0, "gb", Kind::Counter, 10.0, 0.3),
        ],
    )
    .unwrap();
    // The open hour waits; the samples are durable, not yet usage.
    assert!(plan(&db, &rules(t0 + 10)).unwrap().is_empty());
    assert_eq!(
        plan(&db, &rules(t0 + H + 10)).unwrap(),
        [pending(t0, "gb", 3), pending(t0, "nodes", 2)]
    );
    // A counter below its last value was reset: all of it is new.
    sample(&db, &[scraped(t0 + H, "gb", Kind::Counter, 1.0, 0.25)]).unwrap();
    let snap = snapshot(&db, t0 + H).unwrap();
    let open: Vec<_> = snap.lines.iter().filter(|l| l.state == "open").collect();
    assert_eq!(open.len(), 1, "{snap:?}");
    assert!(open[0].scraped && open[0].quantity == 1, "{snap:?}");
}
