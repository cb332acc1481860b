//! The bodies of the fuzz targets, shared by `cargo fuzz` (fuzz_targets/)
//! and by the regression test that replays every committed corpus file
//! (tests/fuzz_corpus.rs). Each feeds arbitrary bytes to a public entry
//! point; the only acceptable outcomes are a result or a typed error whose
//! message is one line. A panic, an abort or a hang is a finding.

use std::path::PathBuf;

use convpool::{Activation, Conv2dSpec, Engine, Padding, PaddingMode, Pool2dSpec, PoolMode, Window};
use ndarray::{Array1, Array4};

fn one_line(e: &convpool::Error) {
    let text = e.to_string();
    assert!(!text.contains('\n'), "a multi-line error: {text:?}");
    assert!(!text.is_empty());
}

/// A scratch file of this process (the readers take paths).
fn scratch(ext: &str) -> PathBuf {
    std::env::temp_dir().join(format!("convpool-fuzz-{}.{ext}", std::process::id()))
}

/// The `.npy` reader on arbitrary bytes.
pub fn npy(data: &[u8]) {
    let path = scratch("npy");
    std::fs::write(&path, data).expect("scratch file");
    if let Err(e) = convpool::npy::read_f32(&path) {
        one_line(&e);
    }
}

/// Every text parser of the command line and the library: padding, border
/// modes, strides and windows (`A,B`), activations, pooling modes, filter
/// kernels and pooling, devices, instruction sets.
pub fn parsers(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let check = |r: Result<(), convpool::Error>| {
        if let Err(e) = r {
            one_line(&e);
        }
    };
    check(text.parse::<Padding>().map(drop));
    check(text.parse::<PaddingMode>().map(drop));
    check(text.parse::<Activation>().map(drop));
    check(text.parse::<PoolMode>().map(drop));
    check(text.parse::<convpool::Device>().map(drop));
    check(text.parse::<convpool::Isa>().map(drop));
    check(convpool::shape::parse_pair("stride", text).map(drop));
    check(text.parse::<convpool::filter::FilterKernel>().map(drop));
    check(convpool::filter::parse_pool(text).map(drop));
    if let Ok(a) = text.parse::<Activation>() {
        // What parses prints back as the same activation.
        assert_eq!(a.to_string().parse::<Activation>().unwrap(), a);
    }
}

/// Reads small numbers from the input, cycling.
struct Bytes<'a>(&'a [u8], usize);

impl Bytes<'_> {
    fn byte(&mut self) -> u8 {
        if self.0.is_empty() {
            return 0;
        }
        let b = self.0[self.1 % self.0.len()];
        self.1 += 1;
        b
    }
    /// Mostly small, sometimes huge (hostile strides, pads, dilations).
    fn size(&mut self, small: usize) -> usize {
        match self.byte() {
            250 => 1 << 20,
            251 => 1 << 31,
            252 => usize::MAX / 3,
            253 => 0,
            b => b as usize % small,
        }
    }
}

/// The engine's entry points with arbitrary small shapes and every option:
/// a result of the right shape or a typed one-line error.
pub fn engine(data: &[u8]) {
    let mut b = Bytes(data, 0);
    let (m, h, w) = (b.size(3), b.size(9), b.size(9));
    // Channel counts stay small (arrays of them are allocated here); the
    // geometry's other numbers may be huge.
    let groups = 1 + b.byte() as usize % 4;
    let c = groups * (1 + b.byte() as usize % 3);
    let (kh, kw) = (b.size(5), b.size(5));
    let gc = if b.byte() % 8 == 0 {
        b.byte() as usize % 7
    } else {
        c / groups
    };
    let nc = groups * (1 + b.byte() as usize % 3);
    let padding = match b.byte() % 6 {
        0 => Padding::Valid,
        1 => Padding::Same,
        2 => Padding::SameLower,
        3 => Padding::SeedSame,
        4 => Padding::Symmetric(b.size(4), b.size(4)),
        _ => Padding::Explicit {
            top: b.size(4),
            bottom: b.size(4),
            left: b.size(4),
            right: b.size(4),
        },
    };
    let mode = PaddingMode::ALL[b.byte() as usize % 5];
    let activation = match b.byte() % 8 {
        0 => Some(Activation::Relu),
        1 => Some(Activation::LeakyRelu(b.byte() as f32 / 16.0 - 8.0)),
        2 => Some(Activation::Clip(b.byte() as f32 - 128.0, b.byte() as f32 - 128.0)),
        3 => Some(Activation::Sigmoid),
        4 => Some(Activation::Tanh),
        5 => Some(Activation::Relu6),
        _ => None,
    };
    let spec = Conv2dSpec::new(padding)
        .with_stride(b.size(4), b.size(4))
        .with_dilation(b.size(4), b.size(4))
        .with_padding_mode(mode)
        .with_groups(if b.byte() % 16 == 0 { b.size(5) } else { groups })
        .with_activation(activation);
    let limit_out = |shape: &[usize]| {
        shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d))
            .is_some_and(|n| n <= 1 << 20)
    };
    // Empty axes count as 1: ndarray refuses shapes whose non-empty axes
    // overflow, even with no element.
    let limit = |shape: &[usize]| {
        shape
            .iter()
            .try_fold(1usize, |a, &d| a.checked_mul(d.max(1)))
            .is_some_and(|n| n <= 4096)
    };
    let engine = Engine::cpu().with_verify(true);
    let fill = |v: u8| match v % 16 {
        0 => f32::NAN,
        1 => f32::INFINITY,
        2 => f32::NEG_INFINITY,
        _ => v as f32 / 32.0 - 4.0,
    };
    if limit(&[m, h, w, c]) && limit(&[kh, kw, gc, nc]) {
        let x = Array4::from_shape_fn((m, h, w, c), |_| fill(b.byte()));
        let k = Array4::from_shape_fn((kh, kw, gc, nc), |_| fill(b.byte()));
        // A wrong length now and then (at most 8: the harness must not ask for gigabytes).
        let bias = Array1::from_shape_fn(if b.byte() % 8 == 0 { b.byte() as usize % 9 } else { nc }, |_| {
            fill(b.byte())
        });
        let with_bias = b.byte() % 2 == 0;
        // A valid call with a huge result (mostly padding) is refused by
        // memory, not by convpool: it is resolved (and so checked) but not
        // run here.
        let big = |shape: Result<[usize; 4], convpool::Error>| shape.is_ok_and(|s| !limit_out(&s));
        if big(spec.resolve([m, h, w, c], [kh, kw, gc, nc]).map(|g| g.output_shape())) {
            return;
        }
        let result = if with_bias {
            engine.conv2d_bias(&x, &k, &bias, &spec)
        } else {
            engine.conv2d(&x, &k, &spec)
        };
        let finite = x
            .iter()
            .chain(&k)
            .chain(if with_bias { bias.as_slice().unwrap() } else { &[] })
            .all(|v| v.is_finite());
        match result {
            Ok(out) => {
                let g = spec
                    .resolve([m, h, w, c], [kh, kw, gc, nc])
                    .expect("a call that ran resolves");
                assert_eq!(out.shape(), g.output_shape());
            }
            // The fast path must agree with the reference on finite inputs
            // (with infinities, inf - inf in a different order is allowed
            // to differ).
            Err(e @ convpool::Error::VerifyMismatch { .. }) if finite => panic!("{e}"),
            Err(e) => one_line(&e),
        }
        let window = match b.byte() % 4 {
            0 => Window::Global,
            1 => Window::Adaptive(b.size(6), b.size(6)),
            _ => Window::Fixed(b.size(5), b.size(5)),
        };
        let mut pool = Pool2dSpec::new(
            if b.byte() % 2 == 0 {
                PoolMode::Max
            } else {
                PoolMode::Avg
            },
            1,
            1,
        )
        .with_padding(padding)
        .with_dilation(b.size(3), b.size(3))
        .with_ceil_mode(b.byte() % 2 == 0)
        .with_count_include_pad(b.byte() % 2 == 0);
        pool.window = window;
        if b.byte() % 2 == 0 {
            pool = pool.with_stride(b.size(4), b.size(4));
        }
        if big(pool.resolve([m, h, w, c]).map(|g| g.output_shape())) {
            return;
        }
        match engine.pool2d(&x, &pool) {
            Ok(out) => assert_eq!(out.shape(), pool.resolve([m, h, w, c]).unwrap().output_shape()),
            Err(e) => one_line(&e),
        }
        match engine.max_pool2d_with_indices(&x, &pool) {
            Ok((v, i)) => assert_eq!(v.shape(), i.shape()),
            Err(e) => one_line(&e),
        }
    }
}

/// The image decoding of `convpool filter` on arbitrary bytes (PNG, JPEG
/// or whatever the bytes look like).
pub fn image(data: &[u8]) {
    let path = scratch("img");
    std::fs::write(&path, data).expect("scratch file");
    match convpool::filter::load_image(&path) {
        Ok(img) => {
            let (h, w, c) = img.pixels.dim();
            assert!(h > 0 && w > 0 && (c == 1 || c == 3));
        }
        Err(e) => one_line(&e),
    }
}
