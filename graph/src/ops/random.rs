//! In-graph deterministic randomness, built from integer ops (no op of its
//! own): a counter-based generator where element `i` of the output is
//! `mix(mix(i + key) ^ key)` with `key = mix(seed * golden + salt)` and
//! `mix` the "lowbias32" integer hash. Stateless, so the same
//! (seed, salt, shape) gives the same bits in the interpreter and in XLA.
//! Different layers use different `salt`s; a step counter as `seed` gives
//! fresh masks each step.

use crate::error::Result;
use crate::ir::{Graph, NodeId};
use crate::types::{DType, Shape, TensorType};

const GOLDEN: f64 = 2654435769.0; // 0x9E3779B9

impl Graph {
    /// lowbias32: `x ^= x >> 16; x *= 0x7feb352d; x ^= x >> 15;
    /// x *= 0x846ca68b; x ^= x >> 16` on u32 (wrapping).
    #[track_caller]
    fn mix32(&mut self, x: NodeId) -> Result<NodeId> {
        let mut x = x;
        for (shift, mul) in [
            (16.0, Some(2146121005.0)),
            (15.0, Some(2221713035.0)),
            (16.0, None),
        ] {
            let s = self.scalar(shift, DType::U32)?;
            let h = self.shift_right_logical(x, s)?;
            x = self.xor(x, h)?;
            if let Some(m) = mul {
                let m = self.scalar(m, DType::U32)?;
                x = self.mul(x, m)?;
            }
        }
        Ok(x)
    }

    /// Uniform u32 bits of `shape` from a scalar integer `seed`.
    #[track_caller]
    pub fn rng_bits(&mut self, seed: NodeId, salt: u32, shape: impl Into<Shape>) -> Result<NodeId> {
        let shape = shape.into();
        let st = self.ty(seed)?.clone();
        if st.rank() != 0 || !st.dtype.is_int() {
            return Err(self.err("rng", format!("seed must be a scalar integer, got {st}")));
        }
        let n = shape.num_elements();
        if n > u32::MAX as i64 {
            return Err(self.err(
                "rng",
                format!("{shape} has too many elements for 32-bit counters"),
            ));
        }
        let seed = self.convert(seed, DType::U32)?;
        let golden = self.scalar(GOLDEN, DType::U32)?;
        let salt = self.scalar(salt as f64, DType::U32)?;
        let k = self.mul(seed, golden)?;
        let k = self.add(k, salt)?;
        let key = self.mix32(k)?;
        let i = self.iota(TensorType::new(DType::U32, [n]), 0)?;
        let i = self.add(i, key)?;
        let h = self.mix32(i)?;
        let h = self.xor(h, key)?;
        let h = self.mix32(h)?;
        self.reshape(h, shape)
    }

    /// Uniform floats in [0, 1) of `shape`, `dtype` (24 random bits each).
    #[track_caller]
    pub fn rng_uniform(
        &mut self,
        seed: NodeId,
        salt: u32,
        shape: impl Into<Shape>,
        dtype: DType,
    ) -> Result<NodeId> {
        if !dtype.is_float() {
            return Err(self.err(
                "rng",
                format!("rng_uniform needs a float dtype, got {dtype}"),
            ));
        }
        let bits = self.rng_bits(seed, salt, shape)?;
        let eight = self.scalar(8.0, DType::U32)?;
        let top = self.shift_right_logical(bits, eight)?;
        // Exact in f32: a 24-bit integer times 2^-24.
        let f = self.convert(top, DType::F32)?;
        let f = self.mul_scalar(f, 1.0 / 16777216.0)?;
        self.convert(f, dtype)
    }

    /// Standard normal samples (Box-Muller on two uniform streams).
    #[track_caller]
    pub fn rng_normal(
        &mut self,
        seed: NodeId,
        salt: u32,
        shape: impl Into<Shape>,
        dtype: DType,
    ) -> Result<NodeId> {
        let shape = shape.into();
        let u1 = self.rng_uniform(seed, salt, shape.clone(), DType::F32)?;
        let u2 = self.rng_uniform(seed, salt ^ 0x5bd1_e995, shape, DType::F32)?;
        // 1 - u1 lies in (0, 1], so the log is finite.
        let one = self.ones_like(u1)?;
        let u1 = self.sub(one, u1)?;
        let r = self.log(u1)?;
        let r = self.mul_scalar(r, -2.0)?;
        let r = self.sqrt(r)?;
        let th = self.mul_scalar(u2, std::f64::consts::TAU)?;
        let c = self.cos(th)?;
        let z = self.mul(r, c)?;
        self.convert(z, dtype)
    }
}

#[cfg(test)]
mod tests {
    use crate::{DType, Graph, TensorType};

    #[test]
    fn uniform_shape_and_seed_check() {
        let mut g = Graph::new("t");
        let seed = g.input("seed", TensorType::scalar(DType::U32)).unwrap();
        let u = g.rng_uniform(seed, 1, [4, 5], DType::F32).unwrap();
        assert_eq!(g.ty(u).unwrap(), &TensorType::f32([4, 5]));
        let x = g.input("x", TensorType::f32([])).unwrap();
        let e = g.rng_bits(x, 0, [2]).unwrap_err().to_string();
        assert!(e.starts_with("rng at") && e.contains("f32[]"), "{e}");
    }
}
