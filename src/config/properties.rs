//! Java `.properties` files, read exactly as `java.util.Properties.load(InputStream)` reads them.
//!
//! The two steps of Java's reader, implemented here from its specification:
//! * **logical lines**: leading blanks (space, tab, form feed) skipped; blank lines and comment lines
//!   (first non-blank character `#` or `!` while the logical line is still empty, so also right after
//!   a continued line that held only a backslash) skipped, and a comment line is never continued; an odd
//!   number of backslashes before a line terminator (`\n`, `\r`, `\r\n`) continues the line, the next
//!   line's leading blanks dropped; at the end of the input a dangling backslash is dropped (so a file
//!   that is just `\` holds one entry with an empty key);
//! * **key and value**: the key ends at the first unescaped `=`, `:` or blank; blanks and at most one
//!   `=`/`:` after it are skipped; escapes `\t \n \r \f \uXXXX` are decoded in both, any other escaped
//!   character stands for itself, and a malformed `\uXXXX` makes the whole load fail (Java's
//!   `IllegalArgumentException`). Java strings are UTF-16: escaped surrogate pairs join into one
//!   character, an unpaired surrogate becomes U+FFFD.
//!
//! Files are ISO-8859-1, as in Java: every byte is one character, and other characters must be written
//! as `\uXXXX` escapes. The last of duplicate keys wins. `tests/worker_cli.rs` compares this parser
//! with the JDK on generated inputs.

use std::collections::BTreeMap;
use std::path::Path;

/// The key/value pairs of one file; the last of duplicate keys wins, as in Java.
pub type Properties = BTreeMap<String, String>;

#[derive(Debug, thiserror::Error)]
pub enum PropertiesError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}:{line}: {message}")]
    Syntax {
        path: String,
        line: usize,
        message: String,
    },
}

/// Reads and parses a properties file.
pub fn load_file(path: &Path) -> Result<Properties, PropertiesError> {
    let bytes = std::fs::read(path).map_err(|source| PropertiesError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse(&bytes).map_err(|(line, message)| PropertiesError::Syntax {
        path: path.display().to_string(),
        line,
        message,
    })
}

fn is_blank(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | 0x0c)
}

/// Splits the input into logical lines: `(first physical line number, characters)`.
fn logical_lines(bytes: &[u8]) -> Vec<(usize, Vec<u8>)> {
    let mut out = Vec::new();
    let mut line: Vec<u8> = Vec::new();
    let mut physical = 1;
    let mut first_line = 1;
    let mut skip_blanks = true;
    let mut continued = false; // skipping the blanks that start a continuation line
    let mut at_start = true;
    let mut comment = false;
    let mut backslash = false;
    let mut skip_lf = false;
    for &c in bytes {
        if skip_lf {
            skip_lf = false;
            if c == b'\n' {
                continue;
            }
        }
        let terminator = c == b'\n' || c == b'\r';
        if skip_blanks {
            if is_blank(c) {
                continue;
            }
            if !continued && terminator {
                physical += 1;
                if c == b'\r' {
                    skip_lf = true;
                }
                continue;
            }
            skip_blanks = false;
            continued = false;
        }
        if at_start {
            at_start = false;
            first_line = physical;
        }
        // As Java: a comment starts wherever the logical line is still empty, also after a
        // continuation of a line that held only a backslash.
        if line.is_empty() && !comment && (c == b'#' || c == b'!') {
            comment = true;
        }
        if !terminator {
            if !comment {
                line.push(c);
                backslash = c == b'\\' && !backslash;
            }
            continue;
        }
        physical += 1;
        if c == b'\r' {
            skip_lf = true;
        }
        if comment || line.is_empty() {
            comment = false;
            at_start = true;
            skip_blanks = true;
            line.clear();
            continue;
        }
        if backslash {
            line.pop();
            backslash = false;
            skip_blanks = true;
            continued = true;
            continue;
        }
        out.push((first_line, std::mem::take(&mut line)));
        at_start = true;
        skip_blanks = true;
    }
    if !comment && !line.is_empty() {
        if backslash {
            line.pop();
        }
        out.push((first_line, line));
    }
    out
}

/// Decodes the escapes of a key or value (UTF-16 units, then a Rust string).
fn unescape(chars: &[u8]) -> Result<String, String> {
    let mut units: Vec<u16> = Vec::with_capacity(chars.len());
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        i += 1;
        if c != b'\\' {
            units.push(c as u16);
            continue;
        }
        let Some(&e) = chars.get(i) else { break };
        i += 1;
        match e {
            b'u' => {
                let hex = chars
                    .get(i..i + 4)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                    .ok_or_else(|| "Malformed \\uxxxx encoding.".to_string())?;
                units.push(u16::from_str_radix(hex, 16).expect("four hex digits"));
                i += 4;
            }
            b't' => units.push(b'\t' as u16),
            b'n' => units.push(b'\n' as u16),
            b'r' => units.push(b'\r' as u16),
            b'f' => units.push(0x0c),
            other => units.push(other as u16),
        }
    }
    Ok(String::from_utf16_lossy(&units))
}

/// Parses properties from ISO-8859-1 bytes. The error carries a line number (1-based) and a message.
pub fn parse(bytes: &[u8]) -> Result<Properties, (usize, String)> {
    let mut props = Properties::new();
    for (line_no, line) in logical_lines(bytes) {
        let mut key_end = 0;
        let mut value_start = line.len();
        let mut has_separator = false;
        let mut backslash = false;
        while key_end < line.len() {
            let c = line[key_end];
            if !backslash && (c == b'=' || c == b':') {
                value_start = key_end + 1;
                has_separator = true;
                break;
            }
            if !backslash && is_blank(c) {
                value_start = key_end + 1;
                break;
            }
            backslash = c == b'\\' && !backslash;
            key_end += 1;
        }
        while value_start < line.len() {
            let c = line[value_start];
            if !is_blank(c) {
                if !has_separator && (c == b'=' || c == b':') {
                    has_separator = true;
                } else {
                    break;
                }
            }
            value_start += 1;
        }
        let key = unescape(&line[..key_end]).map_err(|m| (line_no, m))?;
        let value = unescape(&line[value_start.min(line.len())..]).map_err(|m| (line_no, m))?;
        props.insert(key, value);
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[u8]) -> Properties {
        parse(s).unwrap()
    }

    // Expected values below are what Java 17's Properties.load(InputStream) returns for the same bytes.
    #[test]
    fn separators_and_whitespace() {
        let r = p(b"a=1\nb:2\nc 3\n  d  =  4  \ne\t=\t5\nf\n");
        assert_eq!(r["a"], "1");
        assert_eq!(r["b"], "2");
        assert_eq!(r["c"], "3");
        assert_eq!(r["d"], "4  "); // leading whitespace of the value stripped, trailing kept
        assert_eq!(r["e"], "5");
        assert_eq!(r["f"], "");
    }

    #[test]
    fn comments_and_continuations() {
        let r = p(b"# c\n  ! c2\nk=v # not a comment\nmulti=first \\\n    second \\\n  third\n#x\\\ny=1\n");
        assert_eq!(r["k"], "v # not a comment");
        assert_eq!(r["multi"], "first second third");
        assert_eq!(r["y"], "1"); // a comment line is never continued
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn escapes() {
        let r = p(b"k\\ with\\ spaces=v\\=1\\:x\ntab=a\\tb\nu=caf\\u00e9\nunknown=\\b\n");
        assert_eq!(r["k with spaces"], "v=1:x");
        assert_eq!(r["tab"], "a\tb");
        assert_eq!(r["u"], "café");
        assert_eq!(r["unknown"], "b");
    }

    #[test]
    fn iso_8859_1_bytes() {
        // UTF-8 "é" is two bytes; Java reads them as two Latin-1 characters.
        let r = p("x=café\n".as_bytes());
        assert_eq!(r["x"], "cafÃ©");
        let r = p(b"x=caf\xe9\n");
        assert_eq!(r["x"], "café");
    }

    #[test]
    fn dangling_backslash_at_eof() {
        assert_eq!(p(b"a=1\\")["a"], "1");
        assert_eq!(p(b"a=1\\\n")["a"], "1");
        assert_eq!(p(b"a=1\\\\")["a"], "1\\"); // escaped backslash: not dangling
        assert_eq!(p(b"b=2\n#c\\")["b"], "2");
    }

    #[test]
    fn edge_cases_found_by_the_jdk_comparison() {
        // A file that is just a backslash holds one entry with an empty key (Java 17).
        assert_eq!(
            p(b"\\").into_iter().collect::<Vec<_>>(),
            vec![(String::new(), String::new())]
        );
        // After a continued line that held only a backslash, '#' starts a comment.
        let r = p(b"\\\n#x=1\ny=2\n");
        assert_eq!(r.len(), 1);
        assert_eq!(r["y"], "2");
        // ... and a malformed escape inside that comment is not an error.
        assert_eq!(p(b"\\\r!\\u!=\ny=2")["y"], "2");
        assert!(parse(b"k=\\u12").is_err());
    }

    #[test]
    fn surrogate_pairs() {
        assert_eq!(p(b"e=\\uD83D\\uDE00!")["e"], "\u{1F600}!");
        assert_eq!(p(b"e=\\uD83Dx")["e"], "\u{FFFD}x");
        assert_eq!(p(b"e=\\\\uD83D")["e"], "\\uD83D");
    }

    #[test]
    fn crlf_and_duplicates() {
        let r = p(b"a=1\r\nb=2\rc=3\r\na=4\r\n");
        assert_eq!(r["a"], "4");
        assert_eq!(r["b"], "2");
        assert_eq!(r["c"], "3");
    }

    #[test]
    fn bad_unicode_escape_is_an_error_with_line() {
        let e = parse(b"a=1\nb=\\uZZZZ\n").unwrap_err();
        assert_eq!(e.0, 2);
    }
}
