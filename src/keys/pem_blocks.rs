//! Finds PEM blocks in a file the way Go's `encoding/pem.Decode` does, keeping the ones it rejects.
//!
//! kube-apiserver loops over `pem.Decode`, which silently steps over anything it cannot frame or
//! decode and goes on from the line after that `-----BEGIN`. keyrot scans the same way, but
//! keeps every rejected candidate with its line number and reason so `keyrot inspect` and the
//! warnings can say what kube ignored. Decoding of a framed block is left to the `pem` crate.

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// One candidate block: where it starts, its label, and its bytes or why Go would skip it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// 1-based line of the `-----BEGIN` line.
    pub line: usize,
    pub label: String,
    pub contents: Result<DecodedBlock, String>,
}

/// A block that framed and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedBlock {
    pub der: zeroize::Zeroizing<Vec<u8>>,
    /// True for `Proc-Type: 4,ENCRYPTED`: the bytes are ciphertext and no key parser can use them.
    pub encrypted: bool,
}

/// Every `-----BEGIN` candidate in `data`, in file order.
pub fn scan_pem_blocks(data: &[u8]) -> Vec<PemBlock> {
    let mut blocks = Vec::new();
    let mut pos = 0;
    while let Some(begin) = find_line_start(data, pos, BEGIN) {
        let (type_line, after_type_line) = line_at(data, begin + BEGIN.len());
        let line = 1 + data[..begin].iter().filter(|&&b| b == b'\n').count();
        let Some(label) = type_line.strip_suffix(DASHES) else {
            blocks.push(candidate(
                line,
                type_line,
                Err("BEGIN line does not end with -----"),
            ));
            pos = after_type_line;
            continue;
        };
        match frame_block(data, after_type_line, label) {
            Ok(block_end) => {
                let contents = pem::parse(&data[begin..block_end])
                    .map(|p| DecodedBlock {
                        encrypted: p
                            .headers()
                            .get("Proc-Type")
                            .is_some_and(|v| v.contains("ENCRYPTED")),
                        der: zeroize::Zeroizing::new(p.into_contents()),
                    })
                    .map_err(|e| format!("malformed PEM body: {e}"));
                let resume = if contents.is_ok() {
                    block_end
                } else {
                    after_type_line
                };
                blocks.push(PemBlock {
                    line,
                    label: String::from_utf8_lossy(label).into_owned(),
                    contents,
                });
                pos = resume;
            }
            Err(reason) => {
                blocks.push(candidate(line, label, Err(reason)));
                pos = after_type_line;
            }
        }
    }
    blocks
}

fn candidate(line: usize, label: &[u8], contents: Result<DecodedBlock, &str>) -> PemBlock {
    PemBlock {
        line,
        label: String::from_utf8_lossy(label).into_owned(),
        contents: contents.map_err(str::to_string),
    }
}

/// Checks Go's framing rule: the first `-----END ` after the BEGIN line must carry the same label,
/// then five dashes and only whitespace to the end of its line. Returns the end of that line.
fn frame_block(data: &[u8], body_start: usize, label: &[u8]) -> Result<usize, &'static str> {
    let end = if data[body_start..].starts_with(END) {
        body_start
    } else {
        find(data, body_start, b"\n-----END ")
            .map(|i| i + 1)
            .ok_or("no -----END line (truncated?)")?
    };
    let (end_line, after_end_line) = line_at(data, end + END.len());
    let trailer = end_line
        .strip_prefix(label)
        .and_then(|rest| rest.strip_prefix(DASHES));
    match trailer {
        Some([]) => Ok(after_end_line),
        _ => Err("END line does not match the BEGIN label"),
    }
}

/// The first `needle` at or after `from` that starts a line.
fn find_line_start(data: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    let mut at = from;
    loop {
        let i = find(data, at, needle)?;
        if i == 0 || data[i - 1] == b'\n' {
            return Some(i);
        }
        at = i + 1;
    }
}

fn find(data: &[u8], from: usize, needle: &[u8]) -> Option<usize> {
    data.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// The line starting at `start` with trailing spaces, tabs and CR trimmed (Go's `getLine`),
/// and the index just after its newline.
fn line_at(data: &[u8], start: usize) -> (&[u8], usize) {
    let rest = &data[start.min(data.len())..];
    let (line, next) = match rest.iter().position(|&b| b == b'\n') {
        Some(i) => (&rest[..i], start + i + 1),
        None => (rest, data.len()),
    };
    let trimmed_len = line
        .iter()
        .rposition(|&b| !matches!(b, b' ' | b'\t' | b'\r'))
        .map_or(0, |i| i + 1);
    (&line[..trimmed_len], next)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "-----BEGIN THING-----\nAQID\n-----END THING-----\n";

    fn der_of(block: &PemBlock) -> &[u8] {
        &block.contents.as_ref().unwrap().der
    }

    #[test]
    fn finds_blocks_between_garbage_with_their_lines() {
        let text = format!("garbage\n{GOOD}more garbage\n\n{GOOD}");
        let blocks = scan_pem_blocks(text.as_bytes());
        assert_eq!(blocks.len(), 2);
        assert_eq!((blocks[0].line, blocks[1].line), (2, 7));
        assert_eq!(der_of(&blocks[0]), [1u8, 2, 3]);
        assert_eq!(blocks[0].label, "THING");
    }

    #[test]
    fn a_truncated_block_does_not_hide_the_next_one() {
        let text = format!("-----BEGIN THING-----\nAQID\n{GOOD}");
        let blocks = scan_pem_blocks(text.as_bytes());
        assert_eq!(blocks.len(), 2);
        // Go pairs the first BEGIN with the next END, whose label matches: the body then holds a
        // BEGIN line and is not base64. The scan resumes after the first BEGIN and finds the second.
        assert!(blocks[0].contents.is_err());
        assert_eq!(der_of(&blocks[1]), [1u8, 2, 3]);
    }

    #[test]
    fn mismatched_end_label_is_rejected() {
        let blocks = scan_pem_blocks(b"-----BEGIN A-----\nAQID\n-----END B-----\n");
        assert_eq!(blocks.len(), 1);
        assert_eq!(
            blocks[0].contents,
            Err("END line does not match the BEGIN label".into())
        );
    }

    #[test]
    fn missing_end_is_reported_as_truncated() {
        let blocks = scan_pem_blocks(b"-----BEGIN A-----\nAQID\n");
        assert_eq!(
            blocks[0].contents,
            Err("no -----END line (truncated?)".into())
        );
    }

    #[test]
    fn bad_base64_is_reported() {
        let blocks = scan_pem_blocks(b"-----BEGIN A-----\n!!!!\n-----END A-----\n");
        assert!(
            blocks[0]
                .contents
                .as_ref()
                .unwrap_err()
                .starts_with("malformed PEM body")
        );
    }

    #[test]
    fn crlf_files_and_trailing_spaces_are_read() {
        let blocks = scan_pem_blocks(b"-----BEGIN A----- \r\nAQID\r\n-----END A-----\r\n");
        assert_eq!(der_of(&blocks[0]), [1u8, 2, 3]);
    }

    #[test]
    fn begin_must_start_a_line() {
        assert!(scan_pem_blocks(b"x -----BEGIN A-----\nAQID\n-----END A-----\n").is_empty());
    }

    #[test]
    fn empty_input_has_no_blocks() {
        assert!(scan_pem_blocks(b"").is_empty());
    }
}
