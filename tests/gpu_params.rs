//! The `#[repr(C)]` params structs must match the WGSL structs field for
//! field: same names in the same order, same offsets, same size.

use std::mem::{offset_of, size_of};

use convpool::gpu::params::{ConvParams, PoolParams};

/// (name, offset, size) of each member of a WGSL struct, and its span.
fn wgsl_layout(file: &str, name: &str) -> (Vec<(String, u32)>, u32) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("shaders")
        .join(file);
    let source = std::fs::read_to_string(path).unwrap();
    let module = naga::front::wgsl::parse_str(&source).unwrap();
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
            m_total, k_total, tiles_m, row_pitch
        ],
        _pad,
        2,
        1
    );
    assert_eq!(rust, wgsl);
    assert_eq!(size_of::<ConvParams>() as u32, span);
    assert_eq!(span % 16, 0, "uniform structs are used in 16-byte units");
}

#[test]
fn direct_conv_params_match_the_shader() {
    let (tiled, span) = wgsl_layout("conv2d.wgsl", "ConvParams");
    let (direct, direct_span) = wgsl_layout("conv2d_direct.wgsl", "ConvParams");
    assert_eq!(tiled, direct);
    assert_eq!(span, direct_span);
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
            row_pitch
        ],
        _pad,
        1,
        0
    );
    assert_eq!(rust, wgsl);
    assert_eq!(size_of::<PoolParams>() as u32, span);
}
