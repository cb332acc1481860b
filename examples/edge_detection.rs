//! Sobel edges of a real photograph.
//!
//!     cargo run --release --example edge_detection [INPUT.png] [OUTPUT.png]
//!
//! Defaults: `examples/data/camera.png` (CC0, see examples/data/README.md)
//! to `edges.png`.

use std::path::PathBuf;

use convpool::filter::{self, FilterKernel, Pipeline};
use convpool::{Device, Engine, Padding, PaddingMode};

fn main() -> convpool::Result<()> {
    let mut args = std::env::args().skip(1);
    let input = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/data/camera.png"));
    let output = args
        .next()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("edges.png"));

    let engine = Engine::new(Device::Auto)?;
    let image = filter::load_image(&input)?;
    let pipeline = Pipeline {
        kernels: vec![FilterKernel::Sobel],
        pool: None,
        padding: Padding::Same,
        border: PaddingMode::Reflect, // as OpenCV: no false edges at the border
        scale: None,                  // derivative kernel: absolute value, stretched to 0..255
    };
    let values = pipeline.run(&engine, filter::stack(&[&image])?)?;
    let pixels = filter::to_pixels(
        &filter::image_of(&values, 0),
        pipeline.scale(),
        filter::value_range(&image.pixels),
        image.max_value(),
    );
    filter::save_png(&output, &pixels, image.sixteen_bit)?;
    let (h, w, c) = image.pixels.dim();
    println!(
        "{} ({w}x{h}, {c} channel(s)) -> {} on {}",
        input.display(),
        output.display(),
        engine.describe()
    );
    Ok(())
}
