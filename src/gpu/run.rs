//! The one host skeleton every kernel runs through: a planned launch
//! (pipeline, weights, chunks and their params) is executed chunk by chunk
//! with up to [`IN_FLIGHT`] chunks in flight, reading its input from the
//! host or from a device buffer and writing its output to the host or to a
//! device buffer. A host input of 8- or 16-bit pixels for a kernel that
//! reads f32 is uploaded as its own bytes and widened on the device, chunk
//! by chunk, ahead of the kernel; so are RGB pixels padded to the four
//! channels a kernel reads as vec4s.

use std::borrow::Cow;
use std::mem::MaybeUninit;
use std::sync::atomic::Ordering;

use bytemuck::Pod;
use rayon::prelude::*;

use crate::error::{Error, Result};

use super::buffers::{Buffers, ChunkSlots, IN_FLIGHT};
use super::chunk::{Chunk, Problem};
use super::context::GpuContext;
use super::kernels::widen::{ChannelPad, Widen};
use super::kernels::Bindings;
use super::params::WidenParams;
use super::pixels::{HostData, PixelKind};

/// One chunk ready to dispatch.
pub(crate) struct Step<P> {
    /// The chunk's params uniform.
    pub params: P,
    /// Workgroups.
    pub groups: (u32, u32, u32),
}

/// A call planned and validated, before anything touches the device.
pub(crate) struct Launch<'a, P> {
    /// The kernel's pipeline.
    pub pipeline: wgpu::ComputePipeline,
    /// Its bind-group layout.
    pub bindings: Bindings,
    /// The element type the kernel reads from a host input (f32 for all
    /// but the widening kernel).
    pub input: PixelKind,
    /// Kernels and bias of a convolution (kernels padded with zero input
    /// channels where `pad` is set).
    pub weights: Option<(Cow<'a, [f32]>, &'a [f32])>,
    /// Zero channels the kernel reads after each pixel's own: the input has
    /// `pad.from` channels, the kernel and `problem` count `pad.to`.
    pub pad: Option<ChannelPad>,
    /// The sizes the chunks were planned from.
    pub problem: Problem,
    /// The chunks, in output order.
    pub chunks: Vec<Chunk>,
    /// Each chunk's params and workgroups.
    pub steps: Vec<Step<P>>,
    /// Output shape of the whole call.
    pub out_shape: [usize; 4],
}

impl<P> Launch<'_, P> {
    /// Floats of chunk `c`'s input.
    fn in_len(&self, c: &Chunk) -> usize {
        c.batch * c.in_rows * self.problem.in_row_elems
    }

    /// Floats of chunk `c`'s output.
    fn out_len(&self, c: &Chunk) -> usize {
        c.batch * c.out_rows * self.problem.out_row_elems
    }

    /// First input float of chunk `c` in the whole input.
    fn in_start(&self, c: &Chunk) -> usize {
        (c.n0 * self.problem.h + c.in_row0) * self.problem.in_row_elems
    }

    /// First value and values of chunk `c`'s input as the caller holds it
    /// (fewer than the kernel reads where channels are padded).
    fn source_range(&self, c: &Chunk) -> (usize, usize) {
        let (start, len) = (self.in_start(c), self.in_len(c));
        match self.pad {
            Some(pad) => (pad.source_len(start), pad.source_len(len)),
            None => (start, len),
        }
    }

    /// First output float of chunk `c` in the whole output.
    fn out_start(&self, c: &Chunk) -> usize {
        (c.n0 * self.problem.oh + c.out_row0) * self.problem.out_row_elems
    }

    /// Floats of the whole output.
    pub fn out_elems(&self) -> usize {
        self.out_shape.iter().product()
    }
}

/// Where a call's input is.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// Host memory, NHWC, in standard layout: f32 for every kernel, u8 or
    /// u16 for the widening kernel.
    Host(HostData<'a>),
    /// A device buffer holding the NHWC input from offset 0.
    Device(&'a wgpu::Buffer),
}

/// Where a call's output goes.
pub(crate) enum Sink<'a> {
    /// Host memory of the output's size, filled by the call.
    Host(&'a mut [MaybeUninit<f32>]),
    /// A device buffer of at least the output's size.
    Device(&'a wgpu::Buffer),
}

/// What one chunk reads and writes besides its own buffers.
struct Ends<'s, 'a> {
    /// The call's input.
    source: Source<'a>,
    /// The call's output.
    sink: &'s Sink<'a>,
    /// Kernels and bias on the device.
    weights: Option<&'s (wgpu::Buffer, wgpu::Buffer)>,
    /// Timestamps asked for.
    profile: bool,
    /// The widening pass ahead of each chunk's kernel, for 8- or 16-bit
    /// host pixels or padded channels.
    widening: Option<&'s Widening>,
}

/// The widening of a call's 8- or 16-bit host input into the f32 its
/// kernel reads, or the padding of its pixels with zero channels: one
/// dispatch per chunk, into the chunk's input buffer.
struct Widening {
    pipeline: wgpu::ComputePipeline,
    /// Per chunk of the call.
    steps: Vec<Step<WidenParams>>,
}

/// Bytes of the timestamps of one chunk (two u64), after its output in the
/// readback.
const STAMP_BYTES: u64 = 16;

impl GpuContext {
    /// Runs a planned call. GPU errors raised meanwhile are caught by error
    /// scopes and returned. With `profile`, a host output and timestamp
    /// support, also returns the summed kernel time in seconds (read in
    /// each chunk's readback; a device output has none to ride on).
    pub(crate) fn run<P: Pod>(
        &self,
        launch: &Launch<'_, P>,
        source: Source<'_>,
        mut sink: Sink<'_>,
        profile: bool,
    ) -> Result<Option<f64>> {
        self.check_alive()?;
        let input = match source {
            Source::Host(data) => data.kind,
            Source::Device(_) => PixelKind::F32,
        };
        let widening = match Widen::of(input, launch.pad) {
            Some(widen) if launch.input == PixelKind::F32 => Some(Widening {
                pipeline: self.widen_pipeline(widen),
                steps: launch
                    .chunks
                    .iter()
                    .map(|c| self.widen_step(widen, launch.in_len(c)))
                    .collect::<Result<_>>()?,
            }),
            _ if input == launch.input => None,
            _ => {
                return Err(Error::Gpu(format!(
                    "internal: a {input:?} input for a kernel that reads {:?}",
                    launch.input
                )))
            }
        };
        if let Sink::Host(out) = &sink {
            if out.len() != launch.out_elems() {
                return Err(Error::Gpu(format!(
                    "internal: an output of {} floats for a call of {}",
                    out.len(),
                    launch.out_elems()
                )));
            }
        }
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let mut buffers = self.take_buffers();
        let profile = profile && self.timestamps && matches!(sink, Sink::Host(_));
        let result = self.run_chunks(&mut buffers, launch, source, &mut sink, profile, widening.as_ref());
        let scoped = pollster::block_on(validation.pop()).or_else(|| pollster::block_on(oom.pop()));
        if let Some(e) = scoped {
            // The buffers may be in any state after an error: drop them.
            self.check_alive()?;
            return Err(Error::Gpu(e.to_string()));
        }
        match result {
            Ok(kernel_seconds) => {
                self.give_buffers(buffers);
                Ok(kernel_seconds)
            }
            // A chunk that timed out may still be running or mapping: its
            // buffers are dropped, not handed to the next call.
            Err(e) => {
                self.check_alive()?;
                Err(e)
            }
        }
    }

    /// A buffer set of the pool (or a new one), for one call.
    pub(crate) fn take_buffers(&self) -> Buffers {
        self.idle
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default()
    }

    /// Returns a buffer set to the pool, without the buffers too large to keep.
    pub(crate) fn give_buffers(&self, mut b: Buffers) {
        b.trim();
        self.idle.lock().unwrap_or_else(|e| e.into_inner()).push(b);
    }

    fn run_chunks<P: Pod>(
        &self,
        b: &mut Buffers,
        launch: &Launch<'_, P>,
        source: Source<'_>,
        sink: &mut Sink<'_>,
        profile: bool,
        widening: Option<&Widening>,
    ) -> Result<Option<f64>> {
        use wgpu::BufferUsages as U;
        let dev = &self.device;
        let cap = self.max_binding_bytes;
        let weights = match &launch.weights {
            Some((k, bias)) => {
                let kb = b
                    .kernels
                    .ensure(dev, (k.len() * 4) as u64, cap, U::STORAGE | U::COPY_DST, "kernels");
                self.queue.write_buffer(kb, 0, bytemuck::cast_slice(k));
                let bb = b
                    .bias
                    .ensure(dev, (bias.len() * 4) as u64, cap, U::STORAGE | U::COPY_DST, "bias");
                self.queue.write_buffer(bb, 0, bytemuck::cast_slice(bias));
                self.uploaded
                    .fetch_add(((k.len() + bias.len()) * 4) as u64, Ordering::Relaxed);
                Some((kb.clone(), bb.clone()))
            }
            None => None,
        };
        let chunks = &launch.chunks;
        let in_flight = chunks.len().clamp(1, IN_FLIGHT);
        let mut pending: Vec<Option<wgpu::SubmissionIndex>> = vec![None; chunks.len()];
        let mut kernel_ns = 0f64;
        // Outputs done so far: the chunks must tile the output in order (a
        // host output is assumed initialised after the call).
        let mut written = 0usize;
        for i in 0..chunks.len() + in_flight {
            if i < chunks.len() {
                let ends = Ends {
                    source,
                    sink: &*sink,
                    weights: weights.as_ref(),
                    profile,
                    widening,
                };
                pending[i] = Some(self.submit_chunk(&mut b.chunks[i % in_flight], launch, i, &ends)?);
            }
            // Chunk i - (in_flight - 1) is read back once the chunks after it
            // are queued; its slot is then free for chunk i + 1.
            let Some(r) = (i + 1).checked_sub(in_flight).filter(|&r| r < chunks.len()) else {
                continue;
            };
            let chunk = &chunks[r];
            let until = pending[r].take().expect("chunk was submitted");
            let (out_start, out_len) = (launch.out_start(chunk), launch.out_len(chunk));
            if out_start != written || out_start + out_len > launch.out_elems() {
                return Err(Error::Gpu(format!(
                    "internal: chunk {r} starts at output {out_start}, expected {written} (of {})",
                    launch.out_elems()
                )));
            }
            written += out_len;
            if let Sink::Host(out) = sink {
                let dst = &mut out[out_start..out_start + out_len];
                let staging = b.chunks[r % in_flight]
                    .staging
                    .get()
                    .expect("staging of a submitted chunk");
                let at = stamp_offset(out_len) / 4;
                let words = if profile { at + 4 } else { out_len };
                let mut stamps = [0u64; 2];
                read_back(dev, staging, &until, words, self.timeout, |src| {
                    fill(dst, &src[..out_len]);
                    if profile {
                        stamps = bytemuck::pod_read_unaligned(bytemuck::cast_slice(&src[at..at + 4]));
                    }
                })?;
                self.downloaded.fetch_add(out_len as u64 * 4, Ordering::Relaxed);
                let [begin, end] = stamps;
                kernel_ns += end.saturating_sub(begin) as f64 * self.queue.get_timestamp_period() as f64;
            }
        }
        if written != launch.out_elems() {
            return Err(Error::Gpu(format!(
                "internal: the chunks covered {written} of {} outputs",
                launch.out_elems()
            )));
        }
        Ok(profile.then_some(kernel_ns * 1e-9))
    }

    /// Uploads chunk `i`'s input and params, dispatches it and queues the
    /// copy of its output; returns the submission.
    fn submit_chunk<P: Pod>(
        &self,
        s: &mut ChunkSlots,
        launch: &Launch<'_, P>,
        i: usize,
        ends: &Ends<'_, '_>,
    ) -> Result<wgpu::SubmissionIndex> {
        let Ends {
            source,
            sink,
            weights,
            profile,
            widening,
        } = *ends;
        use wgpu::BufferUsages as U;
        let dev = &self.device;
        let cap = self.max_binding_bytes;
        let (chunk, step) = (&launch.chunks[i], &launch.steps[i]);
        let whole = launch.chunks.len() == 1;
        let in_len = launch.in_len(chunk);
        let (src_start, src_len) = launch.source_range(chunk);
        let (out_start, out_len) = (launch.out_start(chunk), launch.out_len(chunk));
        let in_bytes = in_len as u64 * 4;
        let out_bytes = out_len as u64 * 4;
        let mut encoder = dev.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });

        let params = s
            .params
            .ensure(dev, size_of::<P>() as u64, u64::MAX, U::UNIFORM | U::COPY_DST, "params")
            .clone();
        self.queue.write_buffer(&params, 0, bytemuck::bytes_of(&step.params));
        // The chunk's input as the caller holds it, in whole u32 words: a
        // device input as it stands when it is the chunk's, else the chunk's
        // rows copied into a slot (the input slot, or with a pass ahead of
        // the kernel that pass's).
        let raw = match source {
            _ if in_bytes == 0 => None,
            Source::Device(buf) if whole => Some((buf.clone(), src_len as u64 * 4)),
            Source::Device(buf) => {
                let bytes = src_len as u64 * 4;
                let staged = self.stage(s, widening.is_some(), &mut encoder, buf, src_start as u64 * 4, bytes);
                Some((staged, bytes))
            }
            Source::Host(data) => {
                let up_bytes = (src_len * data.kind.bytes()).next_multiple_of(4) as u64;
                let up = s
                    .upload
                    .acquire(dev, up_bytes, cap, self.timeout, self.unified)
                    .map_err(Error::Gpu)?
                    .clone();
                {
                    let values = data.values(src_start, src_len);
                    let mut view = up
                        .slice(0..up_bytes)
                        .get_mapped_range_mut()
                        .map_err(|e| Error::Gpu(format!("writing an upload: {e}")))?;
                    copy_in(view.slice(..values.len()), values);
                }
                up.unmap();
                self.uploaded.fetch_add(up_bytes, Ordering::Relaxed);
                // Unified memory: the shader reads the upload itself.
                if self.unified {
                    Some((up, up_bytes))
                } else {
                    let staged = self.stage(s, widening.is_some(), &mut encoder, &up, 0, up_bytes);
                    Some((staged, up_bytes))
                }
            }
        };
        let input = match (raw, widening) {
            (None, _) => s.input.ensure(dev, 16, cap, U::STORAGE | U::COPY_DST, "images").clone(),
            (Some((raw, _)), None) => raw,
            (Some((raw, raw_bytes)), Some(w)) => {
                let input = s
                    .input
                    .ensure(dev, in_bytes, cap, U::STORAGE | U::COPY_DST, "images")
                    .clone();
                let step = &w.steps[i];
                let params = s
                    .widen_params
                    .ensure(
                        dev,
                        size_of::<WidenParams>() as u64,
                        u64::MAX,
                        U::UNIFORM | U::COPY_DST,
                        "params",
                    )
                    .clone();
                self.queue.write_buffer(&params, 0, bytemuck::bytes_of(&step.params));
                // Its own pass, outside the kernel's timestamps.
                self.dispatch(
                    &mut encoder,
                    &w.pipeline,
                    Bindings::Pool,
                    &[
                        wgpu::BindGroupEntry {
                            binding: 0,
                            resource: params.as_entire_binding(),
                        },
                        wgpu::BindGroupEntry {
                            binding: 1,
                            resource: prefix(&raw, raw_bytes),
                        },
                        wgpu::BindGroupEntry {
                            binding: 2,
                            resource: prefix(&input, in_bytes),
                        },
                    ],
                    step.groups,
                    None,
                );
                input
            }
        };
        // The timestamps travel in the same readback as the output.
        let readback_bytes = if profile {
            stamp_offset(out_len) as u64 + STAMP_BYTES
        } else {
            out_bytes
        };
        let output = match sink {
            Sink::Device(buf) if whole => (*buf).clone(),
            // Unified memory: the shader writes into the readback itself.
            Sink::Host(_) if self.unified => s
                .staging
                .ensure(
                    dev,
                    readback_bytes,
                    self.max_buffer_bytes & !15,
                    U::MAP_READ | U::COPY_DST | U::STORAGE,
                    "output",
                )
                .clone(),
            _ => s
                .output
                .ensure(dev, out_bytes, cap, U::STORAGE | U::COPY_SRC, "output")
                .clone(),
        };
        let mut entries = vec![
            wgpu::BindGroupEntry {
                binding: 0,
                resource: params.as_entire_binding(),
            },
            wgpu::BindGroupEntry {
                binding: 1,
                resource: input.as_entire_binding(),
            },
        ];
        match weights {
            Some((k, bias)) => entries.extend([
                wgpu::BindGroupEntry {
                    binding: 2,
                    resource: k.as_entire_binding(),
                },
                wgpu::BindGroupEntry {
                    binding: 3,
                    resource: prefix(&output, out_bytes),
                },
                wgpu::BindGroupEntry {
                    binding: 4,
                    resource: bias.as_entire_binding(),
                },
            ]),
            None => entries.push(wgpu::BindGroupEntry {
                binding: 2,
                resource: prefix(&output, out_bytes),
            }),
        }
        if profile && s.query_set.is_none() {
            s.query_set = Some(dev.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("kernel time"),
                ty: wgpu::QueryType::Timestamp,
                count: 2,
            }));
        }
        self.dispatch(
            &mut encoder,
            &launch.pipeline,
            launch.bindings,
            &entries,
            step.groups,
            s.query_set.as_ref().filter(|_| profile),
        );
        let resolve = profile.then(|| {
            let resolve = s
                .query_resolve
                .ensure(dev, STAMP_BYTES, u64::MAX, U::QUERY_RESOLVE | U::COPY_SRC, "timestamps")
                .clone();
            encoder.resolve_query_set(s.query_set.as_ref().expect("created above"), 0..2, &resolve, 0);
            resolve
        });
        match sink {
            Sink::Host(_) => {
                let staging = if self.unified {
                    output.clone()
                } else {
                    let staging = s
                        .staging
                        .ensure(
                            dev,
                            readback_bytes,
                            self.max_buffer_bytes & !15,
                            U::MAP_READ | U::COPY_DST,
                            "staging",
                        )
                        .clone();
                    if out_bytes > 0 {
                        encoder.copy_buffer_to_buffer(&output, 0, &staging, 0, out_bytes);
                    }
                    staging
                };
                if let Some(resolve) = &resolve {
                    encoder.copy_buffer_to_buffer(resolve, 0, &staging, stamp_offset(out_len) as u64, STAMP_BYTES);
                }
            }
            Sink::Device(buf) => {
                if !whole && out_bytes > 0 {
                    encoder.copy_buffer_to_buffer(&output, 0, buf, out_start as u64 * 4, out_bytes);
                }
            }
        }
        let index = self.queue.submit([encoder.finish()]);
        if matches!(source, Source::Host(_)) && in_bytes > 0 {
            s.upload.release(index.clone());
        }
        Ok(index)
    }
}

impl GpuContext {
    /// Copies `bytes` of `src` from `offset` into the chunk's own device
    /// buffer: the input slot, or with a pass ahead of the kernel
    /// (`pre_pass`) the slot that pass reads.
    fn stage(
        &self,
        s: &mut ChunkSlots,
        pre_pass: bool,
        encoder: &mut wgpu::CommandEncoder,
        src: &wgpu::Buffer,
        offset: u64,
        bytes: u64,
    ) -> wgpu::Buffer {
        let slot = if pre_pass { &mut s.raw } else { &mut s.input };
        let usage = wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST;
        let staged = slot
            .ensure(&self.device, bytes, self.max_binding_bytes, usage, "images")
            .clone();
        encoder.copy_buffer_to_buffer(src, offset, &staged, 0, bytes);
        staged
    }

    /// Records one dispatch of `pipeline` over the bindings `entries` in a
    /// compute pass of its own, with the pass's start and end written into
    /// `stamps` (queries 0 and 1) when given.
    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        bindings: Bindings,
        entries: &[wgpu::BindGroupEntry<'_>],
        (x, y, z): (u32, u32, u32),
        stamps: Option<&wgpu::QuerySet>,
    ) {
        let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: self.pipelines.layout(bindings),
            entries,
        });
        let mut pass = encoder.begin_compute_pass(&wgpu::ComputePassDescriptor {
            label: None,
            timestamp_writes: stamps.map(|set| wgpu::ComputePassTimestampWrites {
                query_set: set,
                beginning_of_pass_write_index: Some(0),
                end_of_pass_write_index: Some(1),
            }),
        });
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(x, y, z);
    }
}

/// The first `bytes` of `buffer` (rounded up to whole vec4s) as a binding: a
/// readback buffer may be larger than one binding may be.
fn prefix(buffer: &wgpu::Buffer, bytes: u64) -> wgpu::BindingResource<'_> {
    wgpu::BindingResource::Buffer(wgpu::BufferBinding {
        buffer,
        offset: 0,
        size: std::num::NonZeroU64::new(bytes.max(16).next_multiple_of(16).min(buffer.size())),
    })
}

/// Byte offset of a chunk's timestamps in its readback: after its `len`
/// output floats, 8-byte aligned.
fn stamp_offset(len: usize) -> usize {
    (len * 4).next_multiple_of(8)
}

/// Pieces of a large copy, each done by one thread: a single-threaded copy
/// of a large input or output is a real part of a call's time.
const PIECE: usize = 1 << 18;

/// Copies `src` into the mapped upload memory `dst` (of the same length).
pub(crate) fn copy_in(dst: wgpu::WriteOnly<'_, [u8]>, src: &[u8]) {
    let mut rest = dst;
    if src.len() < 4 * PIECE {
        rest.copy_from_slice(src);
        return;
    }
    let mut pieces = Vec::with_capacity(src.len().div_ceil(PIECE));
    for s in src.chunks(PIECE) {
        let (d, r) = rest.split_at(s.len());
        pieces.push(Piece(d, s));
        rest = r;
    }
    pieces.into_par_iter().for_each(|Piece(mut d, s)| d.copy_from_slice(s));
}

/// A piece of mapped memory and what goes into it, for one thread.
struct Piece<'a>(wgpu::WriteOnly<'a, [u8]>, &'a [u8]);

// SAFETY: wgpu implements Send for `WriteOnly<T>` with `T: Send` but not
// for unsized slices; a `WriteOnly<[u8]>` is an exclusive pointer to bytes,
// and the pieces come from `split_at`, so no two share memory.
unsafe impl Send for Piece<'_> {}

/// Copies a readback into its part of the output.
pub(crate) fn fill(dst: &mut [MaybeUninit<f32>], src: &[f32]) {
    let copy = |d: &mut [MaybeUninit<f32>], s: &[f32]| {
        for (d, &s) in d.iter_mut().zip(s) {
            d.write(s);
        }
    };
    let piece = PIECE / 4;
    if dst.len() >= 4 * piece {
        dst.par_chunks_mut(piece)
            .zip(src.par_chunks(piece))
            .for_each(|(d, s)| copy(d, s));
    } else {
        copy(dst, src);
    }
}

/// Waits for submission `until` (at most `timeout`), maps the first `len`
/// floats of `staging`, hands them to `sink` and unmaps. Later submissions
/// keep running.
pub(crate) fn read_back(
    device: &wgpu::Device,
    staging: &wgpu::Buffer,
    until: &wgpu::SubmissionIndex,
    len: usize,
    timeout: std::time::Duration,
    sink: impl FnOnce(&[f32]),
) -> Result<()> {
    if len == 0 {
        sink(&[]);
        return Ok(());
    }
    let bytes = (len * 4) as u64;
    let slice = staging.slice(0..bytes);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        let _ = tx.send(r);
    });
    device
        .poll(wgpu::PollType::Wait {
            submission_index: Some(until.clone()),
            timeout: Some(timeout),
        })
        .map_err(|e| match e {
            wgpu::PollError::Timeout => Error::Gpu(format!(
                "the GPU did not finish a chunk within {:.3} s (timeout: GpuOptions::timeout or \
                 CONVPOOL_GPU_TIMEOUT); the device may be hung or lost",
                timeout.as_secs_f64()
            )),
            e => Error::Gpu(format!("waiting for the GPU: {e}")),
        })?;
    // The map callback has run once the submission is done; a device that
    // was lost meanwhile never runs it, which is an error, not a wait.
    rx.recv_timeout(timeout)
        .map_err(|_| Error::Gpu("the GPU dropped a readback (the device may be lost)".into()))?
        .map_err(|e| Error::Gpu(format!("mapping the output: {e}")))?;
    {
        let view = slice
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("mapping the output: {e}")))?;
        sink(bytemuck::cast_slice(&view));
    }
    staging.unmap();
    Ok(())
}
