//! A loop's clock, and the compact ticks connections are stamped with.
//!
//! A connection stamps its last activity and its handler's deadline as
//! [`Tick`]s: milliseconds since the loop started, in 32 bits, so that an
//! idle connection costs 4 bytes per stamp instead of an `Instant`'s 16.
//! Ticks wrap every 49.7 days; every comparison is made relative to the
//! loop's current tick, so only durations up to [`MAX_SPAN`] (24.8 days)
//! are meaningful. Longer timeouts are clamped to it by the builder and the
//! handler context.

use std::num::NonZeroU32;
use std::time::{Duration, Instant};

/// The longest span two ticks can be apart and still compare correctly.
pub(crate) const MAX_SPAN: Duration = Duration::from_millis(i32::MAX as u64);

/// A moment on a loop's clock: milliseconds since the loop started, plus
/// one, wrapping; never zero, so `Option<Tick>` takes 4 bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Tick(NonZeroU32);

impl Tick {
    /// Whether this tick comes before `other` (both within [`MAX_SPAN`] of
    /// each other).
    pub(crate) fn is_before(self, other: Tick) -> bool {
        (self.0.get().wrapping_sub(other.0.get()) as i32) < 0
    }
}

/// A loop's clock: when it started, and the time of the current turn.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock {
    epoch: Instant,
    /// The time of this turn, read once after each wait.
    pub(crate) now: Instant,
    /// `now` as a tick, worked out once per turn: connections are stamped
    /// with it on every read and write.
    now_tick: Tick,
}

impl Clock {
    pub(crate) fn start() -> Clock {
        let now = Instant::now();
        Clock {
            epoch: now,
            now,
            now_tick: Tick(NonZeroU32::MIN),
        }
    }

    /// Reads the time for a new turn.
    pub(crate) fn advance(&mut self) {
        self.set(Instant::now());
    }

    fn set(&mut self, now: Instant) {
        self.now = now;
        self.now_tick = self.tick_at(now);
    }

    /// The current turn's tick.
    pub(crate) fn tick(&self) -> Tick {
        self.now_tick
    }

    /// The tick `after` from now (at most [`MAX_SPAN`]).
    pub(crate) fn tick_after(&self, after: Duration) -> Tick {
        self.tick_at(self.now + after.min(MAX_SPAN))
    }

    fn tick_at(&self, at: Instant) -> Tick {
        let ms = at.saturating_duration_since(self.epoch).as_millis() as u32;
        Tick(NonZeroU32::new(ms.wrapping_add(1)).unwrap_or(NonZeroU32::MIN))
    }

    /// The instant of `tick`, taken as the one nearest to now (within
    /// [`MAX_SPAN`] either way).
    pub(crate) fn instant(&self, tick: Tick) -> Instant {
        let now = self.tick().0.get();
        let ahead = tick.0.get().wrapping_sub(now) as i32;
        let offset = Duration::from_millis(u64::from(ahead.unsigned_abs()));
        if ahead >= 0 {
            self.now + offset
        } else {
            self.now.checked_sub(offset).unwrap_or(self.epoch)
        }
    }

    /// Whether `tick` has come (it is now or in the past).
    pub(crate) fn reached(&self, tick: Tick) -> bool {
        (tick.0.get().wrapping_sub(self.tick().0.get()) as i32) <= 0
    }

    /// The tick `span` after `from` (at most [`MAX_SPAN`]).
    pub(crate) fn later(from: Tick, span: Duration) -> Tick {
        let ms = span.min(MAX_SPAN).as_millis() as u32;
        Tick(NonZeroU32::new(from.0.get().wrapping_add(ms)).unwrap_or(NonZeroU32::MIN))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_round_trip_and_compare_across_the_wrap() {
        let mut clock = Clock::start();
        let start = clock.tick();
        let later = clock.tick_after(Duration::from_secs(2));
        assert!(clock.reached(start));
        assert!(!clock.reached(later));
        let back = clock.instant(later);
        assert!(back >= clock.now + Duration::from_millis(1999));
        assert!(back <= clock.now + Duration::from_millis(2001));
        clock.set(clock.now + Duration::from_secs(3));
        assert!(clock.reached(later));
        // Near the wrap: a tick just below u32::MAX and one just past it.
        let before_wrap = Tick(NonZeroU32::new(u32::MAX - 5).unwrap());
        let after_wrap = Clock::later(before_wrap, Duration::from_millis(10));
        assert!(after_wrap.0.get() < 10);
        let ahead = after_wrap.0.get().wrapping_sub(before_wrap.0.get()) as i32;
        assert_eq!(ahead, 10);
    }
}
