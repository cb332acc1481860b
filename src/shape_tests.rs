//! Unit tests of `shape.rs`: pads, output sizes and errors by hand.

use super::*;

#[test]
fn padding_parses_every_mode() {
    assert_eq!("valid".parse::<Padding>().unwrap(), Padding::Valid);
    assert_eq!("SAME".parse::<Padding>().unwrap(), Padding::Same);
    assert_eq!("same_lower".parse::<Padding>().unwrap(), Padding::SameLower);
    assert_eq!("seed-same".parse::<Padding>().unwrap(), Padding::SeedSame);
    assert_eq!("1,2".parse::<Padding>().unwrap(), Padding::Symmetric(1, 2));
    assert_eq!(
        "0, 1,2,3".parse::<Padding>().unwrap(),
        Padding::Explicit {
            top: 0,
            bottom: 1,
            left: 2,
            right: 3
        }
    );
    for bad in [
        "",
        "nan",
        "1.5,1",
        "-1,2",
        "1,2,3",
        "inf,0",
        "bogus",
        "99999999999999999999999,1",
    ] {
        let err = bad.parse::<Padding>().unwrap_err();
        assert!(matches!(err, Error::InvalidPadding { .. }), "{bad}: {err}");
        assert!(err.to_string().contains("padding"), "{err}");
    }
}

#[test]
fn same_and_seed_same_pads_by_hand() {
    // h = 8, k = 3, s = 1: same pads 1/1, seed_same pads 2/2 (output h + 2).
    let g = Conv2dSpec::new(Padding::Same)
        .resolve([1, 8, 8, 1], [3, 3, 1, 1])
        .unwrap();
    assert_eq!((g.pads.tblr(), g.oh), ([1, 1, 1, 1], 8));
    let g = Conv2dSpec::new(Padding::SeedSame)
        .resolve([1, 8, 8, 1], [3, 3, 1, 1])
        .unwrap();
    assert_eq!((g.pads.tblr(), g.oh), ([2, 2, 2, 2], 10));
    // Even kernel: same puts the extra row at the end, same_lower at the start.
    let g = Conv2dSpec::new(Padding::Same)
        .resolve([1, 9, 6, 1], [4, 4, 1, 1])
        .unwrap();
    assert_eq!(g.pads.tblr(), [1, 2, 1, 2]);
    let g = Conv2dSpec::new(Padding::SameLower)
        .resolve([1, 9, 6, 1], [4, 4, 1, 1])
        .unwrap();
    assert_eq!(g.pads.tblr(), [2, 1, 2, 1]);
    // total clamped at 0: 1x1 kernel, stride 3, h = 6.
    let g = Conv2dSpec::new(Padding::Same)
        .with_stride(3, 3)
        .resolve([1, 6, 9, 3], [1, 1, 3, 2])
        .unwrap();
    assert_eq!((g.pads.tblr(), g.oh, g.ow), ([0, 0, 0, 0], 2, 3));
}

#[test]
fn errors_name_arguments() {
    let spec = Conv2dSpec::default();
    let e = spec.resolve([1, 4, 4, 3], [3, 3, 2, 1]).unwrap_err();
    assert!(e.to_string().contains("channel mismatch"), "{e}");
    let e = spec.resolve([1, 2, 2, 1], [3, 3, 1, 1]).unwrap_err();
    assert!(matches!(e, Error::KernelTooLarge { .. }), "{e}");
    let e = spec.with_stride(0, 1).resolve([1, 4, 4, 1], [3, 3, 1, 1]).unwrap_err();
    assert!(e.to_string().starts_with("stride"), "{e}");
    let e = spec
        .with_dilation(usize::MAX, 1)
        .resolve([1, 4, 4, 1], [3, 3, 1, 1])
        .unwrap_err();
    assert!(matches!(e, Error::Overflow { .. }), "{e}");
    let e = images_nhwc(&[2, 3]).unwrap_err();
    assert!(e.to_string().contains("images"), "{e}");
    let e = checked_elems("images", &[usize::MAX, 2]).unwrap_err();
    assert!(matches!(e, Error::Overflow { .. }));
}

#[test]
fn pooling_ceil_mode_drops_window_in_end_padding() {
    let spec = Pool2dSpec::new(PoolMode::Max, 2, 2)
        .with_padding(Padding::Symmetric(1, 1))
        .with_ceil_mode(true);
    let g = spec.resolve([1, 5, 5, 1]).unwrap();
    assert_eq!((g.oh, g.ow), (3, 3));
    let g = Pool2dSpec::new(PoolMode::Max, 2, 2)
        .with_ceil_mode(true)
        .resolve([1, 7, 9, 2])
        .unwrap();
    assert_eq!((g.oh, g.ow), (4, 5));
    let e = Pool2dSpec::new(PoolMode::Max, 2, 2)
        .with_padding(Padding::Symmetric(2, 0))
        .resolve([1, 7, 9, 2])
        .unwrap_err();
    assert!(matches!(e, Error::PoolPaddingTooLarge { .. }), "{e}");
}

#[test]
fn divisor_counts_real_or_padded_cells() {
    let g = Pool2dSpec::new(PoolMode::Avg, 3, 3)
        .with_stride(2, 2)
        .with_padding(Padding::Symmetric(1, 1))
        .with_ceil_mode(true)
        .with_count_include_pad(true)
        .resolve([1, 6, 8, 1])
        .unwrap();
    assert_eq!((g.oh, g.ow), (4, 5));
    // Last row of windows starts at padded row 6 = image row 5: rows 5, 6
    // (pad) count, row 7 lies past the end padding.
    assert_eq!(g.divisor(3, 0), 2.0 * 3.0);
    let g = Pool2dGeometry {
        count_include_pad: false,
        ..g
    };
    assert_eq!(g.divisor(0, 0), 4.0);
}

/// Tap ranges are found arithmetically and agree with visiting every tap;
/// a window larger than the padded input keeps only the taps within it
/// (found by the `engine` fuzz target: a 2^31-row window took seconds).
#[test]
fn window_taps_without_visiting_every_tap() {
    for (k, d, len, pad, s) in [(3, 1, 5, 1, 1), (4, 2, 7, 3, 2), (5, 3, 4, 6, 1), (2, 1, 1, 1, 3)] {
        for o in 0..6 {
            let got = super::tap_range((o * s) as i128 - pad as i128, k, d, 0, len as i128);
            let want: Vec<usize> = (0..k)
                .filter(|&i| (o * s + i * d).checked_sub(pad).is_some_and(|y| y < len))
                .collect();
            assert_eq!(got.1 - got.0, want.len(), "k {k} d {d} len {len} pad {pad} o {o}");
            if let Some(&first) = want.first() {
                assert_eq!(got.0, first);
            }
        }
    }
    let spec = Pool2dSpec::new(PoolMode::Max, 1 << 31, 1)
        .with_ceil_mode(true)
        .with_dilation(1, 2);
    let g = spec.resolve([1, 3, 1, 2]).unwrap();
    assert_eq!(
        (g.oh(), g.kh(), g.window_rows(0).collect::<Vec<_>>()),
        (1, 3, vec![0, 1, 2])
    );
}

/// The widest adaptive window is found in closed form and equals visiting
/// every output (found by the `engine` fuzz target: an empty batch pooled to
/// 2^31 rows took seconds to resolve).
#[test]
fn adaptive_widest_window_in_closed_form() {
    for len in 1..40 {
        for out in 1..50 {
            let want = (0..out)
                .map(|i| adaptive_window(i, len, out))
                .map(|(a, b)| b - a)
                .max()
                .unwrap();
            let g = Pool2dSpec::adaptive(PoolMode::Avg, out, 1)
                .resolve([1, len, 1, 1])
                .unwrap();
            assert_eq!(g.kh(), want, "len {len} out {out}");
        }
    }
    let g = Pool2dSpec::adaptive(PoolMode::Max, 1 << 31, 1 << 31)
        .resolve([0, 5, 7, 1])
        .unwrap();
    assert_eq!((g.oh(), g.kh(), g.kw()), (1 << 31, 2, 2));
}

/// An empty batch whose other axes multiply past isize::MAX is refused as
/// an overflow (ndarray cannot make that array, empty or not), not handed
/// to the paths (found by the `engine` fuzz target: a panic in ndarray).
#[test]
fn empty_batch_of_huge_outputs_is_an_overflow() {
    let spec = Conv2dSpec::new(Padding::Explicit {
        top: 1 << 62,
        bottom: 1 << 62,
        left: 0,
        right: 0,
    });
    let e = spec.resolve([0, 3, 4, 2], [3, 3, 2, 12]).unwrap_err();
    assert!(matches!(e, Error::Overflow { .. }), "{e}");
    let e = crate::Engine::cpu()
        .conv2d(
            &ndarray::Array4::<f32>::zeros((0, 3, 4, 2)),
            &ndarray::Array4::<f32>::zeros((3, 3, 2, 12)),
            &spec,
        )
        .unwrap_err();
    assert!(matches!(e, Error::Overflow { .. }), "{e}");
    assert_eq!(checked_elems("x", &[0, 5, 7]).unwrap(), 0);
}
