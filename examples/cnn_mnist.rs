//! The seed's MNIST CNN, transcribed from its Keras program; reports test accuracy.
//! `cargo run --release --example cnn_mnist`

use std::time::Instant;

use anyhow::Result;
use rxla::keras::*;

/// The seed's model (also the GAN example's judge, and checked against Keras's summary in
/// `tests/keras.rs`, which include this file).
pub fn seed_cnn() -> Sequential {
    Sequential::new()
        .add(
            Conv2D::new(32, (3, 3))
                .activation(Relu)
                .input_shape([28, 28, 1]),
        )
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(64, (3, 3)).activation(Relu))
        .add(MaxPooling2D::new((2, 2)))
        .add(Conv2D::new(64, (3, 3)).activation(Relu))
        .add(Flatten::new())
        .add(Dense::new(64).activation(Relu))
        .add(Dense::new(10).activation(Softmax))
}

#[allow(dead_code)] // unused where another target includes this file for `seed_cnn`
fn main() -> Result<()> {
    let t = Instant::now();
    let train = Dataset::mnist("train")?;
    let test = Dataset::mnist("test")?;
    // Keras: y = to_categorical(y) with categorical cross-entropy.
    let onehot = |d: &Dataset| -> Result<Dataset> {
        let y = d.y.as_ref().expect("labels");
        Dataset::new(d.x.clone(), to_categorical(y, 10)?)
    };
    let (train, test) = (onehot(&train)?, onehot(&test)?);

    let mut model = seed_cnn();
    println!("{}", model.summary()?);
    model.compile(
        Adam::new(1e-3),
        Loss::CategoricalCrossentropy,
        &[Metric::Accuracy],
    );
    model.fit(
        &train,
        FitOptions {
            epochs: 3,
            batch_size: 64,
            validation: Some(&test),
            ..Default::default()
        },
    )?;
    let logs = model.evaluate(&test, 500)?;
    let acc = logs.get("accuracy").unwrap_or(f64::NAN);
    println!(
        "test loss {:.4}, test accuracy {acc:.4}",
        logs.get("loss").unwrap_or(f64::NAN)
    );
    println!(
        "{}",
        serde_json::json!({
            "example": "cnn_mnist",
            "test_accuracy": acc,
            "seconds": t.elapsed().as_secs_f64().round(),
        })
    );
    Ok(())
}
