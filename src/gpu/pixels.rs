//! The element types a batch can be uploaded as: f32 as it is, and 8- and
//! 16-bit unsigned pixels (what PNG and most `.npy` images hold), which
//! cross to the device as their own bytes and are widened to f32 there.

use bytemuck::Pod;
use ndarray::{ArrayView4, CowArray, Ix4};

/// The element type of an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PixelKind {
    /// 32-bit float, uploaded as it is.
    F32,
    /// 8-bit unsigned, widened on the device.
    U8,
    /// 16-bit unsigned, widened on the device.
    U16,
}

impl PixelKind {
    /// Bytes per value.
    pub fn bytes(self) -> usize {
        match self {
            PixelKind::F32 => 4,
            PixelKind::U8 => 1,
            PixelKind::U16 => 2,
        }
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for u8 {}
    impl Sealed for u16 {}
}

/// An element type [`crate::Engine::upload_pixels`] takes: `f32`, `u8` or
/// `u16`. Every `u8` and `u16` value is an `f32` exactly, so a widened
/// upload holds what `mapv(f32::from)` on the host would give.
pub trait Pixel: Pod + sealed::Sealed {
    /// The element type.
    const KIND: PixelKind;
    /// The value as f32 (exact for every type here).
    fn to_f32(self) -> f32;
    /// The view itself where the type is f32 (no copy), else `None`.
    fn as_f32(view: ArrayView4<'_, Self>) -> Option<ArrayView4<'_, f32>>;
}

impl Pixel for f32 {
    const KIND: PixelKind = PixelKind::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn as_f32(view: ArrayView4<'_, f32>) -> Option<ArrayView4<'_, f32>> {
        Some(view)
    }
}

impl Pixel for u8 {
    const KIND: PixelKind = PixelKind::U8;
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
    fn as_f32(_: ArrayView4<'_, Self>) -> Option<ArrayView4<'_, f32>> {
        None
    }
}

impl Pixel for u16 {
    const KIND: PixelKind = PixelKind::U16;
    fn to_f32(self) -> f32 {
        f32::from(self)
    }
    fn as_f32(_: ArrayView4<'_, Self>) -> Option<ArrayView4<'_, f32>> {
        None
    }
}

/// Host input of a call: its values as bytes, and their type.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HostData<'a> {
    /// The element type.
    pub kind: PixelKind,
    /// The values, native byte order.
    pub bytes: &'a [u8],
}

impl<'a> HostData<'a> {
    /// Values of type `T`.
    pub fn of<T: Pixel>(values: &'a [T]) -> Self {
        HostData {
            kind: T::KIND,
            bytes: bytemuck::cast_slice(values),
        }
    }

    /// The bytes of values `[start, start + len)`.
    pub fn values(&self, start: usize, len: usize) -> &'a [u8] {
        let b = self.kind.bytes();
        &self.bytes[start * b..(start + len) * b]
    }
}

/// `images` as f32: the view itself for f32, else widened on the host
/// (exact: every u8 and u16 value is an f32).
pub(crate) fn widened<T: Pixel>(images: ArrayView4<'_, T>) -> CowArray<'_, f32, Ix4> {
    match T::as_f32(images) {
        Some(f) => f.into(),
        None => images.mapv(T::to_f32).into(),
    }
}
