//! Matmul FLOPs of a graph (dot_general and convolution; 2 per multiply-add), counted from
//! the IR so that every model gets the same yardstick for MFU.

use std::time::Instant;

use anyhow::{Context, Result};
use graph::interp::HostTensor;
use graph::{DType, Graph, Op, TensorType};
use runtime::{Client, CompileOptions};

/// FLOPs of one execution of `g` (scan bodies count `length` times).
pub fn matmul_flops(g: &Graph) -> f64 {
    let mut total = 0.0;
    for n in &g.nodes {
        let out: f64 =
            n.ty.elements()
                .first()
                .map(|t| t.dims().iter().product::<i64>() as f64)
                .unwrap_or(0.0);
        match &n.op {
            Op::DotGeneral { dims, .. } => {
                let lhs = g.dims(n.inputs[0]).unwrap_or(&[]);
                let k: f64 = dims.lhs_contract.iter().map(|&d| lhs[d] as f64).product();
                total += 2.0 * out * k;
            }
            Op::Conv(p) => {
                let kernel = g.dims(n.inputs[1]).unwrap_or(&[]);
                let window: f64 = p
                    .dims
                    .kernel_spatial
                    .iter()
                    .map(|&d| kernel[d] as f64)
                    .product();
                let cin = kernel[p.dims.kernel_input_feature] as f64;
                total += 2.0 * out * window * cin;
            }
            Op::Scan(s) => total += s.length as f64 * matmul_flops(&s.body),
            // The backward is inlined by autodiff, so only the forward is counted here.
            Op::CustomVjp(c) => total += matmul_flops(&c.forward),
            _ => {}
        }
    }
    total
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Measured f32 matmul throughput of this device (FLOP/s): the MFU denominator when the
/// config gives no peak.
pub fn measured_peak_flops(client: &Client) -> Result<f64> {
    matmul_flops_per_s(client, DType::F32)
}

/// Whether this CPU runs bf16 dot products natively (x86 avx512_bf16); without it XLA CPU
/// converts bf16 operands to f32 and the mixed-precision step is slower than f32.
pub fn cpu_has_native_bf16() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        // aarch64 bf16 dot support varies; assume native and let the bench tell.
        true
    }
}

/// Measured throughput (FLOP/s) of a square `n x n` matmul with `operand` inputs and f32
/// accumulation and result: what the mixed-precision pass can gain here.
pub fn matmul_flops_per_s(client: &Client, operand: DType) -> Result<f64> {
    let n = 1024i64;
    let t = format!("tensor<{n}x{n}x{}>", operand.mlir_name());
    let prog = format!(
        "module @peak {{ func.func public @main(%a: {t}, %b: {t}) -> tensor<{n}x{n}xf32> {{
    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : ({t}, {t}) -> tensor<{n}x{n}xf32>
    return %0 : tensor<{n}x{n}xf32> }} }}"
    );
    let (exe, _, _) = client.compile_cached(&prog, &CompileOptions::default())?;
    let halves = HostTensor::new(
        TensorType::new(operand, [n, n]),
        vec![0.5; (n * n) as usize],
    )
    .context("matmul operand")?;
    let a = crate::exec::to_device(client, &halves, 0)?;
    let mut times = Vec::new();
    for i in 0..6 {
        let t = Instant::now();
        let out = exe.execute1(&[&a, &a])?;
        out[0].block_until_ready()?;
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    Ok(2.0 * (n * n * n) as f64 / median(&mut times))
}

#[cfg(test)]
mod tests {
    use super::*;
    use graph::TensorType;

    #[test]
    fn counts_dots_and_convs() {
        let mut g = Graph::new("f");
        let a = g.input("a", TensorType::f32([8, 16])).unwrap();
        let b = g.input("b", TensorType::f32([16, 4])).unwrap();
        let y = g.matmul(a, b).unwrap();
        let x = g.input("x", TensorType::f32([2, 10, 10, 3])).unwrap();
        let k = g.input("k", TensorType::f32([3, 3, 3, 5])).unwrap();
        let c = g
            .conv2d(x, k, [1, 1], graph::Padding::Valid, [1, 1])
            .unwrap();
        g.set_outputs(&[y, c]).unwrap();
        let want = 2.0 * 8.0 * 4.0 * 16.0 + 2.0 * (2.0 * 8.0 * 8.0 * 5.0) * 9.0 * 3.0;
        assert_eq!(matmul_flops(&g), want);
    }
}
