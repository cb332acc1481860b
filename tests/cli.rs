//! The command line as a user meets it: real `.npy` files in, `.npy` out,
//! one clear line and no output file on bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use convpool::{Conv2dSpec, Engine, Padding, Pool2dSpec, PoolMode};
use ndarray::{Array, Array2, Array3, Array4, ArrayD};
use ndarray_npy::{read_npy, write_npy};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_convpool"))
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("convpool runs")
}

fn tmp() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn p(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn images() -> Array4<f32> {
    Array::from_shape_fn((2, 9, 8, 3), |(n, y, x, c)| {
        ((n * 7 + y * 5 + x * 3 + c) % 11) as f32 - 5.0
    })
}

fn kernels() -> Array4<f32> {
    Array::from_shape_fn((3, 3, 3, 4), |(i, j, c, k)| ((i * 3 + j + c * 2 + k) % 5) as f32 - 2.0)
}

/// Runs `cmd`: the `.npy` it wrote to `out`, or its stderr when it failed.
fn npy_or_stderr(cmd: &mut Command, out: &Path) -> Result<ArrayD<f32>, String> {
    let r = cmd.output().unwrap();
    if !r.status.success() {
        return Err(String::from_utf8_lossy(&r.stderr).to_string());
    }
    Ok(read_npy::<_, ArrayD<f32>>(out).unwrap())
}

/// A bad input: non-zero exit, exactly one error line naming `needle`, no output file.
fn assert_refused(out: &Output, needle: &str, out_file: &Path) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ours: Vec<&str> = stderr.lines().filter(|l| l.starts_with("convpool")).collect();
    assert!(!out.status.success(), "exit 0 for {needle}: {stderr}");
    assert_eq!(ours.len(), 1, "one line expected, got {stderr}");
    assert!(
        ours[0].to_lowercase().contains(&needle.to_lowercase()),
        "{needle:?} not in {:?}",
        ours[0]
    );
    assert!(!out_file.exists(), "partial output left behind");
    let leftovers: Vec<_> = std::fs::read_dir(out_file.parent().unwrap())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn conv_writes_what_the_library_computes() {
    let d = tmp();
    let (x, k, y) = (p(d.path(), "x.npy"), p(d.path(), "k.npy"), p(d.path(), "y.npy"));
    write_npy(&x, &images()).unwrap();
    write_npy(&k, &kernels()).unwrap();
    let out = run(&[
        "conv",
        "--images",
        s(&x),
        "--kernels",
        s(&k),
        "--padding",
        "same",
        "--stride",
        "2,1",
        "--device",
        "cpu",
        "--out",
        s(&y),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Array4<f32> = read_npy(&y).unwrap();
    let want = Engine::cpu()
        .conv2d(&images(), &kernels(), &Conv2dSpec::new(Padding::Same).with_stride(2, 1))
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(got.shape(), &[2, 5, 8, 4]);
}

#[test]
fn integer_inputs_and_the_seed_shapes() {
    // uint8 grayscale images and an int64 Sobel kernel, as numpy users have them.
    let d = tmp();
    let (x, k, y) = (p(d.path(), "x.npy"), p(d.path(), "k.npy"), p(d.path(), "y.npy"));
    let img: Array3<u8> = Array::from_shape_fn((2, 6, 7), |(n, r, c)| (n * 40 + r * 30 + c * 7) as u8);
    let sobel: Array2<i64> = ndarray::arr2(&[[1, 0, -1], [2, 0, -2], [1, 0, -1]]);
    write_npy(&x, &img).unwrap();
    write_npy(&k, &sobel).unwrap();
    let out = run(&[
        "conv",
        "--images",
        s(&x),
        "--kernels",
        s(&k),
        "--device",
        "cpu",
        "--out",
        s(&y),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Array3<f32> = read_npy(&y).unwrap();
    assert_eq!(got.shape(), &[2, 4, 5]);
    // Horizontal ramp of 7 per column: 1*(-14) + 2*(-14) + 1*(-14) = -56.
    assert!(got.iter().all(|&v| v == -56.0), "{got}");
}

#[test]
fn pool_defaults_to_a_stride_equal_to_the_window() {
    let d = tmp();
    let (x, y) = (p(d.path(), "x.npy"), p(d.path(), "y.npy"));
    write_npy(&x, &images()).unwrap();
    let out = run(&[
        "pool",
        "--images",
        s(&x),
        "--window",
        "2,2",
        "--mode",
        "avg",
        "--device",
        "cpu",
        "--out",
        s(&y),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Array4<f32> = read_npy(&y).unwrap();
    let want = Engine::cpu()
        .pool2d(&images(), &Pool2dSpec::new(PoolMode::Avg, 2, 2))
        .unwrap();
    assert_eq!(got, want);
    assert_eq!(got.shape(), &[2, 4, 4, 3]);
}

/// A raw `.npy` with any header, for dtypes and damage ndarray-npy won't write.
fn raw_npy(path: &Path, descr: &str, shape: &str, data: &[u8]) {
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
    bytes.extend_from_slice(header.as_bytes());
    bytes.extend_from_slice(data);
    std::fs::write(path, bytes).unwrap();
}

#[test]
fn float16_and_fortran_order_are_read() {
    let d = tmp();
    let (x, k, y) = (p(d.path(), "x.npy"), p(d.path(), "k.npy"), p(d.path(), "y.npy"));
    // float16 1.0, 2.0, 3.0, 4.0 as a (1, 2, 2) image.
    let halves: Vec<u8> = [0x3c00u16, 0x4000, 0x4200, 0x4400]
        .iter()
        .flat_map(|h| h.to_le_bytes())
        .collect();
    raw_npy(&x, "<f2", "(1, 2, 2)", &halves);
    // A (2, 1) kernel [1, 10] in Fortran order is the same bytes as C order.
    let k_arr: ArrayD<f64> = Array::from_shape_vec(ndarray::IxDyn(&[2, 1]), vec![1.0, 10.0]).unwrap();
    write_npy(&k, &k_arr.reversed_axes().as_standard_layout().reversed_axes()).unwrap();
    let out = run(&[
        "conv",
        "--images",
        s(&x),
        "--kernels",
        s(&k),
        "--device",
        "cpu",
        "--out",
        s(&y),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: Array3<f32> = read_npy(&y).unwrap();
    assert_eq!(got.iter().copied().collect::<Vec<_>>(), vec![31.0, 42.0]);
}

#[test]
fn bad_inputs_are_refused_with_one_line() {
    let d = tmp();
    let dir = d.path();
    let (x, k, y) = (p(dir, "x.npy"), p(dir, "k.npy"), p(dir, "y.npy"));
    write_npy(&x, &images()).unwrap();
    write_npy(&k, &kernels()).unwrap();
    let conv = |images: &Path, kernels: &Path, extra: &[&str]| {
        let mut args = vec![
            "conv",
            "--images",
            s(images),
            "--kernels",
            s(kernels),
            "--device",
            "cpu",
            "--out",
            s(&y),
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    assert_refused(&conv(&p(dir, "missing.npy"), &k, &[]), "missing.npy", &y);

    let truncated = p(dir, "truncated.npy");
    let bytes = std::fs::read(&x).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() - 10]).unwrap();
    assert_refused(&conv(&truncated, &k, &[]), "truncated", &y);

    let mismatch = p(dir, "mismatch.npy");
    raw_npy(&mismatch, "<f4", "(2, 2, 2)", &[0u8; 4 * 9]);
    assert_refused(&conv(&mismatch, &k, &[]), "more than its header", &y);

    // A header that claims terabytes must not make the reader allocate them.
    let hostile = p(dir, "hostile.npy");
    raw_npy(&hostile, "<f4", "(100000, 100000, 1000, 1)", &[0u8; 16]);
    assert_refused(&conv(&hostile, &k, &[]), "needs 40000000000000 bytes", &y);

    let garbage = p(dir, "garbage.npy");
    std::fs::write(&garbage, b"this is not numpy").unwrap();
    assert_refused(&conv(&garbage, &k, &[]), "not a valid .npy", &y);

    let boolean = p(dir, "bool.npy");
    raw_npy(&boolean, "|b1", "(1, 2, 2)", &[1, 0, 1, 0]);
    assert_refused(&conv(&boolean, &k, &[]), "|b1", &y);

    let complex = p(dir, "complex.npy");
    raw_npy(&complex, "<c8", "(1, 2, 2)", &[0; 32]);
    assert_refused(&conv(&complex, &k, &[]), "complex", &y);

    let flat = p(dir, "flat.npy");
    write_npy(&flat, &ndarray::arr1(&[1f32, 2.0, 3.0])).unwrap();
    assert_refused(&conv(&flat, &k, &[]), "images: expected", &y);

    assert_refused(&conv(&x, &k, &["--padding", "sideways"]), "padding", &y);
    assert_refused(&conv(&x, &k, &["--padding", "1.5,2"]), "padding", &y);
    assert_refused(&conv(&x, &k, &["--stride", "0,1"]), "stride", &y);
    // An output no machine holds is an error, not an abort.
    assert_refused(
        &conv(&x, &k, &["--padding", "100000000,100000000"]),
        "cannot be allocated",
        &y,
    );
    assert_refused(&conv(&x, &k, &["--dilation", "-1"]), "dilation", &y);

    let k2 = p(dir, "k2.npy");
    write_npy(&k2, &Array4::<f32>::zeros((3, 3, 2, 1))).unwrap();
    assert_refused(&conv(&x, &k2, &[]), "channel mismatch", &y);

    let big = p(dir, "big.npy");
    write_npy(&big, &Array4::<f32>::zeros((12, 12, 3, 1))).unwrap();
    assert_refused(&conv(&x, &big, &[]), "larger than the padded image", &y);

    assert_refused(
        &run(&["pool", "--images", s(&x), "--window", "0,2", "--out", s(&y)]),
        "window",
        &y,
    );
    assert_refused(
        &run(&[
            "pool",
            "--images",
            s(&x),
            "--window",
            "2",
            "--padding",
            "2,2",
            "--out",
            s(&y),
        ]),
        "smaller than the dilated window",
        &y,
    );
    assert_refused(
        &run(&[
            "pool",
            "--images",
            s(&x),
            "--window",
            "2",
            "--mode",
            "median",
            "--out",
            s(&y),
        ]),
        "mode",
        &y,
    );
    assert_refused(&run(&["conv", "--images", s(&x), "--out", s(&y)]), "--kernels", &y);
}

/// The v2 flags refuse bad values with one line and leave no file (the
/// indices file included).
#[test]
fn bad_v2_flags_are_refused() {
    let d = tmp();
    let (x, k) = (p(d.path(), "x.npy"), p(d.path(), "k.npy"));
    write_npy(&x, &images()).unwrap();
    write_npy(&k, &kernels()).unwrap();
    let b3 = p(d.path(), "b3.npy");
    write_npy(&b3, &ndarray::arr1(&[1f32, 2.0, 3.0])).unwrap();
    let out = p(d.path(), "y.npy");
    let conv = |extra: &[&str]| {
        let mut args = vec!["conv", "--images", s(&x), "--kernels", s(&k), "--out", s(&out)];
        args.extend_from_slice(extra);
        run(&args)
    };
    assert_refused(&conv(&["--padding-mode", "mirror"]), "padding_mode", &out);
    assert_refused(&conv(&["--groups", "2"]), "groups", &out);
    assert_refused(&conv(&["--groups", "0"]), "groups", &out);
    assert_refused(&conv(&["--bias", s(&b3)]), "bias", &out);
    assert_refused(&conv(&["--activation", "gelu"]), "activation", &out);
    assert_refused(&conv(&["--activation", "clip:1:0"]), "activation", &out);
    assert_refused(
        &conv(&["--padding", "same", "--padding-mode", "reflect", "--dilation", "9"]),
        "padding_mode",
        &out,
    );
    let idx = p(d.path(), "i.npy");
    let pool = |extra: &[&str]| {
        let mut args = vec!["pool", "--images", s(&x), "--out", s(&out)];
        args.extend_from_slice(extra);
        run(&args)
    };
    assert_refused(&pool(&["--output-size", "0,2"]), "output_size", &out);
    assert_refused(&pool(&["--output-size", "2,2", "--window", "2"]), "window", &out);
    assert_refused(&pool(&["--output-size", "2,2", "--padding", "1,1"]), "padding", &out);
    assert_refused(
        &pool(&["--window", "2", "--mode", "avg", "--indices", s(&idx)]),
        "indices",
        &out,
    );
    assert!(!idx.exists());
    // Both files when it works: the indices point at the maxima.
    let res = pool(&["--window", "3", "--stride", "2", "--indices", s(&idx)]);
    assert!(res.status.success(), "{}", String::from_utf8_lossy(&res.stderr));
    let values: Array4<f32> = read_npy(&out).unwrap();
    let indices: Array4<i64> = read_npy(&idx).unwrap();
    let x4 = images();
    for ((n, oy, ox, c), &i) in indices.indexed_iter() {
        let (y, xx) = (i as usize / 8, i as usize % 8);
        assert_eq!(x4[[n, y, xx, c]], values[[n, oy, ox, c]]);
    }
}

#[test]
fn unwritable_output_leaves_nothing() {
    let d = tmp();
    let x = p(d.path(), "x.npy");
    write_npy(&x, &images()).unwrap();
    let y = d.path().join("no-such-dir").join("y.npy");
    let out = run(&[
        "pool",
        "--images",
        s(&x),
        "--window",
        "2",
        "--device",
        "cpu",
        "--out",
        s(&y),
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-dir"));
    assert!(!y.exists());
}

#[test]
fn gpu_without_an_adapter_is_an_error_that_says_so() {
    // DX12 does not exist on Linux: wgpu finds no adapter there.
    if !cfg!(target_os = "linux") {
        return;
    }
    let d = tmp();
    let (x, y) = (p(d.path(), "x.npy"), p(d.path(), "y.npy"));
    write_npy(&x, &images()).unwrap();
    let out = bin()
        .args([
            "pool",
            "--images",
            s(&x),
            "--window",
            "2",
            "--device",
            "gpu",
            "--out",
            s(&y),
        ])
        .env("WGPU_BACKEND", "dx12")
        .output()
        .unwrap();
    assert_refused(&out, "no GPU adapter", &y);
    // auto falls back to the CPU instead.
    let out = bin()
        .args(["pool", "--images", s(&x), "--window", "2", "--out", s(&y)])
        .env("WGPU_BACKEND", "dx12")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("on CPU"));
}

#[test]
fn devices_lists_adapters_or_says_none() {
    let out = run(&["devices"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("max storage binding") || text.contains("no GPU adapter found"),
        "{text}"
    );
    assert!(text.contains("--device auto"), "{text}");
}

/// `CONVPOOL_CPU_ISA` forces the fast CPU path's instruction set: every
/// one this CPU has gives the library's result (within SPEC.md's
/// tolerance); an unknown name is one line naming the variable, and no
/// output file.
#[test]
fn cpu_isa_is_forced_by_the_environment() {
    let dir = tmp();
    let (x, k) = (p(dir.path(), "x.npy"), p(dir.path(), "k.npy"));
    write_npy(&x, &images()).unwrap();
    write_npy(&k, &kernels()).unwrap();
    let want = Engine::cpu_reference()
        .conv2d(&images(), &kernels(), &Conv2dSpec::new(Padding::Same))
        .unwrap();
    for isa in convpool::Isa::available() {
        let y = p(dir.path(), &format!("y_{isa}.npy"));
        let out = bin()
            .env("CONVPOOL_CPU_ISA", isa.name())
            .args([
                "conv",
                "--images",
                s(&x),
                "--kernels",
                s(&k),
                "--padding",
                "same",
                "--device",
                "cpu",
            ])
            .args(["--out", s(&y)])
            .output()
            .unwrap();
        assert!(out.status.success(), "{isa}: {}", String::from_utf8_lossy(&out.stderr));
        let got: Array4<f32> = read_npy(&y).unwrap();
        let diff = got.iter().zip(&want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
        assert!(diff <= 1e-4 * 20.0, "{isa}: {diff}");
    }
    let y = p(dir.path(), "bad.npy");
    let out = bin()
        .env("CONVPOOL_CPU_ISA", "avx9000")
        .args([
            "conv",
            "--images",
            s(&x),
            "--kernels",
            s(&k),
            "--device",
            "cpu",
            "--out",
            s(&y),
        ])
        .output()
        .unwrap();
    assert_refused(&out, "CONVPOOL_CPU_ISA", &y);
}

/// The benchmark's JSON says which instruction set each workload ran and
/// which vectors the FMA peak was measured with.
#[test]
fn bench_json_names_the_instruction_sets() {
    let dir = tmp();
    let json = p(dir.path(), "b.json");
    let out = bin()
        .env("CONVPOOL_CPU_ISA", "portable")
        .args([
            "bench",
            "--quick",
            "--repeats",
            "1",
            "--device",
            "cpu",
            "--workload",
            "cnn_maxpool",
        ])
        .args(["--workload", "cnn_conv1x1", "--json", s(&json)])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v.as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let widest = convpool::Isa::detected().name();
    for r in rows {
        assert_eq!(r["peak_fma_isa"], widest);
        let want = if r["workload"] == "cnn_maxpool" {
            "portable".to_string()
        } else {
            // The GEMM runs what the gemm crate picks: the widest vectors.
            widest.to_string()
        };
        assert_eq!(r["isa"], want.as_str(), "{r}");
        // No GPU kernel on the CPU.
        assert!(r["gpu_kernel"].is_null(), "{r}");
    }
}

/// Headless (no XDG_RUNTIME_DIR), a successful command prints nothing on
/// stderr that reads as a failure (Mesa's window-system probing).
#[test]
fn headless_runs_are_quiet() {
    let out = bin()
        .env_remove("XDG_RUNTIME_DIR")
        .env_remove("NODEVICE_SELECT")
        .arg("devices")
        .output()
        .unwrap();
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.to_lowercase().contains("error"), "{stderr}");
}

/// A mutated `.npy` header (a syntax error inside its dict) is one line on
/// stderr naming the file, not the header parser's drawing.
#[test]
fn a_broken_npy_header_is_one_line() {
    let dir = tmp();
    let (x, y) = (p(dir.path(), "x.npy"), p(dir.path(), "y.npy"));
    write_npy(&x, &images()).unwrap();
    let bytes = std::fs::read(&x).unwrap();
    let text = String::from_utf8_lossy(&bytes[..128]).to_string();
    let at = text.find("'shape': (").expect("a shape entry") + "'shape': (".len();
    let close = at + text[at..].find(')').unwrap();
    let mut broken = bytes.clone();
    broken[close] = b']';
    std::fs::write(&x, &broken).unwrap();
    let out = run(&["pool", "--images", s(&x), "--window", "2,2", "--out", s(&y)]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.contains("XDG_RUNTIME_DIR"))
        .collect();
    assert_eq!(lines.len(), 1, "{stderr}");
    assert!(
        lines[0].contains("x.npy") && lines[0].contains("syntax error"),
        "{}",
        lines[0]
    );
    assert!(!y.exists());
}

/// uint8 and uint16 `.npy` images are read as they are (a GPU uploads their
/// own bytes and widens them there) and give what the same values as f32
/// give, bit for bit, on the GPU and on the CPU; Fortran order included.
#[test]
fn uint8_and_uint16_images_equal_their_f32_values_on_every_device() {
    let d = tmp();
    let file = |name: &str| p(d.path(), name);
    let px: Array4<u8> = Array::from_shape_fn((2, 9, 8, 3), |(n, y, x, c)| {
        ((n * 71 + y * 13 + x * 5 + c * 3) % 256) as u8
    });
    write_npy(file("u8.npy"), &px).unwrap();
    write_npy(file("u16.npy"), &px.mapv(|v| u16::from(v) * 257)).unwrap();
    write_npy(file("f8.npy"), &px.mapv(f32::from)).unwrap();
    write_npy(file("f16.npy"), &px.mapv(|v| f32::from(u16::from(v) * 257))).unwrap();
    write_npy(file("u8f.npy"), &px.t().as_standard_layout().t()).unwrap();
    write_npy(file("k.npy"), &kernels()).unwrap();
    let gpu_required = std::env::var("CONVPOOL_REQUIRE_GPU").is_ok_and(|v| v == "1");
    // On the GPU: the default, and host calls' pixels widened on the device
    // (chunk by chunk) and on the host.
    for (device, widen) in [("cpu", ""), ("gpu", ""), ("gpu", "device"), ("gpu", "host")] {
        let go = |op: &[&str], input: &str, out: &str| {
            let (i, o) = (file(input), file(out));
            let mut args = op.to_vec();
            args.extend(["--images", s(&i), "--device", device, "--out", s(&o)]);
            let r = bin().args(&args).env("CONVPOOL_GPU_WIDEN", widen).output().unwrap();
            if !r.status.success() {
                let err = String::from_utf8_lossy(&r.stderr).to_string();
                assert!(
                    device == "gpu" && !gpu_required && err.contains("no GPU adapter"),
                    "{err}"
                );
                return None;
            }
            Some(read_npy::<_, ArrayD<f32>>(&o).unwrap())
        };
        let k = file("k.npy");
        let conv = ["conv", "--kernels", s(&k), "--padding", "same", "--activation", "relu"];
        let pool = ["pool", "--window", "3,3", "--stride", "2,2", "--mode", "avg"];
        for op in [&conv[..], &pool[..]] {
            let Some(want8) = go(op, "f8.npy", "a.npy") else { return };
            assert_eq!(go(op, "u8.npy", "b.npy").unwrap(), want8, "{device} {widen} {op:?}");
            assert_eq!(go(op, "u8f.npy", "c.npy").unwrap(), want8, "{device} {widen} {op:?}");
            let want16 = go(op, "f16.npy", "d.npy").unwrap();
            assert_eq!(go(op, "u16.npy", "e.npy").unwrap(), want16, "{device} {widen} {op:?}");
        }
    }
    // A setting that is neither is refused, naming the variable.
    let r = bin()
        .args([
            "pool",
            "--images",
            s(&file("u8.npy")),
            "--window",
            "2,2",
            "--device",
            "gpu",
        ])
        .args(["--out", s(&file("f.npy"))])
        .env("CONVPOOL_GPU_WIDEN", "sideways")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&r.stderr);
    assert!(!r.status.success() && err.contains("CONVPOOL_GPU_WIDEN"), "{err}");
    assert!(!file("f.npy").exists());
}

/// `CONVPOOL_CONV_RGB` chooses how the GPU reads RGB images (padded to four
/// channels or three scalar loads): the same output bits either way, from
/// u8 and from f32 files; any other value is refused, naming the variable,
/// with no output file.
#[test]
fn rgb_padding_on_the_gpu_changes_no_output_bit() {
    let d = tmp();
    let file = |name: &str| p(d.path(), name);
    let px: Array4<u8> = Array::from_shape_fn((2, 11, 9, 3), |(n, y, x, c)| {
        ((n * 37 + y * 11 + x * 7 + c * 5) % 256) as u8
    });
    write_npy(file("u8.npy"), &px).unwrap();
    write_npy(file("f32.npy"), &px.mapv(|v| f32::from(v) / 255.0)).unwrap();
    let k = Array::from_shape_fn((3, 3, 3, 16), |(i, j, c, k)| {
        ((i * 5 + j * 3 + c + k) % 7) as f32 * 0.25 - 0.75
    });
    write_npy(file("k.npy"), &k).unwrap();
    let gpu_required = std::env::var("CONVPOOL_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let go = |input: &str, rgb: &str, out: &str| {
        let (i, o, k) = (file(input), file(out), file("k.npy"));
        let mut cmd = bin();
        cmd.args(["conv", "--images", s(&i), "--kernels", s(&k), "--padding", "same"])
            .args(["--padding-mode", "reflect", "--device", "gpu", "--out", s(&o)])
            .env("CONVPOOL_CONV_RGB", rgb);
        npy_or_stderr(&mut cmd, &o)
    };
    for input in ["u8.npy", "f32.npy"] {
        let want = match go(input, "scalar", "a.npy") {
            Ok(want) => want,
            Err(err) => {
                assert!(!gpu_required && err.contains("no GPU adapter"), "{err}");
                return;
            }
        };
        assert_eq!(go(input, "pad", "b.npy").unwrap(), want, "{input}");
        assert_eq!(go(input, "", "c.npy").unwrap(), want, "{input}");
    }
    let err = go("u8.npy", "vec3", "d.npy").unwrap_err();
    assert!(err.contains("CONVPOOL_CONV_RGB"), "{err}");
    assert!(!file("d.npy").exists());
}

/// `CONVPOOL_CONV_WINOGRAD=on` runs a 3x3 layer through Winograd on the GPU:
/// `--verify` holds it to the reference (SPEC.md's tolerance); any value
/// but on/off/1/0 is refused, naming the variable, with no output file.
#[test]
fn winograd_on_the_gpu_from_the_command_line() {
    let d = tmp();
    let file = |name: &str| p(d.path(), name);
    let x = Array::from_shape_fn((2, 13, 10, 8), |(n, y, x, c)| {
        ((n * 31 + y * 7 + x * 3 + c) % 17) as f32 * 0.125 - 1.0
    });
    write_npy(file("x.npy"), &x).unwrap();
    let k = Array::from_shape_fn((3, 3, 8, 12), |(i, j, c, k)| {
        ((i * 5 + j * 3 + c + k) % 7) as f32 * 0.25 - 0.75
    });
    write_npy(file("k.npy"), &k).unwrap();
    let gpu_required = std::env::var("CONVPOOL_REQUIRE_GPU").is_ok_and(|v| v == "1");
    let go = |winograd: &str, out: &str| {
        let (i, o, k) = (file("x.npy"), file(out), file("k.npy"));
        let mut cmd = bin();
        cmd.args(["conv", "--images", s(&i), "--kernels", s(&k), "--padding", "same"])
            .args(["--device", "gpu", "--verify", "--out", s(&o)])
            .env("CONVPOOL_CONV_WINOGRAD", winograd);
        npy_or_stderr(&mut cmd, &o)
    };
    let plain = match go("off", "a.npy") {
        Ok(y) => y,
        Err(err) => {
            assert!(!gpu_required && err.contains("no GPU adapter"), "{err}");
            return;
        }
    };
    let fast = go("on", "b.npy").unwrap();
    assert_eq!(fast.shape(), plain.shape());
    assert!(fast
        .iter()
        .zip(plain.iter())
        .all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs())));
    let err = go("yes", "c.npy").unwrap_err();
    assert!(err.contains("CONVPOOL_CONV_WINOGRAD"), "{err}");
    assert!(!file("c.npy").exists());
}
