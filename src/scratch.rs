//! Scratch space for unit tests: a fresh directory under the system temp dir, removed with
//! everything in it when the guard drops, so test runs leave nothing behind.

use std::path::{Path, PathBuf};

/// A directory that exists for as long as this guard does.
pub(crate) struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// Creates `<tmp>/l402-<tag>-<random>`.
    pub(crate) fn new(tag: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("l402-{tag}-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).expect("create a scratch directory under the temp dir");
        Scratch { dir }
    }

    /// A path named `name` inside the directory (not created).
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
