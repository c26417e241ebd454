//! A small unified diff of two texts, line by line, for dry runs and manual changes.
//!
//! Edits here touch a handful of lines, so the common prefix and suffix are set aside and the
//! middle is compared with a plain longest-common-subsequence table.

/// Above this many cells the middle is shown as removed then added, without a table.
const MAX_TABLE_CELLS: usize = 4_000_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Same,
    Removed,
    Added,
}

/// `old` and `new` as a unified diff with `context` lines around each change; empty when they
/// are equal. Hunk headers always give both counts (`@@ -7,6 +7,8 @@`).
pub fn unified(old_label: &str, new_label: &str, old: &str, new: &str, context: usize) -> String {
    if old == new {
        return String::new();
    }
    let a: Vec<&str> = old.lines().collect();
    let b: Vec<&str> = new.lines().collect();
    let ops = line_ops(&a, &b);

    // Hunks as ranges of `ops`, merged when their context would overlap or touch.
    let mut hunks: Vec<(usize, usize)> = Vec::new();
    for (k, (op, _)) in ops.iter().enumerate() {
        if *op == Op::Same {
            continue;
        }
        let start = k.saturating_sub(context);
        let end = (k + 1 + context).min(ops.len());
        match hunks.last_mut() {
            Some(last) if start <= last.1 => last.1 = end,
            _ => hunks.push((start, end)),
        }
    }

    let mut out = format!("--- {old_label}\n+++ {new_label}\n");
    for (start, end) in hunks {
        let count = |ops: &[(Op, &str)], side: Op| {
            ops.iter()
                .filter(|(op, _)| *op == Op::Same || *op == side)
                .count()
        };
        let old_before = count(&ops[..start], Op::Removed);
        let new_before = count(&ops[..start], Op::Added);
        let old_len = count(&ops[start..end], Op::Removed);
        let new_len = count(&ops[start..end], Op::Added);
        // An empty range is numbered by the line before it, as diff and patch expect.
        let first = |before: usize, len: usize| if len == 0 { before } else { before + 1 };
        out.push_str(&format!(
            "@@ -{},{old_len} +{},{new_len} @@\n",
            first(old_before, old_len),
            first(new_before, new_len)
        ));
        for (op, line) in &ops[start..end] {
            let mark = match op {
                Op::Same => ' ',
                Op::Removed => '-',
                Op::Added => '+',
            };
            out.push(mark);
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Every line of `a` and `b` in order, each marked same, removed or added.
fn line_ops<'t>(a: &[&'t str], b: &[&'t str]) -> Vec<(Op, &'t str)> {
    let prefix = a.iter().zip(b).take_while(|(x, y)| x == y).count();
    let suffix = a[prefix..]
        .iter()
        .rev()
        .zip(b[prefix..].iter().rev())
        .take_while(|(x, y)| x == y)
        .count();
    let (ma, mb) = (&a[prefix..a.len() - suffix], &b[prefix..b.len() - suffix]);

    let mut ops: Vec<(Op, &str)> = a[..prefix].iter().map(|l| (Op::Same, *l)).collect();
    if (ma.len() + 1) * (mb.len() + 1) > MAX_TABLE_CELLS {
        ops.extend(ma.iter().map(|l| (Op::Removed, *l)));
        ops.extend(mb.iter().map(|l| (Op::Added, *l)));
    } else {
        // lcs[i][j]: length of the longest common subsequence of ma[i..] and mb[j..].
        let width = mb.len() + 1;
        let mut lcs = vec![0u32; (ma.len() + 1) * width];
        for i in (0..ma.len()).rev() {
            for j in (0..mb.len()).rev() {
                lcs[i * width + j] = if ma[i] == mb[j] {
                    lcs[(i + 1) * width + j + 1] + 1
                } else {
                    lcs[(i + 1) * width + j].max(lcs[i * width + j + 1])
                };
            }
        }
        let (mut i, mut j) = (0, 0);
        while i < ma.len() || j < mb.len() {
            if i < ma.len() && j < mb.len() && ma[i] == mb[j] {
                ops.push((Op::Same, ma[i]));
                i += 1;
                j += 1;
            } else if j == mb.len()
                || (i < ma.len() && lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])
            {
                ops.push((Op::Removed, ma[i]));
                i += 1;
            } else {
                ops.push((Op::Added, mb[j]));
                j += 1;
            }
        }
    }
    ops.extend(a[a.len() - suffix..].iter().map(|l| (Op::Same, *l)));
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_texts_give_no_diff() {
        assert_eq!(unified("a", "b", "x\ny\n", "x\ny\n", 3), "");
    }

    #[test]
    fn one_hunk_with_context_around_an_insertion_and_a_replacement() {
        let old = "1\n2\n3\n4\n5\n6\n7\n8\n9\n";
        let new = "1\n2\n3\n4\nnew\n5\n6\nsix\n8\n9\n";
        assert_eq!(
            unified("old", "new", old, new, 2),
            "--- old\n+++ new\n@@ -3,7 +3,8 @@\n 3\n 4\n+new\n 5\n 6\n-7\n+six\n 8\n 9\n"
        );
    }

    #[test]
    fn distant_changes_make_separate_hunks() {
        let old = "a\nb\nc\nd\ne\nf\ng\n";
        let new = "A\nb\nc\nd\ne\nf\nG\n";
        assert_eq!(
            unified("o", "n", old, new, 1),
            "--- o\n+++ n\n@@ -1,2 +1,2 @@\n-a\n+A\n b\n@@ -6,2 +6,2 @@\n f\n-g\n+G\n"
        );
    }

    #[test]
    fn an_insertion_into_an_empty_text_is_numbered_from_zero() {
        assert_eq!(
            unified("o", "n", "", "x\n", 3),
            "--- o\n+++ n\n@@ -0,0 +1,1 @@\n+x\n"
        );
    }
}
