//! `convpool._convpool`: the Python extension module behind the `convpool`
//! package (python/convpool/__init__.py re-exports it).
//!
//! Arrays come in as any real numpy dtype (converted to float32 once, here;
//! a float32 array is read in place, strided or not; on a GPU engine uint8
//! and uint16 images are read in place too and widened on the device) and
//! go out as float32
//! (int64 for argmax indices) without a copy. Every call releases the GIL
//! while it computes, and no Rust panic crosses into Python: each entry point
//! runs under `catch_unwind`.

use std::panic::{catch_unwind, AssertUnwindSafe};

use convpool::compat::SeedPadding;
use convpool::shape::{images_nhwc, kernels_hwio};
use convpool::{
    Activation, Conv2dSpec, Device, Engine, EngineOptions, Error, GpuArray, Padding, PaddingMode, Pads, Pixel,
    Pool2dSpec, PoolMode, Window,
};
use ndarray::{Array4, ArrayView1, ArrayView4, ArrayViewD, Axis, Ix1, Ix2, Ix3, Ix4};
use numpy::{IntoPyArray, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn};
use pyo3::exceptions::{PyOSError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyList, PyString, PyTuple};

/// A Rust error as the Python exception a caller expects: bad arguments are
/// `ValueError`, a missing or failing GPU (and a verify mismatch) is
/// `RuntimeError`, a file problem `OSError`; the message is convpool's own
/// one line.
fn py_err(e: Error) -> PyErr {
    let text = e.to_string();
    match e {
        Error::NoAdapter(_) | Error::Gpu(_) | Error::VerifyMismatch { .. } => PyRuntimeError::new_err(text),
        Error::Io { .. } => PyOSError::new_err(text),
        _ => PyValueError::new_err(text),
    }
}

/// Runs `work` without the GIL, turning a Rust error into its Python
/// exception and a panic (a bug: none is known to be reachable) into a
/// `RuntimeError` rather than letting it unwind into the interpreter.
fn compute<T: Send>(py: Python<'_>, work: impl FnOnce() -> convpool::Result<T> + Send) -> PyResult<T> {
    let result = py.detach(|| catch_unwind(AssertUnwindSafe(work)));
    match result {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(py_err(e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            Err(PyRuntimeError::new_err(format!(
                "convpool internal error (please report it): {}",
                what.lines().next().unwrap_or("")
            )))
        }
    }
}

/// An input as float32: the caller's own array when it already is one, or
/// numpy's converted copy.
struct F32<'py>(PyReadonlyArrayDyn<'py, f32>);

impl F32<'_> {
    fn view(&self) -> ArrayViewD<'_, f32> {
        self.0.as_array()
    }
}

/// `arg` as float32 (SPEC.md "Numbers"): a float32 array as it is (no
/// copy, any strides); any other real dtype through
/// `numpy.asarray(arg).astype(float32)` (numpy's cast loops run without
/// the GIL, and at the seed's batch sizes they beat a parallel Rust loop:
/// benches/RESULTS.md "Python"). Booleans, complex numbers, strings,
/// objects and dates are a `TypeError` naming the argument and the dtype.
fn as_f32<'py>(name: &str, obj: &Bound<'py, PyAny>) -> PyResult<F32<'py>> {
    let py = obj.py();
    let readonly = |a: &Bound<'py, PyArrayDyn<f32>>| {
        a.try_readonly()
            .map(F32)
            .map_err(|e| PyValueError::new_err(format!("{name}: {e}")))
    };
    if let Ok(a) = obj.cast::<PyArrayDyn<f32>>() {
        return readonly(a);
    }
    let numpy = py.import("numpy")?;
    let any = numpy
        .call_method1("asarray", (obj,))
        .map_err(|e| PyTypeError::new_err(format!("{name}: not an array: {e}")))?;
    let dtype = any.getattr("dtype")?;
    let kind: String = dtype.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "f" | "i" | "u") {
        let dtype_name: String = dtype.str()?.extract()?;
        return Err(PyTypeError::new_err(format!(
            "{name}: dtype {dtype_name} is not a real number type (expected float or integer values)"
        )));
    }
    let converted = any
        .call_method1("astype", (numpy.getattr("float32")?,))?
        .cast_into::<PyArrayDyn<f32>>()
        .map_err(|e| PyTypeError::new_err(format!("{name}: {e}")))?;
    readonly(&converted)
}

/// Images as the engine takes them: float32 (any other dtype converted by
/// [`as_f32`]), or, on a GPU engine, uint8 and uint16 arrays as they are:
/// their own bytes cross the bus and the device widens them (exact).
enum Images<'py> {
    F32(F32<'py>),
    U8(PyReadonlyArrayDyn<'py, u8>),
    U16(PyReadonlyArrayDyn<'py, u16>),
}

/// A view of [`Images`], to hand to a computation without the GIL.
enum ImagesView<'a> {
    F32(ArrayViewD<'a, f32>),
    U8(ArrayViewD<'a, u8>),
    U16(ArrayViewD<'a, u16>),
}

impl Images<'_> {
    fn view(&self) -> ImagesView<'_> {
        match self {
            Images::F32(a) => ImagesView::F32(a.view()),
            Images::U8(a) => ImagesView::U8(a.as_array()),
            Images::U16(a) => ImagesView::U16(a.as_array()),
        }
    }

    fn shape(&self) -> Vec<usize> {
        match self.view() {
            ImagesView::F32(a) => a.shape().to_vec(),
            ImagesView::U8(a) => a.shape().to_vec(),
            ImagesView::U16(a) => a.shape().to_vec(),
        }
    }
}

fn shape_text(shape: &[usize]) -> String {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    }
}

/// An NHWC view of `(m, h, w)` or `(m, h, w, c)` images, without a copy.
fn images4<T>(view: ArrayViewD<'_, T>) -> convpool::Result<ArrayView4<'_, T>> {
    images_nhwc(view.shape())?;
    Ok(match view.ndim() {
        3 => view.into_dimensionality::<Ix3>().expect("rank 3").insert_axis(Axis(3)),
        _ => view.into_dimensionality::<Ix4>().expect("rank 4"),
    })
}

/// An HWIO view of `(kh, kw)`, `(kh, kw, c)` or `(kh, kw, c, nc)` kernels.
fn kernels4<'a>(view: ArrayViewD<'a, f32>) -> convpool::Result<ArrayView4<'a, f32>> {
    kernels_hwio(view.shape())?;
    Ok(match view.ndim() {
        2 => view
            .into_dimensionality::<Ix2>()
            .expect("rank 2")
            .insert_axis(Axis(2))
            .insert_axis(Axis(3)),
        3 => view.into_dimensionality::<Ix3>().expect("rank 3").insert_axis(Axis(3)),
        _ => view.into_dimensionality::<Ix4>().expect("rank 4"),
    })
}

/// A whole number `>= 0` (numpy integers too); `bool` is refused, since
/// `stride=True` is a mistake rather than a stride of 1.
fn whole(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<usize> {
    if obj.is_instance_of::<PyBool>() {
        return Err(PyTypeError::new_err(format!(
            "{name}: expected a whole number, got a bool"
        )));
    }
    let value: i64 = obj.extract().map_err(|_| {
        PyTypeError::new_err(format!(
            "{name}: expected a whole number, got {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))
    })?;
    usize::try_from(value).map_err(|_| PyValueError::new_err(format!("{name}: must not be negative, got {value}")))
}

/// The numbers of a tuple or list (of whole numbers).
fn numbers(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<Option<Vec<usize>>> {
    if let Ok(t) = obj.cast::<PyTuple>() {
        return t
            .iter()
            .map(|v| whole(name, &v))
            .collect::<PyResult<Vec<_>>>()
            .map(Some);
    }
    if let Ok(l) = obj.cast::<PyList>() {
        return l
            .iter()
            .map(|v| whole(name, &v))
            .collect::<PyResult<Vec<_>>>()
            .map(Some);
    }
    Ok(None)
}

/// `n` (both axes) or `(a, b)`.
fn pair(name: &str, obj: &Bound<'_, PyAny>) -> PyResult<(usize, usize)> {
    match numbers(name, obj)? {
        Some(v) if v.len() == 2 => Ok((v[0], v[1])),
        Some(v) => Err(PyValueError::new_err(format!(
            "{name}: expected two numbers (a, b), got {}",
            v.len()
        ))),
        None => {
            let n = whole(name, obj)?;
            Ok((n, n))
        }
    }
}

/// `'valid'`, `'same'`, `'same_lower'`, `'seed_same'`, `p`, `(ph, pw)` or
/// `(top, bottom, left, right)` (SPEC.md's order).
fn padding(obj: &Bound<'_, PyAny>) -> PyResult<Padding> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_cow()?.parse::<Padding>().map_err(py_err);
    }
    match numbers("padding", obj)? {
        Some(v) => Padding::from_pads(&v).ok_or_else(|| {
            PyValueError::new_err(format!(
                "padding: expected (ph, pw) or (top, bottom, left, right), got {} numbers",
                v.len()
            ))
        }),
        None => {
            let p = whole("padding", obj)?;
            Ok(Padding::Symmetric(p, p))
        }
    }
}

/// The exercise's padding: `'same'`, `'valid'` or `(ph, pw)`.
fn seed_padding(obj: &Bound<'_, PyAny>) -> PyResult<SeedPadding> {
    if let Ok(s) = obj.cast::<PyString>() {
        return s.to_cow()?.parse::<SeedPadding>().map_err(py_err);
    }
    match numbers("padding", obj)? {
        Some(v) if v.len() == 2 => Ok(SeedPadding::Explicit(v[0], v[1])),
        _ => Err(PyValueError::new_err(format!(
            "padding: expected 'same', 'valid' or a tuple (ph, pw), got {}",
            obj.repr().map(|r| r.to_string()).unwrap_or_default()
        ))),
    }
}

fn parsed<T: std::str::FromStr<Err = Error>>(obj: &Bound<'_, PyAny>, name: &str) -> PyResult<T> {
    let text = obj
        .cast::<PyString>()
        .map_err(|_| PyTypeError::new_err(format!("{name}: expected a string")))?;
    text.to_cow()?.parse::<T>().map_err(py_err)
}

/// The keyword arguments of a convolution (`None` where not given), as a
/// spec: padding `'valid'`, stride and dilation 1, `'zeros'` borders, one
/// group and no activation unless given.
#[derive(Default)]
struct ConvArgs<'py> {
    padding: Option<Bound<'py, PyAny>>,
    stride: Option<Bound<'py, PyAny>>,
    dilation: Option<Bound<'py, PyAny>>,
    padding_mode: Option<Bound<'py, PyAny>>,
    groups: Option<Bound<'py, PyAny>>,
    activation: Option<Bound<'py, PyAny>>,
}

/// The value of a keyword, unless it was left out or given as `None`.
fn given<'a, 'py>(arg: &'a Option<Bound<'py, PyAny>>) -> Option<&'a Bound<'py, PyAny>> {
    arg.as_ref().filter(|v| !v.is_none())
}

/// A `pair` keyword, `(1, 1)` when not given.
fn pair_or_one(name: &str, arg: &Option<Bound<'_, PyAny>>) -> PyResult<(usize, usize)> {
    given(arg).map_or(Ok((1, 1)), |v| pair(name, v))
}

impl ConvArgs<'_> {
    fn spec(&self) -> PyResult<Conv2dSpec> {
        let (sh, sw) = pair_or_one("stride", &self.stride)?;
        let (dh, dw) = pair_or_one("dilation", &self.dilation)?;
        let activation = given(&self.activation)
            .map(|a| parsed::<Activation>(a, "activation"))
            .transpose()?;
        let padding = given(&self.padding).map_or(Ok(Padding::Valid), padding)?;
        let mode = given(&self.padding_mode).map_or(Ok(PaddingMode::Zeros), |m| parsed(m, "padding_mode"))?;
        let groups = given(&self.groups).map_or(Ok(1), |g| whole("groups", g))?;
        Ok(Conv2dSpec::new(padding)
            .with_stride(sh, sw)
            .with_dilation(dh, dw)
            .with_padding_mode(mode)
            .with_groups(groups)
            .with_activation(activation))
    }
}

/// The keyword arguments of a pooling (`None` where not given), as a spec:
/// `'max'`, no padding, dilation 1 and the window as its stride unless
/// given.
struct PoolArgs<'py> {
    window: Option<Bound<'py, PyAny>>,
    output_size: Option<Bound<'py, PyAny>>,
    stride: Option<Bound<'py, PyAny>>,
    padding: Option<Bound<'py, PyAny>>,
    mode: Option<Bound<'py, PyAny>>,
    ceil_mode: bool,
    count_include_pad: bool,
    dilation: Option<Bound<'py, PyAny>>,
}

impl PoolArgs<'_> {
    fn spec(&self) -> PyResult<Pool2dSpec> {
        let mode = given(&self.mode).map_or(Ok(PoolMode::Max), |m| parsed(m, "mode"))?;
        let padding = given(&self.padding).map_or(Ok(Padding::Valid), padding)?;
        let dilation = pair_or_one("dilation", &self.dilation)?;
        let stride = given(&self.stride).map(|v| pair("stride", v)).transpose()?;
        let window = match (given(&self.window), given(&self.output_size)) {
            (Some(_), Some(_)) => {
                return Err(PyValueError::new_err(
                    "output_size: adaptive pooling takes no window (give window or output_size, not both)",
                ))
            }
            (None, None) => {
                return Err(PyValueError::new_err(
                    "window: give window=(kh, kw) or output_size=(oh, ow)",
                ))
            }
            (None, Some(size)) => {
                let (oh, ow) = pair("output_size", size)?;
                Window::Adaptive(oh, ow)
            }
            (Some(w), None) => match w.cast::<PyString>() {
                Ok(s) if s.to_cow()?.trim().eq_ignore_ascii_case("global") => Window::Global,
                Ok(s) => {
                    return Err(PyValueError::new_err(format!(
                        "window: expected (kh, kw), a number or 'global', got {:?}",
                        s.to_cow()?
                    )))
                }
                Err(_) => {
                    let (kh, kw) = pair("window", w)?;
                    Window::Fixed(kh, kw)
                }
            },
        };
        if !matches!(window, Window::Fixed(..)) {
            // The global and adaptive windows fix their own placement: a
            // placement option given with them would be ignored, so it is
            // refused instead.
            let what = if window == Window::Global {
                "window='global'"
            } else {
                "output_size"
            };
            let refuse = |arg: &str| PyValueError::new_err(format!("{arg}: not used with {what}"));
            if stride.is_some() {
                return Err(refuse("stride"));
            }
            if padding != Padding::Valid {
                return Err(refuse("padding"));
            }
            if dilation != (1, 1) {
                return Err(refuse("dilation"));
            }
            if self.ceil_mode {
                return Err(refuse("ceil_mode"));
            }
        }
        let mut spec = Pool2dSpec {
            window,
            ..Pool2dSpec::new(mode, 1, 1)
        }
        .with_padding(padding)
        .with_dilation(dilation.0, dilation.1)
        .with_ceil_mode(self.ceil_mode)
        .with_count_include_pad(self.count_include_pad);
        if let Some((sh, sw)) = stride {
            spec = spec.with_stride(sh, sw);
        }
        Ok(spec)
    }
}

/// The output of a convolution with the seed's shapes: a 2-D or 3-D kernel
/// gives `(m, oh, ow)`, a 4-D one `(m, oh, ow, nc)` (SPEC.md "Layouts").
fn conv_output(py: Python<'_>, out: Array4<f32>, kernel_rank: usize) -> Py<PyAny> {
    if kernel_rank < 4 {
        out.index_axis_move(Axis(3), 0).into_pyarray(py).into_any().unbind()
    } else {
        out.into_pyarray(py).into_any().unbind()
    }
}

/// The seed's ranks: `images` must have exactly this many dimensions.
fn need_rank(name: &str, shape: &[usize], rank: usize, layout: &str) -> PyResult<()> {
    if shape.len() == rank {
        Ok(())
    } else {
        Err(PyValueError::new_err(format!(
            "{name}: expected {layout}, got an array of shape {} ({} dimensions)",
            shape_text(shape),
            shape.len()
        )))
    }
}

/// The bias argument as a vector, or a `ValueError` naming its shape.
fn bias_view<'a>(b: Option<&'a F32<'_>>) -> PyResult<Option<ArrayView1<'a, f32>>> {
    b.map(|b| {
        let v = b.view();
        let shape = v.shape().to_vec();
        v.into_dimensionality::<Ix1>()
            .map_err(|_| PyValueError::new_err(format!("bias: expected shape (nc,), got {}", shape_text(&shape))))
    })
    .transpose()
}

/// Where a [`PyDeviceArray`] keeps its values.
enum Held {
    /// In the memory of the engine's GPU.
    Gpu(GpuArray),
    /// In host memory, for an engine that computes on the CPU.
    Host(Array4<f32>),
}

/// A float32 NHWC batch kept where its engine computes (`Engine.upload`,
/// or the result of `conv2d` / `pool2d` on one): on a GPU, a chain of
/// calls moves the batch over the bus once each way. numpy reads it through
/// `__array__` (a download), so it also goes wherever an array does.
#[pyclass(name = "DeviceArray", module = "convpool", frozen)]
struct PyDeviceArray {
    held: Held,
    engine: Py<PyEngine>,
}

impl PyDeviceArray {
    /// `held` as a Python object kept by `engine`.
    fn wrap(engine: &Bound<'_, PyEngine>, held: Held) -> PyResult<Py<PyAny>> {
        let array = PyDeviceArray {
            held,
            engine: engine.clone().unbind(),
        };
        Ok(Py::new(engine.py(), array)?.into_any())
    }

    /// The values, if `engine` is the one that keeps them.
    fn owned_by(&self, engine: &Bound<'_, PyEngine>) -> PyResult<&Held> {
        if self.engine.as_ptr() != engine.as_ptr() {
            return Err(PyValueError::new_err(format!(
                "images: this DeviceArray {} is kept by another engine ({}); use that engine, or upload \
                 images.download() to this one",
                shape_text(&self.dims()),
                self.engine.get().engine.describe()
            )));
        }
        Ok(&self.held)
    }

    fn dims(&self) -> [usize; 4] {
        match &self.held {
            Held::Gpu(a) => a.shape(),
            Held::Host(a) => a.dim().into(),
        }
    }
}

#[pymethods]
impl PyDeviceArray {
    /// `(m, h, w, c)`.
    #[getter]
    fn shape(&self) -> (usize, usize, usize, usize) {
        let [m, h, w, c] = self.dims();
        (m, h, w, c)
    }

    /// Always 4: a batch is kept as NHWC.
    #[getter]
    fn ndim(&self) -> usize {
        4
    }

    /// Always float32.
    #[getter]
    fn dtype<'py>(&self, py: Python<'py>) -> Bound<'py, numpy::PyArrayDescr> {
        numpy::dtype::<f32>(py)
    }

    /// Elements in the batch.
    #[getter]
    fn size(&self) -> usize {
        self.dims().iter().product()
    }

    /// Bytes the batch takes where it is kept.
    #[getter]
    fn nbytes(&self) -> usize {
        self.size() * 4
    }

    /// `'gpu'` or `'cpu'`: where the batch is kept.
    #[getter]
    fn device(&self) -> &'static str {
        match self.held {
            Held::Gpu(_) => "gpu",
            Held::Host(_) => "cpu",
        }
    }

    /// The engine that keeps the batch (and runs the calls made on it).
    #[getter]
    fn engine(&self, py: Python<'_>) -> Py<PyEngine> {
        self.engine.clone_ref(py)
    }

    /// A numpy copy of the batch, `(m, h, w, c)` float32.
    fn download(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let out = match &self.held {
            Held::Gpu(a) => compute(py, || a.download())?,
            Held::Host(a) => a.clone(),
        };
        Ok(out.into_pyarray(py).into_any().unbind())
    }

    /// numpy's array protocol: a download (never a view, so `copy=False`
    /// is refused), cast to `dtype` when one is given.
    #[pyo3(signature = (dtype = None, copy = None))]
    fn __array__<'py>(
        &self,
        py: Python<'py>,
        dtype: Option<Bound<'py, PyAny>>,
        copy: Option<bool>,
    ) -> PyResult<Py<PyAny>> {
        if copy == Some(false) {
            return Err(PyValueError::new_err(
                "copy: a DeviceArray is always copied to the host (copy=False cannot be honoured)",
            ));
        }
        let out = self.download(py)?;
        match given(&dtype) {
            Some(d) => Ok(out.bind(py).call_method1("astype", (d,))?.unbind()),
            None => Ok(out),
        }
    }

    fn __len__(&self) -> usize {
        self.dims()[0]
    }

    fn __repr__(&self) -> String {
        format!(
            "convpool.DeviceArray(shape={}, dtype=float32, device='{}')",
            shape_text(&self.dims()),
            self.device()
        )
    }
}

/// Runs 2-D convolutions and poolings on one device (see the package
/// docstring). Safe to share between Python threads.
#[pyclass(name = "Engine", module = "convpool", frozen)]
struct PyEngine {
    engine: Engine,
}

impl PyEngine {
    fn run_conv(
        &self,
        py: Python<'_>,
        x: &Images<'_>,
        k: &F32<'_>,
        b: Option<&F32<'_>>,
        spec: &Conv2dSpec,
    ) -> PyResult<(Array4<f32>, usize)> {
        let (xv, kv) = (x.view(), k.view());
        let rank = kv.ndim();
        let bv = bias_view(b)?;
        let engine = &self.engine;
        let out = compute(py, || {
            let k4 = kernels4(kv)?;
            match xv {
                ImagesView::F32(x) => conv_pixels(engine, images4(x)?, k4, bv.as_ref(), spec),
                ImagesView::U8(x) => conv_pixels(engine, images4(x)?, k4, bv.as_ref(), spec),
                ImagesView::U16(x) => conv_pixels(engine, images4(x)?, k4, bv.as_ref(), spec),
            }
        })?;
        Ok((out, rank))
    }

    /// The images argument: uint8 and uint16 arrays kept as they are on a
    /// GPU engine; everything else as float32.
    fn images<'py>(&self, obj: &Bound<'py, PyAny>) -> PyResult<Images<'py>> {
        let readonly = |e: numpy::BorrowError| PyValueError::new_err(format!("images: {e}"));
        if self.engine.is_gpu() {
            if let Ok(a) = obj.cast::<PyArrayDyn<u8>>() {
                return a.try_readonly().map(Images::U8).map_err(readonly);
            }
            if let Ok(a) = obj.cast::<PyArrayDyn<u16>>() {
                return a.try_readonly().map(Images::U16).map_err(readonly);
            }
        }
        as_f32("images", obj).map(Images::F32)
    }

    fn run_pool(&self, py: Python<'_>, x: &Images<'_>, spec: &Pool2dSpec, return_indices: bool) -> PyResult<Py<PyAny>> {
        let engine = &self.engine;
        if !return_indices {
            let xv = x.view();
            let out = compute(py, || match xv {
                ImagesView::F32(x) => engine.pool2d(images4(x)?, spec),
                ImagesView::U8(x) => engine.pool2d_pixels(images4(x)?, spec),
                ImagesView::U16(x) => engine.pool2d_pixels(images4(x)?, spec),
            })?;
            return Ok(out.into_pyarray(py).into_any().unbind());
        }
        // The argmax reads float32: callers asking for it pass float32.
        let Images::F32(f) = x else {
            return Err(PyRuntimeError::new_err(
                "convpool internal error: integer images for the argmax",
            ));
        };
        if spec.mode != PoolMode::Max {
            return Err(PyValueError::new_err(format!(
                "return_indices: needs mode='max', got mode='{}'",
                spec.mode
            )));
        }
        let xv = f.view();
        let (values, indices) = compute(py, || engine.max_pool2d_with_indices(images4(xv)?, spec))?;
        let pair = PyTuple::new(
            py,
            [values.into_pyarray(py).into_any(), indices.into_pyarray(py).into_any()],
        )?;
        Ok(pair.into_any().unbind())
    }
}

#[pymethods]
impl PyEngine {
    /// `Engine(device='auto', verify=False)`: `'auto'` takes a hardware GPU
    /// when one works and otherwise the CPU; `'gpu'` insists on a GPU
    /// (software adapters included); `'cpu'` the fast CPU path. `verify`
    /// checks every GPU result against the float64 CPU reference.
    #[new]
    #[pyo3(signature = (device = "auto", verify = false))]
    fn new(py: Python<'_>, device: &str, verify: bool) -> PyResult<Self> {
        let device: Device = device.parse().map_err(py_err)?;
        let engine = compute(py, || {
            Engine::with_options(EngineOptions {
                device,
                verify,
                ..Default::default()
            })
        })?;
        Ok(PyEngine { engine })
    }

    /// Which device runs the calls, and why it was chosen.
    fn describe(&self) -> String {
        self.engine.describe().to_string()
    }

    /// `'gpu'` or `'cpu'`: where this engine's calls run.
    #[getter]
    fn device(&self) -> &'static str {
        if self.engine.is_gpu() {
            "gpu"
        } else {
            "cpu"
        }
    }

    fn __repr__(&self) -> String {
        format!("convpool.Engine({:?})", self.engine.describe())
    }

    /// 2-D convolution (cross-correlation) of NHWC images with HWIO kernels;
    /// see `convpool.conv2d`. A `DeviceArray` in gives a `DeviceArray` out,
    /// computed where it is kept.
    #[pyo3(signature = (images, kernels, *, padding = None, stride = None, dilation = None,
                        padding_mode = None, groups = None, bias = None, activation = None))]
    #[allow(clippy::too_many_arguments)]
    fn conv2d<'py>(
        slf: &Bound<'py, Self>,
        images: &Bound<'py, PyAny>,
        kernels: &Bound<'py, PyAny>,
        padding: Option<Bound<'py, PyAny>>,
        stride: Option<Bound<'py, PyAny>>,
        dilation: Option<Bound<'py, PyAny>>,
        padding_mode: Option<Bound<'py, PyAny>>,
        groups: Option<Bound<'py, PyAny>>,
        bias: Option<Bound<'py, PyAny>>,
        activation: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let spec = ConvArgs {
            padding,
            stride,
            dilation,
            padding_mode,
            groups,
            activation,
        }
        .spec()?;
        let k = as_f32("kernels", kernels)?;
        let b = given(&bias).map(|b| as_f32("bias", b)).transpose()?;
        if let Ok(held) = images.cast::<PyDeviceArray>() {
            let held = held.get().owned_by(slf)?;
            let (kv, bv) = (k.view(), bias_view(b.as_ref())?);
            let engine = &me.engine;
            let out = compute(py, || {
                let k4 = kernels4(kv)?;
                Ok(match (held, bv) {
                    (Held::Gpu(x), Some(b)) => Held::Gpu(engine.conv2d_bias_resident(x, k4, b, &spec)?),
                    (Held::Gpu(x), None) => Held::Gpu(engine.conv2d_resident(x, k4, &spec)?),
                    (Held::Host(x), b) => Held::Host(conv_pixels(engine, x.view(), k4, b.as_ref(), &spec)?),
                })
            })?;
            return PyDeviceArray::wrap(slf, out);
        }
        let x = me.images(images)?;
        let (out, rank) = me.run_conv(py, &x, &k, b.as_ref(), &spec)?;
        Ok(conv_output(py, out, rank))
    }

    /// 2-D max or average pooling of NHWC images; see `convpool.pool2d`. A
    /// `DeviceArray` in gives a `DeviceArray` out (not with
    /// `return_indices`).
    #[pyo3(signature = (images, *, window = None, stride = None, padding = None, mode = None,
                        ceil_mode = false, count_include_pad = false, dilation = None,
                        output_size = None, return_indices = false))]
    #[allow(clippy::too_many_arguments)]
    fn pool2d<'py>(
        slf: &Bound<'py, Self>,
        images: &Bound<'py, PyAny>,
        window: Option<Bound<'py, PyAny>>,
        stride: Option<Bound<'py, PyAny>>,
        padding: Option<Bound<'py, PyAny>>,
        mode: Option<Bound<'py, PyAny>>,
        ceil_mode: bool,
        count_include_pad: bool,
        dilation: Option<Bound<'py, PyAny>>,
        output_size: Option<Bound<'py, PyAny>>,
        return_indices: bool,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let spec = PoolArgs {
            window,
            output_size,
            stride,
            padding,
            mode,
            ceil_mode,
            count_include_pad,
            dilation,
        }
        .spec()?;
        if let Ok(held) = images.cast::<PyDeviceArray>() {
            if return_indices {
                return Err(PyValueError::new_err(
                    "return_indices: the argmax is not kept on the device; pass images.download()",
                ));
            }
            let held = held.get().owned_by(slf)?;
            let engine = &me.engine;
            let out = compute(py, || {
                Ok(match held {
                    Held::Gpu(x) => Held::Gpu(engine.pool2d_resident(x, &spec)?),
                    Held::Host(x) => Held::Host(engine.pool2d(x, &spec)?),
                })
            })?;
            return PyDeviceArray::wrap(slf, out);
        }
        let x = if return_indices {
            Images::F32(as_f32("images", images)?)
        } else {
            me.images(images)?
        };
        me.run_pool(py, &x, &spec, return_indices)
    }

    /// `upload(images)`: the images as a `DeviceArray`, kept where this
    /// engine computes (GPU memory; host memory on a CPU engine), so that
    /// `conv2d` and `pool2d` chain on it without a round trip through the
    /// host. `(m, h, w)` images are kept as `(m, h, w, 1)`. On a GPU, uint8
    /// and uint16 images cross as their own bytes and are widened there.
    fn upload<'py>(slf: &Bound<'py, Self>, images: &Bound<'py, PyAny>) -> PyResult<Py<PyAny>> {
        let me = slf.get();
        let x = me.images(images)?;
        let xv = x.view();
        let engine = &me.engine;
        let held = compute(slf.py(), || {
            Ok(match xv {
                ImagesView::F32(x) if engine.is_gpu() => Held::Gpu(engine.upload(images4(x)?)?),
                ImagesView::F32(x) => Held::Host(images4(x)?.as_standard_layout().into_owned()),
                ImagesView::U8(x) => Held::Gpu(engine.upload_pixels(images4(x)?)?),
                ImagesView::U16(x) => Held::Gpu(engine.upload_pixels(images4(x)?)?),
            })
        })?;
        PyDeviceArray::wrap(slf, held)
    }

    /// Task 0: valid convolution of grayscale images `(m, h, w)` with a
    /// kernel `(kh, kw)`.
    fn convolve_grayscale_valid<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernel: &Bound<'py, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        self.grayscale(py, images, kernel, Conv2dSpec::new(Padding::Valid))
    }

    /// Task 1: same convolution of grayscale images; output `(m, h, w)`.
    fn convolve_grayscale_same<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernel: &Bound<'py, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        // The exercise's centring: what Seed::convolve_grayscale_same uses.
        self.grayscale(py, images, kernel, Conv2dSpec::new(Padding::SameLower))
    }

    /// Task 2: grayscale convolution with `padding = (ph, pw)` zeros.
    fn convolve_grayscale_padding<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernel: &Bound<'py, PyAny>,
        padding: &Bound<'py, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        let (ph, pw) = match numbers("padding", padding)? {
            Some(v) if v.len() == 2 => (v[0], v[1]),
            _ => {
                return Err(PyValueError::new_err(format!(
                    "padding: expected a tuple (ph, pw), got {}",
                    padding.repr()?
                )))
            }
        };
        self.grayscale(py, images, kernel, Conv2dSpec::new(Padding::Symmetric(ph, pw)))
    }

    /// Task 3: grayscale convolution with `padding` ('same', 'valid' or
    /// `(ph, pw)`) and `stride`.
    #[pyo3(signature = (images, kernel, padding = None, stride = None))]
    fn convolve_grayscale<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernel: &Bound<'py, PyAny>,
        padding: Option<Bound<'py, PyAny>>,
        stride: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let spec = seed_spec(padding, stride)?;
        self.grayscale(py, images, kernel, spec)
    }

    /// Task 4: images `(m, h, w, c)` with one kernel `(kh, kw, c)`; output
    /// `(m, oh, ow)`.
    #[pyo3(signature = (images, kernel, padding = None, stride = None))]
    fn convolve_channels<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernel: &Bound<'py, PyAny>,
        padding: Option<Bound<'py, PyAny>>,
        stride: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let spec = seed_spec(padding, stride)?;
        self.seed_conv(py, images, kernel, (4, "(m, h, w, c)"), (3, "(kh, kw, c)"), spec)
    }

    /// Task 5: images `(m, h, w, c)` with kernels `(kh, kw, c, nc)`; output
    /// `(m, oh, ow, nc)`.
    #[pyo3(signature = (images, kernels, padding = None, stride = None))]
    fn convolve<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernels: &Bound<'py, PyAny>,
        padding: Option<Bound<'py, PyAny>>,
        stride: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let spec = seed_spec(padding, stride)?;
        self.seed_conv(py, images, kernels, (4, "(m, h, w, c)"), (4, "(kh, kw, c, nc)"), spec)
    }

    /// Task 6: pooling of `(m, h, w, c)` with window `kernel_shape` and
    /// `stride`, no padding; `mode` 'max' or 'avg'.
    #[pyo3(signature = (images, kernel_shape, stride, mode = None))]
    fn pool<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernel_shape: &Bound<'py, PyAny>,
        stride: &Bound<'py, PyAny>,
        mode: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let mode = match mode {
            Some(m) => parsed::<PoolMode>(&m, "mode")?,
            None => PoolMode::Max,
        };
        let (kh, kw) = pair("kernel_shape", kernel_shape)?;
        let (sh, sw) = pair("stride", stride)?;
        let x = self.images(images)?;
        need_rank("images", &x.shape(), 4, "(m, h, w, c)")?;
        let spec = Pool2dSpec::new(mode, kh, kw).with_stride(sh, sw);
        self.run_pool(py, &x, &spec, false)
    }

    /// Times the Rust call alone (inputs already float32, no Python in the
    /// loop): `repeats` wall-clock seconds of `conv2d`, for the benchmark
    /// that measures what the Python layer adds.
    #[pyo3(signature = (images, kernels, repeats, *, padding = None, stride = None))]
    fn _time_conv2d<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernels: &Bound<'py, PyAny>,
        repeats: usize,
        padding: Option<Bound<'py, PyAny>>,
        stride: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Vec<f64>> {
        let spec = ConvArgs {
            padding,
            stride,
            ..Default::default()
        }
        .spec()?;
        let x = as_f32("images", images)?;
        let k = as_f32("kernels", kernels)?;
        let (xv, kv) = (x.view(), k.view());
        let engine = &self.engine;
        compute(py, || {
            let (x4, k4) = (images4(xv)?, kernels4(kv)?);
            (0..repeats)
                .map(|_| {
                    let start = std::time::Instant::now();
                    engine.conv2d(x4, k4, &spec)?;
                    Ok(start.elapsed().as_secs_f64())
                })
                .collect()
        })
    }

    /// Times the Rust call alone: `repeats` wall-clock seconds of the seed
    /// pooling (window, stride, mode), as `_time_conv2d`.
    #[pyo3(signature = (images, kernel_shape, stride, mode, repeats))]
    fn _time_pool<'py>(
        &self,
        py: Python<'py>,
        images: &Bound<'py, PyAny>,
        kernel_shape: &Bound<'py, PyAny>,
        stride: &Bound<'py, PyAny>,
        mode: &Bound<'py, PyAny>,
        repeats: usize,
    ) -> PyResult<Vec<f64>> {
        let (kh, kw) = pair("kernel_shape", kernel_shape)?;
        let (sh, sw) = pair("stride", stride)?;
        let spec = Pool2dSpec::new(parsed::<PoolMode>(mode, "mode")?, kh, kw).with_stride(sh, sw);
        let x = as_f32("images", images)?;
        let xv = x.view();
        let engine = &self.engine;
        compute(py, || {
            let x4 = images4(xv)?;
            (0..repeats)
                .map(|_| {
                    let start = std::time::Instant::now();
                    engine.pool2d(x4, &spec)?;
                    Ok(start.elapsed().as_secs_f64())
                })
                .collect()
        })
    }
}

impl PyEngine {
    fn grayscale(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        kernel: &Bound<'_, PyAny>,
        spec: Conv2dSpec,
    ) -> PyResult<Py<PyAny>> {
        self.seed_conv(py, images, kernel, (3, "(m, h, w)"), (2, "(kh, kw)"), spec)
    }

    /// A seed convolution: the exercise's fixed ranks, then the general call.
    fn seed_conv(
        &self,
        py: Python<'_>,
        images: &Bound<'_, PyAny>,
        kernels: &Bound<'_, PyAny>,
        images_rank: (usize, &str),
        kernels_rank: (usize, &str),
        spec: Conv2dSpec,
    ) -> PyResult<Py<PyAny>> {
        let x = self.images(images)?;
        let k = as_f32("kernel", kernels)?;
        need_rank("images", &x.shape(), images_rank.0, images_rank.1)?;
        need_rank(
            if kernels_rank.0 == 4 { "kernels" } else { "kernel" },
            k.view().shape(),
            kernels_rank.0,
            kernels_rank.1,
        )?;
        let (out, rank) = self.run_conv(py, &x, &k, None, &spec)?;
        Ok(conv_output(py, out, rank))
    }
}

/// A convolution of images of any [`Pixel`] type, with or without a bias.
fn conv_pixels<T: Pixel>(
    engine: &Engine,
    x: ArrayView4<'_, T>,
    k: ArrayView4<'_, f32>,
    bias: Option<&ArrayView1<'_, f32>>,
    spec: &Conv2dSpec,
) -> convpool::Result<Array4<f32>> {
    match bias {
        Some(b) => engine.conv2d_bias_pixels(x, k, b, spec),
        None => engine.conv2d_pixels(x, k, spec),
    }
}

/// The exercise's `padding='same', stride=(1, 1)` defaults.
fn seed_spec(padding: Option<Bound<'_, PyAny>>, stride: Option<Bound<'_, PyAny>>) -> PyResult<Conv2dSpec> {
    let padding = match padding {
        Some(p) => seed_padding(&p)?,
        None => SeedPadding::Same,
    };
    let (sh, sw) = match stride {
        Some(s) => pair("stride", &s)?,
        None => (1, 1),
    };
    Ok(Conv2dSpec::new(padding.into()).with_stride(sh, sw))
}

/// The plan of a convolution or pooling as the dict `convpool.dask` reads.
fn plan<'py>(
    py: Python<'py>,
    pads: Pads,
    output_shape: [usize; 4],
    extent: (usize, usize),
    stride: (usize, usize),
) -> PyResult<Bound<'py, PyDict>> {
    let plan = PyDict::new(py);
    plan.set_item("pads", pads.tblr())?;
    plan.set_item("output_shape", output_shape)?;
    plan.set_item("extent", extent)?;
    plan.set_item("stride", stride)?;
    Ok(plan)
}

/// The pads and output shape a convolution would have, from the one
/// geometry every path uses: `{'pads': (top, bottom, left, right),
/// 'output_shape': (m, oh, ow, nc), 'extent': (ekh, ekw), 'stride': (sh,
/// sw)}`. What `convpool.dask` plans its chunks and halos from.
#[pyfunction]
#[pyo3(signature = (images_shape, kernels_shape, *, padding = None, stride = None, dilation = None,
                    padding_mode = None, groups = None, activation = None))]
#[allow(clippy::too_many_arguments)]
fn _conv_plan<'py>(
    py: Python<'py>,
    images_shape: Vec<usize>,
    kernels_shape: Vec<usize>,
    padding: Option<Bound<'py, PyAny>>,
    stride: Option<Bound<'py, PyAny>>,
    dilation: Option<Bound<'py, PyAny>>,
    padding_mode: Option<Bound<'py, PyAny>>,
    groups: Option<Bound<'py, PyAny>>,
    activation: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let spec = ConvArgs {
        padding,
        stride,
        dilation,
        padding_mode,
        groups,
        activation,
    }
    .spec()?;
    let nhwc = images_nhwc(&images_shape).map_err(py_err)?;
    let hwio = kernels_hwio(&kernels_shape).map_err(py_err)?;
    let g = spec.resolve(nhwc, hwio).map_err(py_err)?;
    plan(py, g.pads(), g.output_shape(), g.extent(), (g.sh(), g.sw()))
}

/// The pads, output shape, window extent and stride of a pooling (see
/// `_conv_plan`), with `'adaptive'` telling whether windows follow
/// `output_size` instead.
#[pyfunction]
#[pyo3(signature = (images_shape, *, window = None, stride = None, padding = None, mode = None,
                    ceil_mode = false, count_include_pad = false, dilation = None, output_size = None))]
#[allow(clippy::too_many_arguments)]
fn _pool_plan<'py>(
    py: Python<'py>,
    images_shape: Vec<usize>,
    window: Option<Bound<'py, PyAny>>,
    stride: Option<Bound<'py, PyAny>>,
    padding: Option<Bound<'py, PyAny>>,
    mode: Option<Bound<'py, PyAny>>,
    ceil_mode: bool,
    count_include_pad: bool,
    dilation: Option<Bound<'py, PyAny>>,
    output_size: Option<Bound<'py, PyAny>>,
) -> PyResult<Bound<'py, PyDict>> {
    let spec = PoolArgs {
        window,
        output_size,
        stride,
        padding,
        mode,
        ceil_mode,
        count_include_pad,
        dilation,
    }
    .spec()?;
    let nhwc = images_nhwc(&images_shape).map_err(py_err)?;
    let g = spec.resolve(nhwc).map_err(py_err)?;
    let plan = plan(py, g.pads(), g.output_shape(), g.extent(), (g.sh(), g.sw()))?;
    plan.set_item("adaptive", g.adaptive())?;
    Ok(plan)
}

/// The GPU adapters wgpu finds, one dict each (name, backend, device_type,
/// driver, software, and the limits that decide chunking).
#[pyfunction]
fn devices(py: Python<'_>) -> PyResult<Bound<'_, PyList>> {
    let adapters = compute(py, || Ok(convpool::gpu::list_adapters()))?;
    let list = PyList::empty(py);
    for a in adapters {
        let d = PyDict::new(py);
        d.set_item("name", a.name)?;
        d.set_item("backend", a.backend)?;
        d.set_item("device_type", a.device_type)?;
        d.set_item("driver", a.driver)?;
        d.set_item("software", a.software)?;
        d.set_item("max_storage_buffer_binding_size", a.max_storage_buffer_binding_size)?;
        d.set_item("max_buffer_size", a.max_buffer_size)?;
        d.set_item(
            "max_compute_workgroups_per_dimension",
            a.max_compute_workgroups_per_dimension,
        )?;
        list.append(d)?;
    }
    Ok(list)
}

#[pymodule]
fn _convpool(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEngine>()?;
    m.add_class::<PyDeviceArray>()?;
    m.add_function(wrap_pyfunction!(devices, m)?)?;
    m.add_function(wrap_pyfunction!(_conv_plan, m)?)?;
    m.add_function(wrap_pyfunction!(_pool_plan, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
