//! Monotonic event times to wall-clock times.
//!
//! The XDP program stamps events with `bpf_ktime_get_ns`, which is `CLOCK_MONOTONIC`: it does not
//! jump with NTP or `date -s`, but it means nothing outside this boot. The reader converts with
//! the offset between `CLOCK_REALTIME` and `CLOCK_MONOTONIC` taken when it converts, so a clock
//! step shows in the records from then on, and never reorders the events of one window.

use jiff::Timestamp;

/// The offset between wall-clock time and `CLOCK_MONOTONIC`, at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// `CLOCK_REALTIME - CLOCK_MONOTONIC`, in nanoseconds.
    offset_ns: i128,
}

impl WallClock {
    /// The offset now. The realtime clock is read between two monotonic readings and compared
    /// with their midpoint, which halves the error a preemption between the calls would add.
    #[must_use]
    pub fn now() -> Self {
        let mono1 = clock_ns(libc::CLOCK_MONOTONIC);
        let real = clock_ns(libc::CLOCK_REALTIME);
        let mono2 = clock_ns(libc::CLOCK_MONOTONIC);
        WallClock {
            offset_ns: real - i128::midpoint(mono1, mono2),
        }
    }

    /// A clock with a fixed offset (tests, replays).
    #[must_use]
    pub const fn with_offset_ns(offset_ns: i128) -> Self {
        WallClock { offset_ns }
    }

    /// The wall-clock time of a `CLOCK_MONOTONIC` reading, in UTC.
    #[must_use]
    pub fn timestamp(&self, mono_ns: u64) -> Timestamp {
        // Out of range only for offsets no real clock has (beyond year 9999): clamp, not panic.
        Timestamp::from_nanosecond(i128::from(mono_ns) + self.offset_ns).unwrap_or(
            if self.offset_ns < 0 {
                Timestamp::MIN
            } else {
                Timestamp::MAX
            },
        )
    }
}

/// Now on `CLOCK_MONOTONIC` in nanoseconds, the clock `bpf_ktime_get_ns` reads.
#[must_use]
pub fn monotonic_ns() -> u64 {
    u64::try_from(clock_ns(libc::CLOCK_MONOTONIC)).unwrap_or(0)
}

fn clock_ns(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; both clocks exist on every Linux.
    let rc = unsafe { libc::clock_gettime(clock, &raw mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime({clock})");
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_offset_converts_exactly() {
        let c = WallClock::with_offset_ns(1_700_000_000_000_000_000);
        assert_eq!(
            c.timestamp(5_000_000_123).to_string(),
            "2023-11-14T22:13:25.000000123Z"
        );
    }

    #[test]
    fn now_matches_the_system_clock() {
        let c = WallClock::now();
        let then = c.timestamp(monotonic_ns());
        let diff = Timestamp::now().duration_since(then).abs();
        assert!(diff.as_millis() < 1000, "{diff:?}");
    }

    #[test]
    fn absurd_offsets_clamp() {
        assert_eq!(
            WallClock::with_offset_ns(i128::MAX / 2).timestamp(0),
            Timestamp::MAX
        );
        assert_eq!(
            WallClock::with_offset_ns(i128::MIN / 2).timestamp(0),
            Timestamp::MIN
        );
    }
}
