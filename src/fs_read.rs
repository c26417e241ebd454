//! Reading a whole file that another person or program named: regular files only, size capped.
//!
//! A path in a plan or on the command line may be a FIFO (opening it would block until a writer
//! comes), a device such as /dev/zero (endless) or a huge file; each used to make keyrot read
//! forever. Every file keyrot reads whole goes through here.

use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// The most bytes keyrot reads from one file: key bundles, plans, manifests and state files are
/// kilobytes.
pub const MAX_BYTES: u64 = 4 * 1024 * 1024;

/// The file's bytes; an error for anything but a regular file, or one over [`MAX_BYTES`].
pub fn read(path: impl AsRef<Path>) -> io::Result<Vec<u8>> {
    read_capped(path.as_ref(), MAX_BYTES)
}

/// [`read`], as UTF-8 text.
pub fn read_to_string(path: impl AsRef<Path>) -> io::Result<String> {
    String::from_utf8(read(path)?).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        )
    })
}

fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    // Non-blocking, so that opening a FIFO returns at once and fstat can refuse it.
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)?;
    refuse_irregular(&file)?;
    let mut bytes = Vec::new();
    file.take(cap.saturating_add(1)).read_to_end(&mut bytes)?;
    if bytes.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::FileTooLarge,
            format!("larger than {cap} bytes, more than keyrot reads from one file"),
        ));
    }
    Ok(bytes)
}

fn refuse_irregular(file: &File) -> io::Result<()> {
    let kind = file.metadata()?.file_type();
    let what = if kind.is_file() {
        return Ok(());
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else if kind.is_socket() {
        "a socket"
    } else {
        "not a file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("is {what}, not a regular file"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_and_everything_else_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f");
        std::fs::write(&file, b"abc").unwrap();
        assert_eq!(read(&file).unwrap(), b"abc");
        let err = |p: &Path| read(p).unwrap_err().to_string();
        assert_eq!(err(dir.path()), "is a directory, not a regular file");
        assert_eq!(
            err(Path::new("/dev/zero")),
            "is a character device, not a regular file"
        );
        assert_eq!(
            read_capped(&file, 2).unwrap_err().to_string(),
            "larger than 2 bytes, more than keyrot reads from one file"
        );
        assert_eq!(read_capped(&file, 3).unwrap(), b"abc");
    }
}
