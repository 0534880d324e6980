use super::*;

/// Class-conditional likelihoods of 4 observable kinds for 3 classes (rows sum to 1): the
/// classes overlap, so the posteriors depend on the prior.
const LIKELIHOOD: [[f32; 4]; 3] = [
    [0.6, 0.2, 0.1, 0.1],
    [0.2, 0.5, 0.2, 0.1],
    [0.1, 0.2, 0.3, 0.4],
];

/// The exact (Bayes) posterior of observation `o` under `prior`.
fn posterior(o: usize, prior: [f32; 3]) -> [f32; 3] {
    let mut p = [0.0; 3];
    let mut sum = 0.0;
    for y in 0..3 {
        p[y] = LIKELIHOOD[y][o] * prior[y];
        sum += p[y];
    }
    p.map(|v| v / sum)
}

/// A stream of `n` observations whose empirical mix is exactly `prior` (counts rounded), in an
/// interleaved order so every window sees the same mix.
fn stream(n: usize, prior: [f32; 3]) -> [usize; 1000] {
    let mut counts = [[0usize; 4]; 3];
    for y in 0..3 {
        for o in 0..4 {
            counts[y][o] = (n as f32 * prior[y] * LIKELIHOOD[y][o]).round() as usize;
        }
    }
    let mut out = [0usize; 1000];
    let mut k = 0;
    while k < n {
        let before = k;
        for row in counts.iter_mut() {
            for (o, c) in row.iter_mut().enumerate() {
                if *c > 0 && k < n {
                    *c -= 1;
                    out[k] = o;
                    k += 1;
                }
            }
        }
        if k == before {
            break;
        }
    }
    out
}

const UNIFORM: [f32; 3] = [1.0 / 3.0; 3];

fn config(window: usize) -> PriorConfig {
    PriorConfig {
        window,
        ..PriorConfig::default()
    }
}

#[test]
fn em_recovers_a_planted_prior_shift() {
    let shifted = [0.7, 0.2, 0.1];
    let mut a = PriorAdapter::<400>::new(&UNIFORM, config(400)).unwrap();
    let obs = stream(400, shifted);
    let mut last = [0.0; 3];
    for (i, &o) in obs.iter().take(400).enumerate() {
        let mut p = posterior(o, UNIFORM);
        let step = a.observe(&mut p).unwrap();
        // Warm-started from the previous prior, EM settles quickly once the window holds many.
        assert!(i < 100 || step.converged, "image {i}: {step:?}");
        last = p;
        let s: f32 = p.iter().sum();
        assert!((s - 1.0).abs() < 1e-5);
    }
    for (got, want) in a.prior().iter().zip(shifted) {
        assert!(
            (got - want).abs() < 0.03,
            "prior {:?} vs {shifted:?}",
            a.prior()
        );
    }
    // The adapted posterior of the last image is its Bayes posterior under the planted prior.
    let want = posterior(obs[399], shifted);
    for (g, w) in last.iter().zip(want) {
        assert!((g - w).abs() < 0.03, "{last:?} vs {want:?}");
    }
}

#[test]
fn without_shift_the_prior_and_posteriors_stay() {
    let mut a = PriorAdapter::<300>::new(&UNIFORM, config(300)).unwrap();
    let obs = stream(300, UNIFORM);
    for &o in obs.iter().take(300) {
        let mut p = posterior(o, UNIFORM);
        a.observe(&mut p).unwrap();
    }
    for v in a.prior() {
        assert!((v - 1.0 / 3.0).abs() < 0.02, "{:?}", a.prior());
    }
    let mut p = posterior(2, UNIFORM);
    let before = p;
    a.observe(&mut p).unwrap();
    for (g, w) in p.iter().zip(before) {
        assert!((g - w).abs() < 0.02);
    }
}

#[test]
fn the_window_forgets_the_old_mix() {
    let (old, new) = ([0.1, 0.1, 0.8], [0.8, 0.1, 0.1]);
    let mut a = PriorAdapter::<100>::new(&UNIFORM, config(100)).unwrap();
    for &o in stream(300, old).iter().take(300) {
        a.observe(&mut posterior(o, UNIFORM)).unwrap();
    }
    assert!(a.prior()[2] > 0.7, "{:?}", a.prior());
    for &o in stream(100, new).iter().take(100) {
        let step = a.observe(&mut posterior(o, UNIFORM)).unwrap();
        assert_eq!(step.window_len, 100);
    }
    assert_eq!(a.len(), 100);
    assert!((a.prior()[0] - 0.8).abs() < 0.05, "{:?}", a.prior());
}

#[test]
fn a_class_never_seen_keeps_the_floor() {
    let cfg = PriorConfig {
        window: 50,
        floor: 0.03,
        ..PriorConfig::default()
    };
    let mut a = PriorAdapter::<50>::new(&UNIFORM, cfg).unwrap();
    for _ in 0..200 {
        // Certain class-0 posteriors: EM would drive the other priors to 0.
        a.observe(&mut [1.0, 0.0, 0.0]).unwrap();
    }
    let floor = 0.03 / 3.0;
    for v in &a.prior()[1..] {
        assert!(*v >= floor * (1.0 - 1e-6) && *v < 0.02, "{:?}", a.prior());
    }
    // A clear class-2 image is still called class 2.
    let mut p = [0.001, 0.001, 0.998];
    a.observe(&mut p).unwrap();
    assert!(p[2] > p[0], "{p:?}");
}

#[test]
fn iterations_are_bounded() {
    let cfg = PriorConfig {
        window: 100,
        max_iterations: 2,
        tolerance: 1e-9,
        ..PriorConfig::default()
    };
    let mut a = PriorAdapter::<100>::new(&UNIFORM, cfg).unwrap();
    let obs = stream(100, [0.8, 0.1, 0.1]);
    let step = a.observe(&mut posterior(obs[0], UNIFORM)).unwrap();
    assert!(step.iterations <= 2);
    for &o in obs.iter().take(100).skip(1) {
        let step = a.observe(&mut posterior(o, UNIFORM)).unwrap();
        assert!(step.iterations <= 2);
    }
}

#[test]
fn bad_input_is_refused_and_changes_nothing() {
    assert_eq!(
        PriorAdapter::<4>::new(&[], config(4)).err(),
        Some(DecideError::Empty)
    );
    assert!(matches!(
        PriorAdapter::<4>::new(&UNIFORM, config(5)),
        Err(DecideError::Capacity {
            capacity: 4,
            got: 5
        })
    ));
    assert!(matches!(
        PriorAdapter::<4>::new(&UNIFORM, config(0)),
        Err(DecideError::Capacity { .. })
    ));
    assert!(matches!(
        PriorAdapter::<4>::new(&[0.5, 0.5, 0.0], config(4)),
        Err(DecideError::Invalid(_))
    ));
    assert!(matches!(
        PriorAdapter::<4>::new(&[0.5, 0.6, 0.1], config(4)),
        Err(DecideError::Invalid(_))
    ));
    assert!(matches!(
        PriorAdapter::<4>::new(&[f32::NAN, 0.5, 0.5], config(4)),
        Err(DecideError::Invalid(_))
    ));
    let big = [1.0 / 40.0; 40];
    assert!(matches!(
        PriorAdapter::<4>::new(&big, config(4)),
        Err(DecideError::Capacity { .. })
    ));
    let mut a = PriorAdapter::<4>::new(&UNIFORM, config(4)).unwrap();
    a.observe(&mut [0.5, 0.3, 0.2]).unwrap();
    let before = (a.prior().to_vec(), a.len());
    for bad in [
        &mut [0.5, 0.5][..],
        &mut [f32::NAN, 0.5, 0.5][..],
        &mut [-0.1, 0.6, 0.5][..],
        &mut [0.0, 0.0, 0.0][..],
        &mut [f32::INFINITY, 0.0, 0.0][..],
    ] {
        assert!(a.observe(bad).is_err(), "{bad:?}");
    }
    assert_eq!((a.prior().to_vec(), a.len()), before);
}

/// The adapter's state as `(prior, flat ring rows, next slot)`.
fn state<const CAP: usize>(a: &PriorAdapter<CAP>) -> (Vec<f32>, Vec<f32>, usize) {
    let (rows, next) = a.ring();
    (a.prior().to_vec(), rows.flatten().copied().collect(), next)
}

#[test]
fn a_restored_state_goes_on_bit_for_bit() {
    let obs = stream(300, [0.6, 0.3, 0.1]);
    // Stop at several points: window not yet full, just full, wrapped around.
    for stop in [5usize, 50, 123] {
        let mut live = PriorAdapter::<64>::new(&UNIFORM, config(50)).unwrap();
        for &o in &obs[..stop] {
            live.observe(&mut posterior(o, UNIFORM)).unwrap();
        }
        let (prior, rows, next) = state(&live);
        let mut resumed = PriorAdapter::<64>::new(&UNIFORM, config(50)).unwrap();
        resumed.restore(&prior, &rows, next).unwrap();
        assert_eq!(state(&resumed), state(&live), "stop {stop}");
        for &o in &obs[stop..stop + 60] {
            let (mut p, mut q) = (posterior(o, UNIFORM), posterior(o, UNIFORM));
            live.observe(&mut p).unwrap();
            resumed.observe(&mut q).unwrap();
            assert_eq!(p.map(f32::to_bits), q.map(f32::to_bits), "stop {stop}");
        }
        assert_eq!(state(&resumed), state(&live), "stop {stop}");
    }
}

#[test]
fn a_bad_state_is_refused_and_changes_nothing() {
    let mut a = PriorAdapter::<8>::new(&UNIFORM, config(4)).unwrap();
    for o in [0, 1, 2] {
        a.observe(&mut posterior(o, UNIFORM)).unwrap();
    }
    let before = state(&a);
    let row = [0.5f32, 0.3, 0.2];
    let rows = |n: usize| row.repeat(n);
    let cases: [(&[f32], Vec<f32>, usize); 8] = [
        (&[0.5, 0.5], rows(1), 1),               // prior of the wrong length
        (&[0.9, 0.2, 0.1], rows(1), 1),          // prior not summing to 1
        (&[1.0, 0.0, 0.0], rows(1), 1),          // prior below the floor
        (&UNIFORM, vec![0.5, 0.5], 1),           // rows not whole posteriors
        (&UNIFORM, rows(5), 0),                  // more rows than the window
        (&UNIFORM, rows(2), 3),                  // slot does not follow the count
        (&UNIFORM, rows(4), 4),                  // slot outside the window
        (&UNIFORM, vec![f32::NAN, 0.5, 0.5], 1), // row not a distribution
    ];
    for (prior, rows, next) in &cases {
        assert!(
            a.restore(prior, rows, *next).is_err(),
            "{prior:?} {rows:?} {next}"
        );
        assert_eq!(state(&a), before);
    }
}
