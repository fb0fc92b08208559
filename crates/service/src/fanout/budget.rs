//! Publish budgets: how many deliveries publishers may cause per second, and where each is
//! charged.
//!
//! A PUBLISH costs a write on every subscriber's connection, so one publisher could otherwise
//! make a thousand times the work it sends. Three budgets hold that cost, all of them the
//! generic cell rate algorithm ([`Gcra`]: a token bucket kept as one instant):
//!
//! * **Each connection's** (`--publish-budget`): a PUBLISH is charged for the subscribers it
//!   reaches on this replica, and for one delivery at least (so publishing to nobody is not
//!   free). Past the budget, the connection's next request waits.
//! * **The process's** (`--process-publish-budget`): every delivery made here, whoever
//!   published, so that the node's delivery rate (and a bystander's latency) holds whatever the
//!   number of publishing connections. A local publisher waits for it as for its own.
//! * **Each origin's, for messages from the broker** ([`OriginBudgets`]): a message another
//!   replica relays names the connection that published it, and is charged here, to that
//!   connection, at `--publish-budget` for the subscribers it reaches here. A publisher on
//!   replica A therefore costs replica B no more than it could cost if it were on B. A relayed
//!   message cannot wait (the broker does not), so one over budget is not delivered: its
//!   subscribers are told `LAG` (see `fanout/mod.rs`).

#[cfg(feature = "redis")]
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;

/// How far ahead of now an allowance may run: the burst that passes at once, a tenth of a
/// second's budget.
const BURST: Duration = Duration::from_millis(100);

/// Origins from the broker whose budgets are kept at once; past it, the ones that owe nothing
/// are forgotten, and if every one still owes, newcomers share one budget.
#[cfg(feature = "redis")]
pub(crate) const MAX_ORIGINS: usize = 4096;

/// A rate of deliveries a second: each costs `1 / rate` seconds of an allowance that may run
/// [`BURST`] ahead of now (GCRA).
#[derive(Debug, Clone)]
pub(crate) struct Gcra {
    /// The cost of one delivery.
    per_delivery: Duration,
    /// The instant the deliveries so far have used the allowance up to.
    used_until: Option<Instant>,
}

impl Gcra {
    /// A budget of `rate` deliveries a second.
    pub(crate) fn new(rate: usize) -> Self {
        let per_delivery = Duration::from_secs(1)
            .checked_div(u32::try_from(rate).unwrap_or(u32::MAX))
            .unwrap_or(Duration::ZERO);
        Self { per_delivery, used_until: None }
    }

    /// Records `deliveries` made at `now`.
    pub(crate) fn spend(&mut self, deliveries: usize, now: Instant) {
        let from = self.used_until.map_or(now, |until| until.max(now));
        let cost = self.per_delivery.saturating_mul(u32::try_from(deliveries).unwrap_or(u32::MAX));
        self.used_until = Some(from + cost);
    }

    /// When the allowance is back within its burst: before then, nothing more may be spent.
    pub(crate) fn resume(&self) -> Option<Instant> {
        self.used_until?.checked_sub(BURST)
    }

    /// Whether more may be spent at `now`.
    #[cfg(feature = "redis")]
    pub(crate) fn open(&self, now: Instant) -> bool {
        self.resume().is_none_or(|resume| resume <= now)
    }

    /// Spends `deliveries` if the allowance is open at `now`; whether it was.
    #[cfg(feature = "redis")]
    fn try_spend(&mut self, deliveries: usize, now: Instant) -> bool {
        let open = self.open(now);
        if open {
            self.spend(deliveries, now);
        }
        open
    }

    /// Whether the allowance has nothing left to pay back at `now`: a fresh budget is the same.
    #[cfg(feature = "redis")]
    fn settled(&self, now: Instant) -> bool {
        self.used_until.is_none_or(|until| until <= now)
    }
}

/// The process's budget, shared by every connection and the relay.
#[derive(Debug)]
pub(crate) struct ProcessBudget(Mutex<Gcra>);

impl ProcessBudget {
    pub(crate) fn new(rate: usize) -> Self {
        Self(Mutex::new(Gcra::new(rate)))
    }

    // The lock is held for a few instructions and never across an `.await` (tokio's docs on
    // `Mutex`: a blocking mutex is right for short critical sections).
    fn lock(&self) -> std::sync::MutexGuard<'_, Gcra> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records `deliveries` made at `now`; returns when the process is back within its burst.
    pub(crate) fn spend(&self, deliveries: usize, now: Instant) -> Option<Instant> {
        let mut gcra = self.lock();
        gcra.spend(deliveries, now);
        gcra.resume()
    }

    /// Spends `deliveries` if the budget is open at `now`; whether it was.
    #[cfg(feature = "redis")]
    pub(crate) fn try_spend(&self, deliveries: usize, now: Instant) -> bool {
        self.lock().try_spend(deliveries, now)
    }
}

/// One connection's budget: its own, and the process's as it last saw it.
#[derive(Debug)]
pub(crate) struct PublishBudget {
    own: Gcra,
    process: Arc<ProcessBudget>,
    /// When the process's budget is back, as of this connection's last PUBLISH. Kept here so
    /// that the check before every request reads no lock; a PUBLISH reads it anew.
    process_resume: Option<Instant>,
}

impl PublishBudget {
    /// `rate` deliveries a second of its own, within `process`'s.
    pub(crate) fn new(rate: usize, process: Arc<ProcessBudget>) -> Self {
        Self { own: Gcra::new(rate), process, process_resume: None }
    }

    /// Records a PUBLISH at `now` that delivers to `deliveries` subscribers here now: charged to
    /// the connection for one at least, to the process for those it makes.
    pub(crate) fn spend(&mut self, deliveries: usize, now: Instant) {
        self.own.spend(deliveries.max(1), now);
        self.process_resume = self.process.spend(deliveries, now);
    }

    /// Until when the connection must wait before its next request, if it must.
    pub(crate) fn wait_until(&self, now: Instant) -> Option<Instant> {
        let resume = match (self.own.resume(), self.process_resume) {
            (Some(own), Some(process)) => own.max(process),
            (own, process) => own.or(process)?,
        };
        (resume > now).then_some(resume)
    }
}

/// Who published a relayed message: a replica (a random number drawn at its start) and a
/// connection of it. Carried with the message through the broker (see `fanout/relay.rs`).
#[cfg(feature = "redis")]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Origin {
    pub(crate) replica: u64,
    pub(crate) connection: u64,
}

/// The budgets of the publishers other replicas relay here, at most [`MAX_ORIGINS`] of them.
#[cfg(feature = "redis")]
#[derive(Debug)]
pub(crate) struct OriginBudgets {
    rate: usize,
    origins: HashMap<Origin, Gcra>,
    /// Shared by the origins that find no room: forgotten origins cannot multiply the budget.
    crowd: Gcra,
    /// When the full map was last swept of origins that owe nothing.
    swept: Option<Instant>,
}

#[cfg(feature = "redis")]
impl OriginBudgets {
    /// Each origin at `rate` deliveries a second.
    pub(crate) fn new(rate: usize) -> Self {
        Self { rate, origins: HashMap::new(), crowd: Gcra::new(rate), swept: None }
    }

    /// Charges `deliveries` at `now` to `origin`, if its budget is open; whether it was.
    pub(crate) fn try_spend(&mut self, origin: Origin, deliveries: usize, now: Instant) -> bool {
        let known = self.origins.contains_key(&origin);
        // Forgetting an origin that owes nothing changes nothing: it would start afresh. The
        // sweep reads every origin, so it runs at most once per burst: a flood from origins
        // that find no room would otherwise pay it for every message.
        if !known && self.origins.len() >= MAX_ORIGINS && self.swept.is_none_or(|at| now >= at + BURST) {
            self.origins.retain(|_, gcra| !gcra.settled(now));
            self.swept = Some(now);
        }
        let gcra = if known || self.origins.len() < MAX_ORIGINS {
            self.origins.entry(origin).or_insert_with(|| Gcra::new(self.rate))
        } else {
            &mut self.crowd
        };
        gcra.try_spend(deliveries, now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_budget_s_help_says_its_burst() {
        let help = crate::config::help("publish-budget");
        assert!(BURST == Duration::from_secs(1) / 10 && help.contains("bursts of a tenth of it"), "{help}");
    }

    #[test]
    fn a_publisher_past_its_budget_waits_until_it_is_back_within_its_burst() {
        // 1,000 deliveries a second: one costs 1 ms, and the burst is 100 ms (100 deliveries).
        let mut budget = PublishBudget::new(1000, Arc::new(ProcessBudget::new(1_000_000_000)));
        let start = Instant::now();
        budget.spend(100, start);
        assert_eq!(budget.wait_until(start), None, "a burst of 100 passes at once");
        budget.spend(1000, start);
        assert_eq!(
            budget.wait_until(start),
            Some(start + Duration::from_millis(1000)),
            "1,100 ms used, 100 ahead"
        );
        let later = start + Duration::from_secs(5);
        assert_eq!(budget.wait_until(later), None, "an idle budget does not bank more than its burst");
        budget.spend(200, later);
        assert_eq!(budget.wait_until(later), Some(later + Duration::from_millis(100)));
    }

    #[test]
    fn publishing_to_nobody_costs_one_delivery() {
        let mut budget = PublishBudget::new(1000, Arc::new(ProcessBudget::new(1_000_000_000)));
        let start = Instant::now();
        for _ in 0..150 {
            budget.spend(0, start);
        }
        assert_eq!(budget.wait_until(start), Some(start + Duration::from_millis(50)), "150 ms used");
        let process = Arc::new(ProcessBudget::new(1));
        let mut quiet = PublishBudget::new(1000, Arc::clone(&process));
        quiet.spend(0, start);
        #[cfg(feature = "redis")]
        assert!(process.try_spend(1, start), "the process is charged only for deliveries made");
    }

    /// Twenty connections, each well within its own budget, are held together to the
    /// process's.
    #[test]
    fn the_process_budget_holds_whatever_the_number_of_publishers() {
        let process = Arc::new(ProcessBudget::new(1000));
        let mut publishers: Vec<_> =
            (0..20).map(|_| PublishBudget::new(1_000_000, Arc::clone(&process))).collect();
        let start = Instant::now();
        let (mut now, mut delivered) = (start, 0);
        while now < start + Duration::from_secs(10) {
            for publisher in &mut publishers {
                if publisher.wait_until(now).is_none() {
                    publisher.spend(10, now);
                    delivered += 10;
                }
            }
            now += Duration::from_millis(1);
        }
        // 10 s at 1,000 a second, the burst, and one PUBLISH per connection past it.
        assert!((10_000..=10_000 + 100 + 20 * 10).contains(&delivered), "{delivered}");
    }

    #[cfg(feature = "redis")]
    #[test]
    fn each_origin_is_held_to_its_budget_and_forgotten_origins_share_one() {
        let mut origins = OriginBudgets::new(1000);
        let start = Instant::now();
        let (a, b) = (Origin { replica: 1, connection: 1 }, Origin { replica: 1, connection: 2 });
        assert!(origins.try_spend(a, 100, start), "a burst passes");
        assert!(origins.try_spend(a, 500, start), "the allowance is open until it runs past the burst");
        assert!(!origins.try_spend(a, 1, start), "600 ms ahead: closed");
        assert!(origins.try_spend(b, 100, start), "another origin has its own");
        assert!(origins.try_spend(a, 1, start + Duration::from_millis(500)), "open again");
        // Fill the map with origins that still owe: a newcomer goes to the crowd's budget.
        for connection in 3..(MAX_ORIGINS as u64 + 1) {
            assert!(origins.try_spend(Origin { replica: 2, connection }, 1000, start));
        }
        let (c, d) = (Origin { replica: 3, connection: 1 }, Origin { replica: 3, connection: 2 });
        assert!(origins.try_spend(c, 1000, start), "the crowd's burst");
        assert!(!origins.try_spend(d, 1, start), "the crowd's budget is shared");
        let later = start + Duration::from_secs(60);
        assert!(origins.try_spend(d, 1, later), "settled origins are forgotten to make room");
        assert!(origins.origins.len() < MAX_ORIGINS);
    }

    /// With the map full, origins that owe nothing are forgotten at most once per burst: in
    /// between, a newcomer is charged to the crowd without a sweep of every origin.
    #[cfg(feature = "redis")]
    #[test]
    fn a_full_map_is_swept_at_most_once_per_burst() {
        let mut origins = OriginBudgets::new(1000);
        let start = Instant::now();
        for connection in 0..MAX_ORIGINS as u64 {
            assert!(origins.try_spend(Origin { replica: 1, connection }, 1, start), "1 ms each");
        }
        let newcomer = |connection| Origin { replica: 2, connection };
        assert!(origins.try_spend(newcomer(1), 1, start), "swept (nothing to forget): the crowd");
        let settled = start + Duration::from_millis(10);
        assert!(origins.try_spend(newcomer(2), 1, settled), "the crowd again");
        assert_eq!(origins.origins.len(), MAX_ORIGINS, "no sweep within the burst");
        assert!(origins.try_spend(newcomer(3), 1, start + BURST), "a burst later");
        assert_eq!(origins.origins.len(), 1, "swept: only the newcomer is kept");
    }
}
