//! Buffers reused across calls: each grows (to a power of two, within the
//! binding limit) when a call needs more and is kept for the next call,
//! unless it is so large that keeping it would hold a large share of the
//! device's memory after the call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// Largest buffer kept for the next call; larger ones are dropped when the
/// call ends.
pub const KEEP_BYTES: u64 = 256 << 20;

/// One reusable buffer.
#[derive(Default)]
pub struct Slot {
    buffer: Option<wgpu::Buffer>,
}

impl Slot {
    /// A buffer of at least `bytes`, created or grown as needed. Sizes are
    /// multiples of 16 (and `cap` must be one): a shader that binds the
    /// buffer as an array of vec4 would otherwise not see its last floats.
    pub fn ensure(
        &mut self,
        device: &wgpu::Device,
        bytes: u64,
        cap: u64,
        usage: wgpu::BufferUsages,
        label: &'static str,
    ) -> &wgpu::Buffer {
        self.ensure_new(device, bytes, cap, usage, label, false).0
    }

    /// As [`Slot::ensure`]; also says whether the buffer is new, and with
    /// `mapped` creates it mapped.
    fn ensure_new(
        &mut self,
        device: &wgpu::Device,
        bytes: u64,
        cap: u64,
        usage: wgpu::BufferUsages,
        label: &'static str,
        mapped: bool,
    ) -> (&wgpu::Buffer, bool) {
        let bytes = bytes.max(16).next_multiple_of(16);
        let fresh = self
            .buffer
            .as_ref()
            .is_none_or(|b| b.size() < bytes || b.usage() != usage);
        if fresh {
            let size = bytes.next_power_of_two().min(cap.max(bytes));
            self.buffer = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: mapped,
            }));
        }
        (self.buffer.as_ref().expect("buffer was just ensured"), fresh)
    }

    /// The buffer, where one was ensured.
    pub fn get(&self) -> Option<&wgpu::Buffer> {
        self.buffer.as_ref()
    }

    /// Drops the buffer if it is larger than `keep` bytes.
    fn trim(&mut self, keep: u64) {
        if self.buffer.as_ref().is_some_and(|b| b.size() > keep) {
            self.buffer = None;
        }
    }
}

/// A host-writable staging buffer kept mapped between uses: an upload
/// writes into memory that is already there (no allocation, no page
/// faults) and the copy to the device buffer is part of the submission.
#[derive(Default)]
pub struct UploadSlot {
    slot: Slot,
    /// Set by the map callback; false while a remap is pending.
    mapped: Option<Arc<AtomicBool>>,
    /// The submission that last read the buffer.
    last_use: Option<wgpu::SubmissionIndex>,
}

impl UploadSlot {
    /// A mapped buffer of at least `bytes`, waiting (at most `timeout`) for
    /// the remap of its last use where that is still pending; `storage`:
    /// one a shader can bind (unified memory).
    pub fn acquire(
        &mut self,
        device: &wgpu::Device,
        bytes: u64,
        cap: u64,
        timeout: std::time::Duration,
        storage: bool,
    ) -> Result<&wgpu::Buffer, String> {
        use wgpu::BufferUsages as U;
        let usage = if storage {
            U::MAP_WRITE | U::COPY_SRC | U::STORAGE
        } else {
            U::MAP_WRITE | U::COPY_SRC
        };
        let (buffer, fresh) = self.slot.ensure_new(device, bytes, cap, usage, "upload", true);
        if fresh {
            // Created mapped; a pending remap of a replaced buffer went with it.
            self.mapped = Some(Arc::new(AtomicBool::new(true)));
            self.last_use = None;
        }
        let flag = self.mapped.clone().expect("an upload buffer has a map flag");
        if !flag.load(Ordering::Acquire) {
            if let Some(until) = self.last_use.take() {
                device
                    .poll(wgpu::PollType::Wait {
                        submission_index: Some(until),
                        timeout: Some(timeout),
                    })
                    .map_err(|e| format!("waiting for an upload buffer: {e}"))?;
            }
            // With calls on several threads, another thread's poll may be
            // the one running the map callback: wait for it to land.
            let deadline = std::time::Instant::now() + timeout;
            while !flag.load(Ordering::Acquire) {
                if std::time::Instant::now() > deadline {
                    return Err("an upload buffer was not remapped in time (the device may be lost)".into());
                }
                let _ = device.poll(wgpu::PollType::Poll);
                std::thread::sleep(std::time::Duration::from_micros(20));
            }
        }
        Ok(buffer)
    }

    /// Drops the buffer if it is larger than `keep` bytes.
    fn trim(&mut self, keep: u64) {
        if self.slot.get().is_some_and(|b| b.size() > keep) {
            *self = UploadSlot::default();
        }
    }

    /// After the submission `until` that copies out of the buffer: asks for
    /// it to be mapped again once that submission is done.
    pub fn release(&mut self, until: wgpu::SubmissionIndex) {
        let (Some(buffer), Some(flag)) = (self.slot.buffer.as_ref(), self.mapped.as_ref()) else {
            return;
        };
        flag.store(false, Ordering::Release);
        let flag = flag.clone();
        buffer.slice(..).map_async(wgpu::MapMode::Write, move |r| {
            if r.is_ok() {
                flag.store(true, Ordering::Release);
            }
        });
        self.last_use = Some(until);
    }
}

/// The buffers of one chunk in flight.
#[derive(Default)]
pub struct ChunkSlots {
    /// Params uniform.
    pub params: Slot,
    /// Mapped staging memory the chunk's input is written into.
    pub upload: UploadSlot,
    /// Image chunk (f32).
    pub input: Slot,
    /// An 8- or 16-bit image chunk on the device, before its widening into
    /// `input` (a GPU with its own memory).
    pub raw: Slot,
    /// The widening's params uniform.
    pub widen_params: Slot,
    /// Output chunk.
    pub output: Slot,
    /// Mappable copy of the output chunk (and its timestamps after it).
    pub staging: Slot,
    /// Resolved timestamps.
    pub query_resolve: Slot,
    /// The chunk's timestamp queries.
    pub query_set: Option<wgpu::QuerySet>,
}

/// Chunks in flight at most: the upload of the next chunks overlaps the
/// compute and readback of the current one.
pub const IN_FLIGHT: usize = 3;

/// The buffers one call uses: the kernels, and chunk slots used in turn.
#[derive(Default)]
pub struct Buffers {
    /// Kernels.
    pub kernels: Slot,
    /// The convolution's bias (one float when there is none).
    pub bias: Slot,
    /// Chunk slots, used in turn.
    pub chunks: [ChunkSlots; IN_FLIGHT],
}

impl Buffers {
    /// Drops the buffers too large to keep after a call.
    pub fn trim(&mut self) {
        self.kernels.trim(KEEP_BYTES);
        for c in &mut self.chunks {
            c.input.trim(KEEP_BYTES);
            c.raw.trim(KEEP_BYTES);
            c.output.trim(KEEP_BYTES);
            c.staging.trim(KEEP_BYTES);
            c.upload.trim(KEEP_BYTES);
        }
    }
}
