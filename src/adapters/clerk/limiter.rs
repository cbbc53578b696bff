//! The client-side request limiter of one Clerk instance.
//!
//! Clerk counts requests per instance (100 per 10 s on a development instance) and answers 429
//! past the budget. Every request to an instance takes a [`Permit`] from the instance's
//! [`RequestLimiter`] first. A slot stays taken while the request is in flight and for one window
//! after its answer arrived: Clerk counted the request at some moment between sending and
//! answering, so "in flight, or answered less than a window ago" covers that moment whatever the
//! network delay. Hence no window of Clerk's (fixed or sliding) ever sees more than `requests`
//! of ours, and the budget can equal Clerk's; the default keeps a margin for other users of the
//! same instance (the application's own Backend API calls).
//!
//! Waiting callers queue on a FIFO turnstile (tokio's mutex is fair), so nobody starves; the head
//! of the queue sleeps until a slot frees. A 429 pauses the whole instance until its
//! `Retry-After`.
//!
//! Callers that must not wait (reconciles: a reconcile worker waiting for Clerk is a token Secret
//! not re-signed) take a slot with [`RequestLimiter::try_acquire_now`] or are told when to come
//! back: the next free slot after those already promised to callers refused before, one per
//! `window / requests` (the budget's pace). Callers refused together thus come back spread over
//! the time the budget needs for all of them, in the order they were refused.
//!
//! **Fair shares.** A request may name its tenant (the TenantAccess's namespace) and be urgent
//! (a rotation's new key, a withdrawal's deletion): see [`Requester`]. While more than one tenant
//! is active in the window (a request in flight, answered, or refused within it), a routine
//! request of a tenant that already holds its share (`(requests - reserve) / active tenants`) is
//! refused and comes back when its own oldest slot leaves the window, so a tenant rewriting its
//! templates in a loop never delays another tenant's first request by more than one window.
//! Routine requests leave a tenth of the budget (the reserve) to urgent ones, which also skip
//! the queue of comeback times. Alone, a tenant may use the whole routine budget.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

/// Requests allowed per window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBudget {
    /// Requests per window (at least 1).
    pub requests: u32,
    /// Window length.
    pub window: Duration,
}

impl RequestBudget {
    /// Clerk's development-instance budget: 100 requests per 10 s.
    pub const CLERK_DEVELOPMENT: Self = Self { requests: 100, window: Duration::from_secs(10) };
    /// Clerk's production-instance budget: 1000 requests per 10 s.
    pub const CLERK_PRODUCTION: Self = Self { requests: 1000, window: Duration::from_secs(10) };
}

impl Default for RequestBudget {
    /// The development budget with a 10 % margin for the instance's other users: 90 per 10 s.
    fn default() -> Self {
        Self { requests: 90, window: Duration::from_secs(10) }
    }
}

/// What the window allows right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admission {
    /// A slot is free (and now taken).
    Granted,
    /// No slot before this instant (a recent answer leaves the window, or a pause ends).
    WaitUntil(Instant),
    /// Every slot is held by a request in flight: wait for one to finish.
    WaitForCompletion,
}

/// Who a request is for, and whether it goes ahead of routine ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requester {
    /// The tenant whose fair share the request counts against (a namespace); `None`: the
    /// operator's own (shares nothing, reserves nothing).
    pub tenant: Option<Arc<str>>,
    /// A rotation's or a withdrawal's request: may use the reserve, skips the comeback queue,
    /// and is never held to a share.
    pub urgent: bool,
}

impl Requester {
    /// A request of `tenant`, urgent or routine.
    #[must_use]
    pub fn new(tenant: &str, urgent: bool) -> Self {
        Self { tenant: Some(Arc::from(tenant)), urgent }
    }

    /// A routine request of `tenant`.
    #[must_use]
    pub fn routine(tenant: &str) -> Self {
        Self::new(tenant, false)
    }

    /// An urgent request of `tenant`.
    #[must_use]
    pub fn urgent(tenant: &str) -> Self {
        Self::new(tenant, true)
    }
}

/// The pure arithmetic of the limiter: slots in flight, answer times within the last window and
/// the pause. Every method takes `now`, so tests need no clock.
#[derive(Debug)]
pub(crate) struct WindowState {
    budget: RequestBudget,
    in_flight: u32,
    /// When recent requests finished, oldest first (at most `budget.requests`), and for whom.
    finished: VecDeque<(Instant, Option<Arc<str>>)>,
    /// Requests in flight per tenant.
    in_flight_by: HashMap<Arc<str>, u32>,
    /// Tenants refused a slot, and when (active for a window after).
    refused: HashMap<Arc<str>, Instant>,
    paused_until: Option<Instant>,
    /// When callers refused a slot were told to come back, in order (only those still ahead).
    promised: VecDeque<Instant>,
    /// The same per tenant: a tenant's backlog paces its own comebacks, never another's.
    promised_by: HashMap<Arc<str>, VecDeque<Instant>>,
}

/// Most tenants remembered as refused (a bound on memory; the oldest are forgotten first).
const MAX_REFUSED_TENANTS: usize = 10_000;

/// Most comeback times remembered (a bound on memory, far above any real queue).
const MAX_PROMISED: usize = 100_000;

impl WindowState {
    pub(crate) fn new(budget: RequestBudget) -> Self {
        let budget = RequestBudget { requests: budget.requests.max(1), window: budget.window };
        Self {
            budget,
            in_flight: 0,
            finished: VecDeque::new(),
            in_flight_by: HashMap::new(),
            refused: HashMap::new(),
            paused_until: None,
            promised: VecDeque::new(),
            promised_by: HashMap::new(),
        }
    }

    fn forget_before(&mut self, now: Instant) {
        while let Some((oldest, _)) = self.finished.front() {
            if *oldest + self.budget.window <= now {
                self.finished.pop_front();
            } else {
                break;
            }
        }
        let window = self.budget.window;
        self.refused.retain(|_, at| *at + window > now);
    }

    /// Takes a slot if one is free at `now` (a routine request of no tenant).
    pub(crate) fn try_acquire(&mut self, now: Instant) -> Admission {
        self.try_acquire_for(now, &Requester::default())
    }

    /// Takes a slot for `requester` if one is free at `now` and its tenant is within its share.
    pub(crate) fn try_acquire_for(&mut self, now: Instant, requester: &Requester) -> Admission {
        if let Some(until) = self.paused_until {
            if now < until {
                return Admission::WaitUntil(until);
            }
            self.paused_until = None;
        }
        self.forget_before(now);
        let used = self.in_flight.saturating_add(u32::try_from(self.finished.len()).unwrap_or(u32::MAX));
        let limit = match (&requester.tenant, requester.urgent) {
            (Some(_), false) => self.budget.requests - self.reserve(),
            _ => self.budget.requests,
        };
        if used >= limit {
            if let Some(tenant) = &requester.tenant {
                self.note_refused(tenant, now);
            }
            return match self.finished.front() {
                Some((oldest, _)) => Admission::WaitUntil(*oldest + self.budget.window),
                None => Admission::WaitForCompletion,
            };
        }
        if let (Some(tenant), false) = (&requester.tenant, requester.urgent)
            && self.active_tenants(tenant) > 1
            && self.used_by(tenant) >= self.share(tenant)
        {
            self.note_refused(tenant, now);
            // Back when its own oldest slot leaves the window (or one of its requests ends).
            let own_oldest = self.finished.iter().find(|(_, t)| t.as_ref() == Some(tenant));
            return own_oldest.map_or(Admission::WaitForCompletion, |(oldest, _)| {
                Admission::WaitUntil(*oldest + self.budget.window)
            });
        }
        self.in_flight += 1;
        if let Some(tenant) = &requester.tenant {
            *self.in_flight_by.entry(Arc::clone(tenant)).or_default() += 1;
            self.refused.remove(tenant);
        }
        Admission::Granted
    }

    /// The part of the budget routine requests of tenants leave to urgent ones: a tenth.
    fn reserve(&self) -> u32 {
        self.budget.requests / 10
    }

    /// A tenant's fair share of the routine budget among the tenants active in the window.
    fn share(&self, tenant: &Arc<str>) -> u32 {
        let active = u32::try_from(self.active_tenants(tenant)).unwrap_or(u32::MAX).max(1);
        ((self.budget.requests - self.reserve()) / active).max(1)
    }

    /// Slots `tenant` holds: in flight, or answered within the window.
    fn used_by(&self, tenant: &Arc<str>) -> u32 {
        let finished = self.finished.iter().filter(|(_, t)| t.as_ref() == Some(tenant)).count();
        self.in_flight_by
            .get(tenant)
            .copied()
            .unwrap_or(0)
            .saturating_add(u32::try_from(finished).unwrap_or(u32::MAX))
    }

    /// Tenants active in the window (holding a slot, or refused within it), `tenant` included.
    fn active_tenants(&self, tenant: &Arc<str>) -> usize {
        let mut active: std::collections::HashSet<&Arc<str>> =
            self.finished.iter().filter_map(|(_, t)| t.as_ref()).collect();
        active.extend(self.in_flight_by.keys());
        active.extend(self.refused.keys());
        active.insert(tenant);
        active.len()
    }

    fn note_refused(&mut self, tenant: &Arc<str>, now: Instant) {
        if self.refused.len() >= MAX_REFUSED_TENANTS && !self.refused.contains_key(tenant) {
            return;
        }
        self.refused.insert(Arc::clone(tenant), now);
    }

    /// When a caller refused at `now` (`refusal`: what [`Self::try_acquire`] said) should come
    /// back: the first free slot after the ones promised to callers refused before, at the
    /// budget's pace. Recorded as promised.
    pub(crate) fn comeback(&mut self, now: Instant, refusal: Admission) -> Instant {
        while self.promised.front().is_some_and(|&at| at <= now) {
            self.promised.pop_front();
        }
        let next_free = self.next_free(now, refusal);
        let pace = self.budget.window / self.budget.requests;
        let at = self.promised.back().map_or(next_free, |&last| (last + pace).max(next_free));
        if self.promised.len() >= MAX_PROMISED {
            self.promised.pop_front();
        }
        self.promised.push_back(at);
        at
    }

    /// When a routine caller of `tenant` refused at `now` should come back: after the comebacks
    /// promised to its own tenant, at the pace of its share. Another tenant's backlog never
    /// delays it.
    pub(crate) fn comeback_for(&mut self, now: Instant, refusal: Admission, tenant: &Arc<str>) -> Instant {
        let next_free = self.next_free(now, refusal);
        let pace = self.budget.window / self.share(tenant);
        let full = |promised: &HashMap<Arc<str>, VecDeque<Instant>>| {
            promised.values().map(VecDeque::len).sum::<usize>() >= MAX_PROMISED
                || (promised.len() >= MAX_REFUSED_TENANTS && !promised.contains_key(tenant))
        };
        if full(&self.promised_by) {
            // Forget the comebacks already past, and the tenants left with none.
            self.promised_by.retain(|_, queue| {
                queue.retain(|&at| at > now);
                !queue.is_empty()
            });
            if full(&self.promised_by) {
                return next_free;
            }
        }
        let queue = self.promised_by.entry(Arc::clone(tenant)).or_default();
        while queue.front().is_some_and(|&at| at <= now) {
            queue.pop_front();
        }
        let at = queue.back().map_or(next_free, |&last| (last + pace).max(next_free));
        queue.push_back(at);
        at
    }

    /// When a slot frees for a caller refused at `now` with `refusal` (nothing promised).
    pub(crate) fn next_free(&self, now: Instant, refusal: Admission) -> Instant {
        match refusal {
            Admission::WaitUntil(until) => until,
            // Every slot is in flight: one frees at an answer, at the latest a window from now.
            Admission::Granted | Admission::WaitForCompletion => now + self.budget.window,
        }
    }

    /// A request granted earlier finished (answered, failed or was abandoned) at `now`.
    #[cfg(test)]
    pub(crate) fn finish(&mut self, now: Instant) {
        self.finish_for(now, None);
    }

    /// A request of `tenant` granted earlier finished at `now`.
    pub(crate) fn finish_for(&mut self, now: Instant, tenant: Option<&Arc<str>>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if let Some(tenant) = tenant
            && let Some(count) = self.in_flight_by.get_mut(tenant)
        {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.in_flight_by.remove(tenant);
            }
        }
        self.forget_before(now);
        // Completion times arrive in order (taken under the lock); keep the list bounded anyway.
        if self.finished.len() >= usize::try_from(self.budget.requests).unwrap_or(usize::MAX) {
            self.finished.pop_front();
        }
        let at = self.finished.back().map_or(now, |(last, _)| (*last).max(now));
        self.finished.push_back((at, tenant.cloned()));
    }

    /// Stops every grant until `until` (a later pause wins over an earlier one).
    pub(crate) fn pause_until(&mut self, until: Instant) {
        self.paused_until = Some(self.paused_until.map_or(until, |current| current.max(until)));
    }

    /// Nothing in flight, nothing answered within the window, no pause: the same as new.
    pub(crate) fn is_idle(&mut self, now: Instant) -> bool {
        self.forget_before(now);
        self.in_flight == 0 && self.finished.is_empty() && self.paused_until.is_none_or(|until| until <= now)
    }
}

/// The shared limiter of one Clerk instance.
#[derive(Debug)]
pub struct RequestLimiter {
    state: Mutex<WindowState>,
    /// FIFO queue of callers waiting for a slot; only its holder watches the window.
    turnstile: tokio::sync::Mutex<()>,
    /// Signalled when a request finishes or a pause is set.
    changed: Notify,
}

impl RequestLimiter {
    /// A limiter allowing `budget`.
    #[must_use]
    pub fn new(budget: RequestBudget) -> Self {
        Self {
            state: Mutex::new(WindowState::new(budget)),
            turnstile: tokio::sync::Mutex::new(()),
            changed: Notify::new(),
        }
    }

    fn state(&self) -> MutexGuard<'_, WindowState> {
        // The state stays consistent across a panic elsewhere (every update is one statement).
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits (in arrival order) for a slot, at most `max_wait`. `Err(retry_after)` when none is
    /// free in time; at once when a pause or the window says so already. Dropping the future
    /// leaves the queue cleanly.
    ///
    /// # Errors
    /// How long to wait before trying again, when no slot is free within `max_wait`.
    pub async fn acquire_within(self: &Arc<Self>, max_wait: Duration) -> Result<Permit, Duration> {
        let deadline = Instant::now() + max_wait;
        let window = self.state().budget.window;
        let Ok(_turn) = tokio::time::timeout_at(deadline, self.turnstile.lock()).await else {
            return Err(window);
        };
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = Instant::now();
            let admission = self.state().try_acquire(now);
            match admission {
                Admission::Granted => return Ok(Permit { limiter: Arc::clone(self), tenant: None }),
                Admission::WaitUntil(until) if until > deadline => return Err(until - now),
                Admission::WaitUntil(until) => {
                    tokio::select! {
                        () = tokio::time::sleep_until(until) => {}
                        () = changed => {}
                    }
                }
                Admission::WaitForCompletion => {
                    tokio::select! {
                        () = tokio::time::sleep_until(deadline) => return Err(window),
                        () = changed => {}
                    }
                }
            }
        }
    }

    /// Takes a slot now, or tells how long until the caller should try again (see the module
    /// documentation): never waits, and does not queue behind waiting callers.
    ///
    /// # Errors
    /// How long to wait before trying again, when no slot is free now.
    pub fn try_acquire_now(self: &Arc<Self>) -> Result<Permit, Duration> {
        self.try_acquire_now_for(&Requester::default())
    }

    /// [`Self::try_acquire_now`] for `requester`: within its tenant's fair share; an urgent
    /// request comes back at the next free slot, ahead of the routine ones refused before.
    ///
    /// # Errors
    /// How long to wait before trying again, when no slot is free now.
    pub fn try_acquire_now_for(self: &Arc<Self>, requester: &Requester) -> Result<Permit, Duration> {
        let now = Instant::now();
        let mut state = self.state();
        match state.try_acquire_for(now, requester) {
            Admission::Granted => Ok(Permit { limiter: Arc::clone(self), tenant: requester.tenant.clone() }),
            refusal if requester.urgent => Err(state.next_free(now, refusal).saturating_duration_since(now)),
            refusal => match &requester.tenant {
                Some(tenant) => Err(state.comeback_for(now, refusal, tenant).saturating_duration_since(now)),
                None => Err(state.comeback(now, refusal) - now),
            },
        }
    }

    /// Pauses every caller of the instance for `delay` (Clerk's `Retry-After`) and tells the
    /// caller that was refused when to come back (as [`Self::try_acquire_now`] would).
    pub fn pause_and_comeback(&self, delay: Duration) -> Duration {
        let now = Instant::now();
        let until = now + delay;
        let mut state = self.state();
        state.pause_until(until);
        let at = state.comeback(now, Admission::WaitUntil(until));
        drop(state);
        self.changed.notify_one();
        at - now
    }

    /// Pauses every caller of the instance for `delay` (Clerk's `Retry-After`).
    pub fn pause_for(&self, delay: Duration) {
        self.state().pause_until(Instant::now() + delay);
        self.changed.notify_one();
    }

    /// Whether the limiter holds no state that a fresh one would not.
    pub(crate) fn is_idle(&self) -> bool {
        self.state().is_idle(Instant::now())
    }
}

/// One request's slot; the slot's window starts when this is dropped (after the answer).
#[derive(Debug)]
pub struct Permit {
    limiter: Arc<RequestLimiter>,
    tenant: Option<Arc<str>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.limiter.state().finish_for(Instant::now(), self.tenant.as_ref());
        self.limiter.changed.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Duration = Duration::from_secs(30);

    /// Takes `count` slots for `who` at `at`, each answered at once.
    fn take(window: &mut WindowState, who: &Requester, at: Instant, count: u32) {
        for _ in 0..count {
            assert_eq!(window.try_acquire_for(at, who), Admission::Granted);
            window.finish_for(at, who.tenant.as_ref());
        }
    }

    #[test]
    fn a_tenant_alone_uses_the_routine_budget_and_leaves_the_reserve() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(10, 10));
        let acme = Requester::routine("acme");
        take(&mut window, &acme, t0, 9);
        assert_eq!(window.try_acquire_for(t0, &acme), Admission::WaitUntil(t0 + secs(10)));
        // The tenth slot is the reserve: a rotation's push still gets it.
        assert_eq!(window.try_acquire_for(t0, &Requester::urgent("acme")), Admission::Granted);
        assert_eq!(
            window.try_acquire_for(t0, &Requester::urgent("globex")),
            Admission::WaitUntil(t0 + secs(10))
        );
    }

    #[test]
    fn a_tenant_in_a_loop_leaves_the_next_free_slot_to_another_tenant() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(10, 10));
        let (looping, other) = (Requester::routine("looping"), Requester::routine("other"));
        // The loop fills the routine budget, one answer a second.
        for i in 0..9 {
            take(&mut window, &looping, t0 + secs(i), 1);
        }
        assert!(matches!(window.try_acquire_for(t0 + secs(9), &other), Admission::WaitUntil(_)));
        // When the loop's oldest slot frees, the loop is over its share (4 of 9, two tenants
        // active), the other tenant is not: the slot is the other tenant's.
        let freed = t0 + secs(10);
        // Over its share: back when its own oldest slot (answered at 1 s) leaves the window.
        assert_eq!(window.try_acquire_for(freed, &looping), Admission::WaitUntil(t0 + secs(11)));
        assert_eq!(window.try_acquire_for(freed, &other), Admission::Granted);
        // And so on while both ask: the loop gets back below its share only as its slots age.
        window.finish_for(freed, other.tenant.as_ref());
        assert_eq!(window.try_acquire_for(t0 + secs(11), &looping), Admission::WaitUntil(t0 + secs(12)));
        assert_eq!(window.try_acquire_for(t0 + secs(11), &other), Admission::Granted);
    }

    #[test]
    fn shares_follow_the_tenants_active_in_the_window() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(30, 10));
        let tenants: Vec<Requester> = ["a", "b", "c"].into_iter().map(Requester::routine).collect();
        // Each of three tenants asks in turn until refused: 27 routine slots, 9 each.
        let mut granted = [0; 3];
        for _ in 0..40 {
            for (i, tenant) in tenants.iter().enumerate() {
                if window.try_acquire_for(t0, tenant) == Admission::Granted {
                    window.finish_for(t0, tenant.tenant.as_ref());
                    granted[i] += 1;
                }
            }
        }
        assert_eq!(granted, [9, 9, 9]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_tenants_backlog_of_comebacks_never_delays_another_tenant() {
        let limiter = Arc::new(RequestLimiter::new(budget(10, 10)));
        let looping = Requester::routine("looping");
        for _ in 0..9 {
            drop(limiter.try_acquire_now_for(&looping).unwrap());
            tokio::time::advance(secs(1)).await;
        }
        // A hundred refusals of the loop: its comebacks stretch far ahead, paced at its share.
        let backlog: Vec<Duration> =
            (0..100).map(|_| limiter.try_acquire_now_for(&looping).unwrap_err()).collect();
        assert!(backlog[99] > secs(60), "{:?}", backlog[99]);
        // A newcomer is told the next free slot, and gets it: the loop is over its share then.
        let newcomer = Requester::routine("newcomer");
        let comeback = limiter.try_acquire_now_for(&newcomer).unwrap_err();
        assert_eq!(comeback, secs(1), "when the loop's oldest slot leaves the window");
        tokio::time::advance(comeback).await;
        assert!(limiter.try_acquire_now_for(&looping).is_err());
        assert!(limiter.try_acquire_now_for(&newcomer).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn an_urgent_request_comes_back_ahead_of_the_routine_ones_refused_before() {
        let limiter = Arc::new(RequestLimiter::new(budget(10, 10)));
        let acme = Requester::routine("acme");
        for _ in 0..9 {
            drop(limiter.try_acquire_now_for(&acme).unwrap());
        }
        // Routine callers refused now come back one per second (the pace) from 10 s on.
        let routine: Vec<Duration> =
            (0..5).map(|_| limiter.try_acquire_now_for(&acme).unwrap_err()).collect();
        assert_eq!(routine[0], secs(10));
        assert!(routine.windows(2).all(|pair| pair[1] > pair[0]), "paced: {routine:?}");
        let _reserve = limiter.try_acquire_now_for(&Requester::urgent("acme")).unwrap();
        // The budget is full; an urgent caller is told the next free slot, not a place behind
        // the routine callers of its namespace.
        let urgent = limiter.try_acquire_now_for(&Requester::urgent("acme")).unwrap_err();
        assert_eq!(urgent, secs(10));
        let routine_after = limiter.try_acquire_now_for(&acme).unwrap_err();
        assert!(routine_after > routine[4], "{routine_after:?}");
    }

    fn budget(requests: u32, window_secs: u64) -> RequestBudget {
        RequestBudget { requests, window: Duration::from_secs(window_secs) }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn grants_the_budget_then_waits_for_the_oldest_answer_to_leave_the_window() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(3, 10));
        for i in 0..3 {
            assert_eq!(window.try_acquire(t0), Admission::Granted);
            window.finish(t0 + secs(i));
        }
        assert_eq!(window.try_acquire(t0 + secs(5)), Admission::WaitUntil(t0 + secs(10)));
        assert_eq!(window.try_acquire(t0 + secs(10)), Admission::Granted);
        assert_eq!(window.try_acquire(t0 + secs(10)), Admission::WaitUntil(t0 + secs(11)));
    }

    #[test]
    fn requests_in_flight_hold_their_slots() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(2, 1));
        assert_eq!(window.try_acquire(t0), Admission::Granted);
        assert_eq!(window.try_acquire(t0), Admission::Granted);
        // Long after the window, both are still in flight: no slot until one answers.
        assert_eq!(window.try_acquire(t0 + secs(60)), Admission::WaitForCompletion);
        window.finish(t0 + secs(61));
        assert_eq!(window.try_acquire(t0 + secs(61)), Admission::WaitUntil(t0 + secs(62)));
        assert_eq!(window.try_acquire(t0 + secs(62)), Admission::Granted);
    }

    #[test]
    fn the_window_starts_at_the_answer_not_at_the_grant() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(1, 10));
        assert_eq!(window.try_acquire(t0), Admission::Granted);
        window.finish(t0 + secs(4));
        assert_eq!(window.try_acquire(t0 + secs(10)), Admission::WaitUntil(t0 + secs(14)));
    }

    #[test]
    fn never_more_than_the_budget_in_any_window() {
        // Simulate greedy callers with answers taking 0..=3 ticks of 100 ms, and check every
        // 1-second window of answer times (the latest moment Clerk can count a request).
        let t0 = Instant::now();
        let tick = Duration::from_millis(100);
        let mut window = WindowState::new(budget(5, 1));
        let mut in_flight: Vec<(Instant, Instant)> = Vec::new();
        let mut sent: Vec<(Instant, Instant)> = Vec::new();
        for step in 0..200_u32 {
            let now = t0 + tick * step;
            in_flight.retain(|&(granted, done)| {
                if done <= now {
                    window.finish(done);
                    sent.push((granted, done));
                    false
                } else {
                    true
                }
            });
            while window.try_acquire(now) == Admission::Granted {
                in_flight.push((now, now + tick * (step % 4)));
            }
        }
        let starts = sent.iter().flat_map(|&(granted, done)| [granted, done]);
        for start in starts {
            // Any moment between grant and answer may be when Clerk counted it: count requests
            // whose [grant, answer] interval touches [start, start + 1 s).
            let touching =
                sent.iter().filter(|&&(granted, done)| granted < start + secs(1) && done >= start).count();
            assert!(touching <= 5, "{touching} requests in one window");
        }
        assert!(sent.len() > 50, "only {} requests in 20 s", sent.len());
    }

    #[test]
    fn a_pause_stops_every_grant_until_it_ends() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(100, 10));
        window.pause_until(t0 + secs(5));
        window.pause_until(t0 + secs(3));
        assert_eq!(window.try_acquire(t0), Admission::WaitUntil(t0 + secs(5)));
        assert!(!window.is_idle(t0 + secs(4)));
        assert_eq!(window.try_acquire(t0 + secs(5)), Admission::Granted);
    }

    #[test]
    fn refused_callers_come_back_at_the_budgets_pace_in_the_order_they_were_refused() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(10, 10));
        for _ in 0..10 {
            assert_eq!(window.try_acquire(t0), Admission::Granted);
            window.finish(t0);
        }
        // Ten callers refused at once: the first when the window frees, then one per second
        // (10 requests per 10 s), not all at the same instant.
        let comebacks: Vec<Instant> = (0..10)
            .map(|_| {
                let refusal = window.try_acquire(t0);
                window.comeback(t0, refusal)
            })
            .collect();
        let expected: Vec<Instant> = (0..10).map(|i| t0 + secs(10 + i)).collect();
        assert_eq!(comebacks, expected);
        // A caller refused later queues behind them.
        let later = t0 + secs(5);
        let refusal = window.try_acquire(later);
        assert_eq!(window.comeback(later, refusal), t0 + secs(20));
        // Once the window is spent again after they came back, a refused caller is the first in
        // line: the promises already past are forgotten.
        let much_later = t0 + secs(25);
        for _ in 0..10 {
            assert_eq!(window.try_acquire(much_later), Admission::Granted);
            window.finish(much_later);
        }
        let refusal = window.try_acquire(much_later);
        assert_eq!(window.comeback(much_later, refusal), t0 + secs(35));
        assert_eq!(window.promised.len(), 1);
    }

    #[test]
    fn a_pause_sends_refused_callers_back_after_it_ends() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(100, 10));
        window.pause_until(t0 + secs(30));
        let refusal = window.try_acquire(t0);
        assert_eq!(refusal, Admission::WaitUntil(t0 + secs(30)));
        assert_eq!(window.comeback(t0, refusal), t0 + secs(30));
        let refusal = window.try_acquire(t0);
        assert_eq!(window.comeback(t0, refusal), t0 + secs(30) + Duration::from_millis(100));
        // Every slot in flight: back within a window at the latest.
        let mut busy = WindowState::new(budget(1, 10));
        assert_eq!(busy.try_acquire(t0), Admission::Granted);
        let refusal = busy.try_acquire(t0);
        assert_eq!(busy.comeback(t0, refusal), t0 + secs(10));
    }

    #[test]
    fn idle_once_the_last_answer_left_the_window() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(2, 10));
        assert!(window.is_idle(t0));
        assert_eq!(window.try_acquire(t0), Admission::Granted);
        assert!(!window.is_idle(t0));
        window.finish(t0 + secs(1));
        assert!(!window.is_idle(t0 + secs(10)));
        assert!(window.is_idle(t0 + secs(11)));
    }

    #[test]
    fn a_zero_budget_still_lets_one_request_through() {
        let t0 = Instant::now();
        let mut window = WindowState::new(budget(0, 1));
        assert_eq!(window.try_acquire(t0), Admission::Granted);
        assert_eq!(window.try_acquire(t0), Admission::WaitForCompletion);
    }

    #[tokio::test]
    async fn waiting_callers_are_served_in_arrival_order() {
        let limiter = Arc::new(RequestLimiter::new(RequestBudget { requests: 1, window: Duration::ZERO }));
        let first = limiter.acquire_within(WAIT).await.unwrap();
        let order = Arc::new(Mutex::new(Vec::new()));
        let mut waiters = Vec::new();
        for i in 0..5 {
            let limiter = Arc::clone(&limiter);
            let order = Arc::clone(&order);
            waiters.push(tokio::spawn(async move {
                let permit = limiter.acquire_within(WAIT).await.unwrap();
                order.lock().unwrap().push(i);
                drop(permit);
            }));
            // On the test's single thread, each waiter queues before the next one is spawned.
            for _ in 0..10 {
                tokio::task::yield_now().await;
            }
        }
        drop(first);
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
    }

    #[tokio::test(start_paused = true)]
    async fn callers_wait_for_the_window_instead_of_failing() {
        let window = Duration::from_millis(200);
        let limiter = Arc::new(RequestLimiter::new(RequestBudget { requests: 2, window }));
        let started = Instant::now();
        for _ in 0..5 {
            drop(limiter.acquire_within(WAIT).await.unwrap());
        }
        // 5 requests at 2 per window: the 3rd waits one window and the 5th two.
        assert_eq!(started.elapsed(), window * 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_delays_the_next_grant() {
        let limiter = Arc::new(RequestLimiter::new(RequestBudget::default()));
        let started = Instant::now();
        limiter.pause_for(Duration::from_millis(150));
        drop(limiter.acquire_within(WAIT).await.unwrap());
        assert_eq!(started.elapsed(), Duration::from_millis(150));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_beyond_the_limit_fails_at_once_with_the_remaining_time() {
        let limiter = Arc::new(RequestLimiter::new(RequestBudget::default()));
        limiter.pause_for(Duration::from_secs(60));
        let retry_after = limiter.acquire_within(Duration::from_secs(5)).await.unwrap_err();
        assert_eq!(retry_after, Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_must_not_wait_gets_a_slot_now_or_a_time_to_come_back_and_never_waits() {
        let limiter = Arc::new(RequestLimiter::new(budget(2, 10)));
        let started = Instant::now();
        let held = limiter.try_acquire_now().unwrap();
        drop(limiter.try_acquire_now().unwrap());
        // The budget is spent: refused at once, told to come back when a slot frees, the next
        // caller a pace (5 s) later.
        assert_eq!(limiter.try_acquire_now().unwrap_err(), secs(10));
        assert_eq!(limiter.try_acquire_now().unwrap_err(), secs(15));
        assert_eq!(Instant::now(), started, "no caller waited");
        drop(held);
        tokio::time::advance(secs(10)).await;
        drop(limiter.try_acquire_now().unwrap());
        drop(limiter.try_acquire_now().unwrap());
        assert!(limiter.try_acquire_now().is_err());

        // A 429 pauses the instance: refused until the pause ends, whatever the window says.
        tokio::time::advance(secs(60)).await;
        let comeback = limiter.pause_and_comeback(secs(30));
        assert_eq!(comeback, secs(30));
        assert_eq!(limiter.try_acquire_now().unwrap_err(), secs(35));
        tokio::time::advance(secs(30)).await;
        assert!(limiter.try_acquire_now().is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn callers_refused_together_all_get_a_slot_when_they_come_back() {
        // 50 callers against 10 requests per 10 s: each comes back when it was told to, and
        // every one of them is served, within the 50 s the budget needs for 50 requests.
        let limiter = Arc::new(RequestLimiter::new(budget(10, 10)));
        let started = Instant::now();
        let mut due: Vec<(Instant, usize)> = (0..50).map(|caller| (started, caller)).collect();
        let mut served = vec![None; 50];
        while let Some(index) = (0..due.len()).min_by_key(|&i| due[i]) {
            let (at, caller) = due.swap_remove(index);
            tokio::time::advance(at.saturating_duration_since(Instant::now())).await;
            match limiter.try_acquire_now() {
                Ok(permit) => {
                    drop(permit);
                    served[caller] = Some(Instant::now() - started);
                }
                Err(comeback) => due.push((Instant::now() + comeback, caller)),
            }
        }
        let served: Vec<Duration> = served.into_iter().map(Option::unwrap).collect();
        assert!(served.iter().all(|&at| at <= secs(50)), "{served:?}");
    }

    #[tokio::test]
    async fn a_queue_that_does_not_move_in_time_gives_up() {
        let limiter =
            Arc::new(RequestLimiter::new(RequestBudget { requests: 1, window: Duration::from_secs(1) }));
        let held = limiter.acquire_within(WAIT).await.unwrap();
        let retry_after = limiter.acquire_within(Duration::from_millis(50)).await.unwrap_err();
        assert_eq!(retry_after, Duration::from_secs(1));
        drop(held);
    }
}
