//! Every v2 golden case through the command line, as a user would run it:
//! the case's arrays written to `.npy` files, its params spelled as flags,
//! the result (and the argmax indices) read back and checked with SPEC.md's
//! rule, on the fast CPU path and, where there is an adapter, the GPU.

mod common;

use std::path::Path;
use std::process::Command;

use common::{check_case, check_indices, load_cases, Case};
use ndarray::ArrayD;
use ndarray_npy::{read_npy, write_npy};
use serde_json::Value;

fn list(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(a) => a.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(","),
        other => panic!("not a list: {other}"),
    }
}

/// The flags of a case, `None` for ops the v2 CLI contract does not cover.
fn flags(case: &Case, dir: &Path) -> Option<Vec<String>> {
    let p = &case.params;
    let file = |name: &str| dir.join(name).to_str().unwrap().to_string();
    let mut args: Vec<String> = Vec::new();
    let mut push = |a: &str, b: String| {
        args.push(a.to_string());
        args.push(b);
    };
    match case.op.as_str() {
        "conv2d" => {
            push("--kernels", file("k.npy"));
            push("--padding", list(&p["padding"]));
            push("--stride", list(&p["stride"]));
            push("--dilation", list(&p["dilation"]));
            if let Some(mode) = p["padding_mode"].as_str() {
                push("--padding-mode", mode.into());
            }
            if let Some(g) = p["groups"].as_u64() {
                push("--groups", g.to_string());
            }
            if p["bias"].as_bool() == Some(true) {
                push("--bias", file("b.npy"));
            }
            if let Some(a) = p["activation"].as_str() {
                push("--activation", a.into());
            }
            args.insert(0, "conv".into());
        }
        "pool2d" => {
            if p["window"].is_null() {
                push("--window", "global".into());
            } else {
                push("--window", list(&p["window"]));
                push("--stride", list(&p["stride"]));
                push("--padding", list(&p["padding"]));
                if !p["dilation"].is_null() {
                    push("--dilation", list(&p["dilation"]));
                }
            }
            push("--mode", p["mode"].as_str().unwrap().into());
            if p["ceil_mode"].as_bool() == Some(true) {
                args.push("--ceil-mode".into());
            }
            if p["count_include_pad"].as_bool() == Some(true) {
                args.push("--count-include-pad".into());
            }
            args.insert(0, "pool".into());
        }
        "adaptive_pool2d" => {
            push("--output-size", list(&p["output_size"]));
            push("--mode", p["mode"].as_str().unwrap().into());
            args.insert(0, "pool".into());
        }
        _ => return None,
    }
    if p["return_indices"].as_bool() == Some(true) {
        args.push("--indices".into());
        args.push(file("i.npy"));
    }
    args.extend(["--images".into(), file("x.npy"), "--out".into(), file("y.npy")]);
    Some(args)
}

fn run_all(device: &str) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for case in load_cases().iter().filter(|c| c.name.starts_with("v2_")) {
        let dir = tempfile::tempdir().unwrap();
        let Some(args) = flags(case, dir.path()) else { continue };
        write_npy(dir.path().join("x.npy"), &case.images).unwrap();
        if let Some(k) = &case.kernels {
            write_npy(dir.path().join("k.npy"), k).unwrap();
        }
        if let Some(b) = &case.bias {
            write_npy(dir.path().join("b.npy"), b).unwrap();
        }
        let out = Command::new(env!("CARGO_BIN_EXE_convpool"))
            .args(&args)
            .args(["--device", device, "--verify"])
            .output()
            .unwrap();
        if !out.status.success() {
            failures.push(format!(
                "{}: {}",
                case.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        let got: ArrayD<f32> = read_npy(dir.path().join("y.npy")).unwrap();
        let indices: Option<ArrayD<i64>> = case
            .expected_indices
            .as_ref()
            .map(|_| read_npy(dir.path().join("i.npy")).unwrap());
        if let Err(e) = check_case(case, &got).and_then(|_| check_indices(case, indices.as_ref())) {
            failures.push(format!("{}: {e} (convpool {})", case.name, args.join(" ")));
        }
        checked += 1;
    }
    assert!(
        failures.is_empty(),
        "{} v2 cases failed on {device}:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert!(checked >= 65, "only {checked} v2 cases went through the CLI");
}

#[test]
fn v2_goldens_through_the_cli_on_the_cpu() {
    run_all("cpu");
}

#[test]
fn v2_goldens_through_the_cli_on_the_gpu() {
    if common::gpu_engine().is_some() {
        run_all("gpu");
    }
}
