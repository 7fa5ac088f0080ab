//! The lease's unit tests: a scripted License Manager under tokio's paused time.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use super::calls::Call;
use super::*;
use crate::exit::code;

type Answer<T> = Box<dyn FnOnce() -> Result<T, LicenseError>>;

/// License Manager as a script: each call's answer in turn (then a success), each call
/// logged with its token.
#[derive(Default)]
struct Fake {
    calls: Rc<RefCell<Vec<String>>>,
    extends: RefCell<VecDeque<Answer<()>>>,
    checkouts: RefCell<VecDeque<Answer<()>>>,
    check_ins: RefCell<VecDeque<Answer<()>>>,
}

/// A consumption valid for this long, on the paused clock.
const TTL: Duration = Duration::from_secs(100);

fn seat(token: &str) -> Seat<()> {
    Seat {
        session: (),
        consumption_token: token.into(),
        expiration: SystemTime::now() + TTL,
        expires_at: Instant::now() + TTL,
    }
}

impl Licenses for Rc<Fake> {
    type Session = ();

    fn extend(&self, seat: &Seat<()>, _: Duration) -> Call<Result<Extension, LicenseError>> {
        let n = self.calls.borrow().len();
        self.calls
            .borrow_mut()
            .push(format!("extend {}", seat.consumption_token));
        let answer = self.extends.borrow_mut().pop_front();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            answer.map_or(Ok(()), |a| a())?;
            Ok(Extension {
                consumption_token: format!("token-{n}"),
                expiration: SystemTime::now() + TTL,
                expires_at: (Instant::now() + TTL).into_std(),
            })
        })
    }

    fn check_in(&self, seat: &Seat<()>, _: Duration) -> Call<Result<(), LicenseError>> {
        self.calls
            .borrow_mut()
            .push(format!("check-in {}", seat.consumption_token));
        let answer = self.check_ins.borrow_mut().pop_front();
        Box::pin(async move { answer.map_or(Ok(()), |a| a()) })
    }

    fn checkout(&self, client_token: String) -> Call<Result<Seat<()>, LicenseError>> {
        self.calls
            .borrow_mut()
            .push(format!("checkout {client_token}"));
        let answer = self.checkouts.borrow_mut().pop_front();
        Box::pin(async move {
            answer.map_or(Ok(()), |a| a())?;
            Ok(seat("new"))
        })
    }
}

fn rules(on_transient_error: TransientPolicy) -> Rules {
    Rules {
        grace: Duration::from_secs(10),
        timeout: Duration::from_secs(10),
        on_transient_error,
    }
}

fn unreachable() -> Answer<()> {
    Box::new(|| Err(CallError::Unreachable("503".into()).into()))
}

/// The lease's next event, or None if it has none within `within` (paused time: at once).
async fn event_within<L: Licenses>(lease: &mut Lease<L>, within: Duration) -> Option<Event> {
    tokio::time::timeout(within, lease.next()).await.ok()
}

fn calls(fake: &Rc<Fake>) -> Vec<String> {
    fake.calls.borrow().clone()
}

#[tokio::test(start_paused = true)]
async fn a_held_seat_is_extended_before_it_expires_and_checked_in_at_the_end() {
    let fake = Rc::new(Fake::default());
    let mut lease = Lease::new(
        fake.clone(),
        rules(TransientPolicy::Deny),
        Some(seat("first")),
        None,
    );
    // Ten lifetimes of the consumption pass without a loss.
    assert_eq!(event_within(&mut lease, TTL * 10).await, None);
    let made = calls(&fake);
    assert!(made.len() >= 10 && made.len() <= 26, "{made:?}");
    assert_eq!(made[0], "extend first");
    assert_eq!(made[1], "extend token-0");
    lease.enter(Phase::Exited);
    assert_eq!(lease.next().await, Event::Done);
    let last = calls(&fake).pop().unwrap();
    assert!(last.starts_with("check-in token-"), "{last}");
    assert!(lease.checked_in());
}

#[tokio::test(start_paused = true)]
async fn a_stop_checks_the_seat_in_at_once_and_only_once() {
    let fake = Rc::new(Fake::default());
    let mut lease = Lease::new(
        fake.clone(),
        rules(TransientPolicy::Deny),
        Some(seat("first")),
        None,
    );
    lease.enter(Phase::Stopping);
    assert_eq!(event_within(&mut lease, TTL * 3).await, None);
    assert_eq!(calls(&fake), ["check-in first"]);
    assert!(lease.checked_in());
    lease.enter(Phase::Exited);
    assert_eq!(lease.next().await, Event::Done);
    assert_eq!(calls(&fake), ["check-in first"]);
}

#[tokio::test(start_paused = true)]
async fn a_refused_extension_is_a_loss_with_exit_13_and_the_seat_still_goes_back() {
    let fake = Rc::new(Fake::default());
    fake.extends.borrow_mut().push_back(Box::new(|| {
        Err(CallError::Refused("AccessDenied".into()).into())
    }));
    let mut lease = Lease::new(
        fake.clone(),
        rules(TransientPolicy::Allow),
        Some(seat("first")),
        None,
    );
    let Some(Event::Lost(loss)) = event_within(&mut lease, TTL).await else {
        panic!("no loss");
    };
    assert_eq!(
        (loss.exit_code, loss.outcome.as_str()),
        (code::SERVICE_REFUSED, "service-refused")
    );
    assert!(loss.message.contains("AccessDenied"), "{}", loss.message);
    // Told to stop after its own loss, it waits for the end to check in.
    lease.enter(Phase::Stopping);
    assert_eq!(event_within(&mut lease, TTL * 3).await, None);
    assert_eq!(calls(&fake), ["extend first"]);
    lease.enter(Phase::Exited);
    assert_eq!(lease.next().await, Event::Done);
    assert_eq!(calls(&fake), ["extend first", "check-in first"]);
}

#[tokio::test(start_paused = true)]
async fn a_consumption_license_manager_no_longer_knows_is_lost_and_not_checked_in() {
    let fake = Rc::new(Fake::default());
    fake.extends
        .borrow_mut()
        .push_back(Box::new(|| Err(LicenseError::Lost("revoked".into()))));
    let mut lease = Lease::new(
        fake.clone(),
        rules(TransientPolicy::Deny),
        Some(seat("first")),
        None,
    );
    let Some(Event::Lost(loss)) = event_within(&mut lease, TTL).await else {
        panic!("no loss");
    };
    assert_eq!(
        (loss.exit_code, loss.outcome.as_str()),
        (code::NOT_ENTITLED, "license-lost")
    );
    lease.enter(Phase::Exited);
    assert_eq!(lease.next().await, Event::Done);
    assert_eq!(calls(&fake), ["extend first"]);
    assert!(!lease.checked_in());
}

#[tokio::test(start_paused = true)]
async fn with_deny_extensions_that_keep_failing_lose_the_seat_as_it_expires() {
    let fake = Rc::new(Fake::default());
    for _ in 0..100 {
        fake.extends.borrow_mut().push_back(unreachable());
    }
    let started = Instant::now();
    let mut lease = Lease::new(
        fake.clone(),
        rules(TransientPolicy::Deny),
        Some(seat("first")),
        None,
    );
    let Some(Event::Lost(loss)) = event_within(&mut lease, TTL * 2).await else {
        panic!("no loss");
    };
    // At the expiry, not before: retries came meanwhile.
    assert!(
        Instant::now() - started >= TTL,
        "{:?}",
        Instant::now() - started
    );
    assert_eq!(
        (loss.exit_code, loss.outcome.as_str()),
        (code::SERVICE_UNREACHABLE, "service-unreachable")
    );
    assert!(
        loss.message
            .contains("before License Manager could extend it"),
        "{}",
        loss.message
    );
    assert!(calls(&fake).len() > 3, "{:?}", calls(&fake));
}

#[tokio::test(start_paused = true)]
async fn with_allow_and_no_seat_the_same_client_token_is_checked_out_until_one_is_taken() {
    let fake = Rc::new(Fake::default());
    fake.checkouts
        .borrow_mut()
        .extend([unreachable(), unreachable()]);
    let mut lease = Lease::new(
        fake.clone(),
        rules(TransientPolicy::Allow),
        None,
        Some("client-token".into()),
    );
    assert_eq!(
        event_within(&mut lease, Duration::from_secs(25)).await,
        None
    );
    // MPGATE_TIMEOUT (10 s) is shorter than 30 s: every 10 s, the same ClientToken.
    assert_eq!(
        calls(&fake),
        ["checkout client-token", "checkout client-token"]
    );
    assert_eq!(
        event_within(&mut lease, Duration::from_secs(10)).await,
        None
    );
    assert_eq!(calls(&fake).len(), 3);
    assert!(lease.expiration().is_some());
    // The new seat is extended, and given back at the end.
    assert_eq!(event_within(&mut lease, TTL).await, None);
    assert_eq!(calls(&fake)[3], "extend new");
    lease.enter(Phase::Exited);
    assert_eq!(lease.next().await, Event::Done);
    assert!(calls(&fake).last().unwrap().starts_with("check-in token-"));
}

#[tokio::test(start_paused = true)]
async fn a_call_in_flight_at_the_end_is_awaited_and_its_token_checked_in() {
    let fake = Rc::new(Fake::default());
    let mut lease = Lease::new(
        fake.clone(),
        rules(TransientPolicy::Deny),
        Some(seat("first")),
        None,
    );
    // Until the extension is under way (it takes 100 ms).
    while calls(&fake).is_empty() {
        assert_eq!(event_within(&mut lease, Duration::from_secs(1)).await, None);
    }
    lease.enter(Phase::Exited);
    assert_eq!(lease.next().await, Event::Done);
    assert_eq!(calls(&fake), ["extend first", "check-in token-0"]);
}

#[test]
fn what_ends_a_hold_and_what_may_clear() {
    let lost = LicenseError::Lost("revoked".into());
    assert!(!is_transient(&lost) && is_gone(&lost));
    let bad = LicenseError::Call(CallError::BadAnswer("no expiration".into()));
    assert!(!is_transient(&bad) && !is_gone(&bad));
    assert_eq!(Failure::License(bad).exit_code(), code::TOKEN_REJECTED);
    let refused = LicenseError::Call(CallError::Refused("denied".into()));
    assert!(!is_transient(&refused));
    let unreachable = LicenseError::Call(CallError::Unreachable("503".into()));
    assert!(is_transient(&unreachable) && !is_gone(&unreachable));
}

#[test]
fn renewal_comes_between_40_and_60_percent_of_the_time_left() {
    for _ in 0..100 {
        let now = Instant::now();
        let at = renewal_time(now + Duration::from_secs(100));
        let after = at.saturating_duration_since(now);
        assert!(
            (Duration::from_secs(40)..=Duration::from_millis(60_100)).contains(&after),
            "{after:?}"
        );
    }
    // An expired seat is due at once.
    let now = Instant::now();
    assert!(renewal_time(now) <= Instant::now());
}
