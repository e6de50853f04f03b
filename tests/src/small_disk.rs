//! A small filesystem of the test's own (a tmpfs mounted in a temporary
//! directory, which needs root) that a test can fill to the last byte and
//! free again: a disk running full under a service.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    /// Mounts a tmpfs of `megabytes`: `None` outside CI when it cannot be
    /// mounted (not root); in CI that is a failure.
    pub fn mount(megabytes: u32) -> Option<Self> {
        let dir = tempfile::tempdir().expect("temp dir");
        let size = format!("size={megabytes}m");
        let mounted = Command::new("mount").args(["-t", "tmpfs", "-o", &size, "tmpfs"]).arg(dir.path()).output();
        match mounted {
            Ok(out) if out.status.success() => Some(Self { dir }),
            other => {
                let why = other.map_or_else(|e| e.to_string(), |out| String::from_utf8_lossy(&out.stderr).into_owned());
                assert!(!crate::in_ci(), "cannot mount a tmpfs (CI requires root): {why}");
                eprintln!("cannot mount a tmpfs ({why}); skipping this test outside CI");
                None
            }
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn filler(&self) -> PathBuf {
        self.dir.path().join("filler")
    }

    /// Takes every free byte.
    pub fn fill(&self) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.filler()).expect("filler file");
        let block = vec![0_u8; 64 * 1024];
        while file.write_all(&block).is_ok() {}
        let mut byte = [0_u8; 1];
        while file.write_all(&byte).is_ok() {
            byte[0] = 1;
        }
    }

    /// Gives the space back.
    pub fn free(&self) {
        let _ = std::fs::remove_file(self.filler());
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}
