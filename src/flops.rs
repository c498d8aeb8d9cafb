//! Matmul FLOPs of a graph (dot_general and convolution; 2 per multiply-add), counted from
//! the IR so that every model gets the same yardstick for MFU.

use graph::{Graph, Op};

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
            _ => {}
        }
    }
    total
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
