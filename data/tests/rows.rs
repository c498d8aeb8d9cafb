//! Each process builds only its rows of the global batch, and the rows of all processes
//! stack to the single-process batch, step for step, for any process count.

use data::images::ImageClassification;
use data::text::{LmData, LmOptions};
use data::tokenizer::TokenizerSpec;
use data::{process_rows, DataSource, HostArray, ImageSet};

/// Stacks every process's rows of `step` and compares with the whole batch.
fn check(src: &mut dyn DataSource, steps: &[usize], counts: &[usize]) {
    let batch = src.batch_size();
    for &step in steps {
        let whole = src.train_batch(step).unwrap();
        for &n in counts {
            let parts: Vec<Vec<HostArray>> = (0..n)
                .map(|p| {
                    src.train_rows(step, process_rows(batch, p, n).unwrap())
                        .unwrap()
                })
                .collect();
            for (i, want) in whole.iter().enumerate() {
                let rows: Vec<HostArray> = parts.iter().map(|p| p[i].clone()).collect();
                for r in &rows {
                    assert_eq!(r.dims()[0] as usize, batch / n);
                }
                let got = HostArray::concat(&rows).unwrap();
                assert_eq!(&got, want, "step {step}, {n} processes, input {i}");
            }
        }
        // Different steps differ (the check above is not vacuous).
        assert_ne!(src.train_batch(step + 1).unwrap(), whole);
    }
}

#[test]
fn lm_rows_stack_to_the_single_process_batch() {
    let text: String = (0..4000)
        .map(|i| format!("line {i} of a small corpus, {} ", i * 7919 % 1013))
        .collect();
    let dir = std::env::temp_dir().join(format!("rxla-rows-{}", std::process::id()));
    let opts = LmOptions::new("rows-test", TokenizerSpec::Bytes, 16, 8, 11);
    let mut lm = LmData::from_text("rows-test", &text, &opts, &dir).unwrap();
    check(&mut lm, &[0, 1, 7, 123], &[1, 2, 4, 8]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn image_rows_stack_to_the_single_process_batch_across_epochs() {
    let n = 96;
    let set = |seed: usize| ImageSet {
        images: (0..n * 12).map(|i| ((i * 31 + seed) % 97) as f32).collect(),
        labels: (0..n as i32).map(|i| i % 10).collect(),
        n,
        hwc: (2, 2, 3),
        classes: 10,
    };
    let mut img = ImageClassification::new(set(0), set(1), 12, 5);
    // 8 steps per epoch: steps 7, 8 cross an epoch boundary.
    check(&mut img, &[0, 3, 7, 8, 20], &[1, 2, 3, 4, 6, 12]);
}

#[test]
fn uneven_splits_are_refused_naming_the_batch() {
    let e = process_rows(12, 0, 5).unwrap_err().to_string();
    assert!(
        e.contains("batch_size 12") && e.contains("5 processes"),
        "{e}"
    );
    assert!(process_rows(12, 4, 4).is_err());
    assert_eq!(process_rows(12, 2, 4).unwrap(), 6..9);
}
