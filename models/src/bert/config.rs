//! BERT's hyperparameters, with HF `BertConfig`'s keys so a `config.json` reads as is.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BertConfig {
    #[serde(default = "default_vocab")]
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub intermediate_size: usize,
    #[serde(default = "default_max_pos")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_type_vocab")]
    pub type_vocab_size: usize,
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    #[serde(default = "default_act")]
    pub hidden_act: HiddenAct,
    #[serde(default)]
    pub hidden_dropout_prob: f64,
    #[serde(default)]
    pub attention_probs_dropout_prob: f64,
    #[serde(default = "default_std")]
    pub initializer_range: f64,
    /// Tokens per example (ours; at most `max_position_embeddings`).
    #[serde(default = "default_seq")]
    pub seq_len: usize,
    /// The attention kernel (ours; `{ kind = "dense" }` by default; see `nn::kernels`).
    #[serde(default)]
    pub attention: nn::AttentionConfig,
    /// Reversible residual blocks (ours; Reformer): a two-stream stack of pre-LayerNorm
    /// branches whose backward rebuilds each block's inputs instead of keeping activations.
    /// Not BERT's post-LayerNorm blocks, so not loadable from or exportable to HF.
    #[serde(default, skip_serializing_if = "is_false")]
    pub reversible: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HiddenAct {
    /// Exact GELU with erf (HF `gelu`, BERT's).
    #[serde(rename = "gelu")]
    Gelu,
    /// GELU's tanh approximation.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluNew,
}

fn default_vocab() -> usize {
    30522
}
fn default_max_pos() -> usize {
    512
}
fn default_type_vocab() -> usize {
    2
}
fn default_eps() -> f64 {
    1e-12
}
fn default_act() -> HiddenAct {
    HiddenAct::Gelu
}
fn default_std() -> f64 {
    0.02
}
fn default_seq() -> usize {
    128
}

/// The keys of HF's `config.json` that [`BertConfig`] reads; the others (architectures,
/// model_type, ..) say nothing about the computation.
const HF_KEYS: &[&str] = &[
    "vocab_size",
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "max_position_embeddings",
    "type_vocab_size",
    "layer_norm_eps",
    "hidden_act",
    "hidden_dropout_prob",
    "attention_probs_dropout_prob",
    "initializer_range",
];

impl BertConfig {
    /// Reads an HF `config.json`, with `seq_len` tokens per example.
    pub fn from_hf_json(text: &str, seq_len: usize) -> Result<BertConfig, String> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        let obj = v.as_object().ok_or("config.json is not a JSON object")?;
        if let Some(t) = obj.get("position_embedding_type") {
            if t != "absolute" {
                return Err(format!(
                    "position_embedding_type {t} is not supported (absolute)"
                ));
            }
        }
        let mut keep: serde_json::Map<String, serde_json::Value> = obj
            .iter()
            .filter(|(k, _)| HF_KEYS.contains(&k.as_str()))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        keep.insert("seq_len".into(), seq_len.into());
        let c: BertConfig = serde_path_to_error::deserialize(serde_json::Value::from(keep))
            .map_err(|e| format!("key `{}`: {}", e.path(), e.inner()))?;
        c.validate()?;
        Ok(c)
    }

    pub fn validate(&self) -> Result<(), String> {
        let (d, h) = (self.hidden_size, self.num_attention_heads);
        if h == 0 || !d.is_multiple_of(h) {
            return Err(format!(
                "model.hidden_size ({d}) must be a multiple of model.num_attention_heads ({h})"
            ));
        }
        let positive = [
            ("vocab_size", self.vocab_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("intermediate_size", self.intermediate_size),
            ("type_vocab_size", self.type_vocab_size),
            ("seq_len", self.seq_len),
        ];
        if let Some((k, _)) = positive.iter().find(|(_, v)| *v == 0) {
            return Err(format!("model.{k} must be positive"));
        }
        if self.seq_len > self.max_position_embeddings {
            return Err(format!(
                "model.seq_len ({}) exceeds model.max_position_embeddings ({})",
                self.seq_len, self.max_position_embeddings
            ));
        }
        for (k, p) in [
            ("hidden_dropout_prob", self.hidden_dropout_prob),
            (
                "attention_probs_dropout_prob",
                self.attention_probs_dropout_prob,
            ),
        ] {
            if !(0.0..1.0).contains(&p) {
                return Err(format!("model.{k} must be in [0, 1), got {p}"));
            }
        }
        self.attention
            .kernel(false, self.seq_len, "model.attention")
            .and_then(|_| {
                self.attention.check_dropout(
                    self.attention_probs_dropout_prob,
                    "model.attention_probs_dropout_prob",
                )
            })?;
        if self.layer_norm_eps.is_nan() || self.layer_norm_eps <= 0.0 {
            return Err(format!(
                "model.layer_norm_eps must be positive, got {}",
                self.layer_norm_eps
            ));
        }
        Ok(())
    }
}
