//! Files in and out for every subcommand: MNIST-shaped IDX data checked
//! before any work, output paths checked before any work, and every output
//! written through [`write_atomic`] (a temporary file in the same directory,
//! then a rename), so a failure never leaves a half-written file.

use std::path::Path;

use rquant_nn::mnist::Dataset;

pub use rquant_nn::io::write_atomic;

/// `{dir}/{kind}-images-idx3-ubyte` and labels, which must hold at least one
/// 28×28 image (the CNN's input); errors name the file.
pub fn load_28x28(dir: &Path, kind: &str, limit: Option<usize>) -> Result<Dataset, String> {
    let ds = Dataset::load(dir, kind, limit).map_err(|e| e.to_string())?;
    let images = dir.join(format!("{kind}-images-idx3-ubyte"));
    if (ds.rows, ds.cols) != (28, 28) {
        return Err(format!(
            "{}: dims: images are {}x{}, the model needs 28x28",
            images.display(),
            ds.rows,
            ds.cols
        ));
    }
    if ds.is_empty() {
        return Err(format!("{}: dims: no images", images.display()));
    }
    Ok(ds)
}

/// Fail early (before minutes of work) when `path` cannot be written: its
/// directory must exist and it must not be a directory itself.
pub fn check_output(path: &Path) -> Result<(), String> {
    let shown = path.display();
    if path.file_name().is_none() || path.is_dir() {
        return Err(format!("{shown}: is a directory, not a file name"));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    if !dir.is_dir() {
        return Err(format!(
            "{shown}: directory {} does not exist",
            dir.display()
        ));
    }
    Ok(())
}
