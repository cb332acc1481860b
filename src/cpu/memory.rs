//! Output memory of the fast CPU path: uninitialised results placed away
//! from their input's 4K alias, with huge pages, and the views that let
//! kernels write them.

use std::mem::MaybeUninit;

use ndarray::{Array1, Array4};

/// An uninitialised array for a result of the fast path. Its kernels store
/// every element (the GEMMs write without reading, the planar and NHWC kernels store
/// whole blocks) or zero each piece (see [`zero_fill`]) right before
/// computing it, in parallel and while the piece is in cache: a zeroed
/// allocation is cleared by the calling thread alone, in a pass over memory
/// of its own, whenever the allocator reuses memory (fresh pages come zeroed
/// anyway).
///
/// Large results come from fresh pages, and on Linux faulting them in 4 KiB
/// at a time costs more than the computation of a memory-bound
/// convolution; asking for transparent huge pages before the first touch
/// makes that 512 times fewer faults.
///
/// The result starts on a cache line, so a vector store of a row whose
/// channels are a multiple of a vector never straddles two lines. It also
/// starts (within that line) half a page away from `input` modulo 4 KiB:
/// where the two lay the same distance into their pages (the allocator
/// often hands out such pairs), every store of an output row looks, by its
/// low 12 address bits, like the loads of the input rows the kernel is
/// reading, and the processor makes those loads wait for the stores (4K
/// aliasing; see benches/RESULTS.md, "Design notes"). Up to a page of
/// floats is allocated ahead of the result for this; they are zeroed and
/// never read.
pub(crate) fn output_uninit(shape: [usize; 4], input: *const f32) -> Array4<MaybeUninit<f32>> {
    const PAGE: usize = 4096;
    const LINE: usize = 64;
    let elems: usize = shape.iter().product();
    let lead = PAGE / std::mem::size_of::<f32>();
    let mut flat = Array1::<f32>::uninit(elems + lead);
    let base = flat.as_ptr() as usize;
    let want = (input as usize + PAGE / 2) % PAGE / LINE * LINE;
    let skip = (want + PAGE - base % PAGE) % PAGE / std::mem::size_of::<f32>();
    if let Some(s) = flat.as_slice_mut() {
        s[..skip].fill(MaybeUninit::new(0.0));
        s[skip + elems..].fill(MaybeUninit::new(0.0));
    }
    flat.slice_collapse(ndarray::s![skip..skip + elems]);
    let mut a = flat
        .into_shape_with_order(shape)
        .expect("a contiguous array of the output's size");
    #[cfg(target_os = "linux")]
    if let Some(s) = a.as_slice_mut() {
        advise_huge_pages(s.as_mut_ptr() as usize, std::mem::size_of_val(s));
    }
    a
}

/// Zero-fills `s` and returns it as initialised floats.
pub(crate) fn zero_fill(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    s.fill(MaybeUninit::new(0.0));
    // SAFETY: every element was just written.
    unsafe { assume_written(s) }
}

/// `s`, every element of which has been written, as floats.
///
/// # Safety
/// Every element of `s` must have been written.
pub(crate) unsafe fn assume_written(s: &mut [MaybeUninit<f32>]) -> &mut [f32] {
    // SAFETY: initialised by the caller's contract; MaybeUninit<f32> has the
    // layout of f32.
    unsafe { &mut *(s as *mut [MaybeUninit<f32>] as *mut [f32]) }
}

/// `s` as a destination for the kernels that write `MaybeUninit` outputs.
///
/// # Safety
/// Only initialised floats may be written through the result: `s` is read
/// as floats afterwards.
pub(crate) unsafe fn as_uninit(s: &mut [f32]) -> &mut [MaybeUninit<f32>] {
    // SAFETY: MaybeUninit<f32> has the layout of f32; the caller writes only
    // initialised floats.
    unsafe { &mut *(s as *mut [f32] as *mut [MaybeUninit<f32>]) }
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(start: usize, len: usize) {
    const HUGE: usize = 2 << 20;
    let end = start + len;
    let first = start.next_multiple_of(HUGE);
    let last = end / HUGE * HUGE;
    if last > first + HUGE {
        // SAFETY: [first, last) lies inside an allocation the caller owns;
        // MADV_HUGEPAGE is a hint that never changes the contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A result starts on a cache line, within a line of half a page from
    /// its input modulo 4 KiB, whatever the allocator hands out, and is an
    /// ordinary contiguous array of the asked shape (the floats allocated
    /// ahead of it stay out of view).
    #[test]
    fn outputs_start_half_a_page_from_the_input() {
        for skew in 0..16 {
            let input = vec![1f32; 64 + skew];
            let x = input[skew..].as_ptr();
            for shape in [[1, 1, 1, 1], [2, 3, 4, 5], [1, 64, 64, 1], [3, 1, 1, 1000]] {
                let out = output_uninit(shape, x);
                assert_eq!(out.shape(), &shape[..]);
                assert_eq!(out.as_slice().map(<[_]>::len), Some(shape.iter().product()));
                assert_eq!(out.as_ptr() as usize % 64, 0, "{shape:?}, input skewed by {skew}");
                let apart = (out.as_ptr() as usize).wrapping_sub(x as usize) % 4096;
                assert!(
                    (2048 - 63..=2048).contains(&apart),
                    "{shape:?}, input skewed by {skew}: {apart}"
                );
            }
        }
    }
}
