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
