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
    ($t:ty, [$($f:ident),*]) => {
        vec![$((stringify!($f).to_string(), offset_of!($t, $f) as u32)),*]
    };
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
            m_total, k_total, tiles_m, row_pitch, gc, gnc, tiles_n, act_a, act_b, limit
        ]
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

/// Bytes of the workgroup variables of conv2d.wgsl with `constants`, as
/// naga sizes them once the pipeline constants are applied.
fn conv_workgroup_bytes(constants: &super::kernels::Constants) -> u64 {
    workgroup_bytes("conv2d.wgsl", constants)
}

/// Bytes of the workgroup variables of `file` with `constants`.
fn workgroup_bytes(file: &str, constants: &super::kernels::Constants) -> u64 {
    let module = parse(file);
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::default(),
    )
    .validate(&module)
    .unwrap();
    let constants = constants.iter().map(|&(k, v)| (k.to_string(), v as f64)).collect();
    let (module, _) = naga::back::pipeline_constants::process_overrides(
        &module,
        &info,
        Some((naga::ShaderStage::Compute, "main")),
        &constants,
    )
    .unwrap();
    let layouter = {
        let mut l = naga::proc::Layouter::default();
        l.update(module.to_ctx()).unwrap();
        l
    };
    module
        .global_variables
        .iter()
        .filter(|(_, v)| v.space == naga::AddressSpace::WorkGroup)
        .map(|(_, v)| layouter[v.ty].size as u64)
        .sum()
}

/// Every tiling the host picks fits the shader: its workgroup arrays
/// (sized by the pipeline constants: the host's count of their bytes is
/// naga's, and within the device's limit), its staging registers and its
/// accumulators; a bigger tiling would index past them.
#[test]
fn conv_tiles_fit_the_shader() {
    use super::kernels::conv_tiled::{ConvDevice, Staging, MAX_BQ, MAX_ROWS};
    let acc_quads = wgsl_const("conv2d.wgsl", "ACC_QUADS");
    assert_eq!(wgsl_const("conv2d.wgsl", "MAX_ROWS"), MAX_ROWS);
    assert_eq!(wgsl_const("conv2d.wgsl", "MAX_BQ"), MAX_BQ);
    let rules = super::kernels::ConvRules {
        mode: crate::shape::PaddingMode::Zeros,
        act: 0,
        has_bias: false,
    };
    let mut blocks = std::collections::BTreeSet::new();
    let mut stagings = std::collections::BTreeSet::new();
    let mut checked = std::collections::HashSet::new();
    for (c, nc) in (1..=300)
        .map(|nc| (4, nc))
        .chain([(3, 64), (3, 128), (5, 7), (6, 200), (1, 16)])
    {
        // Large enough for 8x8 blocks from 64 channels.
        let g = Conv2dSpec::default().resolve([8, 64, 64, c], [1, 1, c, nc]).unwrap();
        for block in [None, Some(4), Some(8)] {
            for staging in [
                None,
                Some(Staging::SINGLE),
                Some(Staging { stages: 2, kt: 8 }),
                Some(Staging { stages: 1, kt: 16 }),
                Some(Staging::PREFERRED[0]),
                Some(Staging { stages: 1, kt: 32 }),
                Some(Staging { stages: 2, kt: 32 }),
            ] {
                for (software, workgroup_bytes) in [
                    (false, 16 << 10),
                    (false, 32 << 10),
                    (false, 48 << 10),
                    (true, 32 << 10),
                ] {
                    let dev = ConvDevice {
                        software,
                        block,
                        staging,
                        workgroup_bytes,
                        pad_rgb: None,
                        winograd: false,
                    };
                    let t = ConvTiling::for_conv(&g, &dev);
                    assert!(t.fits(workgroup_bytes), "nc {nc}: {t:?}");
                    assert_eq!(t.tile_m() % 4, 0, "{t:?}");
                    assert_eq!(t.tile_n() % 4, 0, "{t:?}");
                    assert!(t.block * t.block / 4 <= acc_quads, "{t:?}");
                    assert!(t.wg_m * t.wg_n <= 256, "{t:?}");
                    if software && staging.is_none() {
                        assert_eq!(t.staging, Staging::SINGLE);
                    }
                    if let Some(s) = staging {
                        assert!(t.staging.stages <= s.stages && t.staging.kt <= s.kt, "{t:?}");
                    }
                    blocks.insert((t.block, nc >= 64));
                    stagings.insert((t.staging.stages, t.staging.kt));
                    if checked.insert(t) {
                        assert_eq!(conv_workgroup_bytes(&t.constants(rules)), t.workgroup_bytes(), "{t:?}");
                    }
                }
            }
        }
    }
    // Every staging is taken somewhere.
    assert_eq!(stagings.len(), 6, "{stagings:?}");
    // With 48 KiB, the wide tiles are double-buffered 16-step slices; with
    // WebGPU's 16 KiB, the 128 x 128 tile stays single (18 KiB doubled).
    let wide = Conv2dSpec::default().resolve([8, 66, 66, 64], [3, 3, 64, 128]).unwrap();
    let on = |workgroup_bytes| {
        ConvTiling::for_conv(
            &wide,
            &ConvDevice {
                workgroup_bytes,
                ..ConvDevice::DEFAULT
            },
        )
    };
    assert_eq!(
        (on(48 << 10).staging, on(48 << 10).tile_n()),
        (Staging::PREFERRED[0], 128)
    );
    assert_eq!(on(16 << 10).staging, Staging::SINGLE);
    assert_eq!(on(16 << 10).workgroup_bytes(), 10 << 10);
    assert_eq!(on(48 << 10).workgroup_bytes(), 34 << 10);
    assert_eq!(Staging::parse("2x16"), Some(Staging::PREFERRED[0]));
    assert_eq!(Staging::parse(" 1X8 "), Some(Staging::SINGLE));
    assert_eq!(Staging::parse("2x32"), Some(Staging { stages: 2, kt: 32 }));
    for bad in ["", "2", "3x8", "2x4", "2x64", "1x24", "x", "2x16x1"] {
        assert_eq!(Staging::parse(bad), None, "{bad}");
    }
    // Wide layers get 8x8 blocks and narrow ones 4x4 unless forced.
    assert_eq!(blocks.len(), 4);
    let block = |x: [usize; 4], nc: usize| {
        let g = Conv2dSpec::default().resolve(x, [1, 1, x[3], nc]).unwrap();
        ConvTiling::for_conv(&g, &ConvDevice::DEFAULT).block
    };
    assert_eq!(block([8, 64, 64, 4], 63), 4);
    // A software adapter takes 8x8 blocks on every layer.
    let narrow = Conv2dSpec::default().resolve([1, 5, 5, 4], [1, 1, 4, 8]).unwrap();
    let soft = |block| ConvDevice {
        software: true,
        block,
        ..ConvDevice::DEFAULT
    };
    assert_eq!(ConvTiling::for_conv(&narrow, &soft(None)).block, 8);
    assert_eq!(ConvTiling::for_conv(&narrow, &soft(Some(4))).block, 4);
    assert_eq!(block([8, 64, 64, 4], 64), 8);
    // 128 x 64 tiles: 256 workgroups from 32768 pixels, not below.
    let groups = ConvTiling::MIN_WIDE_GROUPS;
    assert_eq!(block([1, 128, groups, 4], 64), 8);
    assert_eq!(block([1, 128, groups - 1, 4], 64), 4);
    // 128 x 128 tiles past 64 channels: half as many pixels with 256.
    assert_eq!(block([1, 128, groups / 2, 4], 256), 8);
    assert_eq!(block([1, 127, groups / 2, 4], 256), 4);
}

/// The Winograd kernel's workgroup memory is what the host counts, and its
/// tile constants are the host's.
#[test]
fn winograd_fits_the_shader() {
    use super::kernels::conv_winograd::{ConvWinograd, CHANNELS, TILES, WORKGROUP_BYTES};
    use super::kernels::ConvRules;
    let g = Conv2dSpec::default().resolve([1, 8, 8, 8], [3, 3, 8, 8]).unwrap();
    let rules = ConvRules::of(&g, true);
    assert_eq!(
        workgroup_bytes("conv2d_winograd.wgsl", &ConvWinograd.constants(rules)),
        WORKGROUP_BYTES
    );
    assert_eq!(wgsl_const("conv2d_winograd.wgsl", "TT"), TILES);
    assert_eq!(wgsl_const("conv2d_winograd.wgsl", "TN"), CHANNELS);
    assert!(ConvWinograd::fits(&g, 32 << 10));
    assert!(!ConvWinograd::fits(&g, 16 << 10), "declares just over 16 KiB");
    for (x, k, spec) in [
        ([1, 8, 8, 6], [3, 3, 6, 8], Conv2dSpec::default()),
        ([1, 8, 8, 8], [3, 3, 8, 6], Conv2dSpec::default()),
        ([1, 8, 8, 8], [3, 3, 8, 4], Conv2dSpec::default()),
        ([1, 8, 8, 8], [1, 1, 8, 8], Conv2dSpec::default()),
        ([1, 8, 8, 8], [3, 3, 8, 8], Conv2dSpec::default().with_stride(2, 2)),
        (
            [1, 8, 8, 8],
            [3, 3, 8, 8],
            Conv2dSpec {
                dilation: (2, 2),
                ..Default::default()
            },
        ),
        (
            [1, 8, 8, 8],
            [3, 3, 4, 8],
            Conv2dSpec {
                groups: 2,
                ..Default::default()
            },
        ),
    ] {
        let g = spec.resolve(x, k).unwrap();
        assert!(!ConvWinograd::fits(&g, 48 << 10), "{x:?} {k:?}");
    }
}
