//! A Keras-style API on the graph: `Sequential` models of layers, `compile` / `fit` /
//! `evaluate` / `predict`, `summary()`, callbacks, weights in safetensors. Everything runs as
//! compiled XLA programs through the same step assembly as `rxla train`.
//!
//! ```ignore
//! let mut model = Sequential::new()
//!     .add(Conv2D::new(32, (3, 3)).activation(Relu).input_shape([28, 28, 1]))
//!     .add(MaxPooling2D::new((2, 2)))
//!     .add(Flatten::new())
//!     .add(Dense::new(10).activation(Softmax));
//! model.compile(Adam::new(1e-3), Loss::CategoricalCrossentropy, &[Metric::Accuracy]);
//! model.fit(&train, FitOptions { epochs: 2, batch_size: 64, ..Default::default() })?;
//! ```

pub use train::callbacks;
pub mod data;
pub mod fit;
pub mod layers;
pub mod loss;
pub mod model;
pub mod optimizers;
pub mod rnn;
pub use train::tensorboard;

pub use callbacks::{
    CsvLogger, EarlyStopping, LearningRateScheduler, ModelCheckpoint, TensorBoard, TerminateOnNaN,
};
pub use data::{to_categorical, Dataset};
pub use fit::{fit_loop, Callback, CallbackCtx, FitOptions, History, Logs, TrainStep};
pub use graph::Padding;
pub use layers::{
    Activation, AveragePooling2D, BatchNormalization, Conv2D, Ctx, Dense, Dropout, Embedding,
    Flatten, Layer, LayerNormalization, MaxPooling2D, Reshape,
};
pub use layers::{Gelu, Linear, Relu, Sigmoid, Softmax, Tanh};
pub use loss::{Loss, Metric, Output};
pub use model::{client, Sequential, Summary, SummaryRow};
pub use optimizers::{Adam, SGD};
pub use rnn::{GRU, LSTM};
