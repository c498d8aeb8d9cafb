//! Datasets fetched by name through the registry clients, checked and parsed.

#[test]
fn mnist_loads_both_splits() {
    let train = data::mnist::load("train").unwrap();
    let test = data::mnist::load("test").unwrap();
    assert_eq!((train.n, test.n), (60_000, 10_000));
    assert_eq!(train.hwc, (28, 28, 1));
    assert_eq!(train.images.len(), 60_000 * 784);
    // Known facts of MNIST: the first training label is 5, the first test label is 7.
    assert_eq!(train.labels[0], 5);
    assert_eq!(test.labels[0], 7);
    let mean = train.images.iter().map(|&p| p as f64).sum::<f64>() / train.images.len() as f64;
    assert!((mean - 0.1307).abs() < 1e-3, "mean pixel {mean}");
    let mut counts = [0usize; 10];
    for &l in &test.labels {
        counts[l as usize] += 1;
    }
    assert_eq!(counts[1], 1135);
    assert!(data::mnist::load("validation").is_err());
}
