//! The `#[repr(C)]` params structs must match the WGSL structs field for
//! field: same names in the same order, same offsets, same size. The
//! structs live in `shaders/common.wgsl`, which every shader is compiled
//! after; each shader is parsed that way here too.

use std::mem::{offset_of, size_of};

use super::kernels::conv_tiled::ConvTiling;
use super::params::{ConvParams, PoolParams, WidenParams};
use crate::Conv2dSpec;

/// A shader as the device gets it: common.wgsl, then the file.
fn parse(file: &str) -> naga::Module {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    let common = std::fs::read_to_string(dir.join("common.wgsl")).unwrap();
    let source = std::fs::read_to_string(dir.join(file)).unwrap();
    naga::front::wgsl::parse_str(&format!("{common}{source}")).unwrap()
}

/// (name, offset, size) of each member of a WGSL struct, and its span.
fn wgsl_layout(file: &str, name: &str) -> (Vec<(String, u32)>, u32) {
    let module = parse(file);
    let ty = module
        .types
        .iter()
        .find(|(_, t)| t.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {file}"))
        .1;
    let naga::TypeInner::Struct { members, span } = &ty.inner else {
        panic!("{name} is not a struct")
    };
    let fields = members.iter().map(|m| (m.name.clone().unwrap(), m.offset)).collect();
    (fields, *span)
}

/// Rust fields as (name, offset); padding arrays expand to one entry per word.
macro_rules! rust_layout {
    ($t:ty, [$($f:ident),*], $pad:ident, $pad_words:expr, $first_pad:expr) => {{
        let mut v = vec![$((stringify!($f).to_string(), offset_of!($t, $f) as u32)),*];
        for i in 0..$pad_words {
            v.push((format!("_pad{}", i + $first_pad), (offset_of!($t, $pad) + 4 * i) as u32));
        }
        v
    }};
}

#[test]
fn conv_params_match_the_shader() {
    let (wgsl, span) = wgsl_layout("conv2d.wgsl", "ConvParams");
    let rust = rust_layout!(
        ConvParams,
        [
            batch, h, w, c, band_h, in_row0, out_row0, oh_chunk, ow, nc, kh, kw, sh, sw, dh, dw, pad_top, pad_left,
            m_total, k_total, tiles_m, row_pitch, gc, gnc, tiles_n, act_a, act_b
        ],
        _pad,
        1,
        1
    );
    assert_eq!(rust, wgsl);
    assert_eq!(size_of::<ConvParams>() as u32, span);
    assert_eq!(span % 16, 0, "uniform structs are used in 16-byte units");
}

/// The struct is written once: no shader declares its own.
#[test]
fn params_structs_are_written_once() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("shaders");
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap() == "common.wgsl" || path.extension().is_none_or(|e| e != "wgsl") {
            continue;
        }
        let source = std::fs::read_to_string(&path).unwrap();
        for name in ["struct ConvParams", "struct PoolParams", "struct WidenParams"] {
            assert!(!source.contains(name), "{} declares {name}", path.display());
        }
        parse(path.file_name().unwrap().to_str().unwrap());
    }
}

#[test]
fn pool_params_match_the_shader() {
    let (wgsl, span) = wgsl_layout("pool2d.wgsl", "PoolParams");
    let rust = rust_layout!(
        PoolParams,
        [
            batch,
            h,
            w,
            c,
            band_h,
            in_row0,
            out_row0,
            oh_chunk,
            ow,
            kh,
            kw,
            sh,
            sw,
            dh,
            dw,
            pad_top,
            pad_bottom,
            pad_left,
            pad_right,
            mode,
            count_include_pad,
            total,
            row_pitch,
            oh,
            adaptive
        ],
        _pad,
        3,
        0
    );
    assert_eq!(rust, wgsl);
    assert_eq!(size_of::<PoolParams>() as u32, span);
}

#[test]
fn widen_params_match_the_shader() {
    let (wgsl, span) = wgsl_layout("widen.wgsl", "WidenParams");
    let rust = rust_layout!(WidenParams, [count, row_pitch], _pad, 2, 0);
    assert_eq!(rust, wgsl);
    assert_eq!(size_of::<WidenParams>() as u32, span);
}

/// The value of a `const NAME: u32` of a shader.
fn wgsl_const(file: &str, name: &str) -> u32 {
    let module = parse(file);
    let (_, c) = module
        .constants
        .iter()
        .find(|(_, c)| c.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in {file}"));
    match module.global_expressions[c.init] {
        naga::Expression::Literal(naga::Literal::U32(v)) => v,
        ref e => panic!("{name} is {e:?}, not a u32 literal"),
    }
}

/// Every tile the host picks fits the shader's workgroup arrays, whose
/// sizes are constants there: a bigger tile would index past them.
#[test]
fn conv_tiles_fit_the_shader() {
    let max = (
        wgsl_const("conv2d.wgsl", "MAX_TILE_M"),
        wgsl_const("conv2d.wgsl", "MAX_TILE_N"),
    );
    assert_eq!(ConvTiling::MAX_TILE, max);
    let acc_quads = wgsl_const("conv2d.wgsl", "ACC_QUADS");
    let max_rows = wgsl_const("conv2d.wgsl", "MAX_ROWS");
    let kt = wgsl_const("conv2d.wgsl", "KT");
    let mut blocks = std::collections::BTreeSet::new();
    for nc in 1..=300 {
        // Large enough for 8x8 blocks from 64 channels.
        let g = Conv2dSpec::default().resolve([8, 64, 64, 4], [1, 1, 4, nc]).unwrap();
        for forced in [None, Some(4), Some(8)] {
            let t = ConvTiling::for_conv(&g, forced, false);
            assert!(t.tile_m() <= max.0 && t.tile_n() <= max.1, "nc {nc}: {t:?}");
            assert_eq!(t.tile_m() % 4, 0, "{t:?}");
            assert!(t.block * t.block / 4 <= acc_quads, "{t:?}");
            // The images' vec4 loads need a multiple of KT / 4 invocations.
            assert_eq!(t.wg_m * t.wg_n % 2, 0, "{t:?}");
            assert!(t.wg_m * t.wg_n <= 256, "{t:?}");
            // The cell indices an invocation keeps per slice (vec4 loads:
            // KT / 4 invocations share a row) fit the shader's registers.
            let row_step = t.wg_m * t.wg_n / (kt / 4);
            assert!(t.tile_m().div_ceil(row_step) <= max_rows, "{t:?}");
            blocks.insert((t.block, nc >= 64));
        }
    }
    // Wide layers get 8x8 blocks and narrow ones 4x4 unless forced.
    assert_eq!(blocks.len(), 4);
    let block = |x: [usize; 4], nc: usize| {
        let g = Conv2dSpec::default().resolve(x, [1, 1, x[3], nc]).unwrap();
        ConvTiling::for_conv(&g, None, false).block
    };
    assert_eq!(block([8, 64, 64, 4], 63), 4);
    // A software adapter takes 8x8 blocks on every layer.
    let narrow = Conv2dSpec::default().resolve([1, 5, 5, 4], [1, 1, 4, 8]).unwrap();
    assert_eq!(ConvTiling::for_conv(&narrow, None, true).block, 8);
    assert_eq!(ConvTiling::for_conv(&narrow, Some(4), true).block, 4);
    assert_eq!(block([8, 64, 64, 4], 64), 8);
    // 128 x 64 tiles: 256 workgroups from 32768 pixels, not below.
    let groups = ConvTiling::MIN_WIDE_GROUPS;
    assert_eq!(block([1, 128, groups, 4], 64), 8);
    assert_eq!(block([1, 128, groups - 1, 4], 64), 4);
    // 128 x 128 tiles past 64 channels: half as many pixels with 256.
    assert_eq!(block([1, 128, groups / 2, 4], 256), 8);
    assert_eq!(block([1, 127, groups / 2, 4], 256), 4);
}
