//! The sampler against the lecture's definitions: frequencies follow softmax(z / T), top-k and
//! top-p never leave their set, T → 0 is argmax, a seed reproduces, bad settings are errors.

use llm_lab::logits::{softmax, softmax_with_temperature, Logits};
use llm_lab::sampling::{Rng, Sampler, SamplerConfig};

const Z: [f32; 6] = [2.0, 1.5, 0.3, -0.5, 1.0, -2.0];

fn frequencies(config: SamplerConfig, draws: usize) -> Vec<f64> {
    let mut s = Sampler::new(config).unwrap();
    let mut counts = vec![0usize; Z.len()];
    for _ in 0..draws {
        counts[s.sample(&Z, &[]).unwrap() as usize] += 1;
    }
    counts.iter().map(|&c| c as f64).collect()
}

/// Pearson's chi-square statistic of observed counts against expected probabilities.
fn chi_square(observed: &[f64], expected_p: &[f32]) -> f64 {
    let n: f64 = observed.iter().sum();
    observed
        .iter()
        .zip(expected_p)
        .filter(|(_, &p)| p > 0.0)
        .map(|(&o, &p)| (o - n * p as f64).powi(2) / (n * p as f64))
        .sum()
}

#[test]
fn frequencies_follow_softmax_over_temperature() {
    // 5 degrees of freedom: the 99.9 % quantile of chi-square is 20.5.
    for t in [0.5f32, 1.0, 2.0] {
        let obs = frequencies(SamplerConfig::with_temperature(t, 7), 40_000);
        let p = softmax_with_temperature(&Z, t).unwrap();
        let chi = chi_square(&obs, &p);
        assert!(chi < 20.5, "T = {t}: chi-square {chi}");
        // …and the test has power: the distribution at another temperature is rejected.
        let wrong = softmax_with_temperature(&Z, t * 1.5).unwrap();
        assert!(
            chi_square(&obs, &wrong) > 20.5,
            "T = {t}: cannot tell T from 1.5 T"
        );
    }
}

#[test]
fn top_k_and_top_p_never_draw_outside_their_set() {
    let mut s = Sampler::new(SamplerConfig {
        temperature: 1.5,
        top_k: Some(2),
        seed: 3,
        ..Default::default()
    })
    .unwrap();
    for _ in 0..2000 {
        assert!([0, 1].contains(&s.sample(&Z, &[]).unwrap()));
    }
    // softmax(Z) ≈ 0.443, 0.269, 0.081, 0.036, 0.163, 0.008: p = 0.5 needs {0, 1}, p = 0.75 needs {0, 1, 4}.
    let p = softmax(&Z);
    assert!(p[0] < 0.5 && p[0] + p[1] >= 0.5 && p[0] + p[1] < 0.75 && p[0] + p[1] + p[4] >= 0.75);
    for (top_p, allowed) in [
        (0.5f32, vec![0u32, 1]),
        (0.75, vec![0, 1, 4]),
        (0.4, vec![0]),
    ] {
        let mut s = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_p: Some(top_p),
            seed: 5,
            ..Default::default()
        })
        .unwrap();
        let mut seen = std::collections::BTreeSet::new();
        for _ in 0..3000 {
            let t = s.sample(&Z, &[]).unwrap();
            assert!(allowed.contains(&t), "top_p {top_p} drew {t}");
            seen.insert(t);
        }
        assert_eq!(
            seen.into_iter().collect::<Vec<_>>(),
            allowed,
            "top_p {top_p} should reach its whole set"
        );
    }
}

#[test]
fn top_p_one_keeps_everything_and_min_p_cuts_the_tail() {
    let mut s = Sampler::new(SamplerConfig {
        temperature: 1.0,
        top_p: Some(1.0),
        seed: 1,
        ..Default::default()
    })
    .unwrap();
    let steps = s.explain(&Z, &[]).unwrap();
    assert!(steps.kept.iter().all(|&k| k));
    let mut s = Sampler::new(SamplerConfig {
        temperature: 1.0,
        min_p: Some(0.3),
        seed: 1,
        ..Default::default()
    })
    .unwrap();
    let steps = s.explain(&Z, &[]).unwrap();
    // p / p_max ≥ 0.3 holds for tokens 0 (1.0), 1 (0.61) and 4 (0.37) only.
    assert_eq!(steps.kept, [true, true, false, false, true, false]);
    assert!((steps.probs.iter().sum::<f32>() - 1.0).abs() < 1e-5);
}

#[test]
fn temperature_to_zero_is_argmax() {
    let mut greedy = Sampler::new(SamplerConfig::greedy()).unwrap();
    assert_eq!(greedy.sample(&Z, &[]).unwrap(), 0);
    let mut cold = Sampler::new(SamplerConfig::with_temperature(1e-3, 9)).unwrap();
    for _ in 0..200 {
        assert_eq!(cold.sample(&Z, &[]).unwrap(), 0);
    }
    assert_eq!(
        softmax_with_temperature(&Z, 0.0).unwrap(),
        vec![1.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    );
}

#[test]
fn a_seed_reproduces_and_another_seed_differs() {
    let run = |seed| {
        let mut s = Sampler::new(SamplerConfig::with_temperature(1.0, seed)).unwrap();
        (0..50)
            .map(|_| s.sample(&Z, &[]).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(11), run(11));
    assert_ne!(run(11), run(12));
    // The generator is portable: these numbers are fixed forever.
    let mut r = Rng::new(0);
    assert_eq!(r.next_u64(), 0xE220_A839_7B1D_CDAF);
}

#[test]
fn repetition_penalty_lowers_recent_tokens() {
    let mut s = Sampler::new(SamplerConfig {
        repetition_penalty: 2.0,
        ..Default::default()
    })
    .unwrap();
    let steps = s.explain(&Z, &[0, 3]).unwrap();
    assert_eq!(steps.penalized[0], 1.0); // 2.0 / 2
    assert_eq!(steps.penalized[3], -1.0); // -0.5 × 2
    assert_eq!(steps.penalized[1], 1.5);
    assert_eq!(steps.token, 1, "token 0 lost its lead");
}

#[test]
fn softmax_is_stable_for_huge_logits() {
    let p = softmax(&[1000.0, 1001.0, 999.0]);
    assert!(p.iter().all(|x| x.is_finite()));
    assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    let p = softmax_with_temperature(&[5000.0, 4990.0], 0.1).unwrap();
    assert!(p[0] > 0.999 && p.iter().all(|x| x.is_finite()));
}

#[test]
fn invalid_parameters_are_clear_errors() {
    let bad = [
        (
            SamplerConfig {
                temperature: -0.5,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplerConfig {
                temperature: f32::NAN,
                ..Default::default()
            },
            "temperature",
        ),
        (
            SamplerConfig {
                top_p: Some(0.0),
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplerConfig {
                top_p: Some(1.5),
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplerConfig {
                top_p: Some(f32::NAN),
                ..Default::default()
            },
            "top_p",
        ),
        (
            SamplerConfig {
                top_k: Some(0),
                ..Default::default()
            },
            "top_k",
        ),
        (
            SamplerConfig {
                min_p: Some(-0.1),
                ..Default::default()
            },
            "min_p",
        ),
        (
            SamplerConfig {
                repetition_penalty: 0.0,
                ..Default::default()
            },
            "repetition_penalty",
        ),
    ];
    for (config, word) in bad {
        let e = Sampler::new(config.clone()).unwrap_err().to_string();
        assert!(e.contains(word), "{config:?}: {e}");
    }
    let mut s = Sampler::new(SamplerConfig::greedy()).unwrap();
    assert!(s
        .sample(&[1.0, f32::NAN], &[])
        .unwrap_err()
        .to_string()
        .contains("NaN"));
    assert!(s.sample(&[], &[]).is_err());
    assert!(Logits::new(vec![0.0, f32::NAN]).is_err());
    assert!(softmax_with_temperature(&Z, -1.0).is_err());
}

#[test]
fn logits_views() {
    let l = Logits::new(Z.to_vec()).unwrap();
    let top = l.top_k(3);
    assert_eq!(top.iter().map(|t| t.id).collect::<Vec<_>>(), [0, 1, 4]);
    assert!((top[0].prob - softmax(&Z)[0]).abs() < 1e-7);
    let uniform = Logits::new(vec![0.0; 8]).unwrap();
    assert!((uniform.entropy() - 3.0).abs() < 1e-5);
    let sure = Logits::new(vec![100.0, 0.0, 0.0]).unwrap();
    assert!(sure.entropy() < 1e-3);
    assert!(l.to_html().contains("<table>"));
}

// ---- extreme inputs (issue 11): every function that returns probabilities is total ----------

use llm_lab::sampling::top_p_set;

const INF: f32 = f32::INFINITY;

/// Logit vectors at the edges of f32: huge, tiny, infinite, tied.
fn extreme_logits() -> Vec<Vec<f32>> {
    vec![
        vec![1e38, -1e38, 0.0],
        vec![-1e38, 1e38, 1e38],
        vec![f32::MAX, f32::MIN, 0.0],
        vec![3e38, -3e38],
        vec![1e-38, -1e-38, 0.0],
        vec![0.0, 5.0, 1.0],
        vec![-INF, 2.0, -INF],
        vec![INF, 0.0, -INF],
        vec![0.0, INF, INF],
        vec![f32::MIN_POSITIVE, 0.0],
        vec![7.0; 5],
    ]
}

const TEMPERATURES: [f32; 10] = [1e-45, 1e-40, 1e-38, 1e-20, 1e-3, 0.5, 1.0, 10.0, 1e3, 1e6];

fn assert_distribution(p: &[f32], what: &str) {
    assert!(
        p.iter().all(|x| x.is_finite() && *x >= 0.0 && *x <= 1.0),
        "{what}: {p:?}"
    );
    let sum: f32 = p.iter().sum();
    assert!((sum - 1.0).abs() < 1e-5, "{what}: sums to {sum}: {p:?}");
}

/// The limit T → 0: all the probability on the largest logits, shared among ties.
fn limit_at_zero(z: &[f32]) -> Vec<f32> {
    let max = z.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let n = z.iter().filter(|&&x| x == max).count() as f32;
    z.iter()
        .map(|&x| if x == max { 1.0 / n } else { 0.0 })
        .collect()
}

#[test]
fn softmax_is_a_distribution_on_extreme_logits() {
    for z in extreme_logits() {
        assert_distribution(&softmax(&z), &format!("softmax({z:?})"));
        let l = Logits::new(z.clone());
        if z.contains(&INF) {
            assert!(l.is_err(), "+inf accepted by Logits::new: {z:?}");
            continue;
        }
        let l = l.unwrap();
        assert_distribution(&l.softmax(), &format!("Logits::softmax({z:?})"));
        assert!(l.entropy().is_finite() && l.entropy() >= 0.0, "{z:?}");
        for t in l.top_k(3) {
            assert!(t.prob.is_finite(), "{z:?}: {t:?}");
        }
    }
    // +inf logits share everything; -inf logits get nothing.
    assert_eq!(softmax(&[0.0, INF, INF]), vec![0.0, 0.5, 0.5]);
    assert_eq!(softmax(&[-INF, 2.0, -INF]), vec![0.0, 1.0, 0.0]);
    assert_eq!(softmax(&[1e38, -1e38, 0.0]), vec![1.0, 0.0, 0.0]);
}

#[test]
fn every_temperature_gives_a_distribution_and_tiny_ones_the_greedy_limit() {
    for z in extreme_logits() {
        for t in TEMPERATURES {
            let p = softmax_with_temperature(&z, t).unwrap();
            assert_distribution(&p, &format!("softmax({z:?} / {t})"));
            if let Ok(l) = Logits::new(z.clone()) {
                assert_distribution(&l.softmax_with_temperature(t).unwrap(), "Logits");
            }
        }
        let p = softmax_with_temperature(&z, 1e-45).unwrap();
        assert_eq!(p, limit_at_zero(&z), "T = 1e-45, z = {z:?}");
    }
    // A large temperature flattens ordinary logits towards uniform.
    let p = softmax_with_temperature(&Z, 1e6).unwrap();
    assert!(p.iter().all(|&x| (x - 1.0 / 6.0).abs() < 1e-5), "{p:?}");
}

#[test]
fn nan_logits_are_clear_errors() {
    for z in [
        vec![f32::NAN],
        vec![0.0, f32::NAN, 1.0],
        vec![f32::NAN, INF],
    ] {
        for t in [0.0, 1e-45, 1.0] {
            let e = softmax_with_temperature(&z, t).unwrap_err().to_string();
            assert!(e.contains("NaN"), "{e}");
            let mut s = Sampler::new(SamplerConfig::with_temperature(t, 1)).unwrap();
            let e = s.sample(&z, &[]).unwrap_err().to_string();
            assert!(e.contains("NaN"), "{e}");
        }
        assert!(Logits::new(z.clone())
            .unwrap_err()
            .to_string()
            .contains("NaN"));
        // The infallible softmax keeps the NaN visible instead of inventing a distribution.
        assert!(softmax(&z).iter().all(|p| p.is_nan()), "{z:?}");
    }
    // Only -inf: no token is possible.
    let none = [-INF, -INF];
    assert!(softmax_with_temperature(&none, 1.0).is_err());
    assert!(Logits::new(none.to_vec()).is_err());
    for t in [0.0, 1.0] {
        let mut s = Sampler::new(SamplerConfig::with_temperature(t, 1)).unwrap();
        let e = s.sample(&none, &[]).unwrap_err().to_string();
        assert!(e.contains("-inf"), "{e}");
    }
}

#[test]
fn tiny_temperatures_sample_the_largest_logit_never_token_0() {
    for t in [1e-45f32, 1e-40, 1e-38, 1e-30] {
        let mut s = Sampler::new(SamplerConfig::with_temperature(t, 9)).unwrap();
        for _ in 0..50 {
            assert_eq!(s.sample(&[0.0, 5.0, 1.0], &[]).unwrap(), 1, "T = {t}");
            assert_eq!(s.sample(&[1e38, -1e38, 3e38], &[]).unwrap(), 2, "T = {t}");
        }
        let steps = s.explain(&[-1e38, 1e38, 1e38], &[]).unwrap();
        assert_eq!(steps.probs, vec![0.0, 0.5, 0.5], "T = {t}");
        assert!([1, 2].contains(&steps.token));
    }
    // +inf logits share the draw in the limit; other tokens are never drawn.
    let mut s = Sampler::new(SamplerConfig::with_temperature(1.0, 5)).unwrap();
    let mut seen = [0usize; 3];
    for _ in 0..400 {
        seen[s.sample(&[0.0, INF, INF], &[]).unwrap() as usize] += 1;
    }
    assert!(seen[0] == 0 && seen[1] > 100 && seen[2] > 100, "{seen:?}");
}

#[test]
fn huge_temperatures_and_every_stage_stay_finite() {
    for t in TEMPERATURES {
        for z in extreme_logits() {
            for (top_k, top_p, min_p) in [
                (None, None, None),
                (Some(1), None, None),
                (None, Some(1e-45), None),
                (None, Some(1.0), None),
                (None, Some(0.5), Some(1.0)),
                (Some(2), Some(0.9), Some(0.0)),
            ] {
                let mut s = Sampler::new(SamplerConfig {
                    temperature: t,
                    top_k,
                    top_p,
                    min_p,
                    repetition_penalty: 1.3,
                    seed: 3,
                    ..Default::default()
                })
                .unwrap();
                let steps = s.explain(&z, &[0, 1]).unwrap();
                let what = format!("T = {t}, z = {z:?}, {top_k:?} {top_p:?} {min_p:?}");
                assert_distribution(&steps.probs, &what);
                assert!(
                    steps.probs[steps.token as usize] > 0.0,
                    "{what}: drew a token of probability 0"
                );
                assert!(steps.kept[steps.token as usize], "{what}");
            }
        }
    }
}

#[test]
fn top_p_at_its_edges() {
    let p = [0.1, 0.5, 0.1, 0.3];
    assert_eq!(top_p_set(&p, 1e-45), vec![1]);
    assert_eq!(top_p_set(&p, 0.0), vec![1]);
    assert_eq!(top_p_set(&p, 0.5), vec![1]);
    assert_eq!(top_p_set(&p, 0.5 + 1e-3), vec![1, 3]);
    assert_eq!(top_p_set(&p, 1.0), vec![0, 1, 2, 3]);
    assert_eq!(top_p_set(&p, 2.0), vec![0, 1, 2, 3]);
    assert_eq!(top_p_set(&[0.0, 1.0, 0.0], 1.0), vec![1]);
    assert!(top_p_set(&[], 0.9).is_empty());
    // The sampler: p = 1e-45 is greedy, p = 1 keeps every token; outside (0, 1] is an error.
    let mut s = Sampler::new(SamplerConfig {
        temperature: 1.0,
        top_p: Some(1e-45),
        ..Default::default()
    })
    .unwrap();
    for _ in 0..50 {
        assert_eq!(s.sample(&Z, &[]).unwrap(), 0);
    }
    let steps = Sampler::new(SamplerConfig {
        temperature: 1.0,
        top_p: Some(1.0),
        ..Default::default()
    })
    .unwrap()
    .explain(&Z, &[])
    .unwrap();
    assert!(steps.kept.iter().all(|&k| k));
    for bad in [0.0, -1e-45, 1.0 + 1e-6, f32::NAN, INF] {
        let e = Sampler::new(SamplerConfig {
            temperature: 1.0,
            top_p: Some(bad),
            ..Default::default()
        });
        assert!(e.is_err(), "top_p = {bad} accepted");
    }
}
