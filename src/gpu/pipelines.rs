//! Shader modules, bind-group layouts and a cache of compute pipelines keyed
//! by kernel and pipeline constants, built from the kernel table
//! ([`super::kernels`]): no pipeline is built per call.

use std::collections::HashMap;
use std::sync::Mutex;

use super::kernels::{Bindings, Constants, Family, SHADERS};

fn storage(binding: u32, read_only: bool) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Storage { read_only },
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

fn uniform(binding: u32) -> wgpu::BindGroupLayoutEntry {
    wgpu::BindGroupLayoutEntry {
        binding,
        visibility: wgpu::ShaderStages::COMPUTE,
        ty: wgpu::BindingType::Buffer {
            ty: wgpu::BufferBindingType::Uniform,
            has_dynamic_offset: false,
            min_binding_size: None,
        },
        count: None,
    }
}

/// Modules, layouts and the pipeline cache of one device.
pub struct Pipelines {
    modules: Vec<wgpu::ShaderModule>,
    conv_layout: wgpu::BindGroupLayout,
    pool_layout: wgpu::BindGroupLayout,
    conv_pipeline_layout: wgpu::PipelineLayout,
    pool_pipeline_layout: wgpu::PipelineLayout,
    cache: Mutex<HashMap<(Family, Constants), wgpu::ComputePipeline>>,
}

impl Pipelines {
    /// Compiles the shader modules and builds the layouts.
    pub fn new(device: &wgpu::Device) -> Self {
        let modules = SHADERS
            .iter()
            .map(|s| {
                let desc = wgpu::ShaderModuleDescriptor {
                    label: Some(s.label),
                    source: wgpu::ShaderSource::Wgsl(s.source.into()),
                };
                if s.trusted {
                    // SAFETY: a trusted shader keeps every access in range by
                    // its own logic (its header says how) and every loop is
                    // bounded by params the host fills from a validated
                    // geometry; naga's index clamps and loop counters, which
                    // sit in the inner loops and keep the driver from
                    // unrolling them, are left out. tests/gpu.rs runs it on
                    // ragged shapes of every tiling against the reference.
                    unsafe { device.create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked()) }
                } else {
                    device.create_shader_module(desc)
                }
            })
            .collect();
        let conv_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("conv2d"),
            entries: &[
                uniform(0),
                storage(1, true),
                storage(2, true),
                storage(3, false),
                storage(4, true),
            ],
        });
        let pool_layout = device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor {
            label: Some("pool2d"),
            entries: &[uniform(0), storage(1, true), storage(2, false)],
        });
        let layout = |bgl: &wgpu::BindGroupLayout| {
            device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
                label: None,
                bind_group_layouts: &[Some(bgl)],
                immediate_size: 0,
            })
        };
        Pipelines {
            conv_pipeline_layout: layout(&conv_layout),
            pool_pipeline_layout: layout(&pool_layout),
            modules,
            conv_layout,
            pool_layout,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The bind-group layout of a kernel's bindings.
    pub fn layout(&self, bindings: Bindings) -> &wgpu::BindGroupLayout {
        match bindings {
            Bindings::Conv => &self.conv_layout,
            Bindings::Pool => &self.pool_layout,
        }
    }

    /// The pipeline of `family` with `constants`, built on first use.
    pub fn get(&self, device: &wgpu::Device, family: Family, constants: Constants) -> wgpu::ComputePipeline {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        let key = (family, constants);
        if let Some(p) = cache.get(&key) {
            return p.clone();
        }
        let layout = match family.bindings() {
            Bindings::Conv => &self.conv_pipeline_layout,
            Bindings::Pool => &self.pool_pipeline_layout,
        };
        let values: Vec<(&str, f64)> = key.1.iter().map(|&(n, v)| (n, v as f64)).collect();
        let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
            label: Some(family.label()),
            layout: Some(layout),
            module: &self.modules[family.shader()],
            entry_point: Some(family.entry()),
            compilation_options: wgpu::PipelineCompilationOptions {
                constants: &values,
                // Every workgroup variable is written before it is read.
                zero_initialize_workgroup_memory: false,
            },
            cache: None,
        });
        cache.insert(key, pipeline.clone());
        pipeline
    }
}
