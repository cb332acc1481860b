//! The GPU path against the CPU reference on a random batch, in verify mode,
//! printing the largest difference of each operation.
//!
//!     cargo run --release --example gpu_vs_cpu
//!
//! Needs a GPU adapter (Mesa's lavapipe will do:
//! `apt-get install mesa-vulkan-drivers`); without one it says so and stops.

use convpool::bench::random_array;
use convpool::check::{conv_tolerance, largest_difference, max_abs_finite};
use convpool::{Conv2dSpec, Device, Engine, EngineOptions, Padding, Pool2dSpec, PoolMode};

fn main() -> convpool::Result<()> {
    let engine = match Engine::with_options(EngineOptions {
        device: Device::Gpu,
        verify: true,
        ..Default::default()
    }) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("no GPU to compare: {e}");
            return Ok(());
        }
    };
    println!("GPU: {}", engine.describe());
    let images = random_array([4, 40, 36, 5], 7);
    let kernels = random_array([3, 3, 5, 24], 8);

    let spec = Conv2dSpec::new(Padding::Same).with_stride(2, 1).with_dilation(1, 2);
    // Verify mode already failed the call if it were out of tolerance.
    let gpu = engine.conv2d(&images, &kernels, &spec)?;
    let g = spec.resolve([4, 40, 36, 5], [3, 3, 5, 24])?;
    let reference = Engine::cpu_reference();
    let cpu = reference.conv2d(&images, &kernels, &spec)?;
    let d = largest_difference(gpu.view(), cpu.view(), false);
    let tol = conv_tolerance(g.reduction_len(), max_abs_finite(cpu.view()));
    println!(
        "conv2d {:?}: largest difference {:.3e} at {:?} (gpu {}, cpu {}), tolerance {:.1e}",
        gpu.shape(),
        d.max_abs_diff,
        d.index,
        d.got,
        d.reference,
        tol
    );

    for mode in [PoolMode::Max, PoolMode::Avg] {
        let spec = Pool2dSpec::new(mode, 3, 3)
            .with_stride(2, 2)
            .with_padding(Padding::Symmetric(1, 1))
            .with_ceil_mode(true);
        let gpu = engine.pool2d(&images, &spec)?;
        let cpu = reference.pool2d(&images, &spec)?;
        let d = largest_difference(gpu.view(), cpu.view(), mode == PoolMode::Max);
        println!(
            "pool2d {mode} {:?}: largest difference {:.3e}",
            gpu.shape(),
            d.max_abs_diff
        );
    }
    Ok(())
}
