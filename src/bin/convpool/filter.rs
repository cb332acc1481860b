//! `convpool filter`: photographs in, filtered PNGs out, one file or a folder.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

use convpool::filter::{self, FilterKernel, Image, Pipeline, Scale};
use convpool::{Device, Engine, Error, Padding, PaddingMode};

use super::FilterArgs;

/// Images of one size share one upload, this many at most.
const BATCH: usize = 16;

fn is_image(p: &Path) -> bool {
    p.is_file()
        && p.extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| matches!(e.to_ascii_lowercase().as_str(), "png" | "jpg" | "jpeg"))
}

/// The files an `--input` names, and whether it named several (folder mode).
fn inputs(input: &str) -> Result<(Vec<PathBuf>, bool), Error> {
    let path = Path::new(input);
    if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .map_err(|source| Error::Io {
                path: input.to_string(),
                source,
            })?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| is_image(p))
            .collect();
        files.sort();
        return Ok((files, true));
    }
    if input.contains(['*', '?', '[']) && !path.exists() {
        let pattern = glob::glob(input).map_err(|e| Error::invalid("input", format!("bad glob {input:?}: {e}")))?;
        let mut files: Vec<PathBuf> = pattern.filter_map(|p| p.ok()).filter(|p| is_image(p)).collect();
        files.sort();
        return Ok((files, true));
    }
    Ok((vec![path.to_path_buf()], false))
}

/// Output file of each input in folder mode: `DIR/<stem>.png`, or
/// `DIR/<name>.png` where two inputs share a stem.
fn out_paths(files: &[PathBuf], dir: &Path) -> Vec<PathBuf> {
    let mut seen = HashSet::new();
    let dup: HashSet<String> = files
        .iter()
        .filter_map(|f| f.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .filter(|s| !seen.insert(s.clone()))
        .collect();
    files
        .iter()
        .map(|f| {
            let stem = f
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_default();
            let name = if dup.contains(&stem) {
                f.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or(stem)
            } else {
                stem
            };
            dir.join(format!("{name}.png"))
        })
        .collect()
}

/// An error about one input, naming the file once.
fn about(input: &Path, e: &Error) -> String {
    let text = e.to_string();
    if text.contains(&input.display().to_string()) {
        text
    } else {
        format!("{}: {text}", input.display())
    }
}

/// Progress as a bar on a terminal, as plain lines otherwise.
enum Progress {
    Bar(indicatif::ProgressBar),
    Lines { total: usize, done: usize },
    Quiet,
}

impl Progress {
    fn new(total: usize, folder: bool) -> Self {
        if !folder {
            Progress::Quiet
        } else if std::io::stderr().is_terminal() {
            let bar = indicatif::ProgressBar::new(total as u64);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} images, {per_sec}, eta {eta} {msg}")
                    .expect("valid template"),
            );
            Progress::Bar(bar)
        } else {
            Progress::Lines { total, done: 0 }
        }
    }

    fn image(&mut self, input: &Path, result: Result<&Path, &Error>) {
        match self {
            Progress::Bar(bar) => {
                if let Err(e) = result {
                    bar.println(format!("convpool: error: {}", about(input, e)));
                }
                bar.inc(1);
            }
            Progress::Lines { total, done } => {
                *done += 1;
                match result {
                    Ok(out) => eprintln!("convpool: [{done}/{total}] {} -> {}", input.display(), out.display()),
                    Err(e) => eprintln!("convpool: [{done}/{total}] error: {}", about(input, e)),
                }
            }
            Progress::Quiet => {}
        }
    }

    fn finish(&self) {
        if let Progress::Bar(bar) = self {
            bar.finish_and_clear();
        }
    }
}

/// Runs the command; returns the exit code (1 when any image failed).
pub fn run(args: &FilterArgs) -> Result<i32, Error> {
    // Everything that can be checked is checked before an image is read.
    let kernels = args
        .kernels
        .iter()
        .map(|k| k.parse::<FilterKernel>())
        .collect::<Result<Vec<_>, _>>()?;
    let pipeline = Pipeline {
        kernels,
        pool: args.pool.as_deref().map(filter::parse_pool).transpose()?,
        padding: args.padding.parse::<Padding>()?,
        border: args.border.parse::<PaddingMode>()?,
        scale: args.scale.as_deref().map(str::parse::<Scale>).transpose()?,
    };
    let device: Device = args.device.parse()?;
    let (files, folder) = inputs(&args.input)?;
    if files.is_empty() {
        return Err(Error::invalid(
            "input",
            format!("{:?} names no PNG or JPEG file", args.input),
        ));
    }
    let outs = if folder || args.out.is_dir() {
        if !folder {
            out_paths(&files, &args.out)
        } else {
            std::fs::create_dir_all(&args.out).map_err(|source| Error::Io {
                path: args.out.display().to_string(),
                source,
            })?;
            out_paths(&files, &args.out)
        }
    } else {
        vec![args.out.clone()]
    };
    let engine = Engine::new(device)?;
    let start = Instant::now();
    let mut progress = Progress::new(files.len(), folder);
    let mut outcome = Outcome::default();
    // Consecutive images of one size and depth form a batch.
    let mut pending: Vec<(usize, Image)> = Vec::new();
    let flush = |pending: &mut Vec<(usize, Image)>, progress: &mut Progress, outcome: &mut Outcome| {
        if pending.is_empty() {
            return;
        }
        let images: Vec<&Image> = pending.iter().map(|(_, im)| im).collect();
        // On a GPU the samples cross as their own bytes (a quarter or half
        // of f32's); the CPU reads the f32 batch.
        let result = if engine.is_gpu() {
            filter::stack_samples(&images).and_then(|batch| pipeline.run_samples(&engine, &batch))
        } else {
            filter::stack(&images).and_then(|batch| pipeline.run(&engine, batch))
        };
        for (b, (i, im)) in pending.iter().enumerate() {
            let written = result.as_ref().map_err(clone_error).and_then(|batch| {
                let values = filter::image_of(batch, b);
                let pixels = filter::to_pixels(
                    &values,
                    pipeline.scale(),
                    filter::value_range(&im.pixels),
                    im.max_value(),
                );
                filter::save_png(&outs[*i], &pixels, im.sixteen_bit).map(|()| outs[*i].clone())
            });
            progress.image(&files[*i], written.as_deref());
            if let Err(e) = written {
                outcome.fail(e);
            }
        }
        pending.clear();
    };
    for (i, file) in files.iter().enumerate() {
        match filter::load_image(file) {
            Ok(im) => {
                let same = pending
                    .first()
                    .is_none_or(|(_, p)| p.pixels.dim() == im.pixels.dim() && p.sixteen_bit == im.sixteen_bit);
                if !same || pending.len() == BATCH {
                    flush(&mut pending, &mut progress, &mut outcome);
                }
                pending.push((i, im));
            }
            Err(e) => {
                progress.image(file, Err(&e));
                outcome.fail(e);
            }
        }
    }
    flush(&mut pending, &mut progress, &mut outcome);
    let Outcome { failed, last_error } = outcome;
    progress.finish();
    let secs = start.elapsed().as_secs_f64();
    if !folder {
        return match last_error {
            Some(e) => Err(e),
            None => {
                eprintln!(
                    "convpool: {} -> {} on {} in {secs:.3} s",
                    files[0].display(),
                    outs[0].display(),
                    engine.describe()
                );
                Ok(0)
            }
        };
    }
    let done = files.len() - failed;
    eprintln!(
        "convpool: filtered {done} of {} images in {secs:.2} s ({:.1} images/s) on {}{}",
        files.len(),
        done as f64 / secs.max(1e-9),
        engine.describe(),
        if failed > 0 {
            format!("; {failed} failed")
        } else {
            String::new()
        }
    );
    Ok(if failed > 0 { 1 } else { 0 })
}

/// Failures so far, and the last error (the one a single-file run reports).
#[derive(Default)]
struct Outcome {
    failed: usize,
    last_error: Option<Error>,
}

impl Outcome {
    fn fail(&mut self, e: Error) {
        self.failed += 1;
        self.last_error = Some(e);
    }
}

/// A copy of an error for a second report (errors hold I/O errors, which
/// do not clone).
fn clone_error(e: &Error) -> Error {
    Error::invalid("filter", e.to_string())
}
