//! `convpool filter` on real photographs, checked against the CPU reference
//! on the decoded pixels, and its failure modes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use convpool::filter::{self, FilterKernel, Scale};
use convpool::{Conv2dSpec, Padding, PaddingMode};
use ndarray::{Array3, Array4, Axis};

fn photo(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/data").join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_convpool"))
        .args(args)
        .output()
        .expect("convpool runs")
}

fn ours(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("convpool"))
        .map(String::from)
        .collect()
}

fn no_part_files(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .all(|e| !e.unwrap().file_name().to_string_lossy().ends_with(".part"))
}

#[test]
fn sobel_edges_match_the_reference_on_the_decoded_pixels() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("edges.png");
    let input = photo("camera.png");
    let res = run(&[
        "filter",
        "--input",
        input.to_str().unwrap(),
        "--kernel",
        "sobel",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{:?}", ours(&res));

    // The reference: decoded pixels, Sobel x and y with `same` padding and
    // the filter's default border (reflect), gradient magnitude, then abs +
    // min-max to 0..255.
    let pixels = image::open(&input).unwrap().to_luma8();
    let (w, h) = pixels.dimensions();
    let x = Array4::from_shape_vec(
        (1, h as usize, w as usize, 1),
        pixels.into_raw().into_iter().map(f32::from).collect(),
    )
    .unwrap();
    let gx = FilterKernel::SobelX.weights().unwrap();
    let gy = FilterKernel::SobelY.weights().unwrap();
    let k = ndarray::stack(Axis(2), &[gx.view(), gy.view()])
        .unwrap()
        .insert_axis(Axis(2));
    let spec = Conv2dSpec::new(Padding::Same).with_padding_mode(PaddingMode::Reflect);
    let grad = convpool::Engine::cpu_reference().conv2d(&x, &k, &spec).unwrap();
    let mag = grad
        .map_axis(Axis(3), |p| (p[0] * p[0] + p[1] * p[1]).sqrt())
        .insert_axis(Axis(2));
    let want = filter::to_pixels(&mag.index_axis(Axis(0), 0).to_owned(), Scale::Abs, (0.0, 255.0), 255.0);

    let got = image::open(&out).unwrap().to_luma8();
    assert_eq!(got.dimensions(), (w, h));
    let got = Array3::from_shape_vec((h as usize, w as usize, 1), got.into_raw()).unwrap();
    let worst = got
        .iter()
        .zip(want.iter())
        .map(|(&g, &r)| (g as f32 - r.round()).abs())
        .fold(0.0, f32::max);
    assert!(worst <= 1.0, "largest pixel difference {worst}");
    // Real edges: plenty of bright pixels, most of the sky dark.
    let bright = got.iter().filter(|&&v| v > 128).count();
    assert!(bright > 500 && bright < (w * h / 4) as usize, "{bright} bright pixels");
}

/// A blur of a constant image is constant everywhere, edges included: the
/// default border reflects the image into its padding (zeros would darken
/// the edges, and still do when asked for).
#[test]
fn a_gaussian_blur_of_a_constant_image_is_constant_to_the_edges() {
    let d = tempfile::tempdir().unwrap();
    let src = d.path().join("flat.png");
    image::ImageBuffer::from_fn(40, 30, |_, _| image::Rgb([180u8, 90, 30]))
        .save(&src)
        .unwrap();
    for device in ["cpu", "gpu"] {
        if device == "gpu" && convpool::gpu::list_adapters().is_empty() {
            continue;
        }
        let out = d.path().join(format!("blur_{device}.png"));
        let res = run(&[
            "filter",
            "--input",
            src.to_str().unwrap(),
            "--kernel",
            "gaussian:15:5",
            "--device",
            device,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert!(res.status.success(), "{:?}", ours(&res));
        let img = image::open(&out).unwrap().to_rgb8();
        assert_eq!(img.dimensions(), (40, 30));
        assert!(img.pixels().all(|p| p.0 == [180, 90, 30]), "{device}: a pixel changed");
    }
    let out = d.path().join("zeros.png");
    let res = run(&[
        "filter",
        "--input",
        src.to_str().unwrap(),
        "--kernel",
        "gaussian:15:5",
        "--border",
        "zeros",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{:?}", ours(&res));
    let img = image::open(&out).unwrap().to_rgb8();
    assert!(img.get_pixel(0, 0)[0] < 120, "zeros padding darkens the corner");
    assert_eq!(img.get_pixel(20, 15).0, [180, 90, 30]);
    let bad = d.path().join("bad.png");
    let res = run(&[
        "filter",
        "--input",
        src.to_str().unwrap(),
        "--kernel",
        "box:3",
        "--border",
        "mirror",
        "--out",
        bad.to_str().unwrap(),
    ]);
    assert!(!res.status.success() && !bad.exists());
    assert_eq!(ours(&res).len(), 1);
    assert!(ours(&res)[0].contains("padding_mode"), "{:?}", ours(&res));
}

#[test]
fn colour_and_sixteen_bit_images_keep_their_format() {
    let d = tempfile::tempdir().unwrap();
    // RGB: each channel blurred on its own, pooled 2x2.
    let rgb = d.path().join("rgb.png");
    image::ImageBuffer::from_fn(90, 60, |x, y| image::Rgb([(x * 2) as u8, (y * 4) as u8, 200u8]))
        .save(&rgb)
        .unwrap();
    let out = d.path().join("rgb_out.png");
    let res = run(&[
        "filter",
        "--input",
        rgb.to_str().unwrap(),
        "--kernel",
        "gaussian:5:1.0",
        "--pool",
        "max:2x2",
        "--device",
        "cpu",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{:?}", ours(&res));
    let img = image::open(&out).unwrap();
    assert_eq!((img.width(), img.height()), (45, 30));
    assert_eq!(img.color(), image::ColorType::Rgb8);
    // The blue channel is constant inside: blurring and pooling keep it.
    assert_eq!(img.to_rgb8().get_pixel(20, 15)[2], 200);

    // A 16-bit gray ramp through `identity` comes back bit for bit.
    let src = d.path().join("ramp16.png");
    let ramp =
        image::ImageBuffer::<image::Luma<u16>, Vec<u16>>::from_fn(64, 32, |x, y| image::Luma([(x * 1000 + y) as u16]));
    ramp.save(&src).unwrap();
    let out16 = d.path().join("ramp_out.png");
    let res = run(&[
        "filter",
        "--input",
        src.to_str().unwrap(),
        "--kernel",
        "identity",
        "--device",
        "cpu",
        "--out",
        out16.to_str().unwrap(),
    ]);
    assert!(res.status.success(), "{:?}", ours(&res));
    let back = image::open(&out16).unwrap();
    assert_eq!(back.color(), image::ColorType::L16);
    assert_eq!(back.to_luma16().into_raw(), ramp.into_raw());
}

#[test]
fn a_folder_runs_with_progress_lines_and_skips_a_corrupt_image() {
    let d = tempfile::tempdir().unwrap();
    let inputs = d.path().join("in");
    std::fs::create_dir(&inputs).unwrap();
    for i in 0..5 {
        std::fs::copy(photo("camera.png"), inputs.join(format!("cam{i}.png"))).unwrap();
    }
    let tiny = image::ImageBuffer::from_fn(40, 30, |x, y| image::Rgb([x as u8, y as u8, 7]));
    tiny.save(inputs.join("tiny.png")).unwrap();
    std::fs::write(inputs.join("broken.png"), b"not a png").unwrap();
    let outs = d.path().join("out");
    let res = run(&[
        "filter",
        "--input",
        inputs.to_str().unwrap(),
        "--kernel",
        "box:3",
        "--device",
        "cpu",
        "--out",
        &format!("{}/", outs.display()),
    ]);
    let lines = ours(&res);
    assert_eq!(res.status.code(), Some(1), "{lines:?}");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("[1/7]") && l.contains("broken.png") && l.contains("cannot decode")),
        "{lines:?}"
    );
    assert!(lines.last().unwrap().contains("filtered 6 of 7 images"), "{lines:?}");
    for name in ["cam0.png", "cam4.png", "tiny.png"] {
        assert!(outs.join(name).exists(), "{name}");
    }
    assert!(!outs.join("broken.png").exists());
    assert!(no_part_files(&outs));
}

#[test]
fn bad_input_is_one_line_and_no_file() {
    let d = tempfile::tempdir().unwrap();
    let out = d.path().join("x.png");
    let broken = d.path().join("broken.jpg");
    std::fs::write(&broken, b"\xff\xd8\xff garbage").unwrap();
    let cam = photo("camera.png");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--input", broken.to_str().unwrap(), "--kernel", "sobel"],
            "cannot decode",
        ),
        (
            vec!["--input", cam.to_str().unwrap(), "--kernel", "blur"],
            "unknown kernel",
        ),
        (vec!["--input", cam.to_str().unwrap(), "--kernel", "box:0"], "kernel"),
        (vec!["--input", cam.to_str().unwrap(), "--pool", "median:2x2"], "pool"),
        (vec!["--input", cam.to_str().unwrap(), "--scale", "log"], "scale"),
        (vec!["--input", "/no/such/photo.png"], "/no/such/photo.png"),
    ];
    for (args, needle) in cases {
        let mut full = vec!["filter"];
        full.extend(args);
        full.extend(["--device", "cpu", "--out", out.to_str().unwrap()]);
        let res = run(&full);
        let lines = ours(&res);
        assert!(!res.status.success());
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains(needle), "{needle:?} not in {lines:?}");
        assert!(!out.exists());
    }
    let unwritable = d.path().join("missing-dir").join("x.png");
    let res = run(&[
        "filter",
        "--input",
        cam.to_str().unwrap(),
        "--kernel",
        "sobel",
        "--device",
        "cpu",
        "--out",
        unwritable.to_str().unwrap(),
    ]);
    let lines = ours(&res);
    assert!(!res.status.success());
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("missing-dir"), "{lines:?}");
    assert!(no_part_files(d.path()));
}

#[test]
fn named_kernels_are_what_they_say() {
    let g = FilterKernel::Gaussian(5, 1.0).weights().unwrap();
    assert!((g.sum() - 1.0).abs() < 1e-6);
    assert_eq!(g[[2, 2]], g.iter().copied().fold(0.0, f32::max));
    assert_eq!(FilterKernel::Box(3).weights().unwrap().sum(), 1.0);
    assert!(FilterKernel::SobelX.is_derivative() && FilterKernel::Laplacian.is_derivative());
    assert!(!FilterKernel::Sharpen.is_derivative() && !FilterKernel::Emboss.is_derivative());
    assert_eq!(
        "gaussian:3".parse::<FilterKernel>().unwrap(),
        FilterKernel::Gaussian(3, 0.8)
    );
    assert_eq!(filter::parse_pool("avg:3x2:1").unwrap().stride, Some((1, 1)));
}

/// Images of different shapes (or none) do not stack: a typed error naming
/// both shapes, not a panic.
#[test]
fn stacking_images_of_different_sizes_is_an_error() {
    let a = filter::load_image(&photo("camera.png")).unwrap();
    let mut b = a.clone();
    b.pixels = Array3::zeros((3, 4, a.pixels.shape()[2]));
    let err = filter::stack(&[&a, &b]).unwrap_err().to_string();
    assert!(err.starts_with("images") && err.contains("[3, 4,"), "{err}");
    assert!(filter::stack(&[]).is_err());
    assert_eq!(filter::stack(&[&a, &a]).unwrap().shape()[0], 2);
}

/// The filter's GPU batches travel as the images' own 8- or 16-bit samples
/// and are widened on the device: the result is the f32 batch's, bit for
/// bit, on every device, with a quarter (half) of the image bytes uploaded.
#[test]
fn sample_batches_equal_f32_batches_and_upload_fewer_bytes() {
    let gray = filter::load_image(&photo("camera.png")).unwrap();
    assert!(!gray.sixteen_bit);
    let mut deep = gray.clone();
    deep.pixels = gray.pixels.mapv(|v| v * 257.0);
    deep.sixteen_bit = true;
    let pipeline = |kernels: Vec<FilterKernel>| filter::Pipeline {
        kernels,
        pool: Some(convpool::Pool2dSpec::new(convpool::PoolMode::Max, 2, 2)),
        padding: Padding::Same,
        border: PaddingMode::Reflect,
        scale: None,
    };
    // Sobel's magnitude is taken on the host, mid-chain; the blur and the
    // pooling stay on the device from the upload to the download.
    let sobel = pipeline(vec![FilterKernel::Gaussian(5, 1.2), FilterKernel::Sobel]);
    let blur = pipeline(vec![FilterKernel::Gaussian(5, 1.2), FilterKernel::Sharpen]);
    let mut engines = vec![convpool::Engine::cpu()];
    let gpu_required = std::env::var("CONVPOOL_REQUIRE_GPU").is_ok_and(|v| v == "1");
    match convpool::Engine::new(convpool::Device::Gpu) {
        Ok(e) => engines.push(e),
        Err(e) => assert!(!gpu_required, "{e}"),
    }
    let bits = |a: &Array4<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    for engine in &engines {
        for (im, bytes) in [(&gray, 1), (&deep, 2)] {
            let samples = filter::stack_samples(&[im, im]).unwrap();
            for p in [&sobel, &blur] {
                let want = p.run(engine, filter::stack(&[im, im]).unwrap()).unwrap();
                let got = p.run_samples(engine, &samples).unwrap();
                assert_eq!(bits(&got), bits(&want), "{} {bytes}", engine.describe());
            }
            if let Some(g) = engine.gpu() {
                let before = g.transfer_bytes().0;
                blur.run_samples(engine, &samples).unwrap();
                // The samples, then two small kernels' weights.
                let up = g.transfer_bytes().0 - before;
                let values = 2 * im.pixels.len() as u64;
                assert!(up >= values * bytes && up < values * bytes + 4096, "{up}");
            }
        }
    }
    // A batch larger than one device buffer runs call by call from the
    // host: the same bits, and the first step still uploads the samples
    // (each chunk's rows with their halos), not f32 values.
    if let Ok(small) = convpool::Engine::with_options(convpool::EngineOptions {
        device: convpool::Device::Gpu,
        gpu: convpool::GpuOptions {
            // One image of samples or values per binding (a reflected
            // border reads whole images), not two.
            max_binding_bytes: Some(1088 << 10),
            max_buffer_bytes: Some(1536 << 10),
            // What a discrete GPU does (lavapipe widens host calls' samples
            // on the host by default, sharing the host's memory).
            device_widening: Some(true),
            ..Default::default()
        },
        ..Default::default()
    }) {
        let g = small.gpu().unwrap();
        let one = pipeline(vec![FilterKernel::Gaussian(5, 1.2)]);
        let one = filter::Pipeline { pool: None, ..one };
        for (im, bytes) in [(&gray, 1), (&deep, 2)] {
            let samples = filter::stack_samples(&[im, im]).unwrap();
            let values = 2 * im.pixels.len() as u64;
            assert!(values * 4 > 1536 << 10);
            let want = one.run(&small, filter::stack(&[im, im]).unwrap()).unwrap();
            let before = g.transfer_bytes().0;
            let got = one.run_samples(&small, &samples).unwrap();
            let up = g.transfer_bytes().0 - before;
            assert!(bits(&got) == bits(&want), "{bytes}-byte samples");
            assert!(
                up >= values * bytes && up < values * bytes * 5 / 4 + 4096,
                "{up} for {values} samples"
            );
            // Pooled too, and Sobel's magnitude on the host mid-chain.
            for p in [&sobel, &blur] {
                let want = p.run(&small, filter::stack(&[im, im]).unwrap()).unwrap();
                let got = p.run_samples(&small, &samples).unwrap();
                assert!(bits(&got) == bits(&want), "{bytes}-byte samples");
            }
        }
    } else {
        assert!(!gpu_required);
    }
    // Mixed depths do not make one batch of samples.
    let err = filter::stack_samples(&[&gray, &deep]).unwrap_err().to_string();
    assert!(err.contains("bit depth"), "{err}");
}
