"""Compiles and runs lowered modules on XLA CPU through jax, comparing with
the graph interpreter's results. A development aid, not a test dependency:

    RXLA_DUMP_DIR=/tmp/rxla-cases cargo test -p lower dump_cases_for_xla
    python lower/tools/check_with_jax.py /tmp/rxla-cases

Needs `pip install jax[cpu]`. The interpreter computes floats in f64, so
results are compared with f32-sized tolerances.
"""
import glob
import json
import sys

import jax
import jax.numpy as jnp
import numpy as np
from jax._src import xla_bridge
from jax._src.lib import xla_client

DTYPES = {"f32": np.float32, "f64": np.float64, "f16": np.float16, "bf16": jnp.bfloat16,
          "i32": np.int32, "i64": np.int64, "u8": np.uint8, "u32": np.uint32, "bool": np.bool_}


def run(backend, case):
    dev = backend.devices()[0]
    exe = backend.compile_and_load(case["mlir"], xla_client.DeviceList((dev,)), xla_client.CompileOptions())
    args = [jax.device_put(np.array(a["data"], dtype=np.float64).astype(DTYPES[a["dtype"]]).reshape(a["dims"]), dev)
            for a in case["args"]]
    outs = exe.execute_sharded(args).disassemble_into_single_device_arrays()
    return [np.asarray(o[0]) for o in outs]


def main(folder):
    backend = xla_bridge.get_backend("cpu")
    failed = 0
    files = sorted(glob.glob(f"{folder}/*.json"))
    for path in files:
        case = json.load(open(path))
        try:
            got = run(backend, case)
            for k, (g, w) in enumerate(zip(got, case["expected"])):
                want = np.array(w["data"], dtype=np.float64).reshape(w["dims"])
                g = np.asarray(g, dtype=np.float64)
                half = "xf16>" in case["mlir"] or "xbf16>" in case["mlir"] or "<f16>" in case["mlir"]
                tol = 5e-3 if half else 1e-4
                if g.shape != want.shape or not np.allclose(g, want, rtol=tol, atol=tol):
                    raise AssertionError(f"output {k}: xla {g.ravel()[:6]} vs interp {want.ravel()[:6]}")
        except Exception as ex:  # report every case, then fail
            failed += 1
            print(f"FAIL {case['name']}: {str(ex)[:600]}")
    print(f"{len(files) - failed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main(sys.argv[1])
