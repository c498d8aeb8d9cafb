//! Keras optimizer constructors over rxla's graph optimizers.

use crate::config::{OptimizerConfig, OptimizerKind, ScheduleConfig};
use train::optim::Optimizer;

fn constant(opt: OptimizerConfig) -> Optimizer {
    Optimizer {
        opt,
        schedule: ScheduleConfig::default(),
        total_steps: 1,
    }
}

/// `Adam::new(1e-3)` with Keras defaults (beta_1 0.9, beta_2 0.999, epsilon 1e-7).
#[derive(Debug, Clone, Copy)]
pub struct Adam {
    pub learning_rate: f64,
    pub beta_1: f64,
    pub beta_2: f64,
    pub epsilon: f64,
}

impl Adam {
    pub fn new(learning_rate: f64) -> Self {
        Adam {
            learning_rate,
            beta_1: 0.9,
            beta_2: 0.999,
            epsilon: 1e-7,
        }
    }
    pub fn beta_1(mut self, b: f64) -> Self {
        self.beta_1 = b;
        self
    }
    pub fn beta_2(mut self, b: f64) -> Self {
        self.beta_2 = b;
        self
    }
}

impl From<Adam> for Optimizer {
    fn from(a: Adam) -> Optimizer {
        constant(OptimizerConfig {
            kind: OptimizerKind::Adam,
            lr: a.learning_rate,
            beta1: a.beta_1,
            beta2: a.beta_2,
            eps: a.epsilon,
            ..Default::default()
        })
    }
}

/// `SGD::new(0.01).momentum(0.9)`.
#[derive(Debug, Clone, Copy)]
pub struct SGD {
    pub learning_rate: f64,
    pub momentum: f64,
    pub nesterov: bool,
}

impl SGD {
    pub fn new(learning_rate: f64) -> Self {
        SGD {
            learning_rate,
            momentum: 0.0,
            nesterov: false,
        }
    }
    pub fn momentum(mut self, m: f64) -> Self {
        self.momentum = m;
        self
    }
    pub fn nesterov(mut self, yes: bool) -> Self {
        self.nesterov = yes;
        self
    }
}

impl From<SGD> for Optimizer {
    fn from(s: SGD) -> Optimizer {
        constant(OptimizerConfig {
            kind: OptimizerKind::Sgd,
            lr: s.learning_rate,
            momentum: s.momentum,
            nesterov: s.nesterov,
            ..Default::default()
        })
    }
}
