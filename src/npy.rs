//! `.npy` files in and out, as the command line uses them.
//!
//! Reading accepts every real numeric dtype numpy writes (float16/32/64,
//! signed and unsigned integers of 8 to 64 bits, either byte order, C or
//! Fortran order) and converts to f32, as SPEC.md "Numbers" asks; booleans,
//! complex numbers, strings and objects are refused with the dtype named.
//! Writing is atomic: a temporary file in the target folder is renamed into
//! place, so a failure never leaves a partial output behind.

use std::fs::File;
use std::io::{BufReader, Read, Seek};
use std::path::Path;

use ndarray::{ArrayD, ArrayViewD, IxDyn, ShapeBuilder};
use ndarray_npy::npy::header::Header;
use ndarray_npy::{ReadNpyError, ReadNpyExt, ReadableElement, WriteNpyExt};

use crate::error::{Error, Result};

fn npy_error(path: &Path, message: impl Into<String>) -> Error {
    Error::Npy {
        path: path.display().to_string(),
        message: one_line(&message.into()),
    }
}

/// A parser message on one line: the header parser reports a syntax error
/// as a drawing over several lines (the header text, a caret, the expected
/// tokens); this keeps its words and position and drops the drawing.
fn one_line(message: &str) -> String {
    let parts: Vec<String> = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|l| {
            l.trim_start_matches("= ")
                .replace(":  --> ", " at ")
                .replace("--> ", "at ")
        })
        .collect();
    parts.join(": ")
}

fn io_error(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

fn describe_read_error(e: ReadNpyError) -> String {
    match e {
        ReadNpyError::MissingData => "the file holds fewer bytes than its header's shape needs (truncated?)".into(),
        ReadNpyError::ExtraBytes(n) => {
            format!("the file holds {n} bytes more than its header's shape needs")
        }
        ReadNpyError::LengthOverflow => "the header's shape is too large".into(),
        ReadNpyError::ParseHeader(e) => format!("not a valid .npy header: {e}"),
        other => format!("not a valid .npy file: {other}"),
    }
}

/// The dtype text of a header, e.g. `<f4`, without Python quotes.
fn descr(header: &Header) -> String {
    header.type_descriptor.to_string().trim_matches('\'').to_string()
}

fn read_typed<T: ReadableElement>(path: &Path) -> Result<ArrayD<T>> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    ArrayD::<T>::read_npy(BufReader::new(file)).map_err(|e| npy_error(path, describe_read_error(e)))
}

/// float16 has no reader in ndarray-npy: decode the raw little/big-endian
/// halves after the header.
fn read_f16(path: &Path, header: &Header, big_endian: bool) -> Result<ArrayD<f32>> {
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let mut reader = BufReader::new(file);
    Header::from_reader(&mut reader).map_err(|e| npy_error(path, format!("not a valid .npy header: {e}")))?;
    let elems = header
        .shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| npy_error(path, "the header's shape is too large"))?;
    let mut bytes = Vec::new();
    reader.read_to_end(&mut bytes).map_err(|e| io_error(path, e))?;
    if bytes.len() != elems * 2 {
        return Err(npy_error(
            path,
            format!(
                "the header's shape {:?} needs {} bytes of float16 data, the file holds {}",
                header.shape,
                elems * 2,
                bytes.len()
            ),
        ));
    }
    let values: Vec<f32> = bytes
        .chunks_exact(2)
        .map(|b| {
            let bits = if big_endian {
                u16::from_be_bytes([b[0], b[1]])
            } else {
                u16::from_le_bytes([b[0], b[1]])
            };
            half::f16::from_bits(bits).to_f32()
        })
        .collect();
    let shape = IxDyn(&header.shape).set_f(header.layout.is_fortran());
    ArrayD::from_shape_vec(shape, values).map_err(|e| npy_error(path, e.to_string()))
}

/// An array read from a `.npy` file: 8- and 16-bit unsigned integers as
/// they are (a GPU engine uploads their own bytes and widens them there,
/// [`crate::Engine::conv2d_pixels`]), every other real dtype as f32.
#[derive(Debug, Clone, PartialEq)]
pub enum NpyArray {
    /// Any real dtype but uint8 and uint16, converted to f32.
    F32(ArrayD<f32>),
    /// uint8.
    U8(ArrayD<u8>),
    /// uint16.
    U16(ArrayD<u16>),
}

impl NpyArray {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            NpyArray::F32(a) => a.shape(),
            NpyArray::U8(a) => a.shape(),
            NpyArray::U16(a) => a.shape(),
        }
    }

    /// The values as f32 (exact for uint8 and uint16).
    pub fn into_f32(self) -> ArrayD<f32> {
        match self {
            NpyArray::F32(a) => a,
            NpyArray::U8(a) => a.mapv(f32::from),
            NpyArray::U16(a) => a.mapv(f32::from),
        }
    }
}

/// Reads a `.npy` file of any real numeric dtype as f32.
pub fn read_f32(path: impl AsRef<Path>) -> Result<ArrayD<f32>> {
    read(path).map(NpyArray::into_f32)
}

/// Reads a `.npy` file of any real numeric dtype, keeping uint8 and uint16
/// as they are; C order either way.
pub fn read(path: impl AsRef<Path>) -> Result<NpyArray> {
    let path = path.as_ref();
    let file = File::open(path).map_err(|e| io_error(path, e))?;
    let file_len = file.metadata().map_err(|e| io_error(path, e))?.len();
    let mut reader = BufReader::new(file);
    let header =
        Header::from_reader(&mut reader).map_err(|e| npy_error(path, format!("not a valid .npy file: {e}")))?;
    let data_len = file_len.saturating_sub(reader.stream_position().map_err(|e| io_error(path, e))?);
    let dtype = descr(&header);
    let (order, code) = match dtype.as_bytes() {
        [o @ (b'<' | b'>' | b'|' | b'='), rest @ ..] => (*o, std::str::from_utf8(rest).unwrap_or("")),
        _ => (b'<', dtype.as_str()),
    };
    let big = order == b'>';
    // Compare the header's claim with the bytes really there before
    // allocating: a hostile header must not make us reserve terabytes.
    let item_bytes: Option<u64> = match code {
        "u1" | "B" | "i1" | "b" => Some(1),
        "f2" | "e" | "u2" | "i2" => Some(2),
        "f4" | "u4" | "i4" => Some(4),
        "f8" | "u8" | "i8" => Some(8),
        _ => None, // refused with its dtype below
    };
    let needed = item_bytes.map(|item| header.shape.iter().try_fold(item, |acc, &d| acc.checked_mul(d as u64)));
    match needed.unwrap_or(Some(0)) {
        None => {
            return Err(npy_error(
                path,
                format!("the header's shape {:?} is too large", header.shape),
            ))
        }
        Some(n) if n > data_len => {
            return Err(npy_error(
                path,
                format!(
                    "the header's shape {:?} needs {n} bytes of data, the file holds {data_len} (truncated?)",
                    header.shape
                ),
            ))
        }
        _ => {}
    }
    let array = match code {
        // No conversion: the array read is the result (no second copy).
        "f4" => NpyArray::F32(read_typed::<f32>(path)?),
        "f8" => NpyArray::F32(read_typed::<f64>(path)?.mapv(|v| v as f32)),
        "f2" | "e" => NpyArray::F32(read_f16(path, &header, big)?),
        "u1" | "B" => NpyArray::U8(standard(read_typed::<u8>(path)?)),
        "i1" | "b" => NpyArray::F32(read_typed::<i8>(path)?.mapv(f32::from)),
        "u2" => NpyArray::U16(standard(read_typed::<u16>(path)?)),
        "i2" => NpyArray::F32(read_typed::<i16>(path)?.mapv(f32::from)),
        "u4" => NpyArray::F32(read_typed::<u32>(path)?.mapv(|v| v as f32)),
        "i4" => NpyArray::F32(read_typed::<i32>(path)?.mapv(|v| v as f32)),
        "u8" => NpyArray::F32(read_typed::<u64>(path)?.mapv(|v| v as f32)),
        "i8" => NpyArray::F32(read_typed::<i64>(path)?.mapv(|v| v as f32)),
        _ => {
            let kind = match code.as_bytes().first() {
                Some(b'b') | Some(b'?') => "boolean",
                Some(b'c') => "complex",
                Some(b'U') | Some(b'S') | Some(b'a') => "string",
                Some(b'O') => "object",
                Some(b'M') | Some(b'm') => "date/time",
                _ => "unsupported",
            };
            return Err(npy_error(
                path,
                format!("dtype {dtype} is {kind}; convpool reads real numbers only (float16/32/64, int8..int64, uint8..uint64)"),
            ));
        }
    };
    Ok(match array {
        NpyArray::F32(a) => NpyArray::F32(standard(a)),
        a => a,
    })
}

/// Fortran-order files arrive with Fortran strides; callers want C order.
fn standard<T: Clone>(array: ArrayD<T>) -> ArrayD<T> {
    if array.is_standard_layout() {
        array
    } else {
        array.as_standard_layout().into_owned()
    }
}

/// Writes `array` as a little-endian f32 `.npy`, atomically: the data goes to
/// a temporary file beside `path` that is renamed into place only once
/// complete.
pub fn write_f32_atomic(path: impl AsRef<Path>, array: ArrayViewD<f32>) -> Result<()> {
    let path = path.as_ref();
    crate::atomic::write_atomic(path, |w| {
        array
            .write_npy(w)
            .map_err(|e| npy_error(path, format!("cannot write: {e}")))
    })
}

/// Writes `array` as a little-endian int64 `.npy` (argmax indices),
/// atomically like [`write_f32_atomic`].
pub fn write_i64_atomic(path: impl AsRef<Path>, array: ArrayViewD<i64>) -> Result<()> {
    let path = path.as_ref();
    crate::atomic::write_atomic(path, |w| {
        array
            .write_npy(w)
            .map_err(|e| npy_error(path, format!("cannot write: {e}")))
    })
}

#[cfg(test)]
mod tests {
    use super::one_line;

    #[test]
    fn a_parser_drawing_becomes_one_line() {
        let drawn = "error parsing metadata dict: syntax error:  --> 1:62\n  |\n1 | {'descr': '<f4', 'shape': (1, 4], }\n  |     ^---\n  |\n  = expected digit";
        assert_eq!(
            one_line(drawn),
            "error parsing metadata dict: syntax error at 1:62: expected digit"
        );
        assert_eq!(one_line("plain"), "plain");
    }
}
