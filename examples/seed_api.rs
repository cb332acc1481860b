//! The seven functions of the classic numpy exercise, with its shapes: each
//! call prints the output shape the way the exercise's `main` files do.
//!
//!     cargo run --release --example seed_api

use convpool::compat::{
    convolve, convolve_channels, convolve_grayscale, convolve_grayscale_padding, convolve_grayscale_same,
    convolve_grayscale_valid, pool, SeedPadding,
};
use convpool::PoolMode;
use ndarray::{Array, Array2, Array3, Array4};

fn shape(s: &[usize]) -> String {
    format!("{s:?}").replace('[', "(").replace(']', ")")
}

fn main() -> convpool::Result<()> {
    // A small MNIST-like grayscale batch and a CIFAR-like colour batch.
    let gray: Array3<f32> = Array::from_shape_fn((8, 28, 28), |(n, y, x)| ((n + y * 3 + x * 7) % 17) as f32 / 16.0);
    let rgb: Array4<f32> =
        Array::from_shape_fn((8, 32, 32, 3), |(n, y, x, c)| ((n + y + 2 * x + c) % 13) as f32 / 12.0);
    let sobel: Array2<f32> = ndarray::arr2(&[[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]);
    let edge3: Array3<f32> = Array::from_shape_fn((3, 3, 3), |(i, j, _)| [1.0, 0.0, -1.0][j] * [1.0, 2.0, 1.0][i]);
    let kernels: Array4<f32> = Array::from_shape_fn((3, 3, 3, 2), |(i, j, c, k)| (i + j + c + k) as f32 / 10.0);

    println!("images {}", shape(gray.shape()));
    println!(
        "convolve_grayscale_valid   -> {}",
        shape(convolve_grayscale_valid(&gray, &sobel)?.shape())
    );
    println!(
        "convolve_grayscale_same    -> {}",
        shape(convolve_grayscale_same(&gray, &sobel)?.shape())
    );
    println!(
        "convolve_grayscale_padding -> {}",
        shape(convolve_grayscale_padding(&gray, &sobel, (2, 4))?.shape())
    );
    let same = convolve_grayscale(&gray, &sobel, SeedPadding::Same, (1, 1))?;
    println!("convolve_grayscale same    -> {}", shape(same.shape()));
    let strided = convolve_grayscale(&gray, &sobel, SeedPadding::Valid, (2, 2))?;
    println!("convolve_grayscale valid/2 -> {}", shape(strided.shape()));
    println!("images {}", shape(rgb.shape()));
    let channels = convolve_channels(&rgb, &edge3, SeedPadding::Valid, (1, 1))?;
    println!("convolve_channels          -> {}", shape(channels.shape()));
    let multi = convolve(&rgb, &kernels, SeedPadding::Same, (1, 1))?;
    println!("convolve                   -> {}", shape(multi.shape()));
    println!(
        "pool max 2x2 / 2           -> {}",
        shape(pool(&rgb, (2, 2), (2, 2), PoolMode::Max)?.shape())
    );
    println!(
        "pool avg 3x3 / 3           -> {}",
        shape(pool(&rgb, (3, 3), (3, 3), PoolMode::Avg)?.shape())
    );
    Ok(())
}
