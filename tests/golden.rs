//! Every golden case of `tests/golden/manifest.json` on every path, with the
//! tolerance of SPEC.md (max pooling bit for bit).

mod common;

use common::{check_case, check_indices, load_cases, run_case_full};
use convpool::Engine;

fn run_all(engine: &Engine) {
    let cases = load_cases();
    assert!(cases.len() >= 170, "manifest lists {} cases", cases.len());
    assert!(cases.iter().filter(|c| c.name.starts_with("v2_")).count() >= 65);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| {
            let out = run_case_full(engine, case).map_err(|e| format!("{}: error {e}", case.name));
            out.and_then(|(o, idx)| {
                check_case(case, &o)
                    .and_then(|_| check_indices(case, idx.as_ref()))
                    .map_err(|e| format!("{}: {e}", case.name))
            })
            .err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} golden cases failed on {}:\n{}",
        failures.len(),
        cases.len(),
        engine.describe(),
        failures.join("\n")
    );
}

#[test]
fn golden_cases_on_cpu_reference() {
    run_all(&Engine::cpu_reference());
}

#[test]
fn golden_cases_on_fast_cpu_path_with_verify() {
    // Once per instruction set this machine has (AVX-512, AVX2, portable).
    let engines = common::cpu_engines();
    assert!(engines.iter().any(|e| e.cpu_isa() == Some(convpool::Isa::Portable)));
    for engine in &engines {
        run_all(engine);
    }
}

#[test]
fn golden_cases_on_gpu_with_verify() {
    if let Some(engine) = common::gpu_engine() {
        run_all(engine);
    }
}

#[test]
fn golden_seed_cases_through_free_functions() {
    // The free functions run on the process-wide engine (`Device::Auto`).
    use common::{d2, d3, d4, pair_of, seed_padding_of};
    use convpool::compat::*;
    let mut checked = 0;
    for case in load_cases() {
        let p = &case.params;
        let img = &case.images;
        let k = case.kernels.as_ref();
        let got = match case.op.as_str() {
            "convolve_grayscale_valid" => convolve_grayscale_valid(d3(img), d2(k.unwrap())).map(|a| a.into_dyn()),
            "convolve_grayscale_same" => convolve_grayscale_same(d3(img), d2(k.unwrap())).map(|a| a.into_dyn()),
            "convolve_grayscale_padding" => {
                convolve_grayscale_padding(d3(img), d2(k.unwrap()), pair_of(&p["padding"])).map(|a| a.into_dyn())
            }
            "convolve_grayscale" => convolve_grayscale(
                d3(img),
                d2(k.unwrap()),
                seed_padding_of(&p["padding"]),
                pair_of(&p["stride"]),
            )
            .map(|a| a.into_dyn()),
            "convolve_channels" => convolve_channels(
                d4(img),
                d3(k.unwrap()),
                seed_padding_of(&p["padding"]),
                pair_of(&p["stride"]),
            )
            .map(|a| a.into_dyn()),
            "convolve" => convolve(
                d4(img),
                d4(k.unwrap()),
                seed_padding_of(&p["padding"]),
                pair_of(&p["stride"]),
            )
            .map(|a| a.into_dyn()),
            "pool" => pool(
                d4(img),
                pair_of(&p["kernel_shape"]),
                pair_of(&p["stride"]),
                p["mode"].as_str().unwrap().parse().unwrap(),
            )
            .map(|a| a.into_dyn()),
            _ => continue,
        };
        let got = got.unwrap_or_else(|e| panic!("{}: {e}", case.name));
        check_case(&case, &got).unwrap_or_else(|e| panic!("{}: {e}", case.name));
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} seed cases checked");
}
