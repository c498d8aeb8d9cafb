//! The PJRT runtime against the real CPU plugin (fetched on first use).

use runtime::provision::cpu_client;
use runtime::{bf16, f16, Client, CompileOptions, ElementType, Error, NativeType};

fn client() -> Client {
    cpu_client(1).expect("CPU client")
}

fn round_trip<T: NativeType + PartialEq + std::fmt::Debug>(c: &Client, data: Vec<T>) {
    let dims = [2i64, (data.len() / 2) as i64];
    let b = c.buffer_from_host(&data, &dims, 0).unwrap();
    assert_eq!(b.element_type(), T::TYPE);
    assert_eq!(b.dims(), &dims);
    assert_eq!(b.to_host::<T>().unwrap(), data, "{:?}", T::TYPE);
}

#[test]
fn round_trip_every_dtype() {
    let c = client();
    round_trip(&c, vec![1.5f32, -2.0, 3.25, f32::MAX]);
    round_trip(&c, vec![1.5f64, -2.0, 1e300, f64::MIN_POSITIVE]);
    round_trip(&c, [1.5f32, -2.0, 3.0, 1e10].map(bf16::from_f32).to_vec());
    round_trip(&c, [1.5f32, -2.0, 3.0, 65504.0].map(f16::from_f32).to_vec());
    round_trip(&c, vec![-128i8, -1, 0, 127]);
    round_trip(&c, vec![i32::MIN, -1, 0, i32::MAX]);
    round_trip(&c, vec![i64::MIN, -1, 0, i64::MAX]);
    round_trip(&c, vec![0u8, 1, 128, 255]);
    round_trip(&c, vec![0u32, 1, 1 << 31, u32::MAX]);
    round_trip(&c, vec![true, false, false, true]);
    // Scalars have no dims.
    let s = c.buffer_from_host(&[7i32], &[], 0).unwrap();
    assert_eq!(s.to_host::<i32>().unwrap(), vec![7]);
}

#[test]
fn host_data_must_match_shape_and_type() {
    let c = client();
    let err = c
        .buffer_from_host(&[1.0f32, 2.0, 3.0], &[2, 2], 0)
        .unwrap_err();
    assert!(err.to_string().contains("3 elements"), "{err}");
    let b = c.buffer_from_host(&[1.0f32, 2.0], &[2], 0).unwrap();
    let err = b.to_host::<i32>().unwrap_err();
    assert!(err.to_string().contains("holds f32 but i32"), "{err}");
    let err = c.buffer_from_host(&[1.0f32], &[1], 5).unwrap_err();
    assert!(
        err.to_string().contains("device index 5 out of range"),
        "{err}"
    );
}

const PROGRAM: &str = r#"
module @add_dot_reduce {
  func.func public @main(%a: tensor<2x3xf32>, %b: tensor<3x2xf32>) -> (tensor<2x3xf32>, tensor<2x2xf32>, tensor<f32>) {
    %sum = stablehlo.add %a, %a : tensor<2x3xf32>
    %dot = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<2x3xf32>, tensor<3x2xf32>) -> tensor<2x2xf32>
    %zero = stablehlo.constant dense<0.0> : tensor<f32>
    %red = stablehlo.reduce(%dot init: %zero) applies stablehlo.add across dimensions = [0, 1] : (tensor<2x2xf32>, tensor<f32>) -> tensor<f32>
    return %sum, %dot, %red : tensor<2x3xf32>, tensor<2x2xf32>, tensor<f32>
  }
}
"#;

#[test]
fn add_dot_reduce_program() {
    let c = client();
    let exe = c.compile(PROGRAM, &CompileOptions::default()).unwrap();
    assert_eq!(exe.parameters().len(), 2);
    assert_eq!(exe.outputs().len(), 3);
    assert_eq!(exe.outputs()[1].dims, vec![2, 2]);
    let a = c
        .buffer_from_host(&[1.0f32, 2., 3., 4., 5., 6.], &[2, 3], 0)
        .unwrap();
    let b = c
        .buffer_from_host(&[1.0f32, 0., 0., 1., 1., 1.], &[3, 2], 0)
        .unwrap();
    let out = exe.execute1(&[&a, &b]).unwrap();
    assert_eq!(
        out[0].to_host::<f32>().unwrap(),
        vec![2., 4., 6., 8., 10., 12.]
    );
    // [[1,2,3],[4,5,6]] x [[1,0],[0,1],[1,1]] = [[4,5],[10,11]]
    assert_eq!(out[1].to_host::<f32>().unwrap(), vec![4., 5., 10., 11.]);
    assert_eq!(out[2].to_host::<f32>().unwrap(), vec![30.]);
    let stats = exe.memory_stats().unwrap();
    assert_eq!(stats.argument_bytes, 4 * (6 + 6));
}

#[test]
fn bf16_dot_accumulates_in_f32() {
    let c = client();
    let (m, k, n) = (16usize, 64usize, 8usize);
    // Values exactly representable in bf16, so the f32 reference is exact up to summation order.
    let a: Vec<f32> = (0..m * k)
        .map(|i| ((i * 7 % 23) as f32 - 11.0) / 8.0)
        .collect();
    let b: Vec<f32> = (0..k * n)
        .map(|i| ((i * 5 % 19) as f32 - 9.0) / 16.0)
        .collect();
    let prog = format!(
        r#"module @bf16dot {{
  func.func public @main(%a: tensor<{m}x{k}xbf16>, %b: tensor<{k}x{n}xbf16>) -> tensor<{m}x{n}xf32> {{
    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<{m}x{k}xbf16>, tensor<{k}x{n}xbf16>) -> tensor<{m}x{n}xf32>
    return %0 : tensor<{m}x{n}xf32>
  }}
}}"#
    );
    let exe = c.compile(&prog, &CompileOptions::default()).unwrap();
    assert_eq!(exe.parameters()[0].element_type, ElementType::BF16);
    let ab: Vec<bf16> = a.iter().map(|&x| bf16::from_f32(x)).collect();
    let bb: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
    let da = c.buffer_from_host(&ab, &[m as i64, k as i64], 0).unwrap();
    let db = c.buffer_from_host(&bb, &[k as i64, n as i64], 0).unwrap();
    let got = exe.execute1(&[&da, &db]).unwrap()[0]
        .to_host::<f32>()
        .unwrap();
    for i in 0..m {
        for j in 0..n {
            let want: f32 = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            let g = got[i * n + j];
            // A bf16 accumulator would lose ~3 significant digits on these sums.
            assert!(
                (g - want).abs() <= 1e-4 * want.abs().max(1.0),
                "[{i},{j}] {g} vs {want}"
            );
        }
    }
}

#[test]
fn spmd_on_four_devices_matches_one_device() {
    let prog = r#"module @spmd attributes {mhlo.num_partitions = 4 : i32, mhlo.num_replicas = 1 : i32} {
  func.func public @main(%x: tensor<8x4xf32> {mhlo.sharding = "{devices=[4,1]0,1,2,3}"},
                         %w: tensor<4x3xf32> {mhlo.sharding = "{replicated}"})
      -> (tensor<8x3xf32> {mhlo.sharding = "{devices=[4,1]0,1,2,3}"}, tensor<f32> {mhlo.sharding = "{replicated}"}) {
    %y = stablehlo.dot_general %x, %w, contracting_dims = [1] x [0] : (tensor<8x4xf32>, tensor<4x3xf32>) -> tensor<8x3xf32>
    %zero = stablehlo.constant dense<0.0> : tensor<f32>
    %s = stablehlo.reduce(%y init: %zero) applies stablehlo.add across dimensions = [0, 1] : (tensor<8x3xf32>, tensor<f32>) -> tensor<f32>
    return %y, %s : tensor<8x3xf32>, tensor<f32>
  }
}"#;
    let x: Vec<f32> = (0..32).map(|i| (i as f32 - 10.0) * 0.25).collect();
    let w: Vec<f32> = (0..12).map(|i| (i as f32) * 0.5 - 2.0).collect();

    let one = cpu_client(1).unwrap();
    let exe1 = one.compile(prog, &CompileOptions::default()).unwrap();
    let bx = one.buffer_from_host(&x, &[8, 4], 0).unwrap();
    let bw = one.buffer_from_host(&w, &[4, 3], 0).unwrap();
    let ref_out = exe1.execute1(&[&bx, &bw]).unwrap();
    let ref_y = ref_out[0].to_host::<f32>().unwrap();
    let ref_s = ref_out[1].to_host::<f32>().unwrap()[0];

    let four = cpu_client(4).unwrap();
    assert_eq!(four.addressable_devices().len(), 4);
    let exe4 = four.compile(prog, &CompileOptions::spmd(4)).unwrap();
    assert_eq!(exe4.devices().len(), 4);
    assert_eq!(
        exe4.parameters()[0].dims,
        vec![2, 4],
        "per-device shard shape"
    );
    let args: Vec<Vec<runtime::Buffer>> = (0..4)
        .map(|d| {
            vec![
                four.buffer_from_host(&x[d * 8..(d + 1) * 8], &[2, 4], d)
                    .unwrap(),
                four.buffer_from_host(&w, &[4, 3], d).unwrap(),
            ]
        })
        .collect();
    let arg_refs: Vec<Vec<&runtime::Buffer>> = args.iter().map(|a| a.iter().collect()).collect();
    let outs = exe4.execute(&arg_refs).unwrap();
    let mut y = Vec::new();
    for (d, out) in outs.iter().enumerate() {
        assert_eq!(out[0].device().unwrap(), d);
        y.extend(out[0].to_host::<f32>().unwrap());
        let s = out[1].to_host::<f32>().unwrap()[0];
        assert!(
            (s - ref_s).abs() <= 1e-5 * ref_s.abs().max(1.0),
            "device {d}: {s} vs {ref_s}"
        );
    }
    assert_eq!(y, ref_y);
}

#[test]
fn serialize_deserialize_gives_identical_outputs() {
    let c = client();
    let exe = c.compile(PROGRAM, &CompileOptions::default()).unwrap();
    let bytes = exe.serialize().unwrap();
    assert!(!bytes.is_empty());
    let exe2 = c.deserialize_executable(&bytes).unwrap();
    assert_eq!(exe2.parameters(), exe.parameters());
    assert_eq!(exe2.outputs(), exe.outputs());
    let a = c
        .buffer_from_host(&[0.5f32, -1., 2., 3.5, 4., -6.], &[2, 3], 0)
        .unwrap();
    let b = c
        .buffer_from_host(&[1.5f32, 2., -3., 1., 0.25, 1.], &[3, 2], 0)
        .unwrap();
    let o1 = exe.execute1(&[&a, &b]).unwrap();
    let o2 = exe2.execute1(&[&a, &b]).unwrap();
    for (x, y) in o1.iter().zip(&o2) {
        assert_eq!(x.to_bytes().unwrap(), y.to_bytes().unwrap());
    }
    let err = c.deserialize_executable(b"not an executable").unwrap_err();
    assert!(matches!(err, Error::Pjrt { .. }), "{err}");
}

#[test]
fn donated_input_is_unusable_afterwards() {
    let c = client();
    let prog = r#"module @donate {
  func.func public @main(%p: tensor<4xf32> {tf.aliasing_output = 0 : i32}, %g: tensor<4xf32>) -> tensor<4xf32> {
    %0 = stablehlo.subtract %p, %g : tensor<4xf32>
    return %0 : tensor<4xf32>
  }
}"#;
    let exe = c.compile(prog, &CompileOptions::default()).unwrap();
    assert_eq!(exe.donated_parameters(), &[0]);
    let p = c.buffer_from_host(&[1.0f32, 2., 3., 4.], &[4], 0).unwrap();
    let g = c.buffer_from_host(&[0.5f32; 4], &[4], 0).unwrap();
    let out = exe.execute1(&[&p, &g]).unwrap();
    assert_eq!(out[0].to_host::<f32>().unwrap(), vec![0.5, 1.5, 2.5, 3.5]);
    let err = p.to_host::<f32>().unwrap_err();
    assert!(err.to_string().contains("donated"), "{err}");
    let err = exe.execute1(&[&p, &g]).unwrap_err();
    assert!(
        err.to_string().contains("argument 0") && err.to_string().contains("donated"),
        "{err}"
    );
    // The non-donated argument is still fine, and the output can be fed back in.
    let out2 = exe.execute1(&[&out[0], &g]).unwrap();
    assert_eq!(out2[0].to_host::<f32>().unwrap(), vec![0.0, 1.0, 2.0, 3.0]);
}

#[test]
fn wrong_arguments_are_errors_not_crashes() {
    let c = client();
    let exe = c.compile(PROGRAM, &CompileOptions::default()).unwrap();
    let a = c.buffer_from_host(&[1.0f32; 6], &[2, 3], 0).unwrap();
    let b = c.buffer_from_host(&[1.0f32; 6], &[3, 2], 0).unwrap();
    // Same byte size, other dtype: the plugin alone would reinterpret it.
    let a_int = c.buffer_from_host(&[1i32; 6], &[2, 3], 0).unwrap();
    let a_shape = c.buffer_from_host(&[1.0f32; 6], &[3, 2], 0).unwrap();
    let err = exe.execute1(&[&a_int, &b]).unwrap_err().to_string();
    assert!(
        err.contains("argument 0") && err.contains("i32") && err.contains("f32"),
        "{err}"
    );
    let err = exe.execute1(&[&a_shape, &b]).unwrap_err().to_string();
    assert!(
        err.contains("tensor<3x2xf32>") && err.contains("tensor<2x3xf32>"),
        "{err}"
    );
    let err = exe.execute1(&[&a]).unwrap_err().to_string();
    assert!(err.contains("takes 2 argument(s) but 1"), "{err}");
    let err = exe
        .execute(&[vec![&a, &b], vec![&a, &b]])
        .unwrap_err()
        .to_string();
    assert!(err.contains("runs on 1 device(s)"), "{err}");
}

#[test]
fn malformed_mlir_reports_the_compiler_message() {
    let c = client();
    let err = c
        .compile(
            "module { func.func @main( this is not mlir",
            &CompileOptions::default(),
        )
        .unwrap_err();
    match &err {
        Error::Pjrt {
            function, message, ..
        } => {
            assert_eq!(*function, "PJRT_Client_Compile");
            assert!(!message.is_empty());
        }
        other => panic!("unexpected error {other}"),
    }
    // A well-formed module with a type error names the problem.
    let bad = r#"module { func.func public @main(%a: tensor<2xf32>, %b: tensor<3xf32>) -> tensor<2xf32> {
    %0 = stablehlo.add %a, %b : (tensor<2xf32>, tensor<3xf32>) -> tensor<2xf32>
    return %0 : tensor<2xf32>
  } }"#;
    let err = c
        .compile(bad, &CompileOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("PJRT_Client_Compile"), "{err}");
}

#[test]
fn copy_between_devices_and_delete() {
    let c = cpu_client(2).unwrap();
    let a = c.buffer_from_host(&[1i64, 2, 3], &[3], 0).unwrap();
    assert_eq!(a.device().unwrap(), 0);
    let b = a.copy_to_device(1).unwrap();
    assert_eq!(b.device().unwrap(), 1);
    assert_eq!(b.to_host::<i64>().unwrap(), vec![1, 2, 3]);
    a.delete().unwrap();
    assert!(a.is_deleted());
    let err = a.to_host::<i64>().unwrap_err();
    assert!(err.to_string().contains("deleted"), "{err}");
    assert!(a.delete().is_err());
    assert_eq!(b.to_host::<i64>().unwrap(), vec![1, 2, 3]);
}

#[test]
fn devices_and_platform() {
    let c = cpu_client(4).unwrap();
    assert_eq!(c.platform_name(), "cpu");
    let devs = c.addressable_devices();
    assert_eq!(devs.len(), 4);
    let ids: Vec<i32> = devs.iter().map(|d| d.id).collect();
    assert_eq!(ids, vec![0, 1, 2, 3]);
    assert!(devs.iter().all(|d| d.process_index == 0 && d.addressable));
    assert_eq!(c.plugin().api_version().0, 0);
}

#[test]
fn not_a_plugin_is_a_clear_error() {
    let err = runtime::Plugin::load("/nonexistent/plugin.so")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("/nonexistent/plugin.so") && err.contains("no such file"),
        "{err}"
    );
    // A real shared library that is not a PJRT plugin.
    let libm = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
    ]
    .into_iter()
    .find(|p| std::path::Path::new(p).exists())
    .expect("libm");
    let err = runtime::Plugin::load(libm).unwrap_err().to_string();
    assert!(err.contains("GetPjrtApi"), "{err}");
    // A file that is not a shared library at all.
    let dir = std::env::temp_dir().join(format!("rxla-notplugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let f = dir.join("fake.so");
    std::fs::write(&f, b"hello").unwrap();
    let err = runtime::Plugin::load(&f).unwrap_err().to_string();
    assert!(err.contains("not a loadable shared library"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sha256_mismatch_installs_nothing() {
    use files::fetch::{ensure_package_in, PinnedPackage, Registry};
    let root = std::env::temp_dir().join(format!("rxla-sha-{}", std::process::id()));
    let pkg = PinnedPackage {
        registry: Registry::PipWheel,
        name: "six",
        version: "1.16.0",
        sha256: "0000000000000000000000000000000000000000000000000000000000000000",
    };
    let err = ensure_package_in(&root, &pkg).unwrap_err().to_string();
    assert!(
        err.contains("six==1.16.0") && err.contains("sha256 mismatch"),
        "{err}"
    );
    // Nothing half-installed is left behind (only the package's fetch lock file).
    let left: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, vec![".six-1.16.0.lock".to_string()]);
    std::fs::remove_dir_all(&root).unwrap();
}

#[test]
fn cost_analysis_is_exact_or_a_clean_unimplemented_error() {
    let c = client();
    let prog = r#"module @mm { func.func public @main(%a: tensor<32x64xf32>, %b: tensor<64x16xf32>) -> tensor<32x16xf32> {
    %0 = stablehlo.dot_general %a, %b, contracting_dims = [1] x [0] : (tensor<32x64xf32>, tensor<64x16xf32>) -> tensor<32x16xf32>
    return %0 : tensor<32x16xf32> } }"#;
    let exe = c.compile(prog, &CompileOptions::default()).unwrap();
    // The CPU plugin does not implement cost analysis; GPU and TPU plugins do.
    match exe.cost_analysis() {
        Ok(_) => assert_eq!(exe.flops(), Some(2.0 * 32.0 * 64.0 * 16.0)),
        Err(Error::Pjrt { code, .. }) => {
            assert_eq!(code, runtime::ErrorCode::Unimplemented);
            assert_eq!(exe.flops(), None);
        }
        Err(e) => panic!("unexpected {e}"),
    }
}

#[test]
fn sharded_array_scatters_and_gathers() {
    use runtime::{ShardLayout, ShardedArray};
    let c = cpu_client(4).unwrap();
    let data: Vec<f32> = (0..48).map(|i| i as f32).collect();
    // [4, 12]: rows over 2 devices, columns over 2, on a 2x2 device grid.
    let layout = ShardLayout {
        dims: vec![4, 12],
        tiles: vec![2, 2],
        device_tiles: (0..4).map(|d| vec![d / 2, d % 2]).collect(),
    };
    let a = ShardedArray::from_host(&c, &data, &layout, &[0, 1, 2, 3]).unwrap();
    assert_eq!(a.bytes_per_device(), 2 * 6 * 4);
    assert_eq!(a.shards()[1].device().unwrap(), 1);
    // Device 1 holds rows 0..2, columns 6..12.
    let t1 = a.shards()[1].to_host::<f32>().unwrap();
    assert_eq!(&t1[..6], &data[6..12]);
    assert_eq!(&t1[6..], &data[18..24]);
    assert_eq!(a.to_host::<f32>().unwrap(), data);
    // Replicated over two devices, split over the other pair.
    let half = ShardLayout {
        dims: vec![4, 12],
        tiles: vec![1, 2],
        device_tiles: (0..4).map(|d| vec![0, d % 2]).collect(),
    };
    let b = ShardedArray::from_host(&c, &data, &half, &[0, 1, 2, 3]).unwrap();
    assert_eq!(b.to_host::<f32>().unwrap(), data);
    let e = ShardedArray::from_host(&c, &data[1..], &half, &[0, 1, 2, 3]).unwrap_err();
    assert!(e.to_string().contains("47 elements"), "{e}");
}

/// Device memory stats are optional in the C API: the CPU plugin's answer is a clean result
/// or a clean error, never a crash, and a bad device index is an error.
#[test]
fn device_memory_stats_are_optional_and_checked() {
    let c = runtime::provision::cpu_client(2).unwrap();
    match c.device_memory_stats(0) {
        Ok(m) => assert!(m.bytes_in_use >= 0, "{m:?}"),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    assert!(c.device_memory_stats(5).is_err());
}
