//! Unit tests of one pool and the model test: any sequence of calls keeps every invariant.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, TimeDelta};
use proptest::prelude::*;
use uuid::Uuid;

use super::slots::Slot;
use super::timers::QUEUE_COMPACT_MIN;
use super::*;
use crate::session::{Lease, RetiredReason, Session, SessionId, SessionSettings, StatusReport, Timestamp};

pub(super) fn t0() -> Timestamp {
    DateTime::parse_from_rfc3339("2026-11-25T19:00:00Z").unwrap().with_timezone(&chrono::Utc)
}

pub(super) fn secs(s: i64) -> TimeDelta {
    TimeDelta::seconds(s)
}

fn pool_with(max_pool_size: u32, max_sessions: usize) -> Pool {
    let config = PoolConfig { max_pool_size, ..PoolConfig::default() };
    let mut pool = Pool::new("p", config, secs(600), Arc::new(SessionBudget::new(max_sessions)), t0());
    pool.seed(7);
    pool
}

pub(super) fn create(pool: &mut Pool, id: &str, settings: Option<SessionSettings>) -> SessionId {
    let new = NewSession { id: Some(id.into()), settings, ..NewSession::default() };
    pool.create(new, t0()).unwrap().id.clone()
}

#[test]
fn the_first_acquire_fills_the_pool() {
    let mut pool = pool_with(7, 100);
    pool.acquire(None, t0()).unwrap();
    assert_eq!(pool.counts(t0()), PoolCounts { sessions: 7, usable: 7, retired: 0, leased: 0 });
    pool.check_invariants();
}

#[test]
fn a_reused_slot_never_answers_for_its_former_session() {
    let mut pool = pool_with(1, 100);
    let first = pool.acquire(None, t0()).unwrap().id.clone();
    pool.delete(&first, t0()).unwrap();
    let second = create(&mut pool, "second", None);
    assert!(pool.get(&first, t0()).is_none());
    assert_eq!(pool.mark_good(&second, None, t0()).unwrap().usage_count, 1);
    create(&mut pool, &first, None);
    assert_eq!(pool.mark_good(&first, None, t0()).unwrap().usage_count, 1);
    assert_eq!(pool.get(&second, t0()).unwrap().usage_count, 1);
    pool.check_invariants();
}

#[test]
fn acquire_replaces_a_retired_session_and_never_returns_it() {
    let mut pool = pool_with(3, 100);
    let first = pool.acquire(None, t0()).unwrap().id.clone();
    pool.retire(&first, None, t0()).unwrap();
    let mut seen = HashSet::new();
    for _ in 0..200 {
        let s = pool.acquire(None, t0()).unwrap();
        assert_ne!(s.id, first);
        seen.insert(s.id.clone());
    }
    assert_eq!(seen.len(), 3, "every free session gets picked");
    assert_eq!(pool.counts(t0()), PoolCounts { sessions: 4, usable: 3, retired: 1, leased: 0 });
    pool.check_invariants();
}

#[test]
fn queues_drop_stale_entries_and_keep_live_ones() {
    let mut pool = pool_with(10, 100);
    let id = pool.acquire(None, t0()).unwrap().id.clone();
    for i in 0..10_000 {
        let session = pool.acquire(Some(secs(30 + i)), t0()).unwrap();
        let (leased, lease) = (session.id.clone(), session.lease.unwrap().id.to_string());
        pool.release(&leased, &lease, t0()).unwrap();
    }
    assert!(pool.lease_ends.len() <= 2 * QUEUE_COMPACT_MIN, "{} entries", pool.lease_ends.len());
    let lease = pool.acquire(Some(secs(5)), t0()).unwrap().lease.unwrap();
    assert!(pool.lease_ends.len() <= 2 * QUEUE_COMPACT_MIN);
    pool.tick(t0() + secs(5));
    assert_eq!(pool.counts(t0() + secs(5)).leased, 0, "the live lease {lease:?} survived compaction");
    pool.delete(&id, t0()).unwrap();
    pool.check_invariants();
}

#[test]
fn picks_are_uniform_among_free_sessions() {
    // (retired, leased) of 10 usable sessions. Retiring makes acquire top the pool up, so
    // retired and leased sessions sit among the free ones in the slab and the free vector.
    let cases = [(0, 0), (0, 2), (2, 0), (1, 1), (0, 5), (0, 7)];
    for (retired, leased) in cases {
        let mut pool = pool_with(10, 100);
        pool.acquire(None, t0()).unwrap();
        let mut unavailable: HashSet<SessionId> = HashSet::new();
        for _ in 0..retired {
            let id = pool.acquire(None, t0()).unwrap().id.clone();
            pool.retire(&id, None, t0()).unwrap();
            unavailable.insert(id);
        }
        for _ in 0..leased {
            unavailable.insert(pool.acquire(Some(secs(300)), t0()).unwrap().id.clone());
        }
        let draws = 500_000;
        let mut counts: HashMap<SessionId, u32> = HashMap::new();
        for _ in 0..draws {
            *counts.entry(pool.acquire(None, t0()).unwrap().id.clone()).or_default() += 1;
        }
        assert!(counts.keys().all(|id| !unavailable.contains(id)), "a leased or retired session was handed out");
        assert_eq!(counts.len(), 10 - leased, "every free session is picked");
        // Chi-square against the uniform distribution. 30 is far in the tail for at most 9
        // degrees of freedom (p < 0.001); 1% of the draws going to one session on top of its
        // share scores over 200 (225 with 3 free sessions, more with more).
        let expected = f64::from(draws) / counts.len() as f64;
        let chi2: f64 = counts.values().map(|&n| (f64::from(n) - expected).powi(2) / expected).sum();
        assert!(chi2 < 30.0, "{retired} retired, {leased} leased: chi-square {chi2:.1} over {counts:?}");
        pool.check_invariants();
    }
}

#[test]
fn leases_are_exclusive_and_end_on_time() {
    let mut pool = pool_with(2, 100);
    let a = pool.acquire(Some(secs(30)), t0()).unwrap().id.clone();
    let b = pool.acquire(Some(secs(2)), t0()).unwrap().id.clone();
    assert_ne!(a, b);
    assert_eq!(pool.acquire(None, t0()).unwrap_err(), PoolError::NoSessionAvailable);
    assert_eq!(pool.counts(t0()).leased, 2);
    let freed = pool.acquire(Some(secs(30)), t0() + secs(2)).unwrap();
    assert_eq!(freed.id, b, "the expired lease freed b");
    pool.check_invariants();
}

#[test]
fn a_lease_ends_only_with_its_own_id() {
    let mut pool = pool_with(1, 100);
    let session = pool.acquire(Some(secs(30)), t0()).unwrap();
    let (id, lease) = (session.id.clone(), session.lease.unwrap());
    let other = Uuid::new_v4().simple().to_string();
    assert!(matches!(pool.release(&id, &other, t0()), Err(PoolError::LeaseMismatch(_))));
    pool.mark_good(&id, Some(&other), t0()).unwrap();
    assert!(pool.get(&id, t0()).unwrap().lease.is_some(), "a stale id ends nothing");
    let session = pool.mark_good(&id, Some(&lease.id.simple().to_string()), t0()).unwrap();
    assert!(session.lease.is_none());
    assert_eq!(session.usage_count, 2);
    assert!(matches!(pool.release(&id, &lease.id.to_string(), t0()), Err(PoolError::LeaseMismatch(_))));
    pool.retire(&id, None, t0()).unwrap();
    assert!(pool.release(&id, "anything", t0()).is_ok(), "a late release on a retired session is fine");
    pool.check_invariants();
}

#[test]
fn expiry_retires_at_expires_at_and_retention_purges() {
    let mut pool = pool_with(0, 100);
    let short = SessionSettings { max_age_secs: 1.0, ..SessionSettings::default() };
    let id = create(&mut pool, "short", Some(short));
    assert_eq!(pool.counts(t0()).usable, 1);
    let later = t0() + secs(5);
    let session = pool.get(&id, later).unwrap();
    let retirement = session.retirement.unwrap();
    assert_eq!((retirement.reason, retirement.at), (RetiredReason::Expired, t0() + secs(1)));
    assert_eq!(pool.counts(later), PoolCounts { sessions: 1, usable: 0, retired: 1, leased: 0 });
    assert!(pool.get(&id, t0() + secs(600)).is_some(), "readable within the retention");
    assert!(pool.get(&id, t0() + secs(601)).is_none(), "purged after it");
    assert_eq!(pool.budget.held(), 0);
    pool.check_invariants();
}

#[test]
fn a_consume_only_pool_hands_out_what_a_producer_made() {
    let mut pool = pool_with(0, 100);
    assert_eq!(pool.acquire(None, t0()).unwrap_err(), PoolError::NoSessionAvailable);
    create(&mut pool, "warm", None);
    assert_eq!(&*pool.acquire(None, t0()).unwrap().id, "warm");
    assert_eq!(pool.len(), 1);
}

#[test]
fn explicit_sessions_may_exceed_the_pool_size_and_then_acquire_creates_nothing() {
    let mut pool = pool_with(2, 100);
    for i in 0..4 {
        create(&mut pool, &format!("s{i}"), None);
    }
    pool.acquire(None, t0()).unwrap();
    assert_eq!(pool.len(), 4);
}

#[test]
fn creating_an_existing_id_changes_nothing() {
    let mut pool = pool_with(0, 100);
    create(&mut pool, "a", None);
    let again = NewSession { id: Some("a".into()), ..NewSession::default() };
    assert_eq!(pool.create(again, t0()).unwrap_err(), PoolError::SessionExists("a".into()));
    assert_eq!((pool.len(), pool.budget.held()), (1, 1));
}

#[test]
fn listing_pages_in_id_order_by_state() {
    let mut pool = pool_with(0, 100);
    for id in ["d", "b", "a", "e", "c"] {
        create(&mut pool, id, None);
    }
    pool.retire("a", None, t0()).unwrap();
    let ids = |page: Vec<&Session>| page.iter().map(|s| s.id.to_string()).collect::<Vec<_>>();
    let (page, next) = pool.list(StateFilter::All, None, 2, t0());
    assert_eq!((ids(page), next.as_deref()), (vec!["a".to_string(), "b".into()], Some("b")));
    let (page, next) = pool.list(StateFilter::All, Some("b"), 2, t0());
    assert_eq!((ids(page), next.as_deref()), (vec!["c".to_string(), "d".into()], Some("d")));
    let (page, next) = pool.list(StateFilter::All, Some("d"), 2, t0());
    assert_eq!((ids(page), next), (vec!["e".to_string()], None));
    assert_eq!(ids(pool.list(StateFilter::Retired, None, 10, t0()).0), vec!["a"]);
    assert_eq!(pool.list(StateFilter::Usable, None, 10, t0()).0.len(), 4);
}

#[test]
fn proxies_are_sticky_round_robin_or_templated() {
    let mut pool = pool_with(3, 100);
    pool.reconfigure(PoolConfig {
        max_pool_size: 3,
        proxy_urls: vec!["http://a:1".into(), "http://b:2".into()],
        ..PoolConfig::default()
    });
    pool.acquire(None, t0()).unwrap();
    let mut urls: Vec<_> =
        pool.list(StateFilter::All, None, 10, t0()).0.iter().map(|s| s.proxy_url.clone().unwrap()).collect();
    urls.sort();
    assert_eq!(urls, ["http://a:1".into(), "http://a:1".into(), "http://b:2".into()] as [Box<str>; 3]);

    pool.reconfigure(PoolConfig {
        proxy_url_template: Some("http://user-session-{session_id}:pw@gate:7000".into()),
        ..PoolConfig::default()
    });
    let id = create(&mut pool, "abc", None);
    assert_eq!(pool.get(&id, t0()).unwrap().proxy_url.as_deref(), Some("http://user-session-abc:pw@gate:7000"));
    let new = NewSession { id: Some("own".into()), proxy_url: Some(None), ..NewSession::default() };
    assert_eq!(pool.create(new, t0()).unwrap().proxy_url, None, "an explicit null means no proxy");
}

#[test]
fn proxy_urls_are_validated_without_echoing_credentials() {
    assert!(validate_proxy_url("socks5h://user:pw@host:1080").is_ok());
    let err = validate_proxy_url("ftp://user:secret@host").unwrap_err();
    assert!(!err.contains("secret"));
    assert!(validate_proxy_url("not a url").is_err());
    let template = PoolConfig { proxy_url_template: Some("http://gate:1".into()), ..PoolConfig::default() };
    assert!(template.validate().is_err(), "a template without {{session_id}} is refused");
}

#[test]
fn changes_report_what_moved_since_the_last_call_only() {
    let mut pool = pool_with(0, 100);
    let first = pool.take_changes(usize::MAX);
    assert!(first.config_changed && first.upserted.is_empty());
    create(&mut pool, "a", None);
    create(&mut pool, "b", None);
    assert!(pool.take_changes(usize::MAX).upserted.len() == 2);
    assert!(pool.take_changes(usize::MAX).is_empty(), "nothing changed since");
    pool.mark_good("a", None, t0()).unwrap();
    pool.mark_good("a", None, t0()).unwrap();
    pool.delete("b", t0()).unwrap();
    let changes = pool.take_changes(usize::MAX);
    let upserted: Vec<&str> = changes.upserted.iter().map(|s| &*s.id).collect();
    assert_eq!(upserted, ["a"]);
    assert_eq!(changes.removed, vec![SessionId::from("b")]);
    pool.acquire(None, t0()).unwrap();
    assert!(pool.take_changes(usize::MAX).is_empty(), "an acquire without a lease changes no session");
    let key = pool.key();
    pool.clear();
    assert_ne!(pool.key(), key, "a cleared pool is a new incarnation in the state file");
}

#[test]
fn a_limited_take_hands_out_removals_before_any_upsert_and_the_newest_upserts_first() {
    let mut pool = pool_with(0, 100);
    pool.take_changes(usize::MAX);
    for id in ["a", "b", "c"] {
        create(&mut pool, id, None);
    }
    pool.take_changes(usize::MAX);
    pool.delete("a", t0()).unwrap();
    pool.delete("b", t0()).unwrap();
    create(&mut pool, "a", None);
    pool.mark_good("c", None, t0()).unwrap();
    assert_eq!(pool.pending_changes(), 4);

    let first = pool.take_changes(1);
    assert_eq!(first.removed, vec![SessionId::from("a")]);
    assert!(first.upserted.is_empty(), "the new `a` must not be written before the old one is removed");
    assert!(first.more);
    let second = pool.take_changes(2);
    assert_eq!(second.removed, vec![SessionId::from("b")]);
    let upserted: Vec<&str> = second.upserted.iter().map(|s| &*s.id).collect();
    assert_eq!(upserted, ["c"], "the newest change first");
    assert!(second.more);
    let third = pool.take_changes(2);
    let upserted: Vec<&str> = third.upserted.iter().map(|s| &*s.id).collect();
    assert_eq!(upserted, ["a"]);
    assert!(!third.more);
    assert_eq!(pool.pending_changes(), 0);
}

#[test]
fn adopted_sessions_keep_their_state_and_are_filed_by_it() {
    let mut pool = pool_with(5, 100);
    let mut retired = Session::new(SessionId::from("old"), Arc::new(SessionSettings::default()), t0());
    retired.usage_count = 7;
    retired.retire(RetiredReason::Blocked, t0());
    pool.adopt(retired, t0()).unwrap();
    let mut leased = Session::new(SessionId::from("busy"), Arc::new(SessionSettings::default()), t0());
    leased.lease = Some(Lease { id: Uuid::new_v4(), until: t0() + secs(30) });
    pool.adopt(leased, t0()).unwrap();
    assert_eq!(pool.counts(t0()), PoolCounts { sessions: 2, usable: 1, retired: 1, leased: 1 });
    assert_eq!(pool.get("old", t0()).unwrap().usage_count, 7);
    let dup = Session::new(SessionId::from("old"), Arc::new(SessionSettings::default()), t0());
    assert_eq!(pool.adopt(dup, t0()).unwrap_err(), PoolError::SessionExists("old".into()));
    assert_eq!(pool.counts(t0() + secs(31)).leased, 0, "the adopted lease ends on time");
    assert!(pool.get("old", t0() + secs(601)).is_none(), "an adopted retired session is purged too");
    pool.check_invariants();
}

#[test]
fn the_session_budget_is_shared_and_enforced() {
    let mut pool = pool_with(10, 3);
    pool.acquire(None, t0()).unwrap();
    assert_eq!(pool.len(), 3, "acquire fills only as far as the budget allows");
    let new = NewSession { id: Some("x".into()), ..NewSession::default() };
    assert!(matches!(pool.create(new, t0()), Err(PoolError::LimitReached(_))));
    let first = pool.list(StateFilter::All, None, 1, t0()).0[0].id.clone();
    pool.delete(&first, t0()).unwrap();
    create(&mut pool, "x", None);
    assert_eq!(pool.budget.held(), 3);
}

/// One call of the model test. `Take` is a persist cycle's take of at most `limit` changes, newest
/// first or in id order.
#[derive(Debug, Clone)]
enum Op {
    Acquire { lease_secs: Option<i64> },
    Create { max_age_secs: u8, max_usage: u8 },
    Good(usize),
    Bad(usize),
    Retire(usize),
    Release(usize),
    Delete(usize),
    Status { pick: usize, code: u16, mark: bool },
    Advance(u16),
    Take { limit: usize, by_id: bool },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => proptest::option::of(1i64..20).prop_map(|lease_secs| Op::Acquire { lease_secs }),
        1 => (1u8..30, 1u8..6).prop_map(|(max_age_secs, max_usage)| Op::Create { max_age_secs, max_usage }),
        2 => any::<usize>().prop_map(Op::Good),
        2 => any::<usize>().prop_map(Op::Bad),
        1 => any::<usize>().prop_map(Op::Retire),
        1 => any::<usize>().prop_map(Op::Release),
        1 => any::<usize>().prop_map(Op::Delete),
        1 => (any::<usize>(), prop_oneof![Just(200u16), Just(403), Just(500)], any::<bool>())
            .prop_map(|(pick, code, mark)| Op::Status { pick, code, mark }),
        2 => (0u16..5000).prop_map(Op::Advance),
        2 => (1usize..5, any::<bool>()).prop_map(|(limit, by_id)| Op::Take { limit, by_id }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Whatever happens, acquire hands out only usable, unleased sessions; counts add up; error
    /// scores stay >= 0; retirement is never undone; and the changes taken, applied in order to a
    /// copy as the persist thread applies them to its file, leave the copy equal to the pool.
    #[test]
    fn invariants_hold_under_any_sequence(ops in proptest::collection::vec(op(), 1..120), size in 0u32..6) {
        let mut pool = pool_with(size, 40);
        pool.retention = secs(10);
        let mut now = t0();
        let mut retired: HashSet<SessionId> = HashSet::new();
        let mut next_id = 0;
        let mut written: HashMap<SessionId, String> = HashMap::new();
        let mut walk: Option<SessionId> = None;
        let write = |changes: ChangeSet<'_>, written: &mut HashMap<SessionId, String>| {
            for id in changes.removed {
                written.remove(&id);
            }
            for session in changes.upserted {
                written.insert(session.id.clone(), format!("{session:?}"));
            }
            changes.more
        };
        for op in ops {
            let ids: Vec<SessionId> = pool.ordered.iter().cloned().collect();
            let pick = |i: usize| ids.get(i % ids.len().max(1)).cloned();
            match op {
                Op::Acquire { lease_secs } => {
                    let leased_before: HashSet<SessionId> = pool
                        .list(StateFilter::Leased, None, 1000, now).0.iter().map(|s| s.id.clone()).collect();
                    if let Ok(s) = pool.acquire(lease_secs.map(secs), now) {
                        prop_assert!(s.is_usable(now), "handed out an unusable session");
                        prop_assert!(!retired.contains(&s.id), "handed out a retired session");
                        prop_assert!(!leased_before.contains(&s.id), "handed out a leased session");
                    }
                }
                Op::Create { max_age_secs, max_usage } => {
                    next_id += 1;
                    let settings = SessionSettings {
                        max_age_secs: f64::from(max_age_secs),
                        max_usage_count: u32::from(max_usage),
                        ..SessionSettings::default()
                    };
                    // Few ids, so one is deleted and made again between takes now and then.
                    let id = format!("c{}", next_id % 6);
                    let new = NewSession { id: Some(id.clone()), settings: Some(settings), ..NewSession::default() };
                    if pool.create(new, now).is_ok() {
                        // A new session under the id of one purged since.
                        retired.remove(id.as_str());
                    }
                }
                Op::Good(i) => if let Some(id) = pick(i) { pool.mark_good(&id, None, now).unwrap(); },
                Op::Bad(i) => if let Some(id) = pick(i) { pool.mark_bad(&id, None, now).unwrap(); },
                Op::Retire(i) => if let Some(id) = pick(i) { pool.retire(&id, None, now).unwrap(); },
                Op::Release(i) => if let Some(id) = pick(i) {
                    let lease = pool.get(&id, now).unwrap().lease.map(|l| l.id.simple().to_string());
                    if let Some(lease) = lease {
                        pool.release(&id, &lease, now).unwrap();
                    }
                },
                Op::Delete(i) => if let Some(id) = pick(i) {
                    pool.delete(&id, now).unwrap();
                    retired.remove(&id);
                    prop_assert!(pool.get(&id, now).is_none(), "a deleted id is still found");
                },
                Op::Status { pick: i, code, mark } => if let Some(id) = pick(i) {
                    let report = StatusReport { status_code: code, mark, ..StatusReport::default() };
                    pool.report_status(&id, &report, None, now).unwrap();
                },
                Op::Advance(ms) => now += TimeDelta::milliseconds(i64::from(ms)),
                Op::Take { limit, by_id: false } => { write(pool.take_changes(limit), &mut written); }
                Op::Take { limit, by_id: true } => {
                    let (changes, next) = pool.take_changes_by_id(walk.as_ref(), limit);
                    write(changes, &mut written);
                    walk = next;
                }
            }
            pool.tick(now);
            pool.check_invariants();
            for s in pool.slots.iter().filter_map(Slot::session) {
                prop_assert!(s.error_score >= 0.0);
                if retired.contains(&s.id) {
                    prop_assert!(s.retirement.is_some(), "a retired session came back");
                }
                if s.retirement.is_some() {
                    retired.insert(s.id.clone());
                }
            }
            prop_assert_eq!(pool.budget.held(), pool.len());
        }
        while write(pool.take_changes(3), &mut written) {}
        let held: HashMap<SessionId, String> =
            pool.slots.iter().filter_map(Slot::session).map(|s| (s.id.clone(), format!("{s:?}"))).collect();
        prop_assert_eq!(written, held, "a change was lost or a removal not written");
    }
}
