//! A small deterministic random generator (SplitMix64) for everything host-side: initial
//! weights, data order and augmentation.
//!
//! Why our own: resume must reproduce the data order and augmentation of an interrupted run
//! bit for bit, also after a dependency upgrade, so the stream is fixed here rather than
//! borrowed from a crate whose generators may change between versions. Every stream is
//! derived from the run seed and a few labels (epoch, step), so nothing but those labels
//! needs to be saved in a checkpoint.

#[derive(Debug, Clone)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// A stream for `(seed, labels...)`, independent of the streams of other labels.
    pub fn derive(seed: u64, labels: &[u64]) -> Self {
        let mut rng = Self::new(seed ^ 0x6A09_E667_F3BC_C908);
        for &label in labels {
            let mixed = rng.next_u64() ^ label.wrapping_mul(0x9E37_79B9_7F4A_7C15);
            rng = Self::new(mixed);
            rng.next_u64();
        }
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1) with 53 bits.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n); `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        // Lemire's multiply-shift; the bias for n << 2^64 is negligible for our uses.
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }

    /// Fisher-Yates shuffle.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}
