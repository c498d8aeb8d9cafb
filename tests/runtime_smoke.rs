use runtime::provision::cpu_client;

#[test]
fn smoke() {
    let c = cpu_client(1).unwrap();
    println!("{} {} {:?}", c.platform_name(), c.platform_version(), c.plugin().api_version());
    for (k, v) in c.plugin().attributes() { println!("attr {k} = {v}"); }
    let x = c.buffer_from_host(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2], 0).unwrap();
    assert_eq!(x.to_host::<f32>().unwrap(), vec![1.0, 2.0, 3.0, 4.0]);
    let prog = r#"
module @add {
  func.func public @main(%a: tensor<2x2xf32>, %b: tensor<2x2xf32>) -> tensor<2x2xf32> {
    %0 = stablehlo.add %a, %b : tensor<2x2xf32>
    return %0 : tensor<2x2xf32>
  }
}"#;
    let exe = c.compile(prog, &Default::default()).unwrap();
    println!("{:?}", exe);
    let out = exe.execute1(&[&x, &x]).unwrap();
    assert_eq!(out[0].to_host::<f32>().unwrap(), vec![2.0, 4.0, 6.0, 8.0]);
    println!("{:?}", exe.memory_stats().unwrap());
}
