//! Finds PEM blocks in a file the way Go's `encoding/pem.Decode` does, keeping the ones it rejects.
//!
//! kube-apiserver loops over `pem.Decode`, which silently steps over anything it cannot frame or
//! decode and goes on from the line after that `-----BEGIN`. keyrot scans the same way, but
//! keeps every rejected candidate with its line number and reason so `keyrot inspect` and the
//! warnings can say what kube ignored. A framed block is decoded as Go does: `Key: value` header
//! lines first, then the body as base64 with spaces, tabs and line breaks ignored.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

const BEGIN: &[u8] = b"-----BEGIN ";
const END: &[u8] = b"-----END ";
const DASHES: &[u8] = b"-----";

/// One candidate block: where it starts, its label, and its bytes or why Go would skip it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PemBlock {
    /// 1-based line of the `-----BEGIN` line.
    pub line: usize,
    /// The bytes of the block in the file, from `-----BEGIN` to the end of the END line (just the
    /// BEGIN line for a block Go rejects): lets a bundle be rewritten keeping blocks byte for byte.
    pub span: std::ops::Range<usize>,
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
                begin..after_type_line,
                type_line,
                Err("BEGIN line does not end with -----"),
            ));
            pos = after_type_line;
            continue;
        };
        match frame_block(data, after_type_line, label) {
            Ok((body_end, block_end)) => {
                let contents = decode_block(&data[after_type_line..body_end]);
                let resume = if contents.is_ok() {
                    block_end
                } else {
                    after_type_line
                };
                blocks.push(PemBlock {
                    line,
                    span: begin..block_end,
                    label: String::from_utf8_lossy(label).into_owned(),
                    contents,
                });
                pos = resume;
            }
            Err(reason) => {
                blocks.push(candidate(line, begin..after_type_line, label, Err(reason)));
                pos = after_type_line;
            }
        }
    }
    blocks
}

fn candidate(
    line: usize,
    span: std::ops::Range<usize>,
    label: &[u8],
    contents: Result<DecodedBlock, &str>,
) -> PemBlock {
    PemBlock {
        line,
        span,
        label: String::from_utf8_lossy(label).into_owned(),
        contents: contents.map_err(str::to_string),
    }
}

/// Go's `encoding/pem.Decode` after the BEGIN line: header lines while they hold a colon, then
/// the body. `base64.StdEncoding` (padding required, trailing bits not checked) ignores CR and
/// LF anywhere, and `encoding/pem` removes spaces and tabs first: blank lines in a body are fine.
fn decode_block(block: &[u8]) -> Result<DecodedBlock, String> {
    const GO_STD_ENCODING: GeneralPurpose = GeneralPurpose::new(
        &base64::alphabet::STANDARD,
        GeneralPurposeConfig::new()
            .with_decode_allow_trailing_bits(true)
            .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
    );
    let mut body = 0;
    let mut encrypted = false;
    while body < block.len() {
        let (line, next) = line_at(block, body);
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            break;
        };
        let (key, value) = (line[..colon].trim_ascii(), line[colon + 1..].trim_ascii());
        if key == b"Proc-Type" && value.windows(9).any(|w| w == b"ENCRYPTED") {
            encrypted = true;
        }
        body = next;
    }
    let base64: zeroize::Zeroizing<Vec<u8>> = zeroize::Zeroizing::new(
        block[body..]
            .iter()
            .copied()
            .filter(|b| !matches!(b, b' ' | b'\t' | b'\r' | b'\n'))
            .collect(),
    );
    let der = GO_STD_ENCODING
        .decode(&*base64)
        .map_err(|e| format!("malformed PEM body: {e}"))?;
    Ok(DecodedBlock {
        der: zeroize::Zeroizing::new(der),
        encrypted,
    })
}

/// Checks Go's framing rule: the first `-----END ` after the BEGIN line must carry the same label,
/// then five dashes and only whitespace to the end of its line. Returns where the END line starts
/// and where it ends.
fn frame_block(
    data: &[u8],
    body_start: usize,
    label: &[u8],
) -> Result<(usize, usize), &'static str> {
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
        Some([]) => Ok((end, after_end_line)),
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
    fn blank_lines_in_the_body_are_ignored_like_go() {
        let text = b"-----BEGIN A-----\n\nAQ\n\nID\n\n-----END A-----\n";
        assert_eq!(der_of(&scan_pem_blocks(text)[0]), [1u8, 2, 3]);
        let crlf = b"-----BEGIN A-----\r\nAQ\r\n\r\nID\r\n\r\n-----END A-----\r\n";
        assert_eq!(der_of(&scan_pem_blocks(crlf)[0]), [1u8, 2, 3]);
    }

    #[test]
    fn header_lines_are_skipped_like_go_with_or_without_a_blank_line() {
        for text in [
            &b"-----BEGIN A-----\nComment: x\nAQID\n-----END A-----\n"[..],
            &b"-----BEGIN A-----\nComment: x\nOther:y\n\nAQID\n-----END A-----\n"[..],
        ] {
            let blocks = scan_pem_blocks(text);
            assert_eq!(der_of(&blocks[0]), [1u8, 2, 3]);
            assert!(!blocks[0].contents.as_ref().unwrap().encrypted);
        }
    }

    #[test]
    fn proc_type_encrypted_header_marks_the_block() {
        let text =
            b"-----BEGIN A-----\nProc-Type: 4,ENCRYPTED\nDEK-Info: x\n\nAQID\n-----END A-----\n";
        assert!(
            scan_pem_blocks(text)[0]
                .contents
                .as_ref()
                .unwrap()
                .encrypted
        );
    }

    #[test]
    fn missing_padding_is_refused_like_go() {
        let blocks = scan_pem_blocks(b"-----BEGIN A-----\nAQI\n-----END A-----\n");
        assert!(blocks[0].contents.is_err());
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
