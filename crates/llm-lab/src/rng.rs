//! A seeded random generator, the same on every machine: for sampling, and for the random
//! weights of test models.

/// A small portable random generator (SplitMix64): the same seed gives the same draws on every
/// machine and every version of this crate. Create one per generation and draw from it at every
/// step: a new generator with the same seed would repeat the same number.
///
/// ```
/// use llm_lab::rng::Rng;
/// let mut rng = Rng::new(42);
/// let (a, b) = (rng.next_f64(), rng.next_f64());
/// assert!((0.0..1.0).contains(&a) && a != b);
/// assert_eq!(Rng::new(42).next_f64(), a); // same seed, same draws
/// ```
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator started at `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}
