//! Message sampling (IDENTIFY's `sample_rate`) as nsqd decides it, with
//! the random source injected: the driver seeds it, so a test can replay
//! exactly which messages a client got.

/// nsqd's rule for a sample rate `r` in 1..=99: a message is dropped when
/// a uniform draw from 0..100 exceeds `r`, so `r + 1` percent are kept;
/// at 0 every message is kept. The draws come from SplitMix64 over the
/// seed the caller gives.
#[derive(Debug, Clone)]
pub struct Sampler {
    rate: i32,
    state: u64,
}

impl Sampler {
    /// A sampler for `rate` (IDENTIFY's, already validated to 0..=99),
    /// drawing from `seed`.
    pub fn new(rate: i32, seed: u64) -> Self {
        Sampler { rate, state: seed }
    }

    /// Whether the next message goes to the client. A dropped message is
    /// the driver's to finish on the client's behalf, as nsqd does.
    pub fn keep(&mut self) -> bool {
        if self.rate <= 0 {
            return true;
        }
        i64::from(self.draw()) <= i64::from(self.rate)
    }

    /// A uniform draw from 0..100.
    fn draw(&mut self) -> u32 {
        // SplitMix64: a full-period generator whose every output is mixed.
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        // The top 32 bits scaled to 0..100 (Lemire's multiply-shift).
        (((z >> 32) * 100) >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_zero_keeps_everything() {
        let mut s = Sampler::new(0, 7);
        assert!((0..1000).all(|_| s.keep()));
    }

    #[test]
    fn rate_r_keeps_r_plus_one_percent_and_a_seed_replays() {
        for rate in [1, 10, 50, 99] {
            let mut s = Sampler::new(rate, 42);
            let kept = (0..100_000).filter(|_| s.keep()).count();
            let expected = (rate as usize + 1) * 1000;
            assert!(
                kept.abs_diff(expected) < 1000,
                "rate {rate}: kept {kept} of 100000, expected about {expected}"
            );
        }
        let run = |seed| {
            let mut s = Sampler::new(30, seed);
            (0..64).map(|_| s.keep()).collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }

    #[test]
    fn draws_cover_zero_to_ninety_nine() {
        let mut s = Sampler::new(50, 1);
        let mut seen = [false; 100];
        for _ in 0..10_000 {
            seen[s.draw() as usize] = true;
        }
        assert!(seen.iter().all(|&b| b));
    }
}
