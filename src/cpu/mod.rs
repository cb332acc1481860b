//! CPU paths. `reference` is the yardstick of SPEC.md; faster paths are
//! checked against it.

pub mod fast;
#[cfg(target_arch = "x86_64")]
mod nhwc;
#[cfg(target_arch = "x86_64")]
mod pool_nhwc;
pub mod reference;

use ndarray::Array4;

use crate::error::{Error, Result};

/// Refuses a result the machine cannot hold, before anything is computed:
/// an impossible allocation would otherwise abort the process.
pub(crate) fn check_output_fits(shape: [usize; 4]) -> Result<()> {
    let elems = crate::shape::checked_elems("output", &shape)?;
    let mut probe: Vec<f32> = Vec::new();
    probe.try_reserve_exact(elems).map_err(|_| Error::Overflow {
        what: "output",
        detail: format!(
            "a result of shape {} ({} bytes) cannot be allocated",
            crate::error::Shape::from(shape),
            elems as u128 * 4
        ),
    })
}

/// A zeroed array for a result. Large results come from fresh pages, and
/// on Linux faulting them in 4 KiB at a time costs more than the
/// computation of a memory-bound convolution; asking for transparent huge
/// pages before the first touch makes that 512 times fewer faults.
pub(crate) fn output_array(shape: [usize; 4]) -> Array4<f32> {
    let mut a = Array4::<f32>::zeros(shape);
    #[cfg(target_os = "linux")]
    if let Some(s) = a.as_slice_mut() {
        advise_huge_pages(s);
    }
    a
}

#[cfg(target_os = "linux")]
fn advise_huge_pages(s: &mut [f32]) {
    const HUGE: usize = 2 << 20;
    let start = s.as_mut_ptr() as usize;
    let end = start + std::mem::size_of_val(s);
    let first = start.next_multiple_of(HUGE);
    let last = end / HUGE * HUGE;
    if last > first + HUGE {
        // SAFETY: [first, last) lies inside `s`, which this function borrows
        // mutably; MADV_HUGEPAGE is a hint that never changes the contents.
        unsafe {
            libc::madvise(first as *mut libc::c_void, last - first, libc::MADV_HUGEPAGE);
        }
    }
}
