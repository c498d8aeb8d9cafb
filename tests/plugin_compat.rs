//! Plugins other than the default: the OpenXLA 0.81 CPU plugin, and fake plugins with a wrong
//! API version or a short function table (built here with gcc). Own test binary: it loads a
//! second XLA build into the process.

use std::path::{Path, PathBuf};
use std::process::Command;

use runtime::{Client, CompileOptions, CreateOptions, Plugin};

fn build_fake_plugin(dir: &Path, name: &str, major: i32, table_bytes: usize) -> PathBuf {
    // Layout of the PJRT_Api header: struct_size, extension_start, then PJRT_Api_Version
    // {struct_size, extension_start, major, minor}, then the function pointers (all null).
    let src = format!(
        r#"#include <stddef.h>
#include <stdint.h>
static struct {{ size_t struct_size; void* ext; size_t vsize; void* vext; int major; int minor; void* fns[64]; }} api;
const void* GetPjrtApi(void) {{ api.struct_size = {table_bytes}; api.vsize = 24; api.major = {major}; api.minor = 3; return &api; }}
"#
    );
    let c = dir.join(format!("{name}.c"));
    let so = dir.join(format!("{name}.so"));
    std::fs::write(&c, src).unwrap();
    let st = Command::new("gcc")
        .args(["-shared", "-fPIC", "-o"])
        .arg(&so)
        .arg(&c)
        .status()
        .expect("gcc");
    assert!(st.success());
    so
}

#[test]
fn wrong_version_or_missing_functions_are_refused() {
    let dir = std::env::temp_dir().join(format!("rxla-fake-plugin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let v1 = build_fake_plugin(&dir, "major1", 1, 40);
    let err = Plugin::load(&v1).unwrap_err().to_string();
    assert!(
        err.contains("major1.so") && err.contains("API version 1.3"),
        "{err}"
    );
    assert!(err.contains("pip install"), "says what to install: {err}");
    let short = build_fake_plugin(&dir, "short", 0, 40);
    let err = Plugin::load(&short).unwrap_err().to_string();
    assert!(
        err.contains("short.so") && err.contains("lacks function PJRT_Error_Destroy"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn openxla_081_plugin_runs_the_same_program() {
    let dir = files::fetch::ensure_package(&runtime::provision::HEADER_PACKAGE).unwrap();
    let plugin = Plugin::load(dir.join("xla_plugins/xla_cpu_pjrt/xla_cpu_pjrt.so")).unwrap();
    assert_eq!(plugin.api_version(), (0, 81));
    let client = Client::new(plugin, &CreateOptions::new().cpu_device_count(2)).unwrap();
    assert_eq!(client.addressable_devices().len(), 2);
    let prog = r#"module @m { func.func public @main(%a: tensor<3xf32>) -> tensor<3xf32> {
    %0 = stablehlo.multiply %a, %a : tensor<3xf32>
    return %0 : tensor<3xf32> } }"#;
    let exe = client.compile(prog, &CompileOptions::default()).unwrap();
    let a = client
        .buffer_from_host(&[1.0f32, -2.0, 3.0], &[3], 1)
        .unwrap();
    let err = exe.execute1(&[&a]).unwrap_err().to_string();
    assert!(err.contains("lives on device 1"), "{err}");
    let a = a.copy_to_device(0).unwrap();
    let out = exe.execute1(&[&a]).unwrap();
    assert_eq!(out[0].to_host::<f32>().unwrap(), vec![1.0, 4.0, 9.0]);
}
