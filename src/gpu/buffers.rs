//! Buffers reused across calls: each grows (to a power of two, within the
//! binding limit) when a call needs more and is kept for the next call.

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
        let bytes = bytes.max(16).next_multiple_of(16);
        if self.buffer.as_ref().is_none_or(|b| b.size() < bytes) {
            let size = bytes.next_power_of_two().min(cap.max(bytes));
            self.buffer = Some(device.create_buffer(&wgpu::BufferDescriptor {
                label: Some(label),
                size,
                usage,
                mapped_at_creation: false,
            }));
        }
        self.buffer.as_ref().expect("buffer was just ensured")
    }
}

/// The buffers of one chunk in flight.
#[derive(Default)]
pub struct ChunkSlots {
    /// Params uniform.
    pub params: Slot,
    /// Image chunk.
    pub input: Slot,
    /// Output chunk.
    pub output: Slot,
    /// Mappable copy of the output chunk.
    pub staging: Slot,
    /// Resolved timestamps.
    pub query_resolve: Slot,
    /// Mappable copy of the timestamps.
    pub query_read: Slot,
}

/// The buffers one call uses: the kernels, and two chunk slots so the
/// upload of the next chunk overlaps the compute of the current one.
#[derive(Default)]
pub struct Buffers {
    /// Kernels.
    pub kernels: Slot,
    /// The convolution's bias (one float when there is none).
    pub bias: Slot,
    /// Chunk slots, used alternately.
    pub chunks: [ChunkSlots; 2],
}
