//! Every struct rxla binds must have the layout of `pjrt_c_api.h` (0.81, from the xla-cpu-pjrt
//! wheel): a C program compiled against the header prints sizes and offsets, and we compare.

use std::collections::HashMap;
use std::fmt::Write;
use std::process::Command;

#[test]
fn bound_structs_match_the_c_header() {
    let header = runtime::provision::pjrt_header().expect("fetch the header wheel");
    assert!(header.is_file(), "{} missing", header.display());
    let layouts = runtime::ffi::layouts();
    let mut c = String::from(
        "#include <stddef.h>\n#include <stdio.h>\n#include \"pjrt_c_api.h\"\nint main(void) {\n",
    );
    writeln!(
        c,
        "printf(\"version %d.%d\\n\", PJRT_API_MAJOR, PJRT_API_MINOR);"
    )
    .unwrap();
    for l in &layouts {
        writeln!(c, "printf(\"{0} %zu\\n\", sizeof(struct {0}));", l.name).unwrap();
        for (f, _) in &l.fields {
            writeln!(
                c,
                "printf(\"{0}.{1} %zu\\n\", offsetof(struct {0}, {1}));",
                l.name, f
            )
            .unwrap();
        }
    }
    c.push_str("return 0; }\n");
    let dir = std::env::temp_dir().join(format!("rxla-layout-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let src = dir.join("layout.c");
    let exe = dir.join("layout");
    std::fs::write(&src, c).unwrap();
    let out = Command::new("gcc")
        .arg("-std=c11")
        .arg("-I")
        .arg(header.parent().unwrap())
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .output()
        .expect("gcc is needed for this test");
    assert!(
        out.status.success(),
        "gcc failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(&exe).output().unwrap();
    assert!(run.status.success());
    let text = String::from_utf8(run.stdout).unwrap();
    let c_values: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once(' ')).collect();
    assert_eq!(
        c_values["version"],
        format!(
            "{}.{}",
            runtime::ffi::PJRT_API_MAJOR,
            runtime::ffi::PJRT_API_MINOR
        )
    );
    let mut checked = 0;
    let mut mismatches = Vec::new();
    for l in &layouts {
        let want: usize = c_values[l.name].parse().unwrap();
        if want != l.size {
            mismatches.push(format!("sizeof {}: C {want}, Rust {}", l.name, l.size));
        }
        for (f, off) in &l.fields {
            let key = format!("{}.{f}", l.name);
            let want: usize = c_values[key.as_str()].parse().unwrap();
            if want != *off {
                mismatches.push(format!("offsetof {key}: C {want}, Rust {off}"));
            }
            checked += 1;
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        mismatches.is_empty(),
        "layout mismatches:\n{}",
        mismatches.join("\n")
    );
    assert!(
        layouts.len() >= 50 && checked > 300,
        "{} structs, {checked} fields",
        layouts.len()
    );
}
