//! The autoregressive loop on scripted models with designed logits.

use llm_lab::generate::{GenerateOptions, Generation, StopReason};
use llm_lab::testing::ScriptedModel;

#[test]
fn stops_exactly_at_the_end_token() {
    // 0 → 1 → 2 → 3 → 4 (end)
    let mut m = ScriptedModel::counting(6, |t| t + 1);
    m.stop_tokens = vec![4];
    let out = Generation::new(&m, &[0], GenerateOptions::greedy(100))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(out.tokens(), [1, 2, 3]);
    assert_eq!(out.stop, StopReason::EndOfText(4));
    assert_eq!(out.text, "<1><2><3>");
    assert_eq!(
        m.calls.borrow().len(),
        4,
        "the end token costs one call and is not appended"
    );
}

#[test]
fn never_exceeds_the_budget() {
    let m = ScriptedModel::counting(5, |t| (t + 1) % 5);
    for budget in [0, 1, 7] {
        let out = Generation::new(&m, &[0], GenerateOptions::greedy(budget))
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(out.tokens().len(), budget);
        assert_eq!(out.stop, StopReason::MaxTokens);
    }
}

#[test]
fn every_end_token_stops() {
    let mut m = ScriptedModel::counting(8, |t| t + 1);
    m.stop_tokens = vec![6, 3];
    let out = Generation::new(&m, &[0], GenerateOptions::greedy(100))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(out.stop, StopReason::EndOfText(3));
}

#[test]
fn keeps_the_last_l_tokens_when_the_window_is_full() {
    let m = ScriptedModel::counting(100, |t| t + 1);
    let options = GenerateOptions {
        context_window: Some(3),
        ..GenerateOptions::greedy(5)
    };
    let out = Generation::new(&m, &[10, 11], options)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(out.tokens(), [12, 13, 14, 15, 16]);
    let calls = m.calls.borrow();
    assert_eq!(calls[0], [10, 11]);
    assert_eq!(calls[1], [10, 11, 12]);
    assert_eq!(calls[2], [11, 12, 13], "the oldest token leaves the window");
    assert_eq!(calls[4], [13, 14, 15]);
}

#[test]
fn stop_strings_cut_the_text() {
    let m = ScriptedModel::new(&["a", "b", ".", "\n"], |t| {
        let next = [1, 2, 3, 0][*t.last().unwrap() as usize];
        (0..4).map(|i| if i == next { 5.0 } else { 0.0 }).collect()
    });
    let options = GenerateOptions {
        stop_strings: vec![".\n".into()],
        ..GenerateOptions::greedy(50)
    };
    let out = Generation::new(&m, &[0], options)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(out.text, "b");
    assert_eq!(out.stop, StopReason::StopString(".\n".into()));
}

#[test]
fn sampled_generation_reproduces_with_a_seed() {
    let m = ScriptedModel::new(&["x", "y", "z"], |_| vec![1.0, 1.0, 1.0]);
    let run = |seed| {
        Generation::new(&m, &[0], GenerateOptions::sampled(30, 1.0, seed))
            .unwrap()
            .finish()
            .unwrap()
            .tokens()
    };
    assert_eq!(run(1), run(1));
    assert_ne!(run(1), run(2));
}

#[test]
fn invalid_settings_are_errors() {
    let m = ScriptedModel::counting(4, |t| t);
    assert!(Generation::new(&m, &[], GenerateOptions::greedy(3)).is_err());
    assert!(Generation::new(
        &m,
        &[0],
        GenerateOptions {
            context_window: Some(0),
            ..Default::default()
        }
    )
    .is_err());
    assert!(Generation::new(&m, &[0], GenerateOptions::sampled(3, -1.0, 0)).is_err());
    let nan = ScriptedModel::new(&["a", "b"], |_| vec![f32::NAN, 0.0]);
    let mut g = Generation::new(&nan, &[0], GenerateOptions::greedy(3)).unwrap();
    let e = g.next().unwrap().unwrap_err().to_string();
    assert!(e.contains("NaN") || e.contains("invalid numbers"), "{e}");
    assert!(g.next().is_none(), "an error ends the generation");
}

#[test]
fn a_prompt_that_does_not_fit_is_refused_unless_a_window_is_asked_for() {
    let m = ScriptedModel::counting(5, |t| (t + 1) % 5); // context 1024
    let long = vec![1u32; 1024];
    let e = Generation::new(&m, &long, GenerateOptions::greedy(3))
        .err()
        .expect("a prompt filling the context must be refused")
        .to_string();
    assert!(e.contains("context window of 1024"), "{e}");
    // With an explicit window L the loop keeps the last L tokens, as the lecture's loop does.
    let windowed = GenerateOptions {
        context_window: Some(16),
        ..GenerateOptions::greedy(2)
    };
    let out = Generation::new(&m, &long, windowed)
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(out.tokens().len(), 2);
    assert!(m.calls.borrow().iter().all(|c| c.len() == 16));
}
