//! Count the primes below `n`: the PRIMES job. **Example domain code: replace it with your own
//! CPU work.**
//!
//! It is plain synchronous Rust with no tokio in it; it runs on a rayon pool and reaches async code
//! only through [`crate::CpuPool`]. It shows the shape such work should have:
//!
//! * **Memory that grows with `√n`, not `n`.** A segmented sieve of Eratosthenes keeps the base
//!   primes up to `√n` and one 32 KiB segment buffer per rayon task: counting below 1e9 needs
//!   about 100 KiB (3,401 base primes), not 1 GB. That is a bound only for a bounded `n`: near
//!   `u64::MAX` the base primes alone take over a gigabyte, so a caller caps `n` (PRIMES at 1e9).
//! * **Parallel.** Segments are independent, so rayon spreads them over the pool.
//! * **Stoppable.** A CPU job cannot be interrupted from outside; it checks a [`Stop`] between
//!   segments, so a caller that gave up (a deadline, a shutdown) gets its thread back within one
//!   segment's work (a fraction of a millisecond) instead of after the whole count.

use rayon::prelude::*;

use crate::stop::{Stop, Stopped};

/// Odd numbers per segment: 32 Ki bytes of flags, which stays inside a core's L1/L2 cache while
/// it is sieved. Each segment covers `2 * SEGMENT` consecutive integers.
const SEGMENT: u64 = 32 * 1024;

/// Counts the primes `p < n`.
///
/// ```
/// assert_eq!(cpu::primes::count_below(100), 25);
/// assert_eq!(cpu::primes::count_below(2), 0); // 2 itself is not below 2
/// ```
pub fn count_below(n: u64) -> u64 {
    try_count_below(n, &Stop::new()).expect("a flag nobody sets never stops the count")
}

/// Counts the primes `p < n`, or gives up with [`Stopped`] once `stop` is set (it is checked
/// between segments).
pub fn try_count_below(n: u64, stop: &Stop) -> Result<u64, Stopped> {
    if n <= 2 {
        return Ok(0);
    }
    // The segments sieve odd numbers only; 2 is counted here.
    let base = odd_base_primes((n - 1).isqrt());
    // Odd numbers 3, 5, .., below n: index i stands for 2i + 1, for i in 1..odd_count.
    let odd_count = n / 2;
    let segments = odd_count.div_ceil(SEGMENT);
    let odd_primes = (0..segments)
        .into_par_iter()
        // One buffer per rayon split, reused across its segments: memory is bounded by the number
        // of splits alive at once (about one per thread), not by the number of segments.
        .map_init(Vec::new, |flags, segment| {
            stop.check()?;
            let low = (segment * SEGMENT).max(1);
            let high = ((segment + 1) * SEGMENT).min(odd_count);
            Ok(count_segment(low, high, &base, flags))
        })
        .try_reduce(|| 0, |a, b| Ok(a + b))?;
    Ok(odd_primes + 1)
}

/// Counts the odd primes `2i + 1` for `i` in `low..high`, using the odd base primes.
fn count_segment(low: u64, high: u64, base: &[u64], flags: &mut Vec<bool>) -> u64 {
    let len = usize::try_from(high - low).expect("a segment fits in memory");
    flags.clear();
    flags.resize(len, true);
    for &p in base {
        // Start at p*p (smaller multiples were crossed off by smaller primes), or at the first
        // odd multiple of p inside the segment.
        let square_index = p * p / 2;
        if square_index >= high {
            break;
        }
        let start = if square_index >= low {
            square_index
        } else {
            // The first index >= low whose number 2i + 1 is an odd multiple of p: those indices
            // are congruent to p / 2 modulo p.
            let offset = (p / 2 + p - low % p) % p;
            low + offset
        };
        let step = usize::try_from(p).expect("a base prime fits in usize");
        let first = usize::try_from(start - low).expect("inside the segment");
        for index in (first..len).step_by(step) {
            flags[index] = false;
        }
    }
    flags.iter().filter(|&&is_prime| is_prime).count() as u64
}

/// The odd primes `<= limit`, by a plain sieve (limit is at most √1e9 ≈ 31,623 here).
fn odd_base_primes(limit: u64) -> Vec<u64> {
    let limit = usize::try_from(limit).expect("√n fits in usize");
    let mut composite = vec![false; limit + 1];
    let mut primes = Vec::new();
    for candidate in (3..=limit).step_by(2) {
        if composite[candidate] {
            continue;
        }
        primes.push(candidate as u64);
        for multiple in (candidate * candidate..=limit).step_by(2 * candidate) {
            composite[multiple] = true;
        }
    }
    primes
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A slow, obviously right count to check the sieve against.
    fn naive(n: u64) -> u64 {
        (2..n).filter(|&k| (2..).take_while(|d| d * d <= k).all(|d| k % d != 0)).count() as u64
    }

    #[test]
    fn edges() {
        for (n, expected) in [(0, 0), (1, 0), (2, 0), (3, 1), (4, 2), (5, 2), (6, 3), (11, 4), (12, 5)] {
            assert_eq!(count_below(n), expected, "primes below {n}");
        }
    }

    #[test]
    fn matches_the_naive_count_around_segment_edges() {
        // Segment boundaries fall at multiples of 2 * SEGMENT; check every n around the first two,
        // and primes themselves as n (a prime is not below itself).
        let edge = 2 * SEGMENT;
        for n in (0..200).chain(edge - 50..edge + 50).chain(2 * edge - 20..2 * edge + 20) {
            assert_eq!(count_below(n), naive(n), "primes below {n}");
        }
        for p in [2, 3, 5, 7, 97, 65_537, 131_071] {
            assert_eq!(count_below(p + 1), count_below(p) + 1, "{p} is prime");
        }
    }

    #[test]
    fn known_values() {
        // pi(x) from OEIS A006880 (primes below 10^k).
        for (n, expected) in [(1_000_000, 78_498), (10_000_000, 664_579), (100_000_000, 5_761_455)] {
            assert_eq!(count_below(n), expected, "primes below {n}");
        }
    }

    #[test]
    fn known_value_at_one_billion() {
        assert_eq!(count_below(1_000_000_000), 50_847_534);
    }

    #[test]
    fn a_set_stop_flag_gives_up() {
        let stop = Stop::new();
        stop.set();
        assert_eq!(try_count_below(1_000_000_000, &stop), Err(Stopped));
    }
}
